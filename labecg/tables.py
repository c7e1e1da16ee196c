"""The paper's tables from a run's results: Table 1, Table 2 with its best horizon, the comparison, page tables.

Pure functions of the results frame (:func:`labecg.evaluate.read_results`, ``RUN/evaluation/results.csv``:
indexed by target, one row per target plus ``macro``). :func:`labecg.evaluate.evaluate_run` writes
Tables 1 and 2 and the comparison into the run folder with these functions; the book shows them
with :func:`style_table`.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from labecg import catalog, paper
from labecg.targets import AUROC_THRESHOLD, HORIZONS_MIN, significant, task_name


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


#: A target is "rare" below this test prevalence: its AUROC can be high while most of its
#: positive calls are wrong, so the tables add its AUPRC beside the prevalence, the AUPRC
#: of a model that ranks at random. 10 %: where a reader starts to need the PPV.
RARE_PREVALENCE = 0.10

#: Columns Tables 1 and 2 and the comparison add beside each AUROC (issue 21, C).
COUNT_COLUMNS = ["Positives / negatives", "Patients", "Prevalence", "AUPRC (prevalence)"]


def _get(r, name):
    value = getattr(r, name, np.nan) if not isinstance(r, (dict, pd.Series)) else r.get(name, np.nan)
    return np.nan if value is None else value


def format_counts(r) -> dict:
    """The :data:`COUNT_COLUMNS` of one results row: test positives / negatives, patients, prevalence, AUPRC.

    ``AUPRC (prevalence)`` reads ``0.312 (0.052)`` for a rare target (prevalence below
    :data:`RARE_PREVALENCE`) and ``–`` otherwise; ``Patients`` is ``–`` where unknown.

    >>> format_counts({"n_pos": 5, "n_neg": 95, "n_patients": 40, "prevalence": 0.05, "auprc": 0.3125})
    {'Positives / negatives': '5 / 95', 'Patients': '40', 'Prevalence': '5.0%', 'AUPRC (prevalence)': '0.312 (0.050)'}
    """
    n_pos, n_neg, patients = _get(r, "n_pos"), _get(r, "n_neg"), _get(r, "n_patients")
    prevalence, auprc = _get(r, "prevalence"), _get(r, "auprc")
    if pd.isna(prevalence) and not pd.isna(n_pos) and n_pos + n_neg > 0:
        prevalence = n_pos / (n_pos + n_neg)
    rare = not pd.isna(prevalence) and prevalence < RARE_PREVALENCE and not pd.isna(auprc)
    return {"Positives / negatives": "–" if pd.isna(n_pos) else f"{int(n_pos)} / {int(n_neg)}",
            "Patients": "–" if pd.isna(patients) or patients < 0 else f"{int(patients)}",
            "Prevalence": "–" if pd.isna(prevalence) else f"{100 * prevalence:.1f}%",
            "AUPRC (prevalence)": f"{auprc:.3f} ({prevalence:.3f})" if rare else "–"}


def _counts_cell(r) -> str:
    """Table 2's compact counts of one horizon: ``45 / 320 · 120 patients · 12.3%`` (``· AUPRC 0.312`` if rare)."""
    c = format_counts(r)
    patients = f" · {c['Patients']} patients" if c["Patients"] != "–" else ""
    text = f"{c['Positives / negatives']}{patients} · {c['Prevalence']}"
    return text + (f" · AUPRC {c['AUPRC (prevalence)'].split()[0]}" if c["AUPRC (prevalence)"] != "–" else "")


