"""The lab labels of the cohort: lab rows, units, thresholds, and the estimation and monitoring targets.

Choices (the paper's text, then REFERENCE_NOTES.md where the paper is silent; ours where both are):

- Time windows, closed (both ends included), measured in microseconds from ``ecg_time``:
  estimation labs charted in [ecg_time - w, ecg_time + w], w = ``estimation_window_min``
  (60 min); monitoring labs in [ecg_time, ecg_time + h], h in ``targets.HORIZONS_MIN`` (30, 60, 120);
  with ``causal`` (``CohortConfig.causal``, not the paper's) monitoring labs in (ecg_time,
  ecg_time + h]: a lab charted at the ECG's own time is not one the ECG can foretell.
- Last earlier value (:func:`last_value_parts`, the clinician's baseline of the results
  chapter): per ECG and label the value of the latest row charted strictly before
  ecg_time - c, for each cutoff c (0: before the ECG; ``estimation_window_min``: before
  the estimation window opens, so never the estimation label's own row); no lower limit
  (any earlier row of the source). Ties on charttime: the higher ``labevent_id``, then the
  larger value. The rows are those that make the targets (the label's fluid and unit).
- Closest value: smallest absolute time difference; ties go to the earlier charttime, then
  the higher ``labevent_id``.
- Labs: ``labevents`` rows of patients with at least one ECG only (so all label statistics
  below, fluid counts, units, row counts and medians, are over those patients' rows, as in
  the authors' code); joined to ``d_labitems`` on itemid (several itemids may share a label
  and fluid: they are one test); rows without valuenum or charttime dropped (text-only
  values such as 'ERROR' or '>25000'); labels 'H', 'I', 'L', 'other' dropped; rows whose two
  reference bounds both equal 0 dropped (a row with one or two empty bounds is kept; its
  empty bound does not enter the medians); repeated ``labevent_id`` kept once (the earliest
  charttime, then the smallest value, subject_id, itemid, unit and bounds: never the file order); per label
  only its most frequent fluid (ties: alphabetical); units: the authors' table
  (``LABEL_UNITS``, their ``preprocessing.py``) names the unit of about 20 labels, every
  spelling of those labels is read in it with factor 1, except the spellings of another
  quantity they drop (``DROPPED_UNITS``); for any other label the most frequent spelling is
  the unit (ties: alphabetical), other spellings that name the same quantity (equal up to
  case and spaces, or listed in ``UNIT_SYNONYMS``) are relabelled with factor 1, and rows
  with a unit of another quantity are dropped and counted (the authors keep them); rows
  without a unit keep their value; labels with fewer than ``min_lab_events`` rows dropped.
- Thresholds: per label the median of ``ref_range_lower`` and of ``ref_range_upper`` over
  the label's rows of ECG patients (NULLs ignored; even counts averaged); low if valuenum <
  lower median, high if > upper median (``thresholds="median"``, the paper's rule). With
  ``thresholds="row"`` (``CohortConfig.thresholds``, ours) each row is classed by its own
  bounds: low if valuenum < its ``ref_range_lower``, high if > its ``ref_range_upper``, the
  label's median of that side where the row's bound is empty (NULL); the target's recorded
  ``threshold`` is then that median fallback, and the flow table counts the rows that took it.
  A label yields a target per abnormal class that occurs among its rows (under the rule in use).
- Estimation target: the closest row in the window; 1.0 if its class is the target's
  direction, else 0.0; NaN if the window is empty. Monitoring target: NaN if the window is
  empty or holds both a low and a high row; else 1.0 if it holds a row of the target's
  direction, else 0.0.
- Values (ours, not the paper's; :func:`value_column`): the estimation value is the
  ``valuenum`` of the row the estimation label used (the closest in [t - w, t + w], same
  ties); the monitoring value at horizon h is the ``valuenum`` of the row closest to t + h
  within [t + h - tol, t + h + tol], tol = ``value_tolerance_min`` (ties: earlier charttime,
  then higher ``labevent_id``), the same with or without ``causal``; NaN when no row. In the
  label's unit (every kept spelling has factor 1).

The SQL below applies these rules with bucketed joins; the pandas form of the same rules, a
data frame at a time, is ``tests/reference/cohort_rules.py``. At full scale the window targets
and the last values are made a part at a time (:func:`lab_parts`: groups of labels x ranges of
subject_id for the targets, ranges of subject_id for the last values, sized from DuckDB's
memory limit), so that their joins and aggregates stay in memory instead of spilling to disk;
the results are the same whatever the parts.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from labecg import catalog, readers, util
from labecg.targets import HORIZONS_MIN, TASKS, THRESHOLD_RULES, horizon_min, lab_slug, target_name

log = util.get_logger("labecg.cohort")  # the cohort stage's messages, whichever module says them

DROPPED_LABELS = ("H", "I", "L", "other")
# The authors' unit table (preprocessing.py, "same consistency"): every spelling of these
# labels is read in this unit, factor 1 (e.g. Protein/Creatinine Ratio 'Ratio' is mg/mg,
# MCHC '%' is g/dL: MIMIC prints both ways, same numbers). One change: they name Prostate
# Specific Antigen's unit mg/dL; MIMIC reports it in ng/mL, and the values are ng/mL.
LABEL_UNITS: dict[str, str] = {
    "pH": "units", "Specific Gravity": " ", "MCHC": "g/dL", "Protein/Creatinine Ratio": "mg/mg",
    "D-Dimer": "ng/mL", "Thyroid Stimulating Hormone": "uIU/mL", "Cortisol": "ug/dL", "RDW-SD": "fL",
    "Albumin/Creatinine, Urine": "mg/g", "C-Reactive Protein": "mg/L", "eAG": "mg/dL",
    "Absolute CD3 Count": "#/uL", "Absolute CD4 Count": "#/uL", "Absolute CD8 Count": "#/uL",
    "CD4/CD8 Ratio": "ratio", "WBC Count": "K/uL", "Prostate Specific Antigen": "ng/mL",
}
# Spellings of another quantity that the authors drop ("different and minority"): (label, spelling).
DROPPED_UNITS: frozenset = frozenset({("Absolute Lymphocyte Count", "#/uL"), ("D-Dimer", "ng/mL DDU")})
# Labels outside LABEL_UNITS: spellings that name the same quantity (factor 1); label None = any label.
UNIT_SYNONYMS: dict[Optional[str], tuple[frozenset, ...]] = {
    None: (frozenset({"K/uL", "10^3/uL", "x10E3/uL", "THOU/uL"}),
           frozenset({"m/uL", "10^6/uL", "x10E6/uL", "MIL/uL"}),
           frozenset({"IU/L", "U/L"})),
}


def choose_fluid(counts: pd.DataFrame) -> pd.Series:
    """Per label its most frequent fluid.

    Parameters
    ----------
    counts : DataFrame with columns label, fluid, n (rows of that label and fluid)

    Returns
    -------
    Series indexed by label: the fluid with most rows (ties: alphabetically first).
    """
    ordered = counts.sort_values(["label", "n", "fluid"], ascending=[True, False, True])
    return ordered.drop_duplicates("label").set_index("label")["fluid"]


def _unit_key(unit: str) -> str:
    return "".join(unit.split()).lower()


def dropped_unit(label: str, unit) -> bool:
    """Whether rows of ``label`` in this unit spelling are dropped by the authors' table (``DROPPED_UNITS``)."""
    return isinstance(unit, str) and any(label == lab and _unit_key(unit) == _unit_key(spelling)
                                         for lab, spelling in DROPPED_UNITS)


