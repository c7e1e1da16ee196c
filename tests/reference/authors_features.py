"""The authors' per-ECG race and biometrics rules, stated in plain pandas to count where ours differ.

Re-stated from reading AI4HealthUOL/CardioLab ``src/preprocessing.py`` (not copied): race is
the first row per subject of ``admissions`` then ``edstays`` concatenated in file order,
mapped by substring (a subject in neither has no race); a biometric is the row whose
``chartdate`` (a date, read as midnight) is closest to the ECG's timestamp among rows with
``ecg_time - 30 days <= chartdate <= ecg_time + 30 days``, ties in the order of a stable sort
(numpy's default sort is stable for the few rows of one patient, so file order decides).
``ours_biometrics`` states our rule the same way (calendar days; ties: the earlier date, then
the lower ``seq_num``, then the smaller value), and records which row each rule picked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: omr result_name -> (feature, factor to our unit, plausible if > or >= low, <= high)
_BIO = {"BMI (kg/m2)": ("bmi", 1.0), "Weight (Lbs)": ("weight", 0.453592), "Height (Inches)": ("height", 2.54)}
_PLAUSIBLE = {"bmi": (0.0, 100.0), "weight": (20.0, 400.0), "height": (60.0, 400.0)}


def _map(race):
    if not isinstance(race, str):
        return None
    for key in ("WHITE", "BLACK", "HISPANIC", "ASIAN"):
        if key in race:
            return key.lower()
    return "other"


def authors_race(hosp: Path, ed: Path) -> dict:
    """subject_id -> race by the authors' rule (first row in file order, admissions before edstays)."""
    adm = pd.read_csv(Path(hosp) / "admissions.csv.gz", usecols=["subject_id", "race"])
    eds = pd.read_csv(Path(ed) / "edstays.csv.gz", usecols=["subject_id", "race"])
    both = pd.concat([adm, eds]).drop_duplicates("subject_id")
    return {int(s): _map(r) for s, r in zip(both["subject_id"], both["race"])}


def biometric_rows(hosp: Path) -> pd.DataFrame:
    """omr BMI, weight and height rows that both rules read: numeric, converted, plausible."""
    omr = pd.read_csv(Path(hosp) / "omr.csv.gz")
    omr = omr[omr["result_name"].isin(list(_BIO))].copy()
    omr["x"] = pd.to_numeric(omr["result_value"], errors="coerce")
    omr = omr.dropna(subset=["x"])
    omr["feature"] = omr["result_name"].map(lambda n: _BIO[n][0])
    omr["y"] = omr["x"] * omr["result_name"].map(lambda n: _BIO[n][1])
    low = omr["feature"].map(lambda f: _PLAUSIBLE[f][0])
    high = omr["feature"].map(lambda f: _PLAUSIBLE[f][1])
    ok = np.where(omr["feature"] == "bmi", omr["y"] > low, omr["y"] >= low) & (omr["y"] <= high)
    omr = omr[ok].copy()
    omr["chartdate"] = pd.to_datetime(omr["chartdate"])
    omr["file_order"] = np.arange(len(omr))
    return omr


def authors_biometrics(rows: pd.DataFrame, ecgs: pd.DataFrame, window_days: int = 30) -> pd.DataFrame:
    """Per ECG (``ecgs``: subject_id, ecg_time) and feature: the authors' pick.

    Returns
    -------
    DataFrame with row (position in ``ecgs``), feature, value (NaN: none), file_order (of the
    picked omr row; -1: none), days (its chartdate minus the ECG's date, whole days).
    """
    out = []
    by_subject = dict(tuple(rows.groupby("subject_id")))
    for i, (s, t) in enumerate(zip(ecgs["subject_id"], ecgs["ecg_time"])):
        mine = by_subject.get(s)
        for f in ("bmi", "weight", "height"):
            pick = (np.nan, -1, np.nan)
            if mine is not None:
                w = mine[(mine["feature"] == f) & (mine["chartdate"] >= t - pd.Timedelta(days=window_days))
                         & (mine["chartdate"] <= t + pd.Timedelta(days=window_days))]
                if len(w):
                    j = np.argsort((w["chartdate"] - t).abs().to_numpy(), kind="stable")[0]
                    pick = (w["y"].iloc[j], w["file_order"].iloc[j], (w["chartdate"].iloc[j] - t.normalize()).days)
            out.append((i, f, *pick))
    return pd.DataFrame(out, columns=["row", "feature", "value", "file_order", "days"])


def ours_biometrics(rows: pd.DataFrame, ecgs: pd.DataFrame, window_days: int = 30) -> pd.DataFrame:
    """Per ECG and feature: our pick (calendar days; ties earlier date, lower seq_num, smaller value).

    Returns the columns of :func:`authors_biometrics`.
    """
    out = []
    by_subject = dict(tuple(rows.groupby("subject_id")))
    for i, (s, t) in enumerate(zip(ecgs["subject_id"], ecgs["ecg_time"])):
        mine = by_subject.get(s)
        day = t.normalize()
        for f in ("bmi", "weight", "height"):
            pick = (np.nan, -1, np.nan)
            if mine is not None:
                w = mine[mine["feature"] == f].copy()
                w["days"] = (w["chartdate"] - day).dt.days
                w = w[w["days"].abs() <= window_days]
                if len(w):
                    w = w.assign(a=w["days"].abs()).sort_values(["a", "chartdate", "seq_num", "y"])
                    pick = (w["y"].iloc[0], w["file_order"].iloc[0], w["days"].iloc[0])
            out.append((i, f, *pick))
    return pd.DataFrame(out, columns=["row", "feature", "value", "file_order", "days"])


#: Why the authors' pick and ours differ, in the order the rules are applied.
CAUSES = ("edge", "equal_days", "later_day", "same_day")


def difference_causes(theirs: pd.DataFrame, ours: pd.DataFrame) -> pd.Series:
    """Per (ECG, feature) cell whose value differs: which rule made the difference.

    ``edge``: ours is a row dated exactly ``window_days`` before, which the authors' midnight
    comparison drops; ``equal_days``: rows k days before and after, ours the earlier, theirs
    the later; ``later_day``: theirs a later day that the midnight comparison puts closer
    (the next day over the ECG's own day when the ECG is after noon; 11 days after over 10
    before); ``same_day``: both on one day, different rows (ours the lower seq_num, theirs
    the first in sort order).
    """
    m = theirs.merge(ours, on=["row", "feature"], suffixes=("_a", "_o"))
    m = m[~np.isclose(m["value_a"], m["value_o"], equal_nan=True)]
    cause = np.select([m["value_a"].isna() & (m["days_o"] == -30),
                       (m["days_o"] < 0) & (m["days_a"] == -m["days_o"]),
                       m["days_a"] > m["days_o"],
                       m["days_o"] == m["days_a"]], list(CAUSES), default="other")
    return pd.Series(cause, index=pd.MultiIndex.from_arrays([m["row"], m["feature"]]))
