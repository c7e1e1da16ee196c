"""Per-ECG features of the cohort: the patient's sex, age and race, the closest vital signs and biometrics.

Choices (the paper's text, then REFERENCE_NOTES.md where the paper is silent; ours where both are):

- Windows, closed (both ends included): vitals charted in [ecg_time - w, ecg_time + w],
  w = ``vitals_window_min`` (``CohortConfig``, 30 min), in microseconds from
  ``ecg_time``; with ``causal`` (``CohortConfig.causal``, not the paper's) [ecg_time - w,
  ecg_time]: no vital charted after the ECG, which a monitoring target may postdate; omr biometrics with ``chartdate`` in [date(ecg_time) - w, date(ecg_time) + w],
  w = ``biometrics_window_days`` (``CohortConfig``, 30 d; omr has dates only).
- Closest value: smallest absolute time difference; ties go to the earlier charttime
  (chartdate), then (omr) the lower ``seq_num``, then the smaller value.
- Demographics: ``patients.gender`` M -> 1.0, F -> 0.0, else NaN; ``anchor_age``. Race: the
  subject's earliest admission (``admittime``) with a non-empty race, else the earliest ED
  stay (``intime``) (the authors take the first row in file order); mapped by substring
  WHITE/BLACK/HISPANIC/ASIAN, else ``other`` (so ``UNKNOWN`` is ``other``, as the authors);
  a subject with no race in either table has a missing race (None), as the authors: training
  imputes it and flags it (``labecg.data``).
- Vitals: implausible values become missing before choosing the closest: plausible ranges
  (closed) temperature [50, 150] °F, heartrate [0, 700], resprate [0, 300], o2sat [0, 100],
  sbp and dbp [0, 500] (the notes' upper bounds; negative values also count as implausible).
- Biometrics: 'BMI (kg/m2)', 'Weight (Lbs)' x 0.453592 -> kg, 'Height (Inches)' x 2.54 -> cm;
  implausible dropped: BMI outside (0, 100], weight outside [20, 400] kg, height outside
  [60, 400] cm; non-numeric ``result_value`` rows are skipped and counted.

The readers take the DuckDB connection holding the tables of ``readers.load_ecgs``, the
source files and headers (``readers.source_files``, ``readers.read_header``) and the flow
table, and return one array per feature, shape (n_ecgs,), aligned to ``row_idx``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labecg import readers, util

log = util.get_logger("labecg.cohort")  # the cohort stage's messages, whichever module says them

# closed plausible ranges; outside -> missing
VITAL_BOUNDS = {"temperature": (50.0, 150.0), "heartrate": (0.0, 700.0), "resprate": (0.0, 300.0),
                "o2sat": (0.0, 100.0), "sbp": (0.0, 500.0), "dbp": (0.0, 500.0)}
# omr result_name -> (feature, factor to our unit, lower bound, lower bound open?, upper bound)
BIOMETRICS = {"BMI (kg/m2)": ("bmi", 1.0, 0.0, True, 100.0),
              "Weight (Lbs)": ("weight", 0.453592, 20.0, False, 400.0),
              "Height (Inches)": ("height", 2.54, 60.0, False, 400.0)}
BIOMETRIC_FEATURES = ("bmi", "weight", "height")
RACES = ("white", "black", "hispanic", "asian", "other")
FEATURES = ("sex", "age", "race") + readers.VITALS + BIOMETRIC_FEATURES
#: The unit (or coding) of every feature column, as the cohort stores it and ``labecg predict`` reads it.
FEATURE_UNITS = {"sex": "1 male / 0 female, or M / F", "age": "years", "race": "one of " + ", ".join(RACES),
                 "temperature": "\u00b0F", "heartrate": "beats/min", "resprate": "breaths/min", "o2sat": "%",
                 "sbp": "mmHg", "dbp": "mmHg", "bmi": "kg/m\u00b2", "weight": "kg", "height": "cm"}


def map_race(race) -> str | None:
    """Free-text race -> white, black, hispanic, asian or other (by substring, upper case); None when absent."""
    if not isinstance(race, str) or not race.strip():
        return None
    r = race.upper()
    for key in ("WHITE", "BLACK", "HISPANIC", "ASIAN"):
        if key in r:
            return key.lower()
    return "other"


def read_demographics(con, files: dict, headers: dict, ecgs: pd.DataFrame, flow: readers.Flow) -> dict:
    """Sex, age and race of each ECG's patient.

    Returns
    -------
    dict with sex (1.0 male, 0.0 female, NaN), age (float64, NaN where absent) and race
    (object: one of ``RACES``, None where no race is recorded), each an ndarray of shape
    (n_ecgs,) in the row order of ``ecgs``.
    """
    pat = readers.read_strict(files["patients"], headers["patients"],
                              {"subject_id": "BIGINT", "gender": "VARCHAR", "anchor_age": "DOUBLE"})
    n0 = len(pat)
    pat = pat.drop_duplicates("subject_id")
    flow.add("patients: duplicate subject_id", n0, len(pat), "repeated subject rows (first kept)", warn=True)
    p = ecgs[["subject_id"]].merge(pat, on="subject_id", how="left")
    n_no_pat = int((~ecgs["subject_id"].isin(pat["subject_id"])).sum())
    flow.add("patients: ECGs whose subject is in patients", len(ecgs), len(ecgs) - n_no_pat,
             "ECGs kept with sex and age missing (subject absent from patients)", warn=True)
    sex = p["gender"].map({"M": 1.0, "F": 0.0}).astype("float64").to_numpy()

    races = []
    for key, tcol in (("admissions", "admittime"), ("edstays", "intime")):
        with readers.scan_as_probe_side(con):
            r = con.execute(
                f"SELECT subject_id, race FROM (SELECT subject_id, race, row_number() OVER "
                f"(PARTITION BY subject_id ORDER BY {tcol} NULLS LAST, race) AS k FROM "
                f"{readers.scan_sql(files[key], headers[key], {'subject_id': 'BIGINT', tcol: 'TIMESTAMP'}, 'rej_' + key)} "
                f"WHERE race IS NOT NULL AND trim(race) <> '' "
                f"AND subject_id IN (SELECT subject_id FROM ecg_subjects)) WHERE k = 1").df()
        readers.report_rejects(con, f"rej_{key}", files[key], None, 0)  # warns; race only, no flow step
        races.append(r.set_index("subject_id")["race"])
    race_src = races[0].combine_first(races[1]) if len(races[1]) else races[0]
    race = np.array([map_race(r) for r in ecgs["subject_id"].map(race_src)], dtype=object)
    n_norace = int((~ecgs["subject_id"].isin(race_src.index)).sum())
    flow.add("race: ECGs whose subject has a race", len(ecgs), len(ecgs) - n_norace,
             "ECGs kept with race missing (no race in admissions or edstays; imputed in training, flagged)")
    return {"sex": sex, "age": p["anchor_age"].astype("float64").to_numpy(), "race": race}


def read_vitals(con, files: dict, headers: dict, n_ecgs: int, flow: readers.Flow, *,
                vitals_window_min: int, causal: bool) -> dict:
    """The plausible ED vital sign closest to each ECG within ``vitals_window_min`` minutes.

    Charted in [t - w, t + w], or in [t - w, t] with ``causal`` (t the ECG's time, both ends included).

    Returns
    -------
    dict: each name of ``readers.VITALS`` -> ndarray of shape (n_ecgs,), float64, NaN where none.
    """
    key = "vitalsign"
    path = files[key]
    types = {"subject_id": "BIGINT", "charttime": "TIMESTAMP", **{vital: "DOUBLE" for vital in readers.VITALS}}
    with readers.scan_as_probe_side(con):
        con.execute(f"CREATE TABLE vit AS SELECT subject_id, epoch_us(charttime) AS t, "
                    f"{', '.join(readers.VITALS)} FROM {readers.scan_sql(path, headers[key], types, 'rej_vit')} "
                    f"WHERE subject_id IN (SELECT subject_id FROM ecg_subjects)")
    n_rows = con.execute("SELECT count(*) FROM vit").fetchone()[0]
    readers.report_rejects(con, "rej_vit", path, flow, n_rows)
    n_no_time = con.execute("SELECT count(*) FROM vit WHERE t IS NULL").fetchone()[0]
    flow.add("vitalsign: charttime present", n_rows, n_rows - n_no_time, "rows without charttime", warn=True)
    for vital in readers.VITALS:
        low, high = VITAL_BOUNDS[vital]
        n_values, n_bad = con.execute(f"SELECT count({vital}), count({vital}) FILTER "
                                      f"(WHERE {vital} < {low} OR {vital} > {high}) FROM vit").fetchone()
        flow.add(f"vitalsign: {vital} plausible", n_values, n_values - n_bad,
                 f"{vital} values outside [{low:g}, {high:g}] set missing (values, not rows)", warn=True)
    window_us = vitals_window_min * 60_000_000
    after_us = 0 if causal else window_us
    width_us = max(window_us, 60_000_000)
    readers.bucket_ecgs(con, "ecg_bv", width_us, window_us, window_us)
    aggs = ", ".join(
        f"arg_min(v.{vital}, struct_pack(a := abs(v.t - e.t), t := v.t, x := v.{vital})) FILTER "
        f"(WHERE v.{vital} BETWEEN {VITAL_BOUNDS[vital][0]} AND {VITAL_BOUNDS[vital][1]}) AS {vital}"
        for vital in readers.VITALS)
    closest = con.execute(
        f"SELECT e.row_idx, {aggs} FROM ecg_bv e JOIN (SELECT *, floor(t / {width_us})::BIGINT AS b FROM vit "
        f"WHERE t IS NOT NULL) v ON v.subject_id = e.subject_id AND v.b = e.b "
        f"WHERE v.t BETWEEN e.t - {window_us} AND e.t + {after_us} GROUP BY e.row_idx").fetchnumpy()
    out = {}
    rows = np.asarray(closest["row_idx"], dtype=np.int64)
    for vital in readers.VITALS:
        values = np.full(n_ecgs, np.nan)
        values[rows] = np.ma.filled(np.ma.asarray(closest[vital], dtype=float), np.nan)
        out[vital] = values
    return out


def read_biometrics(con, files: dict, headers: dict, n_ecgs: int, flow: readers.Flow, *,
                    biometrics_window_days: int) -> dict:
    """The plausible omr BMI, weight and height closest to each ECG within ``biometrics_window_days`` days.

    Returns
    -------
    dict: bmi (kg/m²), weight (kg), height (cm) -> ndarray of shape (n_ecgs,), float64, NaN where none.
    """
    key = "omr"
    path = files[key]
    types = {"subject_id": "BIGINT", "chartdate": "DATE", "seq_num": "BIGINT"}
    names = ", ".join(f"'{k}'" for k in BIOMETRICS)
    with readers.scan_as_probe_side(con):
        con.execute(f"CREATE TABLE omr AS SELECT subject_id, chartdate, seq_num, result_name, "
                    f"result_value, TRY_CAST(result_value AS DOUBLE) AS x "
                    f"FROM {readers.scan_sql(path, headers[key], types, 'rej_omr')} WHERE result_name IN ({names}) "
                    f"AND subject_id IN (SELECT subject_id FROM ecg_subjects)")
    n_rows = con.execute("SELECT count(*) FROM omr").fetchone()[0]
    readers.report_rejects(con, "rej_omr", path, flow, n_rows)
    n_ok = con.execute("SELECT count(*) FROM omr WHERE x IS NOT NULL AND chartdate IS NOT NULL").fetchone()[0]
    if n_rows - n_ok:
        example = con.execute("SELECT result_value FROM omr WHERE x IS NULL LIMIT 1").fetchone()
        log.warning(f"{path}: column 'result_value': {n_rows - n_ok} biometric rows skipped, not a number "
                    f"or no chartdate (e.g. {example[0] if example else None!r})")
    flow.add("omr: numeric biometric rows", n_rows, n_ok, "BMI/weight/height rows with a non-numeric "
             "result_value or no chartdate", warn=True)
    cases = " ".join(f"WHEN '{k}' THEN '{f}'" for k, (f, *_rest) in BIOMETRICS.items())
    factors = " ".join(f"WHEN '{k}' THEN x * {fac}" for k, (_f, fac, *_r) in BIOMETRICS.items())
    plausible = " OR ".join(f"(result_name = '{k}' AND y {'>' if open_ else '>='} {low} AND y <= {high})"
                            for k, (_f, _fac, low, open_, high) in BIOMETRICS.items())
    con.execute(f"CREATE TABLE bio AS SELECT * FROM (SELECT subject_id, "
                f"(chartdate - DATE '1970-01-01') AS d, seq_num, CASE result_name {cases} END AS f, "
                f"CASE result_name {factors} END AS y, result_name FROM omr "
                f"WHERE x IS NOT NULL AND chartdate IS NOT NULL) WHERE {plausible}")
    n_plausible = con.execute("SELECT count(*) FROM bio").fetchone()[0]
    flow.add("omr: plausible biometrics", n_ok, n_plausible, "implausible BMI, weight or height values", warn=True)
    w = biometrics_window_days
    width_days = max(w, 1)
    # days since the epoch, as bio.d
    readers.bucket_ecgs(con, "ecg_bd", width_days, w, w, time_col="(d - DATE '1970-01-01')")
    closest = con.execute(
        f"SELECT e.row_idx, o.f, arg_min(o.y, struct_pack(a := abs(o.d - e.t), t := o.d, s := o.seq_num, "
        f"x := o.y)) AS y FROM ecg_bd e JOIN (SELECT *, floor(d / {width_days})::BIGINT AS b FROM bio) o "
        f"ON o.subject_id = e.subject_id AND o.b = e.b WHERE o.d BETWEEN e.t - {w} AND e.t + {w} "
        f"GROUP BY e.row_idx, o.f").df()
    out = {}
    for feature in BIOMETRIC_FEATURES:
        values = np.full(n_ecgs, np.nan)
        chosen = closest[closest["f"] == feature]
        values[chosen["row_idx"].to_numpy(dtype=np.int64)] = chosen["y"].to_numpy(dtype=float)
        out[feature] = values
    return out
