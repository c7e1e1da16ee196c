"""The synthetic MIMIC tree: schemas, formats, WFDB records, folds, determinism, planted effects.

Column lists below are copied by hand from MIMIC_FORMAT.md (not imported from the module)
so that a change in the generator cannot silently change what is checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import find_peaks

from labecg import catalog, ecgsim, planted, synthetic
from labecg.planted import PLANTED_EFFECTS, planted_effects_frame
from labecg.synthetic import SynthConfig, generate, write_record_fast
from labecg.targets import lab_slug

EXPECTED = {
    "mimiciv/hosp/patients.csv.gz": "subject_id, gender, anchor_age, anchor_year, anchor_year_group, dod",
    "mimiciv/hosp/admissions.csv.gz": "subject_id, hadm_id, admittime, dischtime, deathtime, admission_type, "
    "admit_provider_id, admission_location, discharge_location, insurance, language, marital_status, race, "
    "edregtime, edouttime, hospital_expire_flag",
    "mimiciv/hosp/labevents.csv.gz": "labevent_id, subject_id, hadm_id, specimen_id, itemid, order_provider_id, "
    "charttime, storetime, value, valuenum, valueuom, ref_range_lower, ref_range_upper, flag, priority, comments",
    "mimiciv/hosp/d_labitems.csv.gz": "itemid, label, fluid, category",
    "mimiciv/hosp/omr.csv.gz": "subject_id, chartdate, seq_num, result_name, result_value",
    "mimic-iv-ed/ed/edstays.csv.gz": "subject_id, hadm_id, stay_id, intime, outtime, gender, race, "
    "arrival_transport, disposition",
    "mimic-iv-ed/ed/vitalsign.csv.gz": "subject_id, stay_id, charttime, temperature, heartrate, resprate, o2sat, "
    "sbp, dbp, rhythm, pain",
    "mimic-iv-ecg/record_list.csv": "subject_id, study_id, file_name, ecg_time, path",
    "mimic-iv-ecg/machine_measurements.csv": "subject_id, study_id, cart_id, ecg_time, "
    + ", ".join(f"report_{i}" for i in range(18))
    + ", bandwidth, filtering, rr_interval, p_onset, p_end, qrs_onset, qrs_end, t_end, p_axis, qrs_axis, t_axis",
    "mimic-iv-ecg-ext-icd-labels/records_w_diag_icd10.csv": "file_name, study_id, subject_id, ecg_time, "
    "ed_stay_id, ed_hadm_id, hosp_hadm_id, ed_diag_ed, ed_diag_hosp, hosp_diag_hosp, all_diag_hosp, "
    "all_diag_all, gender, age, anchor_year, anchor_age, strat_fold",
}
TIME_COLUMNS = {
    "mimiciv/hosp/admissions.csv.gz": ["admittime", "dischtime", "deathtime", "edregtime", "edouttime"],
    "mimiciv/hosp/labevents.csv.gz": ["charttime", "storetime"],
    "mimic-iv-ed/ed/edstays.csv.gz": ["intime", "outtime"],
    "mimic-iv-ed/ed/vitalsign.csv.gz": ["charttime"],
    "mimic-iv-ecg/record_list.csv": ["ecg_time"],
    "mimic-iv-ecg/machine_measurements.csv": ["ecg_time"],
    "mimic-iv-ecg-ext-icd-labels/records_w_diag_icd10.csv": ["ecg_time"],
}
LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def _read(root: Path, rel: str) -> pd.DataFrame:
    return pd.read_csv(root / rel, dtype=str, keep_default_na=False)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_trees(tmp_path_factory):
    """Four 10-patient trees: seed 3 twice (workers 1 and 2), seed 3 via wfdb.wrsamp, seed 4."""
    base = tmp_path_factory.mktemp("tiny")
    kw = dict(patients=10, progress=False, chunk_patients=4)
    return {
        "a": generate(SynthConfig(data_root=base / "a", seed=3, workers=1, **kw)),
        "b": generate(SynthConfig(data_root=base / "b", seed=3, workers=2, **kw)),
        "wfdb": generate(SynthConfig(data_root=base / "w", seed=3, writer="wfdb", **kw)),
        "other": generate(SynthConfig(data_root=base / "o", seed=4, **kw)),
    }


# ------------------------------------------------------------------ schemas and formats
def test_columns_match_mimic_format(synthetic_root):
    for rel, cols in EXPECTED.items():
        df = _read(synthetic_root, rel)
        assert list(df.columns) == cols.split(", "), rel
        assert len(df) > 0, rel


def test_timestamps_and_dates_parse(synthetic_root):
    for rel, cols in TIME_COLUMNS.items():
        df = _read(synthetic_root, rel)
        for c in cols:
            v = df[c][df[c] != ""]
            assert len(v) > 0 or c == "deathtime", (rel, c)
            t = pd.to_datetime(v, format="%Y-%m-%d %H:%M:%S")  # raises on any other format
            assert t.dt.year.between(2110, 2215).all(), (rel, c)
    omr = _read(synthetic_root, "mimiciv/hosp/omr.csv.gz")
    pd.to_datetime(omr["chartdate"], format="%Y-%m-%d")
    bp = omr.loc[omr.result_name == "Blood Pressure", "result_value"]
    assert bp.str.fullmatch(r"\d{2,3}/\d{2,3}").all()
    assert set(omr.result_name) <= {"Blood Pressure", "Weight (Lbs)", "BMI (kg/m2)", "Height (Inches)"}


def test_gzip_headers_have_no_name_or_time(synthetic_root):
    for rel in EXPECTED:
        if rel.endswith(".gz"):
            head = (synthetic_root / rel).read_bytes()[:10]
            assert head[:2] == b"\x1f\x8b"
            assert head[3] & 0x08 == 0, f"{rel}: FNAME flag set"
            assert head[4:8] == b"\x00\x00\x00\x00", f"{rel}: mtime not 0"


def test_labevents_values_units_flags(synthetic_root):
    lab = _read(synthetic_root, "mimiciv/hosp/labevents.csv.gz")
    d = _read(synthetic_root, "mimiciv/hosp/d_labitems.csv.gz")
    lab = lab.merge(d, on="itemid")
    assert set(lab.flag) <= {"abnormal", ""}
    assert set(lab.priority) <= {"ROUTINE", "STAT"}
    num = pd.to_numeric(lab.valuenum, errors="coerce")
    lo = pd.to_numeric(lab.ref_range_lower, errors="coerce")
    hi = pd.to_numeric(lab.ref_range_upper, errors="coerce")
    assert ((lab.value == "___") & lab.valuenum.eq("")).any(), "no de-identified rows"
    # flag agrees with each row's own printed range
    expected_flag = np.where((num < lo) | (num > hi), "abnormal", "")
    assert (lab.flag.to_numpy() == expected_flag).all()
    # numeric rows: value text equals valuenum (except the '<0.01' troponin convention and
    # de-identified '___' texts that keep their valuenum, as MIMIC prints some)
    m = num.notna() & ~lab.value.str.startswith("<") & (lab.value != "___")
    assert np.allclose(lab.value[m].astype(float), num[m])
    assert set(lab.loc[lab.label == "MCHC", "valueuom"]) == {"%", "g/dL"}
    glucose = d[d.label == "Glucose"]
    assert set(glucose.fluid) == {"Blood", "Urine"} and glucose.itemid.nunique() == 3
    assert (lab.label == "Glucose").groupby(lab.fluid).sum().min() > 0
    pot = lab[lab.label == "Potassium"]
    assert pot.ref_range_upper.nunique() > 1, "reference ranges never vary"
    assert pd.to_numeric(pot.ref_range_upper, errors="coerce").median() == 5.1
    # hadm_id is empty for labs outside an admission
    assert (lab.hadm_id == "").any() and (lab.hadm_id != "").any()


def test_d_labitems_matches_catalog_and_mimic(synthetic_root):
    d = _read(synthetic_root, "mimiciv/hosp/d_labitems.csv.gz").astype({"itemid": int})
    by_id = d.set_index("itemid")
    for t in catalog.LAB_TESTS:
        assert by_id.loc[t.itemid, "label"] == t.label
        assert by_id.loc[t.itemid, "fluid"] == t.fluid
    # itemids as in MIT-LCP/mimic-code mimic-iv/concepts/measurement (chemistry, complete_blood_count,
    # blood_differential, cardiac_marker, enzyme, coagulation)
    known = {50971: "Potassium", 50983: "Sodium", 50912: "Creatinine", 51006: "Urea Nitrogen",
             50893: "Calcium, Total", 50931: "Glucose", 50862: "Albumin", 50868: "Anion Gap",
             51222: "Hemoglobin", 51221: "Hematocrit", 51249: "MCHC", 51277: "RDW", 51279: "Red Blood Cells",
             51301: "White Blood Cells", 52069: "Absolute Basophil Count", 51244: "Lymphocytes",
             51254: "Monocytes", 50963: "NTproBNP", 51003: "Troponin T", 50910: "Creatine Kinase (CK)",
             50885: "Bilirubin, Total", 51237: "INR(PT)", 51274: "PT", 51275: "PTT"}
    for itemid, label in known.items():
        assert by_id.loc[itemid, "label"] == label


def test_ed_vitals_races_and_ecg_counts(synthetic_root):
    ed = _read(synthetic_root, "mimic-iv-ed/ed/edstays.csv.gz")
    vit = _read(synthetic_root, "mimic-iv-ed/ed/vitalsign.csv.gz")
    assert set(vit.stay_id) <= set(ed.stay_id)
    assert (vit.temperature == "").any() and (vit.temperature != "").any()
    temp = vit.temperature[vit.temperature != ""].astype(float)
    celsius = temp < 50  # the planted share recorded in degrees Celsius
    assert temp[~celsius].between(94, 106).all(), "temperature should be in Fahrenheit"
    assert temp[celsius].between(34, 41).all() and 0 < celsius.mean() < 0.03
    adm = _read(synthetic_root, "mimiciv/hosp/admissions.csv.gz")
    races = set(adm.race) | set(ed.race)
    assert "WHITE" in races and any("/" in r or " - " in r for r in races)
    rl = _read(synthetic_root, "mimic-iv-ecg/record_list.csv")
    per = rl.groupby("subject_id").size()
    assert per.between(1, 8).all() and per.max() > 1
    assert rl.path.str.fullmatch(r"files/p\d{4}/p\d{8}/s\d{8}/\d{8}").all()
    assert (rl.path.str.split("/").str[2].str[1:] == rl.subject_id).all()


# ------------------------------------------------------------------ WFDB records
def test_planted_quirks_at_their_rates(synthetic_root):
    """Each real-world quirk of synthetic.QUIRK_RATES occurs, near its stated rate."""
    rates = synthetic.QUIRK_RATES
    lab = _read(synthetic_root, "mimiciv/hosp/labevents.csv.gz")
    both_empty = (lab.ref_range_lower == "") & (lab.ref_range_upper == "")
    both_zero = (lab.ref_range_lower == "0.0") & (lab.ref_range_upper == "0.0")
    urine = lab.itemid == str(synthetic.URINE_GLUCOSE[0])
    assert abs(both_empty[~urine].mean() - rates["range_empty"]) < 0.005
    assert 0 < both_zero.sum() and abs(both_zero.mean() - rates["range_zero"]) < 0.002
    assert ((lab.value == "ERROR") & (lab.valuenum == "")).sum() > 0
    trop = lab[lab.itemid == "51003"]
    assert ((trop.ref_range_lower == "") & (trop.ref_range_upper != "")).mean() > 0.5  # one-sided
    d = _read(synthetic_root, "mimiciv/hosp/d_labitems.csv.gz")
    for label, second in synthetic.SECOND_ITEMIDS.items():
        first = catalog.LAB_TESTS[[t.label for t in catalog.LAB_TESTS].index(label)].itemid
        assert d.loc[d.itemid == str(second), "label"].item() == label
        share = (lab.itemid == str(second)).sum() / lab.itemid.isin([str(first), str(second)]).sum()
        assert abs(share - rates["second_itemid"]) < 0.03, label
    vit = _read(synthetic_root, "mimic-iv-ed/ed/vitalsign.csv.gz")
    assert vit.pain.isin(synthetic.PAIN_TEXTS).mean() > 0.5 * rates["pain_free_text"]
    rl = _read(synthetic_root, "mimic-iv-ecg/record_list.csv")
    shifted = 0
    for path, t in zip(rl.path, rl.ecg_time):
        h = wfdb.rdheader(str(synthetic_root / "mimic-iv-ecg" / path))
        shifted += dt.datetime.combine(h.base_date, h.base_time) != dt.datetime.fromisoformat(t)
    assert 0 < shifted < 4 * rates["header_time_shift"] * len(rl)


def test_wfdb_headers(synthetic_root):
    rl = _read(synthetic_root, "mimic-iv-ecg/record_list.csv")
    assert len(list((synthetic_root / "mimic-iv-ecg" / "files").rglob("*.hea"))) == len(rl)
    for path in rl.path[:15]:
        h = wfdb.rdheader(str(synthetic_root / "mimic-iv-ecg" / path))
        assert h.fs == 500 and h.sig_len == 5000 and h.n_sig == 12
        assert h.sig_name == LEADS
        assert h.fmt == ["16"] * 12 and h.units == ["mV"] * 12


def test_einthoven_goldberger_hold_in_read_back_signal(synthetic_root):
    rl = _read(synthetic_root, "mimic-iv-ecg/record_list.csv")
    tol = 0.011  # mV: two quantization steps of 1/200 mV plus rounding of the derived lead
    for path in rl.path[:25]:
        x, info = wfdb.rdsamp(str(synthetic_root / "mimic-iv-ecg" / path))
        li, lii, liii, avr, avf, avl = (x[:, info["sig_name"].index(n)] for n in ("I", "II", "III", "aVR", "aVF", "aVL"))
        for lhs, rhs in ((liii, lii - li), (avr, -(li + lii) / 2), (avl, li - lii / 2), (avf, lii - li / 2)):
            ok = np.isfinite(lhs) & np.isfinite(rhs)
            assert ok.mean() > 0.8
            assert np.max(np.abs(lhs[ok] - rhs[ok])) <= tol, path


def test_fast_writer_matches_wfdb_wrsamp(tmp_path):
    rng = np.random.default_rng(0)
    p = dict(hr_bpm=110.0, af=True, qrs_ms=120.0, qt_ms=380.0, pr_ms=160.0, t_amp=1.5, t_width_s=0.05,
             r_amp=0.8, st_mv=-0.1, axis_deg=40.0, noise_mv=0.02, wander_mv=0.1, flat_lead=8,
             nan_start_s=2.0, nan_len_s=0.5)
    sig = ecgsim.simulate(p, rng)
    assert np.isnan(sig).any() and (np.nan_to_num(sig[:, 8]) == 0).all()
    when = dt.datetime(2150, 3, 4, 5, 6, 7)
    (tmp_path / "fast").mkdir()
    (tmp_path / "ref").mkdir()
    write_record_fast(tmp_path / "fast", "41234567", sig, when)
    wfdb.wrsamp("41234567", fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=sig.copy(), fmt=["16"] * 12,
                adc_gain=[200.0] * 12, baseline=[0] * 12, base_time=when.time(), base_date=when.date(),
                write_dir=str(tmp_path / "ref"))
    for ext in (".hea", ".dat"):
        assert (tmp_path / "fast" / f"41234567{ext}").read_bytes() == (tmp_path / "ref" / f"41234567{ext}").read_bytes()
    back, _ = wfdb.rdsamp(str(tmp_path / "fast" / "41234567"))
    assert np.array_equal(np.isnan(back), np.isnan(sig))
    assert np.nanmax(np.abs(back - sig)) <= 0.0025 + 1e-9


# ------------------------------------------------------------------ folds
def test_folds_are_patient_level_and_some_ecgs_unlisted(synthetic_root):
    icd = _read(synthetic_root, "mimic-iv-ecg-ext-icd-labels/records_w_diag_icd10.csv")
    rl = _read(synthetic_root, "mimic-iv-ecg/record_list.csv")
    fold = icd.strat_fold.astype(int)
    assert fold.between(0, 19).all()
    assert (icd.groupby("subject_id").strat_fold.nunique() == 1).all()
    missing = 1 - len(icd) / len(rl)
    assert 0.01 < missing < 0.2 and set(icd.study_id) <= set(rl.study_id)
    for c in ("ed_diag_ed", "hosp_diag_hosp", "all_diag_all"):
        assert icd[c].str.fullmatch(r"\[('[A-Z0-9]+'(, '[A-Z0-9]+')*)?\]").all(), c


# ------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_any_workers(tiny_trees):
    a, b, w = (_digest(tiny_trees[k]) for k in ("a", "b", "wfdb"))
    assert len(a) > 20 and a == b
    assert a == w, "fast writer and wfdb.wrsamp trees differ"


def test_different_seed_differs(tiny_trees):
    a, o = _digest(tiny_trees["a"]), _digest(tiny_trees["other"])
    for rel in ("mimiciv/hosp/labevents.csv.gz", "mimic-iv-ecg/record_list.csv"):
        assert a[rel] != o[rel]


def test_waveform_fraction_writes_a_subset(tmp_path):
    root = generate(SynthConfig(data_root=tmp_path / "t", patients=20, seed=1, waveform_fraction=0.3, progress=False))
    n_rec = len(_read(root, "mimic-iv-ecg/record_list.csv"))
    n_hea = len(list(root.rglob("*.hea")))
    assert 0 < n_hea < n_rec


def test_config_validation(tmp_path):
    for bad in (dict(patients=0), dict(waveform_fraction=1.5), dict(workers=0), dict(ecgs_per_patient=9.0),
                dict(writer="fastest")):
        with pytest.raises(ValueError):
            SynthConfig(data_root=tmp_path, **bad)


# ------------------------------------------------------------------ planted effects
def _ecg_read_factors(n_states=20):
    """The factors that change some waveform parameter when moved, found by moving each one."""
    pat = dict(age=60, hr0=72.0, qrs0=0.0, qt0=0.0, tgain=1.0, vgain=1.0, axis=50.0)
    read = set()
    for seed in range(n_states):
        state = np.random.default_rng(seed).normal(0, 1, len(planted.FACTORS))
        base = synthetic._ecg_params(state, pat, np.random.default_rng(99))
        for name, i in synthetic.F.items():
            for step in (-2.0, 2.0):
                moved = state.copy()
                moved[i] += step
                if synthetic._ecg_params(moved, pat, np.random.default_rng(99)) != base:
                    read.add(name)
    return read


def test_null_labs_do_not_move_when_the_factors_the_ecg_reads_move():
    """The attribution check's null targets are null where they come from: found by perturbation, not from the lists."""
    ecg_read = _ecg_read_factors()
    assert ecg_read == set(planted.ECG_FACTORS)
    rng = np.random.default_rng(0)
    state = rng.normal(0, 1, (200, len(planted.FACTORS)))
    resid = rng.normal(0, 1, (200, len(planted.LAB_MODELS)))
    moved = state.copy()
    for name in ecg_read:
        moved[:, synthetic.F[name]] += rng.normal(0, 2, 200)
    values = []
    for s in (state, moved):
        v = synthetic._lab_values(s, resid, female=False)
        synthetic._derive(v, np.random.default_rng(5))
        values.append(v)
    unmoved = {label for label in values[0] if np.array_equal(values[0][label], values[1][label])}
    strength = {e.label: e.strength for e in PLANTED_EFFECTS}
    assert set(planted.ecg_null_labs()) == {label for label in unmoved if strength[label] == 0}
    assert {"Sodium", "Chloride", "Platelet Count"} <= set(planted.ecg_null_labs())
    assert not unmoved & {e.label for e in PLANTED_EFFECTS if "ecg" in e.channel}


