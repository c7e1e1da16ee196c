"""Hand-worked cases for every rule of labecg.cohort (expected values worked out by hand)."""

from __future__ import annotations

import json
import os
import logging

import numpy as np
import pandas as pd
import pytest

import mimic_fixtures as mf
from labecg import cohort, features, labels
from labecg.cohort import CohortConfig, build_cohort
from reference import cohort_rules as rules

T = pd.Timestamp("2150-01-01 12:00:00")
K, NA, GLU, GLU_U, MCHC, CA = 50971, 50983, 50931, 51478, 51249, 50893
D_LAB = pd.DataFrame({"itemid": [K, NA, GLU, GLU_U, MCHC, CA],
                      "label": ["Potassium", "Sodium", "Glucose", "Glucose", "MCHC", "Calcium, Total"],
                      "fluid": ["Blood", "Blood", "Blood", "Urine", "Blood", "Blood"],
                      "category": "Chemistry"})


def ts(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def m(n):
    return pd.Timedelta(minutes=n)


def s(n):
    return pd.Timedelta(seconds=n)


def k(subject, when, value):
    return (subject, K, ts(when), value, "mEq/L", 3.5, 5.0)


LAB_ROWS = [
    k(1, T - m(60), 6.0),            # exactly -60 min: in
    k(2, T - m(60) - s(1), 6.0),     # one second before the window
    k(3, T + m(60), 3.0),            # exactly +60 min: in
    k(4, T + m(60) + s(1), 3.0),     # outside estimation, inside mon120 only
    k(5, T - s(1), 3.0), k(5, T + m(30), 6.0),       # before the ECG: est only; exactly +30: mon30
    k(6, T - m(10), 3.0), k(6, T + m(10), 6.0),      # equally close: the earlier wins
    k(7, T + m(5), 3.0), k(7, T + m(5), 6.0),        # same charttime: the higher labevent_id wins
    k(8, T + m(20), 3.0), k(8, T + m(100), 6.0),     # low then high: mon120 has both -> missing
    k(10, T, 4.0),                                   # normal
    k(99, T, 9.0),                                   # a patient without ECG: filtered at the scan
    # sodium: lower medians (130, 133, 135, 140) -> 134; upper (145, 145, 150, 150) -> 147.5
    (11, NA, ts(T), 140.0, "mEq/L", 130, 145), (11, NA, ts(T + pd.Timedelta(days=5)), 147.6, "mEq/L", 133, 145),
    (11, NA, ts(T + pd.Timedelta(days=10)), 134.0, "mEq/L", 135, 150),
    (11, NA, ts(T + pd.Timedelta(days=15)), 133.9, "mEq/L", 140, 150),
    # glucose: Blood 3 rows beats Urine 2 rows; the urine row at the ECG is ignored
    (12, GLU_U, ts(T), 500.0, "mg/dL", 0, 15), (12, GLU_U, ts(T + m(1)), 500.0, "mg/dL", 0, 15),
    (12, GLU, ts(T + m(30)), 90.0, "mg/dL", 70, 100), (12, GLU, ts(T + pd.Timedelta(days=9)), 250.0, "mg/dL", 70, 100),
    (12, GLU, ts(T + pd.Timedelta(days=9)), 50.0, "mg/dL", 70, 100),
    # MCHC: 'g/dL' x3 is the unit; '%' x2 is the same quantity, kept
    (13, MCHC, ts(T), 30.0, "%", 31, 37), (13, MCHC, ts(T + pd.Timedelta(days=3)), 38.0, "%", 31, 37),
    (13, MCHC, ts(T + pd.Timedelta(days=3)), 33.0, "g/dL", 31, 37),
    (13, MCHC, ts(T + pd.Timedelta(days=3)), 33.0, "g/dL", 31, 37),
    (13, MCHC, ts(T + pd.Timedelta(days=3)), 38.0, "g/dL", 31, 37),
    # calcium: 'mg/dL' x3; one 'mmol/L' row (another quantity) is dropped
    (14, CA, ts(T), 2.2, "mmol/L", 8.4, 10.3), (14, CA, ts(T + m(40)), 9.0, "mg/dL", 8.4, 10.3),
    (14, CA, ts(T + pd.Timedelta(days=4)), 7.0, "mg/dL", 8.4, 10.3),
    (14, CA, ts(T + pd.Timedelta(days=4)), 11.0, "mg/dL", 8.4, 10.3),
]
ECG_ROWS = [(sid, 40000000 + sid, ts(T)) for sid in range(1, 17)] + [
    (11, 40000111, ts(T + pd.Timedelta(days=5))), (11, 40000112, ts(T + pd.Timedelta(days=10))),
    (11, 40000113, ts(T + pd.Timedelta(days=15))), (10, 40000110, ts(T + pd.Timedelta(days=1)))]


def vital(subject, when, **v):
    return {"subject_id": subject, "charttime": ts(when), **v}


VITAL_ROWS = pd.DataFrame([
    vital(15, T + m(10), temperature=200.0, o2sat=97.0),               # implausible temperature
    vital(15, T - m(20), temperature=98.0, heartrate=80.0, o2sat=95.0),
    vital(15, T + m(30), heartrate=70.0, sbp=120.0, dbp=75.0),          # exactly +30 min: in
    vital(15, T - m(30), dbp=70.0),                                     # tie with +30: earlier wins
    vital(15, T - m(31), resprate=16.0),                                # outside
])
OMR_ROWS = pd.DataFrame({
    "subject_id": [15, 15, 15, 15, 15, 15],
    "chartdate": [(T - pd.Timedelta(days=30)).date(), (T + pd.Timedelta(days=31)).date(), T.date(), T.date(),
                  (T - pd.Timedelta(days=10)).date(), T.date()],
    "seq_num": [1, 1, 1, 2, 1, 3],
    "result_name": ["Weight (Lbs)", "Weight (Lbs)", "Height (Inches)", "BMI (kg/m2)", "BMI (kg/m2)", "BMI (kg/m2)"],
    "result_value": ["150", "160", "70", "150", "24.5", "abc"]})


def base_tables() -> dict:
    subjects = list(range(1, 17))
    return {
        "patients": pd.DataFrame({"subject_id": subjects, "gender": ["M", "M", "F"] + ["M"] * 13,
                                  "anchor_age": [50 + i for i in subjects]}),
        "admissions": pd.DataFrame({"subject_id": [15, 15, 1], "admittime": ["2149-05-01 00:00:00",
                                                                             "2148-01-01 00:00:00",
                                                                             "2149-01-01 00:00:00"],
                                    "race": ["WHITE", "BLACK/AFRICAN AMERICAN", "UNKNOWN"]}),
        "edstays": pd.DataFrame({"subject_id": [16], "intime": ["2149-01-01 00:00:00"],
                                 "race": ["HISPANIC/LATINO - PUERTO RICAN"]}),
        "labevents": mf.labs(LAB_ROWS), "d_labitems": D_LAB, "vitalsign": VITAL_ROWS, "omr": OMR_ROWS,
        "record_list": mf.ecgs(ECG_ROWS),
        "records_w_diag_icd10": pd.DataFrame({"study_id": [r[1] for r in ECG_ROWS if r[1] != 40000110],
                                              "subject_id": [r[0] for r in ECG_ROWS if r[1] != 40000110],
                                              "strat_fold": [r[0] % 20 for r in ECG_ROWS if r[1] != 40000110]}),
    }


def build(tmp_path, tables=None, **kw):
    root = mf.write_tree(tmp_path / "src", **(tables or base_tables()))
    # the rules of these cases are checked on every ECG: the earlier fold and row policies
    kw = {"min_lab_events": 1, "min_per_class": 0, "unlisted_ecgs": "assign", "drop_ecgs_without_targets": False,
          **kw}
    cfg = CohortConfig(**mf.sources(root), cohort_dir=tmp_path / "out", **kw)
    res = build_cohort(cfg)
    return res, pd.read_parquet(res.cohort).set_index("study_id", drop=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("hand"))


def val(df, subject, col, study=None):
    return df.loc[study or 40000000 + subject, col]


def nan(x):
    return bool(np.isnan(x))


def test_estimation_window_edges_are_closed(built):
    _, df = built
    assert val(df, 1, "potassium_high_est") == 1.0 and val(df, 1, "potassium_low_est") == 0.0
    assert nan(val(df, 2, "potassium_high_est")) and nan(val(df, 2, "potassium_low_est"))
    assert val(df, 3, "potassium_low_est") == 1.0
    assert nan(val(df, 4, "potassium_low_est"))


def test_monitoring_window_edges_are_closed(built):
    _, df = built
    # subject 4: a low 60 min + 1 s ahead: outside mon60, inside mon120
    assert nan(val(df, 4, "potassium_low_mon30")) and nan(val(df, 4, "potassium_low_mon60"))
    assert val(df, 4, "potassium_low_mon120") == 1.0 and val(df, 4, "potassium_high_mon120") == 0.0
    # subject 5: low 1 s before the ECG is estimation only; high exactly 30 min ahead is in mon30
    assert val(df, 5, "potassium_low_est") == 1.0
    assert val(df, 5, "potassium_high_mon30") == 1.0 and val(df, 5, "potassium_low_mon30") == 0.0
    # subject 1: a lab 60 min before the ECG does not enter monitoring
    assert nan(val(df, 1, "potassium_high_mon120"))


def test_ties_earlier_charttime_then_higher_labevent_id(built):
    _, df = built
    assert val(df, 6, "potassium_low_est") == 1.0 and val(df, 6, "potassium_high_est") == 0.0
    assert val(df, 7, "potassium_high_est") == 1.0 and val(df, 7, "potassium_low_est") == 0.0


def test_both_directions_in_window_make_monitoring_missing(built):
    _, df = built
    assert nan(val(df, 7, "potassium_low_mon30")) and nan(val(df, 7, "potassium_high_mon30"))
    assert val(df, 8, "potassium_low_mon60") == 1.0 and val(df, 8, "potassium_high_mon60") == 0.0
    assert nan(val(df, 8, "potassium_low_mon120")) and nan(val(df, 8, "potassium_high_mon120"))
    assert val(df, 10, "potassium_low_mon30") == 0.0 and val(df, 10, "potassium_high_mon30") == 0.0


def test_threshold_medians(built):
    res, df = built
    t = {x["name"]: x for x in json.loads(res.targets.read_text())["targets"]}
    assert t["sodium_low_est"]["threshold"] == 134.0 and t["sodium_high_est"]["threshold"] == 147.5
    assert t["potassium_high_mon60"]["threshold"] == 5.0 and t["potassium_high_mon60"]["horizon_min"] == 60
    assert [val(df, 11, "sodium_low_est", s_) for s_ in (40000011, 40000111, 40000112, 40000113)] == [0, 0, 0, 1]
    assert [val(df, 11, "sodium_high_est", s_) for s_ in (40000011, 40000111, 40000112, 40000113)] == [0, 1, 0, 0]
    np.testing.assert_array_equal(rules.classify_values([133.9, 134, 147.5, 147.6], 134, 147.5), [-1, 0, 0, 1])
    thr = rules.lab_thresholds(pd.DataFrame({"label": ["a"] * 4, "ref_range_lower": [130, 133, 135, 140],
                                              "ref_range_upper": [145, 145, 150, np.nan]}))
    assert thr.loc["a", "lower"] == 134 and thr.loc["a", "upper"] == 145


def test_weighted_median_is_the_median_of_the_repeated_values():
    import duckdb
    assert labels.weighted_median(np.array([3.0, 1.0]), np.array([1, 1])) == 2.0
    assert labels.weighted_median(np.array([10.0, 1.0, 3.0]), np.array([1, 2, 1])) == 2.0  # 1 1 3 10
    assert labels.weighted_median(np.array([10.0, 1.0, 3.0]), np.array([1, 2, 2])) == 3.0  # 1 1 3 3 10
    assert np.isnan(labels.weighted_median(np.array([5.0]), np.array([0])))
    rng = np.random.default_rng(7)
    con = duckdb.connect()
    for _ in range(300):
        values = rng.normal(4, 2, size=rng.integers(1, 8)).round(int(rng.integers(0, 4)))
        if rng.random() < 0.3:  # bounds whose halves are not exact decimals
            values = rng.random(len(values)) * 10.0 ** int(rng.integers(-3, 6))
        counts = rng.integers(0, 5, size=len(values))
        repeated = pd.DataFrame({"v": np.repeat(values, counts)})
        got = labels.weighted_median(values, counts)
        if repeated.empty:
            assert np.isnan(got)
            continue
        assert got == np.median(repeated["v"])
        assert got == con.execute("SELECT median(v) FROM repeated").fetchone()[0]  # what the bounds were before


def test_fluid_choice_and_unit_harmonization(built):
    res, df = built
    t = {x["name"]: x for x in json.loads(res.targets.read_text())["targets"]}
    g = t["glucose_high_est"]
    assert g["fluid"] == "Blood" and g["itemids"] == [GLU]
    assert val(df, 12, "glucose_high_est") == 0.0  # the urine 500 at the ECG is not Blood
    assert t["mchc_low_est"]["unit"] == "g/dL" and val(df, 13, "mchc_low_est") == 1.0  # the '%' row counts
    assert t["calcium_total_low_est"]["unit"] == "mg/dL"
    assert val(df, 14, "calcium_total_low_est") == 0.0  # the mmol/L row is dropped
    flow = pd.read_csv(res.flow).set_index("step")
    assert flow.loc["labevents: most frequent fluid per label", "dropped"] == 2
    assert flow.loc["labevents: unit harmonized", "dropped"] == 1
    assert labels.same_quantity("MCHC", "%", "g/dL") and labels.same_quantity("Glucose", "mg/dl", "mg/dL")
    assert not labels.same_quantity("Calcium, Total", "mmol/L", "mg/dL")
    assert not labels.same_quantity("Potassium", "%", "g/dL")
    fl = labels.choose_fluid(pd.DataFrame({"label": ["a", "a", "b", "b"], "fluid": ["Urine", "Blood", "X", "Blood"],
                                           "n": [3, 2, 2, 2]}))
    assert fl.to_dict() == {"a": "Urine", "b": "Blood"}


def test_vitals_closest_plausible_non_missing(built):
    _, df = built
    row = df.loc[40000015]
    assert row["temperature"] == 98.0  # 200 °F at +10 min is implausible
    assert row["heartrate"] == 80.0 and row["o2sat"] == 97.0
    assert np.isnan(row["resprate"])   # 31 min away
    assert row["sbp"] == 120.0         # exactly +30 min
    assert row["dbp"] == 70.0          # -30 and +30 tie: the earlier
    assert df.loc[40000016, VITALS_COLS].isna().all()


VITALS_COLS = ["temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp"]


def test_biometrics_units_window_and_bounds(built):
    res, df = built
    row = df.loc[40000015]
    assert row["weight"] == pytest.approx(150 * 0.453592)  # exactly 30 days before; 31 days after excluded
    assert row["height"] == pytest.approx(70 * 2.54)
    assert row["bmi"] == 24.5                            # 150 is implausible, 'abc' not a number
    flow = pd.read_csv(res.flow).set_index("step")
    assert flow.loc["omr: numeric biometric rows", "dropped"] == 1
    assert flow.loc["omr: plausible biometrics", "dropped"] == 1


def test_demographics(built):
    _, df = built
    assert df.loc[40000015, "race"] == "black"    # earliest admission
    assert df.loc[40000016, "race"] == "hispanic"  # edstays when no admission
    assert df.loc[40000001, "race"] == "other"  # UNKNOWN is other, as the authors
    assert pd.isna(df.loc[40000002, "race"])  # no race recorded: missing, as the authors
    assert df.loc[40000003, "sex"] == 0.0 and df.loc[40000001, "sex"] == 1.0
    assert df.loc[40000003, "age"] == 53.0
    assert [features.map_race(r) for r in ("ASIAN - CHINESE", "WHITE - RUSSIAN", None, "PORTUGUESE")] == \
        ["asian", "white", None, "other"]


def test_layout_order_and_metadata(built):
    res, df = built
    cols = list(df.columns)
    assert cols[:5] == ["subject_id", "study_id", "ecg_time", "path", "fold"]
    assert cols[5:17] == ["sex", "age", "race"] + VITALS_COLS + ["bmi", "weight", "height"]
    tj = json.loads(res.targets.read_text())
    n_targets = len(tj["targets"])
    assert cols[17:17 + n_targets] == [t["name"] for t in tj["targets"]]
    # then the value columns, four per lab with a target, in the order of targets.json's values
    assert cols[17 + n_targets:] == [v["name"] for v in tj["values"]]
    assert len(tj["values"]) == 4 * len({t["lab"] for t in tj["targets"]})
    assert all(df[c].dtype == np.float32 for c in cols[17:17 + n_targets])
    assert all(df[c].dtype == np.float64 for c in cols[17 + n_targets:])
    assert all(df[c].dtype == np.float64 for c in cols[5:17] if c != "race")
    assert df["subject_id"].dtype == np.int64 and df["fold"].dtype == np.int64
    # the dtypes pandas wrote before DuckDB did (#26): microsecond times, strings read back as str
    assert str(df["ecg_time"].dtype) == "datetime64[us]" and df["study_id"].dtype == np.int64
    assert str(df["path"].dtype) == str(df["race"].dtype) == "str"
    assert df.loc[40000016, "race"] == "hispanic" and df.loc[40000001, "path"] == "files/p0/p1/s40000001/40000001"
    assert list(df.index) == sorted(df.index, key=lambda s: (df.loc[s, "subject_id"], df.loc[s, "ecg_time"], s))
    key = list(zip(df["subject_id"], df["ecg_time"], df["study_id"]))
    assert key == sorted(key)
    assert tj["source"]["synthetic"] is False and tj["version"] == 1
    t = next(x for x in tj["targets"] if x["name"] == "potassium_high_est")
    assert t["category"] == "Me." and t["lab"] == "potassium" and t["horizon_min"] is None
    sel = df["fold"] < 18
    assert t["counts"]["train"]["pos"] == int((df.loc[sel, "potassium_high_est"] == 1).sum())
    assert tj["summary"]["n_ecgs"] == 20 and tj["summary"]["n_patients"] == 16
    flow = pd.read_csv(res.flow)
    assert list(flow.columns) == ["step", "rows_in", "rows_out", "dropped", "reason"]
    assert (flow["dropped"] == flow["rows_in"] - flow["rows_out"]).all()
    d = cohort.describe_cohort(res.cohort.parent)
    assert d.loc["ECGs", "paper"] == 795546 and d.loc["ECGs", "ours"] == 20


def test_ecgs_without_labs_and_folds_of_unlisted_ecgs(built):
    res, df = built
    assert df.loc[40000009, [c for c in df.columns if c.startswith("potassium")]].isna().all()
    flow = pd.read_csv(res.flow).set_index("step")
    assert flow.loc["labels: ECGs whose patient has lab rows", "dropped"] == 3  # subjects 9, 15, 16
    assert flow.loc["labevents: patients with an ECG", "dropped"] == 1  # subject 99
    assert df.loc[40000110, "fold"] == df.loc[40000010, "fold"] == 10  # unlisted ECG of a listed patient


def test_per_split_count_filter():
    # targets: a passes (2 pos, 2 neg in val and test); b has only 1 test positive; c lacks val negatives
    fold = np.array([0, 18, 18, 18, 18, 19, 19, 19, 19])
    y = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, np.nan],
                  [1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    counts = cohort.split_counts(y, fold)
    assert counts["val"]["pos"].tolist() == [2, 2, 3] and counts["test"]["pos"].tolist() == [2, 1, 2]
    assert counts["train"]["pos"].tolist() == [1, 1, 1]
    assert cohort.keep_targets(counts, 2).tolist() == [True, False, False]
    assert cohort.keep_targets(counts, 1).tolist() == [True, True, False]


def test_per_split_filter_end_to_end(tmp_path):
    # only subjects with fold 18 or 19 count: none here (folds are subject % 20 for 1..16),
    # so no target survives, which is an error that says so rather than an empty cohort (#11)
    with pytest.raises(ValueError, match="0 targets: .*no candidate has even one positive and one negative"):
        build(tmp_path, min_per_class=1)


def test_assign_folds_patient_level():
    rng = np.random.default_rng(0)
    n = 400
    ecgs = pd.DataFrame({"subject_id": np.repeat(np.arange(n), 2), "study_id": np.arange(2 * n),
                         "sex": np.repeat(rng.integers(0, 2, n).astype(float), 2),
                         "age": np.repeat(rng.integers(18, 90, n).astype(float), 2)})
    # patients 0-9 listed by their first ECG only; patient 10 in folds 5, 3 and (a study not in record_list) 5
    listed = pd.DataFrame({"study_id": list(range(0, 20, 2)) + [20, 21],
                           "subject_id": list(range(10)) + [10, 10], "strat_fold": [7] * 10 + [5, 3]})
    listed = pd.concat([listed, pd.DataFrame({"study_id": [999], "subject_id": [10], "strat_fold": [5]})])
    fold, c = cohort.assign_folds(ecgs, listed, seed=1)
    assert (fold[ecgs["subject_id"] < 10] == 7).all()        # unlisted second ECGs take the patient's fold
    assert (fold[ecgs["subject_id"] == 10] == 5).all()       # most frequent listed fold
    assert ecgs.assign(f=fold).groupby("subject_id")["f"].nunique().max() == 1
    assert c["n_unlisted_patients"] == n - 11 and c["n_patients_with_conflicting_folds"] == 1
    per_fold = ecgs.assign(f=fold)[ecgs["subject_id"] > 10].drop_duplicates("subject_id")["f"].value_counts()
    assert per_fold.reindex(range(20), fill_value=0).between(19, 20).all()  # 389 patients / 20 folds
    strata = ecgs.assign(f=fold, m=ecgs["sex"])[ecgs["subject_id"] > 10].drop_duplicates("subject_id")
    for _, g in strata.groupby("m"):  # each sex spread over all folds within one patient
        cnt = g["f"].value_counts().reindex(range(20), fill_value=0)
        assert cnt.max() - cnt.min() <= 1
    fold2, _ = cohort.assign_folds(ecgs, listed, seed=1)
    fold3, _ = cohort.assign_folds(ecgs, listed, seed=2)
    assert fold.equals(fold2) and not fold.equals(fold3)


def test_closest_within_reference_function():
    ev = pd.DataFrame({"subject_id": [1, 1, 1], "charttime": [T - m(5), T + m(5), T + m(6)], "x": [1.0, 2.0, 3.0]})
    an = pd.DataFrame({"subject_id": [1, 2], "ecg_time": [T, T]})
    got = rules.closest_within(ev, an, "x", m(5))
    assert got.iloc[0] == 1.0 and np.isnan(got.iloc[1])


def test_production_labels_equal_the_pandas_rules(built):
    # build_cohort's SQL against the pandas reference (tests/reference/cohort_rules.py) on the
    # hand-worked potassium rows: every window edge and tie case above, every ECG
    _, df = built
    labs = mf.labs(LAB_ROWS)
    pot = labs[(labs["itemid"] == K) & labs["subject_id"].isin(df["subject_id"])]
    pot = pot.assign(label="Potassium", charttime=pd.to_datetime(pot["charttime"]))
    thr = rules.lab_thresholds(pot).loc["Potassium"]
    pot = pot.assign(cls=rules.classify_values(pot["valuenum"], thr["lower"], thr["upper"]))
    anchors = df[["subject_id", "ecg_time"]]
    est = rules.label_estimation(pot, anchors, 60)
    for direction, cls in (("low", -1), ("high", 1)):
        np.testing.assert_array_equal(df[f"potassium_{direction}_est"].to_numpy(float),
                                      np.where(est.isna(), np.nan, (est == cls).astype(float)), err_msg=direction)
    for h in (30, 60, 120):
        mon = rules.label_monitoring(pot, anchors, h)
        for direction in ("low", "high"):
            np.testing.assert_array_equal(df[f"potassium_{direction}_mon{h}"].to_numpy(float),
                                          mon[direction].to_numpy(float), err_msg=f"{direction} mon{h}")
    assert est.notna().sum() >= 6  # the comparison is not vacuous

# ------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    root = mf.write_tree(tmp_path / "src", **base_tables())
    (root / "mimiciv" / "hosp" / "omr.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="omr.csv.gz"):
        build_cohort(CohortConfig(**mf.sources(root), cohort_dir=tmp_path / "out"))


def test_renamed_column(tmp_path):
    root = mf.write_tree(tmp_path / "src", **base_tables())
    cols = list(mf.COLUMNS["labevents"])
    cols[cols.index("valuenum")] = "value_num"
    mf.write_table(root, "labevents", mf.labs(LAB_ROWS), columns=cols)
    with pytest.raises(KeyError, match=r"labevents.csv.gz: missing columns \['valuenum'\]"):
        build_cohort(CohortConfig(**mf.sources(root), cohort_dir=tmp_path / "out"))


def test_unparseable_ecg_time(tmp_path):
    t = base_tables()
    t["record_list"].loc[3, "ecg_time"] = "2150-13-45 99:00:00"
    with pytest.raises(ValueError, match=r"record_list.csv: column 'ecg_time' line 5"):
        build(tmp_path, t)


def test_non_numeric_and_bad_timestamps_in_labevents_are_counted(tmp_path, caplog):
    t = base_tables()
    t["labevents"] = t["labevents"].astype({"valuenum": object, "charttime": object})
    t["labevents"].loc[0, "valuenum"] = "six"       # subject 1's only lab
    t["labevents"].loc[2, "charttime"] = "yesterday"  # subject 3's only lab
    with caplog.at_level(logging.WARNING, logger="labecg"):
        res, df = build(tmp_path, t)
    assert "column 'valuenum'" in caplog.text and "column 'charttime'" in caplog.text
    flow = pd.read_csv(res.flow).set_index("step")
    assert flow.loc["read labevents.csv.gz", "dropped"] == 2
    assert nan(val(df, 1, "potassium_high_est")) and nan(val(df, 3, "potassium_low_est"))


def test_empty_tables(tmp_path):
    t = base_tables()
    t["labevents"] = t["labevents"].iloc[:0]
    with pytest.raises(ValueError, match="labevents.csv.gz: no lab rows"):
        build(tmp_path / "a", t)
    t = base_tables()
    t["record_list"] = t["record_list"].iloc[:0]
    with pytest.raises(ValueError, match="record_list.csv: no ECG rows"):
        build(tmp_path / "b", t)
    t = base_tables()  # empty vitals and omr are usable: features missing
    t["vitalsign"], t["omr"] = None, None
    _, df = build(tmp_path / "c", t)
    assert df[VITALS_COLS + ["bmi", "weight", "height"]].isna().all().all()


def test_duplicate_rows(tmp_path):
    res, _ = build(tmp_path / "base", base_tables())
    base_flow = pd.read_csv(res.flow).set_index("step")
    t = base_tables()
    t["record_list"] = pd.concat([t["record_list"], t["record_list"].iloc[[0]]])
    t["labevents"] = pd.concat([t["labevents"], t["labevents"].iloc[[0, 1]]])
    res, df = build(tmp_path / "a", t)
    flow = pd.read_csv(res.flow).set_index("step")
    assert flow.loc["record_list: duplicate rows", "dropped"] == 1
    assert flow.loc["labevents: duplicate labevent_id", "dropped"] == 2
    assert len(df) == 20 and val(df, 1, "potassium_high_est") == 1.0
    # an id repeated only by an unusable row (no valuenum): no usable row repeats, none dropped as one
    t = base_tables()
    t["labevents"] = pd.concat([t["labevents"], t["labevents"].iloc[[0]].assign(valuenum=np.nan)])
    res, _ = build(tmp_path / "c", t)
    flow = pd.read_csv(res.flow).set_index("step")
    assert flow.loc["labevents: duplicate labevent_id", "dropped"] == 0
    assert flow.loc["labevents: valuenum and charttime", "dropped"] == 1 + base_flow.loc["labevents: valuenum and charttime", "dropped"]
    t = base_tables()
    t["record_list"].loc[1, "study_id"] = t["record_list"].loc[0, "study_id"]
    with pytest.raises(ValueError, match="record_list.csv: column 'study_id' repeats"):
        build(tmp_path / "b", t)


def test_a_repeated_id_keeps_the_same_row_whatever_the_file_order(tmp_path):
    """Copies of an id with the same time and value: the smaller bounds win, wherever the copy lies."""
    for where in ("first", "last"):
        t = base_tables()
        copy = t["labevents"].iloc[[0]].assign(ref_range_upper=7.0)  # 6.0 would be normal against it
        t["labevents"] = pd.concat([copy, t["labevents"]] if where == "first" else [t["labevents"], copy])
        res, df = build(tmp_path / where, t, thresholds="row")
        flow = pd.read_csv(res.flow).set_index("step")
        assert flow.loc["labevents: duplicate labevent_id", "dropped"] == 1
        assert val(df, 1, "potassium_high_est") == 1.0, where  # the row with upper bound 5.0 was kept


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="unlisted_ecgs"):
        CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, ecg_icd=tmp_path, cohort_dir=tmp_path, unlisted_ecgs="x")
    with pytest.raises(ValueError, match="min_per_class"):
        CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, ecg_icd=tmp_path, cohort_dir=tmp_path, min_per_class=-1)


