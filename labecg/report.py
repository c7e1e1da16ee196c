"""Figures of the results chapter, as pure functions of the results frame.

The paper's tables are in :mod:`labecg.tables`. Figures (each returns a :class:`matplotlib.figure.Figure`, never calls ``show``):
:func:`plot_forest` (AUROC with 95% intervals per task, grouped by category),
:func:`plot_horizon_heatmap` (AUROC of each abnormality across est/30/60/120 min.),
:func:`plot_roc_curves` (ROC curves of the best targets), :func:`plot_label_prevalence`
(positive fraction per target from ``targets.json`` counts), :func:`plot_intervals`
(ECG-level beside patient-level intervals), :func:`plot_reliability` (reliability
curves), :func:`plot_subgroups` (AUROC by sex, age band, race), :func:`plot_attribution`
(attribution heat strips over the median beat).

``results`` is the frame of :func:`labecg.evaluate.read_results` (``RUN/evaluation/results.csv``):
indexed by target, one row per target plus ``macro``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: papermill kernels and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from labecg import catalog, paper  # noqa: E402
from labecg.metrics import auroc  # noqa: E402
from labecg.tables import (TASK_TITLES, VARIABLE_TITLES, format_auroc, format_threshold, row_label,  # noqa: E402
                           target_label, target_rows)
from labecg.util import TASKS  # noqa: E402

__all__ = ["plot_forest", "plot_horizon_heatmap", "plot_roc_curves", "plot_label_prevalence", "plot_intervals", "plot_reliability", "plot_subgroups", "plot_attribution"]

_CATEGORY_ORDER = ["Ca.", "Re./Ca.", "Re.", "He.", "Me.", "Im.", "Co.", "–"]
_ROW_IN = 0.19  # figure height per target row, inches: readable from ~20 to ~140 rows


def _category_rank(category: str) -> int:
    return _CATEGORY_ORDER.index(category) if category in _CATEGORY_ORDER else len(_CATEGORY_ORDER)


def _abnormality_order(frame: pd.DataFrame) -> list[str]:
    """Row labels grouped by category (paper's order), best mean AUROC first within a group."""
    summary = (frame.groupby("row_label", sort=False)
               .agg(category=("category", "first"), auroc=("auroc", "mean"))
               .reset_index())
    summary["rank"] = summary["category"].map(_category_rank)
    summary = summary.sort_values(["rank", "category", "auroc"], ascending=[True, True, False],
                                  kind="stable")
    return list(summary["row_label"])


def plot_forest(results: pd.DataFrame, tasks=TASKS, auroc_threshold: float = 0.7):
    """Forest plot: AUROC with its 95% interval for each abnormality, one panel per task.

    Rows are abnormalities (lab and direction), grouped by physiological category (label on
    the right, thin rules between groups), best first within a group; filled markers are
    significant above ``auroc_threshold`` (dotted line), open ones are not.

    Returns
    -------
    matplotlib.figure.Figure
    """
    frame = target_rows(results)
    tasks = [t for t in tasks if (frame["task"] == t).any()]
    if not tasks:
        raise ValueError(f"results have no targets of tasks {list(TASKS)}")
    order = _abnormality_order(frame[frame["task"].isin(tasks)])
    ypos = {label: i for i, label in enumerate(order)}
    height = max(3.0, 1.2 + _ROW_IN * len(order))
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks) + 2.4, height),
                             sharey=True, squeeze=False)
    categories = frame.drop_duplicates("row_label").set_index("row_label")["category"]
    for ax, task in zip(axes[0], tasks):
        sub = frame[frame["task"] == task]
        y = sub["row_label"].map(ypos).to_numpy()
        sig = (sub["low"] > auroc_threshold).fillna(False).to_numpy()
        err = np.vstack([sub["auroc"] - sub["low"], sub["high"] - sub["auroc"]]).clip(min=0)
        ax.errorbar(sub["auroc"], y, xerr=err, fmt="none", ecolor="0.4", elinewidth=0.9)
        ax.scatter(sub["auroc"][sig], y[sig], s=14, color="C0", zorder=3, label="significant")
        ax.scatter(sub["auroc"][~sig], y[~sig], s=14, facecolor="white", edgecolor="C0", zorder=3,
                   label="not significant")
        ax.axvline(auroc_threshold, color="C3", ls=":", lw=1)
        ax.axvline(0.5, color="0.7", lw=0.8)
        ax.set_title(TASK_TITLES.get(task, task))
        ax.set_xlabel("AUROC")
        ax.grid(axis="x", alpha=0.3)
        previous = None
        for label in order:
            if previous is not None and categories[label] != previous:
                ax.axhline(ypos[label] - 0.5, color="0.85", lw=0.8)
            previous = categories[label]
    ax0 = axes[0][0]
    ax0.set_yticks(range(len(order)), order, fontsize=8 if len(order) > 40 else 9)
    ax0.set_ylim(len(order) - 0.5, -0.5)
    last = axes[0][-1]
    for category in dict.fromkeys(categories[order]):
        rows = [ypos[l] for l in order if categories[l] == category]
        last.annotate(f"[{category}]", xy=(1.02, np.mean(rows)), xycoords=("axes fraction", "data"),
                      va="center", fontsize=8, color="0.3", annotation_clip=False)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1))
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=8, frameon=False)
    return fig


