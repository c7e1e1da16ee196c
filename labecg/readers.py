"""Reading the MIMIC CSV tables for the cohort with DuckDB and pandas, every skipped row counted.

Small tables (``record_list.csv``, ``patients``, ``d_labitems``, ``records_w_diag_icd10.csv``)
are read whole by pandas and refused on any entry that does not parse (``read_strict``).
Large ones (``labevents``, ``vitalsign``, ``omr``, ``admissions``, ``edstays``) are streamed by
DuckDB from the gzip CSVs with explicit column types (``scan_sql``); their unparsable rows are
skipped, warned about and counted (``report_rejects``). Windows around each ECG are bucketed
hash joins (``bucket_ecgs``): no Python loop per row or per ECG. Every filter of the cohort
stage adds a step to ``Flow``, written as ``cohort_flow.csv``.

The ECGs: one row per ``record_list.csv`` row; identical duplicate rows kept once (counted),
a ``study_id`` repeated with other contents refused; sorted by ``subject_id``, ``ecg_time``,
``study_id``, which is the row order of ``cohort.parquet``.
"""

from __future__ import annotations

import csv
import gzip
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from labecg import layout, util

log = util.get_logger("labecg.cohort")  # the cohort stage's messages, whichever module says them

# The ED vital signs: columns of vitalsign and feature names of the cohort (features.FEATURES).
VITALS = ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp")
# Columns each source must have (others are read as text and ignored).
REQUIRED = {
    "patients": ("subject_id", "gender", "anchor_age"),
    "admissions": ("subject_id", "admittime", "race"),
    "labevents": ("labevent_id", "subject_id", "itemid", "charttime", "valuenum", "valueuom",
                  "ref_range_lower", "ref_range_upper"),
    "d_labitems": ("itemid", "label", "fluid"),
    "omr": ("subject_id", "chartdate", "seq_num", "result_name", "result_value"),
    "edstays": ("subject_id", "intime", "race"),
    "vitalsign": ("subject_id", "charttime") + VITALS,
    "record_list": ("subject_id", "study_id", "ecg_time", "path"),
    "records_w_diag_icd10": ("study_id", "subject_id", "strat_fold"),
}


