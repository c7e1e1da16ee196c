"""Cohort builder: features, lab labels, thresholds and folds from the four MIMIC sources.

Reads MIMIC-IV ``hosp`` and ``ed``, MIMIC-IV-ECG ``record_list.csv`` and MIMIC-IV-ECG-ICD
``records_w_diag_icd10.csv`` (real or synthetic, the same code) and writes one row per ECG
study with demographics, vitals, biometrics, a fold, and the estimation and monitoring
targets of the paper (section 3.1). This module assigns the folds, keeps the targets and
writes the files; the tables are read by ``labecg.readers`` (DuckDB streams the large ones;
every dropped row is counted in ``cohort_flow.csv``).

Choices (the paper's text, then REFERENCE_NOTES.md where the paper is silent; ours where both are):

- Demographics, vitals and biometrics (windows, closest value, plausible ranges, units):
  ``labecg.features``.
- Lab rows, units, thresholds, and the estimation and monitoring targets (windows, closest
  value): ``labecg.labels``.
- Folds: ``strat_fold`` joined on study_id. A patient named in the ECG-ICD list takes the most
  frequent fold of their listed rows (ties: lowest) for all their ECGs. An ECG without a
  ``strat_fold`` is excluded (``unlisted_ecgs="exclude"``, the authors': it never reaches a
  split), counted in the flow table. With ``unlisted_ecgs="assign"`` it is kept: it takes its
  patient's fold, and wholly unlisted patients are stratified by sex and age quartile: within
  each stratum, in a seeded random order, patients are dealt round-robin over the 20 folds,
  each stratum starting where the previous one ended, so every stratum and the total split
  18:1:1 to within one patient. Without a MIMIC-IV-ECG-ICD file (``ecg_icd=None``: it is
  credentialed, and absent from the open demo) every fold is assigned so, which needs
  ``unlisted_ecgs="assign"``; the flow table says so, with the counts.
- A target is kept when the validation fold (18) and the test fold (19) each hold at least
  ``min_per_class`` positives and ``min_per_class`` negatives (``targets.json`` records the
  rules; the dataset counts again over the ECGs whose signal converted).
- ECGs without any kept target are dropped (``drop_ecgs_without_targets``, the authors'),
  counted in the flow table.
- ``causal`` (ours; default off, the paper's windows): vitals only up to the ECG and
  monitoring labs only after it (``labecg.features``, ``labecg.labels``). The paper's inputs
  reach 30 min past the ECG, so a monitoring input can postdate the lab it predicts.
- ``thresholds`` (``targets.THRESHOLD_RULES``): ``median``, the paper's, classes every lab
  row by its label's medians of the reference bounds; ``row`` (ours) by the row's own
  ``ref_range_lower``/``ref_range_upper``, the median where a bound is empty
  (``labecg.labels``). ``targets.json`` records the rule (``thresholds``: rule and its words);
  a target's ``threshold`` is the median either way (under ``row``, the fallback).
- Values (ours): ``cohort.parquet`` also holds, for every lab with a kept target, the value
  each task's label looked at (``labels.value_column``: ``<lab>_value_est``, the estimation
  label's row; ``<lab>_value_mon{h}``, the row closest to t + h within
  ``value_tolerance_min``), in the label's unit; ``targets.json`` lists them (``values``).
- ``last_values.parquet``: each ECG's last earlier value of every kept target's lab
  (``labels.last_value_parts``), for the results chapter's last-value baseline; it does not
  change ``cohort.parquet``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd

from labecg import features, labels, layout, paper, readers, util
from labecg.layout import N_FOLDS, TEST_FOLD, VAL_FOLD
from labecg.targets import HORIZONS_MIN, TASKS, THRESHOLD_RULES, horizon_min, is_monitoring

log = util.get_logger("labecg.cohort")


#: The default DuckDB memory limit, percent of this machine's memory (:func:`machine_memory`):
#: DuckDB holds to its limit (and spills beyond it), the Python side adds
#: :func:`python_side_bytes`, and the rest is left to the system and to other programs.
DEFAULT_MEMORY_SHARE = 40
#: The least memory limit DuckDB gets: below it even the default build spills most of its joins.
MIN_MEMORY_LIMIT = 2**30
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """Bytes of an amount such as "16GB" (10^9) or "6GiB" (2^30), as DuckDB reads them."""
    import re
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = (m.group(2).lower() or "b") if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"memory_limit: cannot read {text!r}; expected a share such as '40%' or an amount such "
                         "as '6GB' or '6GiB'")
    return int(float(m.group(1)) * _UNITS[unit])


def machine_memory() -> int:
    """Bytes of memory this process may use: the physical memory, or its cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    candidates = []
    for line in lines:  # v2 "0::/path", v1 "4:memory:/path"
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max")
        elif "memory" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes")
    for file in candidates:
        try:
            value = file.read_text().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < total:
            total = int(value)
    return total


def memory_limit_bytes(memory_limit: str, total: int) -> int:
    """DuckDB's memory limit in bytes: ``memory_limit`` ("40%" of ``total`` bytes, or "6GB")."""
    text = str(memory_limit).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise ValueError(f"memory_limit: {text!r} is not a share between 0% and 100%")
        return int(total * share / 100)
    return parse_bytes(text)


#: ECGs per row group of ``cohort.parquet`` (:func:`_write_cohort`): the rows Python holds at a time,
#: ~17 bytes a cell (the value, its mask, its Arrow copy), ~280 MB at 500 columns.
COHORT_CHUNK_ECGS = 32_768


def python_side_bytes(n_ecgs: int) -> int:
    """What the cohort stage holds in Python beside DuckDB (interpreter, libraries, per-ECG arrays,
    one row group of ``cohort.parquet``: :data:`COHORT_CHUNK_ECGS` x ~500 columns x ~17 bytes), bytes."""
    return 500 * 10**6 + 300 * n_ecgs + COHORT_CHUNK_ECGS * 500 * 17


