"""The threshold rules of ``labecg cohort --thresholds``: ``median`` (the paper's) and ``row`` (each lab row
against its own reference range, the label's median where a bound is empty).

Expected labels are worked out by hand from the rows written beside them: a hand-made source
with empty bounds, and real rows of the shipped MIMIC-IV demo (``labevents`` with their own
``ref_range_lower``/``ref_range_upper``); the whole demo cohort under ``row`` is also held to
the slow per-ECG pandas baseline (``tests/reference/cohort_baseline.py``), which classes each
row by its bounds with ``fillna`` of the medians.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mimic_fixtures as mf
from labecg import cli, cohort, layout, selfcheck, sources
from labecg.cohort import CohortConfig, build_cohort
from labecg.cohort_report import compare_threshold_rules
from labecg.targets import THRESHOLD_RULES
from labecg.util import read_json

T = pd.Timestamp("2150-01-01 12:00:00")
K = 50971
NAN = np.nan
DEMO = layout.MIMIC_DEMO_ROOT
HOSP, ED, ECG = (sources.source_paths(DEMO)[k] for k in ("hosp", "ed", "ecg"))  # the one layout reader
BASELINE = Path(__file__).resolve().parent / "reference" / "cohort_baseline.py"


def ts(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def m(n):
    return pd.Timedelta(minutes=n)


# potassium rows (subject, minutes after the ECG, value, own lower, own upper); every subject has
# one ECG at T. Medians over the rows' bounds, empty ones left out: lower of
# (3.5, 3.3, 3.5, 3.5, 4.1, 3.0) = 3.5; upper of (5.0, 5.1, 5.5, 5.5, 5.0, 6.0, 4.8) = 5.1.
K_ROWS = [
    (1, 10, 3.0, 3.5, 5.0),      # low by both rules
    (2, 10, 3.4, 3.3, 5.1),      # row: normal (>= 3.3); median: low (< 3.5)
    (3, 10, 5.4, NAN, 5.5),      # row: normal (<= 5.5; lower falls back to 3.5); median: high (> 5.1)
    (4, 10, 3.2, NAN, 5.5),      # row: low against the fallback 3.5; median: low
    (5, 10, 5.4, 3.5, NAN),      # row: high against the fallback 5.1; median: high
    (6, 10, 4.0, NAN, NAN),      # both bounds fall back: normal by both rules
    (7, 10, 5.05, 3.5, 5.0),     # row: high (> 5.0); median: normal (<= 5.1)
    (8, 5, 4.0, 4.1, 6.0),       # row: low (< 4.1); median: normal; the closest row
    (8, 20, 4.9, 3.0, 4.8),      # row: high (> 4.8): [t, t + 30] holds a low and a high row; median: normal
]
# subject -> (low_est, high_est, low_mon30, high_mon30) worked out above
EXPECTED = {
    "row": {1: (1, 0, 1, 0), 2: (0, 0, 0, 0), 3: (0, 0, 0, 0), 4: (1, 0, 1, 0), 5: (0, 1, 0, 1),
            6: (0, 0, 0, 0), 7: (0, 1, 0, 1), 8: (1, 0, NAN, NAN)},
    "median": {1: (1, 0, 1, 0), 2: (1, 0, 1, 0), 3: (0, 1, 0, 1), 4: (1, 0, 1, 0), 5: (0, 1, 0, 1),
               6: (0, 0, 0, 0), 7: (0, 0, 0, 0), 8: (0, 0, 0, 0)},
}


def hand_tables() -> dict:
    subjects = sorted({r[0] for r in K_ROWS})
    ecg_rows = [(s, 40000000 + s, ts(T)) for s in subjects]
    return {"patients": pd.DataFrame({"subject_id": subjects, "gender": "F", "anchor_age": 60}),
            "labevents": mf.labs([(s, K, ts(T + m(dt)), v, "mEq/L", lo, hi) for s, dt, v, lo, hi in K_ROWS]),
            "d_labitems": pd.DataFrame({"itemid": [K], "label": ["Potassium"], "fluid": ["Blood"],
                                        "category": ["Chemistry"]}),
            "record_list": mf.ecgs(ecg_rows)}


@pytest.fixture(scope="module", params=["median", "row"])
def hand(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"hand_{request.param}")
    root = mf.write_tree(tmp / "src", **hand_tables())
    cfg = CohortConfig(**{**mf.sources(root), "ecg_icd": None}, cohort_dir=tmp / "out", min_lab_events=1, min_per_class=0,
                       unlisted_ecgs="assign", drop_ecgs_without_targets=False, threads=1, thresholds=request.param)
    res = build_cohort(cfg)
    return request.param, res, pd.read_parquet(res.cohort).set_index("subject_id")


def test_hand_made_labels_under_each_rule(hand):
    rule, _, df = hand
    for subject, want in EXPECTED[rule].items():
        got = tuple(float(df.loc[subject, f"potassium_{c}"]) for c in ("low_est", "high_est", "low_mon30",
                                                                        "high_mon30"))
        np.testing.assert_array_equal(got, np.asarray(want, dtype=float), err_msg=f"{rule}, subject {subject}")


def test_targets_json_records_the_rule_and_the_median_fallback(hand):
    rule, res, _ = hand
    spec = read_json(res.targets)
    assert spec["thresholds"] == {"rule": rule, "description": THRESHOLD_RULES[rule]}
    assert spec["config"]["thresholds"] == rule
    thresholds = {t["direction"]: t["threshold"] for t in spec["targets"]}
    assert thresholds["low"] == pytest.approx(3.5) and thresholds["high"] == pytest.approx(5.1)


def test_flow_counts_the_fallbacks_under_row_only(hand):
    rule, res, _ = hand
    flow = pd.read_csv(res.flow).set_index("step")
    steps = ["labels: row ranges, lower bound", "labels: row ranges, upper bound"]
    if rule == "median":
        assert not flow.index.isin(steps).any()
        return
    # rows without a lower bound: subjects 3, 4, 6; without an upper bound: 5, 6; none dropped
    for step, n in zip(steps, (3, 2)):
        assert flow.loc[step, "rows_in"] == flow.loc[step, "rows_out"] == len(K_ROWS)
        assert f"{n} rows without" in flow.loc[step, "reason"], flow.loc[step, "reason"]


def test_the_flag_and_its_validation(tmp_path):
    cfg = cli.config_from_args(CohortConfig, ["--hosp", "h", "--ed", "e", "--ecg", "c", "--cohort-dir", "o",
                                              "--unlisted-ecgs", "assign", "--thresholds", "row"])
    assert cfg.thresholds == "row"
    assert cli.config_from_args(CohortConfig, ["--hosp", "h", "--ed", "e", "--ecg", "c", "--cohort-dir", "o",
                                               "--unlisted-ecgs", "assign"]).thresholds == "median"
    with pytest.raises(ValueError, match="thresholds"):
        CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, cohort_dir=tmp_path, unlisted_ecgs="assign",
                     thresholds="sex")


# ---------------------------------------------------------------------------------------
# real rows: the shipped MIMIC-IV demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's cohorts under both rules, every ECG and every candidate target."""
    out = {}
    for rule in ("median", "row"):
        res = build_cohort(CohortConfig(hosp=HOSP, ed=ED, ecg=ECG, ecg_icd=None,
                                        cohort_dir=tmp_path_factory.mktemp(f"demo_{rule}"), unlisted_ecgs="assign",
                                        min_per_class=0, drop_ecgs_without_targets=False, threads=1, thresholds=rule))
        out[rule] = (res, pd.read_parquet(res.cohort), read_json(res.targets))
    return out


