"""Serve ECG crops, tabular features and targets to the model.

Batches (ARCHITECTURE.md §4) are dicts: ``ecg`` (B, 250, 12) float32, normalized per lead
with the training-fold statistics of ``signals_stats.json``; ``tabular`` (B, n_tabular)
float32; ``y`` (B, T) float32, 0 where missing; ``mask`` (B, T) float32, 1 observed;
``row`` (B,) int64 cohort row, -1 for a padding item; ``segment`` (B,) int64, 0-3 for
validation/test segments, -1 for a random training crop; ``start`` (B,) int64 first sample
of the crop or segment.

Everything per-row is precomputed into numpy arrays once; the sampler plans whole batches
(sorted rows, crop offsets) and the dataset fills one float32 array per batch, so there is
no per-item Dataset call, collation or pandas in the loop.

Data parallelism (DDP): with ``world_size`` W > 1, rank r trains on a disjoint share of each
epoch's shuffled rows (every W-th row from position r; the last ``n_train % W`` rows of the
permutation, a different few each epoch, wait for the next epoch), and evaluates every W-th
ECG from position r. Evaluation shares are padded to equal length with items of row -1 (and
mask 0), so every rank runs the same number of batches; the padding is dropped before
segment averaging, so each ECG is predicted exactly once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from labecg import layout
from labecg.layout import TEST_FOLD, TRAIN_FOLDS, VAL_FOLD
from labecg.features import FEATURES, RACES
from labecg.signals import load_signals
from labecg.targets import OBJECTIVES, fit_value_scales, standardize_values
from labecg.util import get_logger, hold_paths, read_json

log = get_logger("labecg.data")

CONTINUOUS = tuple(f for f in FEATURES if f not in ("sex", "race"))
VARIABLES = FEATURES
# Output columns of transform_tabular, in order. A patient without any recorded race has a
# missing race (as the authors): its one-hot columns are imputed with their training medians
# and race_missing is 1, as for every other variable.
TABULAR_FEATURES: tuple[str, ...] = (
    ("sex",) + CONTINUOUS + tuple(f"race_{r}" for r in RACES)
    + tuple(f"{v}_missing" for v in VARIABLES))
#: (first column, columns) of the categorical variables in :data:`TABULAR_FEATURES`, in
#: the authors' order: sex (one 0/1 column), race (one-hot). The authors' tabular MLP
#: embeds them (:class:`labecg.model.TabularMLP`).
CATEGORICAL_COLUMNS: tuple[tuple[int, int], ...] = (
    (TABULAR_FEATURES.index("sex"), 1), (TABULAR_FEATURES.index(f"race_{RACES[0]}"), len(RACES)))


@dataclass(frozen=True)
class DataConfig:
    """Settings of the dataset and loaders.

    Parameters
    ----------
    cohort_dir : Path
        Cohort folder with cohort.parquet, targets.json and the signal files.
    batch_size : int
        Items per batch (validation/test items are 250-sample segments: 4 per ECG).
    num_workers : int
        DataLoader worker processes (persistent when > 0).
    crop_samples : int
        Crop length in samples (250 = 2.5 s at 100 Hz).
    seed : int
        Seeds the training order and crop offsets (per epoch and batch).
    pin_memory : bool
        Page-locked batches when CUDA is available (faster, asynchronous copies to the GPU).
    train_folds, val_fold, test_fold : folds of cohort.parquet's ``fold`` column.
    targets : tuple of str, optional
        Subset of targets.json's names (its ``values``' names under ``objective="value"``), in
        the given order; None = all.
    objective : {"flag", "value"}
        What ``y`` holds (:data:`labecg.targets.OBJECTIVES`): ``flag`` the 0/1 targets of
        targets.json's ``targets``; ``value`` its value columns (``values``), standardised with
        scales fitted on the training rows (:attr:`LabDataModule.value_scales`).
    """

    cohort_dir: Path
    batch_size: int = 32
    num_workers: int = 0
    crop_samples: int = 250
    seed: int = 0
    pin_memory: bool = True
    train_folds: tuple[int, ...] = TRAIN_FOLDS
    val_fold: int = VAL_FOLD
    test_fold: int = TEST_FOLD
    targets: Optional[tuple[str, ...]] = None
    objective: str = "flag"

    def __post_init__(self):
        hold_paths(self)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.crop_samples < 1:
            raise ValueError(f"crop_samples must be >= 1, got {self.crop_samples}")
        if not self.train_folds:
            raise ValueError("train_folds is empty")
        overlap = {self.val_fold, self.test_fold} & set(self.train_folds)
        if overlap or self.val_fold == self.test_fold:
            raise ValueError(f"train_folds {self.train_folds}, val_fold {self.val_fold} and "
                             f"test_fold {self.test_fold} must not overlap")
        if self.targets is not None and len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets has duplicates: {self.targets}")


# ---------------------------------------------------------------------------- tabular

@dataclass(frozen=True)
class TabularStats:
    """Imputation and standardization statistics, fitted on training rows only.

    ``median`` has one entry for sex, each of :data:`CONTINUOUS` and each race one-hot
    column ``race_<r>`` (the median over training rows with a race: what a missing race is
    imputed with, as the authors impute their race dummies); ``mean``/``std`` are of the
    median-imputed continuous variables; ``n_rows`` is the number of training rows used.
    """

    median: dict = field(default_factory=dict)
    mean: dict = field(default_factory=dict)
    std: dict = field(default_factory=dict)
    n_rows: int = 0


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        raise KeyError(f"cohort frame: missing column {name!r}; expected {list(VARIABLES)}")
    return pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)


def fit_tabular(frame: pd.DataFrame, train_rows) -> TabularStats:
    """Fit medians (sex and the continuous variables) and standardization on training rows.

    Parameters
    ----------
    frame : DataFrame of shape (n_ecgs, ...)
        Cohort rows with the columns of :data:`VARIABLES`.
    train_rows : array-like of int of shape (n_train,), or bool of shape (n_ecgs,)
        Positions of the training rows; no other row influences the statistics.

    Returns
    -------
    stats : TabularStats
        Medians of the observed training values; mean and std (ddof 0) of the training
        values after median imputation; std 1.0 where a variable is constant (std below
        1e-9 of its mean's magnitude, i.e. round-off).
    """
    rows = np.asarray(train_rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if len(rows) == 0:
        raise ValueError("fit_tabular: no training rows")
    median, mean, std = {}, {}, {}
    for name in ("sex",) + CONTINUOUS:
        v = _column(frame, name)[rows]
        med = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
        median[name] = med
        if name in CONTINUOUS:
            filled = np.where(np.isnan(v), med, v)
            mean[name] = float(filled.mean())
            s = float(filled.std())
            # a constant column's std is float round-off (1e-14 for 37 copies of 98.6), not 0:
            # dividing by it would turn any other value into ~1e13
            std[name] = s if s > 1e-9 * max(1.0, abs(mean[name])) else 1.0
    race = _race(frame)[rows]
    known = race[race != None]  # noqa: E711 (elementwise over an object array)
    for r in RACES:
        median[f"race_{r}"] = float(np.median(known == r)) if len(known) else 0.0
    return TabularStats(median=median, mean=mean, std=std, n_rows=int(len(rows)))


def transform_tabular(frame: pd.DataFrame, stats: TabularStats) -> np.ndarray:
    """Impute, standardize and one-hot the tabular inputs.

    Returns
    -------
    x : ndarray of shape (n_ecgs, len(TABULAR_FEATURES)), float32
        Columns :data:`TABULAR_FEATURES`: sex (1 male, 0 female; median-imputed), the ten
        continuous variables (median-imputed, then standardized), race one-hot (a missing
        race: each column's training median), and one 0/1 "was missing" indicator per variable.
    """
    n = len(frame)
    out = np.zeros((n, len(TABULAR_FEATURES)), dtype=np.float32)
    col = {name: i for i, name in enumerate(TABULAR_FEATURES)}
    for name in ("sex",) + CONTINUOUS:
        v = _column(frame, name)
        miss = np.isnan(v)
        v = np.where(miss, stats.median[name], v)
        if name in CONTINUOUS:
            v = (v - stats.mean[name]) / stats.std[name]
        out[:, col[name]] = v
        out[:, col[f"{name}_missing"]] = miss
    race = _race(frame)
    missing = race == None  # noqa: E711 (elementwise over an object array)
    for r in RACES:
        out[:, col[f"race_{r}"]] = np.where(missing, stats.median.get(f"race_{r}", 0.0), race == r)
    out[:, col["race_missing"]] = missing
    return out


def _race(frame: pd.DataFrame) -> np.ndarray:
    """The race column as an object array of :data:`RACES` names and None (missing)."""
    if "race" not in frame.columns:
        raise KeyError(f"cohort frame: missing column 'race'; expected one of {RACES} per row")
    race = frame["race"].astype("string").str.lower().to_numpy(dtype=object, na_value=None)
    unknown = sorted({r for r in race if r is not None and r not in RACES})
    if unknown:
        raise ValueError(f"cohort frame: column 'race' has {unknown}; expected {RACES} or missing")
    return race


# ---------------------------------------------------------------------------- dataset


def cut_segments(signals: np.ndarray, rows, starts, crop_samples: int, mean_mv: np.ndarray,
                 std_mv: np.ndarray) -> np.ndarray:
    """Segments of stored ECGs, normalised per lead as the model reads them.

    The one place where a segment is cut and normalised: the training and test loaders
    (:class:`ECGBatches`), scoring a new record (:mod:`labecg.predict`) and explaining
    (:mod:`labecg.explain`) all call it, so a test-fold ECG gets the same float32 input
    in each.

    Parameters
    ----------
    signals : ndarray of shape (N, L, C)
        ECGs as ``signals.npy`` stores them (any dtype; the memmap itself, or records
        converted the same way), in mV.
    rows, starts : int arrays of shape (B,)
        Segment ``i`` is ``signals[rows[i], starts[i]:starts[i] + crop_samples]``.
    crop_samples : int
        Segment length in samples (2.5 s at 100 Hz: 250).
    mean_mv, std_mv : ndarray of shape (C,)
        The training folds' per-lead mean and standard deviation (``signals_stats.json``).

    Returns
    -------
    ndarray of shape (B, crop_samples, C), float32
        ``(segment - mean_mv) * (1 / std_mv)``, computed in float32.
    """
    ecg = np.empty((len(rows), crop_samples, signals.shape[2]), dtype=np.float32)  # (B, crop, C)
    # B slice copies (cast on assignment) beat one fancy-indexed gather by ~2x (bench/loader.py)
    for i, (r, o) in enumerate(zip(np.asarray(rows).tolist(), np.asarray(starts).tolist())):
        ecg[i] = signals[r, o:o + crop_samples]
    ecg -= np.asarray(mean_mv, dtype=np.float32)
    ecg *= 1.0 / np.asarray(std_mv, dtype=np.float32)
    return ecg

class ECGBatches(Dataset):
    """Batches read from the signal memmap; indexed by a batch plan, not by item.

    ``dataset[(rows, offsets, segments)]`` returns one batch dict; rows are sorted so the
    memmap reads go forward through the file. Row -1 is a padding item: it reads row 0's
    data, keeps row -1 and gets mask 0. The memmap is opened lazily in each worker.
    """

    def __init__(self, cohort_dir: Path, mean_mv: np.ndarray, std_mv: np.ndarray,
                 tabular: np.ndarray, y: np.ndarray, mask: np.ndarray, crop_samples: int):
        self.cohort_dir = Path(cohort_dir)
        self.mean_mv = np.asarray(mean_mv, dtype=np.float32)  # (C,)
        self.std_mv = np.asarray(std_mv, dtype=np.float32)  # (C,)
        self.tabular, self.y, self.mask = tabular, y, mask
        self.crop_samples = crop_samples
        self._x: Optional[np.ndarray] = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_x"] = None  # never pickle the memmap into workers
        return state

    def __len__(self) -> int:
        return len(self.tabular)

    @property
    def signals(self) -> np.ndarray:
        if self._x is None:
            self._x, _ = load_signals(self.cohort_dir)
        return self._x

    def __getitem__(self, plan) -> dict[str, np.ndarray]:
        rows, offsets, segments = plan
        x = self.signals
        read = np.maximum(rows, 0)  # padding items (row -1) read row 0
        ecg = cut_segments(x, read, offsets, self.crop_samples, self.mean_mv, self.std_mv)
        mask = self.mask[read]
        if rows.min(initial=0) < 0:
            mask[rows < 0] = 0.0
        return {"ecg": ecg,
                "tabular": self.tabular[read],
                "y": self.y[read],
                "mask": mask,
                "row": rows.astype(np.int64),
                "segment": segments.astype(np.int64),
                "start": np.asarray(offsets, dtype=np.int64)}


def _keep_batch(batch):
    return batch


class BatchLoader(DataLoader):
    """A DataLoader over batch plans whose workers send numpy batches.

    Workers return numpy arrays, pickled through the worker pipe, and the tensors are made
    here in the main process: for ~0.5 MB batches that is ~3x faster than torch's default
    of one shared-memory segment per tensor (bench/loader.py, 2 workers). With
    ``pin_memory`` the tensors are copied into page-locked memory, so that the copy to the
    GPU (``non_blocking``, as Lightning moves batches) overlaps the previous step.

    The sampler already splits the data between DDP ranks: Lightning must not replace it
    (``Trainer(use_distributed_sampler=False)``).
    """

    def __init__(self, dataset: ECGBatches, sampler: Sampler, num_workers: int = 0,
                 pin_memory: bool = False):
        super().__init__(dataset, sampler=sampler, batch_size=None, collate_fn=_keep_batch,
                         num_workers=num_workers, persistent_workers=num_workers > 0,
                         prefetch_factor=4 if num_workers else None)
        self.pin = pin_memory

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in super().__iter__():
            if self.pin:
                yield {k: torch.from_numpy(v).pin_memory() for k, v in batch.items()}
            else:
                yield {k: torch.from_numpy(v) for k, v in batch.items()}


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size; got rank {rank}, world_size {world_size}")


class TrainCrops(Sampler):
    """Shuffled batches of training rows, each with one random crop offset; rank ``rank``'s share.

    Order and offsets of the whole epoch come from ``numpy.random.default_rng((seed, epoch))``
    in the main process, so they do not depend on the number of workers, and every rank
    draws the same permutation. Rank r of W takes positions r, r + W, ... of the first
    ``W * (n // W)`` (every row when W = 1): the shares are disjoint and equal in size, so
    every rank runs the same number of steps. The epoch advances after each pass, or is set
    by Lightning through :meth:`set_epoch`. When a share leaves a last batch of one, that
    row joins the batch before it (batch_size + 1 rows): BatchNorm cannot train on one sample.
    """

    def __init__(self, rows: np.ndarray, batch_size: int, n_samples: int, crop_samples: int, seed: int,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if crop_samples > n_samples:
            raise ValueError(f"crop_samples={crop_samples} exceeds the record length {n_samples}")
        _check_rank(rank, world_size)
        self.rows, self.batch_size, self.n_samples, self.crop_samples = rows, batch_size, n_samples, crop_samples
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.rows) // self.world_size
        if self.drop_last:
            return n // self.batch_size
        # a last batch of one joins the batch before it: BatchNorm cannot train on one sample
        return max(1, n // self.batch_size) if n % self.batch_size == 1 else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        order = self.rows[rng.permutation(len(self.rows))]
        offsets = rng.integers(0, self.n_samples - self.crop_samples + 1, size=len(order))  # inclusive end
        share = slice(self.rank, self.world_size * (len(order) // self.world_size), self.world_size)
        order, offsets = order[share], offsets[share]
        n_batches = len(self)
        for b in range(n_batches):
            end = len(order) if b == n_batches - 1 and not self.drop_last else (b + 1) * self.batch_size
            sl = slice(b * self.batch_size, end)
            rows, offs = order[sl], offsets[sl]
            k = np.argsort(rows, kind="stable")
            yield rows[k], offs[k], np.full(len(k), -1, dtype=np.int64)


class Segments(Sampler):
    """Every row's non-overlapping segments in order: (row 0, seg 0..3), (row 1, seg 0..3), ...

    Rank r of W takes rows r, r + W, ...; a share one ECG shorter than the longest is padded
    with one ECG's worth of items of row -1, so every rank yields the same number of batches.
    """

    def __init__(self, rows: np.ndarray, batch_size: int, n_samples: int, crop_samples: int,
                 rank: int = 0, world_size: int = 1):
        n_seg = n_samples // crop_samples
        if n_seg < 1:
            raise ValueError(f"crop_samples={crop_samples} exceeds the record length {n_samples}")
        _check_rank(rank, world_size)
        mine = np.asarray(rows, dtype=np.int64)[rank::world_size]
        n_pad = -(-len(rows) // world_size) - len(mine)  # 0 or 1 ECG
        self.rows = np.concatenate([np.repeat(mine, n_seg), np.full(n_pad * n_seg, -1, np.int64)])
        self.segments = np.tile(np.arange(n_seg, dtype=np.int64), len(mine) + n_pad)
        self.batch_size, self.crop_samples = batch_size, crop_samples

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self):
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield self.rows[sl], self.segments[sl] * self.crop_samples, self.segments[sl]


def average_segments(row, prob) -> tuple[np.ndarray, np.ndarray]:
    """Average the segment probabilities of each ECG.

    Parameters
    ----------
    row : array-like of shape (n_items,), int
        Cohort row of each item (4 items per ECG for validation/test).
    prob : array-like of shape (n_items, T)
        Sigmoid probabilities per item and target.

    Returns
    -------
    rows : ndarray of shape (n_ecgs,), int64
        Sorted distinct rows.
    mean_prob : ndarray of shape (n_ecgs, T), float64
        Mean over the items of each row.
    """
    row = np.asarray(row, dtype=np.int64).reshape(-1)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim == 1:
        prob = prob[:, None]
    if prob.shape[0] != row.shape[0]:
        raise ValueError(f"row has {row.shape[0]} items but prob has shape {prob.shape}")
    rows, inv, counts = np.unique(row, return_inverse=True, return_counts=True)
    total = np.zeros((len(rows), prob.shape[1]))
    np.add.at(total, inv, prob)
    return rows, total / counts[:, None]


# ---------------------------------------------------------------------------- data module

class LabDataModule(pl.LightningDataModule):
    """Cohort + signal memmap -> train/val/test loaders of ARCHITECTURE.md §4 batches.

    Excludes rows whose ``signals_manifest`` status is ``failed`` and checks that the
    manifest's study_ids match ``cohort.parquet`` row by row (the memmap row order). The
    cohort's per-split class counts are then counted again over the rows that remain, and
    a target is dropped when validation or test now holds fewer than targets.json's
    ``config.min_per_class`` positives or negatives; :attr:`targets` holds the kept
    targets with these counts (the run folder's ``targets.json``).

    Under ``objective="value"`` the model's outputs are targets.json's ``values`` columns
    instead: a column is kept when validation and test each hold at least ``min_per_class``
    observed values and the training rows at least 2 (:attr:`values`, with counts ``n`` per
    split); ``y`` holds the values standardised with :attr:`value_scales`
    (:func:`labecg.targets.fit_value_scales` on the training rows only; a value the scale
    cannot take, 0 or below on a log scale, is left out of the loss), :attr:`y_true` the
    values in the lab's unit. The flag targets are still recounted (:attr:`targets`, none
    required): the evaluation scores the predicted values against them.
    """

    def __init__(self, cfg: DataConfig):
        super().__init__()
        self.cfg = cfg
        cohort_dir = cfg.cohort_dir
        spec = read_json(cohort_dir / layout.TARGETS)
        self._flag_names = tuple(t["name"] for t in spec["targets"])
        names = list(self._flag_names)
        if cfg.objective == "value":
            names = [v["name"] for v in spec.get("values", [])]
            if not names:
                raise ValueError(f"{cohort_dir / layout.TARGETS}: lists no value columns (\"values\"); "
                                 f"rebuild the cohort with `labecg cohort` of this labecg to train --objective value")
        if cfg.targets is not None:
            unknown = [t for t in cfg.targets if t not in names]
            if unknown:
                raise KeyError(f"{cohort_dir / layout.TARGETS}: unknown targets {unknown}; "
                               f"available: {names}")
            names = list(cfg.targets)
        self._target_names = tuple(names)
        self._spec = spec
        self._prepared = False

    # properties the model needs before any data is loaded
    @property
    def n_tabular(self) -> int:
        return len(TABULAR_FEATURES)

    @property
    def target_names(self) -> tuple[str, ...]:
        return self._target_names

    @property
    def n_targets(self) -> int:
        return len(self._target_names)

    def setup(self, stage: Optional[str] = None) -> None:
        if self._prepared:
            return
        cfg, cohort_dir = self.cfg, self.cfg.cohort_dir
        needed = list(dict.fromkeys(("study_id", "fold") + VARIABLES + self._flag_names + self._target_names))
        import pyarrow.parquet as pq  # only the columns read: the value columns make the file wide

        present = set(pq.read_schema(cohort_dir / layout.COHORT).names)
        missing = [c for c in needed if c not in present]
        if missing:
            raise KeyError(f"{cohort_dir / layout.COHORT}: missing columns {missing}")
        frame = pd.read_parquet(cohort_dir / layout.COHORT, columns=needed)
        x, _ = load_signals(cohort_dir)
        meta = read_json(cohort_dir / layout.SIGNALS_META)
        n = len(frame)
        if x.shape[0] != n:
            raise ValueError(f"{cohort_dir / layout.SIGNALS}: {x.shape[0]} rows, cohort.parquet has {n}")
        manifest = pd.read_parquet(cohort_dir / layout.SIGNALS_MANIFEST)
        study = frame["study_id"].to_numpy(np.int64)
        m_rows = manifest["row"].to_numpy(np.int64)
        if len(manifest) != n or not np.array_equal(m_rows, np.arange(n)) or \
                not np.array_equal(manifest["study_id"].to_numpy(np.int64), study):
            bad = np.flatnonzero(manifest["study_id"].to_numpy(np.int64)[:n] != study[:len(manifest)])
            raise ValueError(f"{cohort_dir / layout.SIGNALS_MANIFEST}: rows do not match "
                             f"cohort.parquet (n {len(manifest)} vs {n}; first differing row "
                             f"{bad[0] if len(bad) else '?'}); rerun `labecg signals --overwrite`")
        ok = (manifest["status"] == "ok").to_numpy(dtype=bool)
        stats = read_json(cohort_dir / layout.SIGNALS_STATS)
        fold = frame["fold"].to_numpy(np.int64)
        train = np.isin(fold, cfg.train_folds)
        self.rows = {"train": np.flatnonzero(train & ok),
                     "val": np.flatnonzero((fold == cfg.val_fold) & ok),
                     "test": np.flatnonzero((fold == cfg.test_fold) & ok)}
        self.n_failed = int((~ok).sum())
        # medians and scales from the rows the model trains on; never validation/test
        self.tabular_stats = fit_tabular(frame, self.rows["train"])
        tabular = transform_tabular(frame, self.tabular_stats)
        if cfg.objective == "value":
            self._recount_targets(frame, fold, self._flag_names, required=False)
            self.flag_true = frame[[t["name"] for t in self.targets]].to_numpy(dtype=np.float32, na_value=np.nan)
            self._recount_values(frame)
            raw = frame[list(self._target_names)].to_numpy(dtype=np.float64, na_value=np.nan)  # (n, T), lab's unit
            self.value_scales = fit_value_scales(raw[self.rows["train"]], self._target_names)
            with np.errstate(invalid="ignore"):
                z = standardize_values(raw, self.value_scales)
            y = np.where(np.isfinite(z), z, np.nan).astype(np.float32)  # the model's scale
            self.y_true = raw.astype(np.float32)  # NaN = missing, in the lab's unit, for writing predictions
        else:
            self._recount_targets(frame, fold, self._target_names)
            y = frame[list(self._target_names)].to_numpy(dtype=np.float32, na_value=np.nan)  # (n, T)
            self.y_true = y  # NaN = missing, for writing predictions
        self.study_ids = study
        self.n_samples = int(meta["n_samples"])
        if cfg.crop_samples > self.n_samples:
            raise ValueError(f"crop_samples={cfg.crop_samples} exceeds signals.json "
                             f"n_samples={self.n_samples}")
        std = np.asarray(stats["std_mv"], dtype=np.float64)
        if not np.all(np.isfinite(std)) or np.any(std <= 0):
            raise ValueError(f"{cohort_dir / layout.SIGNALS_STATS}: std_mv must be finite and > 0, got {std}")
        self.signals_meta, self.signal_stats = meta, stats
        self.dataset = ECGBatches(cohort_dir, np.asarray(stats["mean_mv"]), std, tabular,
                                  np.nan_to_num(y, nan=0.0), (~np.isnan(y)).astype(np.float32),
                                  cfg.crop_samples)
        self._prepared = True

    def inference_spec(self) -> dict:
        """Everything besides the weights that scoring a new ECG needs: the run's ``inference.json``.

        Returns
        -------
        spec : dict
            ``signals``: the conversion settings of ``signals.json`` (rate, length, dtype,
            clipping, cleaning thresholds), so a new record is converted as the cohort's were;
            ``signal_stats``: per-lead ``mean_mv``, ``std_mv`` of the training rows
            (``signals_stats.json``); ``tabular``: :class:`TabularStats` fitted on the
            training rows and the feature columns :data:`TABULAR_FEATURES`;
            ``crop_samples``: segment length in samples; ``target_names``: the order of the
            model's outputs.
        """
        self.setup()
        # "ecg": the training machine's ECG folder, of no use for scoring and no business of a run folder
        skip = ("fingerprint", "n_rows", "n_ok", "n_failed", "n_flagged", "ecg")
        return {"version": 1,
                "signals": {k: v for k, v in self.signals_meta.items() if k not in skip},
                "signal_stats": {k: self.signal_stats[k] for k in ("leads", "mean_mv", "std_mv", "n_records")
                                 if k in self.signal_stats},
                "tabular": {"features": list(TABULAR_FEATURES), **dataclasses.asdict(self.tabular_stats)},
                "crop_samples": self.cfg.crop_samples,
                "target_names": list(self.target_names)}

    @property
    def n_segments(self) -> int:
        """Validation/test items per ECG (4 for 1000 samples and 250-sample crops)."""
        self.setup()
        return self.n_samples // self.cfg.crop_samples

    def _rank(self) -> tuple[int, int]:
        """(global rank, world size) of the attached Trainer; (0, 1) without one."""
        if self.trainer is None:
            return 0, 1
        return int(self.trainer.global_rank), int(self.trainer.world_size)

    @property
    def train_sampler(self) -> TrainCrops:
        """This rank's training sampler (made once; its epoch counter persists)."""
        self.setup()
        rank, world = self._rank()
        s = getattr(self, "_train_sampler", None)
        if s is None or (s.rank, s.world_size) != (rank, world):
            s = self._train_sampler = TrainCrops(self.rows["train"], self.cfg.batch_size, self.n_samples,
                                                 self.cfg.crop_samples, self.cfg.seed, rank=rank,
                                                 world_size=world)
        return s

    def _recount_targets(self, frame: pd.DataFrame, fold: np.ndarray, names, required: bool = True) -> None:
        """Counts over the rows that are evaluated; drop targets the cohort's rule now fails."""
        cfg, spec = self.cfg, self._spec
        min_per_class = spec.get("config", {}).get("min_per_class")
        by_name = {t["name"]: t for t in spec["targets"]}
        kept, dropped = [], []
        for name in names:
            y = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
            counts = {split: {"pos": int((y[r] == 1).sum()), "neg": int((y[r] == 0).sum())}
                      for split, r in self.rows.items()}
            if min_per_class is not None and min(counts[s][c] for s in ("val", "test")
                                                 for c in ("pos", "neg")) < min_per_class:
                dropped.append(name)
                continue
            kept.append({**by_name[name], "counts": counts})
        if dropped:
            log.warning("%s: %d targets dropped: fewer than %d positives or negatives in validation or "
                        "test once records without signal are left out (e.g. %s)", cfg.cohort_dir /
                        layout.TARGETS, len(dropped), min_per_class, dropped[0])
        if not kept and required:
            raise ValueError(f"{cfg.cohort_dir / layout.TARGETS}: no target keeps >= {min_per_class} "
                             f"positives and negatives in validation and test after signal failures")
        self.targets = kept
        if cfg.objective == "flag":
            self._target_names = tuple(t["name"] for t in kept)

    def _recount_values(self, frame: pd.DataFrame) -> None:
        """Observed values per split over the evaluated rows; keep the columns the rule of the class docstring keeps."""
        cfg, spec = self.cfg, self._spec
        least = spec.get("config", {}).get("min_per_class") or 1
        by_name = {v["name"]: v for v in spec.get("values", [])}
        kept, dropped = [], []
        for name in self._target_names:
            seen = frame[name].notna().to_numpy()
            counts = {split: {"n": int(seen[r].sum())} for split, r in self.rows.items()}
            if counts["train"]["n"] < 2 or min(counts[s]["n"] for s in ("val", "test")) < least:
                dropped.append(name)
                continue
            kept.append({**by_name[name], "counts": counts})
        if dropped:
            log.warning("%s: %d value columns dropped: fewer than %d observed values in validation or test, or "
                        "fewer than 2 in training (e.g. %s)", cfg.cohort_dir / layout.TARGETS, len(dropped), least,
                        dropped[0])
        if not kept:
            raise ValueError(f"{cfg.cohort_dir / layout.TARGETS}: no value column keeps >= {least} observed values "
                             f"in validation and test and >= 2 in training")
        self.values = kept
        self._target_names = tuple(v["name"] for v in kept)

    def targets_json(self) -> dict:
        """targets.json of the cohort with the kept targets (and under ``value`` the kept ``values``) and their evaluated counts."""
        self.setup()
        n_targets = {}
        for t in self.targets:
            n_targets[t.get("task", "?")] = n_targets.get(t.get("task", "?"), 0) + 1
        summary = {**self._spec.get("summary", {}), "n_targets": n_targets}
        if self.cfg.objective == "value":
            return {**self._spec, "summary": summary, "objective": "value", "targets": self.targets,
                    "values": self.values}
        return {**self._spec, "summary": summary, "targets": self.targets}

    def _loader(self, sampler) -> BatchLoader:
        self.setup()
        pin = self.cfg.pin_memory and torch.cuda.is_available()
        return BatchLoader(self.dataset, sampler, self.cfg.num_workers, pin_memory=pin)

    def _segments(self, split: str) -> Segments:
        self.setup()
        return Segments(self.rows[split], self.cfg.batch_size, self.n_samples, self.cfg.crop_samples,
                        *self._rank())

    def train_dataloader(self) -> BatchLoader:
        return self._loader(self.train_sampler)

    def val_dataloader(self) -> BatchLoader:
        return self._loader(self._segments("val"))

    def test_dataloader(self) -> BatchLoader:
        return self._loader(self._segments("test"))
