"""The cohort stage on real MIMIC rows (the shipped demo): labels worked by hand, the page's summaries, and the
feature differences from the authors' code that the methods page counts.

Every expected label below is worked out from the raw ``labevents`` rows written next to it
(the test checks that those are all the rows of that patient, label and fluid around the ECG,
in the shipped file) and the paper's rules (REFERENCE_NOTES.md, as the authors'
``preprocessing.py`` applies them): estimation, the row closest to the ECG within ±60 min,
both ends included; monitoring, the rows in [ECG, ECG + h]: missing if none or if both a low
and a high row, else whether one of the target's direction occurs. Thresholds are the medians
of the label's reference bounds over its rows of the patients with an ECG, computed here with
pandas from the raw tables.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labecg import cohort, cohort_report, labels, layout
from labecg.util import read_json
from reference import authors_features

DEMO = layout.MIMIC_DEMO_ROOT
HOSP, ED, ECG = DEMO / "mimiciv" / "hosp", DEMO / "mimic-iv-ed" / "ed", DEMO / "mimic-iv-ecg"
METHODS = Path(__file__).resolve().parents[1] / "book" / "methods.md"
NAN = np.nan


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's cohort with every ECG and every candidate target (folds assigned: no ECG-ICD)."""
    out = tmp_path_factory.mktemp("demo_cohort")
    result = cohort.build_cohort(cohort.CohortConfig(
        hosp=HOSP, ed=ED, ecg=ECG, ecg_icd=None, cohort_dir=out, unlisted_ecgs="assign", min_per_class=0,
        drop_ecgs_without_targets=False, threads=1))
    return result, pd.read_parquet(result.cohort), read_json(result.targets)["targets"]


@pytest.fixture(scope="module")
def raw_labs():
    """labevents joined to d_labitems, the rows the authors read (valuenum, charttime, not both bounds 0)."""
    lab = pd.read_csv(HOSP / "labevents.csv.gz", low_memory=False,
                      usecols=["labevent_id", "subject_id", "itemid", "charttime", "valuenum", "valueuom",
                               "ref_range_lower", "ref_range_upper"])
    items = pd.read_csv(HOSP / "d_labitems.csv.gz", usecols=["itemid", "label", "fluid"])
    lab = lab.merge(items, on="itemid").dropna(subset=["valuenum", "charttime"])
    lab = lab[~((lab["ref_range_lower"] == 0) & (lab["ref_range_upper"] == 0))]
    ecg_subjects = pd.read_csv(ECG / "record_list.csv", usecols=["subject_id"])["subject_id"].unique()
    lab = lab[lab["subject_id"].isin(ecg_subjects)].copy()
    lab["charttime"] = pd.to_datetime(lab["charttime"])
    return lab


# label, fluid, (lower, upper) thresholds: the medians of the bounds over the label's rows
THRESHOLDS = {"Potassium": ("Blood", 3.3, 5.1), "Sodium": ("Blood", 133.0, 145.0),
              "Creatinine": ("Blood", 0.5, 1.2), "Hemoglobin": ("Blood", 13.7, 17.5),
              "Glucose": ("Blood", 70.0, 100.0), "pO2": ("Blood", 85.0, 105.0)}

