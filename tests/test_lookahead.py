"""Hand-worked cases of the time rules around the ECG: the causal cohort and the last earlier lab value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mimic_fixtures as mf
from labecg import cohort, layout
from labecg.cohort import CohortConfig, build_cohort

T = pd.Timestamp("2150-01-01 12:00:00")
K = 50971


def ts(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def m(n):
    return pd.Timedelta(minutes=n)


def k(subject, when, value):
    return (subject, K, ts(when), value, "mEq/L", 3.5, 5.0)


LAB_ROWS = [
    # subject 1: the last-value lookup (ids in this order: 1, 2, ...)
    k(1, T - pd.Timedelta(days=2), 4.0),
    k(1, T - m(61), 6.0),        # the last one before the estimation window opens (T - 60 min)
    k(1, T - m(60), 3.0),        # exactly at T - 60: inside the estimation window, not before it
    k(1, T - m(10), 5.5), k(1, T - m(10), 3.2),   # same charttime: the higher labevent_id (3.2) wins
    k(1, T, 7.0),                # at the ECG's own time: not before it
    k(1, T + m(5), 2.0),         # after the ECG: ignored
    # subject 2: labs after the ECG only
    k(2, T + m(5), 2.0),
    # subject 3: one lab exactly at the ECG's time (high): monitoring by default, not under causal
    k(3, T, 7.0),
    # subject 4: normal rows for a second class of values
    k(4, T + m(20), 4.0), k(4, T - m(120), 3.0),
    # albumin, alphabetically first, never abnormal: no target, so no last value either
    (1, 50862, ts(T - m(5)), 4.0, "g/dL", 3.5, 5.2),
]
VITAL_ROWS = pd.DataFrame([
    {"subject_id": 1, "charttime": ts(T + m(1)), "heartrate": 90.0},   # after the ECG: dropped when causal
    {"subject_id": 1, "charttime": ts(T - m(20)), "heartrate": 70.0},
    {"subject_id": 1, "charttime": ts(T - m(30)), "sbp": 110.0},       # exactly -30 min: kept either way
    {"subject_id": 2, "charttime": ts(T + m(30)), "sbp": 130.0},       # exactly +30 min: default only
])


def tables() -> dict:
    subjects = [1, 2, 3, 4]
    ecg_rows = [(sid, 40000000 + sid, ts(T)) for sid in subjects]
    return {
        "patients": pd.DataFrame({"subject_id": subjects, "gender": "M", "anchor_age": 60}),
        "labevents": mf.labs(LAB_ROWS),
        "d_labitems": pd.DataFrame({"itemid": [50862, K], "label": ["Albumin", "Potassium"],
                                    "fluid": ["Blood", "Blood"], "category": ["Chemistry", "Chemistry"]}),
        "vitalsign": VITAL_ROWS, "record_list": mf.ecgs(ecg_rows),
        "records_w_diag_icd10": pd.DataFrame({"study_id": [r[1] for r in ecg_rows],
                                              "subject_id": subjects, "strat_fold": [0, 18, 19, 1]}),
    }


def build(tmp_path, **kw):
    root = mf.write_tree(tmp_path / "src", **tables())
    cfg = CohortConfig(**mf.sources(root), cohort_dir=tmp_path / "out", min_lab_events=1, min_per_class=0,
                       drop_ecgs_without_targets=False, **kw)
    res = build_cohort(cfg)
    df = pd.read_parquet(res.cohort).set_index("subject_id")
    last = pd.read_parquet(cfg.cohort_dir / layout.LAST_VALUES)
    return df, last


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return build(tmp_path_factory.mktemp("paper"))


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    return build(tmp_path_factory.mktemp("causal"), causal=True)


def test_vitals_after_the_ecg_are_dropped_only_when_causal(paper, causal):
    df, _ = paper
    assert df.loc[1, "heartrate"] == 90.0 and df.loc[1, "sbp"] == 110.0 and df.loc[2, "sbp"] == 130.0
    df, _ = causal
    assert df.loc[1, "heartrate"] == 70.0  # the +1 min value is gone; the -20 min one is the closest left
    assert df.loc[1, "sbp"] == 110.0       # -30 min: the window's closed lower edge
    assert np.isnan(df.loc[2, "sbp"])      # +30 min: after the ECG


def test_a_lab_at_the_ecg_time_is_monitored_only_by_default(paper, causal):
    df, _ = paper
    assert df.loc[3, "potassium_high_mon30"] == 1.0 and df.loc[3, "potassium_high_est"] == 1.0
    df, _ = causal
    assert np.isnan(df.loc[3, "potassium_high_mon30"]) and np.isnan(df.loc[3, "potassium_high_mon120"])
    assert df.loc[3, "potassium_high_est"] == 1.0  # estimation keeps its closed window
    assert df.loc[4, "potassium_high_mon30"] == 0.0  # +20 min: after the ECG either way


def test_causal_leaves_the_default_rows_alone(paper, causal):
    # the same ECGs, in the same order; only the windows differ
    assert list(paper[0].index) == list(causal[0].index)


def test_last_values_hand_worked(paper, causal):
    _, last = paper
    assert list(last.columns) == list(cohort.LAST_VALUE_COLUMNS)
    got = {(int(r.study_id) - 40000000, int(r.cutoff_min)): (r.lab, r.value, r.age_min) for r in last.itertuples()}
    assert got == {
        (1, 0): ("potassium", 3.2, 10.0),     # the tie at -10 min: the higher labevent_id; T itself excluded
        (1, 60): ("potassium", 6.0, 61.0),    # -60 min is inside the estimation window: -61 min
        (4, 0): ("potassium", 3.0, 120.0), (4, 60): ("potassium", 3.0, 120.0),
    }  # subject 2 (labs after the ECG) and 3 (a lab at the ECG's time only) have none
    pd.testing.assert_frame_equal(last, causal[1])  # the baseline does not depend on the windows of the targets


def test_last_value_cutoff_by_task():
    assert cohort.last_value_cutoff("est", 60) == 60
    assert [cohort.last_value_cutoff(t, 60) for t in ("mon30", "mon60", "mon120")] == [0, 0, 0]


def test_last_lab_values_ties_and_cutoffs_by_hand():
    """labels.last_value_parts on hand-made tables: strict cutoffs, ties by labevent_id (NULL lowest), then value."""
    import duckdb

    from labecg import labels
    m = 60_000_000  # one minute in microseconds
    con = duckdb.connect()
    con.register("ecg_df", pd.DataFrame({"row_idx": [0, 1], "subject_id": [7, 8], "t_us": [1000 * m, 1000 * m]}))
    con.execute("CREATE TABLE ecg AS SELECT * FROM ecg_df")
    rows = [  # subject, label_idx, minutes, labevent_id, value
        (7, 0, 990, 5, 1.0), (7, 0, 990, 9, 2.0),        # same time: labevent_id 9 wins
        (7, 0, 1000, 11, 99.0),                           # at ecg_time: never (strictly before)
        (7, 0, 940, 3, 4.0), (7, 0, 930, 4, 5.0),         # cutoff 60: 940 is exactly t - 60, so 930 (5.0)
        (7, 1, 995, None, 6.0), (7, 1, 995, None, 7.0),   # NULL ids tie: the larger value
        (7, 1, 995, 1, 0.5),                              # ... but any id beats NULL
        (8, 0, 1001, 2, 3.0),                             # only after the ECG: no row
    ]
    con.register("lab_df", pd.DataFrame(rows, columns=["subject_id", "label_idx", "minute", "labevent_id", "valuenum"])
                 .astype({"labevent_id": "Int64"}))
    con.execute(f"CREATE TABLE lab AS SELECT subject_id, label_idx, minute * {m} AS t, labevent_id, valuenum FROM lab_df")
    expected = pd.DataFrame({"row_idx": [0, 0, 0], "label_idx": [0, 0, 1], "cutoff_min": [0, 60, 0],
                             "value": [2.0, 5.0, 0.5], "age_min": [10.0, 70.0, 5.0]})
    for rows_per_part in (None, 1):  # all at once, and one patient at a time
        parts = labels.last_value_parts(con, (0, 60), rows_per_part)
        assert (len(parts) == 1) == (rows_per_part is None)
        got = pd.concat([con.execute(f"SELECT * FROM ({q}) ORDER BY row_idx, label_idx, cutoff_min").df()
                         for q in parts])
        pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)


def test_closest_key_orders_as_distance_time_then_higher_id():
    """labels.closest_key_sql against a Python sort of (|dt - at|, dt, -id, NULL id last), many ties."""
    import duckdb

    from labecg import labels
    rng = np.random.default_rng(3)
    n = 4000
    rows = pd.DataFrame({"g": rng.integers(0, 300, n), "dt": rng.integers(-4, 5, n) * 10,
                         "labevent_id": pd.array(rng.integers(-3, 4, n), dtype="Int64"), "x": np.arange(n)})
    rows.loc[rng.random(n) < 0.2, "labevent_id"] = pd.NA
    con = duckdb.connect()
    con.register("r", rows)
    for at in (0, 20):
        got = dict(con.execute(f"SELECT g, arg_min(x, {labels.closest_key_sql(at)}) FROM r GROUP BY g").fetchall())

        def order(row, at=at):
            missing = pd.isna(row.labevent_id)
            return (abs(row.dt - at), row.dt, missing, 0 if missing else -row.labevent_id)
        expected = {}
        for g, group in rows.groupby("g"):
            best = min(group.itertuples(), key=order)
            # rows equal on the whole order are interchangeable: compare their keys, not which one
            expected[g] = order(best)
        by_x = {row.x: row for row in rows.itertuples()}
        assert {g: order(by_x[x]) for g, x in got.items()} == expected


def test_last_lab_values_match_a_brute_force_search():
    """labels.last_value_parts on random rows with repeated times and missing ids, against a Python scan."""
    import duckdb

    from labecg import labels
    rng = np.random.default_rng(5)
    m = 60_000_000
    ecg = pd.DataFrame({"row_idx": np.arange(60), "subject_id": rng.integers(0, 6, 60), "t_us": rng.integers(0, 20, 60) * m})
    lab = pd.DataFrame({"subject_id": rng.integers(0, 6, 800), "label_idx": rng.integers(0, 4, 800),
                        "t": rng.integers(0, 16, 800) * m, "labevent_id": pd.array(np.arange(800) % 97, dtype="Int64"),
                        "valuenum": rng.integers(0, 5, 800).astype(float)})
    lab = lab.drop_duplicates("labevent_id").reset_index(drop=True)  # ids are unique in lab (label_labs)
    lab.loc[rng.random(len(lab)) < 0.6, "labevent_id"] = pd.NA  # often several at one time
    con = duckdb.connect()
    con.register("ecg_df", ecg)
    con.execute("CREATE TABLE ecg AS SELECT * FROM ecg_df")
    con.register("lab_df", lab)
    con.execute("CREATE TABLE lab AS SELECT * FROM lab_df")
    expected = []
    for e in ecg.itertuples():
        for label_idx in sorted(lab.loc[lab["subject_id"] == e.subject_id, "label_idx"].unique()):
            rows = lab[(lab["subject_id"] == e.subject_id) & (lab["label_idx"] == label_idx)]
            for cutoff in (0, 3):
                before = rows[rows["t"] < e.t_us - cutoff * m]
                if len(before):
                    best = max(before.itertuples(), key=lambda r: (r.t, -1 if pd.isna(r.labevent_id) else r.labevent_id,
                                                                   r.valuenum))
                    expected.append((e.row_idx, label_idx, cutoff, best.valuenum, (e.t_us - best.t) / m))
    expected = pd.DataFrame(expected, columns=["row_idx", "label_idx", "cutoff_min", "value", "age_min"])
    for rows_per_part in (None, 150):
        parts = labels.last_value_parts(con, (0, 3), rows_per_part)
        got = pd.concat([con.execute(f"SELECT * FROM ({q})").df() for q in parts])
        got = got.sort_values(["row_idx", "label_idx", "cutoff_min"])
        assert len(expected) > 100 and (len(parts) == 1) == (rows_per_part is None)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)


def test_last_values_sort_by_lab_text_not_label_index():
    """Rows of one ECG go by the lab slug as text even where label_idx orders the labs otherwise."""
    import duckdb
    con = duckdb.connect()
    con.execute("CREATE TABLE ecg AS SELECT * FROM (VALUES (0, 900), (1, 800)) e(row_idx, study_id)")
    con.execute("CREATE TABLE cohort_ecgs AS SELECT * FROM (VALUES (1, 0), (0, 0)) c(row_idx, fold)")
    # label_idx 0 is 'zinc', 1 'ph', 2 'albumin': the text order is albumin, ph, zinc
    con.execute("CREATE TABLE last_rows AS SELECT * FROM (VALUES "
                "(1, 0, 60, 1.0, 70.0), (1, 0, 0, 2.0, 5.0), (1, 1, 0, 3.0, 6.0), (0, 2, 0, 4.0, 7.0), "
                "(0, 0, 0, 5.0, 8.0), (0, 1, 60, 6.0, 90.0), (1, 2, 60, 7.0, 61.0)) "
                "v(row_idx, label_idx, cutoff_min, value, age_min)")
    targets = [{"_label_idx": 0, "lab": "zinc"}, {"_label_idx": 1, "lab": "ph"}, {"_label_idx": 2, "lab": "albumin"}]
    got = con.execute(cohort.last_values_query(con, targets, "last_rows")).fetchall()
    assert [(s, lab, c) for s, lab, c, _, _ in got] == [
        (900, "albumin", 0), (900, "ph", 60), (900, "zinc", 0),
        (800, "albumin", 60), (800, "ph", 0), (800, "zinc", 0), (800, "zinc", 60)]
