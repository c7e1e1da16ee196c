"""Evaluation: per-target AUROC, bootstrap intervals, and the paper's Tables 1 and 2.

Statistics (the paper, section 3, and its authors' code, with one flaw fixed):

- AUROC per target on the test fold, missing labels left out (:func:`auroc`).
- Macro AUROC: the mean over targets whose AUROC is defined (both classes present).
  The authors' code counts undefined targets as 0.5; we leave them out.
- Bootstrap (:func:`bootstrap`): ``n_iterations`` resamples of the test ECGs with
  replacement, one resample shared by all targets; per resample the AUROC of every
  target and the macro AUROC; the 95% interval is the 2.5 and 97.5 percentiles.
  A resample in which a target has a single class is skipped for that target (and
  counted in ``n_skipped``). A target is "significantly above 0.7" when its interval's
  lower bound exceeds 0.7, the paper's reading.

A resample is a vector of multiplicities, so its AUROC is a weighted Mann-Whitney
statistic over the scores sorted once (:mod:`labecg.metrics`): no re-sorting and no
loop over targets inside the loop over resamples.

The table functions live here, not in :mod:`labecg.report`, because :func:`evaluate_run`
writes the tables and a stage imports only earlier ones; ``report`` re-exports them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from labecg import catalog
from labecg.metrics import auroc, sort_targets, weighted_auroc
from labecg.util import atomic_path, get_logger, read_json

__all__ = ["EvaluateConfig", "evaluate_run", "auroc", "bootstrap", "resample_indices",
           "read_predictions", "read_results", "format_threshold", "format_auroc",
           "table_estimation", "table_monitoring", "compare_with_paper", "to_markdown",
           "read_paper_tables", "PAPER_VERSION", "HORIZONS_MIN", "RESULT_COLUMNS"]

log = get_logger("labecg.evaluate")

PAPER_VERSION = "arXiv v1"
HORIZONS_MIN: tuple[int, ...] = (30, 60, 120)
BOOTSTRAP_COLUMNS = ["auroc", "low", "high", "n_pos", "n_neg", "n_skipped"]
METADATA_COLUMNS = ["task", "lab", "label", "direction", "threshold", "unit", "category",
                    "horizon_min"]
RESULT_COLUMNS = ["target", *METADATA_COLUMNS, *BOOTSTRAP_COLUMNS, "significant"]
_PREDICTION_KEYS = ("study_id", "target_names", "y_true", "y_score")
_SYMBOL = {"high": "≥", "low": "≤"}


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``labecg evaluate``.

    Attributes
    ----------
    run : Path
        Run folder written by ``labecg train`` (``predictions_<split>.npz``, ``targets.json``).
    n_iterations : int
        Bootstrap resamples of the ECGs of the split.
    seed : int
        Seed of the resampling (the authors' bootstrap was unseeded).
    split : {"test", "val"}
        Which predictions to evaluate.
    auroc_threshold : float
        A target is significant when its interval's lower bound exceeds this value.
    """

    run: Path
    n_iterations: int = 1000
    seed: int = 0
    split: Literal["test", "val"] = "test"
    auroc_threshold: float = 0.7

    def __post_init__(self):
        if self.n_iterations < 1:
            raise ValueError(f"n_iterations must be >= 1, got {self.n_iterations}")
        if self.split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', got {self.split!r}")
        if not 0.0 <= self.auroc_threshold <= 1.0:
            raise ValueError(f"auroc_threshold must lie in [0, 1], got {self.auroc_threshold}")


# ---------------------------------------------------------------------------- statistics


