"""Evaluating a run folder: the statistics of its predictions, written beside them with the paper's tables.

:func:`evaluate_run` reads ``RUN/predictions_<split>.npz`` and ``RUN/targets.json``, runs
the statistics of :mod:`labecg.stats` (bootstrap intervals of AUROC, ECG- and
patient-level; calibration; subgroups; simultaneous intervals) on them, chooses the
headline targets on validation (:func:`choose_headline`), measures what the ECG adds over
the tabular-only run and the last earlier value (:func:`added_value`), and writes the
files of ARCHITECTURE.md section 5 into ``RUN/evaluation`` with the paper's tables
(:mod:`labecg.tables`). The ``read_*`` functions read those files back for the pages.

A value run (``labecg train --objective value``) is evaluated by :func:`value_results` into
``values.csv`` alone: per value column the MAE and Spearman of the predicted values, and the
AUROC of the predicted value used as the score of the lab's flags beside a flag run's.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd

from labecg import cohort, layout, tables
from labecg.metrics import N_RESAMPLES, _group_codes, auroc, average_precision
from labecg.stats import (LEVEL, N_BINS, PERCENTILES, bootstrap, calibration, paired_bootstrap, reliability_frame,
                          simultaneous_intervals, subgroup_auroc, subgroup_labels, value_bootstrap)
from labecg.targets import AUROC_THRESHOLD, DIRECTIONS, TASKS, parse_target, significant
from labecg.util import atomic_path, get_logger, hold_paths, read_json

__all__ = ["EvaluateConfig", "evaluate_run", "headline_targets", "choose_headline", "read_headline",
           "compare_variants", "read_calibration", "read_reliability", "read_subgroups", "last_value_scores",
           "added_value", "read_added_value", "ADDED_VALUE_COLUMNS", "multiplicity_summary", "read_multiplicity",
           "read_paper_comparison", "MULTIPLICITY_COLUMNS", "read_predictions", "read_results", "RESULT_COLUMNS",
           "value_results", "read_values", "VALUE_COLUMNS"]

log = get_logger("labecg.evaluate")

BOOTSTRAP_COLUMNS = ["auroc", "low", "high", "n_pos", "n_neg", "n_skipped"]
PATIENT_COLUMNS = ["low_patient", "high_patient", "n_patients"]
METADATA_COLUMNS = ["task", "lab", "label", "direction", "threshold", "unit", "category",
                    "horizon_min"]
SIMULTANEOUS_COLUMNS = ["sim_low", "sim_high", "sim_low_patient", "sim_high_patient", "significant_simultaneous"]
RESULT_COLUMNS = ["target", *METADATA_COLUMNS, *BOOTSTRAP_COLUMNS, "significant", *PATIENT_COLUMNS,
                  "brier", "auprc", "prevalence", *SIMULTANEOUS_COLUMNS]
MULTIPLICITY_COLUMNS = ["task", "n_targets", "level", "critical_value", "critical_value_patient", "n_significant",
                        "n_significant_simultaneous", "n_significant_patient", "n_significant_simultaneous_patient"]
#: Per-ECG arrays besides the scores: the patient (for the patient-level bootstrap) and the
#: subgroup variables, as in cohort.parquet.
PATIENT_KEYS = ("subject_id", "sex", "age", "race")
_PREDICTION_KEYS = ("study_id", "target_names", "y_true", "y_score", *PATIENT_KEYS)
#: What a value run's predictions hold besides (``train.write_predictions``).
_VALUE_RUN_KEYS = ("flag_names", "flag_true")


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``labecg evaluate``.

    Parameters
    ----------
    run_dir : Path
        Run folder written by ``labecg train`` (``predictions_<split>.npz``, ``targets.json``).
    n_iterations : int
        Bootstrap resamples of the ECGs of the split.
    seed : int
        Seed of the resampling (the authors' bootstrap was unseeded).
    split : {"test", "val"}
        Which predictions to evaluate.
    auroc_threshold : float
        A target is significant when its interval's lower bound exceeds this value.
    n_bins : int
        Equal-width bins of the reliability curves.
    n_headline : int
        Headline targets (best estimation AUROCs on the validation split, :func:`choose_headline`)
        analysed by subgroup and given calibration intervals.
    tabular_run_dir : Path, optional
        Run folder of the tabular-only model on the same cohort (``labecg train --variant
        tabular``): ``added_value.csv`` then holds the paired difference to it.
    flag_run_dir : Path, optional
        For a value run (``labecg train --objective value``): the flag run on the same cohort
        whose AUROCs ``values.csv`` shows beside those of the predicted values, with the paired
        difference (:func:`value_results`). Refused for a flag run.
    """

    run_dir: Path
    n_iterations: int = N_RESAMPLES
    seed: int = 0
    split: Literal["test", "val"] = "test"
    auroc_threshold: float = AUROC_THRESHOLD
    n_bins: int = N_BINS
    n_headline: int = 4
    tabular_run_dir: Optional[Path] = None
    flag_run_dir: Optional[Path] = None

    def __post_init__(self):
        hold_paths(self)
        if self.n_iterations < 1:
            raise ValueError(f"n_iterations must be >= 1, got {self.n_iterations}")
        if self.split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', got {self.split!r}")
        if not 0.0 <= self.auroc_threshold <= 1.0:
            raise ValueError(f"auroc_threshold must lie in [0, 1], got {self.auroc_threshold}")
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        if self.n_headline < 1:
            raise ValueError(f"n_headline must be >= 1, got {self.n_headline}")


