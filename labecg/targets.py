"""What a target is: its name, its task and horizon, and its kind (output, loss, metric, significance).

A target is one column of ``cohort.parquet`` and one output of the model, named
``{lab}_{direction}_{task}``: ``lab`` the slug of the laboratory test's label
(:func:`lab_slug`), ``direction`` ``low`` or ``high`` (the value lies below or above the
threshold), ``task`` ``est`` (estimation: a value drawn around the ECG) or ``mon{h}``
(monitoring: a value drawn within ``h`` minutes after it, ``h`` in :data:`HORIZONS_MIN`).
Names are built (:func:`target_name`, :func:`task_name`) and read back (:func:`parse_target`,
:func:`horizon_min`) here and nowhere else.

A target's *kind* (:class:`TargetKind`) says what the model's output for it means: how a logit
becomes a prediction, which losses train it, which metric scores it, the metric of a
prediction that knows nothing, and when a metric's interval counts as significant. Every
target of the paper is :data:`BINARY` (the laboratory value abnormal or not: sigmoid, binary
cross-entropy or focal loss, AUROC, significant when the interval's lower bound exceeds the
threshold, :func:`significant`). A new kind is one more :class:`TargetKind` here plus where
its labels are made and its outputs are scored.

:data:`VALUE` (ours, issue #25, ``labecg train --objective value``, :data:`OBJECTIVES`) is the
laboratory value itself, standardised (:func:`fit_value_scales`, :func:`standardize_values`):
identity output, squared error or Huber loss, Spearman correlation, chance 0.

Imports ``metrics`` (the masked AUROC and Spearman) and, only when a loss or an output is computed, torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np
import pandas as pd

from labecg.metrics import auroc, spearman

#: The paper's monitoring horizons, minutes after the ECG.
HORIZONS_MIN: tuple[int, ...] = (30, 60, 120)
#: The estimation task's name.
ESTIMATION = "est"
_MONITORING = "mon"
#: The directions of a target: the value below (low) or above (high) the threshold.
DIRECTIONS: tuple[str, ...] = ("low", "high")
#: The threshold rules of ``labecg cohort --thresholds``, in the words the pages use: ``median``
#: (the paper's: per label the medians of its rows' reference bounds) and ``row`` (each lab row
#: against its own ``ref_range_lower``/``ref_range_upper``, the label's median where a bound is
#: empty; a target's ``threshold`` is then that median fallback).
THRESHOLD_RULES: dict[str, str] = {"median": "medians of the reference bounds",
                                   "row": "row ranges (median where missing)"}
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def task_name(horizon: Optional[int]) -> str:
    """The task of a horizon: ``est`` for None (estimation), ``mon{h}`` for ``h`` minutes.

    >>> task_name(None), task_name(60)
    ('est', 'mon60')
    """
    return ESTIMATION if horizon is None else f"{_MONITORING}{int(horizon)}"


#: Every task, estimation first, then the monitoring horizons in order.
TASKS: tuple[str, ...] = (task_name(None),) + tuple(task_name(h) for h in HORIZONS_MIN)


def horizon_min(task: str) -> Optional[int]:
    """The horizon of a task in minutes; None for estimation.

    >>> horizon_min("mon120") is None, horizon_min("mon120"), horizon_min("est")
    (False, 120, None)
    """
    if task == ESTIMATION:
        return None
    if not task.startswith(_MONITORING) or not task[len(_MONITORING):].isdigit():
        raise ValueError(f"task {task!r} unknown; expected est or mon<minutes> (e.g. {TASKS[1]})")
    return int(task[len(_MONITORING):])


def is_monitoring(task: str) -> bool:
    """Whether a task looks ahead of the ECG (``mon{h}``)."""
    return horizon_min(task) is not None


def lab_slug(label: str) -> str:
    """Return the target-name stem of a ``d_labitems.label``.

    Lower-cased, every run of characters other than ``a-z0-9`` replaced by one ``_``,
    no leading or trailing ``_``.

    >>> lab_slug("Bilirubin, Total")
    'bilirubin_total'
    >>> lab_slug("INR(PT)")
    'inr_pt'
    """
    return _NON_ALNUM.sub("_", label.lower()).strip("_")


def target_name(label: str, direction: str, task: str) -> str:
    """``"{lab}_{low|high}_{est|mon30|mon60|mon120}"``.

    >>> target_name("Calcium, Total", "low", "mon60")
    'calcium_total_low_mon60'
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'low' or 'high', got {direction!r}")
    if task not in TASKS:
        raise ValueError(f"task must be est, mon30, mon60 or mon120, got {task!r}")
    return f"{lab_slug(label)}_{direction}_{task}"


