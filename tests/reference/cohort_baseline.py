"""The straightforward cohort labels: whole tables in pandas, a Python loop per ECG.

Two roles: the speed baseline of ``bench/cohort.py`` and the independent slow
implementation that ``tests/test_cohort_synthetic.py`` checks ``labecg.cohort`` against.
It re-implements every rule of the cohort stage (the module docstrings of ``labecg.features``,
``labecg.labels`` and ``labecg.cohort``) from the text, sharing only data constants (bounds,
unit synonyms), not code.

Usage: ``python tests/reference/cohort_baseline.py DATA_ROOT [--min-lab-events 200]`` prints the shape.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from labecg.features import BIOMETRICS, VITAL_BOUNDS
from labecg.labels import DROPPED_LABELS, DROPPED_UNITS, LABEL_UNITS, UNIT_SYNONYMS
from labecg.readers import VITALS

READ = dict(keep_default_na=False, na_values=[""])


def _race(r) -> str | None:
    if not isinstance(r, str):
        return None
    for key in ("WHITE", "BLACK", "HISPANIC", "ASIAN"):
        if key in r.upper():
            return key.lower()
    return "other"


def _slug(label: str) -> str:
    out, prev = [], "_"
    for ch in label.lower():
        if ch.isascii() and ch.isalnum():
            out.append(ch)
            prev = ch
        elif prev != "_":
            out.append("_")
            prev = "_"
    return "".join(out).strip("_")


def _key(u):
    return "".join(u.split()).lower()


def _dropped(label, u) -> bool:
    return isinstance(u, str) and (label, _key(u)) in {(lab, _key(x)) for lab, x in DROPPED_UNITS}


def _same_unit(label, a, b) -> bool:
    key = _key
    if not isinstance(a, str) or not isinstance(b, str):
        return True  # a row without a unit keeps its value
    if _dropped(label, a) or _dropped(label, b):
        return False
    if label in LABEL_UNITS or key(a) == key(b):
        return True
    groups = list(UNIT_SYNONYMS.get(None, ())) + list(UNIT_SYNONYMS.get(label, ()))
    return any(key(a) in {key(g) for g in grp} and key(b) in {key(g) for g in grp} for grp in groups)


def clean_labs(hosp: Path, subjects, min_lab_events: int, thresholds: str = "median"):
    """Lab rows after every cleaning rule, with per-label thresholds, itemids, fluid and unit.

    ``thresholds="median"`` classes each row (column ``cls``) against its label's medians of
    the reference bounds; ``"row"`` against the row's own bounds, the median where one is empty.
    """
    lab = pd.read_csv(hosp / "labevents.csv.gz", **READ,
                      usecols=["labevent_id", "subject_id", "itemid", "charttime", "valuenum", "valueuom",
                               "ref_range_lower", "ref_range_upper"],
                      dtype={"valueuom": str})
    lab = lab[lab["subject_id"].isin(subjects)]
    lab["charttime"] = pd.to_datetime(lab["charttime"])
    lab = lab.dropna(subset=["valuenum", "charttime"])
    d = pd.read_csv(hosp / "d_labitems.csv.gz", **READ, dtype={"label": str, "fluid": str})
    d = d.drop_duplicates("itemid")
    lab = lab.merge(d[["itemid", "label", "fluid"]], on="itemid", how="inner")
    lab = lab[lab["label"].notna() & ~lab["label"].isin(DROPPED_LABELS)]
    lab = lab[~((lab["ref_range_lower"] == 0) & (lab["ref_range_upper"] == 0))]
    lab = lab.sort_values(["labevent_id", "charttime", "valuenum"]).drop_duplicates("labevent_id")
    # most frequent fluid
    n = lab.groupby(["label", "fluid"]).size().reset_index(name="n")
    best = {}
    for label, g in n.groupby("label"):
        g = g.sort_values(["n", "fluid"], ascending=[False, True])
        best[label] = g["fluid"].iloc[0]
    lab = lab[lab["fluid"] == lab["label"].map(best)]
    # unit harmonization
    units = {}
    keep = np.ones(len(lab), dtype=bool)
    for label, g in lab.groupby("label"):
        c = g["valueuom"][[not _dropped(label, u) for u in g["valueuom"]]].dropna().value_counts()
        dropped = g["valueuom"].map(lambda u, lb=label: _dropped(lb, u)).to_numpy(dtype=bool)
        if label in LABEL_UNITS or len(c):
            unit = LABEL_UNITS[label] if label in LABEL_UNITS else sorted(c[c == c.max()].index)[0]
            units[label] = unit
            ok = g["valueuom"].isna() | g["valueuom"].map(lambda u, lb=label, un=unit: _same_unit(lb, u, un))
            ok = ok.to_numpy(dtype=bool) & ~dropped
            keep[lab.index.get_indexer(g.index[~ok])] = False
        elif dropped.any():
            units[label] = None
            keep[lab.index.get_indexer(g.index[dropped])] = False
        else:
            units[label] = None
    lab = lab[keep]
    size = lab.groupby("label").size()
    lab = lab[lab["label"].isin(size[size >= min_lab_events].index)]
    meta = {}
    for label, g in lab.groupby("label"):
        lo, hi = g["ref_range_lower"].median(), g["ref_range_upper"].median()
        v = g["valuenum"]
        row_lo, row_hi = lo, hi
        if thresholds == "row":
            row_lo, row_hi = g["ref_range_lower"].fillna(lo), g["ref_range_upper"].fillna(hi)
        meta[label] = {"lower": lo, "upper": hi, "itemids": sorted(int(i) for i in g["itemid"].unique()),
                       "fluid": best[label], "unit": units[label],
                       "low_occurs": bool((v < row_lo).any()), "high_occurs": bool((v > row_hi).any())}
    lab["cls"] = 0
    lo_map = lab["label"].map({k: m["lower"] for k, m in meta.items()})
    hi_map = lab["label"].map({k: m["upper"] for k, m in meta.items()})
    if thresholds == "row":
        lo_map, hi_map = lab["ref_range_lower"].fillna(lo_map), lab["ref_range_upper"].fillna(hi_map)
    lab.loc[lab["valuenum"] < lo_map, "cls"] = -1
    lab.loc[lab["valuenum"] > hi_map, "cls"] = 1
    return lab, meta


def build_labels(src: dict, min_lab_events: int = 200, estimation_window_min: int = 60,
                 horizons_min=(30, 60, 120), vitals_window_min: int = 30,
                 biometrics_window_days: int = 30, thresholds: str = "median") -> tuple[pd.DataFrame, dict]:
    """Features and every candidate target, one row per ECG (sorted like cohort.parquet).

    Returns
    -------
    df : DataFrame with subject_id, study_id, ecg_time, sex, age, race, vitals, biometrics
        and one float column per candidate target name (before the per-split filter).
    meta : dict label -> thresholds, itemids, fluid, unit, which classes occur.
    """
    hosp, ed, ecg = Path(src["hosp"]), Path(src["ed"]), Path(src["ecg"])
    rec = pd.read_csv(ecg / "record_list.csv", **READ, usecols=["subject_id", "study_id", "ecg_time", "path"])
    rec = rec.drop_duplicates()
    rec["ecg_time"] = pd.to_datetime(rec["ecg_time"])
    rec = rec.sort_values(["subject_id", "ecg_time", "study_id"]).reset_index(drop=True)
    subjects = set(rec["subject_id"])

    pat = pd.read_csv(hosp / "patients.csv.gz", **READ, dtype={"gender": str}).drop_duplicates("subject_id")
    pat = pat.set_index("subject_id")
    race = {}
    for path, tcol in ((hosp / "admissions.csv.gz", "admittime"), (ed / "edstays.csv.gz", "intime")):
        t = pd.read_csv(path, **READ, usecols=["subject_id", tcol, "race"], dtype={"race": str})
        t[tcol] = pd.to_datetime(t[tcol])
        t = t[t["race"].notna() & (t["race"].str.strip() != "")]
        t = t.sort_values(["subject_id", tcol, "race"], na_position="last").drop_duplicates("subject_id")
        for s, r in zip(t["subject_id"], t["race"]):
            race.setdefault(s, r)

    vit = pd.read_csv(ed / "vitalsign.csv.gz", **READ, usecols=["subject_id", "charttime", *VITALS])
    vit["charttime"] = pd.to_datetime(vit["charttime"])
    vit = vit[vit["subject_id"].isin(subjects) & vit["charttime"].notna()]
    for v in VITALS:
        lo, hi = VITAL_BOUNDS[v]
        vit.loc[(vit[v] < lo) | (vit[v] > hi), v] = np.nan
    omr = pd.read_csv(hosp / "omr.csv.gz", **READ, dtype={"result_value": str, "result_name": str})
    omr = omr[omr["result_name"].isin(list(BIOMETRICS)) & omr["subject_id"].isin(subjects)].copy()
    omr["chartdate"] = pd.to_datetime(omr["chartdate"])
    omr["x"] = pd.to_numeric(omr["result_value"], errors="coerce")
    omr = omr.dropna(subset=["x", "chartdate"])
    rows = []
    for name, (feat, fac, lo, open_lo, hi) in BIOMETRICS.items():
        o = omr[omr["result_name"] == name].copy()
        o["y"] = o["x"] * fac
        ok = ((o["y"] > lo) if open_lo else (o["y"] >= lo)) & (o["y"] <= hi)
        rows.append(o[ok].assign(f=feat))
    omr = pd.concat(rows)

    lab, meta = clean_labs(hosp, subjects, min_lab_events, thresholds)
    labs_by = {s: g for s, g in lab.groupby("subject_id")}
    vit_by = {s: g for s, g in vit.groupby("subject_id")}
    omr_by = {s: g for s, g in omr.groupby("subject_id")}
    w_est = pd.Timedelta(minutes=estimation_window_min)
    w_vit = pd.Timedelta(minutes=vitals_window_min)
    w_bio = pd.Timedelta(days=biometrics_window_days)
    tasks = ["est"] + [f"mon{h}" for h in horizons_min]

    slugs = {label: _slug(label) for label in meta}
    out = []
    for e in rec.itertuples(index=False):  # the per-ECG loop this baseline is about
        r = {"subject_id": e.subject_id, "study_id": e.study_id, "ecg_time": e.ecg_time}
        p = pat.loc[e.subject_id] if e.subject_id in pat.index else None
        r["sex"] = {"M": 1.0, "F": 0.0}.get(p["gender"], np.nan) if p is not None else np.nan
        r["age"] = float(p["anchor_age"]) if p is not None else np.nan
        r["race"] = _race(race.get(e.subject_id))
        g = vit_by.get(e.subject_id)
        for v in VITALS:
            r[v] = np.nan
            if g is not None:
                dt = g["charttime"] - e.ecg_time
                c = g.assign(a=dt.abs())[(dt.abs() <= w_vit) & g[v].notna()]
                if len(c):
                    r[v] = c.sort_values(["a", "charttime", v])[v].iloc[0]
        g = omr_by.get(e.subject_id)
        for feat in ("bmi", "weight", "height"):
            r[feat] = np.nan
            if g is not None:
                dt = g["chartdate"] - e.ecg_time.normalize()
                c = g.assign(a=dt.abs())[(g["f"] == feat) & (dt.abs() <= w_bio)]
                if len(c):
                    r[feat] = c.sort_values(["a", "chartdate", "seq_num", "y"])["y"].iloc[0]
        for label in meta:
            for t in tasks:
                r[f"{slugs[label]}_low_{t}"] = np.nan
                r[f"{slugs[label]}_high_{t}"] = np.nan
        g = labs_by.get(e.subject_id)
        if g is not None:
            dt = g["charttime"] - e.ecg_time
            c = g.assign(a=dt.abs(), negid=-g["labevent_id"])[(dt >= -w_est) & (dt <= w_est)]
            c = c.sort_values(["label", "a", "charttime", "negid"]).drop_duplicates("label")
            for label, cls in zip(c["label"], c["cls"]):
                r[f"{slugs[label]}_low_est"] = float(cls == -1)
                r[f"{slugs[label]}_high_est"] = float(cls == 1)
            for h in horizons_min:
                c = g[(dt >= pd.Timedelta(0)) & (dt <= pd.Timedelta(minutes=h))]
                for label, cl in c.groupby("label")["cls"]:
                    low, high = bool((cl == -1).any()), bool((cl == 1).any())
                    if not (low and high):
                        r[f"{slugs[label]}_low_mon{h}"] = float(low)
                        r[f"{slugs[label]}_high_mon{h}"] = float(high)
        out.append(r)
    df = pd.DataFrame(out)
    # drop candidates of classes that never occur
    drop = []
    for label, m in meta.items():
        for direction in ("low", "high"):
            if not m[f"{direction}_occurs"] or pd.isna(m["lower" if direction == "low" else "upper"]):
                drop += [f"{_slug(label)}_{direction}_{t}" for t in tasks]
    return df.drop(columns=drop), meta


def kept_targets(df: pd.DataFrame, fold, min_per_class: int) -> list[str]:
    """Target columns with >= min_per_class positives and negatives in fold 18 and in fold 19."""
    fold = np.asarray(fold)
    keep = []
    for col in df.columns:
        if not col.endswith(("_est", "_mon30", "_mon60", "_mon120")) or col in ("sex", "age"):
            continue
        ok = True
        for f in (18, 19):
            y = df.loc[fold == f, col]
            ok &= (y == 1).sum() >= min_per_class and (y == 0).sum() >= min_per_class
        if ok:
            keep.append(col)
    return keep


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", type=Path)
    ap.add_argument("--min-lab-events", type=int, default=200)
    a = ap.parse_args(argv)
    src = {"hosp": a.root / "mimiciv" / "hosp", "ed": a.root / "mimic-iv-ed" / "ed", "ecg": a.root / "mimic-iv-ecg"}
    df, meta = build_labels(src, a.min_lab_events)
    print(f"{len(df)} ECGs, {df.shape[1]} columns, {len(meta)} labels")


if __name__ == "__main__":
    sys.exit(main())
