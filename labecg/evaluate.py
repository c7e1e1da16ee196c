"""Evaluation statistics: per-target AUROC, bootstrap intervals, calibration, subgroups; written to the run folder.

Statistics (the paper, section 3, and its authors' code, with one flaw fixed):

- AUROC per target on the test fold, missing labels left out (:func:`auroc`).
- Macro AUROC: the mean over targets whose AUROC is defined (both classes present).
  The authors' code counts undefined targets as 0.5; we leave them out.
- Bootstrap (:func:`bootstrap`): ``n_iterations`` resamples of the test ECGs with
  replacement, one resample shared by all targets; per resample the AUROC of every
  target and the macro AUROC; the 95% interval is the 2.5 and 97.5 percentiles.
- Patient-level (cluster) bootstrap (``bootstrap(..., groups=subject_id)``): resample
  patients with replacement and take all their ECGs. Several ECGs of one patient share
  their labels, so resampling ECGs treats correlated rows as independent and gives
  intervals that are too narrow; ``results.csv`` carries both (``low``/``high``, the
  paper's, and ``low_patient``/``high_patient``). The tables keep the paper's rule.
- Calibration (:func:`calibration`): Brier score, calibration intercept (slope fixed at
  1) and slope (logistic recalibration on the logit of the score), and the reliability
  curve (:func:`reliability_curve`).
- Subgroups (:func:`subgroup_auroc`): AUROC with patient-level intervals within sex, age
  band and race, one resample shared by every subgroup and target.
  A resample in which a target has a single class is skipped for that target (and
  counted in ``n_skipped``). A target is "significantly above 0.7" when its interval's
  lower bound exceeds 0.7, the paper's reading.

A resample is a vector of multiplicities, so its AUROC is a weighted Mann-Whitney
statistic over the scores sorted once (:mod:`labecg.metrics`): no re-sorting and no
loop over targets inside the loop over resamples.

The paper's tables are :mod:`labecg.tables`; :func:`evaluate_run` writes them into the run folder.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd

from labecg import cohort, layout, tables
from labecg.metrics import (N_RESAMPLES, _group_codes, as_float_pair, auroc, average_precision,
                            resample_indices, resample_weights, sort_targets, weighted_auroc)
from labecg.targets import TASKS, significant
from labecg.util import atomic_path, get_logger, hold_paths, progress_bar, read_json

__all__ = ["EvaluateConfig", "evaluate_run", "auroc", "bootstrap", "resample_indices", "resample_weights",
           "calibration", "reliability_curve", "brier_loss", "subgroup_auroc", "subgroup_labels",
           "headline_targets", "choose_headline", "read_headline", "reliability_frame", "compare_variants",
           "read_calibration", "read_reliability",
           "read_subgroups", "AGE_BANDS", "MIN_CLASS_FOR_INTERVAL", "paired_bootstrap", "last_value_scores",
           "added_value",
           "read_added_value", "ADDED_VALUE_COLUMNS",
           "simultaneous_intervals", "multiplicity_summary", "read_multiplicity", "read_paper_comparison", "MULTIPLICITY_COLUMNS",
           "read_predictions", "read_results", "RESULT_COLUMNS"]

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
_PREDICTION_KEYS = ("study_id", "target_names", "y_true", "y_score")
#: Per-ECG arrays that runs written since issue 14 carry: the patient (for the
#: patient-level bootstrap) and the subgroup variables, as in cohort.parquet.
PATIENT_KEYS = ("subject_id", "sex", "age", "race")


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
    """

    run_dir: Path
    n_iterations: int = N_RESAMPLES
    seed: int = 0
    split: Literal["test", "val"] = "test"
    auroc_threshold: float = 0.7
    n_bins: int = 10
    n_headline: int = 4
    tabular_run_dir: Optional[Path] = None

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


# ---------------------------------------------------------------------------- statistics