def test_memory_limit_is_a_share_or_an_amount():
    assert CohortConfig.memory_limit == "40%"  # a share of the machine, not a constant (#26)
    assert cohort.memory_limit_bytes("40%", 16 * 10**9) == 6_400_000_000
    assert cohort.memory_limit_bytes("6GB", 1) == 6 * 10**9 and cohort.memory_limit_bytes("6GiB", 1) == 6 * 2**30
    assert cohort.memory_limit_bytes("512MB", 1) == 512 * 10**6
    with pytest.raises(ValueError, match="cannot read 'lots'"):
        cohort.memory_limit_bytes("lots", 10**9)
    with pytest.raises(ValueError, match="between 0% and 100%"):
        cohort.memory_limit_bytes("150%", 10**9)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < cohort.machine_memory() <= physical


def test_too_little_memory_says_what_to_set(tmp_path):
    # full MIMIC (1.55M ECGs) on 16 GB: 40% is 6.4 GB for DuckDB; in Python 0.5 GB + 1.55M x 300 B + one
    # row group of cohort.parquet, 32768 ECGs x 500 columns x 17 B = 0.5 + 0.465 + 0.279 = 1.24 GB
    assert cohort.check_memory("40%", 1_550_000, 16 * 10**9) == 6_400_000_000
    with pytest.raises(ValueError, match=r"'16GB' gives DuckDB 16.0 GB on this machine of 16.0 GB.*"
                                         r"Python 1.2 GB .*set --memory-limit 11.8GB"):  # 0.8 x (16 - 1.24)
        cohort.check_memory("16GB", 1_550_000, 16 * 10**9)  # the old default, killed on a 16 GB machine
    # 1.1 GB for DuckDB + 0.5 + 1000 x 300 B + 0.279 GB
    with pytest.raises(ValueError, match=r"this machine has 1.2 GB; .* needs at least 1.9 GB .*more memory"):
        cohort.check_memory("40%", 1000, 12 * 10**8)
    with pytest.raises(ValueError, match="set --memory-limit") as e:
        build(tmp_path, memory_limit="0.0001%")
    assert "\n" not in str(e.value)


