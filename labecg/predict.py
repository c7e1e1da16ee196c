"""Score one ECG with a trained run: every target's probability.

The run folder alone suffices (ARCHITECTURE.md §5), no cohort and no signal memmap:
``checkpoints/best.ckpt`` (the weights that wrote the run's predictions), ``config.json``
(the model's settings), ``targets.json`` (what each target means) and ``inference.json``
(the conversion settings, per-lead normalization and tabular statistics of the training
rows, and the order of the model's outputs; :meth:`labecg.data.LabDataModule.inference_spec`).

The record, from any source :func:`labecg.signals.read_record` accepts, is converted as
``labecg signals`` converts a cohort's records (first 10 s, 100 Hz, ±clip_mv, stored
dtype), cut into its four non-overlapping 2.5 s segments and normalized per lead; the
features are imputed, standardized and flagged missing with the training statistics, as
in training. A target's probability is the mean of the four segments' sigmoid outputs:
the computation of the run's ``predictions_test.npz``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import pandas as pd
import torch

from labecg.features import BIOMETRICS, FEATURES, RACES, VITAL_BOUNDS
from labecg.data import VARIABLES, TabularStats, transform_tabular
from labecg.model import FusionModel, ModelConfig
from labecg.signals import RecordError, SignalsConfig, convert_record
from labecg.util import atomic_path, read_json

OUTPUT_COLUMNS = ("target", "task", "lab", "label", "direction", "threshold", "unit", "horizon_min",
                  "probability")
AGE_RANGE_Y = (0.0, 130.0)  # closed; the cohort takes anchor_age as recorded
# feature -> (lower, upper, lower bound open?): the ranges outside which the cohort sets a
# value missing; here such a value is an input error
PLAUSIBLE = {"age": (*AGE_RANGE_Y, False),
             **{v: (lo, hi, False) for v, (lo, hi) in VITAL_BOUNDS.items()},
             **{feat: (lo, hi, lo_open) for feat, _factor, lo, lo_open, hi in BIOMETRICS.values()}}

Features = Union[None, str, os.PathLike, Mapping, pd.Series, pd.DataFrame]


@dataclass(frozen=True)
class PredictConfig:
    """One record scored by one run (``labecg predict``).

    Parameters
    ----------
    run_dir : Path
        Run folder of ``labecg train`` (a copy of it suffices).
    record : Path
        WFDB record path without extension, any 12-lead source ``labecg signals`` accepts.
    features : Path, optional
        One-row CSV with any of the cohort's feature columns (sex, age, race, vital signs,
        biometrics); the others are imputed and flagged missing as in training.
    out : Path, optional
        Write the table as CSV here.
    """

    run_dir: Path = field(metadata={"help": "run folder of `labecg train` (a copy suffices; no cohort needed)"})
    record: Path = field(metadata={"help": "WFDB record path without extension (.hea beside it)"})
    features: Optional[Path] = field(default=None, metadata={
        "help": "one-row CSV with any of sex, age, race, vital signs, bmi, weight, height; "
                "missing ones are imputed as in training"})
    out: Optional[Path] = field(default=None, metadata={"help": "also write the table to this CSV file"})


@dataclass(frozen=True)
class TrainedRun:
    """A run folder loaded for scoring: the model in eval mode and its preprocessing."""

    path: Path
    model: FusionModel
    targets: list  # targets.json entries in the order of the model's outputs
    signals: SignalsConfig
    mean_mv: np.ndarray  # (12,) float32
    std_mv: np.ndarray  # (12,) float32
    tabular: TabularStats
    crop_samples: int


def load_run(run: str | os.PathLike) -> TrainedRun:
    """Load a run folder's best checkpoint and the preprocessing stored beside it.

    Raises
    ------
    FileNotFoundError
        The folder lacks its checkpoint, ``config.json``, ``targets.json`` or
        ``inference.json``; the message names the file.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: not a folder; expected the run folder of `labecg train --run-dir {run}`")
    info = read_json(run / "run_info.json") if (run / "run_info.json").exists() else {}
    ckpt = run / "checkpoints" / info.get("best_checkpoint", "best.ckpt")
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: not found; {run} holds no trained model "
                                f"(`labecg train --run-dir {run}` writes it)")
    for name in ("config.json", "targets.json", "inference.json"):
        if not (run / name).exists():
            why = (" (runs trained before labecg stored its preprocessing statistics lack it; retrain)"
                   if name == "inference.json" else "")
            raise FileNotFoundError(f"{run / name}: not found; a finished run folder holds it{why}")
    spec = read_json(run / "inference.json")
    model = FusionModel(ModelConfig(**read_json(run / "config.json")["model"]))
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        # LabModule holds the network as ``self.model``
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    except Exception as e:
        raise ValueError(f"{ckpt}: cannot load the model ({type(e).__name__}: {e})") from None
    model.eval()

    by_name = {t["name"]: t for t in read_json(run / "targets.json")["targets"]}
    names = spec["target_names"]
    missing = [n for n in names if n not in by_name]
    if missing or len(names) != model.config.n_targets:
        raise ValueError(f"{run / 'inference.json'}: target_names ({len(names)}) do not match the model "
                         f"({model.config.n_targets} outputs) or targets.json (missing {missing[:3]})")
    fields = {f.name for f in dataclasses.fields(SignalsConfig)} - {"cohort_dir", "ecg"}
    signals = SignalsConfig(cohort_dir=run, ecg=run, **{k: v for k, v in spec["signals"].items() if k in fields})
    stats = spec["signal_stats"]
    return TrainedRun(path=run, model=model, targets=[by_name[n] for n in names], signals=signals,
                      mean_mv=np.asarray(stats["mean_mv"], dtype=np.float32),
                      std_mv=np.asarray(stats["std_mv"], dtype=np.float32),
                      tabular=TabularStats(**{k: spec["tabular"][k] for k in ("median", "mean", "std", "n_rows")}),
                      crop_samples=int(spec["crop_samples"]))