def same_quantity(label: str, unit_a: str, unit_b: str) -> bool:
    """Whether two unit spellings of a label name the same quantity (conversion factor 1).

    For a label of ``LABEL_UNITS`` every spelling does, except those of ``DROPPED_UNITS``;
    for the others, spellings equal up to case and spaces or in one group of ``UNIT_SYNONYMS``.
    """
    if dropped_unit(label, unit_a) or dropped_unit(label, unit_b):
        return False
    if label in LABEL_UNITS or _unit_key(unit_a) == _unit_key(unit_b):
        return True
    for group in UNIT_SYNONYMS.get(None, ()) + UNIT_SYNONYMS.get(label, ()):
        keys = {_unit_key(g) for g in group}
        if _unit_key(unit_a) in keys and _unit_key(unit_b) in keys:
            return True
    return False


def harmonize_units(counts: pd.DataFrame) -> pd.DataFrame:
    """Unit map per label: the most frequent spelling is the unit, others relabelled or dropped.

    Parameters
    ----------
    counts : DataFrame with columns label, valueuom (NaN = none given), n (rows)
        Rows after the fluid choice.

    Returns
    -------
    ``counts`` plus columns unit (``LABEL_UNITS``' unit, else the label's most frequent
    spelling not in ``DROPPED_UNITS``; ties alphabetical) and keep (bool: not a dropped
    spelling, and the same quantity as the unit per ``same_quantity`` or no unit given).
    Kept rows keep their value (every listed synonym has factor 1).
    """
    dropped = [dropped_unit(lab, c) for lab, c in zip(counts["label"], counts["valueuom"])]
    named = counts[counts["valueuom"].notna() & ~np.asarray(dropped, dtype=bool)]
    named = named.sort_values(["label", "n", "valueuom"], ascending=[True, False, True])
    unit = named.drop_duplicates("label").set_index("label")["valueuom"]
    out = counts.assign(unit=[LABEL_UNITS.get(lab, unit.get(lab, np.nan)) for lab in counts["label"]])
    out["keep"] = [not drop and (pd.isna(c) or pd.isna(u) or same_quantity(lab, u, c))
                   for lab, u, c, drop in zip(out["label"], out["valueuom"], out["unit"], dropped)]
    return out


#: The DuckDB table of :func:`label_labs`: one row per (ECG, label) pair with a lab row in a
#: window; columns row_idx, label_idx and ``target_column(direction_idx, task_idx)`` per
#: direction (0 low, 1 high) and task (``targets.TASKS``): FLOAT 1.0, 0.0 or NULL; and
#: ``value_table_column(task_idx)`` per task: DOUBLE, the value (NULL: none).
TARGETS_TABLE = "lab_targets"


def target_column(direction_idx: int, task_idx: int) -> str:
    """Column of :data:`TARGETS_TABLE` holding one direction (0 low, 1 high) and task (index into ``targets.TASKS``)."""
    return f"c{direction_idx * len(TASKS) + task_idx}"


def value_table_column(task_idx: int) -> str:
    """Column of :data:`TARGETS_TABLE` holding the value (DOUBLE, NULL: none) of one task (index into ``targets.TASKS``)."""
    return f"v{task_idx}"


