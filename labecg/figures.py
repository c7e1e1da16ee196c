"""Every figure of the book, as pure functions of the stages' outputs.

Pipeline chapters: :func:`plot_task_timeline` (the paper's Figure 1 B and C),
:func:`plot_label_prevalence` (positive fraction per target from ``targets.json``),
:func:`plot_ecg_12lead` and :func:`plot_cohort_ecg` (the clinical 12-lead layout),
:func:`plot_filter_response` (the resampling filter's measured gain),
:func:`plot_lead_before_after` (one lead as recorded and as stored),
:func:`plot_s4_kernels` (an S4 layer's kernels: what bidirectional means),
:func:`plot_training_curves`.

Results chapter (``results`` is the frame of :func:`labecg.evaluate.read_results`,
``RUN/evaluation/results.csv``: indexed by target, one row per target plus ``macro``):
:func:`plot_forest` (AUROC with 95% intervals per task, grouped by category),
:func:`plot_horizon_heatmap` (AUROC of each abnormality across est/30/60/120 min.),
:func:`plot_roc_curves` (ROC curves of the best targets), :func:`plot_intervals`
(ECG-level beside patient-level intervals), :func:`plot_reliability` (reliability
curves), :func:`plot_subgroups` (AUROC by sex, age band, race), :func:`plot_attribution`
(attribution heat strips over the median beat).

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``show``; the
notebooks glue the figure (``glue(name, fig)``: shown in Jupyter, placed by the pages). The
paper's tables are :mod:`labecg.tables`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from labecg import catalog
from labecg.metrics import auroc
from labecg.signals import LEADS, load_signals  # LEADS: the stored order
from labecg.tables import (TASK_TITLES, VARIABLE_TITLES, format_auroc, format_threshold, row_label,
                           target_label, target_rows)
from labecg.util import HORIZONS_MIN, TASKS, read_json

__all__ = ["plot_task_timeline", "plot_label_prevalence", "plot_ecg_12lead", "plot_cohort_ecg",
           "plot_filter_response", "plot_lead_before_after", "plot_s4_kernels", "plot_training_curves",
           "plot_forest", "plot_horizon_heatmap", "plot_roc_curves", "plot_intervals", "plot_reliability",
           "plot_subgroups", "plot_attribution"]


# ---------------------------------------------------------------------------- pipeline chapters

# The usual printout: columns of 2.5 s, limb leads left, chest leads right.
_GRID_LAYOUT = (("I", "aVR", "V1", "V4"),
                ("II", "aVL", "V2", "V5"),
                ("III", "aVF", "V3", "V6"))
_PAPER_PINK = "#f4c7c3"
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


def _draw_paper(ax, t0_s: float, t1_s: float, lo_mv: float, hi_mv: float) -> None:
    """ECG paper at 25 mm/s and 10 mm/mV: 1 mm = 0.04 s = 0.1 mV, bold every 5 mm."""
    for t in np.arange(t0_s, t1_s + 1e-9, 0.04):
        bold = abs(t / 0.2 - round(t / 0.2)) < 1e-6
        ax.axvline(t, color=_PAPER_PINK, lw=0.8 if bold else 0.25, zorder=0)
    for v in np.arange(np.floor(lo_mv * 10) / 10, hi_mv + 1e-9, 0.1):
        bold = abs(v / 0.5 - round(v / 0.5)) < 1e-6
        ax.axhline(v, color=_PAPER_PINK, lw=0.8 if bold else 0.25, zorder=0)


def plot_ecg_12lead(signal_mv, fs_hz: float = 100.0, leads=LEADS, title: str | None = None,
                    rhythm_lead: str = "II", row_height_mv: float = 3.0):
    """Draw one ECG as a clinical printout: 3 x 4 grid of 2.5 s columns and a rhythm strip.

    Parameters
    ----------
    signal_mv : array-like of shape (n_samples, n_leads)
        Millivolts; ``n_samples / fs_hz`` seconds (10 s for MIMIC-IV-ECG).
    fs_hz : float
        Sampling rate of ``signal_mv``.
    leads : sequence of str of length n_leads
        Lead name of each column of ``signal_mv``; must include the twelve standard leads.
    title : str, optional
    rhythm_lead : str
        Lead drawn over the full record below the grid.
    row_height_mv : float
        Vertical space per row; each row is centred on its lead's median.

    Returns
    -------
    matplotlib.figure.Figure
        Time on x in seconds (0.2 s bold grid = 5 mm at 25 mm/s), millivolts on y
        (0.5 mV bold grid = 5 mm at 10 mm/mV), equal physical scale on both axes.
    """
    x = np.asarray(signal_mv, dtype=np.float64)
    leads = list(leads)
    if x.ndim != 2 or x.shape[1] != len(leads):
        raise ValueError(f"signal_mv must have shape (n_samples, {len(leads)}); got {x.shape}")
    missing = sorted({l for row in _GRID_LAYOUT for l in row} - set(leads))
    if missing:
        raise ValueError(f"leads {missing} missing; got {leads}")
    if rhythm_lead not in leads:
        raise ValueError(f"rhythm_lead {rhythm_lead!r} not in {leads}")
    n = x.shape[0]
    duration_s = n / fs_hz
    col_s = duration_s / 4
    x = np.nan_to_num(x - np.nanmedian(x, axis=0, keepdims=True))
    t = np.arange(n) / fs_hz

    n_rows = len(_GRID_LAYOUT) + 1
    lo, hi = -(n_rows - 0.5) * row_height_mv, 0.5 * row_height_mv
    # 25 mm/s and 10 mm/mV: one second is 2.5 cm wide, one millivolt 1 cm tall.
    width_in, height_in = duration_s * 2.5 / 2.54, (hi - lo) * 1.0 / 2.54
    fig, ax = plt.subplots(figsize=(width_in, height_in))
    _draw_paper(ax, 0.0, duration_s, lo, hi)
    for r, row in enumerate(_GRID_LAYOUT):
        base = -r * row_height_mv
        for c, lead in enumerate(row):
            sl = slice(int(round(c * col_s * fs_hz)), int(round((c + 1) * col_s * fs_hz)))
            ax.plot(t[sl], base + x[sl, leads.index(lead)], color="black", lw=0.7)
            ax.text(c * col_s + 0.05, base + 0.35 * row_height_mv, lead, fontsize=9)
            if c:
                ax.plot([c * col_s] * 2, [base - 0.3, base + 0.3], color="black", lw=0.8)
    base = -len(_GRID_LAYOUT) * row_height_mv
    ax.plot(t, base + x[:, leads.index(rhythm_lead)], color="black", lw=0.7)
    ax.text(0.05, base + 0.35 * row_height_mv, rhythm_lead, fontsize=9)
    ax.set_xlim(0, duration_s)
    ax.set_ylim(lo, hi)
    ax.set_aspect(0.4)  # 1 s (25 mm) vs 1 mV (10 mm)
    ax.set_xlabel("time (s); grid 0.04 s / 0.1 mV, bold 0.2 s / 0.5 mV (25 mm/s, 10 mm/mV)")
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_task_timeline(horizons_min=HORIZONS_MIN, vitals_window_min: float = 30,
                       estimation_window_min: float = 60):
    """The paper's Figure 1 B and C as two timelines around the ECG at t = 0.

    Parameters
    ----------
    horizons_min : sequence of int
        Monitoring horizons; labs in [ecg_time, ecg_time + h], both ends included.
    vitals_window_min : float
        Inputs: the closest vital sign within +/- this many minutes of the ECG.
    estimation_window_min : float
        Estimation target: the lab closest to the ECG within +/- this many minutes.

    Returns
    -------
    matplotlib.figure.Figure
    """
    h_max = max(horizons_min)
    fig, axes = plt.subplots(2, 1, figsize=(8, 3.6), sharex=True)
    for ax, task in zip(axes, ("estimation", "monitoring")):
        ax.axvline(0, color="black", lw=2)
        ax.text(0, 1.02, "ECG", ha="center", va="bottom", fontsize=9,
                transform=ax.get_xaxis_transform())
        ax.barh(0.25, 2 * vitals_window_min, left=-vitals_window_min, height=0.3,
                color="#9ecae1", label=f"vital signs: closest within ±{vitals_window_min:g} min")
        if task == "estimation":
            ax.barh(0.7, 2 * estimation_window_min, left=-estimation_window_min, height=0.3,
                    color="#fdae6b", label=f"target: closest lab within ±{estimation_window_min:g} min")
        else:
            for i, h in enumerate(sorted(horizons_min, reverse=True)):
                ax.barh(0.7, h, left=0, height=0.3, color=plt.cm.Oranges(0.35 + 0.2 * i),
                        label=f"target: any abnormal lab in [0, {h}] min" if i == 0 else None)
                ax.text(h, 0.7, f" {h}", va="center", fontsize=8)
        ax.set_yticks([])
        ax.set_ylim(0, 1)
        ax.set_title(f"{task.capitalize()} task", fontsize=10, loc="left")
        ax.legend(loc="upper left", fontsize=7, frameon=False, bbox_to_anchor=(1.0, 1.0))
    axes[-1].set_xlim(-estimation_window_min - 10, h_max + 15)
    axes[-1].set_xlabel("minutes relative to the ECG")
    fig.tight_layout()
    return fig


def plot_training_curves(run_dirs):
    """Loss and validation macro AUROC per epoch, from each run's ``metrics.csv``.

    Parameters
    ----------
    run_dirs : dict of str to path-like
        Legend label -> run folder holding ``metrics.csv`` (columns epoch, train_loss,
        val_loss, val_macro_auroc).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, run in run_dirs.items():
        path = Path(run) / "metrics.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; expected the run's per-epoch metrics")
        m = pd.read_csv(path)
        need = {"epoch", "train_loss", "val_loss", "val_macro_auroc"}
        if not need <= set(m.columns):
            raise KeyError(f"{path}: missing columns {sorted(need - set(m.columns))}")
        ep = m["epoch"].to_numpy() + 1
        (line,) = ax_loss.plot(ep, m["train_loss"], marker="o", label=f"{label} train")
        ax_loss.plot(ep, m["val_loss"], marker="o", ls="--", color=line.get_color(),
                     label=f"{label} validation")
        ax_auc.plot(ep, m["val_macro_auroc"], marker="o", color=line.get_color(), label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=7)
    ax_auc.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylabel("validation macro AUROC")
    ax_auc.legend(fontsize=7)
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


