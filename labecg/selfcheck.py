"""What the book says about a run: its data, its headline numbers, and whether it recovers the planted effects.

Which data a run was built from (:func:`source_banner`, :func:`describe_run`), its headline
numbers and the sentences of the results chapter (:func:`results_summary`,
:func:`interval_summary`, :func:`calibration_summary` with :func:`describe_calibration`), the
box of commands that rebuild a page (:func:`reproduce_box`; the commands are
:func:`labecg.cli.reproduce_commands`'), and, on synthetic data, the self-check
(:func:`planted_effects_check`, :func:`attribution_check`). The statistics themselves are
:mod:`labecg.evaluate`'s; this module only reads and words them.

The self-check joins the planted effects of the synthetic generator (one row per laboratory
test: direction, channel, strength 0-3) with the bootstrap results of a run (one row per
target): a target with a planted effect (strength >= 1) should have an AUROC interval above
0.5; a target with nothing planted (strength 0) should have an interval containing 0.5.
It also reads the reference ranges printed on the source's lab rows back by sex and age
(:func:`planted_ranges_check`): the ranges that ``labecg cohort --thresholds row`` labels by
must be the generator's (``labecg.planted.PLANTED_RANGES``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from labecg import layout, paper
from labecg.layout import SYNTHETIC_MARKER
from labecg.planted import planted_ranges_frame
from labecg.targets import AUROC_THRESHOLD, BINARY, TASKS, lab_slug, significant
from labecg.util import read_json

__all__ = ["source_banner", "read_planted_effects",
           "planted_effects_check", "summarize_check", "null_coverage", "attribution_check",
           "attribution_shares", "summarize_attribution", "ATTRIBUTION_CHECK_COLUMNS", "ATTRIBUTION_VERDICTS", "describe_run", "results_summary",
           "interval_summary", "calibration_summary", "describe_calibration", "describe_multiplicity",
           "reproduce_box", "read_planted_ranges", "planted_ranges_check", "threshold_rules_summary",
           "row_ranges_check"]



def _is_synthetic_root(data_root: Path) -> bool:
    return (Path(data_root) / SYNTHETIC_MARKER).exists()


def _banner(synthetic: bool, where: str) -> str:
    if synthetic:
        return ("```{warning}\n**Built from synthetic data**, not from MIMIC-IV. " + where +
                " The numbers show whether the pipeline recovers the relationships planted in the "
                "synthetic source; they say nothing about real patients or about the paper's "
                "clinical findings.\n```")
    return ("```{important}\n**Built from the MIMIC-IV data sources.** " + where +
            " Compare with the paper (" + paper.VERSION + ") only at full scale and full training.\n```")


def source_banner(data_root) -> str:
    """A MyST admonition saying whether ``data_root`` is synthetic (has labecg_synthetic.json)."""
    synthetic = _is_synthetic_root(Path(data_root))
    return _banner(synthetic, f"Data source: `{Path(data_root).name}`.")


def read_planted_effects(data_root, run_dir=None) -> pd.DataFrame:
    """The planted effects of a synthetic source; an empty table for a real one.

    Looks for ``labecg_synthetic.json`` in ``data_root``, then (for a book built from a
    run folder) in the data root recorded in ``run_dir/targets.json``
    (:func:`labecg.layout.data_root` of ``source.ecg``), and reads its ``planted_effects``
    (:func:`labecg.planted.planted_effects_frame` as the generator recorded it).

    Returns
    -------
    DataFrame with columns label, lab, direction (low, high, both), channel, mechanism,
    strength (0 none ... 3 strong); no rows when no synthetic marker is found.
    """
    columns = ["label", "lab", "direction", "channel", "mechanism", "strength"]
    candidates = [Path(data_root)] if data_root is not None else []
    if run_dir is not None and (Path(run_dir) / layout.TARGETS).exists():
        ecg = read_json(Path(run_dir) / layout.TARGETS).get("source", {}).get("ecg")
        if ecg:
            candidates.append(layout.data_root(ecg))
    for root in candidates:
        marker = root / SYNTHETIC_MARKER
        if marker.exists():
            df = pd.DataFrame(read_json(marker).get("planted_effects") or [])
            missing = sorted(set(columns) - set(df.columns))
            if missing:
                raise KeyError(f"{marker}: planted_effects lack columns {missing}; expected {columns}, as "
                               "`labecg synth` records them last (an unfinished tree: run `labecg synth` again)")
            return df.reindex(columns=columns).sort_values(["strength", "label"], ascending=[False, True],
                                                           ignore_index=True)
    return pd.DataFrame(columns=columns)


def read_planted_ranges(data_root) -> pd.DataFrame:
    """The sex- and age-specific reference ranges a synthetic source printed; an empty table for a real one.

    Reads ``planted_ranges`` of ``labecg_synthetic.json`` in ``data_root`` (the generator's own
    :func:`labecg.planted.planted_ranges_frame` for a marker written before they existed).

    Returns
    -------
    DataFrame with columns label, lab, sex ("F", "M"), age_min, age_max (years of
    ``anchor_age``, both included), lower, upper (the test's unit); no rows without a marker.
    """
    columns = ["label", "lab", "sex", "age_min", "age_max", "lower", "upper"]
    marker = Path(data_root) / SYNTHETIC_MARKER
    if not marker.exists():
        return pd.DataFrame(columns=columns)
    ranges = read_json(marker).get("planted_ranges")
    df = pd.DataFrame(ranges) if ranges else planted_ranges_frame()
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise KeyError(f"{marker}: planted ranges lack columns {missing}; expected {columns}")
    return df[columns]


def planted_ranges_check(data_root, planted: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each planted reference range beside the range the source's rows print most for that sex and age.

    Parameters
    ----------
    data_root : path
        A data source in the MIMIC layout (``labevents``, ``d_labitems``, ``patients``).
    planted : DataFrame, optional
        :func:`read_planted_ranges` of ``data_root`` (the default).

    Returns
    -------
    DataFrame, one row per planted range: label, sex, age_min, age_max, lower, upper (planted),
    n_rows (the test's rows of patients of that sex and ``anchor_age`` band that print both
    bounds, 0-0 excluded), found_lower, found_upper (the pair they print most; ties: the
    smaller), share (its fraction of n_rows) and verdict: "recovered" (found = planted),
    "differs", or "no rows". Empty when ``planted`` is.
    """
    planted = read_planted_ranges(data_root) if planted is None else planted
    out_cols = ["label", "sex", "age_min", "age_max", "lower", "upper", "n_rows", "found_lower", "found_upper",
                "share", "verdict"]
    if planted.empty:
        return pd.DataFrame(columns=out_cols)
    root = Path(data_root)
    items = pd.read_csv(root / layout.MIMIC_FILES["d_labitems"], usecols=["itemid", "label"])
    items = items[items["label"].isin(set(planted["label"]))]
    patients = pd.read_csv(root / layout.MIMIC_FILES["patients"], usecols=["subject_id", "gender", "anchor_age"])
    rows = []
    for chunk in pd.read_csv(root / layout.MIMIC_FILES["labevents"], chunksize=1_000_000,
                             usecols=["subject_id", "itemid", "ref_range_lower", "ref_range_upper"]):
        rows.append(chunk[chunk["itemid"].isin(items["itemid"])])
    labs = (pd.concat(rows).merge(items, on="itemid").merge(patients, on="subject_id")
            .dropna(subset=["ref_range_lower", "ref_range_upper"]))
    labs = labs[~((labs["ref_range_lower"] == 0) & (labs["ref_range_upper"] == 0))]
    out = []
    for r in planted.itertuples(index=False):
        group = labs[(labs["label"] == r.label) & (labs["gender"] == r.sex)
                     & labs["anchor_age"].between(r.age_min, r.age_max)]
        found = dict(found_lower=np.nan, found_upper=np.nan, share=np.nan, verdict="no rows")
        if len(group):
            counts = group.groupby(["ref_range_lower", "ref_range_upper"]).size().sort_index()
            (lower, upper), n = counts.idxmax(), counts.max()
            found = dict(found_lower=lower, found_upper=upper, share=round(n / len(group), 3),
                         verdict="recovered" if (lower, upper) == (r.lower, r.upper) else "differs")
        out.append(dict(label=r.label, sex=r.sex, age_min=r.age_min, age_max=r.age_max, lower=r.lower,
                        upper=r.upper, n_rows=len(group), **found))
    return pd.DataFrame(out, columns=out_cols)


def planted_effects_check(results: pd.DataFrame, planted: pd.DataFrame) -> pd.DataFrame:
    """Each target's AUROC interval beside the effect planted for it.

    Parameters
    ----------
    results : DataFrame
        ``RUN/evaluation/results.csv`` as read by :func:`labecg.evaluate.read_results`:
        indexed by target, columns task, lab, label, direction, auroc, low, high, n_pos,
        n_neg (a ``macro`` row is ignored).
    planted : DataFrame
        From :func:`read_planted_effects`; ``direction`` "both" applies to low and high.

    Returns
    -------
    DataFrame, one row per target whose lab has a planted-effects row: target, task,
    label, direction, channel, strength, auroc, low, high, expected, verdict, and, when
    ``results`` has the patient-level interval, low_patient, high_patient,
    verdict_patient (the same rule on that interval). ``expected``
    is "above 0.5" for strength >= 1 and "contains 0.5" for strength 0. ``verdict``:
    "recovered" (strength >= 1, low > 0.5), "not resolved" (strength >= 1, interval
    reaches 0.5: too weak for this scale), "as expected" (strength 0, low <= 0.5 <=
    high), "unexpected signal" (strength 0, interval excludes 0.5), "undefined" (no
    interval). Sorted by strength (strongest first), then AUROC; AUROC and bounds rounded
    to 3 decimals. No rows when
    ``planted`` is empty.
    """
    out_cols = ["target", "task", "label", "direction", "channel", "strength", "auroc", "low", "high",
                "expected", "verdict"]
    if "low_patient" in results.columns:
        out_cols += ["low_patient", "high_patient", "verdict_patient"]
    if planted.empty:
        return pd.DataFrame(columns=out_cols)
    res = results.drop(index="macro", errors="ignore").reset_index()
    if "target" not in res.columns:
        res = res.rename(columns={res.columns[0]: "target"})
    need = {"target", "task", "lab", "direction", "auroc", "low", "high"}
    if not need <= set(res.columns):
        raise KeyError(f"results: missing columns {sorted(need - set(res.columns))}")
    p = planted.copy()
    p["lab"] = p["lab"].where(p["lab"].notna(), p["label"].map(lab_slug))
    p = p.assign(direction=p["direction"].map(lambda d: ["low", "high"] if d == "both" else [d])).explode("direction")
    merged = res.drop(columns=["label"], errors="ignore").merge(
        p[["lab", "label", "direction", "channel", "strength"]], on=["lab", "direction"], how="inner")
    strength = merged["strength"].astype(float)
    merged["expected"] = np.where(strength > 0, "above 0.5", "contains 0.5")
    merged["verdict"] = _verdict(strength, merged["low"], merged["high"])
    if "low_patient" in merged.columns:
        merged["verdict_patient"] = _verdict(strength, merged["low_patient"], merged["high_patient"])
    merged = merged.sort_values(["strength", "auroc"], ascending=[False, False], ignore_index=True)
    return merged[out_cols].round({"auroc": 3, "low": 3, "high": 3, "low_patient": 3, "high_patient": 3})


def _verdict(strength: pd.Series, low, high) -> np.ndarray:
    low, high = pd.Series(low).astype(float), pd.Series(high).astype(float)
    chance = BINARY.chance  # the AUROC of a score that knows nothing
    verdict = np.where(strength > 0, np.where(significant(low, chance), "recovered", "not resolved"),
                       np.where((low <= chance) & (high >= chance), "as expected", "unexpected signal"))
    return np.where(low.isna() | high.isna(), "undefined", verdict)


def null_coverage(check: pd.DataFrame) -> dict:
    """How many targets with nothing planted have an interval containing 0.5, under each bootstrap.

    Parameters
    ----------
    check : DataFrame
        From :func:`planted_effects_check`.

    Returns
    -------
    dict with ``n_null`` (targets of strength 0 with a defined interval), ``contains_ecg``
    (of those, ECG-level interval contains 0.5) and ``contains_patient`` (patient-level;
    None when the run has no patient-level interval; 0 when there are no null targets).
    """
    null = check[check["strength"].astype(float) == 0] if not check.empty else check
    null = null[null["verdict"] != "undefined"] if not null.empty else null
    out = {"n_null": int(len(null)), "contains_ecg": int((null["verdict"] == "as expected").sum()),
           "contains_patient": None}
    if null.empty:
        out["contains_patient"] = 0
    elif "verdict_patient" in check.columns and (null["verdict_patient"] != "undefined").all():
        out["contains_patient"] = int((null["verdict_patient"] == "as expected").sum())
    return out


def summarize_check(check: pd.DataFrame) -> str:
    """One Markdown sentence counting the verdicts of :func:`planted_effects_check`."""
    if check.empty:
        return "No planted effects: this run was not built from the synthetic source, so there is nothing to check."
    s = check["strength"].astype(float)
    groups = [(check[s >= 2], "targets with a moderate or strong planted effect (strength ≥ 2)", "recovered",
               "an AUROC interval above 0.5", "no target has a moderate or strong planted effect"),
              (check[s == 1], "with a weak effect", "recovered", "one too", "no target has a weak planted effect"),
              (check[s == 0], "targets with nothing planted", "as expected", "an interval containing 0.5",
               "every target has a planted effect")]
    clauses = []
    for frame, what, verdict, has, none in groups:
        n, k = len(frame), int((frame["verdict"] == verdict).sum())
        what = what.replace("targets", "target") if n == 1 else what
        clauses.append(none if n == 0 else f"{k} of {n} {what} {'has' if 1 in (k, n) else 'have'} {has}")
    text = "; ".join(clauses[:-1]) + "; and " + clauses[-1] + "."
    text = text[0].upper() + text[1:]
    cover = null_coverage(check)
    if cover["contains_patient"] is not None and cover["n_null"]:
        text += (f" With the patient-level interval, {cover['contains_patient']} of {cover['n_null']} "
                 f"targets with nothing planted contain 0.5 (ECG-level: {cover['contains_ecg']}); "
                 f"a 95% interval should miss 0.5 for about 1 in 20 of them.")
    return text


def describe_run(run_dir) -> dict:
    """Which run a results page shows: a banner and a description, as Markdown.

    Reads ``RUN/run_info.json`` (data source, labecg version, git commit, date, hardware,
    duration; every scalar entry is listed) and ``RUN/targets.json``
    (``source.synthetic``).

    Returns
    -------
    dict with ``synthetic`` (bool), ``source_label`` (short text), ``banner`` (a MyST
    admonition) and ``description`` (a Markdown list).
    """
    run_dir = Path(run_dir)
    targets = read_json(run_dir / layout.TARGETS)
    info_path = run_dir / layout.RUN_INFO
    info = read_json(info_path) if info_path.exists() else {}
    source = targets.get("source", {})
    synthetic = bool(source.get("synthetic", False))
    label = ("synthetic data (labecg generator), not MIMIC-IV" if synthetic
             else "the MIMIC-IV data sources (MIMIC-IV hosp, MIMIC-IV-ED, MIMIC-IV-ECG, MIMIC-IV-ECG-ICD)"
             if source.get("ecg_icd", "") is not None
             else "the MIMIC-IV data sources (MIMIC-IV hosp, MIMIC-IV-ED, MIMIC-IV-ECG; no MIMIC-IV-ECG-ICD, "
                  "so every fold was assigned)")
    lines = [f"- run folder: `{run_dir.name}`", f"- data: {label}"]
    for key, value in _flatten(info):
        lines.append(f"- {key.replace('_', ' ')}: `{value}`")
    return {"synthetic": synthetic, "source_label": label,
            "banner": _banner(synthetic, f"Run folder `{run_dir.name}`."),
            "description": "This page shows the run:\n\n" + "\n".join(lines)}


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k} ")
        elif isinstance(v, (str, int, float, bool)) or v is None:
            yield f"{prefix}{k}", v