def test_the_vitals_read_the_factors_their_models_name_and_the_vitals_channel_follows():
    """Found by perturbing each factor, not from the lists: the ED vitals read exactly the factors
    ``planted.VITAL_MODELS`` names, and a lab's planted channel says "vitals" exactly when its value reads one."""
    rng = np.random.default_rng(0)
    state = rng.normal(0, 1, (50, len(planted.FACTORS)))
    base = synthetic._vital_values(state, 70.0, np.random.default_rng(3))
    read = set()
    for name, i in synthetic.F.items():
        moved = state.copy()
        moved[:, i] += 1.0
        if not np.array_equal(synthetic._vital_values(moved, 70.0, np.random.default_rng(3)), base, equal_nan=True):
            read.add(name)
    drive = [n for n, _ in planted.ANEMIA_DRIVE]
    named = {f for m in planted.VITAL_MODELS.values() for t, _ in m.loadings
             for f in (drive if t == "anemia_drive" else [t])}
    assert read == named == {"inflammation", "heart_failure", "anemia", "iron_deficiency"}
    for e in PLANTED_EFFECTS:
        assert ("vitals" in e.channel) == bool(set(planted.lab_factors(e.label)) & read), e.label


def test_planted_effects_table():
    df = planted_effects_frame()
    assert {"label", "lab", "direction", "channel", "mechanism", "strength"} <= set(df.columns)
    assert (df.lab == df.label.map(lab_slug)).all()
    assert set(df.direction) <= {"low", "high", "both"}
    assert set(df.channel) <= {"ecg", "vitals", "ecg+vitals", "none"}
    assert (df.channel == "none").sum() >= 3 and (df.channel.str.contains("ecg")).sum() >= 5
    labels = {t.label for t in catalog.LAB_TESTS}
    assert set(df.label) <= labels and len(df) == len(PLANTED_EFFECTS)
    assert ((df.channel == "none") == (df.strength == 0)).all()


