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
    res = build_cohort(CohortConfig(**mf.sources(root), cohort_dir=tmp_path / "out",
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
    cfg = CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, ecg_icd=tmp_path, cohort_dir=tmp_path)
    assert cfg.tasks == ("est", "mon30", "mon60", "mon120")
    with pytest.raises(TypeError):
        CohortConfig(hosp=tmp_path, ed=tmp_path, ecg=tmp_path, ecg_icd=tmp_path, cohort_dir=tmp_path,
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


# ---------------------------------------------------------------------------------------
# real-world quirks (book/mimic.md), one hand-worked ECG at T


BNP, K2 = 50963, 52610
QUIRK_LAB = pd.DataFrame({"itemid": [K, K2, BNP], "label": ["Potassium", "Potassium", "NTproBNP"],
                          "fluid": "Blood", "category": "Chemistry"})


def quirk_tables() -> dict:
    lab = mf.labs([
        (1, K, ts(T + m(1)), np.nan, "mEq/L", 3.3, 5.1),        # value 'ERROR': no valuenum
        (1, K, ts(T + m(2)), 4.0, "mEq/L", 3.3, 5.1),           # value '___' with its valuenum
        (1, K2, ts(T + m(10)), 5.8, "mEq/L", 3.3, 5.1),         # second itemid of Potassium, high
        (1, K, ts(T + pd.Timedelta(days=3)), 9.9, "mEq/L", 0.0, 0.0),  # bounds 0 and 0: dropped
        (1, BNP, ts(T + m(5)), np.nan, "pg/mL", np.nan, 353.0),  # '>25000': text only
        (1, BNP, ts(T + m(20)), 400.0, "pg/mL", np.nan, 353.0),  # one-sided range, high
        (1, BNP, ts(T + pd.Timedelta(days=3)), 100.0, "pg/mL", np.nan, 353.0),
    ])
    lab["value"] = ["ERROR", "___", "5.8", "9.9", ">25000", "400", "100"]
    vit = pd.DataFrame([
        {"subject_id": 1, "charttime": ts(T + m(5)), "temperature": 37.2, "heartrate": 80.0, "pain": "8-9"},
        {"subject_id": 1, "charttime": ts(T + m(20)), "temperature": 98.9, "pain": "10, chest"},
        {"subject_id": 1, "charttime": ts(T - m(3)), "heartrate": 90.0, "pain": "uta"}])
    omr = pd.DataFrame({"subject_id": 1, "seq_num": 1,
                        "chartdate": [T.date(), (T - pd.Timedelta(days=2)).date(), T.date(),
                                      (T - pd.Timedelta(days=5)).date(), T.date()],
                        "result_name": ["Weight (Lbs)", "Weight (Lbs)", "Height (Inches)", "Height (Inches)",
                                        "Blood Pressure"],
                        "result_value": [">300", "250", "6868", "68", "128/74"]})
    t = tables([], [(1, 40000001, ts(T))], [(40000001, 1, 0)], vitalsign=vit, omr=omr)
    t["labevents"], t["d_labitems"] = lab, QUIRK_LAB
    return t


@pytest.fixture(scope="module")
def quirks(tmp_path_factory):
    res, df, flow = build(tmp_path_factory.mktemp("quirks"), quirk_tables())
    return res, df.loc[40000001], flow


def test_lab_text_values_second_itemids_and_ranges(quirks):
    res, row, flow = quirks
    # 'ERROR' and '>25000' have no valuenum: the rows without valuenum
    assert flow.loc["labevents: valuenum and charttime", "dropped"] == 2
    assert flow.loc["labevents: reference range", "dropped"] == 1  # the 0/0 row only
    # closest potassium is the '___' 4.0 at +2 min (normal); mon30 holds the 52610 row's 5.8
    assert row["potassium_high_est"] == 0.0
    assert row["potassium_high_mon30"] == 1.0
    spec = pd.read_json(res.targets, typ="series")
    pot = next(t for t in spec["targets"] if t["name"] == "potassium_high_est")
    assert pot["itemids"] == [K, K2] and pot["threshold"] == 5.1
    # NTproBNP: the +20 min 400 is the closest kept row; no lower bound anywhere -> no low target
    assert row["ntprobnp_high_est"] == 1.0
    assert not any(t["name"].startswith("ntprobnp_low") for t in spec["targets"])


def test_celsius_temperatures_and_free_text_pain(quirks):
    _, row, flow = quirks
    # 37.2 (degrees C) is below 50 (degrees F): implausible, missing; the +20 min 98.9 is used
    assert row["temperature"] == 98.9
    assert flow.loc["vitalsign: temperature plausible", "dropped"] == 1
    # rows with free-text pain (one with a comma, quoted in the CSV) are read: heart rate of -3 min
    assert row["heartrate"] == 90.0


def test_omr_text_values_and_typed_twice_heights(quirks):
    _, row, flow = quirks
    assert flow.loc["omr: numeric biometric rows", "dropped"] == 1  # '>300'
    assert flow.loc["omr: plausible biometrics", "dropped"] == 1  # 6868 in = 17,444.72 cm
    assert row["weight"] == pytest.approx(250 * 0.453592)
    assert row["height"] == pytest.approx(68 * 2.54)


def _differences_table() -> list[str]:
    """The labecg column of the methods page's "where we differ" table, one cell per row."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "book" / "methods.md").read_text()
    rows = text.split("## Where we differ", 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0].splitlines()
    return [r.strip().strip("|").split(" | ")[-1] for r in rows[2:]]


def test_every_deviation_is_a_flag():
    """Each setting the methods page names as the way to the other behaviour is a field of a
    stage's config whose command-line flag gives that behaviour, and is not the default (the
    default is the paper's or the authors' choice, as the page says)."""
    import dataclasses
    import re
    import typing

    from labecg.cli import config_from_args
    from labecg.evaluate import EvaluateConfig
    from labecg.explain import ExplainConfig
    from labecg.signals import SignalsConfig
    from labecg.train import TrainConfig

    base = {CohortConfig: ["--hosp", "h", "--ed", "e", "--ecg", "g", "--ecg-icd", "i", "--cohort-dir", "o"],
            SignalsConfig: ["--cohort-dir", "c", "--ecg", "g"], TrainConfig: ["--cohort-dir", ".", "--run-dir", "o"],
            EvaluateConfig: ["--run-dir", "r"], ExplainConfig: ["--run-dir", "r"]}
    stages = tuple(base)
    named = [re.fullmatch(r"(\w+)(?:=(.+))?", code) for cell in _differences_table()
             for code in re.findall(r"`([^`]+)`", cell)]
    settings = [(m[1], m[2]) for m in named if m and any(m[1] in {f.name for f in dataclasses.fields(c)}
                                                           for c in stages)]
    not_settings = {m[1] for m in named if m and (m[1], m[2]) not in settings}
    assert not_settings <= {"flag"}, f"not a field of any stage's config: {sorted(not_settings)}"
    assert len(settings) >= 10, settings
    for name, alternative in settings:
        (cls,) = [c for c in stages if name in {f.name for f in dataclasses.fields(c)}]
        field = next(f for f in dataclasses.fields(cls) if f.name == name)
        hint = typing.get_type_hints(cls)[name]
        required = base[cls]
        flag = "--" + name.replace("_", "-")
        if hint is bool:
            want = True if alternative is None else {"True": True, "False": False}[alternative]
            args = [flag] if want else ["--no-" + flag[2:]]
        elif alternative is not None:
            want = typing.get_args(hint)[0].__class__(alternative.strip('"')) if typing.get_origin(hint) \
                is typing.Literal else hint(alternative.strip('"'))
            args = [flag, str(want)]
        else:  # the page names the setting only: any other value than the default
            choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
            want = next(c for c in choices if c != field.default) if choices else field.default * 2
            args = [flag, str(want)]
        assert want != field.default, f"{name}: the page's alternative {want!r} is the default"
        assert getattr(config_from_args(cls, required + args), name) == want, name
        assert getattr(config_from_args(cls, required), name) == field.default, name