def check_memory(memory_limit: str, n_ecgs: int, total: int) -> int:
    """DuckDB's limit in bytes for ``n_ecgs`` ECGs on a machine of ``total`` bytes.

    Raises ValueError, one line saying what to set, when the limit is below
    :data:`MIN_MEMORY_LIMIT` or the limit and the Python side (:func:`python_side_bytes`)
    together exceed ``total``.
    """
    limit = memory_limit_bytes(memory_limit, total)
    python = python_side_bytes(n_ecgs)
    if limit >= MIN_MEMORY_LIMIT and limit + python <= total:
        return limit
    gb = 10**9
    if total - python < MIN_MEMORY_LIMIT:
        raise ValueError(f"memory_limit: this machine has {total / gb:.1f} GB; the cohort stage of {n_ecgs:,} ECGs "
                         f"needs at least {(MIN_MEMORY_LIMIT + python) / gb:.1f} GB ({MIN_MEMORY_LIMIT / gb:.1f} GB for "
                         f"DuckDB, {python / gb:.1f} GB in Python): use a machine with more memory")
    fits = max(int((total - python) * 0.8), MIN_MEMORY_LIMIT)
    raise ValueError(f"memory_limit: {memory_limit!r} gives DuckDB {limit / gb:.1f} GB on this machine of "
                     f"{total / gb:.1f} GB; it needs >= {MIN_MEMORY_LIMIT / gb:.1f} GB, and Python {python / gb:.1f} GB "
                     f"beside it for {n_ecgs:,} ECGs: set --memory-limit {fits / gb:.1f}GB")


@dataclass(frozen=True)
class CohortConfig:
    """Where the sources are, where the cohort goes, and the windows of the labels.

    Parameters
    ----------
    hosp : Path
        MIMIC-IV ``hosp`` folder (patients, admissions, labevents, d_labitems, omr).
    ed : Path
        MIMIC-IV-ED ``ed`` folder (edstays, vitalsign).
    ecg : Path
        MIMIC-IV-ECG root (record_list.csv, machine_measurements.csv, files/).
    ecg_icd : Path, optional
        MIMIC-IV-ECG-ICD ``records_w_diag_icd10.csv`` (the folds). Credentialed and absent
        from the open demo: without it (None) every fold is assigned, which needs
        ``unlisted_ecgs="assign"``; no file stands in for it.
    cohort_dir : Path
        Cohort folder to write.
    min_lab_events : int
        A lab label needs at least this many rows to give targets (paper: 200).
    min_per_class : int
        A target needs this many positives and negatives in validation and in test (paper: 10).
    estimation_window_min : int
        Estimation labels: the lab value closest to the ECG within this many minutes.
    horizons_min : tuple of int
        Monitoring horizons, minutes after the ECG.
    vitals_window_min : int
        Vital signs: the closest within this many minutes of the ECG.
    biometrics_window_days : int
        BMI, weight, height: the closest within this many days of the ECG.
    unlisted_ecgs : {"exclude", "assign"}
        An ECG absent from records_w_diag_icd10.csv has no strat_fold: "exclude" drops it
        (the authors), "assign" gives it its patient's fold or a stratified one.
    drop_ecgs_without_targets : bool
        Drop ECGs without any target (the authors: they would dilute batches and statistics).
    seed : int
        Fold assignment of patients absent from ecg_icd (``unlisted_ecgs="assign"``).
    causal : bool
        Inputs and targets never overlap in time: vitals in [t - w, t] instead of
        [t - w, t + w], monitoring labs in (t, t + h] instead of [t, t + h] (not the paper's).
    thresholds : {"median", "row"}
        What a lab row is classed against: "median", the paper's, the label's medians of the
        reference bounds; "row", the row's own ref_range_lower/upper, the label's median
        where a bound is empty (not the paper's).
    value_tolerance_min : int
        The value columns of monitoring (``<lab>_value_mon{h}``): the lab value closest to
        ECG time + h within this many minutes (below the shortest horizon, so the window
        opens after the ECG); the estimation value keeps the estimation window.
    memory_limit : str
        DuckDB's memory limit: a share of this machine's memory ("40%", the default: of the
        physical memory, or of the process's cgroup limit when lower) or an amount ("6GB",
        "6GiB"). The Python side needs about 0.5 GB plus 0.3 kB per ECG on top (1 GB at
        full MIMIC); DuckDB spills what does not fit to the cohort folder's scratch.
    threads : int
        DuckDB threads; 0 = all cores.
    """
    hosp: Path
    ed: Path
    ecg: Path
    # records_w_diag_icd10.csv; keyword-only so that it can default to None where it stands
    ecg_icd: Optional[Path] = field(default=None, kw_only=True)
    cohort_dir: Path
    min_lab_events: int = 200
    min_per_class: int = 10
    estimation_window_min: int = 60
    vitals_window_min: int = 30
    biometrics_window_days: int = 30
    # authors: an ECG absent from records_w_diag_icd10.csv has no strat_fold and no split
    unlisted_ecgs: Literal["exclude", "assign"] = "exclude"
    # authors: ECGs without any target are dropped (they would dilute batches and statistics)
    drop_ecgs_without_targets: bool = True
    seed: int = 0  # fold assignment of patients absent from ecg_icd (unlisted_ecgs="assign")
    causal: bool = False  # ours: vitals up to the ECG only, monitoring labs strictly after it
    thresholds: Literal["median", "row"] = "median"  # ours: "row", each row's own reference range
    value_tolerance_min: int = 15  # ours: monitoring values closest to t + h within this
    memory_limit: str = f"{DEFAULT_MEMORY_SHARE}%"
    threads: int = 0  # 0 = DuckDB's default (all cores)

    def __post_init__(self):
        util.hold_paths(self)
        for name in ("hosp", "ed", "ecg", "ecg_icd", "cohort_dir"):
            if name == "ecg_icd" and self.ecg_icd is None:
                continue
            if not isinstance(getattr(self, name), Path):
                raise TypeError(f"CohortConfig.{name} must be a pathlib.Path, got {getattr(self, name)!r}")
        for name in ("min_lab_events", "min_per_class", "estimation_window_min",
                     "vitals_window_min", "biometrics_window_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"CohortConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.unlisted_ecgs not in ("exclude", "assign"):
            raise ValueError(f"CohortConfig.unlisted_ecgs must be 'exclude' or 'assign', got {self.unlisted_ecgs!r}")
        if self.ecg_icd is None and self.unlisted_ecgs != "assign":
            raise ValueError("CohortConfig.ecg_icd: no MIMIC-IV-ECG-ICD file (records_w_diag_icd10.csv) given, "
                             "and its strat_fold gives the folds; pass --ecg-icd FILE, or --unlisted-ecgs assign "
                             "to assign every fold (as for the open MIMIC demo)")
        if self.threads < 0:
            raise ValueError(f"CohortConfig.threads must be >= 0, got {self.threads}")
        if not 0 <= self.value_tolerance_min < min(HORIZONS_MIN):
            raise ValueError(f"CohortConfig.value_tolerance_min must be >= 0 and below the shortest horizon "
                             f"{min(HORIZONS_MIN)} min (the window t + h +- tolerance opens after the ECG), "
                             f"got {self.value_tolerance_min}")
        if self.thresholds not in THRESHOLD_RULES:
            raise ValueError(f"CohortConfig.thresholds must be one of {list(THRESHOLD_RULES)}, "
                             f"got {self.thresholds!r}")

    @property
    def horizons_min(self) -> tuple[int, ...]:
        """The paper's monitoring horizons (fixed: target names and tables are built on them)."""
        return HORIZONS_MIN

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS

    @property
    def last_value_cutoffs_min(self) -> tuple[int, ...]:
        """The cutoffs of ``last_values.parquet``: one per task (:func:`last_value_cutoff`), each once."""
        return tuple(sorted({last_value_cutoff(task, self.estimation_window_min) for task in self.tasks}))


@dataclass(frozen=True)
class CohortResult:
    cohort: Path
    targets: Path
    flow: Path
    summary: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# folds and kept targets


def assign_folds(ecgs: pd.DataFrame, listed: pd.DataFrame, seed: int = 0) -> tuple[pd.Series, dict]:
    """Patient-level folds 0-19 for every ECG.

    Parameters
    ----------
    ecgs : DataFrame with columns subject_id, study_id, sex, age (one row per ECG)
    listed : DataFrame with columns study_id, subject_id, strat_fold (the ECG-ICD list)
    seed : int
        Order of wholly unlisted patients inside their strata.

    Returns
    -------
    fold : Series of int64 aligned to ``ecgs.index``
    counts : dict with n_listed_ecgs, n_unlisted_ecgs_of_listed_patients,
        n_unlisted_patients, n_patients_with_conflicting_folds

    Notes
    -----
    A patient named in ``listed`` (by subject_id) gets the most frequent ``strat_fold`` of
    their listed rows (ties: lowest) for every ECG, listed or not. The rest are grouped into strata by
    sex and age quartile (quartiles of the patients' ages; unknown sex or age is its own
    stratum) and, in a seeded random order, dealt round-robin over the 20 folds, each stratum
    continuing where the previous one stopped: each stratum and the whole split 18:1:1
    (one twentieth per fold) to within one patient.
    """
    lst = listed.dropna(subset=["strat_fold"])
    by_study = ecgs[["study_id", "subject_id"]].merge(lst[["study_id", "strat_fold"]].drop_duplicates("study_id"),
                                                      on="study_id", how="left")
    n_listed = int(by_study["strat_fold"].notna().sum())
    cnt = lst.groupby(["subject_id", "strat_fold"]).size().rename("n").reset_index()
    n_conflict = int((cnt.groupby("subject_id").size() > 1).sum())
    cnt = cnt.sort_values(["subject_id", "n", "strat_fold"], ascending=[True, False, True])
    patient_fold = cnt.drop_duplicates("subject_id").set_index("subject_id")["strat_fold"].astype("int64")

    pats = ecgs.groupby("subject_id", sort=True).agg(sex=("sex", "first"), age=("age", "first"))
    todo = pats[~pats.index.isin(patient_fold.index)]
    if len(todo):
        ages = pats["age"].dropna()
        edges = np.unique(np.quantile(ages, [0.25, 0.5, 0.75])) if len(ages) else np.array([])
        quart = np.where(todo["age"].isna(), -1, np.searchsorted(edges, todo["age"].to_numpy(), side="right"))
        sex = np.where(todo["sex"].isna(), -1, todo["sex"].fillna(-1).to_numpy()).astype(int)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(todo))
        strata = pd.DataFrame({"subject_id": todo.index.to_numpy()[order], "sex": sex[order],
                               "quart": quart[order]})
        strata = strata.sort_values(["sex", "quart"], kind="stable")  # keeps the random order inside
        folds = np.arange(len(strata)) % N_FOLDS  # round-robin continuing across strata
        patient_fold = pd.concat([patient_fold, pd.Series(folds, index=strata["subject_id"].to_numpy())])
    fold = ecgs["subject_id"].map(patient_fold).astype("int64")
    counts = {"n_listed_ecgs": n_listed,
              "n_unlisted_ecgs_of_listed_patients": int((by_study["strat_fold"].isna().to_numpy()
                                                         & ecgs["subject_id"].isin(cnt["subject_id"]).to_numpy()).sum()),
              "n_unlisted_patients": int(len(todo)),
              "n_patients_with_conflicting_folds": n_conflict}
    return fold, counts