def _closest_lab(root: Path, itemid: int) -> pd.Series:
    """valuenum of the lab closest in time to each ECG, within +-60 min (index study_id)."""
    rl = pd.read_csv(root / "mimic-iv-ecg/record_list.csv", parse_dates=["ecg_time"])
    lab = pd.read_csv(root / "mimiciv/hosp/labevents.csv.gz", usecols=["subject_id", "itemid", "charttime", "valuenum"],
                      parse_dates=["charttime"])
    m = rl.merge(lab[(lab.itemid == itemid) & lab.valuenum.notna()], on="subject_id")
    m["gap"] = (m.charttime - m.ecg_time).abs()
    m = m[m.gap <= pd.Timedelta(minutes=60)].sort_values(["gap", "charttime"]).drop_duplicates("study_id")
    return m.set_index("study_id").valuenum


def _beat_features(root: Path) -> pd.DataFrame:
    """Median T-wave amplitude (mV, lead II, 0.1-0.45 s after R, against the PR segment) and heart rate."""
    rl = pd.read_csv(root / "mimic-iv-ecg/record_list.csv")
    rows = []
    for sid, path in zip(rl.study_id, rl.path):
        x, _ = wfdb.rdsamp(str(root / "mimic-iv-ecg" / path))
        ii = np.nan_to_num(x[:, 1])
        hp = ii - np.convolve(ii, np.ones(101) / 101, mode="same")
        r, _ = find_peaks(hp, distance=150, height=0.5 * np.percentile(hp, 99.5))
        r = r[(r > 150) & (r < 5000 - 250)]
        t_amp = np.median([ii[k + 50:k + 225].max() - np.median(ii[k - 100:k - 60]) for k in r]) if len(r) else np.nan
        hr = 60.0 / np.median(np.diff(r) / 500.0) if len(r) > 2 else np.nan
        rows.append((sid, t_amp, hr))
    return pd.DataFrame(rows, columns=["study_id", "t_amp", "hr"]).set_index("study_id")