def results_summary(results: pd.DataFrame) -> dict:
    """Headline numbers of a run's ``results.csv``.

    Returns
    -------
    dict with macro_auroc, macro_low, macro_high (float), n_targets (int), n_significant
    (dict task -> int: interval lower bound above the threshold), n_significant_mon_max
    (int, the largest over the monitoring horizons, the paper's "up to"), by_task
    (DataFrame: targets, significant, median AUROC per task).
    """
    if "macro" not in results.index:
        raise KeyError("results: no 'macro' row; expected results.csv from labecg.evaluate")
    macro = results.loc["macro"]
    tr = results.drop(index="macro")
    by_task = (tr.groupby("task", sort=False)
                 .agg(targets=("auroc", "size"), significant=("significant", "sum"),
                      median_auroc=("auroc", "median"))
                 .reindex([t for t in TASKS if t in set(tr["task"])]))
    n_sig = {t: int(by_task["significant"].get(t, 0)) for t in TASKS}
    return {"macro_auroc": float(macro["auroc"]), "macro_low": float(macro["low"]),
            "macro_high": float(macro["high"]), "n_targets": int(len(tr)), "n_significant": n_sig,
            "n_significant_mon_max": max(n_sig[t] for t in TASKS[1:]),
            "by_task": by_task}