def split_counts(y: np.ndarray, fold: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Positives and negatives per target in train (0-17), val (18) and test (19).

    Parameters
    ----------
    y : ndarray of shape (n_ecgs, n_targets), float (1, 0 or NaN)
    fold : ndarray of shape (n_ecgs,), int
    """
    out = {}
    for split, sel in (("train", fold < VAL_FOLD), ("val", fold == VAL_FOLD), ("test", fold == TEST_FOLD)):
        ys = y[sel]
        out[split] = {"pos": (ys == 1).sum(axis=0), "neg": (ys == 0).sum(axis=0)}
    return out


def keep_targets(counts: dict, min_per_class: int) -> np.ndarray:
    """Targets with >= ``min_per_class`` positives and negatives in both val and test (bool mask)."""
    return ((counts["val"]["pos"] >= min_per_class) & (counts["val"]["neg"] >= min_per_class)
            & (counts["test"]["pos"] >= min_per_class) & (counts["test"]["neg"] >= min_per_class))


def _select_targets(con, candidates: list[dict], min_per_class: int) -> tuple[list[dict], np.ndarray, int]:
    """The candidate targets that ``keep_targets`` keeps over the ECGs of table ``split_ecgs``.

    Parameters
    ----------
    con : DuckDB connection with :data:`labecg.labels.TARGETS_TABLE` and ``split_ecgs``
        (row_idx, fold: the ECGs that have a fold)
    candidates : what ``labels.label_labs`` returns

    Returns
    -------
    targets : list of dict
        The kept candidates, ``_label_idx`` and ``_col`` included, plus ``counts`` (pos, neg
        per split).
    smallest_class : ndarray of shape (n_candidates,), int64
        Per candidate: the fewest of its validation and test positives and negatives.
    n_labels : int
        Lab labels with candidates.
    """
    n_cols = 2 * len(TASKS)
    split = f"CASE WHEN s.fold < {VAL_FOLD} THEN 'train' WHEN s.fold = {VAL_FOLD} THEN 'val' ELSE 'test' END"
    sums = ", ".join(f"count(*) FILTER (WHERE c{j} = 1), count(*) FILTER (WHERE c{j} = 0)" for j in range(n_cols))
    rows = con.execute(f"SELECT t.label_idx, {split} AS split, {sums} FROM {labels.TARGETS_TABLE} t "
                       "JOIN split_ecgs s USING (row_idx) GROUP BY ALL").fetchall()
    # pos, neg per (label, split, column): the counts of split_counts over the dense targets
    found = {(row[0], row[1]): row[2:] for row in rows}
    targets, smallest_class = [], []
    by_label: dict[int, list[dict]] = {}
    for candidate in candidates:
        by_label.setdefault(candidate["_label_idx"], []).append(candidate)
    for label_idx, label_candidates in by_label.items():
        cols = [candidate["_col"] for candidate in label_candidates]
        counts = {}
        for name in ("train", "val", "test"):
            c = found.get((label_idx, name), (0,) * (2 * n_cols))
            counts[name] = {"pos": np.array([c[2 * j] for j in cols], dtype=np.int64),
                            "neg": np.array([c[2 * j + 1] for j in cols], dtype=np.int64)}
        keep = keep_targets(counts, min_per_class)
        smallest_class += np.minimum.reduce([counts[name][cls] for name in ("val", "test")
                                             for cls in ("pos", "neg")]).tolist()
        for j in np.flatnonzero(keep):
            target = dict(label_candidates[j])
            target["counts"] = {name: {"pos": int(counts[name]["pos"][j]), "neg": int(counts[name]["neg"][j])}
                                for name in ("train", "val", "test")}
            targets.append(target)
    return targets, np.asarray(smallest_class, dtype=np.int64), len(by_label)


def keep_ecgs_with_targets(con, targets: list[dict]) -> None:
    """Table ``cohort_ecgs`` (row_idx, fold): the rows of ``split_ecgs`` with any kept target not missing.

    ``targets``: the kept targets, each with ``_label_idx`` and ``_col`` (its column of
    :data:`labecg.labels.TARGETS_TABLE`). Per pair, the bits of its target columns that are not
    NULL against the bits of its label's kept targets: half the time of one condition per label
    (2.3 s against 4.8 s at 40M pairs).
    """
    kept_bits: dict[int, int] = {}
    for target in targets:
        kept_bits[int(target["_label_idx"])] = kept_bits.get(int(target["_label_idx"]), 0) | 1 << int(target["_col"])
    con.register("kept_bits", pd.DataFrame({"label_idx": np.array(list(kept_bits), dtype=np.int64),
                                            "kept": np.array(list(kept_bits.values()), dtype=np.int64)}))
    present = " | ".join(f"((c{j} IS NOT NULL)::BIGINT << {j})" for j in range(2 * len(TASKS)))
    con.execute(f"CREATE TABLE cohort_ecgs AS SELECT row_idx, fold FROM split_ecgs WHERE row_idx IN "
                f"(SELECT row_idx FROM {labels.TARGETS_TABLE} JOIN kept_bits USING (label_idx) "
                f"WHERE ({present}) & kept <> 0)")


def _write_cohort(con, path: Path, targets: list[dict], ecg_columns: pd.DataFrame,
                  chunk_ecgs: Optional[int] = None) -> None:
    """``cohort.parquet``: the ECGs of ``cohort_ecgs`` (DuckDB), their features and targets, a row group at a time.

    Columns: subject_id, study_id (BIGINT), ecg_time (TIMESTAMP, microseconds), path
    (VARCHAR), fold (BIGINT), ``features.FEATURES`` (DOUBLE; race VARCHAR; NaN written as
    NULL), one FLOAT column per target (1.0, 0.0, NULL), then the value columns of
    :func:`value_columns` (DOUBLE, NULL: none), in ``row_idx`` order; a row group per chunk.
    ``ecg_columns``: per ECG of ``ecg`` its row_idx (ascending), path and ``features.FEATURES``;
    ``chunk_ecgs``: ECGs per row group (None: :data:`COHORT_CHUNK_ECGS`).

    Per chunk the pairs of :data:`labecg.labels.TARGETS_TABLE` of its ECGs are read once and
    scattered into the columns: the same file as joining each label's pairs to the ECGs in
    DuckDB (a chain of ~60 joins, whose every join sliced all the columns before it: 5.0 s against
    2.4 s at 157k ECGs and 417 columns).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunk_ecgs = int(chunk_ecgs or COHORT_CHUNK_ECGS)
    values = value_columns(targets)
    # (name, label_idx, column of TARGETS_TABLE, type) of every target and value column, in file order
    outputs = [(t["name"], int(t["_label_idx"]), f"c{int(t['_col'])}",
                pa.float32()) for t in targets]
    outputs += [(v["name"], int(v["_label_idx"]), labels.value_table_column(TASKS.index(v["task"])), pa.float64())
                for v in values]
    sources = sorted({src for _, _, src, _ in outputs})
    kept = sorted({label_idx for _, label_idx, _, _ in outputs})
    # the ids, the time and the fold are never NULL: required columns, as DuckDB writes them
    fields = [pa.field("subject_id", pa.int64(), nullable=False), pa.field("study_id", pa.int64(), nullable=False),
              pa.field("ecg_time", pa.timestamp("us"), nullable=False), pa.field("path", pa.string()),
              pa.field("fold", pa.int64(), nullable=False)]
    fields += [pa.field(f, pa.string() if f == "race" else pa.float64()) for f in features.FEATURES]
    fields += [pa.field(name, kind) for name, _, _, kind in outputs]
    schema = pa.schema(fields)
    cohort = con.execute("SELECT c.row_idx, c.fold, e.subject_id, e.study_id, e.t_us FROM cohort_ecgs c "
                         "JOIN ecg e USING (row_idx) ORDER BY c.row_idx").fetchnumpy()
    at = np.searchsorted(ecg_columns["row_idx"].to_numpy(), cohort["row_idx"])  # the ECGs' rows of ecg_columns
    per_ecg = [pa.array(np.asarray(cohort[c]), pa.int64()) for c in ("subject_id", "study_id")]
    per_ecg += [pa.array(np.asarray(cohort["t_us"]), pa.int64()).cast(pa.timestamp("us")),
                pa.array(ecg_columns["path"].to_numpy(dtype=object)[at], pa.string()),
                pa.array(np.asarray(cohort["fold"]), pa.int64())]
    per_ecg += [pa.array(ecg_columns[f].to_numpy()[at], pa.string() if f == "race" else pa.float64(), from_pandas=True)
                for f in features.FEATURES]
    kept_labels = np.asarray(kept, dtype=np.int64)
    # the parquet encoding of a row group (a third of the time) runs in a thread beside the next
    # chunk's query and scatter: pyarrow lets go of the GIL while it writes
    with util.atomic_path(path) as tmp, pq.ParquetWriter(str(tmp), schema, compression="snappy") as writer, \
            ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for start in range(0, max(len(cohort["row_idx"]), 1), chunk_ecgs):
            rows = np.asarray(cohort["row_idx"][start:start + chunk_ecgs])
            n = len(rows)
            arrays = [column.slice(start, n) for column in per_ecg]
            pairs = con.execute(
                f"SELECT row_idx, label_idx, {', '.join(sources)} FROM {labels.TARGETS_TABLE} "
                f"WHERE row_idx BETWEEN {int(rows[0]) if n else 0} AND {int(rows[-1]) if n else -1} "
                f"AND label_idx IN ({', '.join(str(k) for k in kept)})").fetchnumpy()  # NULLs: masked
            pair_rows = np.ma.getdata(pairs["row_idx"])
            slot = np.minimum(np.searchsorted(rows, pair_rows), max(n - 1, 0))
            in_chunk = np.flatnonzero(rows[slot] == pair_rows) if n else np.zeros(0, np.int64)  # not every ECG is in the cohort
            # the chunk's pairs by label: each label's a slice, each source column gathered once
            order = in_chunk[np.argsort(np.ma.getdata(pairs["label_idx"])[in_chunk], kind="stable")]
            by_label = np.ma.getdata(pairs["label_idx"])[order]
            first = dict(zip(kept, np.searchsorted(by_label, kept_labels, side="left")))
            end = dict(zip(kept, np.searchsorted(by_label, kept_labels, side="right")))
            dest = slot[order]
            src = {c: (np.ma.getdata(pairs[c])[order], np.ma.getmaskarray(pairs[c])[order]) for c in sources}
            for _, label_idx, column, kind in outputs:
                data, null = src[column]
                span = slice(first[label_idx], end[label_idx])
                out, missing = np.zeros(n, data.dtype), np.ones(n, bool)
                out[dest[span]], missing[dest[span]] = data[span], null[span]
                arrays.append(pa.array(out, kind, mask=missing))
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_table, pa.Table.from_arrays(arrays, schema=schema),
                                  row_group_size=max(n, 1))
        if pending is not None:
            pending.result()