@pytest.fixture(scope="module")
def raw_labs():
    """labevents joined to d_labitems: the rows with a value and a time, bounds as printed."""
    lab = pd.read_csv(HOSP / "labevents.csv.gz", low_memory=False,
                      usecols=["labevent_id", "subject_id", "itemid", "charttime", "valuenum",
                               "ref_range_lower", "ref_range_upper"])
    items = pd.read_csv(HOSP / "d_labitems.csv.gz", usecols=["itemid", "label", "fluid"])
    lab = lab.merge(items, on="itemid").dropna(subset=["valuenum", "charttime"])
    lab["charttime"] = pd.to_datetime(lab["charttime"])
    return lab


# (subject_id, ecg_time, label, [(charttime, valuenum, own lower, own upper) of every row from 65 min
#  before to 125 min after], the label's median lower and upper, {target: (median rule, row rule)})
DEMO_CASES = [
    (10010471, "2155-12-03 06:34:40", "Hemoglobin", [("2155-12-03 05:41:00", 11.3, 11.2, 15.7)], (13.7, 17.5),
     # -53.7 min: 11.3 < 13.7 (median) but >= 11.2, the row's own (lower, a woman's) bound
     {"hemoglobin_low_est": (1.0, 0.0), "hemoglobin_high_est": (0.0, 0.0), "hemoglobin_low_mon30": (NAN, NAN)}),
    (10024043, "2117-02-03 17:19:46", "Hemoglobin", [("2117-02-03 17:30:00", 17.9, 14.0, 18.0)], (13.7, 17.5),
     # +10.2 min: 17.9 > 17.5 (median) but <= 18.0 (its own)
     {"hemoglobin_high_est": (1.0, 0.0), "hemoglobin_high_mon30": (1.0, 0.0), "hemoglobin_low_mon120": (0.0, 0.0)}),
    (10003400, "2136-11-04 16:32:36", "Creatinine", [("2136-11-04 16:35:00", 1.2, 0.4, 1.1)], (0.5, 1.2),
     # +2.4 min: 1.2 is not > 1.2 (median) but > 1.1 (its own)
     {"creatinine_high_est": (0.0, 1.0), "creatinine_high_mon30": (0.0, 1.0), "creatinine_low_mon120": (0.0, 0.0)}),
    (10003400, "2137-03-17 05:13:44", "Creatinine", [("2137-03-17 05:37:00", 0.4, 0.4, 1.1)], (0.5, 1.2),
     # +23.3 min: 0.4 < 0.5 (median), not < 0.4 (its own)
     {"creatinine_low_est": (1.0, 0.0), "creatinine_low_mon30": (1.0, 0.0), "creatinine_high_est": (0.0, 0.0)}),
    (10005866, "2149-10-01 02:16:10", "Sodium", [("2149-10-01 02:35:00", 134.0, 135.0, 147.0)], (133.0, 145.0),
     # +18.8 min: 134 >= 133 (median) but < 135 (its own)
     {"sodium_low_est": (0.0, 1.0), "sodium_low_mon30": (0.0, 1.0), "sodium_high_mon60": (0.0, 0.0)}),
    (10007818, "2146-06-22 11:34:12", "Immature Granulocytes", [("2146-06-22 11:54:00", 0.8, NAN, NAN)], (0.0, 0.6),
     # +19.8 min, both bounds empty: the row falls back to the medians, 0.8 > 0.6 under both rules
     {"immature_granulocytes_high_est": (1.0, 1.0), "immature_granulocytes_high_mon30": (1.0, 1.0)}),
    (10002930, "2199-02-17 15:56:56", "Immature Granulocytes", [("2199-02-17 15:20:00", 0.6, NAN, NAN)], (0.0, 0.6),
     # -36.9 min, both bounds empty: 0.6 is not > the fallback 0.6; before the ECG, so no monitoring row
     {"immature_granulocytes_high_est": (0.0, 0.0), "immature_granulocytes_high_mon30": (NAN, NAN)}),
]