def scale_verdict(results: pd.DataFrame, auroc_threshold: float = AUROC_THRESHOLD) -> str:
    """A plain sentence when a run is too small to estimate anything, else "".

    The test: the macro AUROC's patient-level 95% interval (the ECG-level one where the
    run has no patient ids) holds both chance (0.5) and ``auroc_threshold``, so the run can
    tell the model neither from chance nor from the paper's bar. Such a run (the open MIMIC
    demo's few patients, a classroom run) shows the stages working, not a result.

    Parameters
    ----------
    results : DataFrame
        :func:`labecg.evaluate.read_results` of a run (its ``macro`` row).
    """
    macro = results.loc["macro"]
    low, high, level = macro.get("low_patient", np.nan), macro.get("high_patient", np.nan), "patient-level"
    if np.isnan(low) or np.isnan(high):
        low, high, level = macro["low"], macro["high"], "ECG-level"
    if not (low <= 0.5 <= high and low <= auroc_threshold <= high):
        return ""
    n = macro.get("n_patients", np.nan)
    over = f" over {int(n):,} test patients" if not np.isnan(n) and n >= 0 else ""
    return (f"**This run cannot estimate anything.** The macro AUROC's {level} 95% interval{over}, "
            f"{low:.2f}–{high:.2f}, holds both chance (0.50) and the paper's bar ({auroc_threshold:.2f}), "
            "so the run cannot say whether the model beats chance, let alone how well the ECG estimates a "
            "laboratory value. What it shows is every stage working on these rows; "
            f"an estimate needs far more patients (the paper's cohort: {paper.COHORT['n_patients']:,}).")


def interval_summary(results: pd.DataFrame, auroc_threshold: float = AUROC_THRESHOLD) -> dict:
    """The ECG-level and the patient-level interval of a run, compared.

    Parameters
    ----------
    results : DataFrame
        :func:`labecg.evaluate.read_results` of a run.
    auroc_threshold : float
        The paper's significance rule, applied to each interval.

    Returns
    -------
    dict with ``n_significant_patient`` (task -> targets whose patient-level lower bound
    exceeds the threshold), ``n_significant_patient_mon_max``, ``n_lost`` (significant by
    the ECG-level but not by the patient-level interval), ``median_width_ratio``
    (median over targets of patient-level width / ECG-level width), ``macro_low_patient``,
    ``macro_high_patient``, ``n_patients`` (test patients) and ``text`` (a Markdown
    sentence).
    """
    targets = results.drop(index="macro")
    sig_p = significant(targets["low_patient"], auroc_threshold)
    n_sig = {t: int(sig_p[targets["task"] == t].sum()) for t in TASKS}
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = ((targets["high_patient"] - targets["low_patient"]) / (targets["high"] - targets["low"]))
    ratio = ratio.replace([np.inf, -np.inf], np.nan)
    macro = results.loc["macro"]
    out = {"n_significant_patient": n_sig,
           "n_significant_patient_mon_max": max(n_sig[t] for t in TASKS[1:]),
           "n_lost": int((targets["significant"].astype(bool) & ~sig_p).sum()),
           "median_width_ratio": float(ratio.median()),
           "macro_low_patient": float(macro["low_patient"]), "macro_high_patient": float(macro["high_patient"]),
           "n_patients": int(macro["n_patients"])}
    out["text"] = (f"The {out['n_patients']} test patients' patient-level intervals are "
                   f"{out['median_width_ratio']:.2f} times as wide as the ECG-level ones (median over targets). "
                   f"Macro AUROC interval: {macro['low']:.3f}–{macro['high']:.3f} ECG-level, "
                   f"{out['macro_low_patient']:.3f}–{out['macro_high_patient']:.3f} patient-level. "
                   f"Significant above {auroc_threshold:.2f} by the patient-level interval: "
                   f"{n_sig['est']} in estimation, up to {out['n_significant_patient_mon_max']} in monitoring; "
                   f"{out['n_lost']} targets significant by the paper's rule are not by this one.")
    return out