def value_columns(targets: list[dict], estimation_window_min: int = 60, value_tolerance_min: int = 15) -> list[dict]:
    """The value columns of ``cohort.parquet``: per lab with a kept target, one per task.

    Parameters
    ----------
    targets : list of dict
        The kept targets (``targets.json``'s fields; ``_label_idx`` is carried over when present).

    Returns
    -------
    list of dict, labs in the order they first occur in ``targets``, tasks in
    ``targets.TASKS`` order: name (``labels.value_column``), lab, label, unit, task,
    horizon_min, window_min ([start, end] in minutes from the ECG, both included: the
    estimation window for est, [h - tol, h + tol] for mon{h}), and ``_label_idx`` when the
    targets carry it.
    """
    out, seen = [], set()
    for target in targets:
        if target["lab"] in seen:
            continue
        seen.add(target["lab"])
        for task in TASKS:
            h = horizon_min(task)
            window = ([-estimation_window_min, estimation_window_min] if h is None
                      else [h - value_tolerance_min, h + value_tolerance_min])
            column = {"name": labels.value_column(target["lab"], task), "lab": target["lab"],
                      "label": target["label"], "unit": target["unit"], "task": task, "horizon_min": h,
                      "window_min": window}
            if "_label_idx" in target:
                column["_label_idx"] = target["_label_idx"]
            out.append(column)
    return out