def bootstrap(y_true, y_score, n_iterations: int = N_RESAMPLES, seed: int = 0, *, groups=None,
              target_names=None, return_iterations: bool = False, progress: bool | None = None):
    """Bootstrap 95% intervals of every target's AUROC and of the macro AUROC.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets)
        1.0 positive, 0.0 negative, NaN missing.
    y_score : array-like of shape (n_ecgs, n_targets)
        Per-ECG scores (mean of the segment probabilities), finite where observed.
    n_iterations : int
        Resamples, each shared by all targets.
    seed : int
        Seed of :func:`resample_weights`.
    groups : array-like of shape (n_ecgs,), optional
        Patient (cluster) id of each ECG. None: resample ECGs (the paper's bootstrap).
        Given: resample patients with replacement and take all their ECGs
        (:func:`resample_weights`).
    target_names : sequence of str of length n_targets, optional
        Row labels; default ``0 .. n_targets - 1``.
    return_iterations : bool
        Also return the per-resample AUROCs.
    progress : bool or None
        tqdm bar over resamples; None shows it only on a terminal.

    Returns
    -------
    results : DataFrame
        One row per target plus a final row ``"macro"``; columns ``auroc`` (on the full
        set; macro = mean over defined targets), ``low``, ``high`` (2.5 and 97.5
        percentiles over the resamples in which the AUROC is defined), ``n_pos``,
        ``n_neg`` (observed labels; macro: sums over targets), ``n_skipped`` (resamples
        in which the target had a single class; macro: resamples with no defined target).
    iterations : ndarray of shape (n_iterations, n_targets + 1), float64
        Only with ``return_iterations``: AUROC per resample and target, the macro last;
        NaN where skipped.

    Examples
    --------
    Each patient's ECGs copied three times: the patient-level interval does not move.

    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random((60, 1)) < 0.4).astype(float); s = y + rng.normal(size=(60, 1))
    >>> patient = np.arange(60)
    >>> once = bootstrap(y, s, 200, groups=patient)
    >>> thrice = bootstrap(np.tile(y, (3, 1)), np.tile(s, (3, 1)), 200, groups=np.tile(patient, 3))
    >>> bool(np.allclose(once[["low", "high"]], thrice[["low", "high"]]))
    True
    """
    st = sort_targets(y_true, y_score)
    n, T = st.n_ecgs, st.n_targets
    if target_names is None:
        names = list(range(T))
    else:
        names = list(target_names)
        if len(names) != T:
            raise ValueError(f"target_names has {len(names)} names; y_true has {T} columns")
        if "macro" in names:
            raise ValueError("a target may not be named 'macro' (the name of the macro row)")
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")

    point, n_pos, n_neg = weighted_auroc(st, return_counts=True)
    iterations = np.empty((n_iterations, T + 1))  # (I, T + 1), macro last
    draws = resample_weights(n, n_iterations, seed, groups)
    disable = None if progress is None else not progress
    desc = "bootstrap" if groups is None else "patient bootstrap"
    for i, w in enumerate(progress_bar(draws, total=n_iterations, desc=desc, disable=disable, leave=False)):
        iterations[i, :T] = weighted_auroc(st, w)
    defined = ~np.isnan(iterations[:, :T])
    n_defined = defined.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iterations[:, T] = np.where(defined, iterations[:, :T], 0.0).sum(axis=1) / n_defined

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: never-defined targets
        low, high = np.nanpercentile(iterations, [2.5, 97.5], axis=0)
        macro_point = np.nanmean(point) if (~np.isnan(point)).any() else np.nan
    frame = pd.DataFrame({
        "auroc": np.append(point, macro_point),
        "low": low,
        "high": high,
        "n_pos": np.append(n_pos, n_pos.sum()).astype(np.int64),
        "n_neg": np.append(n_neg, n_neg.sum()).astype(np.int64),
        "n_skipped": np.append(n_iterations - defined.sum(axis=0), (n_defined == 0).sum()).astype(np.int64),
    }, index=pd.Index([*names, "macro"], name="target", dtype=object))
    if return_iterations:
        return frame, iterations
    return frame


# ---------------------------------------------------------------------------- calibration

_EPS = 1e-6  # scores clipped to [eps, 1 - eps] before the logit: float32 sigmoids reach 0 and 1


def brier_loss(y_true, y_score):
    """Brier score of every target: mean squared difference of probability and label.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets) or (n_ecgs,)
        1.0 positive, 0.0 negative, NaN missing (left out).
    y_score : array-like of the same shape
        Probabilities in [0, 1].

    Returns
    -------
    ndarray of shape (n_targets,), float64, or float for 1-d input
        NaN where a target has no observed label. Lower is better; predicting the
        prevalence ``p`` scores ``p (1 - p)``.
    """
    y_true, y_score = as_float_pair(y_true, y_score)
    one_d = y_true.ndim == 1
    y_true, y_score = np.atleast_2d(y_true.T).T, np.atleast_2d(y_score.T).T
    observed = ~np.isnan(y_true)
    sq = np.where(observed, (np.where(observed, y_score, 0.0) - np.nan_to_num(y_true)) ** 2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sq.sum(axis=0) / observed.sum(axis=0)
    return float(out[0]) if one_d else out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _separated(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Whether the classes of each weighted sample are (quasi-)completely separated along ``x``.

    With one covariate and an intercept the maximum-likelihood slope is finite exactly when
    the classes overlap: some negative lies strictly above some positive and some positive
    strictly above some negative (Albert & Anderson, 1984). Otherwise a threshold on
    ``x`` splits them, with ties at most at the threshold, and the likelihood keeps rising
    as the slope runs to plus or minus infinity.

    Parameters
    ----------
    x : ndarray of shape (n,)
    y : ndarray of shape (n,), 0.0 or 1.0
    weights : ndarray of shape (n_samples, n)
        Multiplicity of each row in each sample; rows of weight 0 are absent.

    Returns
    -------
    ndarray of shape (n_samples,), bool
        True also for a sample with a single class.
    """
    present = weights > 0  # (I, n)
    pos, neg = present & (y == 1.0), present & (y == 0.0)
    min_pos = np.where(pos, x, np.inf).min(axis=1)
    max_pos = np.where(pos, x, -np.inf).max(axis=1)
    min_neg = np.where(neg, x, np.inf).min(axis=1)
    max_neg = np.where(neg, x, -np.inf).max(axis=1)
    return ~((min_pos < max_neg) & (min_neg < max_pos))


def _newton_logistic(x: np.ndarray, y: np.ndarray, offset: np.ndarray, fit_slope: bool, weights=None,
                     start=None, max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood ``a`` (and ``b``) of ``P(y=1) = sigmoid(offset + a + b x)`` for many weightings at once.

    Newton's method on every weighted sample together, each step halved until the
    log-likelihood does not fall. No fit is attempted where no finite maximum exists: a
    sample with a single class, and, for the slope, classes separated along ``x``
    (:func:`_separated`); those are NaN, as is a fit that does not converge.

    Parameters
    ----------
    x, y, offset : ndarray of shape (n,)
    fit_slope : bool
        False: the slope is fixed at 1 (``b`` returned as 1.0) and only ``a`` is fitted.
    weights : ndarray of shape (n_samples, n), optional
        Multiplicity of each row per sample (bootstrap resamples); default one sample of ones.
    start : tuple of float, optional
        Starting ``(a, b)`` (or ``(a,)``), e.g. the fit on the full sample; default zeros.
        The likelihood is concave, so the start changes the iterations, not the answer.

    Returns
    -------
    a, b : ndarray of shape (n_samples,), float64
    """
    from scipy.special import expit, log_expit

    W = np.ones((1, x.size)) if weights is None else np.asarray(weights, dtype=np.float64)  # (I, n)
    n_samples = W.shape[0]
    wpos, wneg = W @ (y == 1.0), W @ (y == 0.0)
    fail = (wpos == 0) | (wneg == 0)
    if fit_slope:
        fail |= _separated(x, y, W)
    k = 2 if fit_slope else 1
    out = np.full((n_samples, k), np.nan)
    active = np.flatnonzero(~fail)
    beta = np.zeros((active.size, k))  # (m, k): a, b
    if start is not None and np.all(np.isfinite(start)):
        beta[:] = np.asarray(start, dtype=np.float64)[:k]
    w = W[active]

    def state(b, w):  # eta, p and log-likelihood of each row of b
        eta = offset[None, :] + b[:, :1]
        if fit_slope:
            eta = eta + b[:, 1:2] * x[None, :]  # (m, n)
        return expit(eta), np.sum(w * (y * eta + log_expit(-eta)), axis=1)

    p, current = state(beta, w)
    for _ in range(max_iter):
        if active.size == 0:
            break
        r, v = w * (y - p), w * p * (1.0 - p)  # (m, n)
        if fit_slope:
            g0, g1 = r.sum(1), r @ x
            h00, h01, h11 = v.sum(1), v @ x, v @ (x * x)
            with np.errstate(invalid="ignore", divide="ignore"):
                det = h00 * h11 - h01 * h01
                step = np.column_stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det])
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                step = (r.sum(1) / v.sum(1))[:, None]
        t = np.ones(active.size)
        p_new, candidate = state(beta + step, w)
        for _ in range(30):
            worse = ~(candidate >= current - 1e-12) & np.all(np.isfinite(step), axis=1)
            if not worse.any():
                break
            t[worse] /= 2.0
            p_new[worse], candidate[worse] = state(beta[worse] + t[worse, None] * step[worse], w[worse])
        moved = t[:, None] * step
        beta = beta + moved
        done = (np.max(np.abs(moved), axis=1) < tol) | (np.abs(candidate - current) < tol * (1.0 + np.abs(current)))
        bad = ~np.all(np.isfinite(beta), axis=1)
        good = done & ~bad & (np.max(np.abs(beta), axis=1) < 1e6)
        out[active[good]] = beta[good]
        keep = ~(done | bad)
        active, beta, w, p, current = active[keep], beta[keep], w[keep], p_new[keep], candidate[keep]
    a = out[:, 0]
    b = out[:, 1] if fit_slope else np.where(np.isnan(a), np.nan, 1.0)
    return a, b