def calibration_summary(calib: pd.DataFrame) -> dict:
    """Medians over targets of :func:`labecg.stats.calibration`'s columns, for a sentence.

    Returns
    -------
    dict with ``n_targets`` (with both classes), ``median_brier``,
    ``median_brier_reference``, ``n_better_than_prevalence`` (Brier below the
    prevalence's), ``median_intercept``, ``median_slope`` (over targets where the fit
    converged), ``n_slope_fitted``.
    """
    both = calib[(calib["prevalence"] > 0) & (calib["prevalence"] < 1)]
    return {"n_targets": int(len(both)), "median_brier": float(both["brier"].median()),
            "median_brier_reference": float(both["brier_reference"].median()),
            "n_better_than_prevalence": int((both["brier"] < both["brier_reference"]).sum()),
            "median_intercept": float(both["calibration_intercept"].median()),
            "median_slope": float(both["calibration_slope"].median()),
            "n_slope_fitted": int(both["calibration_slope"].notna().sum())}


def describe_calibration(summary: dict) -> str:
    """One Markdown sentence from :func:`calibration_summary`."""
    return (f"Over the {summary['n_targets']} targets with both classes in the test ECGs, the median Brier "
            f"score is {summary['median_brier']:.3f} (predicting each target's prevalence: "
            f"{summary['median_brier_reference']:.3f}); {summary['n_better_than_prevalence']} targets beat "
            f"their prevalence. Median calibration intercept {summary['median_intercept']:.2f} (ideal 0), "
            f"median calibration slope {summary['median_slope']:.2f} (ideal 1; fitted for "
            f"{summary['n_slope_fitted']} targets).")


ATTRIBUTION_CHECK_COLUMNS = ["target", "window", "window_s", "share", "low", "high", "null_share", "vs_null",
                             "vs_null_low", "vs_null_high", "closest_planted", "vs_planted", "vs_planted_low",
                             "vs_planted_high", "verdict", "n_ecgs", "level"]
#: The verdicts of :func:`attribution_check`, strongest first.
ATTRIBUTION_VERDICTS = ("concentrated", "above nulls only", "not shown", "no null targets")


def describe_multiplicity(multiplicity: pd.DataFrame, auroc_threshold: float = AUROC_THRESHOLD) -> str:
    """One sentence from ``multiplicity.csv``: targets above the threshold one at a time and all at once.

    Every count is read from the frame (:func:`labecg.evaluate.multiplicity_summary`).
    """
    if multiplicity.empty:
        return "This run has no target, so there is nothing to hold to the threshold."
    n = int(multiplicity["n_targets"].sum())
    paper, sim = int(multiplicity["n_significant"].sum()), int(multiplicity["n_significant_simultaneous"].sum())
    sim_p = int(multiplicity["n_significant_simultaneous_patient"].sum())
    level = float(multiplicity["level"].iloc[0])
    text = (f"Held to {auroc_threshold:.2f} one at a time (the paper's rule), {paper} of {n} targets have a lower "
            f"bound above it; with {level:.0%} simultaneous intervals over all targets of a task (the bootstrap "
            f"maximum of the standardised deviations, on the same resamples), {sim} stay above it")
    if multiplicity["critical_value_patient"].notna().any():
        text += f", and {sim_p} with the patient-level resamples"
    return text + "."