# ---------------------------------------------------------------------------- headline targets


def headline_targets(results: pd.DataFrame, top: int = 4, task: str = "est") -> list[str]:
    """The ``top`` targets of ``task`` with the highest AUROC: the ones the chapter shows in detail."""
    frame = results.drop(index="macro", errors="ignore")
    frame = frame[frame["task"] == task]
    return list(frame["auroc"].dropna().sort_values(ascending=False, kind="stable").index[:top])


def choose_headline(run, meta: pd.DataFrame, n_headline: int, test_auroc=None) -> pd.DataFrame:
    """The headline targets, chosen on the validation predictions so that the test AUROCs shown are not selected on.

    Choosing the best targets on test and then reporting their test AUROC, calibration
    and subgroups reports the luckiest draws (the winner's curse). The ``n_headline`` estimation
    targets with the highest AUROC on ``RUN/predictions_val.npz`` are chosen instead; only
    a run without that file falls back to ``test_auroc`` (logged, and named in
    ``chosen_on``).

    Parameters
    ----------
    run : Path
        Run folder.
    meta : DataFrame
        Target metadata indexed by name, with a ``task`` column.
    n_headline : int
    test_auroc : Series, optional
        Test AUROC by target, shown beside the validation AUROC.

    Returns
    -------
    DataFrame, one row per headline target, best first: ``target``, ``rank`` (1 = best),
    ``auroc_val`` (AUROC on validation), ``auroc_test``, ``chosen_on`` ("val" or "test").
    """
    path = layout.predictions_path(run, "val")
    test_auroc = pd.Series(dtype=float) if test_auroc is None else test_auroc
    if path.exists():
        val = read_predictions(path)
        frame = pd.DataFrame({"auroc": auroc(val["y_true"], val["y_score"])},
                             index=pd.Index(list(val["target_names"]), dtype=object))
        chosen_on = "val"
    else:
        log.warning("%s: not found; headline targets chosen on the test split (winner's curse)", path)
        frame, chosen_on = pd.DataFrame({"auroc": test_auroc}), "test"
    frame = frame[frame.index.isin(meta.index)].join(meta[["task"]])
    chosen = headline_targets(frame, n_headline)
    return pd.DataFrame({"target": chosen, "rank": np.arange(1, len(chosen) + 1),
                         "auroc_val": [frame.at[t, "auroc"] if chosen_on == "val" else np.nan for t in chosen],
                         "auroc_test": [test_auroc.get(t, np.nan) for t in chosen], "chosen_on": chosen_on})


def read_headline(path) -> list[str]:
    """The headline targets of ``headline.csv`` (:func:`choose_headline`), best first."""
    return [str(t) for t in _read_csv(path, ["target", "rank", "auroc_val", "auroc_test", "chosen_on"],
                                       "headline").sort_values("rank")["target"]]


# ---------------------------------------------------------------------------- added value

#: Columns of ``added_value.csv``, in order.
ADDED_VALUE_COLUMNS = ["target", "baseline", "auroc_baseline", "delta", "low", "high", "n_ecgs"]


def last_value_scores(study_id, targets: list[dict], last_values: pd.DataFrame,
                      estimation_window_min: int) -> np.ndarray:
    """The clinician's baseline: each target's score from the lab's last value before the ECG.

    Parameters
    ----------
    study_id : array-like of shape (n_ecgs,), int
    targets : list of dict, n_targets long
        The ``targets.json`` entries of the prediction columns (``lab``, ``direction``, ``task``).
    last_values : DataFrame
        ``last_values.parquet`` (``labecg.cohort.last_values_query``).
    estimation_window_min : int
        The cohort's; the cutoff of the estimation targets (:func:`labecg.cohort.last_value_cutoff`).

    Returns
    -------
    ndarray of shape (n_ecgs, n_targets), float64
        The value for ``high`` targets, its negative for ``low`` ones (higher: more likely
        abnormal in the target's direction); NaN where the ECG has no earlier value.
    """
    missing = [c for c in cohort.LAST_VALUE_COLUMNS if c not in last_values.columns]
    if missing:
        raise KeyError(f"last values: missing columns {missing}; expected {list(cohort.LAST_VALUE_COLUMNS)}")
    study_id = np.asarray(study_id, dtype=np.int64)
    out = np.full((study_id.size, len(targets)), np.nan)
    by_key = {key: frame.set_index("study_id")["value"] for key, frame in last_values.groupby(["lab", "cutoff_min"])}
    for j, target in enumerate(targets):
        values = by_key.get((target["lab"], cohort.last_value_cutoff(target["task"], estimation_window_min)))
        if values is None:
            continue
        x = values.reindex(study_id).to_numpy(dtype=np.float64)
        out[:, j] = x if target["direction"] == "high" else -x
    return out