def resample_indices(n_ecgs: int, n_iterations: int, seed: int = 0) -> Iterator[np.ndarray]:
    """The bootstrap resamples :func:`bootstrap` uses, as row indices.

    Yields
    ------
    ndarray of shape (n_ecgs,), int64
        Rows drawn uniformly with replacement; one array per iteration.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_iterations):
        yield rng.integers(0, n_ecgs, size=n_ecgs)


def bootstrap(y_true, y_score, n_iterations: int = 1000, seed: int = 0, *,
              target_names=None, return_iterations: bool = False, progress: bool | None = None):
    """Bootstrap 95% intervals of every target's AUROC and of the macro AUROC.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets)
        1.0 positive, 0.0 negative, NaN missing.
    y_score : array-like of shape (n_ecgs, n_targets)
        Per-ECG scores (mean of the segment probabilities), finite where observed.
    n_iterations : int
        Resamples of the ECGs, with replacement, each shared by all targets.
    seed : int
        Seed of :func:`resample_indices`.
    target_names : sequence of str of length n_targets, optional
        Row labels; default ``0 .. n_targets - 1``.
    return_iterations : bool
        Also return the per-resample AUROCs.
    progress : bool or None
        tqdm bar over resamples; None shows it only on a terminal.

    Returns
    -------
    results : DataFrame
        One row per target plus a final row ``"macro"``; columns ``auroc`` (on the full
        set; macro = mean over defined targets), ``low``, ``high`` (2.5 and 97.5
        percentiles over the resamples in which the AUROC is defined), ``n_pos``,
        ``n_neg`` (observed labels; macro: sums over targets), ``n_skipped`` (resamples
        in which the target had a single class; macro: resamples with no defined target).
    iterations : ndarray of shape (n_iterations, n_targets + 1), float64
        Only with ``return_iterations``: AUROC per resample and target, the macro last;
        NaN where skipped.
    """
    st = sort_targets(y_true, y_score)
    n, T = st.n_ecgs, st.n_targets
    if target_names is None:
        names = list(range(T))
    else:
        names = list(target_names)
        if len(names) != T:
            raise ValueError(f"target_names has {len(names)} names; y_true has {T} columns")
        if "macro" in names:
            raise ValueError("a target may not be named 'macro' (the name of the macro row)")
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")

    point, n_pos, n_neg = weighted_auroc(st, return_counts=True)
    iterations = np.empty((n_iterations, T + 1))  # (I, T + 1), macro last
    draws = resample_indices(n, n_iterations, seed)
    disable = None if progress is None else not progress
    for i, idx in enumerate(tqdm(draws, total=n_iterations, desc="bootstrap", disable=disable, leave=False)):
        iterations[i, :T] = weighted_auroc(st, np.bincount(idx, minlength=n))
    defined = ~np.isnan(iterations[:, :T])
    n_defined = defined.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iterations[:, T] = np.where(defined, iterations[:, :T], 0.0).sum(axis=1) / n_defined

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: never-defined targets
        low, high = np.nanpercentile(iterations, [2.5, 97.5], axis=0)
        macro_point = np.nanmean(point) if (~np.isnan(point)).any() else np.nan
    frame = pd.DataFrame({
        "auroc": np.append(point, macro_point),
        "low": low,
        "high": high,
        "n_pos": np.append(n_pos, n_pos.sum()).astype(np.int64),
        "n_neg": np.append(n_neg, n_neg.sum()).astype(np.int64),
        "n_skipped": np.append(n_iterations - defined.sum(axis=0), (n_defined == 0).sum()).astype(np.int64),
    }, index=pd.Index([*names, "macro"], name="target", dtype=object))
    if return_iterations:
        return frame, iterations
    return frame


# ---------------------------------------------------------------------------- run folder


def read_predictions(path) -> dict[str, np.ndarray]:
    """Read ``predictions_<split>.npz`` (ARCHITECTURE.md section 5) and check its shapes.

    Returns
    -------
    dict with ``study_id`` (n,) int64, ``target_names`` (T,) str, ``y_true`` (n, T) and
    ``y_score`` (n, T) float32 (NaN in ``y_true`` = missing).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: predictions not found; run `labecg train` first")
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in _PREDICTION_KEYS if k not in npz.files]
        if missing:
            raise KeyError(f"{path}: missing arrays {missing}; expected {list(_PREDICTION_KEYS)}, "
                           f"found {npz.files}")
        pred = {k: npz[k] for k in _PREDICTION_KEYS}
    n, T = pred["study_id"].shape[0], pred["target_names"].shape[0]
    for key in ("y_true", "y_score"):
        if pred[key].shape != (n, T):
            raise ValueError(f"{path}: {key} has shape {pred[key].shape}; expected ({n}, {T}) "
                             f"from study_id ({n},) and target_names ({T},)")
    pred["target_names"] = pred["target_names"].astype(str)
    return pred


def _target_metadata(targets_json: dict, names, source: Path) -> pd.DataFrame:
    by_name = {t["name"]: t for t in targets_json.get("targets", [])}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise KeyError(f"{source}: targets {unknown[:5]} of the predictions are not listed "
                       f"({len(unknown)} of {len(names)} missing)")
    rows = [{c: by_name[name].get(c) for c in METADATA_COLUMNS} for name in names]
    return pd.DataFrame(rows, index=pd.Index(list(names), name="target", dtype=object))


