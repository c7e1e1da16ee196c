"""ECG + tabular fusion model of the paper (section 3.2), with the authors' code as options.

ECG encoder: Linear(12 -> H), ``n_layers`` residual blocks x <- LayerNorm(x + S4Layer(x))
(post-norm, as the authors' S4 configuration; dropout sits inside the S4 layer after GELU),
mean over time -> (B, H).

Tabular encoder: ``linear`` = Linear(n_tabular -> tab_latent) + PReLU (the paper);
``mlp`` = three [Linear(., 128), BatchNorm1d, ReLU, Dropout] layers (the authors' code).
Inputs are the data module's standardized continuous features and one-hot categories,
not learned embeddings: a one-hot vector times a Linear weight is an embedding lookup.

Fusion: ``outer`` (the paper; tensor fusion) projects the ECG embedding to ``ecg_latent``
(H=512 -> 32) so the product stays small (the paper's encoder aligns the tabular width with
the ECG latent: 513 x 513 products would feed ~36M head weights at 137 targets; 33 x 17
feed 77k), then flattens
[ecg_latent, 1] (x) [tab_latent, 1] -> ((ecg_latent+1) (tab_latent+1),) and applies a
linear head to all targets at once; the appended 1s keep each modality's own linear terms.
``concat`` (the authors' code) concatenates the full ECG embedding (H) with the tabular
latent, then a linear head. Variants ``ecg`` and ``tabular`` drop the other modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from torch import nn

from labecg.s4 import S4Layer


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`FusionModel` (field names are those of ``TrainConfig``)."""

    n_targets: int
    n_tabular: int
    d_model: int = 512
    d_state: int = 8
    n_layers: int = 4
    fusion: Literal["outer", "concat"] = "outer"
    tabular_encoder: Literal["linear", "mlp"] = "linear"
    variant: Literal["fusion", "ecg", "tabular"] = "fusion"
    dropout: float = 0.2
    ecg_latent: int = 32  # ECG embedding projected to this before the outer product
    tab_latent: int = 16  # linear tabular encoder width (the mlp has 128 units)
    mlp_units: int = 128
    freeze_ssm: bool = False
    ssm_init: Literal["lin", "legs"] = "lin"  # S4D-Lin, or S4D-LegS (diagonal HiPPO-LegS)
    bidirectional: bool = True
    n_leads: int = 12

    def __post_init__(self):
        for name in ("n_targets", "d_model", "d_state", "n_layers", "ecg_latent", "tab_latent", "mlp_units",
                     "n_leads"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.n_tabular < 0 or (self.variant != "ecg" and self.n_tabular < 1):
            raise ValueError(f"ModelConfig.n_tabular must be >= 1 for variant {self.variant!r}; got {self.n_tabular}")
        if self.fusion not in ("outer", "concat"):
            raise ValueError(f"ModelConfig.fusion must be 'outer' or 'concat'; got {self.fusion!r}")
        if self.tabular_encoder not in ("linear", "mlp"):
            raise ValueError(f"ModelConfig.tabular_encoder must be 'linear' or 'mlp'; got {self.tabular_encoder!r}")
        if self.variant not in ("fusion", "ecg", "tabular"):
            raise ValueError(f"ModelConfig.variant must be fusion, ecg or tabular; got {self.variant!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.ssm_init not in ("lin", "legs"):
            raise ValueError(f"ModelConfig.ssm_init must be 'lin' or 'legs'; got {self.ssm_init!r}")


class ECGEncoder(nn.Module):
    """(B, L, 12) millivolt-normalized leads -> (B, H) time-averaged S4 features."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inp = nn.Linear(cfg.n_leads, cfg.d_model)
        self.layers = nn.ModuleList(
            S4Layer(cfg.d_model, cfg.d_state, bidirectional=cfg.bidirectional, dropout=cfg.dropout,
                    freeze_ssm=cfg.freeze_ssm, init=cfg.ssm_init) for _ in range(cfg.n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(cfg.n_layers))

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        x = self.inp(ecg)  # (B, L, H)
        for layer, norm in zip(self.layers, self.norms):
            x = norm(x + layer(x))  # post-norm residual block
        return x.mean(dim=1)  # (B, H)


def _tabular_encoder(cfg: ModelConfig) -> tuple[nn.Module, int]:
    if cfg.tabular_encoder == "linear":
        return nn.Sequential(nn.Linear(cfg.n_tabular, cfg.tab_latent), nn.PReLU()), cfg.tab_latent
    layers, width = [], cfg.n_tabular
    for _ in range(3):
        layers += [nn.Linear(width, cfg.mlp_units), nn.BatchNorm1d(cfg.mlp_units), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = cfg.mlp_units
    return nn.Sequential(*layers), cfg.mlp_units


class FusionModel(nn.Module):
    """Logits for all targets from an ECG window and tabular features.

    Parameters
    ----------
    cfg : ModelConfig
        Every setting (``TrainConfig.model_config`` fills it from the training settings).

    Examples
    --------
    >>> m = FusionModel(ModelConfig(n_targets=3, n_tabular=5, d_model=16, n_layers=1))
    >>> m(torch.zeros(2, 250, 12), torch.zeros(2, 5)).shape
    torch.Size([2, 3])
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"FusionModel: expected a ModelConfig; got {type(cfg).__name__}")
        self.config = cfg
        uses_ecg, uses_tab = cfg.variant in ("fusion", "ecg"), cfg.variant in ("fusion", "tabular")
        self.ecg_encoder = ECGEncoder(cfg) if uses_ecg else None
        self.tab_encoder, tab_width = _tabular_encoder(cfg) if uses_tab else (None, 0)
        if cfg.variant == "fusion" and cfg.fusion == "outer":
            self.ecg_proj = nn.Sequential(nn.Linear(cfg.d_model, cfg.ecg_latent), nn.PReLU())
            head_in = (cfg.ecg_latent + 1) * (tab_width + 1)
        else:
            self.ecg_proj = None
            head_in = (cfg.d_model if uses_ecg else 0) + tab_width
        self.head = nn.Linear(head_in, cfg.n_targets)


    def forward(self, ecg: torch.Tensor | None, tabular: torch.Tensor | None) -> torch.Tensor:
        """ecg (B, L, 12), tabular (B, n_tabular) -> logits (B, T); unused inputs may be None."""
        cfg = self.config
        parts = []
        if self.ecg_encoder is not None:
            if ecg is None or ecg.dim() != 3 or ecg.shape[-1] != cfg.n_leads:
                raise ValueError(f"FusionModel: ecg must be (batch, length, {cfg.n_leads}); "
                                 f"got {None if ecg is None else tuple(ecg.shape)}")
            parts.append(self.ecg_encoder(ecg))  # (B, H)
        if self.tab_encoder is not None:
            if tabular is None or tabular.dim() != 2 or tabular.shape[-1] != cfg.n_tabular:
                raise ValueError(f"FusionModel: tabular must be (batch, {cfg.n_tabular}); "
                                 f"got {None if tabular is None else tuple(tabular.shape)}")
            parts.append(self.tab_encoder(tabular))  # (B, tab_width)
        if self.ecg_proj is not None:
            e, t = self.ecg_proj(parts[0]), parts[1]
            e = torch.cat([e, e.new_ones(e.shape[0], 1)], dim=1)  # (B, E+1)
            t = torch.cat([t, t.new_ones(t.shape[0], 1)], dim=1)  # (B, Z+1)
            z = (e[:, :, None] * t[:, None, :]).flatten(1)  # (B, (E+1)(Z+1))
        else:
            z = torch.cat(parts, dim=1)
        return self.head(z)  # (B, T)


def parameter_table(model: nn.Module) -> pd.DataFrame:
    """Trainable parameters per part of a :class:`FusionModel`, and their total.

    Parts are the model's submodules: ``ecg_encoder.inp`` (the lead projection), one row per
    S4 block (``ecg_encoder.layers.i``) and per normalization, the tabular encoder's
    layers, the ECG projection of the outer fusion, the head.

    Returns
    -------
    DataFrame indexed by ``part`` with an int64 column ``parameters``; the last row, ``total``,
    is their sum.
    """
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        depth = 3 if len(parts) > 3 and parts[1] in ("layers", "norms") else 2
        part = ".".join(parts[:min(depth, len(parts) - 1)])
        counts[part] = counts.get(part, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return pd.DataFrame({"parameters": pd.Series(counts, dtype="int64")}).rename_axis("part")