def test_row_ranges_worked_by_hand_on_real_demo_rows(demo, raw_labs):
    n_cells = n_differ = 0
    for subject, ecg_time, label, rows, (lower, upper), expected in DEMO_CASES:
        t = pd.Timestamp(ecg_time)
        raw = raw_labs[(raw_labs["subject_id"] == subject) & (raw_labs["label"] == label)
                       & (raw_labs["fluid"] == "Blood") & (raw_labs["charttime"] >= t - m(65))
                       & (raw_labs["charttime"] <= t + m(125))]
        # the rows written above are exactly the shipped file's rows around the ECG
        got_rows = sorted(zip(raw["charttime"].dt.strftime("%Y-%m-%d %H:%M:%S"), raw["valuenum"],
                              raw["ref_range_lower"].fillna(-1.0), raw["ref_range_upper"].fillna(-1.0)))
        assert got_rows == sorted((c, v, -1.0 if np.isnan(lo) else lo, -1.0 if np.isnan(hi) else hi)
                                  for c, v, lo, hi in rows), (subject, ecg_time, label)
        for rule, idx in (("median", 0), ("row", 1)):
            _, df, spec = demo[rule]
            found = {(x["label"], x["direction"]): x["threshold"] for x in spec["targets"]}
            assert (found[(label, "low")] if (label, "low") in found else lower) == lower, (rule, label)
            assert found[(label, "high")] == upper, (rule, label)
            ecg = df[(df["subject_id"] == subject) & (df["ecg_time"] == t)]
            assert len(ecg) == 1, (subject, ecg_time)
            for target, want in expected.items():
                got = float(ecg[target].iloc[0])
                assert (np.isnan(got) and np.isnan(want[idx])) or got == want[idx], (rule, subject, target, got)
                n_cells += 1
        n_differ += sum(not (np.isnan(a) and np.isnan(b)) and a != b for a, b in expected.values())
    assert n_cells >= 30 and n_differ >= 8