# (subject_id, ecg_time, label, [(charttime, valuenum) of every row from 65 min before to 125 min after],
#  {target: expected label worked out by hand})
CASES = [
    (10002428, "2156-04-05 12:35:26", "Potassium", [("2156-04-05 13:08:00", 4.8)],
     # +32.6 min: closest within ±60, 4.8 in [3.3, 5.1]; none in [t, t+30]; in [t, t+60]
     {"potassium_high_est": 0.0, "potassium_low_mon30": NAN, "potassium_low_mon60": 0.0}),
    (10002428, "2156-04-05 12:35:26", "Sodium", [("2156-04-05 13:08:00", 132.0)],
     # 132 < 133: low (the row's own range is 133-145 too)
     {"sodium_low_est": 1.0, "sodium_high_est": 0.0, "sodium_low_mon30": NAN, "sodium_low_mon120": 1.0}),
    (10002428, "2156-04-05 12:35:26", "Creatinine", [("2156-04-05 13:08:00", 0.8)],
     # the row prints 0.4-1.1; the threshold is the median 1.2: 0.8 is normal
     {"creatinine_high_est": 0.0}),
    (10002428, "2156-04-05 12:35:26", "Hemoglobin", [("2156-04-05 13:08:00", 11.2)],
     # the row prints 12.0-16.0; below the median lower bound 13.7
     {"hemoglobin_low_est": 1.0}),
    (10002428, "2156-04-19 15:51:40", "Potassium", [("2156-04-19 14:51:00", 4.4)],
     # -60.67 min: just outside the estimation window; before the ECG, so in no monitoring window
     {"potassium_low_est": NAN, "potassium_high_mon120": NAN}),
    (10005348, "2128-09-10 20:29:52", "Potassium", [("2128-09-10 19:30:00", 4.2)],
     # -59.87 min: just inside
     {"potassium_low_est": 0.0, "potassium_low_mon120": NAN}),
    (10008454, "2110-11-30 15:14:24", "Potassium", [("2110-11-30 16:15:00", 4.2)],
     # +60.6 min: outside the estimation window and the 60-min horizon, inside the 120-min one
     {"potassium_low_est": NAN, "potassium_low_mon60": NAN, "potassium_low_mon120": 0.0}),
    (10007818, "2146-07-02 01:26:24", "Potassium", [("2146-07-02 03:29:00", 3.7)],
     # +122.6 min: past the 120-min horizon
     {"potassium_low_mon120": NAN}),
    (10002428, "2156-05-16 23:28:52", "Creatinine", [("2156-05-17 00:03:00", 0.3)],
     # +34.1 min, after midnight: 0.3 < 0.5
     {"creatinine_low_est": 1.0, "creatinine_low_mon30": NAN, "creatinine_low_mon60": 1.0}),
    (10009035, "2161-04-12 08:44:32", "Creatinine", [("2161-04-12 07:45:00", 1.0)],
     # -59.53 min: inside
     {"creatinine_low_est": 0.0}),
    (10008454, "2110-11-30 15:14:24", "Glucose", [("2110-11-30 15:20:00", 226.0), ("2110-11-30 16:15:00", 246.0)],
     # the closest (+5.6 min) is high; the +60.6 min row is outside the estimation window
     {"glucose_high_est": 1.0, "glucose_low_est": 0.0, "glucose_high_mon30": 1.0}),
    (10009628, "2153-09-19 14:24:02", "Glucose", [("2153-09-19 14:17:00", 126.0), ("2153-09-19 15:36:00", 123.0)],
     # closest -7.0 min; nothing in [t, t+60]; +72 min in the 120-min window
     {"glucose_high_est": 1.0, "glucose_high_mon30": NAN, "glucose_high_mon60": NAN, "glucose_high_mon120": 1.0}),
    (10039708, "2140-01-23 12:53:40", "Potassium", [("2140-01-23 13:40:00", 5.4), ("2140-01-23 14:39:00", 2.8)],
     # +46 min high is the only row within 60; +105 min low: the 120-min window holds both
     {"potassium_high_est": 1.0, "potassium_low_est": 0.0, "potassium_high_mon60": 1.0, "potassium_low_mon60": 0.0,
      "potassium_high_mon120": NAN, "potassium_low_mon120": NAN}),
    (10004235, "2196-02-24 12:31:54", "pO2", [("2196-02-24 12:40:00", 72.0), ("2196-02-24 12:51:00", 151.0)],
     # closest +8.1 min is low; the 30-min window holds a low and a high row
     {"po2_low_est": 1.0, "po2_high_est": 0.0, "po2_low_mon30": NAN, "po2_high_mon30": NAN}),
    (10007818, "2146-06-22 11:34:12", "pO2", [("2146-06-22 12:25:00", 26.0), ("2146-06-22 13:02:00", 433.0)],
     # +50.8 min low is the closest; within 60 only the low row; within 120 both
     {"po2_low_est": 1.0, "po2_low_mon60": 1.0, "po2_high_mon60": 0.0, "po2_low_mon120": NAN}),
]


def test_thresholds_are_the_medians_of_the_raw_bounds(raw_labs, demo):
    _, _, targets = demo
    found = {(t["label"], t["direction"]): t["threshold"] for t in targets}
    for label, (fluid, lower, upper) in THRESHOLDS.items():
        rows = raw_labs[(raw_labs["label"] == label) & (raw_labs["fluid"] == fluid)]
        assert rows["ref_range_lower"].median() == lower and rows["ref_range_upper"].median() == upper, label
        assert found[(label, "low")] == lower and found[(label, "high")] == upper, label