def test_flow_log_names_the_limit_and_the_spill_folder(tmp_path, caplog):
    with caplog.at_level("INFO", logger="labecg.cohort"):
        build(tmp_path, memory_limit="2GB")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("memory_limit"))
    assert line.startswith("memory_limit 1.86 GiB for DuckDB (2GB of this machine's ")
    assert f"spills to {tmp_path / 'out'}/.scratch_" in line
    assert not list((tmp_path / "out").glob(".scratch_*"))  # the scratch folder goes with the stage
    assert "time per step: ECGs" in caplog.text


def test_lab_parts_cover_every_row_once():
    import duckdb
    con = duckdb.connect()
    # rows per label: 0 -> 50, 1 -> 30, 2 -> 40, 4 -> 100 (label 3 has none), over 37 patients
    con.execute("CREATE TABLE lab AS SELECT label_idx, (row_number() OVER ()) % 37 AS subject_id FROM "
                "(SELECT unnest(list_concat(repeat([0], 50), repeat([1], 30), repeat([2], 40), repeat([4], 100))) "
                "AS label_idx)")
    con.execute("CREATE TABLE ecg AS SELECT subject_id FROM lab")  # the patient cuts come from the ECGs
    assert labels.lab_parts(con, None) == [("true", "true")]
    assert labels.lab_parts(con, 220) == [("true", "true")]  # it fits
    # 220 rows: 4 patient groups; labels in groups of at most 220 / 3 rows unless one label is more:
    # 50 (+ 30 would be 80), 30 + 40 = 70 (+ 100 would be 170), 100
    parts = labels.lab_parts(con, 60)
    assert [p[0] for p in parts[::4]] == ["label_idx BETWEEN 0 AND 0", "label_idx BETWEEN 1 AND 2",
                                          "label_idx BETWEEN 4 AND 4"]
    assert len(parts) == 12 and len({p[1] for p in parts}) == 4
    # subject_id of ECGs 1..220 is row % 37: 0 and 36 five times, 1..35 six times; the sorted
    # subject_ids at positions 55, 110, 165 of 220 (quartiles) are 9, 18 and 27
    assert parts[:4] == [("label_idx BETWEEN 0 AND 0", c) for c in
                         ["subject_id <= 9", "subject_id > 9 AND subject_id <= 18",
                          "subject_id > 18 AND subject_id <= 27", "subject_id > 27"]]
    hits = con.execute("SELECT " + " + ".join(f"({lab} AND {pat})::INT" for lab, pat in parts) + " FROM lab").fetchall()
    assert {h for (h,) in hits} == {1}  # every row in exactly one part
    con.execute("DELETE FROM lab")
    assert labels.lab_parts(con, 8) == [("true", "true")]  # empty: one part, the tables are still made
    assert labels.rows_per_part(10 * labels.LAB_ROW_BYTES + 1) == 10 and labels.rows_per_part(0) == 1