def value_column(lab: str, task: str) -> str:
    """The ``cohort.parquet`` column of a lab's value for a task: ``"{lab}_value_{task}"``.

    >>> value_column("potassium", "mon60")
    'potassium_value_mon60'
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return f"{lab}_value_{task}"


#: DuckDB bytes per lab row of a part (:func:`rows_per_part`), an estimate with room to spare: the
#: window targets' aggregate holds ~0.26 (ECG, label) pairs per lab row (measured at 16M rows) of
#: a few hundred bytes each. At 158M lab rows and 6.4 GiB: 10 ranges of patients; the scratch
#: folder then peaked at ~7 GB, against ~23 GB when these joins ran whole and spilled.
LAB_ROW_BYTES = 400
#: At most this many groups of consecutive labels (:func:`lab_parts`) when the lab rows come in parts.
LABEL_GROUPS = 3


#: SQL of the conditions of a usable lab row on its own columns (alias ``{r}``); the label's are apart.
USABLE_VALUES = ("({r}.valuenum IS NOT NULL AND {r}.t IS NOT NULL "
                 "AND NOT coalesce({r}.ref_range_lower = 0 AND {r}.ref_range_upper = 0, false))")


def rows_per_part(memory_limit_bytes: int) -> int:
    """Lab rows per part (:func:`lab_parts`) under DuckDB's memory limit, in bytes."""
    return max(1, int(memory_limit_bytes) // LAB_ROW_BYTES)


def lab_parts(con, rows_per_part: Optional[int], label_groups: int = LABEL_GROUPS) -> list[tuple[str, str]]:
    """The rows of ``lab`` (a table or view) cut into parts of about ``rows_per_part`` rows: groups of labels x groups of patients.

    A part's window targets and last values depend on its own rows only (both are per patient
    and label). Patients are cut into P = ceil(rows / rows_per_part) ranges of subject_id at
    the quantiles of the ECGs' subject_id (table ``ecg``: a few million rows, where the lab rows
    are a hundred million), so that a part's ECGs, joins and aggregates are about 1/P of the
    whole (ranges, not a hash: DuckDB estimates a range's rows from its statistics, where it
    took a hash condition for an empty part and chose a plan that did not finish); when P > 1 the
    labels are also cut, into up to ``label_groups`` runs of consecutive label_idx of about
    equal rows, and the parts go label group by label group (``label_groups=1``: patients only,
    ranges ascending).

    Returns
    -------
    list of (label_sql, patient_sql): SQL conditions on ``label_idx`` and on ``subject_id``;
    every row of ``lab`` with a subject_id meets exactly one pair (rows without one match no
    ECG). [("true", "true")] when ``rows_per_part`` is None or the table fits (or is empty).
    """
    counts = con.execute("SELECT label_idx, count(*) FROM lab GROUP BY 1 ORDER BY 1").fetchall()
    n_rows = sum(n for _, n in counts)
    if rows_per_part is None or n_rows <= rows_per_part:
        return [("true", "true")]
    n_patient_groups = -(-n_rows // int(rows_per_part))
    cuts = con.execute("SELECT quantile_disc(subject_id, ?) FROM ecg",
                       [[k / n_patient_groups for k in range(1, n_patient_groups)]]).fetchall()[0][0]
    cuts = sorted({int(c) for c in cuts})
    patients = [f"subject_id <= {cuts[0]}"] if cuts else ["true"]
    patients += [f"subject_id > {a} AND subject_id <= {b}" for a, b in zip(cuts, cuts[1:])]
    patients += [f"subject_id > {cuts[-1]}"] if cuts else []
    groups, first, rows = [], counts[0][0], 0
    for (label_idx, n), previous in zip(counts, [None] + [c[0] for c in counts[:-1]]):
        if rows and rows + n > n_rows / label_groups and len(groups) < label_groups - 1:
            groups.append((first, previous))
            first, rows = label_idx, 0
        rows += n
    groups.append((first, counts[-1][0]))
    return [(f"label_idx BETWEEN {int(a)} AND {int(b)}", patient) for a, b in groups for patient in patients]


def label_labs(con, files: dict, headers: dict, n_ecgs: int, flow: readers.Flow, *,
               min_lab_events: int, estimation_window_min: int,
               causal: bool, thresholds: str, value_tolerance_min: int,
               rows_per_part: Optional[int] = None, n_scanned: Optional[int] = None) -> list[dict]:
    """Every candidate lab target of every ECG (DuckDB table :data:`TARGETS_TABLE`), and its description.

    Parameters
    ----------
    con : DuckDB connection holding the tables of ``readers.load_ecgs``
    files, headers : dict
        Table -> path (``readers.source_files``) and -> column names (``readers.read_header``).
    n_ecgs : int
        Rows of the ``ecg`` table.
    flow : readers.Flow
        Every filter of the lab rows is added to it.
    min_lab_events : int
        A label needs at least this many rows to give targets.
    estimation_window_min : int
        Half width of the estimation window, minutes.
    causal : bool
        Monitoring windows open after the ECG, (t, t + h], instead of [t, t + h].
    thresholds : {"median", "row"}
        What a row is classed against (``targets.THRESHOLD_RULES``): the label's medians of
        the reference bounds, or the row's own bounds with the median where one is empty.
    value_tolerance_min : int
        Monitoring values: the row closest to t + h within this many minutes (estimation
        values keep the estimation window).
    rows_per_part : int, optional
        The window targets are made about this many lab rows at a time (:func:`lab_parts`;
        ``rows_per_part(memory_limit)`` keeps a part's joins and aggregates in memory); None:
        all at once. The table is the same either way.
    n_scanned : int, optional
        What :func:`scan_labevents` returned when it already ran on ``con``'s database (its
        flow rows added before this call's); None: it runs here first.

    Returns
    -------
    candidates : list of dict, one per candidate target (n_candidates)
        Each label, direction that occurs among its rows and task of ``targets.TASKS``, in that
        order: the ``targets.json`` fields (name, lab, label, itemids, fluid, direction,
        threshold, unit, category, task, horizon_min) and ``_label_idx``, ``_col``: the
        target's label (``label_idx`` of :data:`TARGETS_TABLE`, labels in alphabetical order)
        and its column there (:func:`target_column`). The table stays in ``con``: at full
        MIMIC scale it is tens of millions of pairs, which never pass through Python.
    """
    if thresholds not in THRESHOLD_RULES:
        raise ValueError(f"thresholds must be one of {list(THRESHOLD_RULES)}, got {thresholds!r}")
    if n_scanned is None:
        n_scanned = scan_labevents(con, files, headers, flow)
    lab_rows, n_rows, spelling_counts = _read_usable_lab_rows(con, n_scanned, flow)
    lab_names, fluid, unit_map = _make_lab_table(con, lab_rows, n_rows, spelling_counts, flow, min_lab_events,
                                                 files["labevents"])
    medians, class_occurs = _median_thresholds(con, len(lab_names), thresholds)
    if thresholds == "row":
        _count_fallbacks(con, flow)
    _window_targets(con, n_ecgs, flow, estimation_window_min, causal, thresholds, value_tolerance_min,
                    lab_parts(con, rows_per_part))
    candidates = _describe_candidates(lab_names, medians, class_occurs, fluid, unit_map)
    names = [candidate["name"] for candidate in candidates]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"{files['d_labitems']}: column 'label': different labels give the same target names "
                         f"{repeated}")
    return candidates


def scan_labevents(con, files: dict, headers: dict, flow: readers.Flow) -> int:
    """Read ``labevents`` into the table ``lab_raw``: the rows of ECG patients, as parsed; returns their count.

    Also creates ``d_lab`` (d_labitems: itemid, label, fluid). Needs ``ecg_subjects``
    (``readers.load_ecgs``). Columns of ``lab_raw``: labevent_id, subject_id, itemid (BIGINT),
    t (charttime, microseconds since the epoch), valuenum, ref_range_lower, ref_range_upper
    (DOUBLE), valueuom (VARCHAR). The scan is the stage's longest step and leaves part of a
    core idle (gzip is read on one thread): ``labecg.cohort`` runs it on its own cursor
    beside the features and folds.
    """
    labevents_path, d_labitems_path = files["labevents"], files["d_labitems"]
    d_labitems = readers.read_strict(d_labitems_path, headers["d_labitems"],
                                     {"itemid": "BIGINT", "label": "VARCHAR", "fluid": "VARCHAR"})
    if d_labitems.empty:
        raise ValueError(f"{d_labitems_path}: no rows; expected one row per lab itemid")
    n_items = len(d_labitems)
    d_labitems = d_labitems.dropna(subset=["itemid"]).drop_duplicates("itemid")
    flow.add("d_labitems: unique itemid", n_items, len(d_labitems), "repeated or empty itemids (first kept)",
             warn=True)
    con.register("d_df", d_labitems)
    con.execute("CREATE TABLE d_lab AS SELECT itemid::BIGINT AS itemid, label, fluid FROM d_df")
    con.unregister("d_df")

    types = {"labevent_id": "BIGINT", "subject_id": "BIGINT", "itemid": "BIGINT", "charttime": "TIMESTAMP",
             "valuenum": "DOUBLE", "ref_range_lower": "DOUBLE", "ref_range_upper": "DOUBLE"}
    con.execute("PRAGMA enable_profiling = 'no_output'")
    with readers.scan_as_probe_side(con):
        con.execute(f"CREATE TABLE lab_raw AS SELECT labevent_id, subject_id, itemid, epoch_us(charttime) AS t, "
                    f"valuenum, valueuom, ref_range_lower, ref_range_upper "
                    f"FROM {readers.scan_sql(labevents_path, headers['labevents'], types, 'rej_lab')} "
                    f"WHERE subject_id IN (SELECT subject_id FROM ecg_subjects)")
        n_scanned = readers.count_scanned_rows(con)  # the profile of the last statement: this one
    con.execute("PRAGMA disable_profiling")
    n_raw = con.execute("SELECT count(*) FROM lab_raw").fetchone()[0]
    n_rejected = readers.report_rejects(con, "rej_lab", labevents_path, None, 0)
    if n_scanned is None:
        n_scanned = n_raw  # profiler unavailable: the patient filter is reported as not counted
        log.warning(f"{labevents_path}: rows of patients without an ECG were not counted (no profiler)")
    flow.add(f"read {labevents_path.name}", n_scanned + n_rejected, n_scanned,
             "rows skipped: a value could not be parsed", warn=True)
    flow.add("labevents: patients with an ECG", n_scanned, n_raw, "rows of patients without an ECG")
    if n_raw == 0:
        raise ValueError(f"{labevents_path}: no lab rows for any patient of record_list.csv (column 'subject_id')")
    return int(n_raw)


def _read_usable_lab_rows(con, n_raw: int, flow: readers.Flow) -> tuple[str, int, pd.DataFrame]:
    """Lab rows of ``lab_raw`` (``n_raw`` rows) with a value, a time, a label and a reference range; each labevent_id once.

    Creates the view ``lab_ok`` (joined with d_labitems, filtered); returns the name of the
    table or view of the usable rows (``lab_ok``, or ``lab_dedup`` when a labevent_id
    repeats), their count, and their rows per label, fluid and unit spelling (DataFrame:
    label, fluid, valueuom, n).
    """
    usable = (f"{USABLE_VALUES.format(r='l')} AND label IS NOT NULL AND label NOT IN {DROPPED_LABELS}")
    # one pass over the rows counts them by label, fluid, unit spelling and what they lack: the
    # steps' counts and the fluid and unit rules' counts come from this small table (two passes
    # before: ~3 s more at full scale)
    con.execute("CREATE OR REPLACE TEMP TABLE lab_counts AS SELECT d.label, d.fluid, l.valueuom, "
                "(l.valuenum IS NOT NULL AND l.t IS NOT NULL) AS has_value, "
                "coalesce(l.ref_range_lower = 0 AND l.ref_range_upper = 0, false) AS zero_range, count(*) AS n "
                "FROM lab_raw l LEFT JOIN d_lab d USING (itemid) GROUP BY ALL")
    counted = f"has_value AND NOT zero_range AND label IS NOT NULL AND label NOT IN {DROPPED_LABELS}"
    step_counts = con.execute(
        "SELECT coalesce(sum(n) FILTER (WHERE has_value), 0), "
        "coalesce(sum(n) FILTER (WHERE has_value AND label IS NOT NULL), 0), "
        f"coalesce(sum(n) FILTER (WHERE has_value AND label IS NOT NULL AND label NOT IN {DROPPED_LABELS}), 0), "
        f"coalesce(sum(n) FILTER (WHERE {counted}), 0) FROM lab_counts").fetchone()
    # repeated ids among all rows first: none there (as in MIMIC) means none among the usable rows;
    # only when one repeats are the usable rows counted exactly
    n_repeats = count_repeated_ids(con, "lab_raw")
    if n_repeats:
        n_repeats = count_repeated_ids(con, f"(SELECT labevent_id FROM lab_raw l LEFT JOIN d_lab USING (itemid) "
                                            f"WHERE {usable})")
    reasons = ["rows without valuenum or charttime", "rows whose itemid is not in d_labitems (or has no label)",
               f"rows of labels {list(DROPPED_LABELS)}", "rows with ref_range_lower = ref_range_upper = 0"]
    rows_before = n_raw
    for step, n_rows, reason in zip(["valuenum and charttime", "join d_labitems", "label filter", "reference range"],
                                    step_counts[:4], reasons):
        flow.add(f"labevents: {step}", rows_before, n_rows, reason, warn=step == "join d_labitems")
        rows_before = n_rows
    n_usable = rows_before
    n_unique_ids = n_usable - int(n_repeats)
    # a view, not a table: one materialization of the lab rows fewer
    con.execute(f"CREATE VIEW lab_ok AS SELECT l.labevent_id, l.subject_id, l.itemid, l.t, l.valuenum, "
                f"l.valueuom, l.ref_range_lower, l.ref_range_upper, d.label, d.fluid FROM lab_raw l "
                f"JOIN d_lab d USING (itemid) WHERE {usable}")
    lab_rows = "lab_ok"
    spellings = (f"SELECT label, fluid, valueuom, sum(n)::BIGINT AS n FROM lab_counts WHERE {counted} "
                 "GROUP BY ALL")
    if n_unique_ids < n_usable:
        con.execute("CREATE TABLE lab_dedup AS SELECT * FROM lab_ok "
                    "QUALIFY labevent_id IS NULL OR row_number() OVER (PARTITION BY labevent_id ORDER BY t, valuenum, "
                    "subject_id, itemid, valueuom, ref_range_lower, ref_range_upper) = 1")
        lab_rows = "lab_dedup"
        spellings = "SELECT label, fluid, valueuom, count(*) AS n FROM lab_dedup GROUP BY ALL"
    spelling_counts = con.execute(spellings).df()
    con.execute("DROP TABLE lab_counts")
    flow.add("labevents: duplicate labevent_id", n_usable, n_unique_ids, "repeated labevent_id rows (first kept)",
             warn=True)
    return lab_rows, n_unique_ids, spelling_counts


def count_repeated_ids(con, relation: str) -> int:
    """Rows of ``relation`` (a table or parenthesized query with a BIGINT column labevent_id) beyond the first of each id.

    NULL ids are not counted. The ids are grouped by blocks of 64 (``id >> 6``), each block
    keeping a 64-bit mask of the ids seen (``id & 63``): a block's repeats are its rows less
    the bits set. Exact for any ids; ids that come in runs, as MIMIC's do, make 64 times fewer
    groups than grouping by id: 0.2 s against 1.7-4.4 s at 16M rows (158M: ~21 s by id).
    """
    return int(con.execute(
        "SELECT coalesce(sum(n - bit_count(seen)), 0) FROM (SELECT labevent_id >> 6 AS block, count(*) AS n, "
        f"bit_or((1::UBIGINT) << (labevent_id & 63)::INTEGER) AS seen FROM {relation} WHERE labevent_id IS NOT NULL "
        "GROUP BY 1)").fetchall()[0][0])


def _make_lab_table(con, lab_rows: str, n_rows: int, spelling_counts: pd.DataFrame, flow: readers.Flow,
                    min_lab_events: int, labevents_path) -> tuple[list[str], pd.Series, pd.DataFrame]:
    """View ``lab``: the usable rows of each label's most frequent fluid and unit, labels with enough rows.

    Columns labevent_id, subject_id, t (charttime, microseconds), valuenum, ref_range_lower,
    ref_range_upper, itemid, label_idx. The rows left out are deleted from the table holding
    them (``lab_raw``, or ``lab_dedup`` when ids repeat), which stays as the view's base; the
    table ``item_label`` gives each kept itemid its label_idx.

    Returns
    -------
    lab_names : list of str
        The kept labels, alphabetical; ``lab.label_idx`` indexes it.
    fluid : Series
        Label -> its fluid (:func:`choose_fluid`).
    unit_map : DataFrame
        :func:`harmonize_units` rows kept (label, valueuom, n, unit, keep).
    """
    # ``spelling_counts``, the rows per label, fluid and unit spelling: all the fluid and unit rules need
    fluid_counts = spelling_counts.groupby(["label", "fluid"], as_index=False)["n"].sum()
    fluid = choose_fluid(fluid_counts)
    con.register("fluid_df", fluid.rename("fluid").reset_index())
    n_chosen_fluid = int(fluid_counts.merge(fluid.reset_index(), on=["label", "fluid"])["n"].sum())
    flow.add("labevents: most frequent fluid per label", n_rows, n_chosen_fluid, "rows of a label's other fluids")

    unit_counts = (spelling_counts.merge(fluid.reset_index(), on=["label", "fluid"])
                   .groupby(["label", "valueuom"], as_index=False, dropna=False)["n"].sum())
    unit_map = harmonize_units(unit_counts)
    for label, spellings in unit_map.groupby("label"):
        if len(spellings) > 1:
            outcomes = [f"{spelling!r} {n_rows} rows "
                        + ("-> " + repr(unit) if keep and spelling != unit else ("kept" if keep else "dropped"))
                        for spelling, n_rows, unit, keep in zip(spellings["valueuom"], spellings["n"],
                                                                spellings["unit"], spellings["keep"])]
            log.info(f"units of {label!r}: " + ", ".join(outcomes))
    n_unit_kept = int(unit_map.loc[unit_map["keep"], "n"].sum())
    flow.add("labevents: unit harmonized", n_chosen_fluid, n_unit_kept, "rows whose unit names another quantity "
             "than the label's unit (LABEL_UNITS, else its most frequent spelling)", warn=True)
    rows_per_label = unit_map[unit_map["keep"]].groupby("label")["n"].sum()
    labels_kept = rows_per_label[rows_per_label >= min_lab_events].index
    flow.add("labevents: labels with enough rows", n_unit_kept, int(rows_per_label[labels_kept].sum()),
             f"rows of labels with < {min_lab_events} rows")
    if len(labels_kept) == 0:
        raise ValueError(f"{labevents_path}: no lab label has >= min_lab_events={min_lab_events} rows "
                         f"(largest: {int(rows_per_label.max()) if len(rows_per_label) else 0})")
    unit_map = unit_map[unit_map["keep"] & unit_map["label"].isin(labels_kept)]
    con.register("unit_df", unit_map[["label", "valueuom", "unit"]])
    lab_names = sorted(labels_kept)
    con.register("label_df", pd.DataFrame({"label": lab_names, "label_idx": np.arange(len(lab_names))}))
    # ``lab`` is a view of the stored rows, not a copy of them: the rows it leaves out are deleted
    # from the table that holds them and label_idx comes from the itemid (which fixes the label and
    # the fluid). Copying ~155M rows into a new table took 22-39 s at full scale, the deletion ~5 s.
    con.execute("CREATE TABLE item_label AS SELECT d.itemid, x.label_idx FROM d_lab d "
                "JOIN fluid_df USING (label, fluid) JOIN label_df x USING (label)")
    con.execute("CREATE TABLE item_unit AS SELECT i.itemid, u.valueuom FROM item_label i "
                "JOIN label_df x USING (label_idx) JOIN unit_df u USING (label)")
    base = "lab_raw" if lab_rows == "lab_ok" else lab_rows
    con.execute(f"DELETE FROM {base} r WHERE NOT coalesce({USABLE_VALUES.format(r='r')} AND EXISTS (SELECT 1 "
                "FROM item_unit m WHERE m.itemid = r.itemid AND m.valueuom IS NOT DISTINCT FROM r.valueuom), false)")
    con.execute("DROP VIEW lab_ok")
    if base != "lab_raw":
        con.execute("DROP TABLE lab_raw")
    con.execute(f"CREATE VIEW lab AS SELECT r.labevent_id, r.subject_id, r.t, r.valuenum, r.ref_range_lower, "
                f"r.ref_range_upper, r.itemid, i.label_idx FROM {base} r JOIN item_label i USING (itemid)")
    return lab_names, fluid, unit_map


def row_bounds_sql(thresholds: str, lab: str = "l", thr: str = "th") -> tuple[str, str]:
    """SQL of the lower and upper threshold a lab row is classed against, under a threshold rule.

    ``lab`` is the alias of a ``lab`` row (valuenum, ref_range_lower, ref_range_upper),
    ``thr`` of its label's ``thr_df`` row (lo, hi: the medians). ``median``: lo and hi;
    ``row``: the row's own bounds, lo or hi where a bound is NULL. A NULL threshold compares
    false (that class cannot occur).
    """
    if thresholds == "median":
        return f"{thr}.lo", f"{thr}.hi"
    return f"coalesce({lab}.ref_range_lower, {thr}.lo)", f"coalesce({lab}.ref_range_upper, {thr}.hi)"


def row_class_sql(thresholds: str, lab: str = "l", thr: str = "th") -> str:
    """SQL of a lab row's class, -1 low (< lower), 1 high (> upper), else 0, against :func:`row_bounds_sql`."""
    lo, hi = row_bounds_sql(thresholds, lab, thr)
    return f"CASE WHEN {lab}.valuenum < {lo} THEN -1 WHEN {lab}.valuenum > {hi} THEN 1 ELSE 0 END"


def _count_fallbacks(con, flow: readers.Flow) -> None:
    """Flow rows (none dropped) counting the lab rows whose empty bound takes the label's median (``row``)."""
    n_rows, n_lower, n_upper = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE l.ref_range_lower IS NULL AND th.lo IS NOT NULL), "
        "count(*) FILTER (WHERE l.ref_range_upper IS NULL AND th.hi IS NOT NULL) "
        "FROM lab l JOIN thr_df th USING (label_idx)").fetchone()
    for side, n in (("lower", n_lower), ("upper", n_upper)):
        flow.add(f"labels: row ranges, {side} bound", n_rows, n_rows,
                 f"none dropped: {n} rows without ref_range_{side} are classed by their label's median {side} bound")


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """The median of ``values`` (n,) each taken ``counts`` (n,) times, as DuckDB's ``median``.

    Any order of the values; NaN when the counts sum to 0. An even total gives the two middle
    values interpolated as DuckDB does (``lo * (1 - d) + hi * d``, d = 0.5), which is not always
    the same double as ``lo + (hi - lo) * d``.
    """
    total = int(np.sum(counts))
    if total == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    values, ends = np.asarray(values, dtype=np.float64)[order], np.cumsum(np.asarray(counts)[order])
    position = (total - 1) / 2
    below, above = int(np.floor(position)), int(np.ceil(position))
    lo, hi = values[np.searchsorted(ends, below, side="right")], values[np.searchsorted(ends, above, side="right")]
    d = position - below
    return float(lo) if below == above else float(lo * (1 - d) + hi * d)


