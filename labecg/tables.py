"""The paper's tables from a run's results: Table 1, Table 2 with its best horizon, the comparison, page tables.

Pure functions of the results frame (:func:`labecg.evaluate.read_results`, ``RUN/evaluation/results.csv``:
indexed by target, one row per target plus ``macro``). :func:`labecg.evaluate.evaluate_run` writes
Tables 1 and 2 and the comparison into the run folder with these functions; the book shows them
with :func:`style_table`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from labecg import catalog, paper
from labecg.util import HORIZONS_MIN


_SYMBOL = {"high": "≥", "low": "≤"}


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


def table_monitoring(results: pd.DataFrame, auroc_threshold: float = 0.7) -> pd.DataFrame:
    """The paper's Table 2: monitoring at 30, 60 and 120 minutes.

    A row per abnormality (lab and direction) significant above ``auroc_threshold`` at
    one horizon at least; all three horizons are shown. Rows are sorted by the mean AUROC
    over the horizons at which the abnormality is significant: the paper's caption
    ("mean of test AUROC across the three horizons, considering only values if the lower
    bound of the prediction interval exceeds 0.70"), and the only reading that reproduces
    its row order (Hemoglobin ≥17.5, significant only at 120 min., sits above Creatinine
    ≥1.2, significant at all three, although its three-horizon mean is lower). That holds
    with Bicarbonate's 30 min. interval un-swapped, (0.681, 0.763): not significant, so its
    key is the mean of 60 and 120 min., 0.744. Read as printed, (0.763, 0.681), 30 min.
    would count, the key would drop to 0.737, and Bicarbonate would sort two rows lower.

    Parameters
    ----------
    results : DataFrame
        As for :func:`table_estimation`.
    auroc_threshold : float
        Significance: interval lower bound > this value.

    Returns
    -------
    DataFrame indexed by ``{lab}_{direction}``, columns ``Value``, ``Threshold``,
    ``30 min. AUROC``, ``60 min. AUROC``, ``120 min. AUROC`` (``–`` where a horizon has
    no target). ``table.attrs["best"]`` maps each row to the column of its best horizon
    (highest AUROC), the paper's bold, which :func:`to_markdown` and :func:`style_table` set.
    """
    mon = _targets_only(results)
    mon = mon[mon["task"].isin([f"mon{h}" for h in HORIZONS_MIN])].copy()
    mon["significant"] = _significant(mon, auroc_threshold)
    mon["key"] = mon["lab"].astype(str) + "_" + mon["direction"].astype(str)
    columns = [f"{h} min. AUROC" for h in HORIZONS_MIN]
    rows, sort_keys, best = [], [], {}
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
        if best_col is not None:
            best[key] = best_col
        rows.append((key, row))
        sort_keys.append(group.loc[group["significant"], "auroc"].mean())
    order = np.argsort(-np.asarray(sort_keys, dtype=float), kind="stable")
    table = pd.DataFrame([rows[i][1] for i in order],
                         index=pd.Index([rows[i][0] for i in order], name="abnormality", dtype=object),
                         columns=["Value", "Threshold", *columns], dtype=object)
    table.attrs["best"] = best
    return table


def to_markdown(table: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table (no ``tabulate`` needed); ``|`` in cells escaped.

    Cells named in ``table.attrs["best"]`` (row -> column, :func:`table_monitoring`) are set
    in bold (``**``).
    """
    frame = table.reset_index() if index else table
    header = [str(c) for c in frame.columns]
    best = table.attrs.get("best", {})
    body = [["" if (isinstance(v, float) and math.isnan(v)) else
             (f"**{v}**" if best.get(key) == col else str(v)).replace("|", "\\|")
             for col, v in zip(frame.columns, row)] for key, row in zip(table.index, frame.itertuples(index=False))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


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
    published = paper.read_paper_tables().rename(columns={"auroc": "paper_auroc", "low": "paper_low",
                                                "high": "paper_high", "threshold": "paper_threshold",
                                                "unit": "paper_unit", "category": "paper_category"})
    merged = published.merge(ours, on=["value", "direction", "task"], how="inner")
    merged["difference"] = merged["auroc"] - merged["paper_auroc"]
    merged["paper_version"] = paper.VERSION
    merged["category"] = merged["paper_category"]
    columns = ["target", "value", "category", "direction", "task", "paper_threshold", "threshold",
               "unit", "paper_auroc", "paper_low", "paper_high", "auroc", "low", "high",
               "difference", "paper_version"]
    merged = merged[columns]
    merged.attrs["paper_version"] = paper.VERSION
    return merged


TASK_TITLES = {"est": "Estimation", **{f"mon{h}": f"{h} min." for h in HORIZONS_MIN}}


def target_rows(results: pd.DataFrame) -> pd.DataFrame:
    if "target" in results.columns:
        results = results.set_index("target")
    frame = results.drop(index="macro", errors="ignore").copy()
    frame["category"] = frame["category"].where(frame["category"].notna(), "–").astype(object)
    frame["row_label"] = [row_label(r.label, r.direction, r.threshold, r.unit) for r in frame.itertuples()]
    return frame


def row_label(label: str, direction: str, threshold: float, unit) -> str:
    """``Creatinine ≤0.5 mg/dL``: one abnormality (lab and direction) across tasks."""
    return f"{catalog.paper_name(label)} {format_threshold(direction, threshold, unit)}"


def format_paper_comparison(comparison: pd.DataFrame) -> pd.DataFrame:
    """The paper-vs-ours frame of :func:`compare_with_paper`, compact for a page.

    Columns: ``Abnormality`` (paper name, category, threshold as the paper prints it),
    ``Task`` (``Estimation``, ``30 min.``, ...), ``Paper (arXiv v1)`` and ``This run``
    (AUROC with 95% interval), ``Difference`` (ours minus the paper's, signed, 3 decimals).
    One row per input row, in its order.
    """
    version = comparison.attrs.get("paper_version", paper.VERSION)
    rows = [{
        "Abnormality": f"{r.value} [{r.category}] {format_threshold(r.direction, r.paper_threshold, r.unit)}",
        "Task": TASK_TITLES[r.task],
        f"Paper ({version})": format_auroc(r.paper_auroc, r.paper_low, r.paper_high),
        "This run": format_auroc(r.auroc, r.low, r.high),
        "Difference": "–" if pd.isna(r.difference) else f"{r.difference:+.3f}",
    } for r in comparison.itertuples(index=False)]
    columns = ["Abnormality", "Task", f"Paper ({version})", "This run", "Difference"]
    return pd.DataFrame(rows, columns=columns)


def style_table(table: pd.DataFrame, empty: str | None = None):
    """A table for a page: a pandas Styler without the index, every row shown.

    Cells named in ``table.attrs["best"]`` (Table 2's best horizon, :func:`table_monitoring`)
    are set in bold, as the paper marks them. An empty
    ``table`` with ``empty`` given becomes that sentence (an ``IPython.display.HTML``
    paragraph, which glue places in notebook and Markdown pages alike) instead of a
    header with no rows.
    """
    if table.empty and empty is not None:
        import html

        from IPython.display import HTML

        return HTML(f"<p><em>{html.escape(empty)}</em></p>")
    styler = table.style.hide(axis="index")
    best = table.attrs.get("best", {})
    return styler.apply(lambda row: ["font-weight: bold" if best.get(row.name) == c else "" for c in row.index],
                        axis=1)


def empty_table_note(results: pd.DataFrame, tasks, auroc_threshold: float = 0.7) -> str:
    """Why a table of ``tasks`` (Table 1: ``("est",)``; Table 2: the monitoring tasks) has no row.

    "This run has no ... target" when the cohort gave none for those tasks, else "None of
    the N ... targets is significantly above 0.70".
    """
    frame = results.drop(index="macro", errors="ignore")
    n = int(frame["task"].isin(list(tasks)).sum())
    kind = "estimation" if tuple(tasks) == ("est",) else "monitoring"
    if n == 0:
        return (f"This run has no {kind} target: the cohort kept none (too few positives or negatives in "
                f"validation or test; chapter 1's flow table counts them).")
    return f"None of the {n} {kind} targets is significantly above {auroc_threshold:.2f}."


def target_label(results: pd.DataFrame, target: str) -> str:
    row = target_rows(results).loc[target]
    return f"{row['row_label']} ({TASK_TITLES.get(row['task'], row['task'])})"


def format_calibration(calibration: pd.DataFrame, results: pd.DataFrame, targets=None) -> pd.DataFrame:
    """Calibration of ``targets`` (default all) for a page: one row each, rounded.

    Columns ``Abnormality``, ``Task``, ``n``, ``Prevalence``, ``Mean predicted``,
    ``Brier``, ``Brier of the prevalence``, ``Intercept``, ``Slope`` (with the 95%
    interval in brackets where ``calibration.csv`` has one).
    """
    calib = calibration.set_index("target") if "target" in calibration.columns else calibration
    frame = target_rows(results)
    targets = list(calib.index) if targets is None else list(targets)
    rows = [{"Abnormality": frame.at[t, "row_label"], "Task": TASK_TITLES.get(frame.at[t, "task"], ""),
             "n": int(calib.at[t, "n"]), "Prevalence": f"{calib.at[t, 'prevalence']:.3f}",
             "Mean predicted": f"{calib.at[t, 'mean_score']:.3f}", "Brier": f"{calib.at[t, 'brier']:.3f}",
             "Brier of the prevalence": f"{calib.at[t, 'brier_reference']:.3f}",
             "Intercept": _fmt_interval(calib, t, "calibration_intercept", "intercept"),
             "Slope": _fmt_interval(calib, t, "calibration_slope", "slope")} for t in targets]
    return pd.DataFrame(rows, columns=["Abnormality", "Task", "n", "Prevalence", "Mean predicted", "Brier",
                                       "Brier of the prevalence", "Intercept", "Slope"])


def _fmt(x: float) -> str:
    return "–" if pd.isna(x) else f"{x:.2f}"


def _fmt_interval(calib: pd.DataFrame, target, column: str, prefix: str) -> str:
    """``0.12 (−0.05, 0.30)`` where ``calibration.csv`` has the interval, else the estimate alone."""
    text = _fmt(calib.at[target, column])
    low, high = f"{prefix}_low", f"{prefix}_high"
    if text != "–" and low in calib.columns and not pd.isna(calib.at[target, low]):
        text += f" ({calib.at[target, low]:.2f}, {calib.at[target, high]:.2f})"
    return text


VARIABLE_TITLES = {"all": "All", "sex": "Sex", "age_band": "Age (years)", "race": "Race"}


def format_subgroups(subgroups: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """``RUN/evaluation/subgroups.csv`` for a page: one row per subgroup, one AUROC column per target.

    A cell is ``0.812 (0.700, 0.900) [45/120]`` (positives/negatives), with
    ``, k skipped`` inside the brackets when k resamples lacked a class; a subgroup with
    too few of a class (``too_few``) shows ``0.583 (too few) [3/8]``, no interval.
    """
    frame = subgroups.copy()

    def cell(r) -> str:
        if pd.isna(r.auroc):
            head = "–"
        elif bool(r.too_few):
            head = f"{r.auroc:.3f} (too few)"
        else:
            head = format_auroc(r.auroc, r.low, r.high)
        skipped = f", {int(r.n_skipped)} skipped" if r.n_skipped > 0 else ""
        return f"{head} [{int(r.n_pos)}/{int(r.n_neg)}{skipped}]"

    frame["cell"] = [cell(r) for r in frame.itertuples()]
    labels = {t: target_label(results, t) for t in dict.fromkeys(frame["target"])}
    frame["Abnormality"] = frame["target"].map(labels)
    frame["Variable"] = frame["variable"].map(lambda v: VARIABLE_TITLES.get(v, v))
    table = frame.pivot_table(index=["Variable", "subgroup"], columns="Abnormality", values="cell",
                              aggfunc="first", sort=False)
    table = table[list(labels.values())].reset_index().rename(columns={"subgroup": "Subgroup"})
    table.columns.name = None
    return table.fillna("–")


def format_added_value(added: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """What the ECG adds, one row per target (macro first), for the page.

    Parameters
    ----------
    added : DataFrame
        ``added_value.csv`` (:func:`labecg.evaluate.read_added_value`).
    results : DataFrame
        The model's ``results.csv`` (:func:`labecg.evaluate.read_results`).

    Returns
    -------
    DataFrame with columns Abnormality, Task, Model AUROC (its patient-level interval),
    then per baseline present: ``Tabular only`` (its AUROC), ``Model − tabular`` (the
    difference and its paired interval), ``Last value`` (its AUROC on the ECGs with an
    earlier value), ``Model − last value``, ``ECGs with / without an earlier value``.
    """
    rows = target_rows(results)
    by = {name: frame.set_index("target") for name, frame in added.groupby("baseline")}
    order = ["macro"] + list(rows.index)
    fmt = lambda x: "–" if pd.isna(x) else f"{x:.3f}"  # noqa: E731

    def diff(frame, target):
        r = frame.loc[target]
        return "–" if pd.isna(r["delta"]) else f"{r['delta']:+.3f} ({r['low']:+.3f}, {r['high']:+.3f})"

    table = []
    for target in order:
        res = results.loc[target]
        row = {"Abnormality": "Macro (all targets)" if target == "macro" else rows.loc[target, "row_label"],
               "Task": "" if target == "macro" else TASK_TITLES[rows.loc[target, "task"]],
               "Model AUROC (patient-level interval)": format_auroc(res["auroc"], res["low_patient"],
                                                                    res["high_patient"])}
        if "tabular" in by:
            row["Tabular only"] = fmt(by["tabular"].loc[target, "auroc_baseline"])
            row["Model − tabular"] = diff(by["tabular"], target)
        if "last_value" in by:
            last = by["last_value"].loc[target]
            labelled = int(res["n_pos"] + res["n_neg"])
            row["Last value"] = fmt(last["auroc_baseline"])
            row["Model − last value"] = diff(by["last_value"], target)
            row["ECGs with / without an earlier value"] = ("" if target == "macro"
                                                           else f"{int(last['n_ecgs'])} / {labelled - int(last['n_ecgs'])}")
        table.append(row)
    return pd.DataFrame(table)