def record_segments(trained: TrainedRun, record: str | os.PathLike) -> np.ndarray:
    """Convert one record and cut it into normalized segments, as the test loader does.

    Returns
    -------
    ecg : ndarray of shape (n_segments, crop_samples, 12), float32
        Segment k holds samples [k * crop, (k + 1) * crop) of the converted record (4 of
        2.5 s at 100 Hz), minus the training mean and divided by the training std per lead.

    Raises
    ------
    RecordError
        The record cannot be read or lacks a lead; the message starts with its path.
    """
    try:
        x = convert_record(record, trained.signals)  # (L, 12), stored dtype, like signals.npy
    except RecordError as e:
        raise RecordError(f"{record}: {e}") from None
    crop = trained.crop_samples
    n_seg = x.shape[0] // crop
    ecg = np.empty((n_seg, crop, x.shape[1]), dtype=np.float32)  # (S, crop, C)
    for k in range(n_seg):
        ecg[k] = x[k * crop:(k + 1) * crop]
    # the operations of labecg.data.ECGBatches, in float32, so a test-fold ECG scores identically
    ecg -= trained.mean_mv
    ecg *= 1.0 / trained.std_mv
    return ecg


def read_features(features: Features) -> pd.DataFrame:
    """Validate one ECG's features and complete them to the cohort's feature columns.

    Parameters
    ----------
    features : None, path of a one-row CSV, mapping, Series or one-row DataFrame
        Any of ``sex`` (1 male, 0 female, or M/F), ``age`` (years), ``race`` (one of
        :data:`labecg.features.RACES`), ``temperature`` (°F), ``heartrate``, ``resprate``,
        ``o2sat``, ``sbp``, ``dbp``, ``bmi``, ``weight`` (kg), ``height`` (cm). Empty
        values count as missing.

    Returns
    -------
    frame : DataFrame of shape (1, 12)
        Columns :data:`labecg.data.VARIABLES`; NaN where missing (race: None, imputed
        and flagged as in training).

    Raises
    ------
    ValueError
        An unknown column, more or fewer than one row, a value that is not a number or a
        known category, or a value outside the range the cohort treats as plausible; the
        message names the file (or "features") and the column.
    """
    where = str(features) if isinstance(features, (str, os.PathLike)) else "features"
    if features is None:
        frame = pd.DataFrame(index=[0])
    elif isinstance(features, (str, os.PathLike)):
        if not Path(features).exists():
            raise FileNotFoundError(f"{features}: file not found")
        frame = pd.read_csv(features, dtype=str, keep_default_na=False)
    elif isinstance(features, pd.DataFrame):
        frame = features.reset_index(drop=True)
    elif isinstance(features, (pd.Series, Mapping)):
        frame = pd.DataFrame([dict(features)])
    else:
        raise TypeError(f"features: expected a CSV path, a mapping or a one-row DataFrame; got "
                        f"{type(features).__name__}")
    if len(frame) != 1:
        raise ValueError(f"{where}: {len(frame)} rows; expected one row of features for one ECG")
    unknown = [c for c in frame.columns if c not in FEATURES]
    if unknown:
        raise ValueError(f"{where}: unknown feature columns {unknown}; expected any of {list(FEATURES)}")
    row = {c: frame.iloc[0][c] for c in frame.columns}
    out: dict = {v: np.nan for v in VARIABLES}
    out["race"] = None
    for col, value in row.items():
        if value is None or (not isinstance(value, str) and pd.isna(value)) or str(value).strip() == "":
            continue
        text = str(value).strip()
        if col == "race":
            if text.lower() not in RACES:
                raise ValueError(f"{where}: column 'race' is {text!r}; expected one of {list(RACES)}")
            out["race"] = text.lower()
            continue
        if col == "sex" and text.upper() in ("M", "F"):
            out["sex"] = 1.0 if text.upper() == "M" else 0.0
            continue
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{where}: column {col!r} is {text!r}; expected a number") from None
        if col == "sex":
            if number not in (0.0, 1.0):
                raise ValueError(f"{where}: column 'sex' is {text!r}; expected 1 (male), 0 (female), M or F")
        else:
            lo, hi, lo_open = PLAUSIBLE[col]
            if not ((number > lo if lo_open else number >= lo) and number <= hi):
                raise ValueError(f"{where}: column {col!r} is {number:g}, outside the plausible range "
                                 f"{'(' if lo_open else '['}{lo:g}, {hi:g}]")
        out[col] = number
    return pd.DataFrame([out], columns=list(VARIABLES))


