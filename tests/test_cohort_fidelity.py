"""Issue 10 cases of the cohort stage, worked by hand: the label defects, the authors' row
policies (unlisted ECGs, ECGs without targets) and the quirks of real MIMIC tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mimic_fixtures as mf
from labecg.cohort import CohortConfig, build_cohort

T = pd.Timestamp("2150-01-01 12:00:00")
CR, CR2, K = 50912, 52546, 50971
D_LAB = pd.DataFrame({"itemid": [CR, CR2, K], "label": ["Creatinine", "Creatinine", "Potassium"],
                      "fluid": ["Blood", "Blood", "Blood"], "category": "Chemistry"})


def ts(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def m(n):
    return pd.Timedelta(minutes=n)


def tables(lab_rows, ecg_rows, listed, **extra) -> dict:
    subjects = sorted({r[0] for r in ecg_rows})
    return {"patients": pd.DataFrame({"subject_id": subjects, "gender": "M", "anchor_age": 60}),
            "labevents": mf.labs(lab_rows), "d_labitems": D_LAB, "record_list": mf.ecgs(ecg_rows),
            "records_w_diag_icd10": pd.DataFrame({"study_id": [r[0] for r in listed],
                                                  "subject_id": [r[1] for r in listed],
                                                  "strat_fold": [r[2] for r in listed]}), **extra}


def build(tmp_path, t, **kw):
    root = mf.write_tree(tmp_path / "src", **t)
    res = build_cohort(CohortConfig(**mf.sources(root), out=tmp_path / "out",
                                    **{"min_lab_events": 1, "min_per_class": 0, **kw}))
    flow = pd.read_csv(res.flow).set_index("step")
    return res, pd.read_parquet(res.cohort).set_index("study_id", drop=False), flow


# creatinine of subject 1 around its ECG at T:
#   +5 min  0.9 with both bounds empty   -> kept; its empty bounds stay out of the medians
#   +40 min 1.6 with bounds 0.5-1.2      -> high (> median upper 1.2)
#   +3 d    1.0 with bounds 0 and 0      -> the one row the rule drops
#   +4 d    0.7 with bounds 0 and empty  -> kept; lower median (0.5, 0) = 0.25, upper 1.2
CR_ROWS = [(1, CR, ts(T + m(5)), 0.9, "mg/dL", np.nan, np.nan),
           (1, CR, ts(T + m(40)), 1.6, "mg/dL", 0.5, 1.2),
           (1, CR, ts(T + pd.Timedelta(days=3)), 1.0, "mg/dL", 0.0, 0.0),
           (1, CR, ts(T + pd.Timedelta(days=4)), 0.7, "mg/dL", 0.0, np.nan)]


def test_rows_with_empty_reference_ranges_are_kept(tmp_path):
    res, df, flow = build(tmp_path, tables(CR_ROWS, [(1, 40000001, ts(T))], [(40000001, 1, 0)]))
    row = df.loc[40000001]
    # closest row is the empty-range 0.9 (normal); mon30 sees only it; mon60 adds the 1.6
    assert row["creatinine_high_est"] == 0.0
    assert row["creatinine_high_mon30"] == 0.0
    assert row["creatinine_high_mon60"] == 1.0
    assert flow.loc["labevents: reference range", "dropped"] == 1
    assert flow.loc["labevents: reference range", "rows_in"] == 4
    spec = pd.read_json(res.targets, typ="series")
    thr = {t["name"]: t["threshold"] for t in spec["targets"]}
    assert thr["creatinine_high_est"] == pytest.approx(1.2)
    assert "creatinine_low_est" not in thr  # nothing below the lower median 0.25


def test_horizons_are_the_papers_and_not_an_option(tmp_path):
    cfg = CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, ecg_icd=tmp_path, out=tmp_path)
    assert cfg.tasks == ("est", "mon30", "mon60", "mon120")
    with pytest.raises(TypeError):
        CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, ecg_icd=tmp_path, out=tmp_path,
                     horizons_min=(45,))


# subject 1: a listed ECG (with labs) and an unlisted one 2 h later (same labs in reach of
# the first only); subject 2: a listed ECG without any lab row.
POLICY_ECGS = [(1, 40000001, ts(T)), (1, 40000002, ts(T + m(45))), (2, 40000003, ts(T))]
POLICY_LISTED = [(40000001, 1, 18), (40000003, 2, 19)]


def test_unlisted_ecgs_excluded_and_untargeted_dropped_by_default(tmp_path):
    _, df, flow = build(tmp_path, tables(CR_ROWS, POLICY_ECGS, POLICY_LISTED))
    assert list(df["study_id"]) == [40000001]
    assert flow.loc["folds: ECGs listed in ecg_icd", "dropped"] == 1
    assert flow.loc["targets: ECGs with at least one target", "dropped"] == 1
    assert df.loc[40000001, "fold"] == 18


def test_row_policies_of_the_earlier_pipeline_as_options(tmp_path):
    _, df, flow = build(tmp_path, tables(CR_ROWS, POLICY_ECGS, POLICY_LISTED), unlisted_ecgs="assign",
                        drop_ecgs_without_targets=False)
    assert list(df["study_id"]) == [40000001, 40000002, 40000003]
    assert df.loc[40000002, "fold"] == 18  # the patient's fold
    # the unlisted ECG at T+45: its closest creatinine is the 1.6 at T+40 -> high
    assert df.loc[40000002, "creatinine_high_est"] == 1.0
    assert df.loc[40000003, ["creatinine_high_est", "creatinine_high_mon60"]].isna().all()
    assert "targets: ECGs with at least one target" not in flow.index