def plot_horizon_heatmap(results: pd.DataFrame, auroc_threshold: float = 0.7, annotate: bool | None = None):
    """Heatmap of AUROC, abnormalities x (estimation, 30, 60, 120 min.).

    Rows grouped by category, best first; cells of targets not significant above
    ``auroc_threshold`` are hatched; blank where a task has no such target. A task without
    any target has no column; the figure names it below the grid. Values are printed in
    the cells when ``annotate`` (default: up to 60 rows).

    Returns
    -------
    matplotlib.figure.Figure
    """
    frame = target_rows(results)
    order = _abnormality_order(frame)
    tasks = [t for t in TASKS if (frame["task"] == t).any()]
    missing = [TASK_TITLES[t] for t in TASKS if t not in tasks]
    grid = (frame.pivot_table(index="row_label", columns="task", values="auroc", aggfunc="first")
            .reindex(index=order, columns=tasks))
    low = (frame.pivot_table(index="row_label", columns="task", values="low", aggfunc="first")
           .reindex(index=order, columns=tasks))
    annotate = len(order) <= 60 if annotate is None else annotate
    fig, ax = plt.subplots(figsize=(5.5, max(3.0, 1.2 + _ROW_IN * len(order))))
    values = grid.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    vmin = min(0.5, finite.min()) if finite.size else 0.5
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis", vmin=vmin,
                   vmax=max(0.9, finite.max()) if finite.size else 1.0, interpolation="nearest")
    not_sig = np.isfinite(values) & ~(low.to_numpy(dtype=float) > auroc_threshold)
    for i, j in zip(*np.nonzero(not_sig)):
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                   edgecolor="white", lw=0))
    if annotate:
        for i, j in zip(*np.nonzero(np.isfinite(values))):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] < (vmin + 0.9) / 2 + 0.1 else "black")
    ax.set_xticks(range(len(tasks)), [TASK_TITLES[t] for t in tasks])
    ax.set_yticks(range(len(order)), order, fontsize=8 if len(order) > 40 else 9)
    ax.xaxis.tick_top()
    if missing:
        ax.set_xlabel(f"no target at: {', '.join(missing)}")
    fig.colorbar(im, ax=ax, label="AUROC", shrink=0.6)
    fig.tight_layout()
    return fig