def table_estimation(results: pd.DataFrame, auroc_threshold: float = AUROC_THRESHOLD) -> pd.DataFrame:
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
    ``Threshold`` (``≥353 pg/mL``), ``Estimation AUROC`` (``0.882 (0.860, 0.902)``),
    then the test counts of :func:`format_counts` (:data:`COUNT_COLUMNS`); sorted by
    AUROC, highest first.
    """
    est = _targets_only(results)
    est = est[(est["task"] == task_name(None)) & significant(est["low"], auroc_threshold)]
    est = est.sort_values("auroc", ascending=False, kind="stable")
    table = pd.DataFrame({
        "Value": [_value_name(r.label, r.category) for r in est.itertuples()],
        "Threshold": [format_threshold(r.direction, r.threshold, r.unit) for r in est.itertuples()],
        "Estimation AUROC": [format_auroc(r.auroc, r.low, r.high) for r in est.itertuples()],
    }, index=pd.Index(list(est.index), name="target", dtype=object), dtype=object)
    counts = pd.DataFrame([format_counts(r) for r in est.itertuples()], index=table.index,
                          columns=COUNT_COLUMNS, dtype=object)
    return pd.concat([table, counts], axis=1)


def table_monitoring(results: pd.DataFrame, auroc_threshold: float = AUROC_THRESHOLD) -> pd.DataFrame:
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
    no target), then ``30 min. n``, ``60 min. n``, ``120 min. n``: each horizon's test
    positives / negatives, patients and prevalence (:func:`format_counts`; the AUPRC too
    for a rare target). ``table.attrs["best"]`` maps each row to the column of its best horizon
    (highest AUROC), the paper's bold, which :func:`to_markdown` and :func:`style_table` set.
    """
    mon = _targets_only(results)
    mon = mon[mon["task"].isin([task_name(h) for h in HORIZONS_MIN])].copy()
    mon["significant"] = significant(mon["low"], auroc_threshold)
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
            r = by_task.loc[task_name(h)] if task_name(h) in by_task.index else None
            row[col] = "–" if r is None else format_auroc(r["auroc"], r["low"], r["high"])
            row[f"{h} min. n"] = "–" if r is None else _counts_cell(r)
            if r is not None and not np.isnan(r["auroc"]) and r["auroc"] > best_auc:
                best_col, best_auc = col, r["auroc"]
        if best_col is not None:
            best[key] = best_col
        rows.append((key, row))
        sort_keys.append(group.loc[group["significant"], "auroc"].mean())
    order = np.argsort(-np.asarray(sort_keys, dtype=float), kind="stable")
    table = pd.DataFrame([rows[i][1] for i in order],
                         index=pd.Index([rows[i][0] for i in order], name="abnormality", dtype=object),
                         columns=["Value", "Threshold", *columns, *[f"{h} min. n" for h in HORIZONS_MIN]],
                         dtype=object)
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


def compare_with_paper(results: pd.DataFrame, comparable: bool = True) -> pd.DataFrame:
    """Our AUROCs beside the paper's, for every target both report.

    Matched on (paper name of the lab, direction, task); the thresholds need not agree
    (ours are the medians of this cohort's training fold), so both are given and
    ``threshold_differs`` marks where they do (relative difference above 0.5 %, or
    another unit). The paper lists only targets significant above 0.7, so targets outside
    its tables do not appear.

    Parameters
    ----------
    results : DataFrame
        :func:`labecg.evaluate.read_results`.
    comparable : bool
        Whether this run's data are the paper's kind (MIMIC-IV): only then is
        ``difference`` filled. :func:`labecg.evaluate.evaluate_run` sets it from the run's
        own record, ``targets.json`` ``source.synthetic``: a synthetic AUROC measures
        how well the pipeline recovers planted effects, not MIMIC-IV, and its difference
        to the paper's would mean nothing.

    Returns
    -------
    DataFrame, one row per matched target in the paper's order, columns ``target``,
    ``value``, ``category``, ``direction``, ``task``, ``paper_threshold``, ``threshold``,
    ``unit``, ``threshold_differs``, ``paper_auroc``, ``paper_low``, ``paper_high``,
    ``auroc``, ``low``, ``high``, ``n_pos``, ``n_neg``, ``n_patients``, ``prevalence``
    (this run's test counts), ``difference`` (ours minus the paper's; NaN when not
    ``comparable``), ``comparable``, ``paper_version`` (``"arXiv v1"``).
    """
    ours = _targets_only(results).reset_index()
    ours["value"] = [catalog.paper_name(label) if isinstance(label, str) else label
                     for label in ours["label"]]
    for col in ("n_patients", "prevalence"):
        if col not in ours.columns:
            ours[col] = np.nan
    published = paper.read_paper_tables().rename(columns={"auroc": "paper_auroc", "low": "paper_low",
                                                "high": "paper_high", "threshold": "paper_threshold",
                                                "unit": "paper_unit", "category": "paper_category"})
    merged = published.merge(ours, on=["value", "direction", "task"], how="inner")
    same_unit = [not (isinstance(a, str) and isinstance(b, str)) or a.strip().lower() == b.strip().lower()
                 for a, b in zip(merged["paper_unit"], merged["unit"])]
    same_value = np.isclose(merged["threshold"].astype(float), merged["paper_threshold"].astype(float),
                            rtol=0.005, atol=0.0)
    merged["threshold_differs"] = ~(same_value & np.asarray(same_unit, dtype=bool))
    merged["difference"] = (merged["auroc"] - merged["paper_auroc"]) if comparable else np.nan
    merged["comparable"] = bool(comparable)
    merged["paper_version"] = paper.VERSION
    merged["category"] = merged["paper_category"]
    columns = ["target", "value", "category", "direction", "task", "paper_threshold", "threshold",
               "unit", "threshold_differs", "paper_auroc", "paper_low", "paper_high", "auroc", "low", "high",
               "n_pos", "n_neg", "n_patients", "prevalence", "difference", "comparable", "paper_version"]
    merged = merged[columns]
    merged.attrs["paper_version"] = paper.VERSION
    merged.attrs["comparable"] = bool(comparable)
    return merged