def test_hand_worked_label_cells_on_real_ecgs(raw_labs, demo):
    _, df, _ = demo
    n_cells = 0
    for subject, ecg_time, label, rows, expected in CASES:
        t = pd.Timestamp(ecg_time)
        fluid = THRESHOLDS[label][0]
        raw = raw_labs[(raw_labs["subject_id"] == subject) & (raw_labs["label"] == label)
                       & (raw_labs["fluid"] == fluid) & (raw_labs["charttime"] >= t - pd.Timedelta(minutes=65))
                       & (raw_labs["charttime"] <= t + pd.Timedelta(minutes=125))]
        # the rows written above are exactly the shipped file's rows around the ECG
        got_rows = sorted(zip(raw["charttime"].dt.strftime("%Y-%m-%d %H:%M:%S"), raw["valuenum"]))
        assert got_rows == sorted(rows), (subject, ecg_time, label)
        ecg = df[(df["subject_id"] == subject) & (df["ecg_time"] == t)]
        assert len(ecg) == 1, (subject, ecg_time)
        for target, want in expected.items():
            got = float(ecg[target].iloc[0])
            assert (np.isnan(got) and np.isnan(want)) or got == want, (subject, ecg_time, target, got, want)
            n_cells += 1
    assert n_cells >= 20


def test_flow_says_folds_were_assigned(demo):
    result, df, _ = demo
    flow = pd.read_csv(result.flow)
    assert flow["reason"].str.contains("assign", case=False).any()
    assert df["fold"].between(0, layout.N_FOLDS - 1).all() and len(df) == 659


# ---------------------------------------------------------------------------------------
# the page's summaries, against counts worked out another way


@pytest.mark.slow  # two more cohort builds
def test_targets_kept_agrees_with_the_builder_at_each_min_per_class(demo, tmp_path):
    _, _, targets = demo
    kept = cohort_report.targets_kept(targets, (10, 2))
    assert kept.loc[10, "all"] == 0  # the paper's rule keeps nothing at 100 patients
    with pytest.raises(ValueError, match="0 targets"):
        cohort.build_cohort(cohort.CohortConfig(hosp=HOSP, ed=ED, ecg=ECG, ecg_icd=None, cohort_dir=tmp_path / "k10",
                                                unlisted_ecgs="assign", min_per_class=10, threads=1))
    again = cohort.build_cohort(cohort.CohortConfig(hosp=HOSP, ed=ED, ecg=ECG, ecg_icd=None,
                                                    cohort_dir=tmp_path / "k2", unlisted_ecgs="assign",
                                                    min_per_class=2, threads=1))
    n = again.summary["n_targets"]
    assert kept.loc[2].drop("all").to_dict() == n and kept.loc[2, "all"] == sum(n.values())


def test_prevalence_and_coverage_count_the_cohort(demo):
    _, df, targets = demo
    prevalence = cohort_report.prevalence_by_task(targets)
    for task in ("est", "mon60"):
        cols = df[[t["name"] for t in targets if t["task"] == task]].to_numpy()
        assert prevalence.loc[task, "labelled"] == np.isfinite(cols).sum()
        assert prevalence.loc[task, "positive"] == (cols == 1).sum()
    coverage = cohort_report.feature_coverage(df)
    assert coverage.loc["heartrate", "ecgs"] == df["heartrate"].notna().sum()
    assert coverage.loc["height", "share"] == pytest.approx(df["height"].notna().mean())


def test_thresholds_beside_paper_use_the_papers_names(demo):
    _, _, targets = demo
    table = cohort_report.thresholds_beside_paper(targets)
    row = table[(table["value"] == "Creatinine") & (table["direction"] == "low")].iloc[0]
    assert row["threshold"] == 0.5 and row["paper_threshold"] == 0.5  # Table 1: Creatinine <0.5 mg/dL
    assert not table.duplicated(["value", "direction"]).any()