class Flow:
    """Rows in and out of every filter, for cohort_flow.csv."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, step: str, rows_in: int, rows_out: int, reason: str, warn: bool = False):
        rows_in, rows_out = int(rows_in), int(rows_out)
        self.rows.append({"step": step, "rows_in": rows_in, "rows_out": rows_out,
                          "dropped": rows_in - rows_out, "reason": reason})
        if rows_in != rows_out:
            (log.warning if warn else log.info)(f"{step}: {rows_in - rows_out} of {rows_in} {reason}")


def source_files(hosp: Path, ed: Path, ecg: Path, ecg_icd: Optional[Path] = None) -> dict[str, Path]:
    """The file of every table in ``REQUIRED``, from the four sources (``CohortConfig``'s paths).

    A ``.csv.gz`` that is absent but unpacked beside (``.csv``) is read unpacked; a missing
    file raises ``FileNotFoundError`` naming it and its table. Without ``ecg_icd`` (None)
    the result has no ``records_w_diag_icd10`` entry.
    """
    sources = {"hosp": hosp, "ed": ed, "ecg": ecg, "ecg_icd": ecg_icd}
    files = {table: sources[source] / name if name else sources[source]
             for table, (source, name) in layout.MIMIC_TABLES.items()
             if table in REQUIRED and sources[source] is not None}
    for key, path in files.items():
        if not path.exists() and path.suffix == ".gz" and path.with_suffix("").exists():
            files[key] = path.with_suffix("")  # an unpacked copy is read as well
        if not files[key].is_file():
            raise FileNotFoundError(f"{files[key]}: file not found (the {key} table of the "
                                    f"{'ecg_icd' if key == 'records_w_diag_icd10' else 'sources'})")
    return files


def read_header(path: Path, required: tuple[str, ...]) -> list[str]:
    """Return the column names of a CSV (gzip or plain); raise if a required one is absent."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as f:
            header = next(csv.reader(f), None)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the header row ({e})") from e
    if not header:
        raise ValueError(f"{path}: empty file; expected a header row with columns {list(required)}")
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise KeyError(f"{path}: missing columns {missing}; expected {list(required)}; found {header}")
    return header


@contextmanager
def scan_as_probe_side(con):
    """Within: DuckDB keeps each join's sides as written (the right side builds the hash table).

    For a statement that filters a file scan by a join with a table, e.g. ``read_csv(...)
    WHERE subject_id IN (SELECT subject_id FROM ecg_subjects)``. DuckDB estimates a CSV scan
    at a few dozen rows (whatever its size), so it would otherwise build the hash table on the
    scan and probe it with the table: at 158M lab rows that took 196 s against 107 s with the
    scan as the probe side (``bench/cohort.py --tile 228``'s source, 2 cores).

    The setting holds for the whole database (every cursor of ``con``), so a block inside one
    that is already on (the features' scans beside the labevents scan) leaves it alone: only
    the outermost block turns it back on.
    """
    before = con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
    disabled = [name.strip() for name in before.split(",") if name.strip()]
    if "build_side_probe_side" in disabled:
        yield
        return
    con.execute(f"SET disabled_optimizers = '{','.join(disabled + ['build_side_probe_side'])}'")
    try:
        yield
    finally:
        con.execute(f"SET disabled_optimizers = '{before}'" if disabled else "RESET disabled_optimizers")


def scan_sql(path: Path, header: list[str], types: dict[str, str], rejects: Optional[str] = None) -> str:
    """SQL for DuckDB's read_csv of ``path`` with explicit column types (text where unset)."""
    cols = "{" + ", ".join(f"'{c}': '{types.get(c, 'VARCHAR')}'" for c in header) + "}"
    opts = (f"header=true, auto_detect=false, delim=',', quote='\"', escape='\"', "
            f"columns={cols}, null_padding=false")
    if rejects:
        opts += f", store_rejects=true, rejects_table='{rejects}', rejects_scan='{rejects}_scan'"
    p = str(path).replace("'", "''")
    return f"read_csv('{p}', {opts})"


def report_rejects(con, rejects: str, path: Path, flow: Optional[Flow], rows_ok: int) -> int:
    """Warn, once per column, about rows DuckDB could not parse; add a flow step; return how many."""
    rej = con.execute(f"SELECT column_name, count(DISTINCT line) AS n, min(line) AS line, "
                      f"any_value(error_message) AS msg FROM {rejects} GROUP BY 1 ORDER BY 1").fetchall()
    n_total = con.execute(f"SELECT count(DISTINCT line) FROM {rejects}").fetchone()[0]
    for col, n, line, msg in rej:
        log.warning(f"{path}: skipped {n} rows with an unusable value in column {col!r} "
                    f"(first at line {line}: {msg.splitlines()[0]})")
    if flow is not None:
        flow.add(f"read {path.name}", rows_ok + n_total, rows_ok,
                 "rows skipped: a value could not be parsed (see warnings)", warn=True)
    return n_total


def read_strict(path: Path, header: list[str], types: dict[str, str]) -> pd.DataFrame:
    """Read a small table in file order; raise naming file, column, line and value on any
    entry that does not parse as its type (``types``: column -> BIGINT, DOUBLE, TIMESTAMP, VARCHAR)."""
    # read as Python strings, parsed below: 2.7 s against 6.4 s for pandas' Arrow strings (1.7M rows)
    raw = pd.read_csv(path, usecols=list(types), dtype=object, keep_default_na=False, na_values=[""])
    out = {}
    for col, typ in types.items():
        s = raw[col]
        if typ == "VARCHAR":
            out[col] = s
            continue
        if typ == "TIMESTAMP":
            parsed = pd.to_datetime(s, format="ISO8601", errors="coerce")
        else:
            parsed = pd.to_numeric(s, errors="coerce")
        bad = s.notna() & parsed.isna()
        if typ == "BIGINT":
            bad |= parsed.notna() & (parsed != parsed.round())
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path}: column {col!r} line {i + 2}: cannot parse {s.iloc[i]!r} as "
                             f"{typ.lower()} ({int(bad.sum())} such rows)")
        out[col] = parsed
    return pd.DataFrame(out)