def _write_last_values(con, path: Path, targets: list[dict], last_value_cutoffs_min: tuple[int, ...],
                       rows_per_part: Optional[int]) -> None:
    """``last_values.parquet``: the cohort's ECGs and its targets' labs (:func:`last_values_query`), a part at a time.

    Each part of patients (:func:`labecg.labels.last_value_parts`, ``rows_per_part`` lab rows)
    is looked up, sorted and appended as row groups; the parts come in cohort order, so the
    file is in the order of :func:`last_values_query` without a sort of all its rows (79M at
    full scale) or a table of them in DuckDB.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    # only the lab may be NULL in a row (as DuckDB's COPY of these columns marked them)
    schema = pa.schema([pa.field("study_id", pa.int64(), nullable=False), pa.field("lab", pa.string()),
                        pa.field("cutoff_min", pa.int64(), nullable=False),
                        pa.field("value", pa.float64(), nullable=False), pa.field("age_min", pa.float64(), nullable=False)])
    kept = ", ".join(str(k) for k in sorted({int(t["_label_idx"]) for t in targets}))
    con.execute("CREATE OR REPLACE TEMP TABLE last_value_ecgs AS SELECT e.row_idx, e.subject_id, e.t_us "
                "FROM ecg e JOIN cohort_ecgs USING (row_idx)")
    parts = labels.last_value_parts(con, last_value_cutoffs_min, rows_per_part, ecgs="last_value_ecgs",
                                    label_sql=f"label_idx IN ({kept})")
    # a part is written in a thread while DuckDB looks up the next (~4 s less at full scale)
    with util.atomic_path(path) as tmp, pq.ParquetWriter(str(tmp), schema, compression="snappy") as writer, \
            ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for part in parts:
            table = ordered_arrow(con, last_values_query(con, targets, f"({part})")).cast(schema)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_table, table)
        if pending is not None:
            pending.result()
    con.execute("DROP TABLE last_value_ecgs")


def ordered_arrow(con, sql: str):
    """The rows of ``sql`` as a pyarrow Table, in the order of its ORDER BY.

    DuckDB 2.0's Arrow output of a connection with ``preserve_insertion_order = false`` (the
    cohort stage's setting) hands out the sorted rows in parallel batches, out of order; here
    the setting is on for the query and set back afterwards.
    """
    before = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = true")
    try:
        relation = con.sql(sql)
        fetch = getattr(relation, "to_arrow_table", None) or relation.arrow  # DuckDB 2.0, and before
        return fetch()
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if before else 'false'}")


# ---------------------------------------------------------------------------------------
# the builder


def _features(con, cfg: CohortConfig, files: dict, headers: dict, ecgs: pd.DataFrame, flow: readers.Flow) -> dict:
    """Every feature of ``features.FEATURES`` per ECG (ndarrays of shape (n_ecgs,)); their filters added to ``flow``."""
    feats = features.read_demographics(con, files, headers, ecgs, flow)
    feats.update(features.read_vitals(con, files, headers, len(ecgs), flow,
                                      vitals_window_min=cfg.vitals_window_min, causal=cfg.causal))
    feats.update(features.read_biometrics(con, files, headers, len(ecgs), flow,
                                          biometrics_window_days=cfg.biometrics_window_days))
    return feats


def _split_ecgs(con, cfg: CohortConfig, files: dict, headers: dict, ecgs: pd.DataFrame, feats: dict,
                flow: readers.Flow) -> int:
    """Create the table ``split_ecgs`` (row_idx, fold) of the ECGs in the split (:func:`assign_folds`); return their count."""
    if cfg.ecg_icd is not None:
        listed = readers.read_strict(files["records_w_diag_icd10"], headers["records_w_diag_icd10"],
                                     {"study_id": "BIGINT", "subject_id": "BIGINT", "strat_fold": "BIGINT"})
    else:  # no file given: nothing is listed, every fold is assigned
        listed = pd.DataFrame({c: pd.Series(dtype="int64") for c in ("study_id", "subject_id", "strat_fold")})

    bad = listed["strat_fold"].notna() & ~listed["strat_fold"].between(0, N_FOLDS - 1)
    if bad.any():
        raise ValueError(f"{files['records_w_diag_icd10']}: column 'strat_fold' must be 0-19; found "
                         f"{listed.loc[bad, 'strat_fold'].iloc[0]} ({int(bad.sum())} rows)")
    fold, fold_counts = assign_folds(ecgs.assign(sex=feats["sex"], age=feats["age"]), listed, cfg.seed)
    fold = fold.to_numpy()
    listed_ids = listed.loc[listed["strat_fold"].notna(), "study_id"]
    in_split = ecgs["study_id"].isin(listed_ids).to_numpy().copy()
    del listed, listed_ids
    if cfg.ecg_icd is None:
        in_split[:] = True
        flow.add("folds: assigned, no MIMIC-IV-ECG-ICD file given", len(ecgs), len(ecgs),
                 f"none dropped: all {len(ecgs)} ECGs of {fold_counts['n_unlisted_patients']} patients were "
                 "assigned folds (stratified by sex and age quartile) because no MIMIC-IV-ECG-ICD file was given")
    elif cfg.unlisted_ecgs == "exclude":
        flow.add("folds: ECGs listed in ecg_icd", len(ecgs), int(in_split.sum()),
                 "ECGs without a strat_fold in ecg_icd excluded (as the authors: no split)", warn=True)
    else:
        in_split[:] = True
        flow.add("folds: strat_fold from ecg_icd by study_id", len(ecgs), fold_counts["n_listed_ecgs"],
                 "ECGs not listed in ecg_icd kept (given their patient's fold, or a stratified one)")
    if fold_counts["n_patients_with_conflicting_folds"]:
        log.warning(f"{files['records_w_diag_icd10']}: {fold_counts['n_patients_with_conflicting_folds']} "
                    "patients have ECGs in several strat_folds; each takes their most frequent fold")
    if cfg.unlisted_ecgs == "assign" and cfg.ecg_icd is not None:
        log.info(f"folds: {fold_counts['n_unlisted_ecgs_of_listed_patients']} unlisted ECGs took their patient's "
                 f"fold; {fold_counts['n_unlisted_patients']} unlisted patients were assigned by stratification")
    con.register("split_df", pd.DataFrame({"row_idx": ecgs["row_idx"].to_numpy()[in_split],
                                           "fold": fold[in_split].astype("int64")}))
    con.execute("CREATE TABLE split_ecgs AS SELECT row_idx, fold FROM split_df")
    con.unregister("split_df")
    return int(in_split.sum())


def _timed(fn, *args):
    """``(fn(*args), seconds it took)``."""
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


def build_cohort(cfg: CohortConfig) -> CohortResult:
    """Build ``cohort.parquet``, ``targets.json`` and ``cohort_flow.csv`` in ``cfg.cohort_dir``.

    The rules: the docstrings of this module, ``labecg.features`` and ``labecg.labels``;
    the files: ARCHITECTURE.md section 2. Memory: DuckDB holds to ``cfg.memory_limit`` and
    spills the rest to a scratch folder in ``cfg.cohort_dir``; it writes ``last_values.parquet``
    itself, and ``cohort.parquet`` is written a row group of :data:`COHORT_CHUNK_ECGS` ECGs
    at a time (:func:`_write_cohort`), so the wide cohort and the long lab tables never pass
    through Python whole (which holds a few arrays per ECG and one row group: :func:`python_side_bytes`).
    """
    import duckdb

    t0 = time.perf_counter()
    timer = _StepTimer()
    files = readers.source_files(cfg.hosp, cfg.ed, cfg.ecg, cfg.ecg_icd)
    headers = {k: readers.read_header(p, readers.REQUIRED[k]) for k, p in files.items()}
    flow = readers.Flow()
    ecgs = readers.read_ecgs(files["record_list"], headers["record_list"], flow)
    total = machine_memory()
    limit = check_memory(cfg.memory_limit, len(ecgs), total)
    cfg.cohort_dir.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=".scratch_", dir=cfg.cohort_dir)  # beside the output: room for spills
    spill = Path(tmpdir) / "spill"
    log.info(f"memory_limit {limit / 2**30:.2f} GiB for DuckDB ({cfg.memory_limit} of this machine's "
             f"{total / 2**30:.1f} GiB{', as given' if not str(cfg.memory_limit).strip().endswith('%') else ''}); "
             f"it spills to {spill}")
    # a file-backed scratch database: its tables are compressed and can leave memory
    con = duckdb.connect(str(Path(tmpdir) / "scratch.duckdb"),
                         config={"memory_limit": f"{limit}B", "temp_directory": str(spill),
                                 "preserve_insertion_order": False})
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.InvalidInputException:
        pass  # inside a Jupyter kernel without ipywidgets DuckDB refuses the setting; no bar shows there anyway
    if cfg.threads:
        con.execute(f"SET threads = {int(cfg.threads)}")
    try:
        readers.load_ecgs(con, ecgs)
        timer.step("ECGs")
        # the labevents scan leaves part of a core idle (gzip is read on one thread): the features
        # and folds are made beside it, on the connection, while it runs on a cursor of its own
        # (full scale, 2 cores: 123 s against 135 s one after the other, one pair of runs). The flow keeps the order
        # of one after the other: features, lab rows, folds.
        scan_flow, fold_flow = readers.Flow(), readers.Flow()
        scan_con = con.cursor()
        with readers.scan_as_probe_side(con), ThreadPoolExecutor(max_workers=1) as pool:
            scan = pool.submit(_timed, labels.scan_labevents, scan_con, files, headers, scan_flow)
            try:
                feats = _features(con, cfg, files, headers, ecgs, flow)
                timer.step("features")
                n_in_split = _split_ecgs(con, cfg, files, headers, ecgs, feats, fold_flow)
                timer.step("folds")
            except BaseException:
                # the error is told now, not after the scan: stop it (again, should it not have
                # reached its query yet)
                while not scan.done():
                    scan_con.interrupt()
                    wait([scan], timeout=0.1)
                raise
            n_scanned, scan_secs = scan.result()
        scan_con.close()
        timer.beside("labevents scan", scan_secs, "features and folds")
        flow.rows += scan_flow.rows
        candidates = labels.label_labs(con, files, headers, len(ecgs), flow, min_lab_events=cfg.min_lab_events,
                                       estimation_window_min=cfg.estimation_window_min, causal=cfg.causal,
                                       thresholds=cfg.thresholds, value_tolerance_min=cfg.value_tolerance_min,
                                       rows_per_part=labels.rows_per_part(limit), n_scanned=n_scanned)
        timer.step("lab labels")
        flow.rows += fold_flow.rows

        targets, smallest_class, n_labels = _select_targets(con, candidates, cfg.min_per_class)
        flow.add("targets: per-split class counts", len(candidates), len(targets),
                 f"targets (not rows) with < {cfg.min_per_class} positives or negatives in val or test")
        if not targets:
            raise ValueError(no_targets_message(cfg, smallest_class, n_labels))
        if not any(target["task"] == "est" for target in targets):
            log.warning("0 estimation targets (only monitoring ones); "
                        + no_targets_message(cfg, smallest_class, n_labels).split("; ", 1)[1])
        task_order = {task: n for n, task in enumerate(cfg.tasks)}
        targets.sort(key=lambda target: (task_order[target["task"]], target["lab"], target["direction"] != "low"))
        if cfg.drop_ecgs_without_targets:
            keep_ecgs_with_targets(con, targets)
            n_has = con.execute("SELECT count(*) FROM cohort_ecgs").fetchall()[0][0]
            flow.add("targets: ECGs with at least one target", n_in_split, n_has,
                     "ECGs without any kept target dropped (as the authors)")
        else:
            con.execute("CREATE TABLE cohort_ecgs AS SELECT row_idx, fold FROM split_ecgs")
        n_ecgs, n_patients = con.execute("SELECT count(*), count(DISTINCT e.subject_id) FROM cohort_ecgs "
                                         "JOIN ecg e USING (row_idx)").fetchall()[0]
        timer.step("targets")

        # the per-ECG columns DuckDB does not hold yet: the record path and the features
        race = pd.Series(feats["race"], dtype=object)
        columns = {"row_idx": ecgs["row_idx"].to_numpy(), "path": ecgs["path"].astype(str).to_numpy()}
        for f in features.FEATURES:
            columns[f] = race.where(race.notna(), None).to_numpy() if f == "race" else np.asarray(feats[f], "float64")
        del feats
        ecg_columns = pd.DataFrame(columns)
        del columns

        summary = {"n_ecgs": int(n_ecgs), "n_patients": int(n_patients),
                   "n_targets": {task: sum(target["task"] == task for target in targets) for task in cfg.tasks}}
        paths = {"cohort": cfg.cohort_dir / layout.COHORT, "targets": cfg.cohort_dir / layout.TARGETS,
                 "flow": cfg.cohort_dir / layout.FLOW, "last_values": cfg.cohort_dir / layout.LAST_VALUES}
        _write_cohort(con, paths["cohort"], targets, ecg_columns)
        del ecg_columns
        timer.step("cohort.parquet")
        _write_last_values(con, paths["last_values"], targets, cfg.last_value_cutoffs_min, labels.rows_per_part(limit))
        timer.step("last_values.parquet")
    finally:
        con.close()
        shutil.rmtree(tmpdir, ignore_errors=True)

    targets = [{k: v for k, v in target.items() if not k.startswith("_")} for target in targets]
    marker = layout.data_root(cfg.ecg) / layout.SYNTHETIC_MARKER
    # the settings travel with targets.json into every run folder: what made a run, told by the run
    settings = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(cfg).items()}
    util.write_json(paths["targets"], {
        "version": 1,
        "source": {"hosp": str(cfg.hosp), "ed": str(cfg.ed), "ecg": str(cfg.ecg),
                   "ecg_icd": None if cfg.ecg_icd is None else str(cfg.ecg_icd), "synthetic": marker.exists(),
                   "synthetic_config": util.read_json(marker).get("config") if marker.exists() else None},
        "config": settings, "summary": summary,
        "thresholds": {"rule": cfg.thresholds, "description": THRESHOLD_RULES[cfg.thresholds]},
        "targets": targets, "values": value_columns(targets, cfg.estimation_window_min, cfg.value_tolerance_min)})
    with util.atomic_path(paths["flow"]) as tmp:
        pd.DataFrame(flow.rows, columns=["step", "rows_in", "rows_out", "dropped", "reason"]).to_csv(tmp, index=False)
    log.info(f"time per step: {timer}")
    log.info(format_summary(summary) + f" ({time.perf_counter() - t0:.1f} s)")
    return CohortResult(cohort=paths["cohort"], targets=paths["targets"], flow=paths["flow"], summary=summary)


class _StepTimer:
    """Seconds per step of the stage, for the flow log."""

    def __init__(self):
        self.last, self.steps = time.perf_counter(), []

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.steps.append((name, now - self.last))
        self.last = now

    def beside(self, name: str, secs: float, others: str) -> None:
        """A step that ran ``secs`` seconds beside the steps ``others``; the next step starts now."""
        self.steps.append((f"{name} (beside {others})", secs))
        self.last = time.perf_counter()

    def __str__(self) -> str:
        return ", ".join(f"{name} {secs:.1f} s" for name, secs in self.steps)


#: The cohorts of the fuller build (``labecg book --full``), as ``CohortConfig`` settings that
#: differ from the book's cohort: ``causal`` inputs up to the ECG, monitoring labs after it;
#: ``row`` each lab row against its own reference range, the label's median where a bound is empty.
ABLATIONS: dict[str, dict] = {"causal": {"causal": True}, "row": {"thresholds": "row"}}
#: What each ablation's cohort is, in the words of the pages (their table's ``run`` column).
ABLATION_TITLES: dict[str, str] = {"causal": "inputs up to the ECG only (causal)",
                                   "row": THRESHOLD_RULES["row"]}


def ablation_dir(folder, name: str) -> Path:
    """Cohort or run folder of an ablation: ``<folder>-<name>`` beside ``folder``."""
    if name not in ABLATIONS:
        raise ValueError(f"ablation {name!r} unknown; expected one of {list(ABLATIONS)}")
    folder = Path(folder)
    return folder.with_name(f"{folder.name}-{name}")


def ablation_config(cfg: CohortConfig, name: str) -> CohortConfig:
    """``cfg`` with the settings of ablation ``name`` (:data:`ABLATIONS`), written to its own folder."""
    return dataclasses.replace(cfg, cohort_dir=ablation_dir(cfg.cohort_dir, name), **ABLATIONS[name])


LAST_VALUE_COLUMNS = ("study_id", "lab", "cutoff_min", "value", "age_min")


def last_value_cutoff(task: str, estimation_window_min: int) -> int:
    """The cutoff of a task's last-value baseline: values charted strictly before ecg_time - cutoff.

    Estimation labels come from [t - w, t + w], so an earlier value inside that window can
    be the label's own row: estimation targets look before the window (w minutes).
    Monitoring labels come after the ECG: their baseline may use anything before it (0).
    """
    return int(estimation_window_min) if task == "est" else 0


def last_values_query(con, targets: list[dict], source: str) -> str:
    """SQL of ``last_values.parquet``'s rows: the last earlier values of the cohort's ECGs and its targets' labs.

    ``source``: a table or parenthesized query of last values (row_idx, label_idx, cutoff_min,
    value, age_min: :func:`labecg.labels.last_value_parts`). Needs ``ecg`` and ``cohort_ecgs``
    (the cohort's ECGs by ``row_idx``) in ``con``; registers the kept targets' labs as ``last_labs``.

    Returns
    -------
    A query with columns :data:`LAST_VALUE_COLUMNS`: ``study_id`` (BIGINT), ``lab`` (VARCHAR,
    the target's lab slug), ``cutoff_min`` (BIGINT), ``value`` (DOUBLE, the lab's unit),
    ``age_min`` (DOUBLE, minutes before the ECG); one row per (ECG, lab, cutoff) with an
    earlier value, in cohort order, then lab, then cutoff.
    """
    slug = {int(target["_label_idx"]): target["lab"] for target in targets}
    # lab_rank: the slug's place in code-point order, which is DuckDB's order of VARCHAR: sorting
    # by it instead of the text took 1.4 s against 2.1 s (8M rows, 2 cores)
    rank = {lab: n for n, lab in enumerate(sorted(set(slug.values())))}
    con.register("last_labs", pd.DataFrame({"label_idx": np.array(list(slug), dtype=np.int64),
                                            "lab": pd.Series(list(slug.values()), dtype=object),
                                            "lab_rank": np.array([rank[lab] for lab in slug.values()],
                                                                 dtype=np.int64)}))
    return (f"SELECT e.study_id, x.lab, v.cutoff_min, v.value, v.age_min FROM {source} v "
            f"JOIN cohort_ecgs c USING (row_idx) JOIN ecg e USING (row_idx) JOIN last_labs x USING (label_idx) "
            f"ORDER BY c.row_idx, x.lab_rank, v.cutoff_min")


def no_targets_message(cfg: CohortConfig, smallest_class: np.ndarray, n_labels: int) -> str:
    """What to lower when the filters leave no target, with the values that would leave some.

    Parameters
    ----------
    smallest_class : ndarray of shape (n_candidates,), int
        Per candidate target (every lab, direction and task that passed ``min_lab_events``):
        the fewest of its validation positives, validation negatives, test positives and
        test negatives. A target is kept when this is ``>= min_per_class``.
    n_labels : int
        Lab labels with at least ``min_lab_events`` rows.
    """
    text = (f"{cfg.cohort_dir}: 0 targets: none of the {len(smallest_class)} candidate targets of {n_labels} lab labels "
            f"(those with >= min_lab_events={cfg.min_lab_events} rows) has >= min_per_class={cfg.min_per_class} "
            f"positives and negatives in both validation and test; ")
    best = int(smallest_class.max()) if len(smallest_class) else 0
    if best >= 1:
        options = sorted({best, 1} | ({max(1, best // 2)} if best > 2 else set()), reverse=True)
        text += "lower --min-per-class: " + ", ".join(
            f"{k} keeps {int((smallest_class >= k).sum())} targets" for k in options)
    else:
        text += "no candidate has even one positive and one negative there"
    return text + (f"; a lower --min-lab-events (now {cfg.min_lab_events}) admits labs with fewer rows, "
                   "and more patients give every target more of both")


def format_summary(summary: dict) -> str:
    """The cohort in the words of the paper's section 3.1."""
    n = summary["n_targets"]
    mon = [k for k in n if is_monitoring(k)]
    return (f"{summary['n_ecgs']:,} ECGs from {summary['n_patients']:,} patients; "
            f"{n.get('est', 0)} estimation targets and "
            f"{' / '.join(str(n[k]) for k in mon)} monitoring targets at "
            f"{' / '.join(str(horizon_min(k)) for k in mon)} min")


def describe_cohort(cohort_dir) -> pd.DataFrame:
    """The cohort summary beside the paper's (arXiv v1, section 3.1).

    Returns
    -------
    DataFrame indexed by quantity (ECGs, patients, estimation targets, monitoring targets
    at 30/60/120 min) with integer columns ``ours`` and ``paper``.
    """
    s = util.read_json(Path(cohort_dir) / layout.TARGETS)["summary"]
    rows = {"ECGs": (s["n_ecgs"], paper.COHORT["n_ecgs"]),
            "patients": (s["n_patients"], paper.COHORT["n_patients"])}
    for task, n in s["n_targets"].items():
        name = ("estimation targets" if not is_monitoring(task)
                else f"monitoring targets, {horizon_min(task)} min")
        rows[name] = (n, paper.COHORT["n_targets"].get(task))
    return pd.DataFrame.from_dict(rows, orient="index", columns=["ours", "paper"]).astype("Int64")