def test_quirk_counts_on_a_hand_made_source(tmp_path):
    hosp, ed, ecg = tmp_path / "hosp", tmp_path / "ed", tmp_path / "ecg"
    for d in (hosp, ed, ecg):
        d.mkdir()
    pd.DataFrame({"labevent_id": [1, 2, 3, 4, 5, 6], "subject_id": [1] * 6, "itemid": [10, 10, 11, 12, 12, 12],
                  "value": ["ERROR", "___", "<0.01", "4.0", "4.1", ""],
                  "valuenum": [None, 3.9, 0.01, 4.0, 4.1, 2.0], "valueuom": ["mg/dL", "mg/dL", "ng/mL", "%", "g/dL",
                                                                              "g/dL"],
                  "ref_range_lower": [None, 1, None, 0, 3, None], "ref_range_upper": [None, 2, 0.1, 0, 5, None]}
                 ).to_csv(hosp / "labevents.csv.gz", index=False)
    pd.DataFrame({"itemid": [10, 11, 12], "label": ["A", "A", "MCHC"], "fluid": ["Blood", "Blood", "Blood"]}
                 ).to_csv(hosp / "d_labitems.csv.gz", index=False)
    pd.DataFrame({"subject_id": [1, 1], "charttime": ["2150-01-01 00:00:00"] * 2, "temperature": [36.5, 98.6],
                  "pain": ["uta", "5"]}).to_csv(ed / "vitalsign.csv.gz", index=False)
    pd.DataFrame({"subject_id": [1, 1, 1, 1, 1], "chartdate": ["2150-01-01"] * 4 + ["2150-01-02"],
                  "seq_num": [1, 2, 1, 1, 1],
                  "result_name": ["Weight (Lbs)", "Weight (Lbs)", "Blood Pressure", "Height (Inches)", "BMI (kg/m2)"],
                  "result_value": ["150", ">300", "120/80", "6868", "25"]}).to_csv(hosp / "omr.csv.gz", index=False)
    pd.DataFrame({"subject_id": [1, 1], "study_id": [7, 8]}).to_csv(ecg / "record_list.csv", index=False)
    pd.DataFrame({"study_id": [7], "subject_id": [1], "strat_fold": [3]}).to_csv(tmp_path / "icd.csv", index=False)
    q = cohort_report.count_quirks(hosp, ed, ecg, tmp_path / "icd.csv")["count"]
    assert q["text_only_result"] == 1          # ERROR (the empty value with a number is no text)
    assert q["deidentified_value"] == 1        # ___ with 3.9
    assert q["limit_text"] == 1                # <0.01
    assert q["range_empty"] == 2 and q["range_one_sided"] == 1 and q["range_zero"] == 1
    assert q["several_itemids"] == 1           # A/Blood has itemids 10 and 11
    assert q["unit_spellings"] == 2            # A: ng/mL (1) behind mg/dL (2); MCHC: % (1) behind g/dL (2)
    assert q["temperature_celsius"] == 1 and q["pain_free_text"] == 1
    assert q["omr_text_biometric"] == 1        # >300
    assert q["omr_blood_pressure_text"] == 1
    assert q["omr_implausible"] == 1           # 6868 inches
    assert q["omr_same_day"] == 1              # two weights on 2150-01-01
    assert q["unlisted_ecgs"] == 1             # study 8
    assert cohort_report.count_quirks(hosp, ed, ecg, None).loc["unlisted_ecgs", "count"] == 2


# ---------------------------------------------------------------------------------------
# where our features differ from the authors' code, counted on the demo (book/methods.md)


def _methods_number(pattern: str) -> tuple[int, ...]:
    m = re.search(pattern, METHODS.read_text())
    assert m, f"book/methods.md: no row matches {pattern!r}"
    return tuple(int(g) for g in m.groups())


def test_race_differences_on_the_demo_are_the_methods_pages(demo):
    _, df, _ = demo
    theirs = df["subject_id"].map(authors_features.authors_race(HOSP, ED))
    differ = theirs.fillna("-").to_numpy() != df["race"].fillna("-").to_numpy()
    n_missing = int(df["race"].isna().sum())
    assert n_missing == int(theirs.isna().sum())  # a subject with no race: missing in both
    page = _methods_number(r"race differs for (\d+) of (\d+) patients \((\d+) of (\d+) ECGs\); (\d+) ECGs? without")
    assert page == (df.loc[differ, "subject_id"].nunique(), df["subject_id"].nunique(), int(differ.sum()), len(df),
                    n_missing)