@pytest.fixture(scope="module")
def baseline():
    spec = importlib.util.spec_from_file_location("cohort_baseline", BASELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # seconds of work; make test runs it, make test-fast does not
def test_row_rule_on_the_demo_equals_the_pandas_baseline(demo, baseline):
    ref, meta = baseline.build_labels({"hosp": HOSP, "ed": ED, "ecg": ECG}, thresholds="row")
    _, df, targets = demo["row"]
    names = [t["name"] for t in targets["targets"]]
    assert sorted(names) == sorted(c for c in ref.columns if c.endswith(("_est", "_mon30", "_mon60", "_mon120")))
    np.testing.assert_array_equal(df["study_id"].to_numpy(), ref["study_id"].to_numpy())
    for name in names:
        np.testing.assert_array_equal(df[name].to_numpy(np.float64), ref[name].to_numpy(np.float64), err_msg=name)
    # the threshold is the median fallback, as the baseline's medians
    for t in targets["targets"]:
        assert t["threshold"] == pytest.approx(meta[t["label"]]["lower" if t["direction"] == "low" else "upper"])
    # not vacuous: the rules disagree on many demo labels
    _, median_df, _ = demo["median"]
    shared = [n for n in names if n in median_df.columns]
    n_changed = sum(int((df[n] != median_df[n]).sum() - (df[n].isna() & median_df[n].isna()).sum()) for n in shared)
    assert n_changed > 100


def test_row_fallbacks_on_the_demo_count_the_empty_bounds(demo, baseline):
    res, _, _ = demo["row"]
    flow = pd.read_csv(res.flow).set_index("step")
    subjects = set(pd.read_csv(ECG / "record_list.csv", usecols=["subject_id"])["subject_id"])
    rows, meta = baseline.clean_labs(HOSP, subjects, 200, "row")
    assert int(flow.loc["labels: row ranges, lower bound", "rows_in"]) == len(rows)
    for side in ("lower", "upper"):
        median = rows["label"].map({label: x[side] for label, x in meta.items()})
        n = int((rows[f"ref_range_{side}"].isna() & median.notna()).sum())
        assert f"none dropped: {n} rows without ref_range_{side}" in flow.loc[f"labels: row ranges, {side} bound",
                                                                              "reason"]
        assert n > 0


def test_default_rule_is_the_papers(demo):
    assert CohortConfig.__dataclass_fields__["thresholds"].default == "median"
    _, _, spec = demo["median"]
    assert spec["thresholds"]["rule"] == "median"


# ---------------------------------------------------------------------------------------
# the ablation: the two rules side by side


def _target(name, pos, neg):
    """A targets.json entry whose counts split ``pos`` and ``neg`` over train and test."""
    task = name.rsplit("_", 1)[1]
    return {"name": name, "task": task, "counts": {"train": {"pos": pos - 1, "neg": neg - 2},
                                                   "val": {"pos": 0, "neg": 0}, "test": {"pos": 1, "neg": 2}}}


MEDIAN_TARGETS = [_target("hemoglobin_low_est", 40, 60), _target("creatinine_high_est", 10, 90),
                  _target("sodium_low_mon30", 5, 45)]
ROW_TARGETS = [_target("hemoglobin_low_est", 25, 75), _target("creatinine_high_est", 12, 88),
               _target("potassium_high_est", 30, 70)]


def test_rule_comparison_worked_by_hand():
    found = compare_threshold_rules(MEDIAN_TARGETS, ROW_TARGETS, n_moves=5)
    kept = found["kept"].set_index("rule")
    median, row = kept.loc[THRESHOLD_RULES["median"]], kept.loc[THRESHOLD_RULES["row"]]
    assert (median["est"], median["mon30"], median["all"]) == (2, 1, 3)
    assert (row["est"], row["mon30"], row["all"]) == (3, 0, 3)
    # median: (40 + 10 + 5) / (100 + 100 + 50); row: (25 + 12 + 30) / 300
    assert median["labelled"] == 250 and median["prevalence"] == pytest.approx(55 / 250)
    assert row["labelled"] == 300 and row["prevalence"] == pytest.approx(67 / 300)
    # both rules keep hemoglobin (0.40 -> 0.25) and creatinine (0.10 -> 0.12): hemoglobin moves most
    moves = found["moves"]
    assert list(moves["target"]) == ["hemoglobin_low_est", "creatinine_high_est"]
    np.testing.assert_allclose(moves["difference"], [-0.15, 0.02])
    assert found["only_median"] == ["sodium_low_mon30"] and found["only_row"] == ["potassium_high_est"]


def test_rule_comparison_on_the_demo_counts_the_cohort_columns(demo):
    found = compare_threshold_rules(demo["median"][2]["targets"], demo["row"][2]["targets"], n_moves=1000)
    for rule in ("median", "row"):
        _, df, spec = demo[rule]
        names = [t["name"] for t in spec["targets"]]
        kept = found["kept"].set_index("rule").loc[THRESHOLD_RULES[rule]]
        assert kept["est"] == sum(n.endswith("_est") for n in names) and kept["all"] == len(names)
        cells = df[names].to_numpy(np.float64)
        assert kept["labelled"] == np.isfinite(cells).sum() and kept["positive"] == (cells == 1).sum()
        # each target's prevalence is the mean of its column's labels
        moves = found["moves"].set_index("target")
        for name in moves.index:
            assert moves.loc[name, f"prevalence_{rule}"] == pytest.approx(df[name].mean(skipna=True)), name
    assert found["moves"]["difference"].abs().max() > 0.05


def test_threshold_rules_summary_reads_both_run_folders(tmp_path):
    run, row_run = tmp_path / "run", tmp_path / "run-row"
    (row_run / "evaluation").mkdir(parents=True)
    run.mkdir()
    (run / layout.TARGETS).write_text(json.dumps({"targets": MEDIAN_TARGETS}))
    (row_run / layout.TARGETS).write_text(json.dumps({"targets": ROW_TARGETS}))
    out = selfcheck.threshold_rules_summary(run, row_run / "evaluation")
    assert out["median_n_targets"] == 3 and out["row_n_targets"] == 3
    assert "row ranges (median where missing)" in out["text"] and "`hemoglobin_low_est`: 40.0%" in out["text"]
    assert out["moves"]["row − median (points)"].iloc[0] == pytest.approx(-15.0)
    missing = selfcheck.threshold_rules_summary(run, None)
    assert "Not run in this build: row" in missing["text"] and missing["moves"].empty


def test_row_is_an_ablation_of_the_fuller_build(tmp_path):
    assert set(cohort.ABLATION_TITLES) == set(cohort.ABLATIONS)
    cfg = CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, cohort_dir=tmp_path / "cohort",
                       unlisted_ecgs="assign")
    row = cohort.ablation_config(cfg, "row")
    assert row.thresholds == "row" and row.cohort_dir == tmp_path / "cohort-row" and row.causal is False
    assert cohort.ABLATION_TITLES["row"] == "row ranges (median where missing)"


