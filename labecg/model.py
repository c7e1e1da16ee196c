"""ECG + tabular fusion model of the paper (section 3.2), with the authors' code as options.

ECG encoder: Linear(12 -> H), ``n_layers`` residual blocks x <- LayerNorm(x + S4Layer(x))
(post-norm, as the authors' S4 configuration; dropout sits inside the S4 layer after GELU),
mean over time -> (B, H).

Tabular encoder: ``linear`` = Linear(n_tabular -> tab_latent) + PReLU (the paper), over
the data module's columns (standardized continuous features, missing indicators, sex 0/1
and race one-hot: a one-hot vector times a Linear weight is an embedding lookup).
``mlp`` = the authors' code (``BasicEncoderStaticMLP`` with ``lin_ftrs`` [128, 128, 128]):
learned embeddings of the categorical columns (``categorical``: sex 2 -> 16, race 5 -> 32,
``embedding_dims``) concatenated with the other columns, then three blocks
BatchNorm1d -> Dropout -> Linear(., 128), ReLU after the first two only, dropout
``mlp_dropout`` / 2, ``mlp_dropout`` / 2, ``mlp_dropout`` (0.25, 0.25, 0.5).

Fusion: ``outer`` (the paper; tensor fusion) flattens [e, 1] (x) [t, 1] and applies one
linear head to every target of the four tasks at once; the appended 1s keep each
modality's own linear terms. The paper's tabular encoder aligns its width with the ECG
latent, so at its sizes the head would read 513 x 513 products for each of its 514
targets (:func:`outer_head_weights`: ~135M weights). We project the ECG embedding first
(``ecg_proj``, Linear(H=512 -> ``ecg_latent`` = 32) + PReLU, a layer the paper does not
have) and keep ``tab_latent`` = 16: 33 x 17 products, ~288k head weights.
``concat`` (the authors' code) concatenates the full ECG embedding (H) with the tabular
latent, then a linear head. Variants ``ecg`` and ``tabular`` drop the other modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from torch import nn

from labecg.layout import RunFolder
from labecg.s4 import S4Layer, tag_no_decay


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
    mlp_dropout: float = 0.5  # the mlp's last block; the earlier two get half (the authors' code)
    categorical: tuple[tuple[int, int], ...] = ()  # mlp: (first column, columns) of each embedded variable
    embedding_dims: tuple[int, ...] = (16, 32)  # mlp: embedding width of each ``categorical`` entry
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
        for name in ("dropout", "mlp_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ModelConfig.{name} must be in [0, 1); got {getattr(self, name)}")
        if self.tabular_encoder == "mlp" and len(self.embedding_dims) < len(self.categorical):
            raise ValueError(f"ModelConfig: {len(self.categorical)} categorical variables but embedding_dims "
                             f"{self.embedding_dims}")
        for first, width in self.categorical:
            if first < 0 or width < 1 or first + width > self.n_tabular:
                raise ValueError(f"ModelConfig.categorical: columns {first}..{first + width - 1} are not within the "
                                 f"{self.n_tabular} tabular columns")
        if self.ssm_init not in ("lin", "legs"):
            raise ValueError(f"ModelConfig.ssm_init must be 'lin' or 'legs'; got {self.ssm_init!r}")


class ECGEncoder(nn.Module):
    """(B, L, 12) millivolt-normalized leads -> (B, H) time-averaged S4 features."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inp = nn.Linear(cfg.n_leads, cfg.d_model)
        self.layers = nn.ModuleList(
            S4Layer(cfg.d_model, cfg.d_state, bidirectional=cfg.bidirectional, dropout=cfg.dropout,
                    freeze_ssm=cfg.freeze_ssm, ssm_init=cfg.ssm_init) for _ in range(cfg.n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(cfg.n_layers))

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        x = self.inp(ecg)  # (B, L, H)
        for layer, norm in zip(self.layers, self.norms):
            x = norm(x + layer(x))  # post-norm residual block
        return x.mean(dim=1)  # (B, H)


class TabularMLP(nn.Module):
    """The authors' tabular encoder: embeddings of the categorical columns, then BatchNorm -> Dropout -> Linear blocks.

    A categorical variable held as one 0/1 column (sex) looks its embedding up by that
    value; one held as one-hot columns (race) takes the one-hot vector times the embedding
    table (an all-zero row embeds to zeros). The embeddings, in the order of
    ``cfg.categorical``, precede the remaining columns in their order.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.categorical = tuple(tuple(c) for c in cfg.categorical)
        self.embeddings = nn.ModuleList(nn.Embedding(2 if width == 1 else width, dim)
                                        for (_, width), dim in zip(self.categorical, cfg.embedding_dims))
        embedded = {i for first, width in self.categorical for i in range(first, first + width)}
        self.register_buffer("other_columns", torch.tensor([i for i in range(cfg.n_tabular) if i not in embedded],
                                                           dtype=torch.long), persistent=False)
        widths = [sum(e.embedding_dim for e in self.embeddings) + len(self.other_columns)] + [cfg.mlp_units] * 3
        rates = (cfg.mlp_dropout / 2, cfg.mlp_dropout / 2, cfg.mlp_dropout)
        layers = []
        for i, (n_in, n_out, p) in enumerate(zip(widths[:-1], widths[1:], rates)):
            layers += [nn.BatchNorm1d(n_in), nn.Dropout(p), nn.Linear(n_in, n_out)]
            if i < len(rates) - 1:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def embed(self, tabular: torch.Tensor) -> torch.Tensor:
        """(B, n_tabular) -> (B, sum of embedding widths + other columns): the first block's input."""
        parts = []
        for (first, width), emb in zip(self.categorical, self.embeddings):
            if width == 1:
                parts.append(emb(tabular[:, first].round().clamp(0, 1).long()))
            else:
                parts.append(tabular[:, first:first + width] @ emb.weight)
        return torch.cat(parts + [tabular[:, self.other_columns]], dim=1)

    def forward(self, tabular: torch.Tensor) -> torch.Tensor:
        return self.layers(self.embed(tabular))


def _tabular_encoder(cfg: ModelConfig) -> tuple[nn.Module, int]:
    if cfg.tabular_encoder == "linear":
        return nn.Sequential(nn.Linear(cfg.n_tabular, cfg.tab_latent), nn.PReLU()), cfg.tab_latent
    return TabularMLP(cfg), cfg.mlp_units


def outer_head_weights(ecg_width: int, tab_width: int, n_targets: int) -> int:
    """Weights (biases left out) of a linear head on the outer product [e, 1] (x) [t, 1].

    Parameters
    ----------
    ecg_width, tab_width : int
        Widths of the ECG and tabular embeddings before the 1s are appended.
    n_targets : int
        Outputs of the head (one model serves every target of the four tasks).
    """
    return (ecg_width + 1) * (tab_width + 1) * n_targets


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
        tag_no_decay(self)  # biases and norms; the S4 layers tagged their own parameters


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


def trained_model(run: RunFolder) -> FusionModel:
    """The network of a run folder read by :func:`labecg.layout.load_run`, in evaluation mode.

    Built from the run's recorded ``ModelConfig`` (``config.json``'s ``model``) and given the
    weights of its best checkpoint.

    Raises
    ------
    ValueError
        The weights do not fit the recorded settings; the message names the checkpoint.
    """
    model = FusionModel(ModelConfig(**run.config["model"]))
    try:
        model.load_state_dict(run.weights)
    except Exception as e:
        raise ValueError(f"{run.checkpoint}: cannot load the model ({type(e).__name__}: {e})") from None
    return model.eval()
