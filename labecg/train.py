"""Train the fusion model with PyTorch Lightning and write the run folder (ARCHITECTURE.md §5).

One model predicts all targets of all four tasks at once. Loss: binary cross-entropy (or
the authors' focal variant) averaged per target over its observed entries, then over the
targets observed in the batch (``target_reduction="mean"``; the authors sum). The best
checkpoint has the highest validation macro AUROC, the mean over targets with both classes
among the validation ECGs, each ECG scored by the mean of its four 2.5 s segments'
sigmoid probabilities.

``--objective value`` (ours, issue #25) trains the same encoder, fusion and folds on the
cohort's value columns instead (``<lab>_value_est``, ``<lab>_value_mon{h}``; one output each,
:data:`labecg.targets.VALUE`): the loss (``--value-loss``, squared error by default) is
masked as above, on values standardised with scales fitted on the training folds only (log
where a lab is skewed, :func:`labecg.targets.fit_value_scales`; written to
``RUN/value_scales.json``). The best checkpoint has the lowest validation loss (the mean over
validation segments of that loss, :func:`selection_metric`); ``metrics.csv`` then carries the
validation macro Spearman instead of the AUROC. Predictions are the mean of the four segments'
outputs on the standardised scale, turned back into the lab's unit.

Data parallelism (``--devices N --strategy ddp``, ``--num-nodes M``): each rank trains on its
own share of every epoch's crops (:class:`labecg.data.TrainCrops`); validation and test
segments are split between the ranks and gathered, padding dropped, before segment averaging,
so the macro AUROC and ``predictions_{val,test}.npz`` hold every ECG exactly once. Only
global rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import errno
import hashlib
import io
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn

from labecg import layout
from labecg.data import CATEGORICAL_COLUMNS, DataConfig, LabDataModule, average_segments
from labecg.model import FusionModel, ModelConfig
from labecg.s4 import OPTIM_GROUPS
from labecg.targets import BINARY, OBJECTIVES, TargetKind, unstandardize_values
from labecg.util import (LOCK_NAME, PROGRESS_ENV, Interrupted, atomic_path, disk_full, folder_lock, format_bytes,
                         get_logger, hold_paths, progress_bar, read_json, write_json)

log = get_logger(__name__)

#: What Lightning says that a reader of the run cannot act on (#23): adverts for its cloud
#: products, its settings echoed back, and accelerators it did not find. A GPU found but
#: not used stays (``--accelerator gpu`` acts on it), as do its warnings.
_LIGHTNING_NOISE = re.compile(r"💡 Tip|was configured so|\b[GTH]PU available: False")
#: Warnings of the libraries, not of the run: torch's deprecation of the pytree helpers that
#: Lightning calls, and the checkpoint folder a resumed or emptied run folder holds on purpose.
_WARNING_NOISE = (r"Checkpoint directory .* exists and is not empty",
                  r".*(_pytree|LeafSpec|treespec|TreeSpec).*")


class _QuietLightning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _LIGHTNING_NOISE.search(record.getMessage())


def _silence_library_noise() -> None:
    """Filter :data:`_LIGHTNING_NOISE` from Lightning's loggers and :data:`_WARNING_NOISE` from warnings."""
    for name in ("pytorch_lightning", "pytorch_lightning.utilities.rank_zero", "lightning_fabric",
                 "lightning_fabric.utilities.rank_zero", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietLightning) for f in logger.filters):
            logger.addFilter(_QuietLightning())
    for pattern in _WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_macro_auroc")


def metric_columns(objective: str = "flag") -> tuple[str, ...]:
    """``metrics.csv``'s columns: :data:`METRIC_COLUMNS`, the macro metric named by the objective's kind.

    >>> metric_columns("value")
    ('epoch', 'train_loss', 'val_loss', 'val_macro_spearman')
    """
    return METRIC_COLUMNS[:-1] + (f"val_macro_{OBJECTIVES[objective].metric_name.lower()}",)


def selection_metric(objective: str = "flag") -> tuple[str, str]:
    """(logged metric, mode) that chooses the best checkpoint: the validation macro AUROC (max) for
    flags, the validation loss (min) for values (a macro Spearman ignores the scale the values need)."""
    return ("val_macro_auroc", "max") if objective == "flag" else ("val_loss", "min")


#: The models the book can train and compare on the same data, as ``TrainConfig`` settings:
#: ``fusion`` the paper's model (linear + PReLU tabular encoder, outer product, BCE);
#: ``code`` the authors' code (3-layer MLP tabular encoder, concatenation, focal loss with
#: gamma 2 summed over targets, state-space parameters frozen; REFERENCE_NOTES.md);
#: ``ecg`` and ``tabular`` the fusion model with one modality only; ``value`` the fusion model
#: trained on the laboratory values instead of the flags (``--objective value``, issue #25).
VARIANT_SETTINGS: dict[str, dict] = {
    "fusion": {},
    "code": {"fusion": "concat", "tabular_encoder": "mlp", "loss": "focal", "focal_gamma": 2.0,
             "target_reduction": "sum", "freeze_ssm": True, "weight_decay_scope": "all"},
    "ecg": {"variant": "ecg"},
    "tabular": {"variant": "tabular"},
    "value": {"objective": "value"},
}


def variant_run_dir(run_dir, variant: str) -> Path:
    """Run folder of a model variant: ``run_dir`` for fusion, ``<run_dir>-<variant>`` else."""
    run_dir = Path(run_dir)
    if variant not in VARIANT_SETTINGS:
        raise ValueError(f"variant must be one of {list(VARIANT_SETTINGS)}, got {variant!r}")
    return run_dir if variant == "fusion" else run_dir.with_name(f"{run_dir.name}-{variant}")


def variant_settings(name: str) -> dict:
    """The ``TrainConfig`` fields of a model variant of :data:`VARIANT_SETTINGS`."""
    if name not in VARIANT_SETTINGS:
        raise ValueError(f"variant {name!r} unknown; expected one of {list(VARIANT_SETTINGS)}")
    return dict(VARIANT_SETTINGS[name])