def test_a_file_scan_filtered_by_a_table_stays_the_probe_side(tmp_path):
    """The lab scan's patient filter: the table of ECG patients builds the hash table, not the file.

    DuckDB estimates a CSV scan at a handful of rows, so by itself it builds on the scan (at
    158M lab rows: 196 s against 107 s). Read from the plan: a hash join's first child probes,
    its second builds.
    """
    import json
    import duckdb
    from labecg import readers
    path = tmp_path / "labevents.csv"
    path.write_text("subject_id,x\n" + "".join(f"{i % 50},{i}\n" for i in range(2000)))
    con = duckdb.connect()
    con.execute("CREATE TABLE ecg_subjects AS SELECT range AS subject_id FROM range(0, 100000, 2)")
    query = (f"SELECT x FROM {readers.scan_sql(path, ['subject_id', 'x'], {'subject_id': 'BIGINT', 'x': 'BIGINT'})} "
             "WHERE subject_id IN (SELECT subject_id FROM ecg_subjects)")

    def join_children(node):
        if "JOIN" in node.get("name", ""):
            return [child["name"] for child in node["children"]]
        return next((found for child in node.get("children", []) if (found := join_children(child))), None)

    with readers.scan_as_probe_side(con):
        plan = json.loads(con.execute("EXPLAIN (FORMAT json) " + query).fetchall()[0][1])
        rows = sorted(x for (x,) in con.execute(query).fetchall())
    assert join_children(plan[0]) == ["READ_CSV", "SEQ_SCAN"]
    assert rows == [i for i in range(2000) if i % 50 % 2 == 0]  # the even patients' rows, by hand
    assert con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0] == ""  # set back