def plot_cohort_ecg(cohort_dir, index: int = 0):
    """The ``index``-th successfully converted ECG of a cohort, in the clinical layout.

    No identifier is printed: the title names only the position among converted records.

    Parameters
    ----------
    cohort_dir : path-like
        Folder with ``signals.npy``, ``signals.json`` and ``signals_manifest.parquet``.
    index : int
        Position among the rows whose manifest status is ``ok``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    cohort_dir = Path(cohort_dir)
    x, leads = load_signals(cohort_dir)
    meta = read_json(cohort_dir / "signals.json")
    m = pd.read_parquet(cohort_dir / "signals_manifest.parquet", columns=["row", "status"])
    ok_rows = np.sort(m.loc[m["status"] == "ok", "row"].to_numpy())
    if not 0 <= index < len(ok_rows):
        raise IndexError(f"{cohort_dir}: index {index} out of range; {len(ok_rows)} records converted")
    row = int(ok_rows[index])
    return plot_ecg_12lead(np.asarray(x[row], dtype=np.float32), fs_hz=float(meta["fs_hz"]), leads=leads,
                           title=f"Converted ECG no. {index + 1} of the cohort ({meta['fs_hz']:g} Hz)")


def plot_filter_response(response: pd.DataFrame, fs_out_hz: float = 100.0, mains_hz: float = 60.0):
    """Gain of the resampling filter against frequency (:func:`labecg.signals.filter_response`).

    Shaded: frequencies at or above the output's Nyquist rate (``fs_out_hz / 2``), which
    the stored record cannot represent; dotted: mains hum at ``mains_hz``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    freqs = response.index.to_numpy(dtype=float)
    nyquist = fs_out_hz / 2
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.axvspan(nyquist, freqs.max(), color="0.9", zorder=0)
    ax.plot(freqs, response["gain_db"], lw=1.2)
    ax.axvline(nyquist, color="k", ls="--", lw=0.8)
    ax.text(nyquist, 3, f" {nyquist:g} Hz: Nyquist rate of {fs_out_hz:g} Hz", fontsize=8, va="bottom")
    ax.axvline(mains_hz, color="C3", lw=0.8, ls=":")
    ax.set_xlabel("frequency of a sine in the record (Hz)")
    ax.set_ylabel("gain (dB)")
    ax.set_xlim(0, freqs.max())
    ax.set_ylim(-100, 10)
    fig.tight_layout()
    return fig


