"""Evaluation statistics: bootstrap intervals of AUROC, calibration, subgroups, paired and simultaneous intervals.

Pure functions of label and score matrices, shape (n_ecgs, n_targets), NaN labels missing;
:mod:`labecg.evaluate` runs them on a run folder's predictions and writes the files. The
point metrics (masked AUROC, average precision) and the resamples are
:mod:`labecg.metrics`'s; every interval here draws its resamples from
:func:`~labecg.metrics.resample_weights`, so that one ``seed`` (and ``groups``) gives the
same resamples to every statistic.

Statistics (the paper, section 3, and its authors' code, with one flaw fixed):

- AUROC per target, missing labels left out (:func:`labecg.metrics.auroc`).
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
- Paired differences (:func:`paired_bootstrap`) and simultaneous intervals over a task's
  targets (:func:`simultaneous_intervals`, on the resamples already drawn).
- Values (issue #25, :func:`value_bootstrap`): mean absolute error in the lab's unit and
  Spearman correlation of predicted against measured values, with a bootstrap interval of
  the Spearman on the same resamples (patient-level with ``groups``).

A resample is a vector of multiplicities, so its AUROC is a weighted Mann-Whitney
statistic over the scores sorted once (:mod:`labecg.metrics`): no re-sorting and no
loop over targets inside the loop over resamples.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from labecg.metrics import (N_RESAMPLES, as_float_pair, resample_weights, sort_targets, spearman,
                            weighted_auroc)
from labecg.util import progress_bar

#: The intervals' level: 95%, the paper's.
LEVEL = 0.95
#: The percentile interval at :data:`LEVEL` (2.5 and 97.5), rounded so that float error adds no digit.
PERCENTILES = (round(100 * (1 - LEVEL) / 2, 10), round(100 * (1 + LEVEL) / 2, 10))

__all__ = ["bootstrap", "brier_loss", "calibration", "reliability_curve", "reliability_frame",
           "AGE_BANDS", "subgroup_labels", "MIN_CLASS_FOR_INTERVAL", "subgroup_auroc",
           "paired_bootstrap", "simultaneous_intervals", "value_bootstrap"]


# ---------------------------------------------------------------------------- bootstrap


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
        Seed of :func:`~labecg.metrics.resample_weights`.
    groups : array-like of shape (n_ecgs,), optional
        Patient (cluster) id of each ECG. None: resample ECGs (the paper's bootstrap).
        Given: resample patients with replacement and take all their ECGs
        (:func:`~labecg.metrics.resample_weights`).
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
        low, high = np.nanpercentile(iterations, PERCENTILES, axis=0)
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
        Patient id per ECG: the intervals resample patients (:func:`~labecg.metrics.resample_weights`).
    n_iterations : int
        Bootstrap resamples for the intervals of intercept and slope; 0: no intervals.
        With the ``seed`` and ``groups`` of :func:`bootstrap` these are the very
        resamples of its (patient-level) AUROC intervals, drawn again from the seed.
    seed : int
    interval_targets : sequence of str, optional
        The targets that get intervals (default all; NaN for the others). Intervals cost
        a logistic fit per target and resample (``bench/bootstrap.py`` prints the time per
        target), so :func:`labecg.evaluate.evaluate_run` asks only for the targets the
        chapter shows.

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
        out["intercept_low"], out["intercept_high"] = np.nanpercentile(a, PERCENTILES)
    if not np.isnan(slope) and (~np.isnan(b)).any():
        out["slope_low"], out["slope_high"] = np.nanpercentile(b, PERCENTILES)
    return out


#: Equal-width probability bins of a reliability curve (``EvaluateConfig.n_bins``'s default).
N_BINS = 10


def reliability_curve(y_true, y_score, n_bins: int = N_BINS) -> pd.DataFrame:
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


def reliability_frame(y_true, y_score, target_names, n_bins: int = N_BINS) -> pd.DataFrame:
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


# ---------------------------------------------------------------------------- paired and simultaneous intervals


def paired_bootstrap(y_true, y_score, y_baseline, n_iterations: int = N_RESAMPLES, seed: int = 0, *, groups=None,
                     target_names=None, progress: bool | None = None) -> pd.DataFrame:
    """AUROC of a model minus a baseline's on the same ECGs, per target and macro, with a paired 95% interval.

    Each resample (:func:`~labecg.metrics.resample_weights`: the same draws as :func:`bootstrap` with the
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
        low, high = np.nanpercentile(diffs, PERCENTILES, axis=0)
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


def simultaneous_intervals(point, iterations, groups, level: float = LEVEL) -> tuple[pd.DataFrame, dict]:
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


# ---------------------------------------------------------------------------- values


def value_bootstrap(y_true, y_pred, n_iterations: int = N_RESAMPLES, seed: int = 0, *, groups=None,
                    target_names=None, progress: bool | None = None) -> pd.DataFrame:
    """Mean absolute error and Spearman correlation of predicted values, with a bootstrap interval of the Spearman.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_values)
        Measured values in the lab's unit, NaN missing.
    y_pred : array-like of shape (n_ecgs, n_values)
        Predicted values in the same unit, finite where measured.
    n_iterations, seed : int
        Resamples of :func:`~labecg.metrics.resample_weights` (the same draws as
        :func:`bootstrap` with the same ``seed`` and ``groups``).
    groups : array-like of shape (n_ecgs,), optional
        Patient id per ECG: resample patients (all their ECGs at once).
    target_names : sequence of str, optional
    progress : bool or None

    Returns
    -------
    DataFrame indexed by value column: ``n`` (measured), ``mae`` (mean |pred - true| over
    them), ``spearman`` (:func:`~labecg.metrics.spearman`), ``low``, ``high`` (2.5 and 97.5
    percentiles of the Spearman over the resamples, each a sample with repeats: an ECG
    drawn k times counts k times), ``n_skipped`` (resamples in which it is undefined).
    """
    y_true, y_pred = as_float_pair(y_true, y_pred)
    if y_true.ndim != 2:
        raise ValueError(f"expected arrays of shape (n_ecgs, n_values); got y_true.shape={y_true.shape}")
    n, T = y_true.shape
    names = list(range(T)) if target_names is None else list(target_names)
    if len(names) != T:
        raise ValueError(f"target_names has {len(names)} names; y_true has {T} columns")
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")
    seen = ~np.isnan(y_true)
    with np.errstate(invalid="ignore"):
        mae = np.where(seen, np.abs(y_pred - y_true), 0.0).sum(axis=0) / seen.sum(axis=0)
    iterations = np.empty((n_iterations, T))  # (I, T)
    draws = resample_weights(n, n_iterations, seed, groups)
    disable = None if progress is None else not progress
    for i, w in enumerate(progress_bar(draws, total=n_iterations, desc="value bootstrap", disable=disable,
                                       leave=False)):
        rows = np.repeat(np.arange(n), w.astype(np.int64))  # the resample, repeats included
        iterations[i] = spearman(y_true[rows], y_pred[rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: never-defined values
        low, high = np.nanpercentile(iterations, PERCENTILES, axis=0)
    return pd.DataFrame({"n": seen.sum(axis=0).astype(np.int64), "mae": mae, "spearman": spearman(y_true, y_pred),
                         "low": low, "high": high,
                         "n_skipped": np.isnan(iterations).sum(axis=0).astype(np.int64)},
                        index=pd.Index(names, name="target", dtype=object))