def calibration(y_true, y_score, target_names=None, *, groups=None, n_iterations: int = 0,
                seed: int = 0, interval_targets=None) -> pd.DataFrame:
    """Calibration of every target: Brier score, calibration intercept and slope.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets)
        1.0 positive, 0.0 negative, NaN missing (left out).
    y_score : array-like of shape (n_ecgs, n_targets)
        Predicted probabilities.
    target_names : sequence of str, optional
        Row labels; default ``0 .. n_targets - 1``.
    groups : array-like of shape (n_ecgs,), optional
        Patient id per ECG: the intervals resample patients (:func:`resample_weights`).
    n_iterations : int
        Bootstrap resamples for the intervals of intercept and slope; 0: no intervals.
        With the ``seed`` and ``groups`` of :func:`bootstrap` these are the very
        resamples of its (patient-level) AUROC intervals, drawn again from the seed.
    seed : int
    interval_targets : sequence of str, optional
        The targets that get intervals (default all; NaN for the others). A fit per
        target and resample costs about 1-3 s per target at 1000 resamples of 1,500
        ECGs (2-core CPU under load), so :func:`evaluate_run` asks only for the
        targets the chapter shows.

    Returns
    -------
    DataFrame indexed by target, columns ``n`` (observed labels), ``prevalence``,
    ``mean_score``, ``brier`` (:func:`brier_loss`), ``brier_reference`` (the Brier score
    of always predicting the prevalence, ``prevalence * (1 - prevalence)``),
    ``calibration_intercept`` (``a`` of ``logit P(y) = a + logit(score)``, the slope
    fixed at 1: 0 when the mean prediction is right, > 0 when the model under-predicts),
    ``calibration_slope`` (``b`` of ``logit P(y) = a' + b logit(score)``: 1 ideal, < 1
    predictions too extreme, > 1 too timid). Scores are clipped to [1e-6, 1 - 1e-6]
    before the logit. Intercept and slope are NaN for a target with a single class or
    when the fit does not converge; the slope is also NaN when the classes are
    (quasi-)completely separated along the logit (every positive scores at least as
    high as every negative, or every negative as high as every positive), where no
    finite maximum-likelihood slope exists. With ``n_iterations``: ``intercept_low``,
    ``intercept_high``, ``slope_low``, ``slope_high`` (2.5 and 97.5 percentiles over the
    resamples; NaN where the point estimate is) and ``calibration_n_skipped`` (resamples
    without a finite slope: a single class or separated classes; they are left out;
    -1 for a target without intervals).
    """
    y_true, y_score = as_float_pair(y_true, y_score)
    if y_true.ndim != 2:
        raise ValueError(f"expected arrays of shape (n_ecgs, n_targets); got y_true.shape={y_true.shape}")
    T = y_true.shape[1]
    names = list(range(T)) if target_names is None else list(target_names)
    if len(names) != T:
        raise ValueError(f"target_names has {len(names)} names; y_true has {T} columns")
    weights = None
    if n_iterations > 0:  # (I, n_ecgs), the resamples of bootstrap(..., seed, groups)
        weights = np.stack(list(resample_weights(y_true.shape[0], n_iterations, seed, groups)))
    rows = []
    for t in range(T):
        m = ~np.isnan(y_true[:, t])
        y, p = y_true[m, t], y_score[m, t]
        prevalence = float(y.mean()) if y.size else np.nan
        intercept = slope = slope_intercept = np.nan
        x = _logit(p)
        if 0.0 < prevalence < 1.0:
            intercept = float(_newton_logistic(np.zeros_like(x), y, x, fit_slope=False)[0][0])
            slope_fit = _newton_logistic(x, y, np.zeros_like(x), fit_slope=True)
            slope_intercept, slope = float(slope_fit[0][0]), float(slope_fit[1][0])
        row = {"n": int(y.size), "prevalence": prevalence,
               "mean_score": float(p.mean()) if y.size else np.nan,
               "brier": float(np.mean((p - y) ** 2)) if y.size else np.nan,
               "brier_reference": prevalence * (1.0 - prevalence),
               "calibration_intercept": intercept, "calibration_slope": slope}
        if weights is not None:
            row.update(_calibration_interval(x, y, weights[:, m][:0], np.nan, np.nan, np.nan))
        if weights is not None and (interval_targets is None or names[t] in set(interval_targets)):
            row.update(_calibration_interval(x, y, weights[:, m], intercept, slope_intercept, slope))
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(names, name="target", dtype=object))