def attribution_check(windows_frame: pd.DataFrame, contrasts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per planted effect: does its target's attribution sit in the planted window, beyond the nulls and the other effects?

    Parameters
    ----------
    windows_frame : DataFrame
        ``RUN/evaluation/attribution_windows.csv`` (:func:`labecg.explain.explain_run`):
        the share of each target in each window with its interval.
    contrasts : DataFrame
        ``RUN/evaluation/attribution_contrasts.csv`` (:func:`labecg.explain.share_contrasts`).

    Returns
    -------
    DataFrame with :data:`ATTRIBUTION_CHECK_COLUMNS`, one row per planted target with a
    window: ``share`` in its own window with its interval ``low``/``high``;
    ``null_share`` and ``vs_null`` (share minus the null targets' mean share, same window,
    same ECGs) with its interval; ``closest_planted``, the other planted target whose
    difference has the lowest lower bound, with ``vs_planted`` and its interval;
    ``verdict``: "concentrated" when the intervals against the nulls and against every
    other planted target all lie above 0; "above nulls only" when only the one against
    the nulls does; "not shown" when that one does not lie above 0 (it reaches 0 or lies
    below); "no null targets" when the run
    explained none; ``n_ecgs`` and ``level`` of the intervals. No rows when either frame
    is None or empty.
    """
    if windows_frame is None or windows_frame.empty or contrasts is None or contrasts.empty:
        return pd.DataFrame(columns=ATTRIBUTION_CHECK_COLUMNS)
    from labecg.explain import NULL_COMPARATOR

    own = windows_frame[windows_frame["planted_window"].astype(bool)].set_index("target")
    rows = []
    for target, group in contrasts.groupby("target", sort=False):
        row = {"target": target, "window": group["window"].iloc[0],
               "window_s": f"{group['start_s'].iloc[0]:.2f}–{group['end_s'].iloc[0]:.2f}",
               "share": group["share"].iloc[0], "low": own.loc[target, "low"], "high": own.loc[target, "high"],
               "n_ecgs": group["n_ecgs"].iloc[0], "level": group["level"].iloc[0]}
        vs_null = group[group["comparator"] == NULL_COMPARATOR]
        others = group[group["comparator"] != NULL_COMPARATOR]
        if len(vs_null):
            v = vs_null.iloc[0]
            row.update(null_share=v.comparator_share, vs_null=v.difference, vs_null_low=v.low, vs_null_high=v.high)
        if len(others):
            c = others.loc[others["low"].idxmin()]
            row.update(closest_planted=c.comparator, vs_planted=c.difference, vs_planted_low=c.low,
                       vs_planted_high=c.high)
        if not len(vs_null):
            row["verdict"] = "no null targets"
        elif not vs_null["low"].iloc[0] > 0:
            row["verdict"] = "not shown"
        elif (others["low"] > 0).all():
            row["verdict"] = "concentrated"
        else:
            row["verdict"] = "above nulls only"
        rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=ATTRIBUTION_CHECK_COLUMNS)
    numeric = [c for c in ATTRIBUTION_CHECK_COLUMNS if c not in ("target", "window", "window_s", "closest_planted",
                                                                 "verdict", "n_ecgs", "level")]
    out[numeric] = out[numeric].astype(float).round(3)
    return out


def attribution_shares(windows_frame: pd.DataFrame) -> pd.DataFrame:
    """Every explained target's share in every planted window, "share (low–high)", targets as rows."""
    if windows_frame is None or windows_frame.empty:
        return pd.DataFrame()
    cell = [f"{f:.2f} ({lo:.2f}–{hi:.2f})" for f, lo, hi in
            zip(windows_frame["fraction"], windows_frame["low"], windows_frame["high"])]
    frame = windows_frame.assign(cell=cell)
    table = frame.pivot(index=["target", "role"], columns="window", values="cell")
    windows = list(dict.fromkeys(frame["window"]))
    return table[windows].reindex(list(dict.fromkeys(zip(frame["target"], frame["role"])))).reset_index()


def _pct(x: float) -> str:
    """A signed difference to 3 decimals; a nonzero one that would print as 0.000 gets enough digits to show its sign."""
    text = f"{x:+.3f}"
    if x != 0 and float(text) == 0:
        text = f"{x:+.1e}"
    return text


def summarize_attribution(check: pd.DataFrame, randomization: pd.DataFrame | None = None) -> str:
    """Markdown sentences from :func:`attribution_check` and the randomisation check, no stronger than their intervals."""
    if check.empty:
        return ("No target with a planted window has an attribution check in this run, so there is nothing to "
                "check against the truth (`labecg explain --run-dir RUN` explains the planted targets "
                "that the run's cohort holds).")

    def name(t):
        return str(t).replace("_", " ")

    def vs(r, which):
        return (f"{_pct(getattr(r, which))} ({_pct(getattr(r, which + '_low'))} to "
                f"{_pct(getattr(r, which + '_high'))})")

    parts = []
    by = {v: check[check["verdict"] == v] for v in ATTRIBUTION_VERDICTS}
    n = len(check)
    if len(by["concentrated"]):
        parts.append(f"{len(by['concentrated'])} of {n} planted targets put more of their attribution in the "
                     f"window where the effect was planted than both the null targets and every other planted "
                     f"target, with every interval above 0: " + "; ".join(
                         f"{name(r.target)} ({r.window}, share {r.share:.2f}; over the null targets "
                         f"{vs(r, 'vs_null')}; over {name(r.closest_planted)} {vs(r, 'vs_planted')})"
                         if isinstance(r.closest_planted, str) else
                         f"{name(r.target)} ({r.window}, share {r.share:.2f}; over the null targets "
                         f"{vs(r, 'vs_null')})" for r in by["concentrated"].itertuples()) + ".")
    if len(by["above nulls only"]):
        parts.append(f"{len(by['above nulls only'])} of {n} exceed the null targets in their window but are not "
                     f"told apart from another planted target there: " + "; ".join(
                         f"{name(r.target)} ({r.window}; over the null targets {vs(r, 'vs_null')}; over "
                         f"{name(r.closest_planted)} {vs(r, 'vs_planted')})"
                         for r in by["above nulls only"].itertuples()) + ".")
    if len(by["not shown"]):
        parts.append(f"For {len(by['not shown'])} of {n} the interval against the null targets does not lie "
                     f"above 0, so no concentration is shown: " + "; ".join(
                         f"{name(r.target)} ({r.window}, {vs(r, 'vs_null')})" for r in by["not shown"].itertuples())
                     + ".")
    if len(by["no null targets"]):
        parts.append(f"{len(by['no null targets'])} of {n} have no null target to be held against, so no verdict "
                     f"is given.")
    first = check.iloc[0]
    lead = (f"Differences of shares of the attribution inside a window (planted target minus comparator, same "
            f"window, same ECGs), with {100 * float(first['level']):g}% bootstrap intervals over the "
            f"{int(first['n_ecgs'])} explained ECGs. ")
    text = lead + " ".join(parts)
    if randomization is not None and len(randomization) and (randomization["target"] == "all").any():
        r = randomization[randomization["target"] == "all"].iloc[0]
        common = (f"Model randomisation: the attribution maps rank-correlate {r.rho_randomized:.2f} with those "
                  f"of the same architecture with re-drawn weights, against {r.rho_trained:.2f} with the trained "
                  f"model's own maps at the same {int(r.n_steps)} steps (difference {r.difference:.2f}, "
                  f"{r.low:.2f} to {r.high:.2f}, {int(r.n_ecgs)} ECGs)")
        if r.low > 0:
            text += " " + common + ": the attributions depend on the trained weights."
        else:
            text += (" " + common + ": the check does not show that the attributions depend on the trained "
                     "weights, so the verdicts above may describe the input rather than the model.")
    elif randomization is not None:
        text += " The model-randomisation check was not run for this attribution."
    return text


# ---------------------------------------------------------------------------- how to reproduce a page

def reproduce_box(commands: list[str]) -> str:
    """A "How to reproduce this page" box holding ``commands``, as HTML.

    ``commands`` are :func:`labecg.cli.reproduce_commands` of the runs shown, one per line.

    HTML rather than Markdown so that a page can paste it from another page's glue (the
    results summary shows the same box as the results chapter) and Jupyter shows it as is.
    The classes are those of a MyST ``tip`` admonition and a highlighted code block, so
    the book styles it like its other boxes and gives the commands a copy button.
    """
    import html

    commands = "\n".join(commands)
    return ('<div class="admonition tip reproduce">\n'
            '<p class="admonition-title">How to reproduce this page</p>\n'
            "<p>From the repository root, in the project's environment (<code>make venv</code>, then "
            "<code>source .venv/bin/activate</code>), these commands rebuild the runs shown here and then "
            "this page (papermill writes the executed notebook into the run folder):</p>\n"
            '<div class="highlight-bash notranslate"><div class="highlight"><pre>'
            f"{html.escape(commands)}</pre></div></div>\n</div>")


# ---------------------------------------------------------------------------- added value, ablations

#: The command that fills each section of the results chapter a build may leave empty.
FILL_COMMANDS = {
    "tabular": "`labecg book --variants fusion tabular` (the default `make book`)",
    "last_value": "`labecg cohort` (it writes `last_values.parquet`), then `labecg train` again",
    "ablations": "`make book-full` (`labecg book --full`)",
}


def _difference_sentence(what: str, delta: float, low: float, high: float) -> str:
    """One sentence on a paired difference, never stronger than its 95% interval."""
    numbers = f"{delta:+.3f} (95% paired interval {low:+.3f} to {high:+.3f})"
    if low > 0:
        return f"{what}: {numbers}; the interval lies above 0, so the model is better on these ECGs."
    if high < 0:
        return f"{what}: {numbers}; the interval lies below 0, so the model is worse on these ECGs."
    return f"{what}: {numbers}; the interval contains 0, so no difference is shown."


def added_value_summary(evaluation_dir, results: pd.DataFrame) -> dict:
    """What the ECG adds, in numbers and sentences generated from the paired intervals.

    Parameters
    ----------
    evaluation_dir : Path
        The model's ``RUN/evaluation`` (``added_value.csv``, when written).
    results : DataFrame
        The model's ``results.csv``.

    Returns
    -------
    dict with ``text`` (Markdown), ``table`` (:func:`labecg.tables.format_added_value`,
    empty without the file), and per baseline present (``tabular``, ``last_value``):
    ``{baseline}_macro_auroc`` (the baseline's macro AUROC), ``{baseline}_delta``,
    ``{baseline}_low``, ``{baseline}_high`` (model minus baseline, macro, paired
    patient-level interval), ``{baseline}_n_above`` / ``{baseline}_n_below`` (targets whose
    interval lies above / below 0, no correction for multiplicity); for ``last_value`` also
    ``last_value_n_with`` / ``last_value_n_without`` (labelled test ECG-target pairs with
    and without an earlier value).
    """
    from labecg import evaluate, tables

    path = Path(evaluation_dir) / layout.ADDED_VALUE
    added = evaluate.read_added_value(path) if path.exists() else pd.DataFrame(columns=evaluate.ADDED_VALUE_COLUMNS)
    out: dict = {"table": tables.format_added_value(added, results) if len(added) else pd.DataFrame()}
    sentences = []
    for baseline, what in (("tabular", "Fusion minus the tabular-only model, macro AUROC"),
                           ("last_value", "Fusion minus the last earlier value, macro AUROC on the ECGs that have one")):
        rows = added[added["baseline"] == baseline].set_index("target")
        if rows.empty:
            sentences.append(f"No {'tabular-only run' if baseline == 'tabular' else 'last earlier values'} in this "
                             f"build; {FILL_COMMANDS[baseline]} fills this comparison.")
            continue
        macro, per_target = rows.loc["macro"], rows.drop(index="macro")
        out.update({f"{baseline}_macro_auroc": float(macro["auroc_baseline"]), f"{baseline}_delta": float(macro["delta"]),
                    f"{baseline}_low": float(macro["low"]), f"{baseline}_high": float(macro["high"]),
                    f"{baseline}_n_above": int((per_target["low"] > 0).sum()),
                    f"{baseline}_n_below": int((per_target["high"] < 0).sum())})
        text = _difference_sentence(what, macro["delta"], macro["low"], macro["high"])
        text += (f" Per target, {out[baseline + '_n_above']} of {len(per_target)} intervals lie above 0 and "
                 f"{out[baseline + '_n_below']} below (not corrected for multiplicity).")
        if baseline == "last_value":
            labelled = (results.drop(index="macro")["n_pos"] + results.drop(index="macro")["n_neg"]).reindex(
                per_target.index)
            out["last_value_n_with"] = int(per_target["n_ecgs"].sum())
            out["last_value_n_without"] = int(labelled.sum() - per_target["n_ecgs"].sum())
            text += (f" The last value's own macro AUROC is {macro['auroc_baseline']:.3f}; "
                     f"{out['last_value_n_with']} labelled (ECG, target) pairs have an earlier value and "
                     f"{out['last_value_n_without']} have none and are left out of this comparison.")
        else:
            text += f" The tabular-only model's macro AUROC is {macro['auroc_baseline']:.3f}."
        sentences.append(text)
    out["text"] = " ".join(sentences)
    return out


def ablation_summary(results: pd.DataFrame, ablation_dirs: dict) -> dict:
    """The book's run beside each ablation's: targets per task and macro AUROC with intervals.

    Parameters
    ----------
    results : DataFrame
        The book's model's ``results.csv`` (the paper's windows).
    ablation_dirs : dict
        Ablation name (``labecg.cohort.ABLATIONS``) -> its run's ``RUN/evaluation`` folder;
        the ablations this build ran.

    Returns
    -------
    dict with ``table`` (one row per run: ``run`` (``labecg.cohort.ABLATION_TITLES``),
    targets per task, ``macro AUROC`` with its ECG-level and patient-level intervals),
    ``text`` (Markdown: what was run, or the command that fills the section) and, per
    ablation run, ``{name}_macro_auroc``, ``{name}_low``, ``{name}_high``.
    """
    from labecg import cohort, evaluate, tables

    def row(name: str, res: pd.DataFrame) -> dict:
        macro, tr = res.loc["macro"], res.drop(index="macro")
        out = {"run": name}
        out.update({f"targets {tables.TASK_TITLES[t].lower()}": int((tr["task"] == t).sum()) for t in TASKS})
        out["macro AUROC (ECG-level interval)"] = tables.format_auroc(macro["auroc"], macro["low"], macro["high"])
        out["patient-level interval"] = (f"({macro['low_patient']:.3f}, {macro['high_patient']:.3f})"
                                         if pd.notna(macro["low_patient"]) else "–")
        return out

    rows, out, sentences = [row("the paper's windows and thresholds (this build)", results)], {}, []
    for name, folder in ablation_dirs.items():
        res = evaluate.read_results(Path(folder) / layout.RESULTS)
        rows.append(row(cohort.ABLATION_TITLES[name], res))
        macro = res.loc["macro"]
        out.update({f"{name}_macro_auroc": float(macro["auroc"]), f"{name}_low": float(macro["low"]),
                    f"{name}_high": float(macro["high"])})
        differ = ("monitoring labels (and so the ECGs kept)" if name == "causal"
                  else "labels of every target (and so the targets and ECGs kept)")
        sentences.append(f"The model of the cohort with {cohort.ABLATION_TITLES[name]}: macro AUROC "
                         f"{macro['auroc']:.3f} ({macro['low']:.3f}–{macro['high']:.3f}) over {len(res) - 1} "
                         f"targets, against {results.loc['macro', 'auroc']:.3f} ({results.loc['macro', 'low']:.3f}–"
                         f"{results.loc['macro', 'high']:.3f}) over {len(results) - 1} with the paper's windows "
                         f"and thresholds. The {differ} differ between the two cohorts, so the intervals are "
                         "shown side by side and no paired difference is given.")
    missing = [name for name in cohort.ABLATIONS if name not in ablation_dirs]
    if missing:
        sentences.append(f"Not run in this build: {', '.join(missing)}; {FILL_COMMANDS['ablations']} fills "
                         "this section.")
    out["table"] = pd.DataFrame(rows)
    out["text"] = " ".join(sentences)
    return out


def threshold_rules_summary(run_dir, row_evaluation_dir=None, n_moves: int = 10) -> dict:
    """The book's run beside the ``row`` ablation's: targets kept, prevalence per rule, the targets that move most.

    Parameters
    ----------
    run_dir : path
        The book's run folder (median thresholds, the paper's); its ``targets.json`` counts the
        ECGs evaluated.
    row_evaluation_dir : path, optional
        The ``RUN/evaluation`` folder of the ``row`` ablation's run (``labecg.cohort.ABLATIONS``);
        None when this build did not run it.
    n_moves : int
        Targets listed in ``moves``.

    Returns
    -------
    dict with ``kept`` and ``moves`` (:func:`labecg.cohort_report.compare_threshold_rules`,
    ``moves`` with the prevalences in percent), ``text`` (Markdown: the targets kept under
    each rule and the one that moves most, or the command that fills the section) and, when
    run, ``row_n_targets``, ``median_n_targets``, ``median_prevalence``, ``row_prevalence``.
    """
    from labecg import cohort_report

    if row_evaluation_dir is None:
        return {"kept": pd.DataFrame(), "moves": pd.DataFrame(),
                "text": f"Not run in this build: row; {FILL_COMMANDS['ablations']} fills this section."}
    median = read_json(Path(run_dir) / layout.TARGETS)["targets"]
    row = read_json(Path(row_evaluation_dir).parent / layout.TARGETS)["targets"]
    found = cohort_report.compare_threshold_rules(median, row, n_moves)
    kept, moves = found["kept"], found["moves"]
    out = {"kept": kept, "moves": moves.assign(**{c: 100 * moves[c] for c in
                                                 ("prevalence_median", "prevalence_row", "difference")})
                                         .rename(columns={"prevalence_median": "prevalence, median (%)",
                                                          "prevalence_row": "prevalence, row (%)",
                                                          "difference": "row − median (points)"}),
           "median_n_targets": int(kept.loc[0, "all"]), "row_n_targets": int(kept.loc[1, "all"]),
           "median_prevalence": float(kept.loc[0, "prevalence"]), "row_prevalence": float(kept.loc[1, "prevalence"])}
    text = (f"With {kept.loc[1, 'rule']} the cohort keeps {out['row_n_targets']} targets, against "
            f"{out['median_n_targets']} with the {kept.loc[0, 'rule']}; {len(found['only_row'])} are kept "
            f"only under the row rule and {len(found['only_median'])} only under the median rule. Over all "
            f"labelled cells, {100 * out['row_prevalence']:.1f}% are abnormal under the row rule and "
            f"{100 * out['median_prevalence']:.1f}% under the median rule.")
    if len(moves):
        top = moves.iloc[0]
        text += (f" The prevalence moves most for `{top['target']}`: {100 * top['prevalence_median']:.1f}% "
                 f"under the median rule, {100 * top['prevalence_row']:.1f}% under the row rule.")
    out["text"] = text
    return out


def _flagged(values: np.ndarray, cut: float, direction: str) -> np.ndarray:
    """Which values a cut flags: below it for ``low``, above it for ``high``."""
    return values < cut if direction == "low" else values > cut


def row_ranges_check(cohort_dir, planted: pd.DataFrame) -> pd.DataFrame:
    """The cut each planted range's estimation labels imply in a cohort, per sex and age band.

    For each planted range and side (``lower`` for the ``low`` target, ``upper`` for
    ``high``), the cohort's ECGs of that sex and ``age`` band with an estimation label and its
    value (``<lab>_value_est``, the row the label used): the cuts c that make the most labels
    agree with "value < c" (low) or "value > c" (high) form an interval between two adjacent
    values. Under ``--thresholds row`` that interval holds the planted bound (the rows that
    print another range, widened or empty, disagree); under the paper's median rule it holds
    the median instead.

    Parameters
    ----------
    cohort_dir : path
        A cohort folder (``cohort.parquet`` with ``sex``, ``age``, the estimation targets and
        their value columns; ``targets.json``).
    planted : DataFrame
        :func:`read_planted_ranges` of the cohort's source.

    Returns
    -------
    DataFrame, one row per planted range and side whose lab has that estimation target:
    label, sex, age_min, age_max, side, planted (the bound), threshold (``targets.json``'s
    median), n (labelled ECGs of the group), cut_low, cut_high (best cuts: (cut_low, cut_high]
    for low, [cut_low, cut_high) for high; of several equally good intervals, the one holding
    the planted bound when one does), agreement (the share of labels a best cut explains),
    agreement_planted, agreement_median (the share the planted bound, the median explains)
    and verdict: "planted" (the planted bound is a best cut and the median is not), "median"
    (the reverse), "both", "neither", or "no labels".
    """
    out_cols = ["label", "sex", "age_min", "age_max", "side", "planted", "threshold", "n", "cut_low", "cut_high",
                "agreement", "agreement_planted", "agreement_median", "verdict"]
    if planted.empty:
        return pd.DataFrame(columns=out_cols)
    spec = read_json(Path(cohort_dir) / layout.TARGETS)
    thresholds = {t["name"]: t["threshold"] for t in spec["targets"]}
    names = list(dict.fromkeys(n for r in planted.itertuples()
                               for n in (f"{lab_slug(r.label)}_{d}_est" for d in ("low", "high")) if n in thresholds))
    values = sorted({f"{lab_slug(n.rsplit('_', 2)[0])}_value_est" for n in names})
    frame = pd.read_parquet(Path(cohort_dir) / layout.COHORT, columns=["sex", "age"] + names + values)
    out = []
    for r in planted.itertuples(index=False):
        lab = lab_slug(r.label)
        for side, direction, bound in (("lower", "low", r.lower), ("upper", "high", r.upper)):
            name = f"{lab}_{direction}_est"
            if name not in thresholds:
                continue
            sel = (frame["sex"].eq(1.0 if r.sex == "M" else 0.0) & frame["age"].between(r.age_min, r.age_max)
                   & frame[name].notna() & frame[f"{lab}_value_est"].notna())
            v, y = frame.loc[sel, f"{lab}_value_est"].to_numpy(float), frame.loc[sel, name].to_numpy(float) == 1
            row = dict(label=r.label, sex=r.sex, age_min=r.age_min, age_max=r.age_max, side=side, planted=bound,
                       threshold=thresholds[name], n=int(sel.sum()), cut_low=np.nan, cut_high=np.nan,
                       agreement=np.nan, agreement_planted=np.nan, agreement_median=np.nan, verdict="no labels")
            if sel.any():
                edges = np.concatenate([[-np.inf], np.unique(v), [np.inf]])
                # low: every c in (edges[k], edges[k + 1]] flags the same ECGs; high: every c in [edges[k], edges[k + 1])
                cuts = edges[1:] if direction == "low" else edges[:-1]
                agree = np.array([np.sum(_flagged(v, c, direction) == y) for c in cuts])
                best = np.flatnonzero(agree == agree.max())
                n_planted = np.sum(_flagged(v, bound, direction) == y)
                n_median = np.sum(_flagged(v, thresholds[name], direction) == y)
                holds = [k for k in best if (edges[k] < bound <= edges[k + 1] if direction == "low"
                                             else edges[k] <= bound < edges[k + 1])]
                k = holds[0] if holds else best[0]
                row.update(cut_low=edges[k], cut_high=edges[k + 1], agreement=agree.max() / len(v),
                           agreement_planted=n_planted / len(v), agreement_median=n_median / len(v))
                row["verdict"] = {(True, False): "planted", (False, True): "median", (True, True): "both",
                                  (False, False): "neither"}[(n_planted == agree.max(), n_median == agree.max())]
            out.append(row)
    return pd.DataFrame(out, columns=out_cols)


# ---------------------------------------------------------------------------- values, not just flags (#25)

#: What fills the values section when the value model was not trained.
VALUE_FILL = ("`make book-full` (`labecg book --full`), or `labecg train --objective value --run-dir RUN-value` "
              "and `labecg evaluate --run-dir RUN-value --flag-run-dir RUN`")
#: The planted labs the value check expects the model to recover: planted strength at least this
#: (moderate and strong, :class:`labecg.planted.PlantedEffect`); weak links need a larger build.
VALUE_CHECK_STRENGTH = 2


def values_summary(values: pd.DataFrame | None, headline=(), n_labs: int = 4) -> dict:
    """The values section of the results chapter from a value run's ``values.csv``.

    Parameters
    ----------
    values : DataFrame or None
        :func:`labecg.evaluate.read_values` of the value run's evaluation; None when this build
        did not train it.
    headline : sequence of str
        The flag run's headline targets (``headline.csv``): their labs are the scatter's.
    n_labs : int
        Labs in the scatter when fewer headline labs have an estimation value.

    Returns
    -------
    dict with ``text`` (Markdown: the command that fills the section when ``values`` is None),
    ``mae`` (per value column: lab, task, unit, n, MAE, Spearman with its patient-level 95%
    interval), ``auroc`` (per flag target scored by a value: target, AUROC of the predicted
    value, of the flag model, value − flag with its paired interval), ``labs`` (the scatter's
    estimation value columns: the headline labs', then the best Spearman), ``median_difference``
    and ``n_difference_above``/``n_difference_below`` (paired intervals above/below 0; NaN and 0
    without a flag run).
    """
    if values is None:
        return {"text": f"Not run in this build: the value model; {VALUE_FILL} fills this section.",
                "mae": pd.DataFrame(), "auroc": pd.DataFrame(), "labs": [], "median_difference": float("nan"),
                "n_difference_above": 0, "n_difference_below": 0}
    mae = pd.DataFrame({"lab": values["lab"], "task": values["task"], "unit": values["unit"], "n": values["n"],
                        "MAE": values["mae"].round(3), "Spearman": values["spearman"].round(3),
                        "95% interval (patients)": [f"{lo:.3f} to {hi:.3f}" for lo, hi in
                                                    zip(values["low"], values["high"])]})
    rows = []
    for d in ("low", "high"):
        scored = values[values[f"{d}_target"] != ""]
        for _, r in scored.iterrows():
            rows.append({"target": r[f"{d}_target"], "AUROC, value": r[f"{d}_auroc_value"],
                         "AUROC, flag model": r[f"{d}_auroc_flag"], "value − flag": r[f"{d}_difference"],
                         "low": r[f"{d}_difference_low"], "high": r[f"{d}_difference_high"]})
    auroc = pd.DataFrame(rows, columns=["target", "AUROC, value", "AUROC, flag model", "value − flag", "low", "high"])
    auroc = auroc.sort_values("target", kind="stable").reset_index(drop=True).round(3)
    est = values[values["task"] == TASKS[0]]
    head_labs = list(dict.fromkeys(str(t).rsplit("_", 2)[0] for t in headline))
    labs = [n for lab in head_labs for n in est.loc[est["lab"] == lab, "name"]][:n_labs]
    for n in est.sort_values("spearman", ascending=False, kind="stable")["name"]:
        if len(labs) < n_labs and n not in labs:
            labs.append(n)
    diff = auroc["value − flag"].dropna()
    out = {"mae": mae, "auroc": auroc, "labs": labs,
           "median_difference": float(diff.median()) if len(diff) else float("nan"),
           "n_difference_above": int((auroc["low"] > 0).sum()), "n_difference_below": int((auroc["high"] < 0).sum())}
    text = (f"The value model predicts {len(values)} value columns of {values['lab'].nunique()} labs; the median "
            f"Spearman correlation of predicted with measured values is {values['spearman'].median():.3f} "
            f"(estimation: {est['spearman'].median():.3f}).")
    if len(auroc) and len(diff):
        text += (f" Used as the score of the {len(auroc)} flag targets of the same labs and tasks, the predicted "
                 f"value's AUROC minus the flag model's has a median of {out['median_difference']:+.3f}; "
                 f"{out['n_difference_above']} paired 95% intervals lie above 0 and {out['n_difference_below']} "
                 f"below (not corrected for multiplicity).")
    elif len(auroc):
        text += (f" Used as the score of the {len(auroc)} flag targets of the same labs and tasks, the predicted "
                 f"values reach a median AUROC of {auroc['AUROC, value'].median():.3f}; no flag run was given to "
                 f"compare with.")
    out["text"] = text
    return out


def value_check(values: pd.DataFrame | None, planted: pd.DataFrame) -> dict:
    """Does the value model recover the planted labs' values, and leave the null labs at 0?

    Estimation values only. A planted lab (planted strength at least
    :data:`VALUE_CHECK_STRENGTH`) is "recovered" when its Spearman lies above the nulls'
    interval: the highest upper bound of the null labs' patient-level 95% intervals. A null lab
    (:func:`labecg.planted.ecg_null_labs`, strength 0) is "near 0" when its interval contains 0.

    Parameters
    ----------
    values : DataFrame or None
        :func:`labecg.evaluate.read_values` of the value run (None: not trained).
    planted : DataFrame
        :func:`read_planted_effects` (empty for real data).

    Returns
    -------
    dict with ``table`` (lab, role, strength, spearman, low, high, verdict), ``text`` (the
    verdict in words), ``median_spearman_planted``, ``median_spearman_null``, ``null_high`` (the
    nulls' highest upper bound), ``n_recovered``, ``n_planted``, ``n_null_near_0``, ``n_null``.
    """
    from labecg.planted import ecg_null_labs

    empty = {"table": pd.DataFrame(columns=["lab", "role", "strength", "spearman", "low", "high", "verdict"]),
             "median_spearman_planted": float("nan"), "median_spearman_null": float("nan"),
             "null_high": float("nan"), "n_recovered": 0, "n_planted": 0, "n_null_near_0": 0, "n_null": 0}
    if values is None:
        return {**empty, "text": f"Not run in this build: the value model; {VALUE_FILL} runs this check."}
    if planted.empty:
        return {**empty, "text": "No planted effects: the data source is not synthetic."}
    strength = {lab_slug(label): int(s) for label, s in zip(planted["label"], planted["strength"])}
    nulls = {lab_slug(label) for label in ecg_null_labs()}
    est = values[values["task"] == TASKS[0]]
    role = est["lab"].map(lambda lab: "planted" if strength.get(lab, 0) >= VALUE_CHECK_STRENGTH
                          else "null" if lab in nulls else "")
    table = est.assign(role=role, strength=est["lab"].map(strength))[role != ""]
    null, kept = table[table["role"] == "null"], table[table["role"] == "planted"]
    null_high = float(null["high"].max()) if len(null) else float("nan")
    verdict = np.where(table["role"] == "planted",
                       np.where(table["spearman"] > null_high, "recovered", "not above the nulls"),
                       np.where((table["low"] <= 0) & (table["high"] >= 0), "near 0", "unexpected signal"))
    table = table.assign(verdict=verdict)[["lab", "role", "strength", "spearman", "low", "high", "verdict"]]
    table = table.sort_values(["role", "spearman"], ascending=[False, False], kind="stable").reset_index(drop=True)
    out = {"table": table.round({"spearman": 3, "low": 3, "high": 3}),
           "median_spearman_planted": float(kept["spearman"].median()) if len(kept) else float("nan"),
           "median_spearman_null": float(null["spearman"].median()) if len(null) else float("nan"),
           "null_high": null_high, "n_recovered": int((table["verdict"] == "recovered").sum()),
           "n_planted": len(kept), "n_null_near_0": int((table["verdict"] == "near 0").sum()), "n_null": len(null)}
    if not len(null) or not len(kept):
        out["text"] = (f"The value model kept {len(kept)} planted and {len(null)} null labs with estimation values; "
                       f"the check needs both.")
        return out
    recovered = out["n_recovered"] == out["n_planted"] and out["n_null_near_0"] == out["n_null"]
    out["text"] = (f"{'The value model recovers the planted relations' if recovered else 'The value model does not fully recover the planted relations'}: "
                   f"{out['n_recovered']} of {out['n_planted']} planted labs (strength {VALUE_CHECK_STRENGTH} or more) "
                   f"have an estimation Spearman above every null lab's interval (above {null_high:.3f}; median "
                   f"{out['median_spearman_planted']:.3f}), and {out['n_null_near_0']} of {out['n_null']} null labs' "
                   f"intervals contain 0 (median Spearman {out['median_spearman_null']:.3f}).")
    return out