def _median_thresholds(con, n_labels: int, thresholds: str) -> tuple[pd.DataFrame, dict]:
    """Per label the medians of its reference bounds (table ``thr_df``) and which abnormal classes occur.

    Returns
    -------
    medians : DataFrame indexed by label_idx 0 .. n_labels - 1: lo, hi, itemids
    class_occurs : dict label_idx -> (a value below its lower threshold occurs, a value above
        its upper one occurs), thresholds of :func:`row_bounds_sql` under ``thresholds``
    """
    # per label_idx: lo, hi (the medians of the reference bounds), itemids. Read from the counts of
    # the few distinct (label, itemid, bounds) rather than by median() over every row, which
    # collects all the values of a label (5-15 s at 158M rows)
    combos = con.execute("SELECT label_idx, itemid, ref_range_lower AS lo, ref_range_upper AS hi, count(*) AS n "
                         "FROM lab GROUP BY ALL").df()
    rows = {}
    for label_idx, rows_of_label in combos.groupby("label_idx"):
        bounds = {}
        for bound in ("lo", "hi"):
            counts = rows_of_label.dropna(subset=[bound]).groupby(bound)["n"].sum()
            bounds[bound] = weighted_median(counts.index.to_numpy(np.float64), counts.to_numpy(np.int64))
        rows[int(label_idx)] = {**bounds, "itemids": sorted(int(i) for i in rows_of_label["itemid"].dropna().unique())}
    medians = pd.DataFrame.from_dict(rows, orient="index", columns=["lo", "hi", "itemids"]).reindex(np.arange(n_labels))
    medians.index.name = "label_idx"
    con.register("thr_df", medians[["lo", "hi"]].reset_index())
    lo, hi = row_bounds_sql(thresholds, "l", "t")
    occurrences = con.execute(f"SELECT l.label_idx, bool_or(l.valuenum < {lo}), bool_or(l.valuenum > {hi}) "
                              "FROM lab l JOIN thr_df t USING (label_idx) GROUP BY 1").fetchall()
    class_occurs = {label_idx: (bool(low), bool(high)) for label_idx, low, high in occurrences}
    return medians, class_occurs