def added_value(pred: dict, targets_json: dict, *, tabular_pred: dict | None = None,
                last_values: pd.DataFrame | None = None, n_iterations: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """What the ECG adds: the model's AUROC minus the tabular-only model's and the last earlier value's.

    Parameters
    ----------
    pred : dict
        :func:`read_predictions` of the model (fusion).
    targets_json : dict
        The run's ``targets.json`` (target descriptions; ``config.estimation_window_min``).
    tabular_pred : dict, optional
        :func:`read_predictions` of the tabular-only model on the same ECGs and targets.
    last_values : DataFrame, optional
        The run's ``last_values.parquet``.
    n_iterations, seed : int
        As for :func:`~labecg.stats.bootstrap`; resamples of patients when ``pred`` has ``subject_id``.

    Returns
    -------
    DataFrame with columns :data:`ADDED_VALUE_COLUMNS`: per baseline (``tabular``,
    ``last_value``; each only when given) one row per target and a ``macro`` row, from
    :func:`~labecg.stats.paired_bootstrap`: ``auroc_baseline``, ``delta`` (model minus baseline),
    ``low``, ``high``, ``n_ecgs``. The last-value rows cover the ECGs with an earlier
    value only (the model's AUROC there is ``auroc_baseline + delta``).
    """
    names = list(pred["target_names"])
    by_name = {target["name"]: target for target in targets_json.get("targets", [])}
    groups = pred["subject_id"]
    baselines = {}
    if tabular_pred is not None:
        if (list(tabular_pred["target_names"]) != names
                or not np.array_equal(tabular_pred["study_id"], pred["study_id"])):
            raise ValueError("tabular run: its predictions are not of the same ECGs and targets as the model's; "
                             "train both on one cohort folder")
        baselines["tabular"] = tabular_pred["y_score"]
    if last_values is not None:
        window = int(targets_json.get("config", {}).get("estimation_window_min", 60))
        baselines["last_value"] = last_value_scores(pred["study_id"], [by_name[name] for name in names],
                                                    last_values, window)
    frames = []
    for baseline, scores in baselines.items():
        paired = paired_bootstrap(pred["y_true"], pred["y_score"], scores, n_iterations, seed, groups=groups,
                                  target_names=names)
        frames.append(paired.reset_index().assign(baseline=baseline))
    if not frames:
        return pd.DataFrame(columns=ADDED_VALUE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[ADDED_VALUE_COLUMNS]


def read_added_value(path) -> pd.DataFrame:
    """Read ``added_value.csv`` back (:func:`added_value`)."""
    frame = _read_csv(path, ADDED_VALUE_COLUMNS, "added value: the run needs --tabular-run-dir or last_values.parquet")
    return frame.astype({"target": object, "baseline": object})


#: ``values.csv``: per (lab, task) the value statistics, then per direction the flag target of the
#: same lab and task (empty when the run has none) and its AUROCs (:func:`value_results`).
VALUE_DIRECTION_COLUMNS = ["target", "auroc_value", "auroc_flag", "difference", "difference_low",
                           "difference_high"]
VALUE_COLUMNS = ["lab", "task", "unit", "n", "mae", "spearman", "low", "high", "name", "n_patients", "n_skipped",
                 *(f"{d}_{c}" for d in DIRECTIONS for c in VALUE_DIRECTION_COLUMNS)]


def value_results(pred: dict, values: list[dict], flag_pred: dict | None = None, n_iterations: int = N_RESAMPLES,
                  seed: int = 0) -> pd.DataFrame:
    """How well a value run predicts each value, and how its values score the lab's flags.

    Parameters
    ----------
    pred : dict
        :func:`read_predictions` of a value run, with ``flag_names`` (F,) and ``flag_true``
        (n, F) (``train.write_predictions``): ``y_true``/``y_score`` in the lab's unit.
    values : list of dict
        The run's ``targets.json`` ``values`` (name, lab, task, unit), one per output.
    flag_pred : dict, optional
        :func:`read_predictions` of a flag run on the same cohort: every ECG of ``pred`` (by
        ``study_id``) must be among its ECGs; its flag targets are matched by name.
    n_iterations, seed : int
        Resamples of patients (``subject_id``), :func:`~labecg.metrics.resample_weights`: the
        Spearman interval (:func:`~labecg.stats.value_bootstrap`) and the paired differences
        (:func:`~labecg.stats.paired_bootstrap`) use the same draws.

    Returns
    -------
    DataFrame with :data:`VALUE_COLUMNS`, one row per value column in the run's order:
    ``n`` (measured values), ``mae`` (mean |predicted - measured|, the lab's unit),
    ``spearman`` with its patient-level 95% interval ``low``/``high``, ``n_patients`` (with a
    measured value), ``n_skipped`` (resamples without a defined Spearman); then for ``d`` in
    low, high: ``d_target`` the flag target of the same lab, task and direction (empty when
    none), ``d_auroc_value`` the AUROC of the predicted value as its score (the value for
    high, minus the value for low), ``d_auroc_flag`` the flag run's AUROC of it, and
    ``d_difference`` (value minus flag) with its paired interval ``d_difference_low``/``_high``
    (NaN without ``flag_pred``).
    """
    names = list(pred["target_names"])
    meta = {v["name"]: v for v in values}
    missing = [name for name in names if name not in meta]
    if missing:
        raise KeyError(f"value_results: the predictions' columns {missing[:3]} are not among targets.json's values")
    if "flag_names" not in pred or "flag_true" not in pred:
        raise KeyError("value_results: the predictions lack flag_names/flag_true; a value run of "
                       "`labecg train --objective value` writes them")
    subject = pred["subject_id"]
    stats = value_bootstrap(pred["y_true"], pred["y_score"], n_iterations, seed, groups=subject, target_names=names)
    flag_names = [str(f) for f in pred["flag_names"]]
    column = {name: j for j, name in enumerate(names)}
    # the flag targets scored by a predicted value: same lab and task
    pairs = []  # (flag index, value column, direction)
    for f, flag in enumerate(flag_names):
        lab, direction, task = parse_target(flag)
        value = next((name for name in names if meta[name]["lab"] == lab and meta[name]["task"] == task), None)
        if value is not None:
            pairs.append((f, value, direction))
    y = pred["flag_true"][:, [f for f, _, _ in pairs]].astype(np.float64)  # (n, P)
    score = np.column_stack([pred["y_score"][:, column[v]] * (1.0 if d == "high" else -1.0)
                             for _, v, d in pairs]) if pairs else np.empty((len(subject), 0))
    paired_names = [flag_names[f] for f, _, _ in pairs]
    by_flag = pd.DataFrame({"auroc_value": auroc(y, score) if pairs else []}, index=pd.Index(paired_names, dtype=object))
    for c in ("auroc_flag", "difference", "difference_low", "difference_high"):
        by_flag[c] = np.nan
    if flag_pred is not None and pairs:
        at = pd.Index(flag_pred["study_id"]).get_indexer(pred["study_id"])
        if (at < 0).any():
            raise ValueError(f"flag run: {int((at < 0).sum())} ECGs of the value run (e.g. study_id "
                             f"{pred['study_id'][at < 0][0]}) are not among its predictions; train both on one cohort")
        flag_col = {str(t): j for j, t in enumerate(flag_pred["target_names"])}
        base = np.column_stack([flag_pred["y_score"][at, flag_col[t]].astype(np.float64) if t in flag_col
                                else np.full(len(at), np.nan) for t in paired_names])
        paired = paired_bootstrap(y, score, base, n_iterations, seed, groups=subject, target_names=paired_names)
        paired = paired.drop(index="macro")
        by_flag["auroc_flag"] = paired["auroc_baseline"]
        by_flag["difference"] = paired["delta"]
        by_flag["difference_low"] = paired["low"]
        by_flag["difference_high"] = paired["high"]
    rows = []
    for name in names:
        row = {"lab": meta[name]["lab"], "task": meta[name]["task"], "unit": meta[name].get("unit"),
               **stats.loc[name, ["n", "mae", "spearman", "low", "high", "n_skipped"]].to_dict(), "name": name,
               "n_patients": int(pd.unique(subject[~np.isnan(pred["y_true"][:, column[name]])]).size)}
        for d in DIRECTIONS:
            flag = next((flag_names[f] for f, v, dd in pairs if v == name and dd == d), "")
            row[f"{d}_target"] = flag
            for c in VALUE_DIRECTION_COLUMNS[1:]:
                row[f"{d}_{c}"] = by_flag.loc[flag, c] if flag else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=VALUE_COLUMNS).astype({"n": np.int64, "n_patients": np.int64,
                                                             "n_skipped": np.int64})


def read_values(path) -> pd.DataFrame:
    """Read ``values.csv`` back (:func:`value_results`)."""
    frame = _read_csv(path, VALUE_COLUMNS, "values: `labecg evaluate` on a run of `labecg train --objective value`")
    return frame.astype({"lab": object, "task": object, "name": object, "low_target": object,
                         "high_target": object}).fillna({"low_target": "", "high_target": ""})


def read_predictions(path) -> dict[str, np.ndarray]:
    """Read ``predictions_<split>.npz`` (ARCHITECTURE.md section 5) and check its shapes.

    Returns
    -------
    dict with ``study_id`` (n,) int64, ``target_names`` (T,) str, ``y_true`` (n, T) and
    ``y_score`` (n, T) float32 (NaN in ``y_true`` = missing); and (:data:`PATIENT_KEYS`)
    ``subject_id`` (n,) int64, ``sex`` (n,) float64 (1.0 male, 0.0 female, NaN), ``age``
    (n,) float64 years, ``race`` (n,) str ("" missing).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: predictions not found; run `labecg train` first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _PREDICTION_KEYS if k not in npz.files]
            if missing:
                raise KeyError(f"{path}: missing arrays {missing}; expected {list(_PREDICTION_KEYS)}, "
                               f"found {npz.files}")
            pred = {k: npz[k] for k in _PREDICTION_KEYS + _VALUE_RUN_KEYS if k in npz.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        # numpy names no file: "File is not a zip file", "Object arrays cannot be loaded ..."
        raise ValueError(f"{path}: not a readable predictions file ({type(e).__name__}: {e}); expected the "
                         f"numeric arrays {list(_PREDICTION_KEYS)} that `labecg train` writes") from e
    n, T = pred["study_id"].shape[0], pred["target_names"].shape[0]
    for key in PATIENT_KEYS:
        if pred[key].shape != (n,):
            raise ValueError(f"{path}: {key} has shape {pred[key].shape}; expected ({n},) from study_id")
    for key in ("y_true", "y_score"):
        if pred[key].shape != (n, T):
            raise ValueError(f"{path}: {key} has shape {pred[key].shape}; expected ({n}, {T}) "
                             f"from study_id ({n},) and target_names ({T},)")
    pred["target_names"] = pred["target_names"].astype(str)
    if "flag_names" in pred:
        pred["flag_names"] = pred["flag_names"].astype(str)
        if pred.get("flag_true", np.empty(0)).shape != (n, len(pred["flag_names"])):
            raise ValueError(f"{path}: flag_true must have shape ({n}, {len(pred['flag_names'])}) from study_id "
                             f"and flag_names")
    return pred


def _target_metadata(targets_json: dict, names, source: Path) -> pd.DataFrame:
    by_name = {t["name"]: t for t in targets_json.get("targets", [])}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise KeyError(f"{source}: targets {unknown[:5]} of the predictions are not listed "
                       f"({len(unknown)} of {len(names)} missing)")
    rows = [{c: by_name[name].get(c) for c in METADATA_COLUMNS} for name in names]
    return pd.DataFrame(rows, index=pd.Index(list(names), name="target", dtype=object))


def _write_csv(frame: pd.DataFrame, path: Path, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def evaluate_run(cfg: EvaluateConfig) -> Path:
    """Bootstrap, calibrate and split by subgroup the run's predictions; write to ``RUN/evaluation``.

    The test split goes to ``RUN/evaluation``, the validation split to ``RUN/evaluation_val``
    (:func:`labecg.layout.evaluation_dir`), so evaluating one never replaces the other; ``results.csv``
    names its split in the column ``split``.

    Reads ``RUN/predictions_<split>.npz`` and ``RUN/targets.json``; writes (atomically)
    ``results.csv`` (one row per target + ``macro``: bootstrap columns, target metadata,
    ``significant``, the patient-level interval ``low_patient``/``high_patient`` with
    ``n_patients``, ``brier``, ``auprc``, ``prevalence`` and the simultaneous bounds),
    ``bootstrap_iterations.npz`` (``target_names``
    (T + 1,) with ``macro`` last, ``auroc`` (n_iterations, T + 1), ``auroc_patient``
    likewise, ``seed``, ``split``), ``calibration.csv`` (:func:`~labecg.stats.calibration`),
    ``multiplicity.csv`` (:func:`multiplicity_summary`: per task, targets above the
    threshold by the paper's rule and under the simultaneous intervals of
    :func:`~labecg.stats.simultaneous_intervals`, whose bounds are in ``results.csv``, ``sim_low`` ...,
    from the same resamples), ``headline.csv`` (:func:`choose_headline`: the ``n_headline`` best estimation targets
    on the validation split), ``calibration.csv`` with patient-level intervals of
    intercept and slope for the headline targets (ECG-level without ``subject_id``),
    ``reliability.csv`` (:func:`~labecg.stats.reliability_frame`), ``subgroups.csv``
    (:func:`~labecg.stats.subgroup_auroc` of the headline targets),
    ``table1_estimation.{csv,md}``, ``table2_monitoring.{csv,md}`` and
    ``paper_comparison.csv`` (with a ``difference`` only when ``targets.json`` records
    ``source.synthetic`` false); ``added_value.csv`` (:func:`added_value`) with the
    tabular-only run (``tabular_run_dir``) and the run's ``last_values.parquet``, those
    of the two it has.

    Returns
    -------
    Path
        The ``RUN/evaluation`` (or ``RUN/evaluation_val``) folder.
    """
    run = cfg.run_dir
    objective = read_json(run / layout.CONFIG).get("train", {}).get("objective", "flag") \
        if (run / layout.CONFIG).exists() else "flag"
    if objective == "value":
        return _evaluate_values(cfg)
    if cfg.flag_run_dir is not None:
        raise ValueError(f"--flag-run-dir {cfg.flag_run_dir}: {run} is a flag run; the option compares a run of "
                         f"`labecg train --objective value` with a flag run")
    pred = read_predictions(layout.predictions_path(run, cfg.split))
    targets_path = run / layout.TARGETS
    meta = _target_metadata(read_json(targets_path), pred["target_names"], targets_path)
    names = list(pred["target_names"])
    n, T = pred["y_true"].shape
    log.info("bootstrap: %d ECGs x %d targets, %d resamples (seed %d)", n, T, cfg.n_iterations, cfg.seed)
    boot, iterations = bootstrap(pred["y_true"], pred["y_score"], cfg.n_iterations, cfg.seed,
                                 target_names=names, return_iterations=True)
    subject = pred["subject_id"]
    boot_p, iterations_p = bootstrap(pred["y_true"], pred["y_score"], cfg.n_iterations, cfg.seed,
                                     groups=subject, target_names=names, return_iterations=True)
    patients = _patients_per_target(pred["y_true"], subject)
    headline = choose_headline(run, meta, cfg.n_headline, boot["auroc"])
    calib = calibration(pred["y_true"], pred["y_score"], names, groups=subject, n_iterations=cfg.n_iterations,
                        seed=cfg.seed, interval_targets=list(headline["target"]))
    tasks = meta["task"].reindex(names).to_numpy(dtype=object)
    sim, critical = simultaneous_intervals(boot["auroc"].to_numpy()[:T], iterations[:, :T], tasks)
    sim_p, critical_p = simultaneous_intervals(boot["auroc"].to_numpy()[:T], iterations_p[:, :T], tasks)
    simultaneous = pd.DataFrame({"sim_low": sim["low"].to_numpy(), "sim_high": sim["high"].to_numpy(),
                                 "sim_low_patient": sim_p["low"].to_numpy(),
                                 "sim_high_patient": sim_p["high"].to_numpy()}, index=pd.Index(names, dtype=object))
    results = assemble_results(boot, meta, cfg.auroc_threshold, boot_patient=boot_p, n_patients=patients,
                               calib=calib, auprc=average_precision(pred["y_true"], pred["y_score"]),
                               simultaneous=simultaneous)

    out = layout.evaluation_dir(run, cfg.split)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(results.reset_index().assign(split=cfg.split), out / layout.RESULTS)
    with atomic_path(out / layout.BOOTSTRAP) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, target_names=np.array([*pred["target_names"], "macro"]),
                                auroc=iterations, auroc_patient=iterations_p, seed=np.int64(cfg.seed),
                                split=np.array(cfg.split), n_ecgs=np.int64(n))
    _write_csv(calib.reset_index(), out / layout.CALIBRATION)
    _write_csv(headline, out / layout.HEADLINE)
    _write_csv(multiplicity_summary(results, critical, critical_p, cfg.auroc_threshold), out / layout.MULTIPLICITY)
    _write_csv(reliability_frame(pred["y_true"], pred["y_score"], names, cfg.n_bins), out / layout.RELIABILITY)
    labels = subgroup_labels(pred["sex"], pred["age"], pred["race"])
    sub = subgroup_auroc(pred["y_true"], pred["y_score"], names, labels, list(headline["target"]), groups=subject,
                         n_iterations=cfg.n_iterations, seed=cfg.seed)
    _write_csv(sub, out / layout.SUBGROUPS)
    tabular_pred = (read_predictions(layout.predictions_path(cfg.tabular_run_dir, cfg.split))
                    if cfg.tabular_run_dir is not None else None)
    last_path = run / layout.LAST_VALUES
    if tabular_pred is not None or last_path.exists():
        added = added_value(pred, read_json(targets_path), tabular_pred=tabular_pred,
                            last_values=pd.read_parquet(last_path) if last_path.exists() else None,
                            n_iterations=cfg.n_iterations, seed=cfg.seed)
        _write_csv(added, out / layout.ADDED_VALUE)
    else:  # an earlier evaluation's file would describe other predictions
        (out / layout.ADDED_VALUE).unlink(missing_ok=True)
    t1 = tables.table_estimation(results, cfg.auroc_threshold)
    t2 = tables.table_monitoring(results, cfg.auroc_threshold)  # best horizon in t2.attrs, bold in the .md
    _write_csv(t1, out / f"{layout.TABLE1}.csv", index=True)
    _write_text(tables.to_markdown(t1), out / f"{layout.TABLE1}.md")
    _write_csv(t2, out / f"{layout.TABLE2}.csv", index=True)
    _write_text(tables.to_markdown(t2), out / f"{layout.TABLE2}.md")
    # a difference to the paper's AUROCs only where the run's own record says it was built from MIMIC-IV
    comparable = read_json(targets_path).get("source", {}).get("synthetic") is False
    _write_csv(tables.compare_with_paper(results, comparable=comparable), out / layout.PAPER_COMPARISON)
    macro = results.loc["macro"]
    log.info("macro AUROC %.3f (%.3f, %.3f; patient-level %.3f, %.3f); %d targets significant above %.2f",
             macro["auroc"], macro["low"], macro["high"], macro["low_patient"], macro["high_patient"],
             int(results["significant"].drop("macro").sum()), cfg.auroc_threshold)
    return out


def _evaluate_values(cfg: EvaluateConfig) -> Path:
    """:func:`evaluate_run` of a value run: ``values.csv`` (:func:`value_results`) and nothing else."""
    run = cfg.run_dir
    pred = read_predictions(layout.predictions_path(run, cfg.split))
    values = read_json(run / layout.TARGETS).get("values", [])
    flag_pred = None
    if cfg.flag_run_dir is not None:
        flag_config = cfg.flag_run_dir / layout.CONFIG
        if flag_config.exists() and read_json(flag_config).get("train", {}).get("objective", "flag") != "flag":
            raise ValueError(f"--flag-run-dir {cfg.flag_run_dir}: {flag_config} records a value run; "
                             f"expected a run of `labecg train` (--objective flag)")
        flag_pred = read_predictions(layout.predictions_path(cfg.flag_run_dir, cfg.split))
    log.info("values: %d ECGs x %d value columns, %d resamples (seed %d)%s", *pred["y_true"].shape,
             cfg.n_iterations, cfg.seed, f", beside {cfg.flag_run_dir}" if flag_pred is not None else "")
    frame = value_results(pred, values, flag_pred, cfg.n_iterations, cfg.seed)
    out = layout.evaluation_dir(run, cfg.split)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(frame.assign(split=cfg.split), out / layout.VALUES)
    return out


def _read_csv(path, required: list[str], stage: str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `labecg evaluate --run-dir RUN` ({stage})")
    frame = pd.read_csv(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise KeyError(f"{path}: missing columns {missing}; expected {required}")
    return frame


def read_calibration(path) -> pd.DataFrame:
    """Read ``calibration.csv`` back (:func:`~labecg.stats.calibration` with a ``target`` column)."""
    return _read_csv(path, ["target", "n", "prevalence", "mean_score", "brier", "brier_reference",
                            "calibration_intercept", "calibration_slope"], "calibration")


def read_reliability(path) -> pd.DataFrame:
    """Read ``reliability.csv`` back (:func:`~labecg.stats.reliability_frame`)."""
    return _read_csv(path, ["target", "bin", "mean_predicted", "fraction_positive", "n"], "reliability")


def read_subgroups(path) -> pd.DataFrame:
    """Read ``subgroups.csv`` back (:func:`~labecg.stats.subgroup_auroc`)."""
    frame = _read_csv(path, ["target", "variable", "subgroup", "n_ecgs", "n_pos", "n_neg", "auroc", "low",
                             "high", "n_skipped", "interval", "too_few"], "subgroups")
    return frame.astype({"target": object, "variable": object, "subgroup": object})


def _patients_per_target(y_true, subject) -> np.ndarray:
    """Distinct patients with an observed label, per target, then over all targets (macro)."""
    codes, _ = _group_codes(subject, len(subject))
    observed = ~np.isnan(np.asarray(y_true, dtype=np.float64))
    per_target = [np.unique(codes[observed[:, t]]).size for t in range(observed.shape[1])]
    return np.array([*per_target, np.unique(codes[observed.any(axis=1)]).size], dtype=np.int64)


def assemble_results(boot: pd.DataFrame, meta: pd.DataFrame, auroc_threshold: float = AUROC_THRESHOLD, *,
                     boot_patient: pd.DataFrame | None = None, n_patients=None,
                     calib: pd.DataFrame | None = None, auprc=None, simultaneous: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """Join bootstrap rows with target metadata, the significance rule, and the extra analyses.

    Parameters
    ----------
    boot : DataFrame
        From :func:`~labecg.stats.bootstrap`, indexed by target name, ending with ``macro``.
    meta : DataFrame
        Indexed by target name; columns of :data:`METADATA_COLUMNS`.
    auroc_threshold : float
        ``significant`` is ``low > auroc_threshold`` (False where ``low`` is NaN): the
        paper's rule on the ECG-level interval.
    boot_patient : DataFrame, optional
        From ``bootstrap(..., groups=...)``; its ``low``/``high`` become ``low_patient``/
        ``high_patient`` (NaN without it).
    n_patients : array-like of shape (n_targets + 1,), optional
        Distinct patients with an observed label (macro last); -1 without it.
    calib : DataFrame, optional
        From :func:`~labecg.stats.calibration`; its ``brier`` becomes a column (NaN for macro).
    auprc : array-like of shape (n_targets,), optional
        :func:`labecg.metrics.average_precision` per target; macro: the mean over the
        targets where it is defined. NaN without it.
    simultaneous : DataFrame, optional
        Indexed by target: ``sim_low``, ``sim_high``, ``sim_low_patient``,
        ``sim_high_patient`` (:func:`~labecg.stats.simultaneous_intervals`); NaN without it.

    Returns
    -------
    DataFrame indexed by ``target``, columns ``RESULT_COLUMNS[1:]``: also ``prevalence``
    (``n_pos / (n_pos + n_neg)``; macro: the mean over targets, the baseline of the macro
    AUPRC) and ``significant_simultaneous`` (``sim_low > auroc_threshold``).
    """
    results = meta.reindex(boot.index).join(boot)
    results["significant"] = significant(results["low"], auroc_threshold)
    if boot_patient is None:
        results["low_patient"] = results["high_patient"] = np.nan
    else:
        results["low_patient"] = boot_patient["low"].reindex(boot.index)
        results["high_patient"] = boot_patient["high"].reindex(boot.index)
    results["n_patients"] = np.asarray(n_patients if n_patients is not None else np.full(len(boot), -1),
                                       dtype=np.int64)
    results["brier"] = calib["brier"].reindex(boot.index) if calib is not None else np.nan
    targets = boot.index[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence = (boot["n_pos"] / (boot["n_pos"] + boot["n_neg"])).astype(float)
    prevalence["macro"] = prevalence[targets].mean() if len(targets) else np.nan
    results["prevalence"] = prevalence
    ap = pd.Series(np.nan if auprc is None else np.asarray(auprc, dtype=float), index=targets, dtype=float)
    results["auprc"] = pd.concat([ap, pd.Series({"macro": ap.mean() if ap.notna().any() else np.nan})])
    for col in SIMULTANEOUS_COLUMNS[:-1]:
        results[col] = simultaneous[col].reindex(boot.index) if simultaneous is not None else np.nan
    results["significant_simultaneous"] = significant(results["sim_low"], auroc_threshold)
    results["horizon_min"] = pd.to_numeric(results["horizon_min"]).astype("Int64")  # NaN for est, macro
    return results[RESULT_COLUMNS[1:]]


def multiplicity_summary(results: pd.DataFrame, critical: dict, critical_patient: dict,
                         auroc_threshold: float = AUROC_THRESHOLD, level: float = LEVEL) -> pd.DataFrame:
    """Per task: targets above ``auroc_threshold`` by the paper's rule and under simultaneous intervals.

    Returns
    -------
    DataFrame with columns :data:`MULTIPLICITY_COLUMNS`, one row per task of
    :data:`~labecg.targets.TASKS` present in ``results``: ``n_targets``, ``level``,
    ``critical_value`` (ECG-level resamples) and ``critical_value_patient``,
    ``n_significant`` (the paper's rule: pointwise ECG-level lower bound above the
    threshold), ``n_significant_simultaneous`` (simultaneous ECG-level lower bound),
    ``n_significant_patient`` and ``n_significant_simultaneous_patient`` (the same with
    the patient-level resamples).
    """
    frame = results.drop(index="macro", errors="ignore")
    rows = []
    for task in TASKS:
        tr = frame[frame["task"] == task]
        if tr.empty:
            continue
        rows.append({"task": task, "n_targets": len(tr), "level": level,
                     "critical_value": critical.get(task, np.nan),
                     "critical_value_patient": critical_patient.get(task, np.nan),
                     "n_significant": int(significant(tr["low"], auroc_threshold).sum()),
                     "n_significant_simultaneous": int(significant(tr["sim_low"], auroc_threshold).sum()),
                     "n_significant_patient": int(significant(tr["low_patient"], auroc_threshold).sum()),
                     "n_significant_simultaneous_patient": int(significant(tr["sim_low_patient"], auroc_threshold).sum())})
    return pd.DataFrame(rows, columns=MULTIPLICITY_COLUMNS)


def read_paper_comparison(path) -> pd.DataFrame:
    """Read ``paper_comparison.csv`` back (:func:`labecg.tables.compare_with_paper`)."""
    return _read_csv(path, ["target", "value", "category", "direction", "task", "paper_threshold", "threshold",
                            "unit", "threshold_differs", "paper_auroc", "paper_low", "paper_high", "auroc", "low",
                            "high", "difference", "comparable", "paper_version"], "paper comparison")


def read_multiplicity(path) -> pd.DataFrame:
    """Read ``multiplicity.csv`` back (:func:`multiplicity_summary`)."""
    return _read_csv(path, MULTIPLICITY_COLUMNS, "multiplicity")


def read_results(path) -> pd.DataFrame:
    """Read ``results.csv`` back, indexed by target name."""
    frame = _read_csv(path, RESULT_COLUMNS, "results")
    frame["target"] = frame["target"].astype(object)
    return frame.set_index("target")


def compare_variants(evaluation_dirs: dict, auroc_threshold: float = AUROC_THRESHOLD) -> pd.DataFrame:
    """Models trained on the same data, side by side, with paired intervals of their differences.

    Each variant's ``results.csv`` gives the macro AUROC and its intervals and the targets
    significant by the paper's rule per task. The variants were evaluated on the same test
    ECGs with the same seed, so resample i of every variant draws the same ECGs (and the
    same patients): the difference of their macro AUROCs per resample is a paired
    bootstrap of the difference, narrower than the two intervals side by side suggest.

    Parameters
    ----------
    evaluation_dirs : dict
        variant name -> ``RUN/evaluation`` folder; the first is the reference.
    auroc_threshold : float

    Returns
    -------
    DataFrame indexed by ``variant``: ``macro_auroc``, ``low``, ``high`` (ECG-level),
    ``low_patient``, ``high_patient``, ``significant_est``, ``significant_mon30``,
    ``significant_mon60``, ``significant_mon120`` (paper's rule), ``difference``
    (macro AUROC minus the reference's), ``difference_low``, ``difference_high``
    (paired patient-level bootstrap; NaN for the reference).
    """
    rows, reference = [], None
    for variant, folder in evaluation_dirs.items():
        folder = Path(folder)
        res = read_results(folder / layout.RESULTS)
        with np.load(folder / layout.BOOTSTRAP, allow_pickle=False) as npz:
            missing = [k for k in ("auroc_patient", "seed", "split") if k not in npz.files]
            if missing:
                raise KeyError(f"{folder / layout.BOOTSTRAP}: missing arrays {missing}; run `labecg evaluate` again")
            macro_its, seed, split = npz["auroc_patient"][:, -1], int(npz["seed"]), str(npz["split"])
        study = read_predictions(layout.predictions_path(folder.parent, split))["study_id"]
        macro = res.loc["macro"]
        tr = res.drop(index="macro")
        row = {"variant": variant, "macro_auroc": macro["auroc"], "low": macro["low"], "high": macro["high"],
               "low_patient": macro["low_patient"], "high_patient": macro["high_patient"]}
        for task in TASKS:
            row[f"significant_{task}"] = int(((tr["task"] == task) & significant(tr["low"], auroc_threshold)).sum())
        if reference is None:
            reference = (macro["auroc"], macro_its, seed, study, variant)
            row.update(difference=np.nan, difference_low=np.nan, difference_high=np.nan)
        else:
            ref_auroc, ref_its, ref_seed, ref_study, ref_name = reference
            if seed != ref_seed or len(ref_its) != len(macro_its) or not np.array_equal(study, ref_study):
                raise ValueError(f"{folder}: not evaluated on the same test ECGs with the same seed and resamples "
                                 f"as {ref_name}; rerun `labecg evaluate` for both with one --seed")
            diff = macro_its - ref_its
            lo, hi = np.nanpercentile(diff, PERCENTILES)
            row.update(difference=macro["auroc"] - ref_auroc, difference_low=lo, difference_high=hi)
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")