def plot_roc_curves(y_true, y_score, target_names, results: pd.DataFrame | None = None,
                    top: int = 6, task: str | None = "est"):
    """ROC curves of the ``top`` targets with the highest AUROC.

    Parameters
    ----------
    y_true, y_score : array-like of shape (n_ecgs, n_targets)
        As in ``predictions_<split>.npz`` (NaN in ``y_true`` = missing).
    target_names : sequence of str of length n_targets
    results : DataFrame, optional
        Chooses the targets and labels the curves (paper name, threshold, AUROC and
        interval); without it the targets are ranked by their AUROC here.
    top : int
        Number of curves.
    task : str or None
        Only targets of this task (needs ``results``); None for all.

    Returns
    -------
    matplotlib.figure.Figure
    """
    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    names = [str(n) for n in target_names]
    column = {n: i for i, n in enumerate(names)}
    if results is not None:
        frame = target_rows(results)
        frame = frame[frame.index.isin(names)]
        if task is not None:
            frame = frame[frame["task"] == task]
        chosen = list(frame["auroc"].dropna().sort_values(ascending=False).index[:top])
        labels = {t: f"{catalog.paper_name(frame.at[t, 'label'])} "
                     f"{format_threshold(frame.at[t, 'direction'], frame.at[t, 'threshold'], frame.at[t, 'unit'])}: "
                     f"{format_auroc(frame.at[t, 'auroc'], frame.at[t, 'low'], frame.at[t, 'high'])}"
                  for t in chosen}
    else:
        scores = auroc(y_true, y_score)
        ranked = [names[i] for i in np.argsort(-np.nan_to_num(scores, nan=-1.0))]
        chosen = [t for t in ranked if np.isfinite(scores[column[t]])][:top]
        labels = {t: f"{t}: {scores[column[t]]:.3f}" for t in chosen}
    fig, ax = plt.subplots(figsize=(6.0, 5.5))
    for t in chosen:
        i = column[t]
        m = ~np.isnan(y_true[:, i])
        fpr, tpr, _ = roc_curve(y_true[m, i], y_score[m, i])
        ax.plot(fpr, tpr, lw=1.4, label=labels[t])
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def plot_label_prevalence(targets: dict, split: str = "test"):
    """Positive fraction of each target in ``split``, one panel per task.

    Parameters
    ----------
    targets : dict
        The content of ``targets.json`` (ARCHITECTURE.md section 2).
    split : {"train", "val", "test"}
        Which counts to show.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows = []
    for t in targets.get("targets", []):
        counts = t.get("counts", {}).get(split)
        if counts is None:
            raise KeyError(f"targets.json: target {t.get('name')!r} has no counts for split {split!r}")
        total = counts["pos"] + counts["neg"]
        rows.append({"task": t["task"], "category": t.get("category") or "–",
                     "row_label": row_label(t["label"], t["direction"], t.get("threshold", np.nan),
                                             t.get("unit")),
                     "prevalence": counts["pos"] / total if total else np.nan, "n": total})
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise ValueError("targets.json lists no targets")
    frame["auroc"] = frame["prevalence"]  # _abnormality_order ranks by this column
    order = _abnormality_order(frame)
    tasks = [t for t in TASKS if (frame["task"] == t).any()]
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.4 * len(tasks) + 2.4,
                                                     max(3.0, 1.2 + _ROW_IN * len(order))),
                             sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = frame[frame["task"] == task].set_index("row_label").reindex(order)
        ax.barh(range(len(order)), sub["prevalence"].to_numpy(dtype=float), color="C0", height=0.7)
        ax.set_title(f"{TASK_TITLES[task]} ({split})")
        ax.set_xlabel("positive fraction")
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(order)), order, fontsize=8 if len(order) > 40 else 9)
    axes[0][0].set_ylim(len(order) - 0.5, -0.5)
    fig.tight_layout()
    return fig


def plot_intervals(results: pd.DataFrame, task: str = "est"):
    """ECG-level (the paper's) and patient-level 95% intervals side by side for every target of ``task``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    frame = target_rows(results)
    frame = frame[frame["task"] == task].sort_values("auroc", ascending=False, kind="stable")
    if frame.empty:
        raise ValueError(f"results have no targets of task {task!r}")
    y = np.arange(len(frame))
    fig, ax = plt.subplots(figsize=(7.0, max(3.0, 1.2 + _ROW_IN * len(frame))))
    for offset, (lo, hi, name, color) in zip((-0.18, 0.18), (("low", "high", "ECG-level (paper)", "C0"),
                                                             ("low_patient", "high_patient", "patient-level", "C1"))):
        ax.hlines(y + offset, frame[lo], frame[hi], color=color, lw=1.6, label=name)
    ax.scatter(frame["auroc"], y, s=10, color="k", zorder=3, label="AUROC")
    ax.axvline(0.5, color="0.6", lw=0.8)
    ax.axvline(0.7, color="C3", ls=":", lw=1)
    ax.set_yticks(y, frame["row_label"], fontsize=8 if len(frame) > 40 else 9)
    ax.set_ylim(len(frame) - 0.5, -0.5)
    ax.set_xlabel("AUROC with 95% bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_reliability(reliability: pd.DataFrame, results: pd.DataFrame, targets):
    """Reliability curves: observed fraction of positives against mean predicted probability, per bin.

    Parameters
    ----------
    reliability : DataFrame
        ``RUN/evaluation/reliability.csv`` (:func:`labecg.evaluate.reliability_frame`).
    results : DataFrame
        ``results.csv``, for the labels and the Brier score.
    targets : sequence of str
        One panel each (the headline targets).

    Returns
    -------
    matplotlib.figure.Figure
    """
    targets = list(targets)
    if not targets:
        raise ValueError("no targets to plot")
    fig, axes = plt.subplots(1, len(targets), figsize=(3.0 * len(targets), 3.3), squeeze=False)
    for ax, target in zip(axes[0], targets):
        curve = reliability[reliability["target"] == target]
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
        ax.plot(curve["mean_predicted"], curve["fraction_positive"], "o-", color="C0", ms=3.5, lw=1.2)
        for r in curve.itertuples():
            ax.annotate(str(int(r.n)), (r.mean_predicted, r.fraction_positive), fontsize=6, color="0.4",
                        xytext=(2, -8), textcoords="offset points")
        ax.set_title(f"{target_label(results, target)}\nBrier {results.loc[target, 'brier']:.3f}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("mean predicted probability")
    axes[0][0].set_ylabel("fraction positive")
    fig.tight_layout()
    return fig


def plot_subgroups(subgroups: pd.DataFrame, results: pd.DataFrame):
    """AUROC with 95% interval per subgroup (sex, age band, race), one panel per target.

    Returns
    -------
    matplotlib.figure.Figure
    """
    targets = list(dict.fromkeys(subgroups["target"]))
    if not targets:
        raise ValueError("subgroups: no rows")
    first = subgroups[subgroups["target"] == targets[0]]
    labels = [f"{VARIABLE_TITLES.get(v, v)}: {s}" if v != "all" else "All" for v, s in
              zip(first["variable"], first["subgroup"])]
    fig, axes = plt.subplots(1, len(targets), figsize=(2.8 * len(targets) + 1.6, 0.9 + 0.26 * len(labels)),
                             sharey=True, squeeze=False)
    for ax, target in zip(axes[0], targets):
        sub = subgroups[subgroups["target"] == target].reset_index(drop=True)
        y = np.arange(len(sub))
        err = np.vstack([sub["auroc"] - sub["low"], sub["high"] - sub["auroc"]]).clip(min=0)
        ax.errorbar(sub["auroc"], y, xerr=np.nan_to_num(err), fmt="o", ms=3.5, color="C0", ecolor="0.4", lw=1)
        overall = sub.loc[sub["variable"] == "all", "auroc"]
        if len(overall):
            ax.axvline(float(overall.iloc[0]), color="C0", lw=0.8, alpha=0.5)
        ax.axvline(0.5, color="0.6", lw=0.8)
        ax.set_title(target_label(results, target), fontsize=8)
        ax.set_xlabel("AUROC")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0][0].set_ylim(len(labels) - 0.5, -0.5)
    fig.tight_layout()
    return fig


def plot_attribution(attribution: dict, windows_frame: pd.DataFrame | None = None):
    """Where in the beat the model looks: per target, a heat strip per lead over the median beat.

    Parameters
    ----------
    attribution : dict or None
        ``RUN/evaluation/attribution.npz`` as read by :func:`labecg.explain.read_attribution`
        (None: a figure saying there is none):
        ``targets`` (K,), ``leads`` (C,), ``time_s`` (W,), ``attribution`` (K, W, C) mean
        absolute attribution over beats, ``median_beat_mv`` (W, C).
    windows_frame : DataFrame, optional
        ``attribution_windows.csv``; a planted target's own window is outlined.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per target; leads top to bottom; colour: attribution scaled to the
        target's maximum; black: the median beat of the explained ECGs.
    """
    if attribution is None:
        fig, ax = plt.subplots(figsize=(6.0, 1.2))
        ax.text(0.5, 0.5, "No attribution for this run: run `labecg explain --run-dir RUN`.", ha="center", va="center")
        ax.set_axis_off()
        return fig
    targets = [str(t) for t in attribution["targets"]]
    leads = [str(l) for l in attribution["leads"]]
    time_s = np.asarray(attribution["time_s"], dtype=float)
    attr = np.asarray(attribution["attribution"], dtype=float)  # (K, W, C)
    beat = np.asarray(attribution["median_beat_mv"], dtype=float)  # (W, C)
    scale = max(float(np.nanmax(np.abs(beat - np.median(beat, axis=0)))), 1e-6)
    own = {}
    if windows_frame is not None and len(windows_frame):
        rows = windows_frame[windows_frame["planted_window"].astype(bool)]
        own = {r.target: (r.start_s, r.end_s, r.window) for r in rows.itertuples()}
    dt = time_s[1] - time_s[0] if time_s.size > 1 else 0.01
    fig, axes = plt.subplots(1, len(targets), figsize=(2.3 * len(targets) + 0.6, 6.2), sharey=True, squeeze=False)
    for ax, j in zip(axes[0], range(len(targets))):
        a = attr[j] / max(float(attr[j].max()), 1e-12)  # (W, C)
        ax.imshow(a.T, extent=(time_s[0] - dt / 2, time_s[-1] + dt / 2, len(leads) - 0.5, -0.5),
                  aspect="auto", cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
        for c in range(len(leads)):
            ax.plot(time_s, c - 0.45 * (beat[:, c] - np.median(beat[:, c])) / scale, color="k", lw=0.6)
        if targets[j] in own:
            start, end, name = own[targets[j]]
            ax.axvspan(start, end, fill=False, edgecolor="C0", lw=1.2, ls="--")
            ax.text(start, -0.9, name, fontsize=7, color="C0")
        ax.axvline(0.0, color="0.5", lw=0.5, ls=":")
        ax.set_title(targets[j].replace("_", " "), fontsize=8)
        ax.set_xlabel("s from R peak")
    axes[0][0].set_yticks(range(len(leads)), leads, fontsize=8)
    axes[0][0].set_ylim(len(leads) - 0.5, -1.2)
    fig.tight_layout()
    return fig