_TWO_64 = "18446744073709551616::HUGEINT"  # 2^64


def closest_key_sql(at_us: int) -> str:
    """SQL of the order of "closest to t + at_us" as one HUGEINT, smallest first, over rows with ``dt``, ``labevent_id``.

    The order is (|dt - at_us|, charttime, -labevent_id), NULL labevent_id last: the
    smallest distance, ties to the earlier charttime (for one ECG, dt - at_us < 0 before
    > 0), then to the higher labevent_id, as one 128-bit integer: |dt - at_us| * 2 + (dt >
    at_us) in the upper 64 bits, 2^63 - 1 - labevent_id (2^64 when NULL) below. The window
    targets took 2.3x less time with it than with a struct of the three (16M lab rows).
    """
    return (f"((abs(dt - {int(at_us)}) * 2 + (dt > {int(at_us)})::BIGINT)::HUGEINT * {_TWO_64} "
            f"+ coalesce(9223372036854775807::HUGEINT - labevent_id::HUGEINT, {_TWO_64}))")


def _window_targets(con, n_ecgs: int, flow: readers.Flow, estimation_window_min: int,
                    causal: bool, thresholds: str, value_tolerance_min: int, parts: list[tuple[str, str]]) -> None:
    """The estimation and monitoring targets of every (ECG, label) pair with a lab row in a window.

    Estimation: the class of the closest row in [t - w, t + w]; monitoring: whether a low or a
    high row falls in [t, t + h] ((t, t + h] when ``causal``; NaN if none, or both), t the
    ECG's time, all in microseconds; a row's class is :func:`row_class_sql` under ``thresholds``.
    The values: the estimation label's row, and per horizon the row closest to t + h in
    [t + h - tol, t + h + tol]. Creates :data:`TARGETS_TABLE`, one part of labels and patients
    (``parts``, :func:`lab_parts`) at a time: a pair's targets depend on its own rows only.
    """
    n_without_labs = con.execute("SELECT count(*) FROM ecg WHERE subject_id NOT IN "
                                 "(SELECT DISTINCT subject_id FROM lab)").fetchone()[0]
    flow.add("labels: ECGs whose patient has lab rows", n_ecgs, n_ecgs - n_without_labs,
             "ECGs kept with every lab target missing (patient has no usable lab rows)", warn=True)

    # one bucketed join serves every window: [t - est, t + max(est, h_max)]
    window_us = estimation_window_min * 60_000_000
    horizon_max_us = max(HORIZONS_MIN) * 60_000_000
    width_us = 3_600_000_000
    tolerance_us = value_tolerance_min * 60_000_000
    after_us = max(window_us, horizon_max_us + tolerance_us)
    readers.bucket_ecgs(con, "ecg_bl", width_us, window_us, after_us)
    # per horizon h (the i-th): three bits of one integer, OR-ed over the rows of the pair: bit 3i a row
    # in [t, t + h] ((t, t + h] causal), 3i + 1 a low one, 3i + 2 a high one. One aggregate instead of
    # a count and two bool_or per horizon: the window targets took ~20% less time (16M lab rows)
    start = "dt > 0" if causal else "dt >= 0"
    class_bits = "(1 + 2 * (cls = -1)::INTEGER + 4 * (cls = 1)::INTEGER)"
    flags = " | ".join(f"(CASE WHEN {start} AND dt <= {h * 60_000_000} THEN {class_bits} << {3 * i} ELSE 0 END)"
                       for i, h in enumerate(HORIZONS_MIN))
    # per horizon h: the value of the row closest to t + h within the tolerance
    values = ", ".join(
        f"arg_min(valuenum, {closest_key_sql(h * 60_000_000)}) "
        f"FILTER (WHERE dt BETWEEN {h * 60_000_000 - tolerance_us} AND {h * 60_000_000 + tolerance_us}) "
        f"AS {value_table_column(task_idx)}" for task_idx, h in enumerate(HORIZONS_MIN, start=1))
    # per (ECG, label) pair: est, the class (-1, 0, 1) and value of the closest row in the estimation window
    windows = (
        f"SELECT row_idx, label_idx, arg_min({{'cls': cls, 'v': valuenum}}, {closest_key_sql(0)}) "
        f"FILTER (WHERE dt BETWEEN -{window_us} AND {window_us}) AS est, {values}, bit_or({flags}) AS f FROM ("
        f"SELECT e.row_idx, l.label_idx, l.t - e.t AS dt, l.labevent_id, l.valuenum, "
        f"{row_class_sql(thresholds, 'l', 'th')} AS cls "
        f"FROM (SELECT * FROM ecg_bl WHERE {{patients}}) e JOIN (SELECT *, floor(t / {width_us})::BIGINT AS b "
        "FROM lab WHERE {labels} AND {patients}) l "
        f"ON l.subject_id = e.subject_id AND l.b = e.b JOIN thr_df th ON th.label_idx = l.label_idx "
        f"WHERE l.t BETWEEN e.t - {window_us} AND e.t + {after_us}) GROUP BY ALL")
    # estimation: the closest row's class is the direction (NULL: no row); monitoring: NULL when the
    # window is empty or holds both directions, else whether it holds a row of the direction
    columns = [f"CAST(est.cls = -1 AS FLOAT) AS {target_column(0, 0)}",
               f"CAST(est.cls = 1 AS FLOAT) AS {target_column(1, 0)}"]
    for task_idx, _ in enumerate(HORIZONS_MIN, start=1):
        shift = 3 * (task_idx - 1)  # the horizon's bits in f
        low, high = f"(f & {2 << shift}) <> 0", f"(f & {4 << shift}) <> 0"
        missing = f"(f & {1 << shift}) = 0 OR ({low} AND {high})"
        columns += [f"CASE WHEN {missing} THEN NULL ELSE CAST({low} AS FLOAT) END AS {target_column(0, task_idx)}",
                    f"CASE WHEN {missing} THEN NULL ELSE CAST({high} AS FLOAT) END AS {target_column(1, task_idx)}"]
    columns += [f"est.v AS {value_table_column(0)}"] + [value_table_column(task_idx)
                                                        for task_idx in range(1, len(TASKS))]
    query = f"SELECT row_idx, label_idx, {', '.join(columns)} FROM ({windows})"
    for n, (label_sql, patient_sql) in enumerate(parts):
        # the first part makes the table, the others append; each part's rows are stored together
        sql = f"CREATE TABLE {TARGETS_TABLE} AS {query}" if n == 0 else f"INSERT INTO {TARGETS_TABLE} {query}"
        con.execute(sql.replace("{labels}", label_sql).replace("{patients}", patient_sql))
    con.execute("DROP TABLE ecg_bl")