@torch.no_grad()
def predict_record(run: str | os.PathLike | TrainedRun, record: str | os.PathLike,
                   features: Features = None) -> pd.DataFrame:
    """Probability of every target of a run for one ECG record.

    Parameters
    ----------
    run : path-like or TrainedRun
        Run folder (or one loaded with :func:`load_run`, to score many records).
    record : path-like
        WFDB record path without extension; any 12-lead source ``labecg signals`` accepts.
    features : optional
        See :func:`read_features`; None scores the ECG with every feature imputed.

    Returns
    -------
    table : DataFrame of shape (n_targets, 9)
        Columns :data:`OUTPUT_COLUMNS`: target, task (est, mon30, mon60, mon120), lab,
        label, direction (low, high), threshold, unit, horizon_min (NaN for estimation),
        probability (float32: the mean of the segments' sigmoid outputs).
    """
    trained = run if isinstance(run, TrainedRun) else load_run(run)
    ecg = record_segments(trained, record)  # (S, crop, C)
    tabular = transform_tabular(read_features(features), trained.tabular)  # (1, n_tabular)
    n_seg = ecg.shape[0]
    logits = trained.model(torch.from_numpy(ecg), torch.from_numpy(np.repeat(tabular, n_seg, axis=0)))
    prob = torch.sigmoid(logits.float()).numpy()  # (S, T)
    mean = prob.astype(np.float64).mean(axis=0).astype(np.float32)  # (T,)
    rows = [{"target": t["name"], "task": t.get("task"), "lab": t.get("lab"), "label": t.get("label"),
             "direction": t.get("direction"), "threshold": t.get("threshold"), "unit": t.get("unit"),
             "horizon_min": t.get("horizon_min"), "probability": p} for t, p in zip(trained.targets, mean)]
    table = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    table["horizon_min"] = pd.to_numeric(table["horizon_min"]).astype("float64")
    table["probability"] = table["probability"].astype(np.float32)
    return table


def predict(cfg: PredictConfig) -> str:
    """``labecg predict``: score ``cfg.record`` with ``cfg.run_dir``; write CSV to ``cfg.out`` if given.

    Returns
    -------
    text : str
        The whole table (every target), for the terminal.
    """
    table = predict_record(cfg.run_dir, cfg.record, cfg.features)
    if cfg.out is not None:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    return text + (f"\n\nwrote {cfg.out}" if cfg.out is not None else "")