# ---------------------------------------------------------------------------------------
# the self-check: the cut the labels imply, per sex and age band


def test_row_ranges_check_worked_by_hand(tmp_path):
    # women (sex 0): value, hemoglobin_low_est; 11.5 disagrees (its row printed a widened range);
    # the last has a label but no value and is left out
    women = [(11.0, 1), (11.9, 1), (12.0, 0), (12.5, 0), (13.5, 0), (11.5, 0), (NAN, 1)]
    men = [(12.9, 1), (13.5, 0), (14.0, 0)]  # labelled by the median 13.0
    frame = pd.DataFrame({"sex": [0.0] * len(women) + [1.0] * len(men), "age": 50.0,
                          "hemoglobin_low_est": [y for _, y in women + men],
                          "hemoglobin_value_est": [v for v, _ in women + men],
                          "creatinine_high_est": NAN, "creatinine_value_est": NAN}).astype("float64")
    frame.to_parquet(tmp_path / layout.COHORT)
    (tmp_path / layout.TARGETS).write_text(json.dumps({"targets": [
        {"name": "hemoglobin_low_est", "threshold": 13.0}, {"name": "creatinine_high_est", "threshold": 1.2}]}))
    planted = pd.DataFrame({"label": ["Hemoglobin", "Hemoglobin", "Creatinine"], "sex": ["F", "M", "F"],
                            "age_min": [0, 0, 65], "age_max": [200, 200, 200], "lower": [12.0, 13.7, 0.5],
                            "upper": [16.0, 17.5, 1.3]})
    check = selfcheck.row_ranges_check(tmp_path, planted).set_index(["label", "sex"])
    women_row, men_row = check.loc[("Hemoglobin", "F")], check.loc[("Hemoglobin", "M")]
    # women: cuts at 11.5 and at 12.0 both explain 5 of 6 labels; (11.9, 12.0] holds the planted 12.0;
    # the median 13.0 flags 11.5, 12.0 and 12.5 wrongly: 3 of 6
    assert (women_row["n"], women_row["cut_low"], women_row["cut_high"]) == (6, 11.9, 12.0)
    assert women_row["agreement"] == pytest.approx(5 / 6) and women_row["agreement_planted"] == pytest.approx(5 / 6)
    assert women_row["agreement_median"] == pytest.approx(3 / 6) and women_row["verdict"] == "planted"
    # men: the best cut (12.9, 13.5] explains all 3; 13.7 flags 13.5 wrongly
    assert (men_row["cut_low"], men_row["cut_high"], men_row["verdict"]) == (12.9, 13.5, "median")
    assert men_row["agreement_planted"] == pytest.approx(2 / 3)
    # no woman aged 65 or more: creatinine's upper side has no labels; its lower side has no target
    creatinine = check.loc[[("Creatinine", "F")]]
    assert list(creatinine["side"]) == ["upper"] and list(creatinine["verdict"]) == ["no labels"]


def test_row_cohort_recovers_the_planted_ranges(synthetic_root, tmp_path):
    cfg = CohortConfig(**{**mf.sources(synthetic_root), "ecg_icd": None}, cohort_dir=tmp_path / "row",
                       min_lab_events=20, min_per_class=0, unlisted_ecgs="assign", drop_ecgs_without_targets=False,
                       threads=1, thresholds="row")
    build_cohort(cfg)
    build_cohort(dataclasses.replace(cfg, cohort_dir=tmp_path / "median", thresholds="median"))
    planted = selfcheck.read_planted_ranges(synthetic_root)
    row, median = (selfcheck.row_ranges_check(tmp_path / name, planted) for name in ("row", "median"))
    labelled = row["n"] >= 20
    assert labelled.sum() >= 6
    assert set(row.loc[labelled, "verdict"]) <= {"planted", "both"} and (row.loc[labelled, "verdict"] == "planted").any()
    assert set(median.loc[median["n"] >= 20, "verdict"]) <= {"median", "both"}