def _calibration_interval(x, y, weights, intercept: float, slope_intercept: float, slope: float) -> dict:
    """Percentile intervals of intercept and slope over weighted resamples of one target's rows."""
    out = {"intercept_low": np.nan, "intercept_high": np.nan, "slope_low": np.nan, "slope_high": np.nan,
           "calibration_n_skipped": -1}
    if y.size == 0 or weights.shape[0] == 0:
        return out
    a, _ = _newton_logistic(np.zeros_like(x), y, x, fit_slope=False, weights=weights, start=(intercept,))  # (I,)
    _, b = _newton_logistic(x, y, np.zeros_like(x), fit_slope=True, weights=weights,
                            start=(slope_intercept, slope))  # (I,)
    out["calibration_n_skipped"] = int(np.isnan(b).sum())
    if not np.isnan(intercept) and (~np.isnan(a)).any():
        out["intercept_low"], out["intercept_high"] = np.nanpercentile(a, [2.5, 97.5])
    if not np.isnan(slope) and (~np.isnan(b)).any():
        out["slope_low"], out["slope_high"] = np.nanpercentile(b, [2.5, 97.5])
    return out


def reliability_curve(y_true, y_score, n_bins: int = 10) -> pd.DataFrame:
    """Reliability curve of one target: observed fraction of positives per bin of predicted probability.

    Bins of equal width on [0, 1]; bin k (0-based) holds the scores in (k/n_bins,
    (k+1)/n_bins], the first also 0 (``np.searchsorted`` on the inner edges, as
    ``sklearn.calibration.calibration_curve`` with ``strategy="uniform"``). Empty bins
    are left out.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs,)
        1.0, 0.0 or NaN (left out).
    y_score : array-like of shape (n_ecgs,)
        Probabilities in [0, 1].
    n_bins : int

    Returns
    -------
    DataFrame, one row per non-empty bin: ``bin``, ``mean_predicted``,
    ``fraction_positive``, ``n``.
    """
    y_true, y_score = as_float_pair(y_true, y_score)
    if y_true.ndim != 1:
        raise ValueError(f"expected one target, shape (n_ecgs,); got y_true.shape={y_true.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    m = ~np.isnan(y_true)
    y, p = y_true[m], y_score[m]
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"y_score must lie in [0, 1]; found [{p.min()}, {p.max()}]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    total = np.bincount(ids, minlength=n_bins)
    sums = np.bincount(ids, weights=p, minlength=n_bins)
    pos = np.bincount(ids, weights=y, minlength=n_bins)
    keep = np.flatnonzero(total)
    return pd.DataFrame({"bin": keep, "mean_predicted": sums[keep] / total[keep],
                         "fraction_positive": pos[keep] / total[keep], "n": total[keep]})


def reliability_frame(y_true, y_score, target_names, n_bins: int = 10) -> pd.DataFrame:
    """:func:`reliability_curve` of every target, stacked: ``target`` then its columns."""
    y_true, y_score = as_float_pair(y_true, y_score)
    frames = [reliability_curve(y_true[:, t], y_score[:, t], n_bins).assign(target=name)
              for t, name in enumerate(target_names)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["bin", "mean_predicted", "fraction_positive", "n", "target"])
    return frame[["target", "bin", "mean_predicted", "fraction_positive", "n"]]


# ---------------------------------------------------------------------------- subgroups

#: Age bands of the subgroup analysis, years, [low, high).
AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0.0, 45.0, "<45"), (45.0, 65.0, "45–64"), (65.0, 80.0, "65–79"), (80.0, np.inf, "≥80"))


def subgroup_labels(sex, age, race) -> pd.DataFrame:
    """Subgroup of every ECG by sex, age band (:data:`AGE_BANDS`) and race.

    Parameters
    ----------
    sex : array-like of shape (n_ecgs,)
        1.0 male, 0.0 female, NaN missing (cohort.parquet's coding).
    age : array-like of shape (n_ecgs,)
        Years; NaN missing.
    race : array-like of shape (n_ecgs,)
        Category as in cohort.parquet; None, NaN or "" missing.

    Returns
    -------
    DataFrame with columns ``sex`` ("female", "male"), ``age_band`` and ``race`` (str),
    None where the value is missing.
    """
    sex = np.asarray(sex, dtype=np.float64)
    age = np.asarray(age, dtype=np.float64)
    race = pd.Series(np.asarray(race, dtype=object)).astype("string").str.strip().replace("", pd.NA)
    bad = ~np.isnan(sex) & (sex != 0.0) & (sex != 1.0)
    if bad.any():
        raise ValueError(f"sex must hold 1.0 (male), 0.0 (female) or NaN; found {sex[bad][0]} "
                         f"at ECG row {np.flatnonzero(bad)[0]}")
    band = np.full(age.shape, None, dtype=object)
    for low, high, name in AGE_BANDS:
        band[(age >= low) & (age < high)] = name
    sex_name = np.where(np.isnan(sex), None, np.where(sex == 1.0, "male", "female"))
    return pd.DataFrame({"sex": sex_name.astype(object), "age_band": band,
                         "race": race.astype(object).where(race.notna(), None).to_numpy()})


