"""Cohort builder: features, lab labels, thresholds and folds from the four MIMIC sources.

Reads MIMIC-IV ``hosp`` and ``ed``, MIMIC-IV-ECG ``record_list.csv`` and MIMIC-IV-ECG-ICD
``records_w_diag_icd10.csv`` (real or synthetic, the same code) and writes one row per ECG
study with demographics, vitals, biometrics, a fold, and the estimation and monitoring
targets of the paper (section 3.1). The tables are read by ``labecg.readers`` (DuckDB
streams the large ones; every dropped row is counted in ``cohort_flow.csv``).

Choices (the paper's text, then REFERENCE_NOTES.md where the paper is silent; ours where both are):

- Lab time windows, all closed (both ends included), measured in microseconds from ``ecg_time``:
  estimation labs charted in [ecg_time - 60 min, ecg_time + 60 min]; monitoring labs in
  [ecg_time, ecg_time + h], h in ``util.HORIZONS_MIN`` (30, 60, 120).
- Closest lab value: smallest absolute time difference; ties go to the earlier charttime, then
  the higher ``labevent_id``.
- Demographics, vitals and biometrics (their windows, closest values, plausible ranges and
  units): ``labecg.features``.
- Labs: ``labevents`` rows of patients with at least one ECG only (so all label statistics
  below, fluid counts, units, row counts and medians, are over those patients' rows, as in
  the authors' code); joined to ``d_labitems`` on itemid (several itemids may share a label
  and fluid: they are one test); rows without valuenum or charttime dropped (text-only
  values such as 'ERROR' or '>25000'); labels 'H', 'I', 'L', 'other' dropped; rows whose two
  reference bounds both equal 0 dropped (a row with one or two empty bounds is kept; its
  empty bound does not enter the medians); repeated ``labevent_id`` kept once; per label
  only its most frequent fluid (ties: alphabetical); per label the most frequent unit
  spelling is the unit (ties: alphabetical); other spellings that name the same quantity
  (equal up to case and spaces, or listed in ``UNIT_SYNONYMS``) are relabelled with factor
  1, rows with a unit of another quantity are dropped and counted; rows without a unit keep
  their value; labels with fewer than ``min_lab_events`` rows dropped.
- Thresholds: per label the median of ``ref_range_lower`` and of ``ref_range_upper`` over
  the label's rows of ECG patients (NULLs ignored; even counts averaged); low if valuenum <
  lower median, high if > upper median.
  A label yields a target per abnormal class that occurs among its rows.
- Estimation target: the closest row in the window; 1.0 if its class is the target's
  direction, else 0.0; NaN if the window is empty. Monitoring target: NaN if the window is
  empty or holds both a low and a high row; else 1.0 if it holds a row of the target's
  direction, else 0.0.
- Folds: ``strat_fold`` joined on study_id. A patient named in the ECG-ICD list takes the most
  frequent fold of their listed rows (ties: lowest) for all their ECGs. An ECG without a
  ``strat_fold`` is excluded (``unlisted_ecgs="exclude"``, the authors': it never reaches a
  split), counted in the flow table. With ``unlisted_ecgs="assign"`` it is kept: it takes its
  patient's fold, and wholly unlisted patients are stratified by sex and age quartile: within
  each stratum, in a seeded random order, patients are dealt round-robin over the 20 folds,
  each stratum starting where the previous one ended, so every stratum and the total split
  18:1:1 to within one patient.
- A target is kept when the validation fold (18) and the test fold (19) each hold at least
  ``min_per_class`` positives and ``min_per_class`` negatives (``targets.json`` records the
  rules; the dataset counts again over the ECGs whose signal converted).
- ECGs without any kept target are dropped (``drop_ecgs_without_targets``, the authors'),
  counted in the flow table.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd

from labecg import catalog, features, paper, readers, util

log = util.get_logger("labecg.cohort")

BASE_COLUMNS = ("subject_id", "study_id", "ecg_time", "path", "fold")
DROPPED_LABELS = ("H", "I", "L", "other")
# Spellings that name the same quantity (factor 1); label None = any label.
UNIT_SYNONYMS: dict[Optional[str], tuple[frozenset, ...]] = {
    None: (frozenset({"K/uL", "10^3/uL", "x10E3/uL", "THOU/uL"}),
           frozenset({"m/uL", "10^6/uL", "x10E6/uL", "MIL/uL"}),
           frozenset({"IU/L", "U/L"})),
    "MCHC": (frozenset({"g/dL", "%"}),),  # MIMIC prints MCHC both ways, same numbers
}
N_FOLDS = 20
VAL_FOLD, TEST_FOLD = 18, 19
TRAIN_FOLDS: tuple[int, ...] = tuple(range(VAL_FOLD))  # 0-17


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
    ecg_icd : Path
        MIMIC-IV-ECG-ICD ``records_w_diag_icd10.csv`` (the folds).
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
    memory_limit : str
        DuckDB memory limit, e.g. "16GB".
    threads : int
        DuckDB threads; 0 = all cores.
    """
    hosp: Path
    ed: Path
    ecg: Path
    ecg_icd: Path  # records_w_diag_icd10.csv
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
    memory_limit: str = "16GB"
    threads: int = 0  # 0 = DuckDB's default (all cores)

    def __post_init__(self):
        for name in ("hosp", "ed", "ecg", "ecg_icd", "cohort_dir"):
            if not isinstance(getattr(self, name), Path):
                raise TypeError(f"CohortConfig.{name} must be a pathlib.Path, got {getattr(self, name)!r}")
        for name in ("min_lab_events", "min_per_class", "estimation_window_min",
                     "vitals_window_min", "biometrics_window_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"CohortConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.unlisted_ecgs not in ("exclude", "assign"):
            raise ValueError(f"CohortConfig.unlisted_ecgs must be 'exclude' or 'assign', got {self.unlisted_ecgs!r}")
        if self.threads < 0:
            raise ValueError(f"CohortConfig.threads must be >= 0, got {self.threads}")

    @property
    def horizons_min(self) -> tuple[int, ...]:
        """The paper's monitoring horizons (fixed: target names and tables are built on them)."""
        return util.HORIZONS_MIN

    @property
    def tasks(self) -> tuple[str, ...]:
        return util.TASKS


@dataclass(frozen=True)
class CohortResult:
    cohort: Path
    targets: Path
    flow: Path
    summary: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# rules applied in pandas to small tables (per label, per patient); the pandas form of the
# SQL rules is tests/reference/cohort_rules.py


def choose_fluid(counts: pd.DataFrame) -> pd.Series:
    """Per label its most frequent fluid.

    Parameters
    ----------
    counts : DataFrame with columns label, fluid, n (rows of that label and fluid)

    Returns
    -------
    Series indexed by label: the fluid with most rows (ties: alphabetically first).
    """
    n = counts.sort_values(["label", "n", "fluid"], ascending=[True, False, True])
    return n.drop_duplicates("label").set_index("label")["fluid"]


def _unit_key(u: str) -> str:
    return "".join(u.split()).lower()


def same_quantity(label: str, unit_a: str, unit_b: str) -> bool:
    """Whether two unit spellings of a label name the same quantity (conversion factor 1)."""
    if _unit_key(unit_a) == _unit_key(unit_b):
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
    ``counts`` plus columns unit (the label's most frequent spelling; ties alphabetical) and
    keep (bool: same quantity as the unit per ``same_quantity``, or no unit given). Kept rows
    keep their value (every listed synonym has factor 1).
    """
    named = counts[counts["valueuom"].notna()].sort_values(["label", "n", "valueuom"],
                                                           ascending=[True, False, True])
    unit = named.drop_duplicates("label").set_index("label")["valueuom"]
    out = counts.assign(unit=counts["label"].map(unit))
    out["keep"] = [pd.isna(u) or pd.isna(c) or same_quantity(lab, u, c)
                   for lab, u, c in zip(out["label"], out["valueuom"], out["unit"])]
    return out


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


# ---------------------------------------------------------------------------------------
# the builder


def build_cohort(cfg: CohortConfig) -> CohortResult:
    """Build ``cohort.parquet``, ``targets.json`` and ``cohort_flow.csv`` in ``cfg.cohort_dir``.

    See the module docstring for every rule; ARCHITECTURE.md section 2 for the files.
    """
    import duckdb

    t0 = time.perf_counter()
    files = readers.source_files(cfg.hosp, cfg.ed, cfg.ecg, cfg.ecg_icd)
    headers = {k: readers.read_header(p, readers.REQUIRED[k]) for k, p in files.items()}
    flow = readers.Flow()
    cfg.cohort_dir.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=".scratch_", dir=cfg.cohort_dir)  # beside the output: room for spills
    # a file-backed scratch database: its tables are compressed and can leave memory
    con = duckdb.connect(str(Path(tmpdir) / "scratch.duckdb"),
                         config={"memory_limit": cfg.memory_limit, "temp_directory": str(Path(tmpdir) / "spill"),
                                 "preserve_insertion_order": False})
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.InvalidInputException:
        pass  # inside a Jupyter kernel without ipywidgets DuckDB refuses the setting; no bar shows there anyway
    if cfg.threads:
        con.execute(f"SET threads = {int(cfg.threads)}")
    try:
        ecgs = readers.read_ecgs(files["record_list"], headers["record_list"], flow)
        readers.load_ecgs(con, ecgs)
        feats = features.read_demographics(con, files, headers, ecgs, flow)
        feats.update(features.read_vitals(con, files, headers, len(ecgs), flow, window_min=cfg.vitals_window_min))
        feats.update(features.read_biometrics(con, files, headers, len(ecgs), flow,
                                              window_days=cfg.biometrics_window_days))
        labels, lab_meta = _label_labs(con, cfg, files, headers, len(ecgs), flow)
        listed = readers.read_strict(files["records_w_diag_icd10"], headers["records_w_diag_icd10"],
                              {"study_id": "BIGINT", "subject_id": "BIGINT", "strat_fold": "BIGINT"})
    finally:
        con.close()
        shutil.rmtree(tmpdir, ignore_errors=True)

    bad = listed["strat_fold"].notna() & ~listed["strat_fold"].between(0, N_FOLDS - 1)
    if bad.any():
        raise ValueError(f"{files['records_w_diag_icd10']}: column 'strat_fold' must be 0-19; found "
                         f"{listed.loc[bad, 'strat_fold'].iloc[0]} ({int(bad.sum())} rows)")
    fold, fc = assign_folds(ecgs.assign(sex=feats["sex"], age=feats["age"]), listed, cfg.seed)
    fold = fold.to_numpy()
    listed_ids = listed.loc[listed["strat_fold"].notna(), "study_id"]
    in_split = ecgs["study_id"].isin(listed_ids).to_numpy().copy()
    if cfg.unlisted_ecgs == "exclude":
        flow.add("folds: ECGs listed in ecg_icd", len(ecgs), int(in_split.sum()),
                 "ECGs without a strat_fold in ecg_icd excluded (as the authors: no split)", warn=True)
    else:
        in_split[:] = True
        flow.add("folds: strat_fold from ecg_icd by study_id", len(ecgs), fc["n_listed_ecgs"],
                 "ECGs not listed in ecg_icd kept (given their patient's fold, or a stratified one)")
    if fc["n_patients_with_conflicting_folds"]:
        log.warning(f"{files['records_w_diag_icd10']}: {fc['n_patients_with_conflicting_folds']} patients "
                    "have ECGs in several strat_folds; each takes their most frequent fold")
    if cfg.unlisted_ecgs == "assign":
        log.info(f"folds: {fc['n_unlisted_ecgs_of_listed_patients']} unlisted ECGs took their patient's fold; "
                 f"{fc['n_unlisted_patients']} unlisted patients were assigned by stratification")

    fold = fold[in_split]
    # per label (not per row): densify its block, count per split, keep passing columns
    targets, columns = [], {}
    smallest_class: list[int] = []  # per candidate target: fewest of val/test positives/negatives
    by_label: dict[int, list[dict]] = {}
    for m in lab_meta:
        by_label.setdefault(m["_label_idx"], []).append(m)
    for i, ms in by_label.items():
        block = labels.block(i)[in_split]
        sel = block[:, [m["_col"] for m in ms]]
        counts = split_counts(sel, fold)
        keep = keep_targets(counts, cfg.min_per_class)
        smallest_class += np.minimum.reduce([counts[s_][c] for s_ in ("val", "test")
                                             for c in ("pos", "neg")]).tolist()
        for j in np.flatnonzero(keep):
            m = {k: v for k, v in ms[j].items() if not k.startswith("_")}
            m["counts"] = {s_: {"pos": int(counts[s_]["pos"][j]), "neg": int(counts[s_]["neg"][j])}
                           for s_ in ("train", "val", "test")}
            targets.append(m)
            columns[m["name"]] = sel[:, j].copy()
    flow.add("targets: per-split class counts", len(lab_meta), len(targets),
             f"targets (not rows) with < {cfg.min_per_class} positives or negatives in val or test")
    if not targets:
        raise ValueError(no_targets_message(cfg, np.asarray(smallest_class, dtype=np.int64), len(by_label)))
    if not any(m["task"] == "est" for m in targets):
        log.warning("0 estimation targets (only monitoring ones); " + no_targets_message(
            cfg, np.asarray(smallest_class, dtype=np.int64), len(by_label)).split("; ", 1)[1])
    task_order = {t: n for n, t in enumerate(cfg.tasks)}
    targets.sort(key=lambda m: (task_order[m["task"]], m["lab"], m["direction"] != "low"))
    ecgs = ecgs[in_split].reset_index(drop=True)
    feats = {f: np.asarray(v)[in_split] for f, v in feats.items()}
    if cfg.drop_ecgs_without_targets:
        has = np.zeros(len(ecgs), dtype=bool)
        for col in columns.values():
            has |= ~np.isnan(col)
        flow.add("targets: ECGs with at least one target", len(ecgs), int(has.sum()),
                 "ECGs without any kept target dropped (as the authors)")
        fold, ecgs = fold[has], ecgs[has].reset_index(drop=True)
        feats = {f: v[has] for f, v in feats.items()}
        columns = {k: v[has] for k, v in columns.items()}

    cols = {"subject_id": ecgs["subject_id"].astype("int64").to_numpy(),
            "study_id": ecgs["study_id"].astype("int64").to_numpy(),
            "ecg_time": ecgs["ecg_time"].to_numpy(), "path": ecgs["path"].astype(str).to_numpy(),
            "fold": fold.astype("int64")}
    for f in features.FEATURES:
        cols[f] = feats[f] if f == "race" else np.asarray(feats[f], dtype="float64")
    for m in targets:
        cols[m["name"]] = columns.pop(m["name"])
    df = pd.DataFrame(cols)
    df["race"] = df["race"].astype(str)

    summary = {"n_ecgs": int(len(df)), "n_patients": int(df["subject_id"].nunique()),
               "n_targets": {t: sum(m["task"] == t for m in targets) for t in cfg.tasks}}
    cfg.cohort_dir.mkdir(parents=True, exist_ok=True)
    paths = {"cohort": cfg.cohort_dir / "cohort.parquet", "targets": cfg.cohort_dir / "targets.json",
             "flow": cfg.cohort_dir / "cohort_flow.csv"}
    with util.atomic_path(paths["cohort"]) as tmp:
        df.to_parquet(tmp, index=False)
    data_root = Path(cfg.ecg).parent
    marker = data_root / catalog.SYNTHETIC_MARKER
    # the settings travel with targets.json into every run folder: what made a run, told by the run
    settings = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(cfg).items()}
    util.write_json(paths["targets"], {
        "version": 1,
        "source": {"hosp": str(cfg.hosp), "ed": str(cfg.ed), "ecg": str(cfg.ecg),
                   "ecg_icd": str(cfg.ecg_icd), "synthetic": marker.exists(),
                   "synthetic_config": util.read_json(marker).get("config") if marker.exists() else None},
        "config": settings, "summary": summary, "targets": targets})
    with util.atomic_path(paths["flow"]) as tmp:
        pd.DataFrame(flow.rows, columns=["step", "rows_in", "rows_out", "dropped", "reason"]).to_csv(tmp, index=False)
    log.info(format_summary(summary) + f" ({time.perf_counter() - t0:.1f} s)")
    return CohortResult(cohort=paths["cohort"], targets=paths["targets"], flow=paths["flow"], summary=summary)


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
    mon = [k for k in n if k.startswith("mon")]
    return (f"{summary['n_ecgs']:,} ECGs from {summary['n_patients']:,} patients; "
            f"{n.get('est', 0)} estimation targets and "
            f"{' / '.join(str(n[k]) for k in mon)} monitoring targets at "
            f"{' / '.join(k[3:] for k in mon)} min")


def describe_cohort(out_dir) -> pd.DataFrame:
    """The cohort summary beside the paper's (arXiv v1, section 3.1).

    Returns
    -------
    DataFrame indexed by quantity (ECGs, patients, estimation targets, monitoring targets
    at 30/60/120 min) with integer columns ``ours`` and ``paper``.
    """
    s = util.read_json(Path(out_dir) / "targets.json")["summary"]
    rows = {"ECGs": (s["n_ecgs"], paper.COHORT["n_ecgs"]),
            "patients": (s["n_patients"], paper.COHORT["n_patients"])}
    for task, n in s["n_targets"].items():
        name = "estimation targets" if task == "est" else f"monitoring targets, {task[3:]} min"
        rows[name] = (n, paper.COHORT["n_targets"].get(task))
    return pd.DataFrame.from_dict(rows, orient="index", columns=["ours", "paper"]).astype("Int64")


# ---------------------------------------------------------------------------------------
# stages of build_cohort


def _label_labs(con, cfg, files, headers, n_ecg, flow) -> tuple["_LongLabels", list[dict]]:
    """All candidate lab targets: (n_ecgs, n_candidates) float32 and their descriptions."""
    lpath, dpath = files["labevents"], files["d_labitems"]
    d = readers.read_strict(dpath, headers["d_labitems"], {"itemid": "BIGINT", "label": "VARCHAR", "fluid": "VARCHAR"})
    if d.empty:
        raise ValueError(f"{dpath}: no rows; expected one row per lab itemid")
    n_d = len(d)
    d = d.dropna(subset=["itemid"]).drop_duplicates("itemid")
    flow.add("d_labitems: unique itemid", n_d, len(d), "repeated or empty itemids (first kept)", warn=True)
    con.register("d_df", d)
    con.execute("CREATE TABLE d_lab AS SELECT itemid::BIGINT AS itemid, label, fluid FROM d_df")

    types = {"labevent_id": "BIGINT", "subject_id": "BIGINT", "itemid": "BIGINT", "charttime": "TIMESTAMP",
             "valuenum": "DOUBLE", "ref_range_lower": "DOUBLE", "ref_range_upper": "DOUBLE"}
    con.execute("PRAGMA enable_profiling = 'no_output'")
    con.execute(f"CREATE TABLE lab_raw AS SELECT labevent_id, subject_id, itemid, epoch_us(charttime) AS t, "
                f"valuenum, valueuom, ref_range_lower, ref_range_upper "
                f"FROM {readers.scan_sql(lpath, headers['labevents'], types, 'rej_lab')} "
                f"WHERE subject_id IN (SELECT subject_id FROM ecg_subjects)")
    n_scanned = readers.count_scanned_rows(con)
    con.execute("PRAGMA disable_profiling")
    n_raw = con.execute("SELECT count(*) FROM lab_raw").fetchone()[0]
    n_rej = readers.report_rejects(con, "rej_lab", lpath, None, 0)
    if n_scanned is None:
        n_scanned = n_raw  # profiler unavailable: the patient filter is reported as not counted
        log.warning(f"{lpath}: rows of patients without an ECG were not counted (no profiler)")
    flow.add(f"read {lpath.name}", n_scanned + n_rej, n_scanned, "rows skipped: a value could not be parsed", warn=True)
    flow.add("labevents: patients with an ECG", n_scanned, n_raw, "rows of patients without an ECG")
    if n_raw == 0:
        raise ValueError(f"{lpath}: no lab rows for any patient of record_list.csv (column 'subject_id')")

    ok = (f"valuenum IS NOT NULL AND t IS NOT NULL AND label IS NOT NULL AND label NOT IN {DROPPED_LABELS} "
          f"AND NOT coalesce(ref_range_lower = 0 AND ref_range_upper = 0, false)")
    steps = con.execute(
        "SELECT count(*) FILTER (WHERE valuenum IS NOT NULL AND t IS NOT NULL), "
        "count(*) FILTER (WHERE valuenum IS NOT NULL AND t IS NOT NULL AND label IS NOT NULL), "
        f"count(*) FILTER (WHERE valuenum IS NOT NULL AND t IS NOT NULL AND label IS NOT NULL "
        f"AND label NOT IN {DROPPED_LABELS}), "
        f"count(*) FILTER (WHERE {ok}), "
        f"count(DISTINCT labevent_id) FILTER (WHERE {ok}) + count(*) FILTER (WHERE {ok} AND labevent_id IS NULL) "
        "FROM lab_raw l LEFT JOIN d_lab USING (itemid)").fetchone()
    reasons = ["rows without valuenum or charttime", "rows whose itemid is not in d_labitems (or has no label)",
               f"rows of labels {list(DROPPED_LABELS)}", "rows with ref_range_lower = ref_range_upper = 0"]
    prev = n_raw
    for name, n, why in zip(["valuenum and charttime", "join d_labitems", "label filter", "reference range"],
                            steps[:4], reasons):
        flow.add(f"labevents: {name}", prev, n, why, warn=name == "join d_labitems")
        prev = n
    n_ok, n_ids = prev, steps[4]
    # a view, not a table: one materialization of the lab rows fewer
    con.execute(f"CREATE VIEW lab_ok AS SELECT l.labevent_id, l.subject_id, l.itemid, l.t, l.valuenum, "
                f"l.valueuom, l.ref_range_lower, l.ref_range_upper, d.label, d.fluid FROM lab_raw l "
                f"JOIN d_lab d USING (itemid) WHERE {ok}")
    src = "lab_ok"
    if n_ids < n_ok:
        con.execute("CREATE TABLE lab_dedup AS SELECT * FROM lab_ok "
                    "QUALIFY labevent_id IS NULL OR row_number() OVER (PARTITION BY labevent_id ORDER BY t, valuenum) = 1")
        src = "lab_dedup"
    flow.add("labevents: duplicate labevent_id", n_ok, n_ids, "repeated labevent_id rows (first kept)", warn=True)

    flu = con.execute(f"SELECT label, fluid, valueuom, count(*) AS n FROM {src} GROUP BY ALL").df()
    fl = flu.groupby(["label", "fluid"], as_index=False)["n"].sum()
    fluid = choose_fluid(fl)
    con.register("fluid_df", fluid.rename("fluid").reset_index())
    n_fl = int(fl.merge(fluid.reset_index(), on=["label", "fluid"])["n"].sum())
    flow.add("labevents: most frequent fluid per label", n_ids, n_fl, "rows of a label's other fluids")

    un = (flu.merge(fluid.reset_index(), on=["label", "fluid"])
          .groupby(["label", "valueuom"], as_index=False, dropna=False)["n"].sum())
    umap = harmonize_units(un)
    for lab, g in umap.groupby("label"):
        if len(g) > 1:
            log.info(f"units of {lab!r}: " + ", ".join(
                f"{u!r} {n} rows {'-> ' + repr(c) if k and u != c else ('kept' if k else 'dropped')}"
                for u, n, c, k in zip(g["valueuom"], g["n"], g["unit"], g["keep"])))
    n_u = int(umap.loc[umap["keep"], "n"].sum())
    flow.add("labevents: unit harmonized", n_fl, n_u, "rows whose unit names another quantity than the "
             "label's most frequent unit", warn=True)
    per_label = umap[umap["keep"]].groupby("label")["n"].sum()
    labels_kept = per_label[per_label >= cfg.min_lab_events].index
    flow.add("labevents: labels with enough rows", n_u, int(per_label[labels_kept].sum()),
             f"rows of labels with < {cfg.min_lab_events} rows")
    if len(labels_kept) == 0:
        raise ValueError(f"{lpath}: no lab label has >= min_lab_events={cfg.min_lab_events} rows "
                         f"(largest: {int(per_label.max()) if len(per_label) else 0})")
    umap = umap[umap["keep"] & umap["label"].isin(labels_kept)]
    con.register("unit_df", umap[["label", "valueuom", "unit"]])
    lab_names = sorted(labels_kept)
    con.register("label_df", pd.DataFrame({"label": lab_names, "label_idx": np.arange(len(lab_names))}))
    con.execute(f"CREATE TABLE lab AS SELECT o.labevent_id, o.subject_id, o.t, o.valuenum, "
                f"o.ref_range_lower, o.ref_range_upper, o.itemid, x.label_idx FROM {src} o "
                "JOIN fluid_df USING (label, fluid) JOIN label_df x USING (label) "
                "JOIN unit_df u ON u.label = o.label AND u.valueuom IS NOT DISTINCT FROM o.valueuom")
    con.execute("DROP VIEW lab_ok")
    con.execute("DROP TABLE lab_raw")

    thr = con.execute("SELECT label_idx, median(ref_range_lower) AS lo, median(ref_range_upper) AS hi, "
                      "list(DISTINCT itemid ORDER BY itemid) AS itemids FROM lab GROUP BY label_idx").df()
    thr = thr.set_index("label_idx").reindex(np.arange(len(lab_names)))
    con.register("thr_df", thr[["lo", "hi"]].reset_index())
    occ = con.execute("SELECT l.label_idx, bool_or(l.valuenum < t.lo), bool_or(l.valuenum > t.hi) FROM lab l "
                      "JOIN thr_df t USING (label_idx) GROUP BY 1").fetchall()
    occurs = {i: (bool(a), bool(b)) for i, a, b in occ}

    n_nolab = con.execute("SELECT count(*) FROM ecg WHERE subject_id NOT IN (SELECT DISTINCT subject_id FROM lab)"
                          ).fetchone()[0]
    flow.add("labels: ECGs whose patient has lab rows", n_ecg, n_ecg - n_nolab,
             "ECGs kept with every lab target missing (patient has no usable lab rows)", warn=True)

    # one bucketed join serves every window: [t - est, t + max(est, h_max)]
    w = cfg.estimation_window_min * 60_000_000
    hmax = max(cfg.horizons_min) * 60_000_000
    width = 3_600_000_000
    readers.bucket_ecgs(con, "ecg_bl", width, w, max(w, hmax))
    mon = ", ".join(
        f"count(*) FILTER (WHERE dt BETWEEN 0 AND {h * 60_000_000}) AS n{h}, "
        f"bool_or(cls = -1) FILTER (WHERE dt BETWEEN 0 AND {h * 60_000_000}) AS lo{h}, "
        f"bool_or(cls = 1) FILTER (WHERE dt BETWEEN 0 AND {h * 60_000_000}) AS hi{h}" for h in cfg.horizons_min)
    res = con.execute(
        f"SELECT row_idx, label_idx, arg_min(cls, struct_pack(a := abs(dt), t := lt, i := -labevent_id)) "
        f"FILTER (WHERE dt BETWEEN -{w} AND {w}) AS est, {mon} FROM ("
        f"SELECT e.row_idx, l.label_idx, l.t - e.t AS dt, l.t AS lt, l.labevent_id, "
        f"CASE WHEN l.valuenum < th.lo THEN -1 WHEN l.valuenum > th.hi THEN 1 ELSE 0 END AS cls "
        f"FROM ecg_bl e JOIN (SELECT *, floor(t / {width})::BIGINT AS b FROM lab) l "
        f"ON l.subject_id = e.subject_id AND l.b = e.b JOIN thr_df th ON th.label_idx = l.label_idx "
        f"WHERE l.t BETWEEN e.t - {w} AND e.t + {max(w, hmax)}) GROUP BY ALL").fetchnumpy()

    row = np.asarray(res["row_idx"], dtype=np.int64)
    li = np.asarray(res["label_idx"], dtype=np.int64)
    tasks = cfg.tasks
    # vals[:, direction * n_tasks + task]: the target of (row, label); long form, sorted by label
    vals = np.full((len(row), 2 * len(tasks)), np.nan, dtype=np.float32)
    est = np.ma.asarray(res["est"], dtype=float).filled(np.nan)
    vals[:, 0] = np.where(np.isnan(est), np.nan, est == -1)
    vals[:, len(tasks)] = np.where(np.isnan(est), np.nan, est == 1)
    for k, h in enumerate(cfg.horizons_min, start=1):
        n = np.asarray(res[f"n{h}"], dtype=np.int64)
        lo = np.ma.asarray(res[f"lo{h}"], dtype=float).filled(0) == 1
        hi = np.ma.asarray(res[f"hi{h}"], dtype=float).filled(0) == 1
        miss = (n == 0) | (lo & hi)
        vals[:, k] = np.where(miss, np.nan, lo)
        vals[:, len(tasks) + k] = np.where(miss, np.nan, hi)
    order = np.argsort(li, kind="stable")
    row, li, vals = row[order], li[order], vals[order]
    starts = np.searchsorted(li, np.arange(len(lab_names) + 1))

    meta = []
    units = umap.drop_duplicates("label").set_index("label")["unit"]
    for i, label in enumerate(lab_names):
        for dirn, direction in enumerate(("low", "high")):
            thr_v = thr.loc[i, "lo" if direction == "low" else "hi"]
            if not occurs.get(i, (False, False))[dirn] or pd.isna(thr_v):
                continue
            for k, task in enumerate(tasks):
                meta.append({"name": util.target_name(label, direction, task), "lab": util.lab_slug(label),
                             "label": label, "itemids": [int(x) for x in thr.loc[i, "itemids"]],
                             "fluid": str(fluid[label]), "direction": direction, "threshold": float(thr_v),
                             "unit": None if pd.isna(units.get(label)) else str(units.get(label)),
                             "category": catalog.category_for_label(label), "task": task,
                             "horizon_min": None if task == "est" else int(task[3:]),
                             "_label_idx": i, "_col": dirn * len(tasks) + k})
    names = [m["name"] for m in meta]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{dpath}: column 'label': different labels give the same target names {dup}")
    return _LongLabels(row=row, vals=vals, starts=starts, n_ecgs=n_ecg), meta


@dataclass(frozen=True)
class _LongLabels:
    """Targets in long form: rows sorted by label; vals (n_pairs, 2 * n_tasks) float32."""
    row: np.ndarray
    vals: np.ndarray
    starts: np.ndarray
    n_ecgs: int

    def block(self, label_idx: int) -> np.ndarray:
        """Dense targets of one label: (n_ecgs, 2 * n_tasks) float32, NaN where missing."""
        sl = slice(self.starts[label_idx], self.starts[label_idx + 1])
        out = np.full((self.n_ecgs, self.vals.shape[1]), np.nan, dtype=np.float32)
        out[self.row[sl]] = self.vals[sl]
        return out
