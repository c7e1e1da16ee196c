"""The cohort's labelling rules in plain pandas: the reference the tests hold ``labecg.labels`` to.

``labecg.labels`` computes thresholds, classes and the estimation and monitoring targets in
DuckDB (bucketed joins); these functions state the same rules (its module docstring) one
data frame at a time, slowly, for hand-worked cases. ``cohort_baseline.py`` beside this
file re-implements the whole builder the same way, for the synthetic tree and for
``bench/cohort.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def classify_values(values, lower, upper) -> np.ndarray:
    """Class of lab values against thresholds: -1 low (< lower), +1 high (> upper), 0 normal.

    Parameters
    ----------
    values : array-like of shape (n_rows,), float
    lower, upper : float or array-like of shape (n_rows,)
        Thresholds in the values' unit; NaN means that class cannot occur.

    Returns
    -------
    cls : ndarray of shape (n_rows,), int8
    """
    v = np.asarray(values, dtype=float)
    lo = np.broadcast_to(np.asarray(lower, dtype=float), v.shape)
    hi = np.broadcast_to(np.asarray(upper, dtype=float), v.shape)
    cls = np.zeros(v.shape, dtype=np.int8)
    cls[v < lo] = -1  # NaN compares False
    cls[v > hi] = 1
    return cls


def lab_thresholds(labs: pd.DataFrame) -> pd.DataFrame:
    """Per label the median of ``ref_range_lower`` and of ``ref_range_upper``.

    Parameters
    ----------
    labs : DataFrame with columns label, ref_range_lower, ref_range_upper
        Cleaned lab rows (one fluid and one unit per label).

    Returns
    -------
    DataFrame indexed by label with columns lower, upper (float; NaN when a label has no
    reference bound of that side; medians of an even count average the two middle values).
    """
    g = labs.groupby("label")
    return pd.DataFrame({"lower": g["ref_range_lower"].median(), "upper": g["ref_range_upper"].median()})


def closest_within(events: pd.DataFrame, anchors: pd.DataFrame, value: str, window,
                   time_col: str = "charttime", anchor_time: str = "ecg_time",
                   tie_cols: tuple[tuple[str, bool], ...] = ()) -> pd.Series:
    """For each anchor the value of the closest non-missing event of the same subject.

    Events qualify when ``time_col`` lies in [anchor_time - window, anchor_time + window]
    (closed). Closest = smallest |Δt|; ties: earlier event time, then ``tie_cols`` in order
    (column, ascending?), then the smaller value. Slow reference form (a merge), for tests.

    Returns
    -------
    Series of shape (n_anchors,) aligned to ``anchors.index``, NaN where no event qualifies.
    """
    a = anchors[["subject_id", anchor_time]].reset_index(names="_anchor")
    e = events[events[value].notna()]
    m = a.merge(e, on="subject_id")
    dt = m[time_col] - m[anchor_time]
    m = m[(dt >= -window) & (dt <= window)].assign(_abs=dt.abs())
    by = ["_anchor", "_abs", time_col] + [c for c, _ in tie_cols] + [value]
    asc = [True, True, True] + [a_ for _, a_ in tie_cols] + [True]
    m = m.sort_values(by, ascending=asc).drop_duplicates("_anchor")
    return m.set_index("_anchor")[value].reindex(a["_anchor"]).set_axis(anchors.index)


def label_estimation(labs: pd.DataFrame, anchors: pd.DataFrame, window_min: int = 60) -> pd.Series:
    """Estimation class per anchor from the closest lab row within ± ``window_min``.

    Parameters
    ----------
    labs : DataFrame with columns subject_id, charttime, labevent_id, cls (-1, 0, 1)
        Rows of one label.
    anchors : DataFrame with columns subject_id, ecg_time

    Returns
    -------
    Series aligned to ``anchors.index``: the closest row's class (float), NaN if no row in
    [ecg_time - window, ecg_time + window]; ties: earlier charttime, then higher labevent_id.
    The low target is (cls == -1), the high target (cls == 1), NaN stays NaN.
    """
    return closest_within(labs.assign(cls=labs["cls"].astype(float)), anchors, "cls",
                          pd.Timedelta(minutes=window_min), tie_cols=(("labevent_id", False),))


def label_monitoring(labs: pd.DataFrame, anchors: pd.DataFrame, horizon_min: int) -> pd.DataFrame:
    """Monitoring targets per anchor from the lab rows in [ecg_time, ecg_time + horizon].

    Returns
    -------
    DataFrame aligned to ``anchors.index`` with float columns low, high: NaN if the window
    (closed at both ends) holds no row, or holds both a low and a high row; else 1.0 if it
    holds a row of that direction, else 0.0.
    """
    a = anchors[["subject_id", "ecg_time"]].reset_index(names="_anchor")
    m = a.merge(labs[["subject_id", "charttime", "cls"]], on="subject_id")
    dt = m["charttime"] - m["ecg_time"]
    m = m[(dt >= pd.Timedelta(0)) & (dt <= pd.Timedelta(minutes=horizon_min))]
    g = m.groupby("_anchor")["cls"]
    low = g.apply(lambda c: float((c == -1).any())).reindex(a["_anchor"])
    high = g.apply(lambda c: float((c == 1).any())).reindex(a["_anchor"])
    both = (low == 1) & (high == 1)
    out = pd.DataFrame({"low": low.to_numpy(), "high": high.to_numpy()}, index=anchors.index)
    out.loc[both.to_numpy(), ["low", "high"]] = np.nan
    return out