def headline_targets(results: pd.DataFrame, top: int = 4, task: str = "est") -> list[str]:
    """The ``top`` targets of ``task`` with the highest AUROC: the ones the chapter shows in detail."""
    frame = results.drop(index="macro", errors="ignore")
    frame = frame[frame["task"] == task]
    return list(frame["auroc"].dropna().sort_values(ascending=False, kind="stable").index[:top])


def choose_headline(run, meta: pd.DataFrame, top: int = 4, test_auroc=None) -> pd.DataFrame:
    """The headline targets, chosen on the validation predictions so that the test AUROCs shown are not selected on.

    Choosing the best targets on test and then reporting their test AUROC, calibration
    and subgroups reports the luckiest draws (the winner's curse). The ``top`` estimation
    targets with the highest AUROC on ``RUN/predictions_val.npz`` are chosen instead; only
    a run without that file falls back to ``test_auroc`` (logged, and named in
    ``chosen_on``).

    Parameters
    ----------
    run : Path
        Run folder.
    meta : DataFrame
        Target metadata indexed by name, with a ``task`` column.
    top : int
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
    chosen = headline_targets(frame, top)
    return pd.DataFrame({"target": chosen, "rank": np.arange(1, len(chosen) + 1),
                         "auroc_val": [frame.at[t, "auroc"] if chosen_on == "val" else np.nan for t in chosen],
                         "auroc_test": [test_auroc.get(t, np.nan) for t in chosen], "chosen_on": chosen_on})


def read_headline(path) -> list[str]:
    """The headline targets of ``headline.csv`` (:func:`choose_headline`), best first."""
    return [str(t) for t in _read_csv(path, ["target", "rank", "auroc_val", "auroc_test", "chosen_on"],
                                       "headline").sort_values("rank")["target"]]


#: A subgroup needs at least this many positives and as many negatives for an interval.
#: With fewer, many resamples lack a class and are skipped, and the percentile interval
#: over the rest is narrow because it is conditional on them, not because the AUROC is
#: known (the issue's "Race asian 1.000 (1.000, 1.000) [6/6]").
MIN_CLASS_FOR_INTERVAL = 10


def subgroup_auroc(y_true, y_score, target_names, subgroups: pd.DataFrame, targets=None, *,
                   groups=None, n_iterations: int = N_RESAMPLES, seed: int = 0,
                   progress: bool | None = None) -> pd.DataFrame:
    """AUROC with 95% bootstrap interval of each target within each subgroup.

    Every (subgroup, target) pair is one column of a stacked label matrix (the target's
    labels kept in the subgroup's ECGs, NaN elsewhere), so one :func:`bootstrap` call
    draws the same resamples for all of them, patient-level when ``groups`` is given.
    A resample's subgroup size varies, as it would in a new sample of patients.

    Parameters
    ----------
    y_true, y_score : array-like of shape (n_ecgs, n_targets)
        As for :func:`bootstrap`.
    target_names : sequence of str of length n_targets
    subgroups : DataFrame with n_ecgs rows
        One column per variable (:func:`subgroup_labels`), None where missing; ECGs
        with a missing value are in no subgroup of that variable.
    targets : sequence of str, optional
        The targets to analyse; default all.
    groups : array-like of shape (n_ecgs,), optional
        Patient id per ECG for the patient-level bootstrap.
    n_iterations, seed : int
    progress : bool or None

    Returns
    -------
    DataFrame, one row per (target, variable, subgroup) and a row ``variable="all"``
    per target: ``target``, ``variable``, ``subgroup``, ``n_ecgs`` (observed labels),
    ``n_pos``, ``n_neg``, ``auroc``, ``low``, ``high`` (empty where ``too_few``),
    ``n_skipped`` (resamples in which a class was absent, left out of the interval),
    ``interval`` ("patient" or "ECG"), ``too_few`` (fewer than
    :data:`MIN_CLASS_FOR_INTERVAL` positives or negatives: no interval).
    """
    y_true, y_score = as_float_pair(y_true, y_score)
    names = [str(n) for n in target_names]
    if len(subgroups) != y_true.shape[0]:
        raise ValueError(f"subgroups has {len(subgroups)} rows; y_true has {y_true.shape[0]} ECGs")
    chosen = names if targets is None else list(targets)
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise KeyError(f"targets {unknown} are not among the {len(names)} target names")
    cols = [names.index(t) for t in chosen]
    keys, masks = [], []
    for t in chosen:
        keys.append((t, "all", "all"))
        masks.append(np.ones(y_true.shape[0], dtype=bool))
    for variable in subgroups.columns:
        values = subgroups[variable].to_numpy(dtype=object)
        levels = sorted({v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))},
                        key=lambda v: _level_rank(variable, v))
        for level in levels:
            m = values == level
            for t in chosen:
                keys.append((t, variable, level))
                masks.append(m)
    index = {t: c for t, c in zip(chosen, cols)}
    stacked_y = np.column_stack([np.where(m, y_true[:, index[k[0]]], np.nan) for k, m in zip(keys, masks)])
    stacked_s = np.column_stack([y_score[:, index[k[0]]] for k in keys])
    boot = bootstrap(stacked_y, stacked_s, n_iterations, seed, groups=groups, progress=progress)
    boot = boot.drop(index="macro").reset_index(drop=True)
    frame = pd.DataFrame(keys, columns=["target", "variable", "subgroup"])
    frame["n_ecgs"] = boot["n_pos"] + boot["n_neg"]
    frame = pd.concat([frame, boot[["n_pos", "n_neg", "auroc", "low", "high", "n_skipped"]]], axis=1)
    frame["interval"] = "ECG" if groups is None else "patient"
    frame["too_few"] = (frame["n_pos"] < MIN_CLASS_FOR_INTERVAL) | (frame["n_neg"] < MIN_CLASS_FOR_INTERVAL)
    frame.loc[frame["too_few"], ["low", "high"]] = np.nan
    order = {t: i for i, t in enumerate(chosen)}
    return frame.sort_values("target", key=lambda s: s.map(order), kind="stable", ignore_index=True)


def _level_rank(variable: str, level: str):
    if variable == "age_band":
        names = [name for _, _, name in AGE_BANDS]
        return (names.index(level) if level in names else len(names), level)
    return (0, level)


# ---------------------------------------------------------------------------- run folder


# ---------------------------------------------------------------------------- added value

#: Columns of ``added_value.csv``, in order.
ADDED_VALUE_COLUMNS = ["target", "baseline", "auroc_baseline", "delta", "low", "high", "n_ecgs"]


def paired_bootstrap(y_true, y_score, y_baseline, n_iterations: int = N_RESAMPLES, seed: int = 0, *, groups=None,
                     target_names=None, progress: bool | None = None) -> pd.DataFrame:
    """AUROC of a model minus a baseline's on the same ECGs, per target and macro, with a paired 95% interval.

    Each resample (:func:`resample_weights`: the same draws as :func:`bootstrap` with the
    same ``seed`` and ``groups``) scores both on the same ECGs, and the interval is the 2.5
    and 97.5 percentiles of the differences: the pairing removes what the two share.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets)
        1.0, 0.0, NaN missing.
    y_score : array-like of shape (n_ecgs, n_targets)
        The model's scores, finite where observed.
    y_baseline : array-like of shape (n_ecgs, n_targets)
        The baseline's scores; NaN where the baseline has none (e.g. no earlier value): such
        an ECG is left out of both AUROCs of that target.
    n_iterations, seed : int
    groups : array-like of shape (n_ecgs,), optional
        Patient id per ECG: resample patients (all their ECGs at once).
    target_names : sequence of str, optional
    progress : bool or None

    Returns
    -------
    DataFrame indexed by target plus a final ``macro`` row: ``auroc`` and ``auroc_baseline``
    (on the ECGs both score; macro: means over the targets where both are defined),
    ``delta`` (their difference), ``low``, ``high`` (percentiles of the per-resample
    differences over the resamples in which the target has both classes; macro: of the
    differences of the two macro AUROCs), ``n_ecgs`` (ECGs with a label and a baseline
    score; macro: ECGs with at least one), ``n_skipped`` (resamples with a single class).
    """
    y_true, y_score = as_float_pair(y_true, y_score)
    _, y_baseline = as_float_pair(y_true, y_baseline)
    if y_true.ndim != 2:
        raise ValueError(f"expected arrays of shape (n_ecgs, n_targets); got y_true.shape={y_true.shape}")
    n, T = y_true.shape
    names = list(range(T)) if target_names is None else list(target_names)
    if len(names) != T:
        raise ValueError(f"target_names has {len(names)} names; y_true has {T} columns")
    scored = ~np.isnan(y_baseline)
    y = np.where(scored, y_true, np.nan)  # (n, T): labels of the ECGs both score
    model = sort_targets(y, np.where(scored, y_score, 0.0))
    base = sort_targets(y, np.where(scored, y_baseline, 0.0))
    point_model, point_base = weighted_auroc(model), weighted_auroc(base)
    diffs = np.empty((n_iterations, T + 1))  # (I, T + 1), macro last
    draws = resample_weights(n, n_iterations, seed, groups)
    disable = None if progress is None else not progress
    for i, w in enumerate(progress_bar(draws, total=n_iterations, desc="paired bootstrap", disable=disable,
                                       leave=False)):
        a, b = weighted_auroc(model, w), weighted_auroc(base, w)  # (T,) each, NaN together
        diffs[i, :T] = a - b
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no target defined in this resample
            diffs[i, T] = np.nanmean(a) - np.nanmean(b)
    defined = ~np.isnan(point_model) & ~np.isnan(point_base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(diffs, [2.5, 97.5], axis=0)
        macro_model = np.nanmean(np.where(defined, point_model, np.nan))
        macro_base = np.nanmean(np.where(defined, point_base, np.nan))
    observed = ~np.isnan(y)
    frame = pd.DataFrame({
        "auroc": np.append(point_model, macro_model), "auroc_baseline": np.append(point_base, macro_base),
        "delta": np.append(point_model - point_base, macro_model - macro_base), "low": low, "high": high,
        "n_ecgs": np.append(observed.sum(axis=0), observed.any(axis=1).sum()).astype(np.int64),
        "n_skipped": np.isnan(diffs).sum(axis=0).astype(np.int64),
    }, index=pd.Index([*names, "macro"], name="target", dtype=object))
    return frame


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
        As for :func:`bootstrap`; resamples of patients when ``pred`` has ``subject_id``.

    Returns
    -------
    DataFrame with columns :data:`ADDED_VALUE_COLUMNS`: per baseline (``tabular``,
    ``last_value``; each only when given) one row per target and a ``macro`` row, from
    :func:`paired_bootstrap`: ``auroc_baseline``, ``delta`` (model minus baseline),
    ``low``, ``high``, ``n_ecgs``. The last-value rows cover the ECGs with an earlier
    value only (the model's AUROC there is ``auroc_baseline + delta``).
    """
    names = list(pred["target_names"])
    by_name = {target["name"]: target for target in targets_json.get("targets", [])}
    groups = pred.get("subject_id")
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