def plot_lead_before_after(pair: dict, seconds: float = 2.5):
    """One lead as recorded and as stored (:func:`labecg.signals.lead_before_after`), first ``seconds``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = plt.subplots(figsize=(8, 2.8))
    for key, fs_key, style, color, what in (("raw_mv", "raw_fs_hz", "-", "0.55", "as recorded"),
                                            ("stored_mv", "fs_hz", "o-", "C0", "as stored")):
        n = int(round(seconds * pair[fs_key]))
        ax.plot(np.arange(n) / pair[fs_key], pair[key][:n], style, ms=2.5, lw=0.8, color=color,
                label=f"{what} ({pair[fs_key]:g} Hz)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"lead {pair['lead']} (mV)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_s4_kernels(layer, channels=(0, 1, 2, 3), fs_hz: float = 100.0, n_samples: int = 250):
    """The kernels of a few channels of an S4 layer, on one axis of input time relative to output.

    The two-sided kernel (:func:`labecg.s4.two_sided_kernel`) weighs the input sample at
    lag d before the output; drawn against -d / fs_hz, the past is on the left (forward
    kernel) and the future on the right (backward kernel: zero for a causal layer). The
    skip term D at lag 0 is printed, not drawn (it would dwarf the kernels).

    Parameters
    ----------
    layer : labecg.s4.S4Layer
    channels : sequence of int
        Channels h < H, one panel each.
    fs_hz : float
        Sampling rate of the layer's input, for the time axis.
    n_samples : int
        Kernel length L (the model's window: 250 samples).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import torch

    from labecg.s4 import two_sided_kernel

    with torch.no_grad():
        k2 = two_sided_kernel(layer.kernel(n_samples)).cpu().numpy()  # (H, 2L-1): [L-1+d] lag d
        D = layer.D.cpu().numpy()  # (H,)
    t_s = -(np.arange(k2.shape[1]) - (n_samples - 1)) / fs_hz  # input time minus output time
    fig, axes = plt.subplots(len(channels), 1, figsize=(8, 1.5 * len(channels) + 0.6), sharex=True, squeeze=False)
    for ax, h in zip(axes[:, 0], channels):
        ax.axvspan(0, t_s.max(), color="0.92", zorder=0)
        ax.plot(t_s, k2[h], lw=1.0)
        ax.axhline(0, color="0.6", lw=0.5)
        ax.set_ylabel(f"channel {h}", fontsize=8)
        ax.text(0.01, 0.85, f"D = {D[h]:+.2f} (lag 0, not drawn)", transform=ax.transAxes, fontsize=7)
    axes[0, 0].set_title("left: past samples (forward kernel); grey, right: future samples "
                         "(backward kernel, bidirectional layers only)", fontsize=8)
    axes[-1, 0].set_xlabel("input time relative to the output sample (s)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- results chapter


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

    A subgroup with too few positives or negatives for an interval (``too_few``) is an
    open circle without a bar.

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
        few = sub["too_few"].astype(bool).to_numpy() if "too_few" in sub else np.zeros(len(sub), bool)
        err = np.vstack([sub["auroc"] - sub["low"], sub["high"] - sub["auroc"]]).clip(min=0)
        ax.errorbar(sub["auroc"][~few], y[~few], xerr=np.nan_to_num(err[:, ~few]), fmt="o", ms=3.5, color="C0",
                    ecolor="0.4", lw=1)
        ax.plot(sub["auroc"][few], y[few], "o", ms=3.5, mfc="none", color="C0")  # too few: no interval
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