def _write_csv(frame: pd.DataFrame, path: Path, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def evaluate_run(cfg: EvaluateConfig) -> Path:
    """Bootstrap the run's predictions and write results and tables to ``RUN/evaluation``.

    Reads ``RUN/predictions_<split>.npz`` and ``RUN/targets.json``; writes (atomically)
    ``results.csv`` (one row per target + ``macro``: bootstrap columns, target metadata,
    ``significant``), ``bootstrap_iterations.npz`` (``target_names`` (T + 1,) with
    ``macro`` last, ``auroc`` (n_iterations, T + 1), ``seed``, ``split``),
    ``table1_estimation.{csv,md}``, ``table2_monitoring.{csv,md}`` and
    ``paper_comparison.csv``.

    Returns
    -------
    Path
        The ``RUN/evaluation`` folder.
    """
    run = Path(cfg.run)
    pred = read_predictions(run / f"predictions_{cfg.split}.npz")
    targets_path = run / "targets.json"
    meta = _target_metadata(read_json(targets_path), pred["target_names"], targets_path)
    n, T = pred["y_true"].shape
    log.info("bootstrap: %d ECGs x %d targets, %d resamples (seed %d)", n, T, cfg.n_iterations, cfg.seed)
    boot, iterations = bootstrap(pred["y_true"], pred["y_score"], cfg.n_iterations, cfg.seed,
                                 target_names=list(pred["target_names"]), return_iterations=True)
    results = assemble_results(boot, meta, cfg.auroc_threshold)

    out = run / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(results.reset_index(), out / "results.csv")
    with atomic_path(out / "bootstrap_iterations.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, target_names=np.array([*pred["target_names"], "macro"]),
                                auroc=iterations, seed=np.int64(cfg.seed),
                                split=np.array(cfg.split), n_ecgs=np.int64(n))
    t1 = table_estimation(results, cfg.auroc_threshold)
    t2 = table_monitoring(results, cfg.auroc_threshold)
    _write_csv(t1, out / "table1_estimation.csv", index=True)
    _write_text(to_markdown(t1), out / "table1_estimation.md")
    _write_csv(t2, out / "table2_monitoring.csv", index=True)
    _write_text(to_markdown(table_monitoring(results, cfg.auroc_threshold, bold=True)),
                out / "table2_monitoring.md")
    _write_csv(compare_with_paper(results), out / "paper_comparison.csv")
    macro = results.loc["macro"]
    log.info("macro AUROC %.3f (%.3f, %.3f); %d targets significant above %.2f",
             macro["auroc"], macro["low"], macro["high"],
             int(results["significant"].drop("macro").sum()), cfg.auroc_threshold)
    return out


def assemble_results(boot: pd.DataFrame, meta: pd.DataFrame, auroc_threshold: float = 0.7) -> pd.DataFrame:
    """Join bootstrap rows with target metadata and the significance rule.

    Parameters
    ----------
    boot : DataFrame
        From :func:`bootstrap`, indexed by target name, ending with ``macro``.
    meta : DataFrame
        Indexed by target name; columns of :data:`METADATA_COLUMNS`.
    auroc_threshold : float
        ``significant`` is ``low > auroc_threshold`` (False where ``low`` is NaN).

    Returns
    -------
    DataFrame indexed by ``target``, columns ``RESULT_COLUMNS[1:]``.
    """
    results = meta.reindex(boot.index).join(boot)
    results["significant"] = (results["low"] > auroc_threshold).fillna(False).astype(bool)
    results["horizon_min"] = pd.to_numeric(results["horizon_min"]).astype("Int64")  # NaN for est, macro
    return results[RESULT_COLUMNS[1:]]


def read_results(path) -> pd.DataFrame:
    """Read ``results.csv`` back, indexed by target name."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: results not found; run `labecg evaluate --run RUN` first")
    frame = pd.read_csv(path)
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise KeyError(f"{path}: missing columns {missing}; expected {RESULT_COLUMNS}")
    frame["target"] = frame["target"].astype(object)
    return frame.set_index("target")


# ---------------------------------------------------------------------------- tables


def _number(x: float) -> str:
    """A threshold as the paper prints it: no trailing zeros, no exponent (17.5, 353, 0.01)."""
    return np.format_float_positional(float(f"{float(x):.6g}"), trim="-")


def format_threshold(direction: str, threshold: float, unit: str | None) -> str:
    """``≥353 pg/mL`` for an abnormally high value, ``≤6 mg/dL`` for a low one.

    >>> format_threshold("high", 353.0, "pg/mL"), format_threshold("low", 0.50, "mg/dL")
    ('≥353 pg/mL', '≤0.5 mg/dL')
    """
    if direction not in _SYMBOL:
        raise ValueError(f"direction must be 'low' or 'high', got {direction!r}")
    text = f"{_SYMBOL[direction]}{_number(threshold)}"
    return f"{text} {unit}" if isinstance(unit, str) and unit else text


def format_auroc(auroc_value: float, low: float, high: float) -> str:
    """``0.882 (0.860, 0.902)``; ``–`` where the AUROC is undefined."""
    if auroc_value is None or (isinstance(auroc_value, float) and math.isnan(auroc_value)):
        return "–"
    return f"{auroc_value:.3f} ({low:.3f}, {high:.3f})"


def _value_name(label: str, category) -> str:
    name = catalog.paper_name(label)
    return f"{name} [{category}]" if isinstance(category, str) and category else name


def _targets_only(results: pd.DataFrame) -> pd.DataFrame:
    if "target" in results.columns:
        results = results.set_index("target")
    return results.drop(index="macro", errors="ignore")


def _significant(frame: pd.DataFrame, auroc_threshold: float) -> pd.Series:
    return (frame["low"] > auroc_threshold).fillna(False).astype(bool)


def table_estimation(results: pd.DataFrame, auroc_threshold: float = 0.7) -> pd.DataFrame:
    """The paper's Table 1: estimation targets significantly above ``auroc_threshold``.

    Parameters
    ----------
    results : DataFrame
        From :func:`evaluate_run` / :func:`read_results` (indexed by target, or with a
        ``target`` column).
    auroc_threshold : float
        Rows kept: interval lower bound > this value.

    Returns
    -------
    DataFrame indexed by target name, columns ``Value`` (``NTproBNP [Ca.]``),
    ``Threshold`` (``≥353 pg/mL``), ``Estimation AUROC`` (``0.882 (0.860, 0.902)``);
    sorted by AUROC, highest first.
    """
    est = _targets_only(results)
    est = est[(est["task"] == "est") & _significant(est, auroc_threshold)]
    est = est.sort_values("auroc", ascending=False, kind="stable")
    table = pd.DataFrame({
        "Value": [_value_name(r.label, r.category) for r in est.itertuples()],
        "Threshold": [format_threshold(r.direction, r.threshold, r.unit) for r in est.itertuples()],
        "Estimation AUROC": [format_auroc(r.auroc, r.low, r.high) for r in est.itertuples()],
    }, index=pd.Index(list(est.index), name="target", dtype=object), dtype=object)
    return table


def table_monitoring(results: pd.DataFrame, auroc_threshold: float = 0.7, *,
                     bold: bool = False) -> pd.DataFrame:
    """The paper's Table 2: monitoring at 30, 60 and 120 minutes.

    A row per abnormality (lab and direction) significant above ``auroc_threshold`` at
    one horizon at least; all three horizons are shown. Rows are sorted by the mean AUROC
    over the horizons at which the abnormality is significant: the paper's caption
    ("mean of test AUROC across the three horizons, considering only values if the lower
    bound of the prediction interval exceeds 0.70"), and the only reading that reproduces
    its row order (Hemoglobin ≥17.5, significant only at 120 min., sits above Creatinine
    ≥1.2, significant at all three, although its three-horizon mean is lower).

    Parameters
    ----------
    results : DataFrame
        As for :func:`table_estimation`.
    auroc_threshold : float
        Significance: interval lower bound > this value.
    bold : bool
        Wrap the cell of the best horizon (highest AUROC) of each row in ``**``, the
        paper's bold, for Markdown.

    Returns
    -------
    DataFrame indexed by ``{lab}_{direction}``, columns ``Value``, ``Threshold``,
    ``30 min. AUROC``, ``60 min. AUROC``, ``120 min. AUROC`` (``–`` where a horizon has
    no target).
    """
    mon = _targets_only(results)
    mon = mon[mon["task"].isin([f"mon{h}" for h in HORIZONS_MIN])].copy()
    mon["significant"] = _significant(mon, auroc_threshold)
    mon["key"] = mon["lab"].astype(str) + "_" + mon["direction"].astype(str)
    columns = [f"{h} min. AUROC" for h in HORIZONS_MIN]
    rows, sort_keys = [], []
    for key, group in mon.groupby("key", sort=False):
        if not group["significant"].any():
            continue
        first = group.iloc[0]
        row = {"Value": _value_name(first["label"], first["category"]),
               "Threshold": format_threshold(first["direction"], first["threshold"], first["unit"])}
        by_task = group.set_index("task")
        best_col, best_auc = None, -np.inf
        for h, col in zip(HORIZONS_MIN, columns):
            r = by_task.loc[f"mon{h}"] if f"mon{h}" in by_task.index else None
            row[col] = "–" if r is None else format_auroc(r["auroc"], r["low"], r["high"])
            if r is not None and not np.isnan(r["auroc"]) and r["auroc"] > best_auc:
                best_col, best_auc = col, r["auroc"]
        if bold and best_col is not None:
            row[best_col] = f"**{row[best_col]}**"
        rows.append((key, row))
        sort_keys.append(group.loc[group["significant"], "auroc"].mean())
    order = np.argsort(-np.asarray(sort_keys, dtype=float), kind="stable")
    table = pd.DataFrame([rows[i][1] for i in order],
                         index=pd.Index([rows[i][0] for i in order], name="abnormality", dtype=object),
                         columns=["Value", "Threshold", *columns], dtype=object)
    return table


def to_markdown(table: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table (no ``tabulate`` needed); ``|`` in cells escaped."""
    frame = table.reset_index() if index else table
    header = [str(c) for c in frame.columns]
    body = [["" if (isinstance(v, float) and math.isnan(v)) else str(v).replace("|", "\\|")
             for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the paper


def read_paper_tables() -> pd.DataFrame:
    """The paper's published Tables 1 and 2 (arXiv v1), one row per (value, direction, task).

    Returns
    -------
    DataFrame with columns ``value`` (the paper's name), ``category``, ``direction``,
    ``threshold``, ``unit``, ``task`` (est, mon30, mon60, mon120), ``auroc``, ``low``, ``high``.
    Published as printed, including Table 2's Bicarbonate 30 min. interval
    (0.763, 0.681), whose bounds the paper swapped.
    """
    folder = Path(__file__).parent / "paper_tables"
    keys = ["value", "category", "direction", "threshold", "unit"]
    t1 = pd.read_csv(folder / "table1_estimation.csv")
    frames = [t1.rename(columns={"ci_low": "low", "ci_high": "high"}).assign(task="est")]
    t2 = pd.read_csv(folder / "table2_monitoring.csv")
    for h in HORIZONS_MIN:
        part = t2[keys + [f"auroc_{h}", f"ci_low_{h}", f"ci_high_{h}"]]
        part = part.rename(columns={f"auroc_{h}": "auroc", f"ci_low_{h}": "low", f"ci_high_{h}": "high"})
        frames.append(part.assign(task=f"mon{h}"))
    paper = pd.concat(frames, ignore_index=True)
    paper = paper.astype({"value": object, "category": object, "direction": object,
                          "unit": object, "task": object})
    return paper[keys[:3] + ["threshold", "unit", "task", "auroc", "low", "high"]]


def compare_with_paper(results: pd.DataFrame) -> pd.DataFrame:
    """Our AUROCs beside the paper's, for every target both report.

    Matched on (paper name of the lab, direction, task). The paper lists only targets
    significant above 0.7, so targets outside its tables do not appear.

    Returns
    -------
    DataFrame, one row per matched target in the paper's order, columns ``target``,
    ``value``, ``category``, ``direction``, ``task``, ``paper_threshold``, ``threshold``,
    ``unit``, ``paper_auroc``, ``paper_low``, ``paper_high``, ``auroc``, ``low``, ``high``,
    ``difference`` (ours minus the paper's), ``paper_version`` (``"arXiv v1"``).
    """
    ours = _targets_only(results).reset_index()
    ours["value"] = [catalog.paper_name(label) if isinstance(label, str) else label
                     for label in ours["label"]]
    paper = read_paper_tables().rename(columns={"auroc": "paper_auroc", "low": "paper_low",
                                                "high": "paper_high", "threshold": "paper_threshold",
                                                "unit": "paper_unit", "category": "paper_category"})
    merged = paper.merge(ours, on=["value", "direction", "task"], how="inner")
    merged["difference"] = merged["auroc"] - merged["paper_auroc"]
    merged["paper_version"] = PAPER_VERSION
    merged["category"] = merged["paper_category"]
    columns = ["target", "value", "category", "direction", "task", "paper_threshold", "threshold",
               "unit", "paper_auroc", "paper_low", "paper_high", "auroc", "low", "high",
               "difference", "paper_version"]
    merged = merged[columns]
    merged.attrs["paper_version"] = PAPER_VERSION
    return merged