def test_planted_effects_visible_in_read_back_ecgs(synthetic_root):
    feats = _beat_features(synthetic_root)
    rng = np.random.default_rng(0)

    def corr(itemid, col):
        j = feats.join(_closest_lab(synthetic_root, itemid).rename("lab"), how="inner").dropna()
        r = np.corrcoef(j[col], j.lab)[0, 1]
        null = [abs(np.corrcoef(j[col], rng.permutation(j.lab.to_numpy()))[0, 1]) for _ in range(200)]
        return r, np.quantile(null, 0.99), len(j)

    r, null99, n = corr(50971, "t_amp")  # potassium -> T amplitude
    assert n > 80 and r > 0.4 and r > null99, (r, null99, n)
    r, null99, n = corr(51222, "hr")  # hemoglobin -> heart rate (anemia speeds the heart)
    assert r < -0.25 and abs(r) > null99, (r, null99, n)
    r, null99, n = corr(50983, "t_amp")  # sodium: no planted signal
    assert abs(r) < max(0.2, null99), (r, null99, n)


def test_generate_refuses_a_folder_that_is_not_a_synthetic_tree(tmp_path):
    real = tmp_path / "mimic"
    (real / "mimiciv" / "hosp").mkdir(parents=True)
    (real / "mimiciv" / "hosp" / "patients.csv.gz").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not an earlier synthetic tree"):
        generate(SynthConfig(data_root=real, patients=5, seed=0, progress=False))
    assert (real / "mimiciv" / "hosp" / "patients.csv.gz").read_bytes() == b"precious"
    assert sorted(p.name for p in real.rglob("*")) == ["hosp", "mimiciv", "patients.csv.gz"]