def count_scanned_rows(con) -> Optional[int]:
    """Rows the last query's CSV scan read, from DuckDB's profiler; None if unavailable."""
    try:
        prof = json.loads(con.get_profiling_information(format="json"))
    except Exception:  # profiler layout is not a stable API
        return None
    stack = list(prof.get("operator", prof.get("children", [])))
    while stack:
        node = stack.pop()
        if node.get("extra_info", {}).get("Function") == "READ_CSV":
            return int(node.get("rows_scanned") or node.get("intermediate_rows"))
        stack.extend(node.get("children", []))
    return None


def read_ecgs(path: Path, header: list[str], flow: Flow) -> pd.DataFrame:
    """The ECG studies of ``record_list.csv``, one row each, in cohort order.

    Returns
    -------
    DataFrame with columns subject_id, study_id (int64), ecg_time (datetime64), path (str)
    and row_idx (int64, 0 .. n_ecgs - 1: the row in this order), sorted by subject_id,
    ecg_time, study_id.
    """
    ecgs = read_strict(path, header,
                       {"subject_id": "BIGINT", "study_id": "BIGINT", "ecg_time": "TIMESTAMP", "path": "VARCHAR"})
    if ecgs.empty:
        raise ValueError(f"{path}: no ECG rows; expected one row per ECG study")
    for col in ("subject_id", "study_id", "ecg_time", "path"):
        if ecgs[col].isna().any():
            i = int(np.flatnonzero(ecgs[col].isna().to_numpy())[0])
            raise ValueError(f"{path}: column {col!r} is empty at line {i + 2}; every ECG needs it")
    n0 = len(ecgs)
    # only rows whose study_id repeats can be duplicates: the comparison of whole rows (the path
    # text: 4 s at 1.7M rows) is left to them
    repeated = ecgs["study_id"].duplicated(keep=False).to_numpy()
    if repeated.any():
        ecgs = ecgs[~(repeated & ecgs.duplicated().to_numpy())]
    flow.add("record_list: duplicate rows", n0, len(ecgs), "identical duplicate rows", warn=True)
    dup = ecgs["study_id"].duplicated(keep=False)
    if dup.any():
        raise ValueError(f"{path}: column 'study_id' repeats with different contents, e.g. study "
                         f"{int(ecgs.loc[dup, 'study_id'].iloc[0])} ({int(dup.sum())} rows)")
    ecgs = ecgs.sort_values(["subject_id", "ecg_time", "study_id"], kind="stable").reset_index(drop=True)
    ecgs["row_idx"] = np.arange(len(ecgs), dtype=np.int64)
    return ecgs


def load_ecgs(con, ecgs: pd.DataFrame) -> None:
    """Create the DuckDB tables the feature and label queries join with.

    ``ecg``: row_idx, subject_id, study_id, t_us (``ecg_time`` in microseconds since the
    epoch), d (the date of ``ecg_time``); ``ecg_subjects``: the distinct subject_ids.
    ``ecgs`` is what ``read_ecgs`` returns.
    """
    con.register("ecg_df", ecgs[["row_idx", "subject_id", "study_id", "ecg_time"]])
    con.execute("CREATE TABLE ecg AS SELECT row_idx, subject_id, study_id, "
                "epoch_us(ecg_time) AS t_us, CAST(ecg_time AS DATE) AS d FROM ecg_df")
    con.execute("CREATE TABLE ecg_subjects AS SELECT DISTINCT subject_id FROM ecg")


def bucket_ecgs(con, name: str, width: int, before: int, after: int, time_col: str = "t_us"):
    """Create table ``name``: each row of ``ecg`` once per time bucket its window touches.

    The window is [t - before, t + after], t the SQL expression ``time_col`` over ``ecg``
    (default ``t_us``, microseconds); ``width``, ``before`` and ``after`` are in its unit.
    Columns: row_idx, subject_id, t, b (bucket ``floor(time / width)``); joining the events
    on subject_id and their own bucket finds every event of the window (then filtered exactly).
    """
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT row_idx, subject_id, {time_col} AS t, "
                f"unnest(range(floor(({time_col} - {before}) / {width})::BIGINT, "
                f"floor(({time_col} + {after}) / {width})::BIGINT + 1)) AS b FROM ecg")