def read_predictions(path) -> dict[str, np.ndarray]:
    """Read ``predictions_<split>.npz`` (ARCHITECTURE.md section 5) and check its shapes.

    Returns
    -------
    dict with ``study_id`` (n,) int64, ``target_names`` (T,) str, ``y_true`` (n, T) and
    ``y_score`` (n, T) float32 (NaN in ``y_true`` = missing); and, where the file has
    them (:data:`PATIENT_KEYS`), ``subject_id`` (n,) int64, ``sex`` (n,) float64 (1.0
    male, 0.0 female, NaN), ``age`` (n,) float64 years, ``race`` (n,) str ("" missing).
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
            pred = {k: npz[k] for k in _PREDICTION_KEYS + PATIENT_KEYS if k in npz.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        # numpy names no file: "File is not a zip file", "Object arrays cannot be loaded ..."
        raise ValueError(f"{path}: not a readable predictions file ({type(e).__name__}: {e}); expected the "
                         f"numeric arrays {list(_PREDICTION_KEYS)} that `labecg train` writes") from e
    n, T = pred["study_id"].shape[0], pred["target_names"].shape[0]
    for key in PATIENT_KEYS:
        if key in pred and pred[key].shape != (n,):
            raise ValueError(f"{path}: {key} has shape {pred[key].shape}; expected ({n},) from study_id")
    for key in ("y_true", "y_score"):
        if pred[key].shape != (n, T):
            raise ValueError(f"{path}: {key} has shape {pred[key].shape}; expected ({n}, {T}) "
                             f"from study_id ({n},) and target_names ({T},)")
    pred["target_names"] = pred["target_names"].astype(str)
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
    likewise, ``seed``, ``split``), ``calibration.csv`` (:func:`calibration`),
    ``multiplicity.csv`` (:func:`multiplicity_summary`: per task, targets above the
    threshold by the paper's rule and under the simultaneous intervals of
    :func:`simultaneous_intervals`, whose bounds are in ``results.csv``, ``sim_low`` ...,
    from the same resamples), ``headline.csv`` (:func:`choose_headline`: the ``n_headline`` best estimation targets
    on the validation split), ``calibration.csv`` with patient-level intervals of
    intercept and slope for the headline targets (ECG-level without ``subject_id``),
    ``reliability.csv`` (:func:`reliability_frame`), ``subgroups.csv``
    (:func:`subgroup_auroc` of the headline targets),
    ``table1_estimation.{csv,md}``, ``table2_monitoring.{csv,md}`` and
    ``paper_comparison.csv`` (with a ``difference`` only when ``targets.json`` records
    ``source.synthetic`` false); ``added_value.csv`` (:func:`added_value`) with the
    tabular-only run (``tabular_run_dir``) and the run's ``last_values.parquet``, those
    of the two it has. A predictions file without ``subject_id`` (a run from
    before the patient-level bootstrap) leaves the patient columns NaN and writes no
    ``subgroups.csv``.

    Returns
    -------
    Path
        The ``RUN/evaluation`` (or ``RUN/evaluation_val``) folder.
    """
    run = Path(cfg.run_dir)
    pred = read_predictions(layout.predictions_path(run, cfg.split))
    targets_path = run / layout.TARGETS
    meta = _target_metadata(read_json(targets_path), pred["target_names"], targets_path)
    names = list(pred["target_names"])
    n, T = pred["y_true"].shape
    log.info("bootstrap: %d ECGs x %d targets, %d resamples (seed %d)", n, T, cfg.n_iterations, cfg.seed)
    boot, iterations = bootstrap(pred["y_true"], pred["y_score"], cfg.n_iterations, cfg.seed,
                                 target_names=names, return_iterations=True)
    subject = pred.get("subject_id")
    if subject is not None:
        boot_p, iterations_p = bootstrap(pred["y_true"], pred["y_score"], cfg.n_iterations, cfg.seed,
                                         groups=subject, target_names=names, return_iterations=True)
        patients = _patients_per_target(pred["y_true"], subject)
    else:
        log.warning("%s: no subject_id; the patient-level interval is left empty (retrain to get it)",
                    layout.predictions_path(run, cfg.split))
        boot_p = boot.assign(low=np.nan, high=np.nan)
        iterations_p = np.full_like(iterations, np.nan)
        patients = np.full(T + 1, -1, dtype=np.int64)
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
    if subject is not None and all(k in pred for k in ("sex", "age", "race")):
        labels = subgroup_labels(pred["sex"], pred["age"], pred["race"])
        sub = subgroup_auroc(pred["y_true"], pred["y_score"], names, labels,
                             list(headline["target"]), groups=subject,
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
    """Read ``calibration.csv`` back (:func:`calibration` with a ``target`` column)."""
    return _read_csv(path, ["target", "n", "prevalence", "mean_score", "brier", "brier_reference",
                            "calibration_intercept", "calibration_slope"], "calibration")


def read_reliability(path) -> pd.DataFrame:
    """Read ``reliability.csv`` back (:func:`reliability_frame`)."""
    return _read_csv(path, ["target", "bin", "mean_predicted", "fraction_positive", "n"], "reliability")


def read_subgroups(path) -> pd.DataFrame:
    """Read ``subgroups.csv`` back (:func:`subgroup_auroc`); written only for runs with patient ids."""
    frame = _read_csv(path, ["target", "variable", "subgroup", "n_ecgs", "n_pos", "n_neg", "auroc", "low",
                             "high", "n_skipped", "interval", "too_few"], "subgroups need subject_id, sex, age, race "
                      "in the predictions")
    return frame.astype({"target": object, "variable": object, "subgroup": object})


def _patients_per_target(y_true, subject) -> np.ndarray:
    """Distinct patients with an observed label, per target, then over all targets (macro)."""
    codes, _ = _group_codes(subject, len(subject))
    observed = ~np.isnan(np.asarray(y_true, dtype=np.float64))
    per_target = [np.unique(codes[observed[:, t]]).size for t in range(observed.shape[1])]
    return np.array([*per_target, np.unique(codes[observed.any(axis=1)]).size], dtype=np.int64)


def assemble_results(boot: pd.DataFrame, meta: pd.DataFrame, auroc_threshold: float = 0.7, *,
                     boot_patient: pd.DataFrame | None = None, n_patients=None,
                     calib: pd.DataFrame | None = None, auprc=None, simultaneous: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """Join bootstrap rows with target metadata, the significance rule, and the extra analyses.

    Parameters
    ----------
    boot : DataFrame
        From :func:`bootstrap`, indexed by target name, ending with ``macro``.
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
        From :func:`calibration`; its ``brier`` becomes a column (NaN for macro).
    auprc : array-like of shape (n_targets,), optional
        :func:`labecg.metrics.average_precision` per target; macro: the mean over the
        targets where it is defined. NaN without it.
    simultaneous : DataFrame, optional
        Indexed by target: ``sim_low``, ``sim_high``, ``sim_low_patient``,
        ``sim_high_patient`` (:func:`simultaneous_intervals`); NaN without it.

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


def simultaneous_intervals(point, iterations, groups, level: float = 0.95) -> tuple[pd.DataFrame, dict]:
    """Simultaneous intervals for all targets of a group at once: the bootstrap max-statistic method.

    The paper holds each of about 500 targets to 0.70 with its own 95% interval, so
    some pass by chance. Within a group (a task), let ``se_t`` be the standard deviation
    of target t's bootstrap AUROCs and ``M_i = max_t |AUROC_it - AUROC_t| / se_t`` the
    largest standardised deviation in resample i; ``c`` is the ``level`` quantile of
    ``M``, and target t's interval is ``AUROC_t ± c se_t``, clipped to [0, 1]. All
    intervals of the group then cover their true AUROCs together in about ``level`` of
    samples (a sup-t band; Romano & Wolf, 2005; Montiel Olea & Plagborg-Møller, 2019).
    The resamples are those already drawn (``bootstrap_iterations.npz``); a resample
    skipped for a target (single class) leaves it out of that resample's maximum.

    Parameters
    ----------
    point : array-like of shape (n_targets,)
        AUROC on the full set.
    iterations : array-like of shape (n_iterations, n_targets)
        AUROC per resample, NaN where skipped.
    groups : array-like of shape (n_targets,)
        Group (task) of each target; the maximum runs within a group.
    level : float

    Returns
    -------
    intervals : DataFrame with ``n_targets`` rows (in input order): ``low``, ``high``; NaN
        for a target with an undefined AUROC or no spread over the resamples (``se_t`` 0
        or undefined), which is left out of its group's maximum.
    critical : dict
        Group -> ``c`` (NaN for a group with no target to hold).
    """
    point = np.asarray(point, dtype=np.float64)
    its = np.asarray(iterations, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    if its.ndim != 2 or its.shape[1] != point.size or groups.shape != point.shape:
        raise ValueError(f"expected point (T,), iterations (I, T), groups (T,); got point.shape={point.shape}, "
                         f"iterations.shape={its.shape}, groups.shape={groups.shape}")
    low, high = np.full(point.size, np.nan), np.full(point.size, np.nan)
    critical = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns and resamples
        se = np.nanstd(its, axis=0, ddof=1)  # (T,)
        for g in dict.fromkeys(groups):
            cols = np.flatnonzero((groups == g) & np.isfinite(point) & np.isfinite(se) & (se > 0))
            if cols.size == 0:
                critical[g] = np.nan
                continue
            z = np.abs(its[:, cols] - point[cols]) / se[cols]  # (I, k)
            m = np.nanmax(z, axis=1)  # (I,)
            c = float(np.quantile(m[~np.isnan(m)], level)) if (~np.isnan(m)).any() else np.nan
            critical[g] = c
            low[cols] = np.clip(point[cols] - c * se[cols], 0.0, 1.0)
            high[cols] = np.clip(point[cols] + c * se[cols], 0.0, 1.0)
    return pd.DataFrame({"low": low, "high": high}), critical


def multiplicity_summary(results: pd.DataFrame, critical: dict, critical_patient: dict,
                         auroc_threshold: float = 0.7, level: float = 0.95) -> pd.DataFrame:
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


def compare_variants(evaluation_dirs: dict, auroc_threshold: float = 0.7) -> pd.DataFrame:
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
    (paired patient-level bootstrap; ECG-level for runs without patient ids; NaN for
    the reference).
    """
    rows, reference = [], None
    for variant, folder in evaluation_dirs.items():
        folder = Path(folder)
        res = read_results(folder / layout.RESULTS)
        with np.load(folder / layout.BOOTSTRAP, allow_pickle=False) as npz:
            its = npz["auroc_patient"] if "auroc_patient" in npz.files else np.full_like(npz["auroc"], np.nan)
            if np.isnan(its[:, -1]).all():
                its = npz["auroc"]
            macro_its, seed, split = its[:, -1], int(npz["seed"]), str(npz["split"])
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
            lo, hi = np.nanpercentile(diff, [2.5, 97.5])
            row.update(difference=macro["auroc"] - ref_auroc, difference_low=lo, difference_high=hi)
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")