def test_generate_replaces_an_earlier_synthetic_tree(tmp_path):
    root = generate(SynthConfig(data_root=tmp_path / "t", patients=6, seed=0, progress=False))
    records = {p.relative_to(root / "mimic-iv-ecg") for p in (root / "mimic-iv-ecg" / "files").rglob("*.hea")}
    again = generate(SynthConfig(data_root=root, patients=4, seed=1, progress=False))
    fresh = {p.relative_to(again / "mimic-iv-ecg") for p in (again / "mimic-iv-ecg" / "files").rglob("*.hea")}
    listed = pd.read_csv(again / "mimic-iv-ecg" / "record_list.csv")
    # exactly the new tree's records: none of the earlier tree's are left behind
    assert fresh == {Path(p + ".hea") for p in listed["path"]} and records - fresh
    assert json.loads((again / "labecg_synthetic.json").read_text())["config"]["patients"] == 4


# (label, sex, anchor_age band) -> the reference range its rows print, the documented values
# (labecg.planted docstring and the data chapter), copied by hand
PLANTED_RANGES_BY_HAND = {
    ("Hemoglobin", "F", (0, 200)): (12.0, 16.0), ("Hemoglobin", "M", (0, 200)): (13.7, 17.5),
    ("Hematocrit", "F", (0, 200)): (36.0, 46.0), ("Hematocrit", "M", (0, 200)): (40.0, 51.0),
    ("Creatinine", "F", (0, 64)): (0.4, 1.1), ("Creatinine", "F", (65, 200)): (0.5, 1.3),
    ("Creatinine", "M", (0, 64)): (0.5, 1.2), ("Creatinine", "M", (65, 200)): (0.6, 1.5),
}


