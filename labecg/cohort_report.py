"""What a built cohort and its source tables show on a page: thresholds, prevalence, coverage, quirks.

Pure summaries for the real-rows chapter (and any cohort): the median thresholds of
``targets.json`` beside the paper's Tables 1-2, prevalence per task, how many ECGs have each
vital sign and biometric, how many targets each ``min_per_class`` keeps, and how often the
real-MIMIC quirks of ``book/mimic.md`` (section 7) occur in the source tables. Every
function returns counts or shares, never a row of a patient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from labecg import catalog, cohort, layout, paper
from labecg.targets import TASKS, THRESHOLD_RULES
from labecg.features import BIOMETRIC_FEATURES, BIOMETRICS, VITAL_BOUNDS
from labecg.readers import VITALS

__all__ = ["thresholds_beside_paper", "prevalence_by_task", "feature_coverage", "targets_kept",
           "compare_threshold_rules", "count_quirks", "QUIRKS"]


def thresholds_beside_paper(targets: list[dict]) -> pd.DataFrame:
    """The median thresholds of a cohort beside the paper's, for the labs and directions in both.

    Parameters
    ----------
    targets : list of dict
        ``targets.json``'s ``targets`` (label, direction, threshold, unit; any tasks).

    Returns
    -------
    DataFrame, one row per (lab, direction) in both, in the paper's order, columns ``value``
    (the paper's name), ``direction``, ``threshold``, ``unit`` (ours), ``paper_threshold``,
    ``paper_unit``. The paper prints one threshold per lab and direction across its tables.
    """
    ours = pd.DataFrame([{"value": catalog.paper_name(t["label"]), "direction": t["direction"],
                          "threshold": t["threshold"], "unit": t["unit"]} for t in targets],
                        columns=["value", "direction", "threshold", "unit"]).drop_duplicates(["value", "direction"])
    published = (paper.read_paper_tables()[["value", "direction", "threshold", "unit"]]
                 .drop_duplicates(["value", "direction"])
                 .rename(columns={"threshold": "paper_threshold", "unit": "paper_unit"}))
    both = published.merge(ours, on=["value", "direction"], how="inner")
    return both[["value", "direction", "threshold", "unit", "paper_threshold", "paper_unit"]].reset_index(drop=True)


def prevalence_by_task(targets: list[dict]) -> pd.DataFrame:
    """Labelled (ECG, target) cells and the share that are abnormal, per task, over all folds.

    Parameters
    ----------
    targets : list of dict
        ``targets.json``'s ``targets`` with their ``counts`` (pos, neg per split).

    Returns
    -------
    DataFrame indexed by task (``targets.TASKS`` order) with integer columns ``targets``,
    ``labelled`` (cells with a label), ``positive`` and float ``prevalence``
    (positive / labelled; NaN when nothing is labelled).
    """
    rows = {}
    for task in TASKS:
        mine = [t for t in targets if t["task"] == task]
        pos = sum(t["counts"][s]["pos"] for t in mine for s in t["counts"])
        neg = sum(t["counts"][s]["neg"] for t in mine for s in t["counts"])
        rows[task] = {"targets": len(mine), "labelled": pos + neg, "positive": pos,
                      "prevalence": pos / (pos + neg) if pos + neg else np.nan}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "task"
    return frame.astype({"targets": "int64", "labelled": "int64", "positive": "int64"})


def _prevalence(target: dict) -> float:
    pos = sum(c["pos"] for c in target["counts"].values())
    neg = sum(c["neg"] for c in target["counts"].values())
    return pos / (pos + neg) if pos + neg else np.nan


def compare_threshold_rules(median: list[dict], row: list[dict], n_moves: int = 10) -> dict:
    """Two cohorts that differ only in the threshold rule: targets kept, prevalence, the targets that move most.

    Parameters
    ----------
    median, row : list of dict
        ``targets.json``'s ``targets`` of the cohort (or run) under ``--thresholds median`` and
        under ``--thresholds row``, with their ``counts`` (pos, neg per split).
    n_moves : int
        Rows of ``moves``.

    Returns
    -------
    dict with
    ``kept`` : DataFrame, one row per rule (``rule``: ``targets.THRESHOLD_RULES``' words),
        targets kept per task (columns ``targets.TASKS``), ``all``, ``labelled`` and
        ``positive`` (cells over all splits) and ``prevalence`` (positive / labelled);
    ``moves`` : DataFrame of the targets kept under both rules whose prevalence (over all
        splits) differs most, largest absolute difference first (ties: target name):
        ``target``, ``prevalence_median``, ``prevalence_row``, ``difference`` (row - median);
        at most ``n_moves`` rows;
    ``only_median``, ``only_row`` : list of str, targets kept under one rule only (sorted).
    """
    kept = []
    for rule, targets in (("median", median), ("row", row)):
        by_task = prevalence_by_task(targets)
        kept.append({"rule": THRESHOLD_RULES[rule], **by_task["targets"].to_dict(), "all": len(targets),
                     "labelled": int(by_task["labelled"].sum()), "positive": int(by_task["positive"].sum()),
                     "prevalence": (by_task["positive"].sum() / by_task["labelled"].sum()
                                    if by_task["labelled"].sum() else np.nan)})
    a = {t["name"]: _prevalence(t) for t in median}
    b = {t["name"]: _prevalence(t) for t in row}
    both = sorted(set(a) & set(b))
    moves = pd.DataFrame({"target": both, "prevalence_median": [a[n] for n in both],
                          "prevalence_row": [b[n] for n in both]})
    moves["difference"] = moves["prevalence_row"] - moves["prevalence_median"]
    moves = (moves.assign(_size=moves["difference"].abs()).sort_values(["_size", "target"], ascending=[False, True])
             .drop(columns="_size").head(n_moves).reset_index(drop=True))
    return {"kept": pd.DataFrame(kept), "moves": moves, "only_median": sorted(set(a) - set(b)),
            "only_row": sorted(set(b) - set(a))}


def feature_coverage(frame: pd.DataFrame) -> pd.DataFrame:
    """How many ECGs of a cohort have each vital sign and biometric.

    Parameters
    ----------
    frame : DataFrame of shape (n_ecgs, ...)
        ``cohort.parquet`` (the columns of ``readers.VITALS`` and ``BIOMETRIC_FEATURES``).

    Returns
    -------
    DataFrame indexed by feature (vitals: within ``vitals_window_min`` of the ECG;
    biometrics: within ``biometrics_window_days``) with ``kind`` (vital sign, biometric),
    integer ``ecgs`` (with a value) and float ``share`` (of all ECGs; NaN for none).
    """
    n = len(frame)
    rows = {}
    for kind, names in (("vital sign", VITALS), ("biometric", BIOMETRIC_FEATURES)):
        for name in names:
            have = int(frame[name].notna().sum())
            rows[name] = {"kind": kind, "ecgs": have, "share": have / n if n else np.nan}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "feature"
    return out.astype({"ecgs": "int64"})


def targets_kept(targets: list[dict], min_per_class: Iterable[int] = (10, 5, 3, 2, 1)) -> pd.DataFrame:
    """Targets that the rule of ``cohort.keep_targets`` keeps, per task, at each ``min_per_class``.

    Parameters
    ----------
    targets : list of dict
        ``targets.json``'s ``targets`` of a cohort built with ``min_per_class=0`` (every
        candidate kept), with their ``counts``.
    min_per_class : iterable of int
        Values of the rule (the paper's is 10).

    Returns
    -------
    DataFrame indexed by ``min_per_class`` with one integer column per task of
    ``targets.TASKS`` and ``all``: targets with at least that many positives and negatives in
    both the validation and the test fold.
    """
    rows = {}
    for k in min_per_class:
        counts = {task: 0 for task in TASKS}
        for t in targets:
            c = t["counts"]
            split = {s: {"pos": np.array([c[s]["pos"]]), "neg": np.array([c[s]["neg"]])} for s in ("val", "test")}
            counts[t["task"]] += int(cohort.keep_targets(split, int(k))[0])
        rows[int(k)] = {**counts, "all": sum(counts.values())}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "min_per_class"
    return out


# ---------------------------------------------------------------------------------------
# quirks of the source tables

# the quirks of book/mimic.md section 7 that the tables show (the WFDB ones need waveforms):
# key -> (table, what), and its SQL over that table's columns (all read as text); a count
# "of" the table's rows
_NUM = "TRY_CAST({} AS DOUBLE)"
QUIRKS: dict[str, tuple[str, str]] = {
    "text_only_result": ("labevents", "text-only result: `value` without `valuenum` (`ERROR`, `NEG`, ...)"),
    "deidentified_value": ("labevents", "`___` (de-identified) `value` with `valuenum` present"),
    "limit_text": ("labevents", "`value` beyond an assay's limit (`<0.01`, `>300`)"),
    "range_empty": ("labevents", "reference range empty (both bounds)"),
    "range_one_sided": ("labevents", "one-sided reference range"),
    "range_zero": ("labevents", "both reference bounds 0"),
    "several_itemids": ("d_labitems", "label and fluid with several itemids in `labevents` (label–fluid pairs)"),
    "unit_spellings": ("labevents", "rows of a label and fluid in a less frequent unit spelling"),
    "temperature_celsius": ("vitalsign", f"temperature below {VITAL_BOUNDS['temperature'][0]:g} °F (°C recorded)"),
    "pain_free_text": ("vitalsign", "`pain` as free text"),
    "omr_text_biometric": ("omr", "BMI, weight or height that is not a number"),
    "omr_blood_pressure_text": ("omr", "blood pressure as text (`128/74`), not read"),
    "omr_implausible": ("omr", "BMI, weight or height outside its plausible range"),
    "omr_same_day": ("omr", "one biometric recorded twice or more on one day (subject–day–name groups)"),
    "unlisted_ecgs": ("record_list", "ECGs absent from MIMIC-IV-ECG-ICD (all, when it is not given)"),
}


def _scan(path: Path) -> str:
    return f"read_csv('{Path(path).as_posix()}', header = true, all_varchar = true)"


def count_quirks(hosp: Path, ed: Path, ecg: Path, ecg_icd: Optional[Path] = None) -> pd.DataFrame:
    """How often each real-MIMIC quirk of the tables (:data:`QUIRKS`) occurs in a data source.

    Parameters
    ----------
    hosp, ed, ecg : Path
        The MIMIC-IV ``hosp`` and ``ed`` folders and the MIMIC-IV-ECG root
        (``layout.MIMIC_TABLES`` names the files); read with DuckDB, out of core.
    ecg_icd : Path, optional
        ``records_w_diag_icd10.csv``; None (or absent) counts every ECG as unlisted.

    Returns
    -------
    DataFrame indexed by quirk key with ``table``, ``quirk`` (what it is) and integer
    ``count`` and ``of`` (the table's rows; for the pair counts, the label–fluid pairs or
    subject–day–name groups present).
    """
    import duckdb

    files = {name: Path({"hosp": hosp, "ed": ed, "ecg": ecg}[source]) / file
             for name, (source, file) in layout.MIMIC_TABLES.items() if source in ("hosp", "ed", "ecg")}
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.InvalidInputException:
        pass  # a Jupyter kernel without ipywidgets refuses the setting; no bar shows there anyway
    out: dict[str, tuple[int, int]] = {}

    def one(sql: str) -> tuple[int, int]:
        count, total = con.execute(sql).fetchone()
        return int(count or 0), int(total or 0)

    lab = _scan(files["labevents"])
    lo, hi = _NUM.format("ref_range_lower"), _NUM.format("ref_range_upper")
    row = con.execute(
        f"SELECT count(*), "
        f"count(*) FILTER (WHERE nullif(trim(value), '') IS NOT NULL AND {_NUM.format('valuenum')} IS NULL), "
        f"count(*) FILTER (WHERE trim(value) = '___' AND {_NUM.format('valuenum')} IS NOT NULL), "
        f"count(*) FILTER (WHERE regexp_matches(trim(value), '^[<>]')), "
        f"count(*) FILTER (WHERE {lo} IS NULL AND {hi} IS NULL), "
        f"count(*) FILTER (WHERE ({lo} IS NULL) <> ({hi} IS NULL)), "
        f"count(*) FILTER (WHERE {lo} = 0 AND {hi} = 0) FROM {lab}").fetchone()
    n_lab = int(row[0])
    for key, count in zip(("text_only_result", "deidentified_value", "limit_text", "range_empty",
                           "range_one_sided", "range_zero"), row[1:]):
        out[key] = (int(count), n_lab)
    joined = (f"(SELECT l.itemid, l.valueuom, d.label, d.fluid FROM {lab} l JOIN {_scan(files['d_labitems'])} d "
              f"USING (itemid))")
    out["several_itemids"] = one(f"SELECT count(*) FILTER (WHERE n > 1), count(*) FROM (SELECT label, fluid, "
                                 f"count(DISTINCT itemid) AS n FROM {joined} GROUP BY ALL)")
    # per label and fluid: rows whose unit spelling is not the most frequent one
    out["unit_spellings"] = one(
        f"SELECT sum(n) FILTER (WHERE k > 1), sum(n) FROM (SELECT n, row_number() OVER (PARTITION BY label, fluid "
        f"ORDER BY n DESC, valueuom) AS k FROM (SELECT label, fluid, valueuom, count(*) AS n FROM {joined} "
        f"WHERE nullif(trim(valueuom), '') IS NOT NULL GROUP BY ALL))")

    vit = _scan(files["vitalsign"])
    out["temperature_celsius"] = one(
        f"SELECT count(*) FILTER (WHERE {_NUM.format('temperature')} < {VITAL_BOUNDS['temperature'][0]}), "
        f"count(*) FROM {vit}")
    out["pain_free_text"] = one(f"SELECT count(*) FILTER (WHERE nullif(trim(pain), '') IS NOT NULL AND "
                                f"{_NUM.format('pain')} IS NULL), count(*) FROM {vit}")

    omr = _scan(files["omr"])
    names = ", ".join(f"'{k}'" for k in BIOMETRICS)
    plausible = " OR ".join(
        f"(result_name = '{k}' AND {_NUM.format('result_value')} * {fac} {'>' if open_ else '>='} {low} "
        f"AND {_NUM.format('result_value')} * {fac} <= {high})" for k, (_f, fac, low, open_, high) in BIOMETRICS.items())
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE result_name IN ({names}) AND {_NUM.format('result_value')} IS NULL), "
        f"count(*) FILTER (WHERE result_name LIKE 'Blood Pressure%' AND result_value LIKE '%/%'), "
        f"count(*) FILTER (WHERE result_name IN ({names}) AND {_NUM.format('result_value')} IS NOT NULL "
        f"AND NOT ({plausible})) FROM {omr}").fetchone()
    for key, count in zip(("omr_text_biometric", "omr_blood_pressure_text", "omr_implausible"), row[1:]):
        out[key] = (int(count), int(row[0]))
    out["omr_same_day"] = one(f"SELECT count(*) FILTER (WHERE n > 1), count(*) FROM (SELECT subject_id, chartdate, "
                              f"result_name, count(*) AS n FROM {omr} WHERE result_name IN ({names}) GROUP BY ALL)")

    records = _scan(files["record_list"])
    if ecg_icd is not None and Path(ecg_icd).is_file():
        out["unlisted_ecgs"] = one(
            f"SELECT count(*) FILTER (WHERE study_id NOT IN (SELECT study_id FROM {_scan(ecg_icd)} "
            f"WHERE nullif(trim(strat_fold), '') IS NOT NULL)), count(*) FROM {records}")
    else:
        n = con.execute(f"SELECT count(*) FROM {records}").fetchone()[0]
        out["unlisted_ecgs"] = (int(n), int(n))
    con.close()
    frame = pd.DataFrame([{"key": key, "table": QUIRKS[key][0], "quirk": QUIRKS[key][1],
                           "count": out[key][0], "of": out[key][1]} for key in QUIRKS]).set_index("key")
    return frame.astype({"count": "int64", "of": "int64"})