def parse_target(name: str) -> tuple[str, str, str]:
    """``(lab, direction, task)`` of a target name; the inverse of :func:`target_name`.

    >>> parse_target("calcium_total_low_mon60")
    ('calcium_total', 'low', 'mon60')
    """
    parts = str(name).rsplit("_", 2)
    if len(parts) != 3 or parts[1] not in DIRECTIONS or parts[2] not in TASKS:
        raise ValueError(f"target {name!r}: expected {{lab}}_{{low|high}}_{{{'|'.join(TASKS)}}}")
    return parts[0], parts[1], parts[2]


# ---------------------------------------------------------------------------- kinds

#: The paper's AUROC threshold: a target is significant (and in its tables) when the lower
#: bound of its AUROC interval exceeds it; the default of every ``auroc_threshold``.
AUROC_THRESHOLD = 0.7


def significant(low, threshold: float):
    """The paper's significance rule: the interval's lower bound lies above ``threshold``.

    Parameters
    ----------
    low : Series or array-like of float
        Lower bounds of the metric's intervals (NaN: no interval).
    threshold : float
        The metric's threshold (``auroc_threshold``, :data:`AUROC_THRESHOLD` by default).

    Returns
    -------
    bool Series (same index) or bool ndarray; False where ``low`` is NaN.
    """
    if isinstance(low, pd.Series):
        return low.astype(float).gt(threshold)
    return np.asarray(low, dtype=float) > threshold


def _bce(logits, y, focal_gamma: float):
    """Binary cross-entropy per entry, (B, T); ``focal_gamma`` unused."""
    from torch.nn import functional as F

    return F.binary_cross_entropy_with_logits(logits, y, reduction="none")


def _focal(logits, y, focal_gamma: float):
    """Focal binary cross-entropy per entry: BCE times (1 - p_t)^focal_gamma, p_t the probability of the true class."""
    import torch

    per = _bce(logits, y, focal_gamma)
    p_true = torch.exp(-per)
    return (1.0 - p_true) ** focal_gamma * per


def _sigmoid(logits):
    import torch

    return torch.sigmoid(logits.float())


@dataclass(frozen=True)
class TargetKind:
    """What the model's output for a target means and how it is trained and judged.

    Attributes
    ----------
    name : str
    output : callable
        Logits (tensor (B, T)) -> predictions (float32 tensor (B, T)), e.g. probabilities.
    losses : mapping
        Loss name (``TrainConfig.loss``) -> per-entry loss ``f(logits, y, focal_gamma)``, a
        tensor (B, T) before masking and reduction (``train.masked_loss`` does both).
    metric : callable
        ``(y_true (n, T), y_score (n, T)) -> (T,)`` over observed entries (NaN in ``y_true``
        missing).
    metric_name : str
    chance : float
        The metric of a prediction that knows nothing (the default significance threshold).
    significant : callable
        ``(low, threshold) -> bool``: when a metric's interval counts as significant.
    """

    name: str
    output: Callable
    losses: Mapping[str, Callable] = field(repr=False)
    metric: Callable
    metric_name: str
    chance: float
    significant: Callable = significant


#: The laboratory value abnormal (1) or not (0): every target of the paper.
BINARY = TargetKind(name="binary", output=_sigmoid, losses={"bce": _bce, "focal": _focal}, metric=auroc,
                    metric_name="AUROC", chance=0.5)


def _squared_error(outputs, y, gamma: float):
    """Squared error per entry, (B, T); ``gamma`` unused."""
    return (outputs.float() - y) ** 2


def _huber(outputs, y, gamma: float):
    """Huber loss per entry (quadratic within 1 standard deviation, linear beyond), (B, T); ``gamma`` unused."""
    from torch.nn import functional as F

    return F.huber_loss(outputs.float(), y, reduction="none", delta=1.0)