#: The architecture's defaults, written once in :class:`ModelConfig`; ``TrainConfig`` takes its
#: fields of the same name from here.
_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}


_LOSS_DEFAULT = "bce"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (CLI flags and notebook parameters share these names).

    Parameters
    ----------
    cohort_dir : Path
        Cohort folder with signals (``labecg cohort`` then ``labecg signals``).
    run_dir : Path
        Run folder. A fresh run empties it of an earlier run's files (and refuses a folder
        that is not a run folder); ``out/checkpoints/last.ckpt`` is resumed when ``resume``.
    epochs : int
        Training epochs (paper: 20; the book's classroom scale uses 12). On a CPU the
        default 512-wide, 4-layer model takes hours for 20 epochs; see the README.
    batch_size : int
        ECGs per training batch (a random 2.5 s crop each).
    lr : float
        AdamW learning rate (constant).
    weight_decay : float
        AdamW weight decay.
    d_model : int
        S4 width (paper: 512; the book's classroom scale uses 64).
    n_layers : int
        S4 blocks (paper: 4; the book uses 2).
    d_state : int
        S4 state size per channel.
    dropout : float
        Dropout inside each S4 block (after its GELU). The fusion head has none; the
        ``mlp`` tabular encoder has its own (``ModelConfig.mlp_dropout``).
    fusion : {"outer", "concat"}
        How ECG and tabular embeddings are joined (paper: outer product).
    tabular_encoder : {"linear", "mlp"}
        Encoder of demographics, vital signs and biometrics.
    variant : {"fusion", "ecg", "tabular"}
        Inputs the model sees: both, the ECG alone, the tabular features alone.
    freeze_ssm : bool
        Keep the S4 kernels' parameters fixed.
    ssm_init, ecg_latent, tab_latent :
        Architecture, see :class:`labecg.model.ModelConfig`.
    weight_decay_scope : {"weights", "all"}
        "weights" (the S4 reference code, :func:`parameter_groups`): no weight decay on the
        state-space parameters (``log_dt``, ``log_a_re``, ``a_im``), biases and
        normalization weights; "all": every trained parameter decays.
    ssm_lr : float
        Learning rate of the state-space parameters is min(lr, ssm_lr) (S4 reference: 1e-3).
    loss : {"bce", "focal"}
        Masked binary cross-entropy (paper) or focal BCE with ``focal_gamma`` (authors' code).
    focal_gamma : float
        Focusing exponent of the focal loss.
    target_reduction : {"mean", "sum"}
        How per-target losses combine: mean (default) or sum (authors' code).
    accelerator, devices, num_nodes, strategy, precision : passed to ``pl.Trainer``
        e.g. ``--devices 4 --strategy ddp --precision bf16-mixed`` on GPUs; ``num_nodes``
        machines with ``devices`` processes each (torchrun or SLURM start them).
    num_workers : int
        DataLoader worker processes.
    seed : int
        Seeds initialization, training order and crops.
    max_steps_per_epoch : int, optional
        Cap on training batches per epoch (quick runs); None = all.
    resume : bool
        Continue ``out/checkpoints/last.ckpt`` when the run's settings and inputs are
        unchanged; ``--no-resume`` starts over (after every input is checked).
    objective : {"flag", "value"}
        What the model predicts (:data:`labecg.targets.OBJECTIVES`): ``flag`` the paper's
        targets (abnormally low or high); ``value`` (ours, issue #25) one regression output per
        value column of the cohort, in the lab's unit in the predictions (module docstring).
    value_loss : {"mse", "huber"}
        Loss of ``--objective value`` on the standardised values: squared error or Huber
        (quadratic within one standard deviation). ``loss`` applies to flags only.
    break_lock : bool
        Take the run folder's lock (``.labecg.lock``) even when it names a process on another
        host, which this machine cannot check is gone. A lock of a live process on this host
        is never taken; one of a dead process on this host is taken without this flag.
    """

    cohort_dir: Path
    run_dir: Path
    epochs: int = 20
    batch_size: int = 32
    d_model: int = _MODEL_DEFAULTS["d_model"]
    n_layers: int = _MODEL_DEFAULTS["n_layers"]
    d_state: int = _MODEL_DEFAULTS["d_state"]
    lr: float = 1e-3
    weight_decay: float = 1e-3
    dropout: float = _MODEL_DEFAULTS["dropout"]
    fusion: Literal["outer", "concat"] = _MODEL_DEFAULTS["fusion"]
    tabular_encoder: Literal["linear", "mlp"] = _MODEL_DEFAULTS["tabular_encoder"]
    variant: Literal["fusion", "ecg", "tabular"] = _MODEL_DEFAULTS["variant"]
    freeze_ssm: bool = _MODEL_DEFAULTS["freeze_ssm"]
    ssm_init: Literal["lin", "legs"] = _MODEL_DEFAULTS["ssm_init"]
    ecg_latent: int = _MODEL_DEFAULTS["ecg_latent"]
    tab_latent: int = _MODEL_DEFAULTS["tab_latent"]
    weight_decay_scope: Literal["weights", "all"] = "weights"
    ssm_lr: float = 1e-3
    loss: Literal["bce", "focal"] = _LOSS_DEFAULT
    focal_gamma: float = 2.0
    target_reduction: Literal["mean", "sum"] = "mean"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_workers: int = 0
    seed: int = 0
    max_steps_per_epoch: Optional[int] = None
    resume: bool = True
    objective: Literal["flag", "value"] = "flag"
    value_loss: Literal["mse", "huber"] = "mse"
    break_lock: bool = False

    def __post_init__(self):
        hold_paths(self)
        for name in ("epochs", "batch_size", "d_model", "n_layers", "d_state", "devices", "num_nodes",
                     "ecg_latent", "tab_latent"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.focal_gamma < 0:
            raise ValueError(f"TrainConfig: need lr > 0, weight_decay >= 0, focal_gamma >= 0; got "
                             f"{self.lr}, {self.weight_decay}, {self.focal_gamma}")
        if self.loss not in BINARY.losses or self.target_reduction not in ("mean", "sum"):
            raise ValueError(f"TrainConfig: loss in (bce, focal), target_reduction in (mean, sum); "
                             f"got {self.loss!r}, {self.target_reduction!r}")
        if self.objective not in OBJECTIVES or self.value_loss not in OBJECTIVES["value"].losses:
            raise ValueError(f"TrainConfig: objective in {tuple(OBJECTIVES)}, value_loss in "
                             f"{tuple(OBJECTIVES['value'].losses)}; got {self.objective!r}, {self.value_loss!r}")
        if self.objective == "value" and self.loss != _LOSS_DEFAULT:
            raise ValueError(f"TrainConfig: loss {self.loss!r} is a flag loss; --objective value takes "
                             f"--value-loss {' or '.join(OBJECTIVES['value'].losses)}")
        if self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers must be >= 0; got {self.num_workers}")
        if self.weight_decay_scope not in ("weights", "all") or not self.ssm_lr > 0:
            raise ValueError(f"TrainConfig: weight_decay_scope in (weights, all), ssm_lr > 0; got "
                             f"{self.weight_decay_scope!r}, {self.ssm_lr}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"TrainConfig.max_steps_per_epoch must be >= 1 or None; got {self.max_steps_per_epoch}")
        if not self.cohort_dir.is_dir():
            raise FileNotFoundError(f"TrainConfig.cohort_dir: {self.cohort_dir} is not a folder; expected the output of "
                                    f"`labecg cohort` and `labecg signals`")

    def model_config(self, n_targets: int, n_tabular: int) -> ModelConfig:
        """The model's settings: every :class:`ModelConfig` field this config has, by name.

        The ``mlp`` tabular encoder also gets the categorical columns of the data module's
        layout (:data:`labecg.data.CATEGORICAL_COLUMNS`) to embed.
        """
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig) if hasattr(self, f.name)}
        if self.tabular_encoder == "mlp":
            shared["categorical"] = CATEGORICAL_COLUMNS
        return ModelConfig(n_targets=n_targets, n_tabular=n_tabular, **shared)

    def data_config(self) -> DataConfig:
        return DataConfig(cohort_dir=self.cohort_dir, batch_size=self.batch_size, num_workers=self.num_workers,
                          seed=self.seed, objective=self.objective)


#: The training defaults, written once in :class:`TrainConfig`; the loss, the parameter groups
#: and :class:`LabModule` take theirs from here.
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def masked_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, loss: str = _TRAIN_DEFAULTS["loss"],
                focal_gamma: float = _TRAIN_DEFAULTS["focal_gamma"],
                target_reduction: str = _TRAIN_DEFAULTS["target_reduction"],
                target_kind: TargetKind = BINARY) -> torch.Tensor:
    """The target kind's loss over observed entries only (binary cross-entropy by default).

    Parameters
    ----------
    logits, y, mask : tensors of shape (B, T)
        y in {0, 1} (any value where missing); mask 1 observed, 0 missing.
    loss : {"bce", "focal"}
        A loss of ``target_kind.losses``. Focal: each entry's BCE times (1 - p_t)^focal_gamma,
        p_t the probability of the true class.
    focal_gamma : float
        Focusing exponent of the focal loss.
    target_reduction : {"mean", "sum"}
        Over the targets with at least one observed entry in the batch.
    target_kind : TargetKind
        What the targets are (:data:`labecg.targets.BINARY`).

    Returns
    -------
    loss : scalar tensor
        Per target: mean over its observed entries; then mean or sum over targets.
        0 (with a gradient path) when nothing is observed. Missing entries get zero gradient.
    """
    if not (logits.shape == y.shape == mask.shape):
        raise ValueError(f"masked_loss: logits, y, mask must share a shape; got "
                         f"{tuple(logits.shape)}, {tuple(y.shape)}, {tuple(mask.shape)}")
    logits = logits.float()
    y = torch.where(mask > 0, y.float(), torch.zeros_like(logits))
    losses = target_kind.losses
    if loss not in losses:
        raise ValueError(f"masked_loss: loss must be {' or '.join(map(repr, losses))}; got {loss!r}")
    per = losses[loss](logits, y, focal_gamma)  # (B, T)
    per = torch.where(mask > 0, per, torch.zeros_like(per))  # where, not *, so masked entries get no gradient
    count = mask.sum(0)  # (T,)
    seen = count > 0
    per_target = per.sum(0)[seen] / count[seen]  # (T_seen,)
    if per_target.numel() == 0:
        return logits.sum() * 0.0
    return per_target.mean() if target_reduction == "mean" else per_target.sum()


def parameter_groups(model: torch.nn.Module, lr: float, weight_decay: float,
                     weight_decay_scope: str = _TRAIN_DEFAULTS["weight_decay_scope"],
                     ssm_lr: float = _TRAIN_DEFAULTS["ssm_lr"]) -> list[dict]:
    """AdamW parameter groups: which parameters decay, and at which learning rate.

    The S4/S4D reference code registers A and the step size with weight decay 0 and their
    own learning rate (min(lr, 0.001) in its examples), and its optimizer hooks exempt
    biases and normalization weights from weight decay; ``weight_decay_scope="weights"``
    does the same. At paper scale (~450k steps) decay on ``log_dt`` and ``a_im`` would pull
    step sizes and frequencies toward zero. Which parameter is which is decided where it is
    created: each carries its group as ``_optim`` (:func:`labecg.s4.tag_optim`; the S4
    layer tags its state-space parameters, the model its biases and norms); an untagged
    parameter decays.

    Parameters
    ----------
    model : nn.Module
    lr, weight_decay : float
    weight_decay_scope : {"weights", "all"}
        "all": one group, every trained parameter decays at ``lr`` (the earlier behaviour).
    ssm_lr : float

    Returns
    -------
    list of dict with keys name ("decay", "no_decay", "ssm"), params, lr, weight_decay;
    in that order, each group's parameters in the order of ``model.parameters()``, empty
    groups left out. Frozen parameters are in no group.
    """
    trained = [p for p in model.parameters() if p.requires_grad]
    if weight_decay_scope == "all":
        return [{"name": "decay", "params": trained, "lr": lr, "weight_decay": weight_decay}]
    if weight_decay_scope != "weights":
        raise ValueError(f"parameter_groups: weight_decay_scope must be 'weights' or 'all'; "
                         f"got {weight_decay_scope!r}")
    groups = {name: [] for name in OPTIM_GROUPS}
    for p in trained:
        groups[getattr(p, "_optim", "decay")].append(p)
    settings = {"decay": (lr, weight_decay), "no_decay": (lr, 0.0), "ssm": (min(lr, ssm_lr), 0.0)}
    return [{"name": k, "params": v, "lr": settings[k][0], "weight_decay": settings[k][1]}
            for k, v in groups.items() if v]


class LabModule(pl.LightningModule):
    """Lightning wrapper: masked loss, AdamW, per-ECG validation AUROC, metrics history."""

    def __init__(self, model_config: dict, lr: float = _TRAIN_DEFAULTS["lr"],
                 weight_decay: float = _TRAIN_DEFAULTS["weight_decay"], loss: str = _TRAIN_DEFAULTS["loss"],
                 focal_gamma: float = _TRAIN_DEFAULTS["focal_gamma"],
                 target_reduction: str = _TRAIN_DEFAULTS["target_reduction"],
                 weight_decay_scope: str = _TRAIN_DEFAULTS["weight_decay_scope"],
                 ssm_lr: float = _TRAIN_DEFAULTS["ssm_lr"], objective: str = _TRAIN_DEFAULTS["objective"],
                 value_loss: str = _TRAIN_DEFAULTS["value_loss"], *,
                 y_true: Optional[np.ndarray] = None,
                 eval_rows: Optional[dict] = None, n_segments: int = 0, metrics_path: Optional[Path] = None,
                 started_at: Optional[float] = None):
        """Built complete by :func:`train`; only the settings before ``*`` go into the checkpoint.

        Parameters
        ----------
        model_config : dict
            The :class:`ModelConfig` fields.
        lr, weight_decay, loss, focal_gamma, target_reduction, weight_decay_scope, ssm_lr, objective, value_loss
            As in :class:`TrainConfig` (``loss`` trains flags, ``value_loss`` values).
        y_true : ndarray of shape (n_rows, T), optional
            Every cohort row's labels (values in the lab's unit under ``objective="value"``), NaN
            missing (the validation metric reads them).
        eval_rows : dict, optional
            Split -> the cohort rows each predicted once.
        n_segments : int
            Items per validation/test ECG (0: not checked).
        metrics_path : Path, optional
            Where each epoch's ``metrics.csv`` is written.
        started_at : float, optional
            Wall clock of this call of ``train`` (default: now).
        """
        super().__init__()
        # the run's data and folder are not settings: kept out of the checkpoint, which holds plain values only
        self.save_hyperparameters(ignore=["y_true", "eval_rows", "n_segments", "metrics_path", "started_at"])
        self.model = FusionModel(ModelConfig(**model_config))
        self.history: list[dict] = []
        self._train_sum, self._train_n = 0.0, 0
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.y_true = y_true
        self.eval_rows = eval_rows
        self.n_segments = n_segments
        self.predictions: Optional[tuple[np.ndarray, np.ndarray]] = None  # last val/test epoch, per ECG
        self.metrics_path = metrics_path
        self.started_at = time.time() if started_at is None else started_at
        self.duration_before_s = 0.0  # wall seconds of earlier calls, up to the checkpoint resumed from
        # checkpoints of flag runs written before the objective existed hold no "objective"
        self.kind = OBJECTIVES[self.hparams.get("objective", "flag")]
        self.metric_name = metric_columns(self.hparams.get("objective", "flag"))[-1]

    def forward(self, ecg, tabular):
        return self.model(ecg, tabular)

    def _loss(self, batch):
        logits = self.model(batch["ecg"], batch["tabular"])  # (B, T)
        hp = self.hparams
        loss = hp.loss if self.kind is BINARY else hp.value_loss
        return logits, masked_loss(logits, batch["y"], batch["mask"], loss, hp.focal_gamma, hp.target_reduction,
                                   target_kind=self.kind)

    def training_step(self, batch, batch_idx):
        _, loss = self._loss(batch)
        self._train_sum = self._train_sum + loss.detach() * len(batch["row"])  # stays on device: no sync per step
        self._train_n += len(batch["row"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["row"]))
        return loss

    def on_train_epoch_start(self):
        self._train_sum, self._train_n = 0.0, 0

    def validation_step(self, batch, batch_idx):
        # padding items (row -1) have mask 0: they do not enter the loss
        logits, loss = self._loss(batch)
        per_item = loss.detach().float().expand(len(batch["row"]))  # batch loss repeated per item
        self._val.append((batch["row"], self.kind.output(logits), per_item))

    test_step = validation_step

    def _gathered_predictions(self, split: str) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-ECG mean probabilities of this epoch's items from all ranks, each ECG once.

        Returns (cohort rows (n_ecgs,), mean probabilities (n_ecgs, T), mean batch loss).
        Raises when an expected ECG is missing or has other than ``n_segments`` items.
        """
        rows = torch.cat([v[0] for v in self._val])
        prob = torch.cat([v[1] for v in self._val])
        losses = torch.cat([v[2] for v in self._val])
        self._val.clear()
        rows, prob, losses = (self._gather(t) for t in (rows, prob, losses))
        real = rows >= 0  # drop the padding that equalizes the ranks' shares
        rows, prob, losses = rows[real], prob[real], losses[real]
        ecg_rows, counts = np.unique(rows, return_counts=True)
        expected = self.eval_rows.get(split) if self.eval_rows else None
        if (expected is not None and not np.array_equal(ecg_rows, np.sort(expected))) or \
                (self.n_segments and np.any(counts != self.n_segments)):
            raise RuntimeError(f"{split} predictions gathered from {self.trainer.world_size} rank(s): "
                               f"{len(ecg_rows)} ECGs with {counts.min(initial=0)}-{counts.max(initial=0)} items "
                               f"each; expected {len(expected) if expected is not None else '?'} ECGs with "
                               f"{self.n_segments} items each")
        ecg_rows, mean_prob = average_segments(rows, prob)
        return ecg_rows, mean_prob, float(losses.mean()) if len(losses) else float("nan")

    def on_test_epoch_end(self):
        ecg_rows, mean_prob, _ = self._gathered_predictions("test")
        self.predictions = (ecg_rows, mean_prob)

    def on_validation_epoch_end(self):
        ecg_rows, mean_prob, val_loss = self._gathered_predictions("val")
        self.predictions = (ecg_rows, mean_prob)
        scores = self.kind.metric(self.y_true[ecg_rows], mean_prob)
        macro = float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")
        # equal on every rank (from the gathered predictions): sync_dist averages equal values
        # -inf keeps ModelCheckpoint's comparison defined when no target has both classes
        self.log(self.metric_name, macro if np.isfinite(macro) else float("-inf"), prog_bar=True, sync_dist=True)
        self.log("val_loss", val_loss, prog_bar=True, sync_dist=True)
        if self.trainer.sanity_checking or self.trainer.state.fn != TrainerFn.FITTING:
            return
        # the training loss over all ranks' items of this epoch
        total = self.trainer.strategy.reduce(torch.as_tensor(self._train_sum, dtype=torch.float64,
                                                             device=self.device), reduce_op="sum")
        count = self.trainer.strategy.reduce(torch.as_tensor(float(self._train_n), dtype=torch.float64,
                                                             device=self.device), reduce_op="sum")
        train_loss = float(total) / float(count) if float(count) else float("nan")
        self.history = [h for h in self.history if h["epoch"] < self.current_epoch]
        self.history.append({"epoch": self.current_epoch, "train_loss": train_loss, "val_loss": val_loss,
                             self.metric_name: macro})
        if self.metrics_path is not None and self.trainer.is_global_zero:
            write_metrics(self.metrics_path, self.history, columns=METRIC_COLUMNS[:-1] + (self.metric_name,))

    def _gather(self, t: torch.Tensor) -> np.ndarray:
        """Concatenate a per-rank tensor over DDP ranks (ranks may hold different lengths)."""
        if self.trainer.world_size == 1:
            return t.detach().cpu().numpy()
        n = self.all_gather(torch.tensor(len(t), device=t.device))  # (world,)
        pad = torch.zeros((int(n.max()) - len(t),) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        full = self.all_gather(torch.cat([t, pad]))  # (world, max_n, ...)
        return torch.cat([full[r, :int(n[r])] for r in range(len(n))]).detach().cpu().numpy()

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.AdamW(parameter_groups(self.model, hp.lr, hp.weight_decay, hp.weight_decay_scope,
                                                  hp.ssm_lr), lr=hp.lr, weight_decay=hp.weight_decay)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["labecg_history"] = self.history
        checkpoint["labecg_duration_s"] = self.duration_s()

    def on_load_checkpoint(self, checkpoint):
        self.history = list(checkpoint.get("labecg_history", []))
        self.duration_before_s = float(checkpoint.get("labecg_duration_s", 0.0))

    def duration_s(self) -> float:
        """Wall seconds of the whole run: earlier calls up to the resumed checkpoint, plus this one."""
        return self.duration_before_s + (time.time() - self.started_at)


class EpochProgress(pl.Callback):
    """One bar over epochs (loss and validation AUROC as its postfix) for :func:`labecg.util.progress_bar`.

    Used instead of Lightning's bar while ``labecg book`` runs the training notebook:
    Lightning's bar writes to the notebook's output, so every update would land in the page.
    """

    def __init__(self):
        self.bar = None

    def on_train_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.bar = progress_bar(total=trainer.max_epochs, initial=trainer.current_epoch, desc="training",
                                    unit="epoch")

    def on_train_epoch_end(self, trainer, pl_module):
        if self.bar is not None:
            last = pl_module.history[-1] if pl_module.history else {}
            metric = getattr(pl_module, "metric_name", METRIC_COLUMNS[-1])
            self.bar.set_postfix({"train_loss": f"{last.get('train_loss', float('nan')):.3f}",
                                  metric: f"{last.get(metric, float('nan')):.3f}"})
            self.bar.update(1)

    def on_train_end(self, trainer, pl_module):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def write_metrics(path: Path, history: list[dict], columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
    """Write ``metrics.csv``: one row per epoch, ``columns`` (:func:`metric_columns` of the objective)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for row in history:
            w.writerow({k: row[k] for k in columns})


def write_predictions(path: Path, study_id, target_names, y_true, y_score, patients: pd.DataFrame,
                      flags: Optional[tuple[list, np.ndarray]] = None) -> None:
    """``predictions_{val,test}.npz`` with the keys of ARCHITECTURE.md §5.

    ``patients``, a frame with one row per prediction and columns ``subject_id``, ``sex``,
    ``age``, ``race`` (as in cohort.parquet), gives those arrays: the patient-level
    bootstrap and the subgroup analysis of :mod:`labecg.evaluate` read them. ``flags``
    (a value run's): (flag target names (F,), their labels (n, F), NaN missing), stored as
    ``flag_names`` and ``flag_true`` so that the evaluation scores the predicted values
    against the flags without the cohort.
    """
    extra = {"subject_id": patients["subject_id"].to_numpy(np.int64),
             "sex": patients["sex"].to_numpy(np.float64, na_value=np.nan),
             "age": patients["age"].to_numpy(np.float64, na_value=np.nan),
             "race": patients["race"].astype("string").fillna("").to_numpy(dtype=str)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, study_id=np.asarray(study_id, np.int64), target_names=np.asarray(target_names, dtype=str),
                 y_true=np.asarray(y_true, np.float32), y_score=np.asarray(y_score, np.float32), **extra,
                 **({} if flags is None else {"flag_names": np.asarray(flags[0], dtype=str),
                                              "flag_true": np.asarray(flags[1], np.float32)}))


def write_value_scales(path: Path, scales: pd.DataFrame) -> None:
    """``RUN/value_scales.json`` of a value run: ``{"columns": [{name, log, center, scale, n, skewness}]}``,
    one per output in order (:func:`labecg.targets.fit_value_scales` on the training folds)."""
    rows = [{"name": str(name), "log": bool(r["log"]), "center": float(r["center"]), "scale": float(r["scale"]),
             "n": int(r["n"]), "skewness": None if pd.isna(r["skewness"]) else float(r["skewness"])}
            for name, r in scales.iterrows()]
    write_json(path, {"columns": rows})


def copy_last_values(cohort_dir: Path, out: Path, study_ids) -> Optional[Path]:
    """Copy the rows of ``COHORT/last_values.parquet`` of the evaluated ECGs to ``RUN/last_values.parquet``.

    The results chapter reads run folders only; the last-value baseline needs these rows.
    A cohort folder from before the file existed gives none (logged; the chapter says so).

    Parameters
    ----------
    study_ids : array-like of shape (n_ecgs,), int
        The validation and test ECGs of the predictions.
    """
    source = Path(cohort_dir) / layout.LAST_VALUES
    if not source.exists():
        log.info("%s: not found (a cohort from before labecg wrote it); no last-value baseline for %s", source, out)
        return None
    last = pd.read_parquet(source)
    with atomic_path(out / layout.LAST_VALUES) as tmp:
        last[last["study_id"].isin(np.asarray(study_ids, dtype=np.int64))].to_parquet(tmp, index=False)
    return out / layout.LAST_VALUES


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _hardware() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def _jsonable(obj):
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(obj).items()}


# Fields a resumed run may change: more epochs, other hardware. Everything else must match.
_RUNTIME_FIELDS = ("run_dir", "cohort_dir", "epochs", "resume", "num_workers", "accelerator", "devices", "num_nodes",
                   "strategy", "precision", "break_lock")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_settings(cfg: TrainConfig) -> dict:
    """What identifies a run: the config less its runtime fields, plus the inputs' digests.

    A run folder is resumed only when these are unchanged, so a checkpoint is never
    continued on another cohort, other signals or another model.
    """
    cohort = cfg.cohort_dir
    settings = {k: v for k, v in _jsonable(cfg).items() if k not in _RUNTIME_FIELDS}
    settings["cohort_sha256"] = _file_sha256(cohort / layout.COHORT)
    signals_meta = cohort / layout.SIGNALS_META
    settings["signals_fingerprint"] = read_json(signals_meta).get("fingerprint") if signals_meta.exists() else None
    return settings


#: Marks a run folder: written first by a fresh run (which empties the folder), read on resume.
#: What ``labecg train`` reads from the cohort folder, and the command that writes it.
COHORT_INPUTS = {layout.COHORT: "labecg cohort", layout.TARGETS: "labecg cohort",
                 layout.SIGNALS_META: "labecg signals", layout.SIGNALS: "labecg signals",
                 layout.SIGNALS_MANIFEST: "labecg signals", layout.SIGNALS_STATS: "labecg signals"}


def check_inputs(cfg: TrainConfig) -> None:
    """Raise, naming the file, unless the cohort folder holds everything training reads.

    Runs before the run folder is touched, so a wrong ``--cohort-dir`` never costs a trained model.
    """
    cohort = cfg.cohort_dir
    for name, command in COHORT_INPUTS.items():
        if not (cohort / name).is_file():
            raise FileNotFoundError(f"{cohort / name}: not found; expected the output of `{command}` "
                                    f"in the cohort folder {cohort}")
    targets = read_json(cohort / layout.TARGETS).get("targets", [])
    if not targets:
        raise ValueError(f"{cohort / layout.TARGETS}: lists no targets, nothing to train; rebuild the cohort "
                         f"with lower --min-per-class or --min-lab-events (`labecg cohort` says which values)")


def _prepare_run_folder(cfg: TrainConfig, out: Path, settings: dict) -> Optional[Path]:
    """The checkpoint to resume from, or None for a fresh run in an emptied folder (global rank 0 only).

    A fresh run removes everything an earlier run left in ``out`` (checkpoints,
    predictions, config, run_info, evaluation), so that the folder never holds files of
    two runs. A non-empty ``out`` without ``run_settings.json`` is not a run folder and is
    refused rather than emptied.
    """
    ckpt_dir, settings_path = out / layout.CHECKPOINTS, out / layout.RUN_SETTINGS
    last = ckpt_dir / layout.LAST_CHECKPOINT
    if cfg.resume and last.exists():
        previous = read_json(settings_path) if settings_path.exists() else {}
        differ = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if differ:
            raise ValueError(f"{out}: holds a run with other settings ({', '.join(differ)} differ from "
                             f"{settings_path.name}); resuming continues only the same run: choose another "
                             f"--run-dir, or pass --no-resume to start over in this folder")
        broken = checkpoint_problem(last)
        if broken:
            best = ckpt_dir / layout.BEST_CHECKPOINT
            offer = (f"copy {best} (intact, {format_bytes(best.stat().st_size)}) over it to resume from the best "
                     f"epoch, or pass --no-resume to start over" if best.exists() and not checkpoint_problem(best)
                     else "pass --no-resume to start over")
            raise ValueError(f"{last}: unreadable ({broken}), so this run cannot resume from it; {offer}")
        return last
    # the lock file is this process's own, not an earlier run's
    entries = sorted(e for e in out.iterdir() if e.name != LOCK_NAME) if out.is_dir() else []
    if entries and not settings_path.exists():
        raise FileExistsError(f"{out}: holds {entries[0].name} (and {len(entries) - 1} more) but no "
                              f"{layout.RUN_SETTINGS}, so it is not a run folder; choose an empty or new --run-dir")
    for entry in entries:  # a fresh run must not inherit the previous run's files
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json(settings_path, settings)
    return None


def checkpoint_problem(path: Path) -> str:
    """Why ``path`` is not a complete checkpoint ("" when it is): torch's zip format, every member's CRC."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return f"member {bad} fails its CRC" if bad else ""
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        size = path.stat().st_size if path.exists() else 0
        return f"{size} bytes, not a complete checkpoint: {type(e).__name__}: {e}"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final name and renamed into place (atomic on one filesystem).

    Lightning's own saver writes through fsspec into the system temp folder and moves the
    file across filesystems, a copy that a full disk cuts short. Here a crash or a full disk
    leaves the previous checkpoint as it was; a full disk is one line naming the file and the
    space its write needed.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise disk_full(path, len(data), e) from None
            raise


#: Accelerators ``--accelerator`` may name, with Lightning's class that says whether this machine has one.
_ACCELERATORS = {"gpu": "CUDAAccelerator", "cuda": "CUDAAccelerator", "mps": "MPSAccelerator",
                 "tpu": "XLAAccelerator"}


def check_accelerator(accelerator: str) -> None:
    """Raise one line when ``accelerator`` names hardware this machine lacks, with what it has."""
    name = str(accelerator).lower()
    if name not in _ACCELERATORS:
        return
    import pytorch_lightning.accelerators as acc

    available = [k for k, cls in (("gpu", "CUDAAccelerator"), ("mps", "MPSAccelerator"), ("tpu", "XLAAccelerator"))
                 if getattr(acc, cls).is_available()]
    if getattr(acc, _ACCELERATORS[name]).is_available():
        return
    if name == "tpu":
        import importlib.util
        xla = importlib.util.find_spec("torch_xla") is not None
        found = f"torch {torch.__version__}, torch_xla {'installed, no XLA device' if xla else 'not installed'}"
    else:
        found = (f"torch {torch.__version__}, CUDA {'available' if torch.cuda.is_available() else 'not available'}"
                 f"{'' if torch.version.cuda else ' (a CPU-only build)'}")
    raise ValueError(f"--accelerator {accelerator}: none found on {platform.node()} ({found}); choose one of "
                     f"{', '.join(['cpu', 'auto', *available])}")


def _resume_path(cfg: TrainConfig, out: Path) -> Optional[Path]:
    """What :func:`_prepare_run_folder` decides, read-only: for ranks other than 0."""
    last = layout.checkpoint_path(out, "last")
    return last if cfg.resume and last.exists() else None


def train(cfg: TrainConfig, callbacks: tuple = ()) -> Path:
    """Train, keep the best checkpoint (:func:`selection_metric`), predict val and test.

    Writes into ``cfg.run_dir``: ``checkpoints/{best,last}.ckpt``, ``metrics.csv``,
    ``value_scales.json`` (``--objective value``),
    ``predictions_val.npz``, ``predictions_test.npz``, ``targets.json``, ``config.json``,
    ``inference.json`` (:meth:`LabDataModule.inference_spec`), ``run_info.json``,
    ``last_values.parquet`` (:func:`copy_last_values`, when the cohort has it),
    ``run_settings.json``. Resumes from ``checkpoints/last.ckpt`` when
    ``cfg.resume`` and the run's settings and inputs are unchanged (:func:`run_settings`);
    raises when they differ. Every input is checked (:func:`check_inputs`, the dataset's
    setup) before ``cfg.run_dir`` is touched; a fresh run then empties ``cfg.run_dir`` of the
    earlier run's files. ``run_info.json``'s ``duration_s`` counts every call of the run
    (up to the checkpoint each resumed from). Under DDP every rank runs this function
    (Lightning, torchrun or SLURM starts them); only global rank 0 writes files.

    Parameters
    ----------
    cfg : TrainConfig
    callbacks : tuple of pl.Callback
        Extra Lightning callbacks (e.g. to inspect batches), beside the checkpointing.

    Returns
    -------
    out : Path, the run folder.
    """
    started = time.time()
    out = cfg.run_dir
    _silence_library_noise()
    check_inputs(cfg)
    check_accelerator(cfg.accelerator)
    settings = run_settings(cfg)
    # under `labecg book` Lightning's bar would fill the page; a bar the book echoes on its terminal instead
    in_book = bool(os.environ.get(PROGRESS_ENV))
    if in_book:  # Lightning's notes on hardware and settings are terminal talk, not page content
        for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    ckpt_dir = out / layout.CHECKPOINTS
    monitor, mode = selection_metric(cfg.objective)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, monitor=monitor,
                                              filename=layout.BEST_CHECKPOINT.removesuffix(".ckpt"),
                                              mode=mode, save_top_k=1, enable_version_counter=False)
    # last.ckpt after every epoch: save_last=True writes it only in an epoch that improved best.ckpt
    # (Lightning 2.6), so a resume would repeat the epochs since. Listed after `checkpoint`, it
    # saves that callback's state of the same epoch.
    last_checkpoint = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_top_k=1,
                                                   filename=layout.LAST_CHECKPOINT.removesuffix(".ckpt"),
                                                   enable_version_counter=False)
    # the bar's loss readout is a GPU sync (.item()); every 20 steps keeps the CPU ahead of the GPU
    bar = EpochProgress() if in_book else pl.callbacks.TQDMProgressBar(refresh_rate=20)
    # the Trainer knows this process's global rank (from Lightning's launcher, torchrun or SLURM)
    # before any process group exists; the samplers split the data themselves
    try:
        trainer = pl.Trainer(max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices,
                             num_nodes=cfg.num_nodes, strategy=cfg.strategy, precision=cfg.precision,
                             callbacks=[checkpoint, last_checkpoint, bar, *callbacks], logger=False, use_distributed_sampler=False,
                             limit_train_batches=cfg.max_steps_per_epoch or 1.0, num_sanity_val_steps=0,
                             enable_model_summary=False, enable_progress_bar=not in_book, default_root_dir=out,
                             plugins=[AtomicCheckpointIO()])
    except MisconfigurationException as e:  # e.g. more devices than the machine has
        raise ValueError(f"--accelerator {cfg.accelerator} --devices {cfg.devices} --strategy {cfg.strategy}: "
                         f"{str(e).strip().splitlines()[0]}") from None
    with contextlib.ExitStack() as held:
        # before the dataset is read, so a second process stops at once; the lock alone leaves no trace
        if trainer.is_global_zero:  # under DDP the other ranks write nothing, so only rank 0 locks
            command = shlex.join(["labecg", *sys.argv[1:]] if Path(sys.argv[0]).name == "labecg" else sys.argv)
            held.enter_context(folder_lock(out, command, break_lock=cfg.break_lock))
        return _train_locked(cfg, out, trainer, checkpoint, settings, started)


def _train_locked(cfg: TrainConfig, out: Path, trainer: pl.Trainer, checkpoint, settings: dict,
                  started: float) -> Path:
    """:func:`train` once the run folder is locked (by global rank 0)."""
    ckpt_dir = out / layout.CHECKPOINTS
    pl.seed_everything(cfg.seed, workers=True)
    dm = LabDataModule(cfg.data_config())
    dm.setup()
    model_cfg = cfg.model_config(dm.n_targets, dm.n_tabular)
    if trainer.is_global_zero:  # only now, with every input read
        resume_from = _prepare_run_folder(cfg, out, settings)
    else:
        resume_from = _resume_path(cfg, out)
    module = LabModule(dataclasses.asdict(model_cfg), lr=cfg.lr, weight_decay=cfg.weight_decay,
                       loss=cfg.loss, focal_gamma=cfg.focal_gamma, target_reduction=cfg.target_reduction,
                       weight_decay_scope=cfg.weight_decay_scope, ssm_lr=cfg.ssm_lr,
                       objective=cfg.objective, value_loss=cfg.value_loss, y_true=dm.y_true,
                       eval_rows={"val": dm.rows["val"], "test": dm.rows["test"]}, n_segments=dm.n_segments,
                       metrics_path=out / layout.METRICS, started_at=started)

    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    except SystemExit:
        # Lightning answers Ctrl-C by tearing down and calling sys.exit(1)
        if not trainer.interrupted:
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning set it to ignore
        last = ckpt_dir / layout.LAST_CHECKPOINT
        where = (f"{last} holds epochs 0-{trainer.current_epoch - 1}" if trainer.current_epoch and last.exists()
                 else "no epoch was finished")
        raise Interrupted(f"interrupted at epoch {trainer.current_epoch} ({where}); rerun the same command "
                          f"to resume") from None
    epochs_done, best_score = trainer.current_epoch, checkpoint.best_model_score
    # loading best.ckpt below restores its duration too; the earlier calls' share is the one fit resumed
    duration_before_s = module.duration_before_s

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else ckpt_dir / layout.BEST_CHECKPOINT
    if not best.exists():
        raise FileNotFoundError(f"{best}: best checkpoint missing after training")
    # every rank predicts its share with the best weights; gathered, each ECG once
    predictions = {}
    for split, run in (("val", trainer.validate), ("test", trainer.test)):
        run(module, datamodule=dm, ckpt_path=best, verbose=False)
        predictions[split] = module.predictions
    if not trainer.is_global_zero:
        return out
    names = list(dm.target_names)
    patients = pd.read_parquet(cfg.cohort_dir / layout.COHORT, columns=["subject_id", "sex", "age", "race"])
    values = cfg.objective == "value"
    if values:  # the scales fitted on the training folds: the outputs back in the lab's unit, and the run's record
        write_value_scales(out / layout.VALUE_SCALES, dm.value_scales)
    for split, (rows, score) in predictions.items():
        if values:
            score = unstandardize_values(score, dm.value_scales)
        flags = ([t["name"] for t in dm.targets], dm.flag_true[rows]) if values else None
        write_predictions(layout.predictions_path(out, split), dm.study_ids[rows], names, dm.y_true[rows], score,
                          patients=patients.iloc[rows], flags=flags)

    copy_last_values(cfg.cohort_dir, out, np.concatenate([dm.study_ids[rows] for rows, _ in predictions.values()]))
    targets = dm.targets_json()
    write_json(out / layout.TARGETS, targets)  # the counts of the ECGs evaluated
    write_json(out / layout.CONFIG, {"train": _jsonable(cfg), "model": dataclasses.asdict(model_cfg),
                                     "data": _jsonable(cfg.data_config())})
    # the run folder alone scores new ECGs (labecg.predict): preprocessing fitted on this cohort
    write_json(out / layout.INFERENCE, dm.inference_spec())
    import labecg
    write_json(out / layout.RUN_INFO, {
        "source": targets.get("source"), "labecg_version": getattr(labecg, "__version__", None),
        "git_commit": _git_commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": _hardware(), "duration_s": round(duration_before_s + time.time() - started, 1),
        "best_checkpoint": best.name, f"best_{selection_metric(cfg.objective)[0]}": float(best_score)
        if best_score is not None else None, "epochs_done": epochs_done,
        "world_size": trainer.world_size})
    return out
