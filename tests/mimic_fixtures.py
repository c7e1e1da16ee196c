"""Tiny hand-made MIMIC-format trees for the cohort tests (and a random one for benchmarks).

``write_tree(root, **tables)`` writes each given table with every MIMIC column in the
documented order (columns not given are left empty), so a test states only what it checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from labecg.catalog import MIMIC_COLUMNS
from labecg.layout import MIMIC_FILES
from labecg.sources import source_paths

# every table except machine_measurements, which the cohort builder does not read
COLUMNS = {k: v for k, v in MIMIC_COLUMNS.items() if k != "machine_measurements"}
LOCATION = MIMIC_FILES


def sources(root: Path) -> dict:
    """The four source paths under ``root``, as CohortConfig takes them."""
    return source_paths(root)


def full_table(name: str, df: pd.DataFrame | None) -> pd.DataFrame:
    cols = COLUMNS[name]
    df = pd.DataFrame(columns=cols) if df is None else df
    extra = [c for c in df.columns if c not in cols]
    if extra:
        raise KeyError(f"{name}: unknown columns {extra}")
    return df.reindex(columns=cols)


def write_table(root: Path, name: str, df: pd.DataFrame | None, columns: list[str] | None = None) -> Path:
    """Write one table at its MIMIC location; ``columns`` overrides the header (bad-input tests)."""
    path = Path(root) / LOCATION[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    out = full_table(name, df)
    if columns is not None:
        out.columns = columns
    out.to_csv(path, index=False, compression="gzip" if path.suffix == ".gz" else None)
    return path


def write_tree(root: Path, **tables: pd.DataFrame) -> Path:
    """Write every MIMIC table under ``root`` (tables not given: header only)."""
    root = Path(root)
    for name in COLUMNS:
        write_table(root, name, tables.get(name))
    return root


def ecgs(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    """record_list rows from (subject_id, study_id, ecg_time)."""
    return pd.DataFrame({"subject_id": [r[0] for r in rows], "study_id": [r[1] for r in rows],
                         "ecg_time": [r[2] for r in rows],
                         "path": [f"files/p{r[0] // 10000}/p{r[0]}/s{r[1]}/{r[1]}" for r in rows]})


def labs(rows: list[tuple], start_id: int = 1) -> pd.DataFrame:
    """labevents rows from (subject_id, itemid, charttime, valuenum, valueuom, lower, upper)."""
    df = pd.DataFrame(rows, columns=["subject_id", "itemid", "charttime", "valuenum", "valueuom",
                                     "ref_range_lower", "ref_range_upper"])
    df.insert(0, "labevent_id", np.arange(start_id, start_id + len(df)))
    return df


def random_tree(root: Path, patients: int, labs_per_patient: int, ecgs_per_patient: int = 5,
                n_labels: int = 30, seed: int = 0, listed_fraction: float = 0.9) -> Path:
    """A random MIMIC-format tree, numpy-fast, for benchmarks (no planted effects).

    ECGs and labs of a patient fall in one 30-day stretch, so windows are often populated;
    timestamps on whole seconds; about 10% of lab rows lack valuenum.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    subj = np.arange(10_000_000, 10_000_000 + patients)
    base = pd.Timestamp("2150-01-01") + pd.to_timedelta(rng.integers(0, 3650, patients), unit="D")
    n_e = patients * ecgs_per_patient
    es = np.repeat(subj, ecgs_per_patient)
    et = np.repeat(base.to_numpy(), ecgs_per_patient) + pd.to_timedelta(
        rng.integers(0, 30 * 86400, n_e), unit="s").to_numpy()
    study = 40_000_000 + rng.permutation(n_e)
    fmt = "%Y-%m-%d %H:%M:%S"
    rec = pd.DataFrame({"subject_id": es, "study_id": study, "ecg_time": pd.DatetimeIndex(et).strftime(fmt),
                        "path": [f"files/p{s // 10000}/p{s}/s{t}/{t}" for s, t in zip(es, study)]})
    items = 50800 + np.arange(n_labels)
    lo = rng.uniform(1, 50, n_labels).round(1)
    hi = (lo * rng.uniform(1.5, 3, n_labels)).round(1)
    n_l = patients * labs_per_patient
    ls = np.repeat(subj, labs_per_patient)
    # labs cluster around the patient's ECGs: pick an ECG, add up to +-3 h
    pick = np.repeat(np.arange(patients) * ecgs_per_patient, labs_per_patient) + rng.integers(
        0, ecgs_per_patient, n_l)
    lt = et[pick] + pd.to_timedelta(rng.integers(-3 * 3600, 3 * 3600, n_l), unit="s").to_numpy()
    it = rng.integers(0, n_labels, n_l)
    val = (rng.normal((lo[it] + hi[it]) / 2, (hi[it] - lo[it]) * 0.6)).round(2)
    val = np.where(rng.random(n_l) < 0.1, np.nan, val)
    lab = pd.DataFrame({"labevent_id": np.arange(1, n_l + 1), "subject_id": ls, "itemid": items[it],
                        "charttime": pd.DatetimeIndex(lt).strftime(fmt), "valuenum": val,
                        "valueuom": "mg/dL", "ref_range_lower": lo[it], "ref_range_upper": hi[it]})
    d_lab = pd.DataFrame({"itemid": items, "label": [f"Lab {i:02d}" for i in range(n_labels)],
                          "fluid": "Blood", "category": "Chemistry"})
    pat = pd.DataFrame({"subject_id": subj, "gender": rng.choice(["M", "F"], patients),
                        "anchor_age": rng.integers(18, 91, patients)})
    adm = pd.DataFrame({"subject_id": subj, "admittime": base.strftime(fmt),
                        "race": rng.choice(["WHITE", "BLACK/AFRICAN AMERICAN", "ASIAN - CHINESE",
                                            "HISPANIC/LATINO - PUERTO RICAN", "UNKNOWN"], patients)})
    vpick = rng.integers(0, n_e, n_e)
    vit = pd.DataFrame({"subject_id": es[vpick], "charttime": pd.DatetimeIndex(
        et[vpick] + pd.to_timedelta(rng.integers(-3600, 3600, n_e), unit="s").to_numpy()).strftime(fmt),
        "temperature": rng.normal(98.6, 1, n_e).round(1), "heartrate": rng.integers(50, 120, n_e),
        "resprate": rng.integers(10, 30, n_e), "o2sat": rng.integers(88, 101, n_e),
        "sbp": rng.integers(90, 180, n_e), "dbp": rng.integers(50, 100, n_e)})
    opick = rng.integers(0, n_e, n_e)
    omr = pd.DataFrame({"subject_id": es[opick], "chartdate": pd.DatetimeIndex(
        et[opick] + pd.to_timedelta(rng.integers(-40, 40, n_e), unit="D").to_numpy()).strftime("%Y-%m-%d"),
        "seq_num": 1, "result_name": rng.choice(["BMI (kg/m2)", "Weight (Lbs)", "Height (Inches)"], n_e),
        "result_value": rng.uniform(25, 70, n_e).round(1).astype(str)})
    fold_of = pd.Series(rng.integers(0, 20, patients), index=subj)
    listed = rec.sample(frac=listed_fraction, random_state=seed)
    icd = pd.DataFrame({"study_id": listed["study_id"], "subject_id": listed["subject_id"],
                        "strat_fold": listed["subject_id"].map(fold_of)})
    return write_tree(root, patients=pat, admissions=adm, labevents=lab, d_labitems=d_lab, omr=omr,
                      vitalsign=vit, record_list=rec, records_w_diag_icd10=icd)