def _ranges_by_patient(root: Path) -> pd.DataFrame:
    lab = pd.read_csv(root / "mimiciv/hosp/labevents.csv.gz",
                      usecols=["subject_id", "itemid", "valuenum", "ref_range_lower", "ref_range_upper", "flag"])
    d = pd.read_csv(root / "mimiciv/hosp/d_labitems.csv.gz", usecols=["itemid", "label"])
    pat = pd.read_csv(root / "mimiciv/hosp/patients.csv.gz", usecols=["subject_id", "gender", "anchor_age"])
    return lab.merge(d, on="itemid").merge(pat, on="subject_id")


def test_planted_ranges_are_printed_by_sex_and_age(synthetic_root):
    from labecg import selfcheck

    lab = _ranges_by_patient(synthetic_root)
    both = lab.dropna(subset=["ref_range_lower", "ref_range_upper"])
    both = both[~((both.ref_range_lower == 0) & (both.ref_range_upper == 0))]
    for (label, sex, (a0, a1)), want in PLANTED_RANGES_BY_HAND.items():
        g = both[(both.label == label) & (both.gender == sex) & both.anchor_age.between(a0, a1)]
        pairs = list(zip(g.ref_range_lower, g.ref_range_upper))
        # most rows print the planted range; the rest its 5%-widened copy
        assert len(pairs) >= 20, (label, sex, a0)
        assert pairs.count(want) / len(pairs) > 0.8, (label, sex, a0, pd.Series(pairs).value_counts().head())
        widened = (want[0] * 0.95, want[1] * 1.05)  # printed to 2 decimals
        assert all(pair == want or np.allclose(pair, widened, atol=0.0051) for pair in pairs), (label, sex, a0)
    # a test without a planted range prints its catalog range to both sexes
    pot = both[both.label == "Potassium"]
    for sex in ("F", "M"):
        assert pot[pot.gender == sex].groupby(["ref_range_lower", "ref_range_upper"]).size().idxmax() == (3.3, 5.1)
    # the self-check reads the same ranges back, and the marker carries the table
    check = selfcheck.planted_ranges_check(synthetic_root)
    assert len(check) == len(PLANTED_RANGES_BY_HAND) and (check.verdict == "recovered").all(), check
    marker = json.loads((synthetic_root / "labecg_synthetic.json").read_text())
    assert {(r["label"], r["sex"], (r["age_min"], r["age_max"])): (r["lower"], r["upper"])
            for r in marker["planted_ranges"]} == PLANTED_RANGES_BY_HAND