TASK_TITLES = {task_name(None): "Estimation", **{task_name(h): f"{h} min." for h in HORIZONS_MIN}}


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

    Columns: ``Abnormality`` (paper name and category), ``Task`` (``Estimation``,
    ``30 min.``, ...), ``Paper threshold`` (as the paper prints it), ``This run's
    threshold`` (``≠`` before it where they differ), ``Paper (arXiv v1)`` and ``This run``
    (AUROC with 95% interval), this run's test counts (:data:`COUNT_COLUMNS`), and
    ``Difference`` (ours minus the paper's, signed, 3 decimals) only when every row is
    ``comparable``: a synthetic run's AUROCs stand beside MIMIC-IV's, without one.
    One row per input row, in its order.
    """
    version = comparison.attrs.get("paper_version", paper.VERSION)
    comparable = bool(comparison["comparable"].all()) if "comparable" in comparison.columns else True
    rows = []
    for r in comparison.itertuples(index=False):
        differs = bool(getattr(r, "threshold_differs", False))
        row = {"Abnormality": f"{r.value} [{r.category}]", "Task": TASK_TITLES[r.task],
               "Paper threshold": format_threshold(r.direction, r.paper_threshold, r.unit),
               "This run's threshold": ("≠ " if differs else "") + format_threshold(r.direction, r.threshold, r.unit),
               f"Paper ({version})": format_auroc(r.paper_auroc, r.paper_low, r.paper_high),
               "This run": format_auroc(r.auroc, r.low, r.high), **format_counts(r)}
        if comparable:
            row["Difference"] = "–" if pd.isna(r.difference) else f"{r.difference:+.3f}"
        rows.append(row)
    columns = ["Abnormality", "Task", "Paper threshold", "This run's threshold", f"Paper ({version})", "This run",
               *COUNT_COLUMNS, *(["Difference"] if comparable else [])]
    return pd.DataFrame(rows, columns=columns)


def comparison_note(comparison: pd.DataFrame) -> str:
    """One sentence on what the comparison can say: thresholds that differ, and why no difference column."""
    n = len(comparison)
    if n == 0:
        return "No target of this run matches one in the paper's tables (same lab, direction and task)."
    k = int(comparison["threshold_differs"].sum()) if "threshold_differs" in comparison.columns else 0
    text = (f"{n} targets of this run match the paper's (same lab, direction and task); {k} of them use a "
            f"threshold other than the paper's (marked ≠), so their AUROCs answer a different question.")
    if "comparable" in comparison.columns and not comparison["comparable"].all():
        text += (" This run was built from synthetic data (its targets.json says so), so its AUROCs are set "
                 "beside MIMIC-IV's without a difference column: they measure how well the pipeline recovers "
                 "the generator's planted effects, not the clinical signal the paper measured.")
    return text


#: Headers of raw columns a page shows (``results.csv``, ``cohort_flow.csv``, the self-checks);
#: a name not listed gets :func:`column_title`'s spelling (underscores to spaces, unit suffix
#: in parentheses).
COLUMN_TITLES = {
    "target": "Target", "task": "Task", "lab": "Lab", "label": "Lab", "value": "Value",
    "direction": "Direction", "threshold": "Threshold", "unit": "Unit", "category": "Category",
    "auroc": "AUROC", "low": "95% CI low", "high": "95% CI high",
    "low_patient": "Patient-level 95% CI low", "high_patient": "Patient-level 95% CI high",
    "macro_auroc": "Macro AUROC", "n": "n", "n_pos": "Positives", "n_neg": "Negatives",
    "n_skipped": "Resamples skipped", "n_targets": "Targets", "n_significant": "Significant > 0.70",
    "step": "Step", "rows_in": "Rows in", "rows_out": "Rows out", "dropped": "Dropped", "reason": "Reason",
    "records": "Records", "parameters": "Parameters", "ours": "This build", "paper": "Paper (arXiv v1)",
    "brier": "Brier", "prevalence": "Prevalence", "mechanism": "Mechanism", "channel": "Channel",
    "window": "Window", "start_s": "Window start (s)", "end_s": "Window end (s)",
    "ecgs": "ECGs", "n_ecgs": "ECGs", "n_patients": "Patients", "all": "All",
}
_UNIT_SUFFIXES = {"_mv": "mV", "_ms": "ms", "_s": "s", "_min": "min", "_hz": "Hz", "_db": "dB", "_pct": "%",
                  "_mb": "MB", "_h": "h"}
#: Tables longer than this show their first ``PREVIEW_ROWS`` rows and a dropdown for the rest.
COLLAPSE_ROWS = 25
PREVIEW_ROWS = 10
_TAG = re.compile(r"\[(Ca\.|Re\.|Re\./Ca\.|He\.|Me\.|Im\.|Co\.)\]")


def column_title(name) -> str:
    """The header a page shows for a column: :data:`COLUMN_TITLES`, else the name spelled out.

    >>> column_title("rows_in"), column_title("mean_mv"), column_title("Estimation AUROC"), column_title("mon30")
    ('Rows in', 'Mean (mV)', 'Estimation AUROC', '30 min.')
    """
    text = str(name)
    if text in COLUMN_TITLES:
        return COLUMN_TITLES[text]
    if text in TASK_TITLES:
        return TASK_TITLES[text]
    if text != text.lower() or " " in text:  # already a header
        return text
    unit = next((u for suffix, u in _UNIT_SUFFIXES.items() if text.endswith(suffix) and len(text) > len(suffix)), None)
    if unit:
        text = text[: text.rindex("_")]
    words = text.replace("_", " ").strip()
    words = words[:1].upper() + words[1:]
    words = re.sub(r"\bauroc\b", "AUROC", words, flags=re.I)
    return f"{words} ({unit})" if unit else words


def _format_number(x, decimals: int = 3) -> str:
    """Integers with thousands separators, other numbers with ``decimals`` decimals, NaN as –."""
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)) or float(x).is_integer() and abs(float(x)) >= 1000:
        return f"{int(x):,}"
    return f"{float(x):,.{decimals}f}"


_NUMBER_LIKE = re.compile(r"^[\s–+\-−≥≤<>]*\d[\d,.]*(\s*\(.*\))?(\s*\[[\d/]+\])?\s*%?$")


def _is_numeric_column(values) -> bool:
    """Numbers, or texts that read as numbers (``0.882 (0.860, 0.902)``, ``1,234``, ``–``)."""
    seen = False
    for v in values:
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
            seen = True
            continue
        text = "" if v is None else str(v).strip()
        if text in ("", "–", "-", "nan", "<NA>"):
            continue
        if not _NUMBER_LIKE.match(text):
            return False
        seen = True
    return seen


def style_table(table: pd.DataFrame, empty: str | None = None):
    """A table for a page: a pandas Styler without the index, every row shown.

    Headers as :func:`column_title` spells them, numbers with three decimals (integers with
    thousands separators, NaN as –) and numeric columns (numbers, AUROC texts) aligned right.
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
    numeric = [c for c in table.columns if _is_numeric_column(table[c].tolist())]
    styler = (table.style.hide(axis="index")
              .format(_format_number, subset=[c for c in table.columns if table[c].dtype.kind in "biuf"
                                              or table[c].dtype == "Int64"], na_rep="–")
              .format_index(column_title, axis=1))
    right = [{"selector": f"th.col_heading.col{table.columns.get_loc(c)}", "props": "text-align: right;"}
             for c in numeric]
    styler = styler.set_table_styles(right, overwrite=False)
    if numeric:
        styler = styler.set_properties(subset=numeric, **{"text-align": "right", "white-space": "nowrap"})
    best = table.attrs.get("best", {})
    return styler.apply(lambda row: ["font-weight: bold" if best.get(row.name) == c else "" for c in row.index],
                        axis=1)


def table_notes(table: pd.DataFrame) -> list[str]:
    """What a reader needs to read ``table``'s marks: the category codes it shows, its bold cells."""
    notes = []
    text = " ".join(str(v) for v in table.to_numpy().ravel())
    codes = list(dict.fromkeys(m.group(1) for m in _TAG.finditer(text)))
    if codes:
        order = list(catalog.CATEGORY_NAMES)
        codes.sort(key=order.index)
        notes.append("In brackets, the paper's category of the laboratory value: "
                     + ", ".join(f"[{c}] {catalog.CATEGORY_NAMES[c]}" for c in codes) + ".")
    if table.attrs.get("best"):
        notes.append("Bold: the horizon with the highest AUROC in each row, as the paper marks it.")
    return notes


def show_table(table: pd.DataFrame, caption: str, empty: str | None = None, index: bool = False,
               collapse_rows: int = COLLAPSE_ROWS, preview_rows: int = PREVIEW_ROWS):
    """A table as every page and notebook shows it (``IPython.display.HTML``, for ``glue`` or a cell).

    :func:`style_table` (headers, numbers, alignment, bold), under ``caption`` followed by
    :func:`table_notes`. A table longer than ``collapse_rows`` shows its first
    ``preview_rows`` rows and a dropdown ("all N rows") that opens the rest: every row is in
    the HTML, the rest hidden by CSS while the dropdown is closed. Wide tables scroll inside
    their own box (``book/_static/css/labecg.css``, and the style of the table itself in
    Jupyter).

    Parameters
    ----------
    table : DataFrame
    caption : str
        One sentence on what the table shows; units not in the headers.
    empty : str, optional
        Shown instead of an empty table.
    index : bool
        Show the index as the first column (named by its name); default: hidden.
    """
    import html

    from IPython.display import HTML

    if table.empty and empty is not None:
        return style_table(table, empty)
    frame = table
    if index:
        # an unnamed index (row names such as "ECGs", "patients") gets an empty header, not "Index"
        frame = table.rename_axis(table.index.name or "").reset_index()
        frame.attrs = dict(table.attrs)
        if "best" in frame.attrs:  # rows are numbered now; the bold follows them
            keys = list(table.index)
            frame.attrs["best"] = {keys.index(k): c for k, c in table.attrs["best"].items() if k in keys}
    caption_text = " ".join([caption.strip(), *table_notes(table)])
    styler = style_table(frame).set_caption(html.escape(caption_text))
    import hashlib

    # the same table gets the same id in every build (the executed notebooks stay comparable)
    uid = "labecg-" + hashlib.sha256(f"{caption_text}{frame.shape}{list(frame.columns)}".encode()).hexdigest()[:10]
    body = styler.set_uuid(uid).to_html()
    n = len(frame)
    more = ""
    if n > collapse_rows:
        more = (f'<details class="labecg-more"><summary>Show all {n:,} rows '
                f'(the first {preview_rows} are shown)</summary></details>')
        css = (f"<style>.labecg-table:has(+ details.labecg-more:not([open])) #T_{uid} tbody "
               f"tr:nth-child(n+{preview_rows + 1}) {{display: none;}}</style>")
    else:
        css = ""
    wrapper = (f'<div class="labecg-table" style="overflow-x: auto; max-width: 100%;">{body}</div>')
    return HTML(css + wrapper + more)


def empty_table_note(results: pd.DataFrame, tasks, auroc_threshold: float = AUROC_THRESHOLD) -> str:
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


def format_multiplicity(multiplicity: pd.DataFrame) -> pd.DataFrame:
    """``multiplicity.csv`` (:func:`labecg.evaluate.multiplicity_summary`) for a page, one row per task.

    Columns ``Task``, ``Targets``, ``Paper's rule``, ``Simultaneous``, ``Patient-level``,
    ``Patient-level, simultaneous`` (targets whose lower bound exceeds 0.70 under each
    interval), ``Critical value`` (ECG-level / patient-level ``c``: the simultaneous
    interval is AUROC ± c standard errors; a pointwise 95% interval is about ± 1.96).
    """
    rows = [{"Task": TASK_TITLES.get(r.task, r.task), "Targets": int(r.n_targets),
             "Paper's rule": int(r.n_significant), "Simultaneous": int(r.n_significant_simultaneous),
             "Patient-level": int(r.n_significant_patient),
             "Patient-level, simultaneous": int(r.n_significant_simultaneous_patient),
             "Critical value": f"{_fmt(r.critical_value)} / {_fmt(r.critical_value_patient)}"}
            for r in multiplicity.itertuples(index=False)]
    return pd.DataFrame(rows, columns=["Task", "Targets", "Paper's rule", "Simultaneous", "Patient-level",
                                       "Patient-level, simultaneous", "Critical value"])