def _identity(outputs):
    return outputs.float()


#: The laboratory value itself, standardised (:func:`standardize_values`): the value
#: objective of issue #25. Its output is the standardised value (:func:`unstandardize_values`
#: gives the lab's unit back); chance is a Spearman correlation of 0.
VALUE = TargetKind(name="value", output=_identity, losses={"mse": _squared_error, "huber": _huber},
                   metric=spearman, metric_name="Spearman", chance=0.0)
#: Every kind by name.
KINDS: dict[str, TargetKind] = {BINARY.name: BINARY, VALUE.name: VALUE}
#: What ``labecg train --objective`` trains, and the kind of its outputs: ``flag`` the paper's
#: targets (abnormally low or high, :data:`BINARY`), ``value`` one output per value column of the
#: cohort (``<lab>_value_est``, ``<lab>_value_mon{h}``, :data:`VALUE`).
OBJECTIVES: dict[str, TargetKind] = {"flag": BINARY, "value": VALUE}

#: A lab's values are modelled on a log scale when all are positive and their sample skewness
#: exceeds this (and the logarithm's is smaller in size): concentrations such as NT-proBNP,
#: troponin or creatinine span orders of magnitude.
SKEWNESS_FOR_LOG = 1.0


def _skewness(x: np.ndarray) -> float:
    """Sample skewness (the biased moment estimator, ``scipy.stats.skew``'s default)."""
    d = x - x.mean()
    m2 = (d * d).mean()
    return float((d ** 3).mean() / m2 ** 1.5) if m2 > 0 else 0.0


def fit_value_scales(values, names) -> pd.DataFrame:
    """How each value column is standardised, fitted on the rows given (the training folds).

    Parameters
    ----------
    values : array-like of shape (n_ecgs, n_values), float
        Values in the lab's unit, NaN missing.
    names : sequence of str, length n_values
        The columns' names (``labels.value_column``).

    Returns
    -------
    DataFrame indexed by name with columns log (bool: log scale, :data:`SKEWNESS_FOR_LOG`),
    center, scale (mean and standard deviation on that scale; scale 1 where it would be 0
    or undefined), n (observed values), skewness (of the raw values). A column with no
    observed value: log False, center 0, scale 1.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"values must be (n_ecgs, {len(names)}) for names of length {len(names)}; "
                         f"got values.shape={values.shape}")
    rows = []
    for j, name in enumerate(names):
        x = values[~np.isnan(values[:, j]), j]
        skew = _skewness(x) if len(x) else np.nan
        log = bool(len(x) and (x > 0).all() and skew > SKEWNESS_FOR_LOG and abs(_skewness(np.log(x))) < abs(skew))
        z = np.log(x) if log else x
        center = float(z.mean()) if len(z) else 0.0
        scale = float(z.std()) if len(z) > 1 and z.std() > 0 else 1.0
        rows.append({"name": name, "log": log, "center": center, "scale": scale, "n": int(len(x)), "skewness": skew})
    return pd.DataFrame(rows).set_index("name")


def standardize_values(values, scales: pd.DataFrame) -> np.ndarray:
    """Values in the lab's unit -> the model's scale: ``(log(v) or v - center) / scale`` per column.

    Parameters
    ----------
    values : array-like of shape (n_ecgs, n_values), float (NaN stays NaN)
    scales : DataFrame from :func:`fit_value_scales`, one row per column, in order

    Returns
    -------
    ndarray of shape (n_ecgs, n_values), float64
    """
    values = np.asarray(values, dtype=np.float64)
    log = scales["log"].to_numpy(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(log, np.log(values), values)
    return (z - scales["center"].to_numpy(float)) / scales["scale"].to_numpy(float)


def unstandardize_values(z, scales: pd.DataFrame) -> np.ndarray:
    """The inverse of :func:`standardize_values`: the model's scale -> the lab's unit."""
    z = np.asarray(z, dtype=np.float64) * scales["scale"].to_numpy(float) + scales["center"].to_numpy(float)
    return np.where(scales["log"].to_numpy(bool), np.exp(z), z)