def test_planted_ranges_check_says_when_a_source_differs(synthetic_root, tmp_path):
    from labecg import selfcheck

    planted_table = selfcheck.read_planted_ranges(synthetic_root)
    wrong = planted_table.assign(lower=np.where(planted_table.sex == "F", planted_table.lower + 0.1,
                                                planted_table.lower))
    check = selfcheck.planted_ranges_check(synthetic_root, wrong)
    assert set(check.loc[check.sex == "F", "verdict"]) == {"differs"}
    assert set(check.loc[check.sex == "M", "verdict"]) == {"recovered"}
    assert selfcheck.read_planted_ranges(tmp_path).empty and selfcheck.planted_ranges_check(tmp_path).empty


def test_a_marker_without_its_config_is_written_again(tmp_path):
    """Only the marker `generate` writes (settings under "config") counts as the same source;
    an unfinished tree's marker, or one with the settings elsewhere, is generated again."""
    import json

    from labecg.sources import locate_source

    root = tmp_path / "src"
    root.mkdir()
    (root / "labecg_synthetic.json").write_text(json.dumps({"patients": 2, "seed": 0, "status": "incomplete"}))
    paths = locate_source(root, True, patients=2, seed=0)
    meta = json.loads((root / "labecg_synthetic.json").read_text())
    assert (meta["config"]["patients"], meta["config"]["seed"]) == (2, 0)
    assert all(p.exists() for p in paths.values() if p is not None)
