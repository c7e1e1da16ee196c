"""Score one ECG with a trained run: every target's probability.

The run folder alone suffices (ARCHITECTURE.md §5), no cohort and no signal memmap:
``checkpoints/best.ckpt`` (the weights that wrote the run's predictions), ``config.json``
(the model's settings), ``targets.json`` (what each target means) and ``inference.json``
(the conversion settings, per-lead normalization and tabular statistics of the training
rows, and the order of the model's outputs; :meth:`labecg.data.LabDataModule.inference_spec`).

The record, from any source :func:`labecg.records.read_record` accepts, is converted as
``labecg signals`` converts a cohort's records (first 10 s, 100 Hz, ±clip_mv, stored
dtype), cut into its four non-overlapping 2.5 s segments and normalized per lead; the
features are imputed, standardized and flagged missing with the training statistics, as
in training. A target's probability is the mean of the four segments' sigmoid outputs:
the computation of the run's ``predictions_test.npz``.

``labecg predict`` says what the numbers are before it prints them (on stderr): the run
(data source, date, commit; a warning when it was trained on synthetic data), the record
(rate, length, the 10 s used, channels found and picked, flat or clipped leads), which
features were given and which imputed, and how well calibrated the run is. Records that
would be scored wrongly are refused: a header rate that is not a positive number, an
all-zero ECG, a record in µV labelled mV. ``--out OUT`` writes the plain table to OUT and
its provenance to the sidecar ``OUT.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import pandas as pd
import torch

import wfdb

from labecg import layout
from labecg.features import BIOMETRICS, FEATURE_UNITS, FEATURES, RACES, VITAL_BOUNDS
from labecg.data import VARIABLES, TabularStats, cut_segments, transform_tabular
from labecg.model import FusionModel, trained_model
from labecg.records import LEADS, RECORD_S, RecordError, clean_signal, read_record
from labecg.signals import SignalsConfig, convert_samples
from labecg.targets import BINARY
from labecg.util import atomic_path, hold_paths, read_json, write_json

OUTPUT_COLUMNS = ("target", "task", "lab", "label", "direction", "threshold", "unit", "horizon_min",
                  "probability")
AGE_RANGE_Y = (0.0, 130.0)  # closed; the cohort takes anchor_age as recorded
# feature -> (lower, upper, lower bound open?): the ranges outside which the cohort sets a
# value missing; here such a value is an input error
PLAUSIBLE = {"age": (*AGE_RANGE_Y, False),
             **{v: (lo, hi, False) for v, (lo, hi) in VITAL_BOUNDS.items()},
             **{feat: (lo, hi, lo_open) for feat, _factor, lo, lo_open, hi in BIOMETRICS.values()}}

Features = Union[None, str, os.PathLike, Mapping, pd.Series, pd.DataFrame]
#: WFDB header comment keys read as features when ``--features`` is absent (any case; ``# age: 81``,
#: ``#Sex: Female`` as PTB, PTB-XL's WFDB export and the PhysioNet/CinC challenges write them).
HEADER_KEYS = {"age": "age", "sex": "sex", "gender": "sex"}
#: A lead counts as saturated when more than this share of its samples lie beyond ±clip_mv; a
#: record with at least half its leads saturated is refused as µV labelled mV (a real ECG stays
#: within about ±3 mV outside the QRS peaks, which last ~0.1 s of each ~1 s beat).
SATURATED_FRAC = 0.5
#: What a probability means (``labecg predict --help``, the stderr report).
PROBABILITY_HELP = (
    "Each probability is the model's score, in [0, 1], that the laboratory value is abnormal in the "
    "target's direction (low: below, high: above the threshold, the laboratory's reference limit) at the "
    "time of the ECG (task est: a lab drawn within the estimation window) or within the next 30, 60 or "
    "120 minutes (mon30, mon60, mon120): the mean of the sigmoid outputs over the ECG's four 2.5 s "
    "segments. It is a probability only as far as the run is calibrated (the median calibration slope of "
    "its evaluation, printed when the run folder holds one); a run trained on synthetic data says nothing "
    "about patients.")

#: Shown by ``labecg predict --help``: what a probability means, and the columns ``--features`` takes.
CLI_DESCRIPTION = (PROBABILITY_HELP + " Columns of --features, in these units: "
                   + "; ".join(f"{name} ({FEATURE_UNITS[name]})" for name in FEATURES) + ".")


@dataclass(frozen=True)
class PredictConfig:
    """One record scored by one run (``labecg predict``).

    Parameters
    ----------
    run_dir : Path
        Run folder of ``labecg train`` (a copy of it suffices; no cohort needed).
    record : Path
        WFDB record: its path without extension, or its ``.hea`` or ``.dat``; any 12-lead
        source ``labecg signals`` accepts.
    features : Path, optional
        One-row CSV with any of the cohort's feature columns, in the units of
        :data:`labecg.features.FEATURE_UNITS`; the others are imputed and flagged missing as
        in training (``labecg predict --help`` lists them). Absent: the header comments'
        :data:`HEADER_KEYS` (``# age: 81``).
    out : Path, optional
        Also write the table as CSV here, and its provenance (run, record, data source, labecg
        version, UTC time, features used and imputed) to ``OUT.json`` (``out`` + ".json").
    sort : bool
        Sort the table by probability, highest first (else the run's target order).
    """

    run_dir: Path
    record: Path
    features: Optional[Path] = None
    out: Optional[Path] = None
    sort: bool = False

    def __post_init__(self):
        hold_paths(self)


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


def load_trained(run_dir: str | os.PathLike) -> TrainedRun:
    """A run folder's best model and the preprocessing stored beside it, ready to score records.

    Reads the folder with :func:`labecg.layout.load_run` (``inference.json`` required).

    Raises
    ------
    FileNotFoundError
        The folder lacks its checkpoint, ``config.json``, ``targets.json`` or
        ``inference.json``; the message names the file.
    ValueError
        The checkpoint cannot be read or does not fit the recorded settings.
    """
    folder = layout.load_run(run_dir, need_inference=True)
    run, spec = folder.path, folder.inference
    model = trained_model(folder)
    by_name = {t["name"]: t for t in folder.targets["targets"]}
    names = spec["target_names"]
    missing = [n for n in names if n not in by_name]
    if missing or len(names) != model.config.n_targets:
        raise ValueError(f"{run / layout.INFERENCE}: target_names ({len(names)}) do not match the model "
                         f"({model.config.n_targets} outputs) or targets.json (missing {missing[:3]})")
    fields = {f.name for f in dataclasses.fields(SignalsConfig)} - {"cohort_dir", "ecg"}
    signals = SignalsConfig(cohort_dir=run, ecg=run, **{k: v for k, v in spec["signals"].items() if k in fields})
    stats = spec["signal_stats"]
    return TrainedRun(path=run, model=model, targets=[by_name[n] for n in names], signals=signals,
                      mean_mv=np.asarray(stats["mean_mv"], dtype=np.float32),
                      std_mv=np.asarray(stats["std_mv"], dtype=np.float32),
                      tabular=TabularStats(**{k: spec["tabular"][k] for k in ("median", "mean", "std", "n_rows")}),
                      crop_samples=int(spec["crop_samples"]))


def _converted(trained: TrainedRun, record) -> tuple[np.ndarray, RecordReport]:
    """The record as ``labecg signals`` stores it, (L, 12) in the stored dtype, and its report."""
    raw, fs, report = inspect_record(record, trained.signals)
    try:
        x = convert_samples(raw.copy(), fs, trained.signals)  # (L, 12), stored dtype, like signals.npy
    except RecordError as e:
        raise RecordError(f"{report.record}: {e}") from None
    return x, report


def _segments(trained: TrainedRun, x: np.ndarray) -> np.ndarray:
    """(n_segments, crop_samples, 12) float32, normalized per lead as the test loader does."""
    crop = trained.crop_samples
    n_seg = x.shape[0] // crop
    # as the test loader cuts them, so a test-fold ECG scores identically
    return cut_segments(x[None], np.zeros(n_seg, dtype=np.int64), np.arange(n_seg) * crop, crop,
                        trained.mean_mv, trained.std_mv)


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
                                 f"{'(' if lo_open else '['}{lo:g}, {hi:g}] {FEATURE_UNITS[col]}"
                                 f"{unit_hint(col, number)}")
        out[col] = number
    return pd.DataFrame([out], columns=list(VARIABLES))


def unit_hint(col: str, value: float) -> str:
    """``"; was it °C?"`` when ``value`` fits ``col`` in a unit people often use instead, else ""."""
    hints = {"temperature": [(lambda v: 25 <= v <= 45, "\u00b0C")],
             "weight": [(lambda v: 400 < v <= 900, "lb")],
             "height": [(lambda v: 0.3 <= v <= 2.6, "m"), (lambda v: 12 <= v < 60, "inches")],
             "age": [(lambda v: v > 130, "months or days")]}
    for test, unit in hints.get(col, []):
        if test(value):
            return f"; was it {unit}?"
    return ""


def resolve_record(record: str | os.PathLike) -> Path:
    """The record path without extension: ``X``, ``X.hea`` and ``X.dat`` name the same record.

    Raises FileNotFoundError for a folder, RecordError without a ``.hea``, in one line.
    """
    path = Path(record)
    if path.is_dir():
        raise FileNotFoundError(f"--record {record}: a folder; expected one WFDB record (its path without "
                                f"extension, or its .hea), e.g. {path / 'NAME'}")
    if path.suffix.lower() in (".hea", ".dat"):
        path = path.with_suffix("")
    if not path.with_suffix(".hea").is_file():
        raise RecordError(f"{path}: missing file: {path.with_suffix('.hea')}; expected a WFDB record (its path "
                          f"without extension, .hea beside it)")
    return path


def header_features(comments) -> dict:
    """Features from WFDB header comments ``key: value`` whose key is in :data:`HEADER_KEYS`.

    Age: the first number ("81", "81 years"); sex: male/female/M/F. Other values (NaN,
    unknown) are left out. Returns {feature: "value as text"}.
    """
    out = {}
    for line in comments or []:
        m = re.match(r"^\s*#?\s*([A-Za-z_ ]+?)\s*[:=]\s*(.*?)\s*$", str(line))
        if not m or m.group(1).lower() not in HEADER_KEYS:
            continue
        feature, value = HEADER_KEYS[m.group(1).lower()], m.group(2)
        if feature == "age":
            number = re.match(r"^\d+(?:\.\d+)?", value)
            if number:
                out["age"] = number.group(0)
        elif value.lower() in ("m", "male", "f", "female"):
            out["sex"] = value[0].upper()
    return out


@dataclass
class RecordReport:
    """What ``labecg predict`` says of a record: as read, as used, and what is suspect."""

    record: Path
    fs_hz: float
    n_samples: int  # in the header (all of the record)
    channels: list  # names in header order
    units: list
    flat: list  # leads whose peak-to-peak is below flat_mv, or mostly missing (clean_signal's reasons)
    clipped: dict  # lead -> samples beyond ±clip_mv (clipped in the conversion)
    comments: dict  # header_features(): features the header comments give

    def lines(self, clip_mv: float, fs_out_hz: float) -> list[str]:
        length_s = self.n_samples / self.fs_hz if self.fs_hz else float("nan")
        out = [f"record {self.record}: {self.fs_hz:g} Hz, {self.n_samples} samples ({length_s:.3g} s); the first "
               f"{RECORD_S:g} s used, resampled to {fs_out_hz:g} Hz; {len(self.channels)} channels found "
               f"({', '.join(self.channels)}), the 12 standard leads picked by name ({', '.join(LEADS)})"]
        if self.flat:
            out.append(f"record {self.record}: suspect leads: {'; '.join(self.flat)}")
        if self.clipped:
            out.append(f"record {self.record}: clipped at \u00b1{clip_mv:g} mV: "
                       + ", ".join(f"{k} ({v} samples)" for k, v in self.clipped.items()))
        return out


def inspect_record(record: str | os.PathLike, cfg: SignalsConfig) -> tuple[np.ndarray, float, RecordReport]:
    """Read a record for scoring, refusing what would be scored wrongly.

    Returns
    -------
    x : ndarray of shape (ceil(10 * fs_hz), 12), float64, mV (:func:`labecg.records.read_record`)
    fs_hz : float
    report : RecordReport

    Raises
    ------
    RecordError
        Unreadable (a header rate that is not a positive number among the reasons), every
        sample zero, or values in µV labelled mV (most samples of most leads beyond
        ±``cfg.clip_mv``); the message starts with the record's path.
    """
    path = resolve_record(record)
    try:
        x, fs = read_record(path)
    except RecordError as e:
        raise RecordError(f"{path}: {e}") from None
    header = wfdb.rdheader(str(path))
    finite = np.where(np.isfinite(x), x, 0.0)
    if not finite.any():
        raise RecordError(f"{path}: every sample of the 12 leads is 0 in the first {RECORD_S:g} s: no ECG to score")
    beyond = np.abs(finite) > cfg.clip_mv  # (L, 12)
    saturated = [LEADS[c] for c in np.flatnonzero(beyond.mean(axis=0) > SATURATED_FRAC)]
    if len(saturated) >= len(LEADS) // 2:
        units = sorted({str(u) for u in (header.units or [])})
        raise RecordError(f"{path}: {len(saturated)} of 12 leads lie beyond \u00b1{cfg.clip_mv:g} mV in most "
                          f"samples (median |x| {np.median(np.abs(finite)):.0f} mV, header units {units}); an ECG "
                          f"stays within about \u00b13 mV: values in \u00b5V labelled mV? Fix the header's units "
                          f"(uV) and rerun")
    flags: list = []
    clean_signal(x, cfg.max_nan_frac, cfg.flat_mv, flags)
    clipped = {LEADS[c]: int(beyond[:, c].sum()) for c in range(len(LEADS)) if beyond[:, c].any()}
    report = RecordReport(record=path, fs_hz=float(fs), n_samples=int(header.sig_len or x.shape[0]),
                          channels=[str(n) for n in header.sig_name], units=list(header.units or []),
                          flat=flags, clipped=clipped, comments=header_features(header.comments))
    return x, fs, report


@dataclass
class Scored:
    """One record scored: the table and what ``labecg predict`` reports of it."""

    table: pd.DataFrame
    report: RecordReport
    given: dict  # feature -> value as given, from --features or the header
    imputed: list  # features imputed with the training statistics (flagged missing)
    source: str  # "--features FILE", "header comments", "none"
    ignored: dict  # header comment features not used (because --features was given)


@torch.no_grad()
def score_record(trained: TrainedRun, record: str | os.PathLike, features: Features = None) -> Scored:
    """:func:`predict_record` with the report: the record as read, the features given and imputed."""
    x, report = _converted(trained, record)
    ecg = _segments(trained, x)  # (S, crop, C)
    if features is None and report.comments:
        features, source, ignored = dict(report.comments), "header comments", {}
    else:
        source = (f"--features {features}" if isinstance(features, (str, os.PathLike))
                  else "features" if features is not None else "none")
        ignored = dict(report.comments) if features is not None else {}
    frame = read_features(features)
    given = {c: frame.iloc[0][c] for c in FEATURES if not (c != "race" and pd.isna(frame.iloc[0][c]))}
    if "race" in given and not _race_given(features):
        given.pop("race")  # "other" is what a missing race becomes, as in the cohort
    imputed = [c for c in FEATURES if c not in given]
    tabular = transform_tabular(frame, trained.tabular)  # (1, n_tabular)
    n_seg = ecg.shape[0]
    logits = trained.model(torch.from_numpy(ecg), torch.from_numpy(np.repeat(tabular, n_seg, axis=0)))
    prob = BINARY.output(logits).numpy()  # (S, T)
    mean = prob.astype(np.float64).mean(axis=0).astype(np.float32)  # (T,)
    rows = [{"target": t["name"], "task": t.get("task"), "lab": t.get("lab"), "label": t.get("label"),
             "direction": t.get("direction"), "threshold": t.get("threshold"), "unit": t.get("unit"),
             "horizon_min": t.get("horizon_min"), "probability": p} for t, p in zip(trained.targets, mean)]
    table = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    table["horizon_min"] = pd.to_numeric(table["horizon_min"]).astype("float64")
    table["probability"] = table["probability"].astype(np.float32)
    return Scored(table=table, report=report, given={k: (v.item() if hasattr(v, "item") else v)
                                                      for k, v in given.items()},
                  imputed=imputed, source=source, ignored=ignored)


def _race_given(features: Features) -> bool:
    if features is None:
        return False
    if isinstance(features, (str, os.PathLike)):
        cols = pd.read_csv(features, dtype=str, keep_default_na=False, nrows=1)
        return "race" in cols.columns and str(cols["race"].iloc[0]).strip() != ""
    frame = features if isinstance(features, pd.DataFrame) else pd.DataFrame([dict(features)])
    return "race" in frame.columns and not pd.isna(frame["race"].iloc[0]) and str(frame["race"].iloc[0]).strip() != ""


def predict_record(run: str | os.PathLike | TrainedRun, record: str | os.PathLike,
                   features: Features = None) -> pd.DataFrame:
    """Probability of every target of a run for one ECG record.

    Parameters
    ----------
    run : path-like or TrainedRun
        Run folder (or one loaded with :func:`load_trained`, to score many records).
    record : path-like
        WFDB record: its path without extension, or its ``.hea`` or ``.dat``; any 12-lead
        source ``labecg signals`` accepts.
    features : optional
        See :func:`read_features`. None: the header comments' :data:`HEADER_KEYS`
        (``# age: 81``), and every feature they do not give imputed.

    Returns
    -------
    table : DataFrame of shape (n_targets, 9)
        Columns :data:`OUTPUT_COLUMNS`: target, task (est, mon30, mon60, mon120), lab,
        label, direction (low, high), threshold, unit, horizon_min (NaN for estimation),
        probability (float32: the mean of the segments' sigmoid outputs; see
        :data:`PROBABILITY_HELP`).

    Raises
    ------
    RecordError
        A record that would be scored wrongly (:func:`inspect_record`).
    """
    trained = run if isinstance(run, TrainedRun) else load_trained(run)
    return score_record(trained, record, features).table


def run_provenance(run_dir: str | os.PathLike) -> dict:
    """What the run folder says of where it came from: ``run_info.json``'s source, date, commit, version."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / layout.RUN_INFO) if (run_dir / layout.RUN_INFO).exists() else {}
    source = info.get("source") or {}
    synthetic = source.get("synthetic")
    return {"run_dir": str(run_dir), "synthetic": synthetic,
            "data_source": ("synthetic (labecg synth" + (f", {source['synthetic_config'].get('patients')} patients, "
                                                         f"seed {source['synthetic_config'].get('seed')}"
                                                         if source.get("synthetic_config") else "") + ")")
            if synthetic else ("MIMIC-format data" if synthetic is False else "unknown (no run_info.json)"),
            "trained": info.get("date"), "git_commit": info.get("git_commit"),
            "labecg_version": info.get("labecg_version")}


def calibration_note(run_dir: str | os.PathLike) -> tuple[Optional[float], str]:
    """(median calibration slope over targets, or None; one sentence) from ``evaluation/calibration.csv``."""
    path = layout.evaluation_dir(run_dir) / layout.CALIBRATION
    if not path.exists():
        return None, (f"the run folder holds no evaluation, so how well its probabilities are calibrated is "
                      f"unknown (`labecg evaluate --run-dir {run_dir}` writes it)")
    slopes = pd.to_numeric(pd.read_csv(path)["calibration_slope"], errors="coerce").dropna()
    if slopes.empty:
        return None, f"{path}: no calibration slope could be fitted; calibration unknown"
    median = float(slopes.median())
    return median, (f"median calibration slope {median:.2f} over {len(slopes)} targets on the test split ({path}; "
                    f"1 is calibrated, below 1 the probabilities are too extreme, above 1 too timid)")


def predict(cfg: PredictConfig) -> str:
    """``labecg predict``: score ``cfg.record`` with ``cfg.run_dir``; write CSV to ``cfg.out`` if given.

    Says on stderr, before the table, what the numbers are (the run, the record, the
    features given and imputed, calibration); writes the provenance to ``OUT.json`` beside
    the CSV.

    Returns
    -------
    text : str
        The whole table (every target), for the terminal.
    """
    out = cfg.out
    if out is not None and out.is_dir():
        raise IsADirectoryError(f"--out {cfg.out}: a folder; expected a CSV file path, e.g. {out / 'scores.csv'}")
    trained = load_trained(cfg.run_dir)
    scored = score_record(trained, cfg.record, cfg.features)
    prov = run_provenance(cfg.run_dir)
    slope, calibration = calibration_note(cfg.run_dir)
    report = scored.report
    say = [f"run {cfg.run_dir}: trained on {prov['data_source']}, {prov['trained'] or 'date unknown'}, "
           f"git commit {(prov['git_commit'] or 'unknown')[:12]}, labecg {prov['labecg_version'] or '?'}"]
    if prov["synthetic"]:
        say.append("WARNING: this run was trained on synthetic data; its probabilities mean nothing clinically")
    say += report.lines(trained.signals.clip_mv, trained.signals.fs_hz)
    given = ", ".join(f"{k}={v}" for k, v in scored.given.items()) or "none"
    say.append(f"features given ({scored.source}): {given}; imputed with the training statistics and flagged "
               f"missing: {', '.join(scored.imputed) or 'none'}")
    if scored.ignored:
        say.append(f"header comments {', '.join(f'{k}: {v}' for k, v in scored.ignored.items())} ignored: "
                   f"--features was given")
    say.append(f"calibration: {calibration}")
    say.append("probability: the model's score that the lab value is beyond its threshold (low: below, high: "
               "above) at the ECG (est) or within 30/60/120 min (mon*); see `labecg predict --help`")
    for line in say:
        print(f"labecg predict: {line}", file=sys.stderr)
    table = scored.table
    if cfg.sort:
        table = table.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
        import labecg

        write_json(sidecar_path(out), {
            "csv": out.name, "run_dir": str(cfg.run_dir), "record": str(report.record),
            "data_source": prov["data_source"], "synthetic": prov["synthetic"], "run_trained": prov["trained"],
            "run_git_commit": prov["git_commit"], "labecg_version": getattr(labecg, "__version__", None),
            "utc_time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "features_source": scored.source, "features_used": scored.given, "features_imputed": scored.imputed,
            "header_comments_ignored": scored.ignored,
            "record_info": {"fs_hz": report.fs_hz, "n_samples": report.n_samples, "used_s": RECORD_S,
                            "channels": report.channels, "suspect_leads": report.flat,
                            "clipped_samples": report.clipped},
            "median_calibration_slope": slope, "sorted_by_probability": cfg.sort,
            "probability": PROBABILITY_HELP})
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    return text + (f"\n\nwrote {cfg.out} and {sidecar_path(out)}" if out is not None else "")


def sidecar_path(out: str | os.PathLike) -> Path:
    """``OUT.json``: the provenance file beside the CSV ``OUT`` (``scores.csv`` -> ``scores.csv.json``)."""
    return Path(f"{out}.json")