def last_value_parts(con, last_value_cutoffs_min: tuple[int, ...], rows_per_part: Optional[int] = None,
                     ecgs: str = "ecg", label_sql: str = "true") -> list[str]:
    """The latest value of each label charted before each ECG (less a cutoff), for the last-value baseline: one query per part.

    Needs the table ``ecg`` (:func:`labecg.readers.load_ecgs`), or another table or view with its
    columns row_idx, subject_id, t_us (``ecgs``), and ``lab`` (a table or view, :func:`label_labs`) in ``con``.

    Parameters
    ----------
    con : DuckDB connection
    last_value_cutoffs_min : tuple of int
        Per cutoff c, minutes: rows charted strictly before ``ecg_time - c``.
    rows_per_part : int, optional
        About this many lab rows at a time (:func:`lab_parts`, patients only: every part holds
        all the labels of a range of subject_id, the ranges ascending); None: all at once.
    ecgs : str
        The table or view of the ECGs to look up (default every ECG).
    label_sql : str
        SQL condition on ``label_idx`` of the labels to look up (default all).

    Returns
    -------
    list of str, one SELECT per part, with columns ``row_idx`` (BIGINT, the ``ecg`` row),
    ``label_idx`` (BIGINT, as in ``label_df``), ``cutoff_min`` (BIGINT), ``value`` (DOUBLE,
    the row's ``valuenum`` in the label's unit) and ``age_min`` (DOUBLE, minutes from its
    charttime to the ECG, > cutoff_min): one row per (ECG, label, cutoff) with such a row,
    each in exactly one part; the parts go by ascending ranges of subject_id (for ``ecg``, whose
    row_idx follows subject_id, a part's ECGs come after the previous part's).
    The latest row wins; ties on charttime go to the higher ``labevent_id``, then the larger
    value. No lower limit on the age. At full scale it is tens of millions of rows, which
    ``labecg.cohort`` streams into ``last_values.parquet`` a part at a time.
    """
    # the tie rule is the order of the as-of key (charttime, labevent_id) with the value last:
    # the latest key below (ecg_time - c, smallest BIGINT) is the latest row before ecg_time - c,
    # ties to the higher labevent_id (NULL read as -1, lowest), and rows that tie on both (only
    # rows without an id: ids are unique in lab) are first reduced to the largest value; one
    # as-of join serves every cutoff. The key is one HUGEINT, charttime * 2^64 + (id + 2^63):
    # 1.4x less time than a struct key at 16M lab rows.
    cutoffs = ", ".join(f"({int(c)}::BIGINT, {int(c) * 60_000_000}::BIGINT)" for c in last_value_cutoffs_min)

    def key(t: str, i: str) -> str:
        return f"({t})::HUGEINT * {_TWO_64} + (({i})::HUGEINT + 9223372036854775808::HUGEINT)"

    # only the rows charted before the patient's last ECG can be a last value: the others (44% of
    # the lab rows at full scale) are left out of the as-of join's sorts; and only the (ECG, label,
    # cutoff) with a row of the label before it look one up (the join drops the others anyway)
    query = (
        "WITH before AS (SELECT l.subject_id, l.label_idx, l.t, l.valuenum, l.labevent_id FROM lab l "
        f"JOIN (SELECT subject_id, max(t_us) AS last_t FROM {ecgs} WHERE {{patients}} GROUP BY ALL) m "
        "USING (subject_id) WHERE {labels} AND {patients} AND l.t < m.last_t) "
        f"SELECT e.row_idx, e.label_idx, e.cutoff_min, l.valuenum AS value, (e.t_us - l.t) / 60e6 AS age_min "
        f"FROM (SELECT e.row_idx, e.subject_id, e.t_us, p.label_idx, c.cutoff_min, "
        f"{key('e.t_us - c.cutoff_us', '(-9223372036854775807)::BIGINT - 1')} AS k "
        f"FROM (SELECT * FROM {ecgs} WHERE {{patients}}) e "
        "JOIN (SELECT subject_id, label_idx, min(t) AS first_t FROM before GROUP BY ALL) p USING (subject_id) "
        f"CROSS JOIN (VALUES {cutoffs}) c(cutoff_min, cutoff_us) WHERE p.first_t < e.t_us - c.cutoff_us) e "
        f"ASOF JOIN (SELECT subject_id, label_idx, t, valuenum, {key('t', 'labevent_id')} AS k FROM before "
        "WHERE coalesce(labevent_id, -1) <> -1 "
        f"UNION ALL SELECT subject_id, label_idx, t, max(valuenum), {key('t', '-1')} FROM before "
        "WHERE coalesce(labevent_id, -1) = -1 GROUP BY subject_id, label_idx, t) l "
        f"ON l.subject_id = e.subject_id AND l.label_idx = e.label_idx AND e.k > l.k")
    # an as-of join, never DuckDB's nested-loop form for a side it estimates small: an estimate
    # of a part can be off by 10^6 (a loop join over a part of 158M lab rows did not finish)
    con.execute("SET asof_loop_join_threshold = 0")
    # parts of patients only (each about as large as a part of the window targets): the ECGs of
    # a part come after those of the one before, so that the parts are written in cohort order
    per_part = None if rows_per_part is None else max(1, int(rows_per_part) // LABEL_GROUPS)
    parts = lab_parts(con, per_part, label_groups=1)
    return [query.replace("{labels}", f"({label_sql})").replace("{patients}", patient_sql) for _, patient_sql in parts]


def _describe_candidates(lab_names: list[str], thresholds: pd.DataFrame, class_occurs: dict, fluid: pd.Series,
                         unit_map: pd.DataFrame) -> list[dict]:
    """One ``targets.json`` description per label, occurring direction and task (see :func:`label_labs`)."""
    n_tasks = len(TASKS)
    candidates = []
    unit_of_label = unit_map.drop_duplicates("label").set_index("label")["unit"]
    for i, label in enumerate(lab_names):
        for direction_idx, direction in enumerate(("low", "high")):
            threshold = thresholds.loc[i, "lo" if direction == "low" else "hi"]
            if not class_occurs.get(i, (False, False))[direction_idx] or pd.isna(threshold):
                continue
            unit = unit_of_label.get(label)
            for task_idx, task in enumerate(TASKS):
                candidates.append({"name": target_name(label, direction, task), "lab": lab_slug(label),
                                   "label": label, "itemids": [int(x) for x in thresholds.loc[i, "itemids"]],
                                   "fluid": str(fluid[label]), "direction": direction, "threshold": float(threshold),
                                   "unit": None if pd.isna(unit) else str(unit),
                                   "category": catalog.category_for_label(label), "task": task,
                                   "horizon_min": horizon_min(task),
                                   "_label_idx": i, "_col": direction_idx * n_tasks + task_idx})
    return candidates
