"""The value columns of the cohort (``<lab>_value_est``, ``<lab>_value_mon{h}``): windows worked by hand, and
every value of the shipped MIMIC demo against the slow pandas reference (``reference/cohort_rules.closest_within``
over the rows cleaned by ``reference/cohort_baseline.clean_labs``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mimic_fixtures as mf
from labecg import layout, sources
from labecg.cohort import CohortConfig, build_cohort
from labecg.targets import HORIZONS_MIN
from labecg.util import read_json
from reference import cohort_rules as rules

T = pd.Timestamp("2150-01-01 12:00:00")
K = 50971
NAN = np.nan
DEMO = layout.MIMIC_DEMO_ROOT
HOSP, ED, ECG = (sources.source_paths(DEMO)[k] for k in ("hosp", "ed", "ecg"))  # the one layout reader
BASELINE = Path(__file__).resolve().parent / "reference" / "cohort_baseline.py"


def ts(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


# potassium rows (subject, minutes after the ECG at T, value); bounds 3.5-5.0 on every row.
# Windows (tolerance 15): est [-60, 60]; mon30 [15, 45]; mon60 [45, 75]; mon120 [105, 135].
K_ROWS = [
    (1, -50, 4.1), (1, 40, 4.2),        # est: 40 beats 50 -> 4.2; mon30: +40 is 10 from +30 -> 4.2
    (2, 15, 3.0), (2, 45, 5.0),         # est: +15 -> 3.0; mon30: both 15 from +30, earlier wins -> 3.0;
                                        # mon60: +45 on the edge -> 5.0
    (3, 104, 2.0), (3, 135, 6.0),       # mon120: +135 on the edge -> 6.0, +104 outside; nothing else
    (4, 30, 3.4), (4, 30, 4.6),         # same charttime: the higher labevent_id (the second) -> 4.6
    (5, -61, 3.2), (5, 76, 5.5),        # est: -61 outside; mon60: +76 outside; mon120: outside
    (6, 60, 5.1), (6, 100, 4.0),        # est: +60 edge -> 5.1; mon60: +60 exact -> 5.1; mon120: +100 outside
]
# subject -> (est, mon30, mon60, mon120)
EXPECTED = {1: (4.2, 4.2, NAN, NAN), 2: (3.0, 3.0, 5.0, NAN), 3: (NAN, NAN, NAN, 6.0), 4: (4.6, 4.6, NAN, NAN),
            5: (NAN, NAN, NAN, NAN), 6: (5.1, NAN, 5.1, NAN)}
# with tolerance 5: mon30 [25, 35], mon60 [55, 65], mon120 [115, 125]
EXPECTED_TOL5 = {1: (4.2, NAN, NAN, NAN), 2: (3.0, NAN, NAN, NAN), 3: (NAN, NAN, NAN, NAN),
                 4: (4.6, 4.6, NAN, NAN), 5: (NAN, NAN, NAN, NAN), 6: (5.1, NAN, 5.1, NAN)}
COLUMNS = ["potassium_value_est", "potassium_value_mon30", "potassium_value_mon60", "potassium_value_mon120"]


def _build(tmp, **kw):
    subjects = sorted({r[0] for r in K_ROWS})
    tables = {"patients": pd.DataFrame({"subject_id": subjects, "gender": "M", "anchor_age": 60}),
              "labevents": mf.labs([(s, K, ts(T + pd.Timedelta(minutes=dt)), v, "mEq/L", 3.5, 5.0)
                                    for s, dt, v in K_ROWS]),
              "d_labitems": pd.DataFrame({"itemid": [K], "label": ["Potassium"], "fluid": ["Blood"],
                                          "category": ["Chemistry"]}),
              "record_list": mf.ecgs([(s, 40000000 + s, ts(T)) for s in subjects])}
    root = mf.write_tree(tmp / "src", **tables)
    res = build_cohort(CohortConfig(**{**mf.sources(root), "ecg_icd": None}, cohort_dir=tmp / "out", min_lab_events=1,
                                    min_per_class=0, unlisted_ecgs="assign", drop_ecgs_without_targets=False,
                                    threads=1, **kw))
    return res, pd.read_parquet(res.cohort).set_index("subject_id")


@pytest.mark.parametrize("tolerance, expected", [(15, EXPECTED), (5, EXPECTED_TOL5)])
def test_value_windows_worked_by_hand(tmp_path, tolerance, expected):
    res, df = _build(tmp_path, value_tolerance_min=tolerance)
    for subject, want in expected.items():
        np.testing.assert_array_equal(df.loc[subject, COLUMNS].to_numpy(np.float64), np.asarray(want),
                                      err_msg=f"tolerance {tolerance}, subject {subject}")
    spec = read_json(res.targets)
    values = {v["name"]: v for v in spec["values"]}
    assert list(values) == COLUMNS and values["potassium_value_mon60"]["window_min"] == [60 - tolerance,
                                                                                         60 + tolerance]
    assert values["potassium_value_est"]["unit"] == "mEq/L" and spec["config"]["value_tolerance_min"] == tolerance
    # the value columns follow the targets; the targets are what they were
    targets = [t["name"] for t in spec["targets"]]
    assert list(df.columns[-len(targets) - len(COLUMNS):]) == targets + COLUMNS
    # the estimation value is the row the estimation label used: 3.0 is low, 5.1 high, 4.2 and 4.6 normal
    assert df.loc[2, "potassium_low_est"] == 1.0 and df.loc[6, "potassium_high_est"] == 1.0
    assert df.loc[[1, 4], ["potassium_low_est", "potassium_high_est"]].eq(0.0).all().all()


def test_value_tolerance_is_checked(tmp_path):
    for bad in (-1, min(HORIZONS_MIN)):
        with pytest.raises(ValueError, match="value_tolerance_min"):
            CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, cohort_dir=tmp_path, unlisted_ecgs="assign",
                         value_tolerance_min=bad)


def test_demo_values_equal_the_pandas_reference(tmp_path):
    spec = importlib.util.spec_from_file_location("cohort_baseline", BASELINE)
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    res = build_cohort(CohortConfig(hosp=HOSP, ed=ED, ecg=ECG, ecg_icd=None, cohort_dir=tmp_path / "demo",
                                    unlisted_ecgs="assign", min_per_class=0, drop_ecgs_without_targets=False,
                                    threads=1))
    df = pd.read_parquet(res.cohort)
    values = read_json(res.targets)["values"]
    anchors = df[["subject_id", "ecg_time"]]
    labs, _ = baseline.clean_labs(HOSP, set(df["subject_id"]), 200)
    n_values = 0
    for v in values:
        rows = labs[labs["label"] == v["label"]]
        start, end = v["window_min"]
        centre, half = pd.Timedelta(minutes=(start + end) / 2), pd.Timedelta(minutes=(end - start) / 2)
        want = rules.closest_within(rows, anchors.assign(ecg_time=anchors["ecg_time"] + centre), "valuenum", half,
                                    tie_cols=(("labevent_id", False),))
        np.testing.assert_array_equal(df[v["name"]].to_numpy(np.float64), want.to_numpy(np.float64),
                                      err_msg=v["name"])
        n_values += int(want.notna().sum())
    assert len(values) >= 4 * 40 and n_values > 5000