@pytest.mark.slow  # seconds of work; make test runs it, make test-fast does not
def test_biometric_differences_on_the_demo_are_the_methods_pages(demo):
    _, df, _ = demo
    rows = authors_features.biometric_rows(HOSP)
    ecgs = df[["subject_id", "ecg_time"]]
    ours = authors_features.ours_biometrics(rows, ecgs)
    for feature in ("bmi", "weight", "height"):  # the reference states our rule: it must give our values
        np.testing.assert_array_equal(ours.loc[ours["feature"] == feature, "value"].to_numpy(), df[feature].to_numpy())
    causes = authors_features.difference_causes(authors_features.authors_biometrics(rows, ecgs), ours)
    counts = causes.value_counts()
    assert "other" not in counts.index, causes[causes == "other"]
    page = _methods_number(r"(\d+) of (\d+) ECG–biometric cells differ: (\d+) with a row dated exactly 30 days "
                           r"before, (\d+) with rows equally many days before and after, (\d+) where a later day "
                           r"wins, (\d+) with two rows on the chosen day")
    assert page == (len(causes), 3 * len(df), *(int(counts.get(c, 0)) for c in authors_features.CAUSES))


def test_unit_differences_on_the_demo_are_the_methods_pages(demo, raw_labs):
    result, _, _ = demo
    # the flow counts every row the unit rule drops; the authors drop only the spellings of DROPPED_UNITS
    # (in the label's most frequent fluid, as both choose the fluid), so the rest they keep
    flow = pd.read_csv(result.flow).set_index("step")
    dropped = int(flow.loc["labevents: unit harmonized", "dropped"])
    fluids = (raw_labs.groupby(["label", "fluid"]).size().rename("n").reset_index()
              .sort_values(["label", "n", "fluid"], ascending=[True, False, True]).drop_duplicates("label"))
    rows = raw_labs.merge(fluids[["label", "fluid"]], on=["label", "fluid"])
    by_both = int(sum(((rows["label"] == lab) & (rows["valueuom"] == unit)).sum() for lab, unit in labels.DROPPED_UNITS))
    assert by_both == 16  # Absolute Lymphocyte Count in #/uL, worked out from the shipped file
    assert _methods_number(r"on the demo we drop (\d+) lab rows? the authors keep") == (dropped - by_both,)


def test_unit_table_is_the_authors():
    # spelling counts of four labels, one fluid each, as on the demo and full MIMIC
    counts = pd.DataFrame({"label": ["Protein/Creatinine Ratio", "Protein/Creatinine Ratio",
                                     "Absolute Lymphocyte Count", "Absolute Lymphocyte Count",
                                     "D-Dimer", "D-Dimer", "D-Dimer", "Calcium, Total", "Calcium, Total"],
                           "valueuom": ["mg/mg", "Ratio", "K/uL", "#/uL", "ng/mL", "ng/mL FEU", "ng/mL DDU",
                                        "mg/dL", "mmol/L"],
                           "n": [11, 4, 559, 16, 4, 4, 3, 900, 2]})
    out = labels.harmonize_units(counts).set_index(["label", "valueuom"])
    # the authors read 'Ratio' as mg/mg and every D-Dimer spelling as ng/mL except 'ng/mL DDU', which they
    # drop, as ALC in '#/uL'; a label outside their table keeps our rule (mmol/L is another quantity)
    assert out.loc[("Protein/Creatinine Ratio", "Ratio"), "unit"] == "mg/mg"
    assert out.loc[("Protein/Creatinine Ratio", "Ratio"), "keep"]
    assert out.loc[("D-Dimer", "ng/mL FEU"), "keep"] and out.loc[("D-Dimer", "ng/mL FEU"), "unit"] == "ng/mL"
    assert not out.loc[("D-Dimer", "ng/mL DDU"), "keep"]
    assert not out.loc[("Absolute Lymphocyte Count", "#/uL"), "keep"]
    assert out.loc[("Absolute Lymphocyte Count", "K/uL"), "unit"] == "K/uL"
    assert not out.loc[("Calcium, Total", "mmol/L"), "keep"] and out.loc[("Calcium, Total", "mg/dL"), "keep"]
    assert labels.LABEL_UNITS["Prostate Specific Antigen"] == "ng/mL"  # the authors name it mg/dL