def test_cohort_in_parts_equals_the_cohort_at_once(synthetic_root, cohort_dir, tmp_path, monkeypatch):
    """Labels and patients a part at a time (what a small memory limit does at full scale) give the same files."""
    from conftest import source_paths
    seen = []
    real = labels.lab_parts

    def parts(con, rows_per_part, **kw):
        seen.append(real(con, rows_per_part, **kw))
        return seen[-1]

    monkeypatch.setattr(labels, "rows_per_part", lambda limit: 300)  # many parts on the small tree
    monkeypatch.setattr(labels, "lab_parts", parts)
    out = tmp_path / "parts"
    build_cohort(CohortConfig(**source_paths(synthetic_root), cohort_dir=out, min_lab_events=20, min_per_class=2))
    assert len(seen) == 2 and all(len(p) > 6 for p in seen)  # the window targets and the last values, in parts
    for name in ("cohort.parquet", "last_values.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(cohort_dir / name))
    pd.testing.assert_frame_equal(pd.read_csv(out / "cohort_flow.csv"), pd.read_csv(cohort_dir / "cohort_flow.csv"))
    got, expected = json.loads((out / "targets.json").read_text()), json.loads((cohort_dir / "targets.json").read_text())
    for doc in (got, expected):
        doc["config"].pop("cohort_dir")
    assert got == expected


def test_last_values_file_is_in_cohort_then_lab_then_cutoff_order(cohort_dir):
    """last_values.parquet's rows: the cohort's ECG order, then the lab slug as text, then the cutoff."""
    last = pd.read_parquet(cohort_dir / "last_values.parquet")
    cohort = pd.read_parquet(cohort_dir / "cohort.parquet", columns=["study_id"])
    assert len(last) > 0 and last["lab"].nunique() > 1
    position = pd.Series(np.arange(len(cohort)), index=cohort["study_id"])
    expected = (last.assign(_pos=position.loc[last["study_id"]].to_numpy())
                .sort_values(["_pos", "lab", "cutoff_min"], kind="stable").drop(columns="_pos"))
    pd.testing.assert_frame_equal(last, expected.reset_index(drop=True))


def _joined_in_duckdb(targets: list[dict]) -> str:
    """The oracle of cohort.parquet: each label's pairs joined to the ECGs in DuckDB, ordered by row_idx."""
    values = cohort.value_columns(targets)
    joins, names = [], []
    for n, label_idx in enumerate(sorted({int(t["_label_idx"]) for t in targets})):
        cols = [f"c{int(t['_col'])} AS \"{t['name']}\"" for t in targets if t["_label_idx"] == label_idx]
        cols += [f"v{cohort.TASKS.index(v['task'])} AS \"{v['name']}\"" for v in values if v["_label_idx"] == label_idx]
        joins.append(f"LEFT JOIN (SELECT row_idx, {', '.join(cols)} FROM {labels.TARGETS_TABLE} "
                     f"WHERE label_idx = {label_idx}) l{n} USING (row_idx)")
    names = ", ".join(f"\"{c['name']}\"" for c in targets + values)
    feats = ", ".join(f"f.\"{f}\"" for f in features.FEATURES)
    return (f"SELECT e.subject_id, e.study_id, make_timestamp(e.t_us) AS ecg_time, f.path, c.fold, {feats}, {names} "
            f"FROM cohort_ecgs c JOIN ecg e USING (row_idx) JOIN ecg_columns f USING (row_idx) {' '.join(joins)} "
            "ORDER BY c.row_idx")


def test_cohort_file_written_in_row_groups_equals_the_duckdb_join(synthetic_root, tmp_path, monkeypatch):
    """cohort.parquet, a row group of 23 ECGs at a time (chunks that cut patients), equals the file
    DuckDB writes by joining each label's pairs to the ECGs: same schema, nullability included, and values."""
    import pyarrow.parquet as pq
    from labecg.sources import source_paths

    real = cohort._write_cohort

    def both(con, path, targets, ecg_columns, chunk_ecgs=None):
        real(con, path, targets, ecg_columns, chunk_ecgs)
        con.register("ecg_columns", ecg_columns)
        con.execute(f"COPY ({_joined_in_duckdb(targets)}) TO '{path.parent / 'oracle.parquet'}' (FORMAT parquet)")

    monkeypatch.setattr(cohort, "COHORT_CHUNK_ECGS", 23)
    monkeypatch.setattr(cohort, "_write_cohort", both)
    build_cohort(CohortConfig(**source_paths(synthetic_root), cohort_dir=tmp_path, min_lab_events=20, min_per_class=2))
    got, oracle = pq.read_table(tmp_path / "cohort.parquet"), pq.read_table(tmp_path / "oracle.parquet")
    assert got.num_rows > 3 * 23 and pq.ParquetFile(tmp_path / "cohort.parquet").metadata.num_row_groups == -(-got.num_rows // 23)
    assert got.schema.remove_metadata().equals(oracle.schema.remove_metadata())
    assert got.column("race").null_count + got.column("sbp").null_count > 0  # NULL features made it through
    pd.testing.assert_frame_equal(got.to_pandas(), oracle.to_pandas())


def test_ordered_arrow_keeps_the_order_by_of_a_parallel_query():
    """cohort.ordered_arrow returns the rows in ORDER BY order on a connection that does not preserve
    insertion order (the cohort stage's), where a plain Arrow fetch of DuckDB 2.0 mixed the sorted batches."""
    import duckdb
    con = duckdb.connect(config={"preserve_insertion_order": False, "threads": 2})
    con.execute("CREATE TABLE t AS SELECT (hash(i) % 1000003)::BIGINT AS x, i FROM range(2000000) r(i)")
    got = cohort.ordered_arrow(con, "SELECT x, i FROM t ORDER BY x, i")
    expected = con.execute("SELECT x, i FROM t").df().sort_values(["x", "i"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got.to_pandas(), expected)
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0] is False


def test_count_repeated_ids_against_pandas():
    """labels.count_repeated_ids (blocks of 64 ids with a bit mask) against pandas on ids with runs, gaps,
    negatives, the BIGINT extremes, NULLs and repeats within and across blocks."""
    import duckdb
    rng = np.random.default_rng(11)
    runs = np.concatenate([np.arange(0, 5000), np.arange(10**9, 10**9 + 300), rng.integers(-10**12, 10**12, 3000),
                           [-2**63, 2**63 - 1, -1, 63, 64, -64, -65]])
    con = duckdb.connect()
    for repeats in (0, 1, 57):
        ids = np.concatenate([runs, rng.choice(runs, repeats), rng.choice(runs[:10], repeats)])
        frame = pd.DataFrame({"labevent_id": pd.array(rng.permutation(ids), dtype="Int64")})
        frame.loc[rng.random(len(frame)) < 0.01, "labevent_id"] = pd.NA
        con.register("ids", frame)
        present = frame["labevent_id"].dropna()
        assert labels.count_repeated_ids(con, "ids") == len(present) - present.nunique()
    assert labels.count_repeated_ids(con, "(SELECT * FROM ids WHERE false)") == 0


def test_keep_ecgs_with_targets_by_hand():
    """An ECG stays when a kept target of it is not missing; a value in a column of a target that was not kept
    (another direction or task of the label) does not keep it."""
    import duckdb
    con = duckdb.connect()
    con.execute("CREATE TABLE split_ecgs AS SELECT * FROM (VALUES (0, 3), (1, 3), (2, 18), (3, 19), (4, 0)) s(row_idx, fold)")
    cols = ", ".join(f"c{j}" for j in range(8))
    con.execute(f"CREATE TABLE {labels.TARGETS_TABLE} AS SELECT * FROM (VALUES "
                "(0, 1, 1.0, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "   # label 1, c0 (kept): stays
                "(1, 1, NULL, NULL, NULL, NULL, NULL, 0.0, NULL, NULL), "   # label 1, c5 only (not kept for 1): goes
                "(2, 2, NULL, NULL, NULL, NULL, NULL, 1.0, NULL, NULL), "   # label 2, c5 (kept for 2): stays
                "(4, 3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), "         # label 3 has no kept target: goes
                f"(9, 1, 1.0, NULL, NULL, NULL, NULL, NULL, NULL, NULL)) t(row_idx, label_idx, {cols})")
    # ECG 3 has no pair; ECG 9 is not in the split
    targets = [{"_label_idx": 1, "_col": 0}, {"_label_idx": 1, "_col": 2}, {"_label_idx": 2, "_col": 5}]
    cohort.keep_ecgs_with_targets(con, targets)
    assert sorted(con.execute("SELECT row_idx, fold FROM cohort_ecgs").fetchall()) == [(0, 3), (2, 18)]


def test_read_ecgs_keeps_identical_rows_once_and_refuses_a_study_with_two_contents(tmp_path):
    from labecg import readers
    path = tmp_path / "record_list.csv"
    rows = ["subject_id,study_id,ecg_time,path",
            "2,20,2150-01-01 10:00:00,files/p2/s20", "1,10,2150-01-01 09:00:00,files/p1/s10",
            "2,20,2150-01-01 10:00:00,files/p2/s20", "1,11,2150-01-01 09:00:00,files/p1/s10",  # another study, same rest
            "2,20,2150-01-01 10:00:00,files/p2/s20"]
    path.write_text("\n".join(rows) + "\n")
    flow = readers.Flow()
    ecgs = readers.read_ecgs(path, rows[0].split(","), flow)
    assert ecgs[["subject_id", "study_id"]].values.tolist() == [[1, 10], [1, 11], [2, 20]]
    assert ecgs["row_idx"].tolist() == [0, 1, 2] and flow.rows[0]["dropped"] == 2
    path.write_text("\n".join(rows + ["2,20,2150-01-01 10:00:00,files/p2/other"]) + "\n")
    with pytest.raises(ValueError, match=r"record_list.csv: column 'study_id' repeats with different contents, "
                                         r"e.g. study 20 \(2 rows\)"):  # after identical rows went
        readers.read_ecgs(path, rows[0].split(","), readers.Flow())


def test_nested_probe_side_blocks_leave_the_setting_to_the_outermost():
    """The optimizer setting is the database's: a block inside one already on (another cursor's) keeps it on."""
    import duckdb
    from labecg import readers
    con = duckdb.connect()
    cursor = con.cursor()
    con.execute("SET disabled_optimizers = 'join_order'")

    def setting(c):
        return sorted(c.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0].split(","))

    with readers.scan_as_probe_side(con):
        assert setting(cursor) == ["build_side_probe_side", "join_order"]
        with readers.scan_as_probe_side(cursor):
            assert setting(cursor) == ["build_side_probe_side", "join_order"]
        assert setting(con) == ["build_side_probe_side", "join_order"]  # still on for the outer block
    assert setting(con) == setting(cursor) == ["join_order"]  # as before


def test_flow_steps_come_in_stage_order(built):
    """cohort_flow.csv: the ECGs, the features, the lab rows, the folds, then the targets, whatever ran beside what."""
    res, _ = built
    steps = pd.read_csv(res.flow)["step"].tolist()
    groups = {"ecgs": ("record_list",),
              "features": ("patients", "race", "read vitalsign", "vitalsign", "read omr", "omr"),
              "labs": ("d_labitems", "read labevents", "labevents", "labels"),
              "folds": ("folds",), "targets": ("targets",)}
    group = [next(g for g, prefixes in groups.items() if s.startswith(prefixes)) for s in steps]
    runs = [g for n, g in enumerate(group) if n == 0 or group[n - 1] != g]
    assert runs == ["ecgs", "features", "labs", "folds", "targets"], steps


def test_an_error_in_the_features_stops_the_labevents_scan_beside_them(tmp_path, monkeypatch):
    """The features fail while the labevents scan runs beside them: their error is raised, the scan is
    interrupted rather than waited for, and the output folder holds no scratch and no cohort."""
    import duckdb
    from labecg import features
    seen = {}

    def endless_scan(con, files, headers, flow):
        try:  # half a minute of work or more unless interrupted
            con.execute("SELECT sum(range % 7) FROM range(10000000000)").fetchall()
        except duckdb.InterruptException:
            seen["interrupted"] = True
            raise
        return 0

    def failing_vitals(*args, **kw):
        raise ValueError("vitalsign.csv.gz: bad")

    monkeypatch.setattr(labels, "scan_labevents", endless_scan)
    monkeypatch.setattr(features, "read_vitals", failing_vitals)
    with pytest.raises(ValueError, match="vitalsign.csv.gz: bad"):
        build(tmp_path)
    assert seen == {"interrupted": True}
    out = tmp_path / "out"
    assert not (out / "cohort.parquet").exists() and not list(out.glob(".scratch_*"))
