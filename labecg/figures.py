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

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``show``; it is
drawn with the book's style (:data:`BOOK_RC`) inside :func:`matplotlib.pyplot.rc_context`, so
importing this module or drawing a figure leaves the caller's matplotlib settings as they were
(:func:`setup_notebook` sets them for a notebook on purpose). The notebooks glue the figure (``glue(name, fig)``: shown in Jupyter, placed by the pages). The
paper's tables are :mod:`labecg.tables`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from labecg import catalog, layout, paper
from labecg.cohort import CohortConfig
from labecg.metrics import auroc
from labecg.records import LEADS  # the stored order
from labecg.signals import load_signals
from labecg.tables import (TASK_TITLES, VARIABLE_TITLES, format_auroc, format_threshold, row_label,
                           target_label, target_rows)
from labecg.targets import AUROC_THRESHOLD, HORIZONS_MIN, TASKS, significant
from labecg.util import read_json

#: Width of the book's content column in CSS pixels, a lower bound: sphinx-book-theme's article
#: measures 836 px at a 1,400 px window in Chromium (tests/test_book.py holds it to at least this).
#: Every figure is at most this wide, so it is never scaled down on a desktop page.
CONTENT_WIDTH_PX = 720
#: CSS pixels per inch: a figure of w inches is shown w * 96 px wide (its PNG has twice that).
CSS_DPI = 96
CONTENT_WIDTH_IN = CONTENT_WIDTH_PX / CSS_DPI
#: The smallest text a page may show, in CSS pixels; 8 pt at 96 dpi is 10.7 px.
MIN_TEXT_PX = 9.0
_SMALL = 8  # points: the smallest font any figure uses
BOOK_RC = {"figure.dpi": CSS_DPI, "savefig.dpi": 2 * CSS_DPI, "font.size": 9, "axes.titlesize": 10,
           "axes.labelsize": 9, "xtick.labelsize": _SMALL, "ytick.labelsize": _SMALL,
           "legend.fontsize": _SMALL, "legend.title_fontsize": 9, "figure.titlesize": 10}


def _book_style(plot):
    """``plot`` drawing in :data:`BOOK_RC` without changing the caller's rcParams.

    The figure is laid out once inside the context, so the artists matplotlib makes lazily
    (tick labels) take the book's sizes too, whatever the settings when it is saved.
    """
    @functools.wraps(plot)
    def draw(*args, **kwargs):
        with plt.rc_context(BOOK_RC):
            fig = plot(*args, **kwargs)
            fig.draw_without_rendering()
        return fig
    return draw


def min_font_pt(fig) -> float:
    """The smallest font size (points) of any visible, non-empty text of ``fig``."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return float(min(sizes)) if sizes else float("nan")


def figure_png(fig) -> tuple[bytes, dict]:
    """``fig`` as the book shows it: a PNG at twice :data:`CSS_DPI`, and its display metadata.

    Returns
    -------
    png : bytes
        Saved with ``bbox_inches="tight"`` at ``2 * CSS_DPI`` dots per inch (the PNG's pHYs
        chunk says so).
    metadata : dict
        ``width``, ``height``: the CSS size (half the pixels: two device pixels per CSS
        pixel); ``labecg``: ``dpi``, ``min_font_pt`` (:func:`min_font_pt`), ``min_text_px``
        (the smallest text in CSS pixels once the figure is scaled to at most
        :data:`CONTENT_WIDTH_PX`).
    """
    import io
    import struct

    buffer = io.BytesIO()
    dpi = 2 * CSS_DPI
    with plt.rc_context(BOOK_RC):
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    png = buffer.getvalue()
    width_px, height_px = struct.unpack(">II", png[16:24])  # the IHDR chunk
    css_width = width_px / 2
    smallest = min_font_pt(fig)
    scale = min(1.0, CONTENT_WIDTH_PX / css_width)
    return png, {"width": int(width_px // 2), "height": int(height_px // 2),
                 "labecg": {"dpi": dpi, "min_font_pt": smallest,
                            "min_text_px": round(smallest * CSS_DPI / 72 * scale, 2)}}


def setup_notebook() -> None:
    """Figures and tables in a notebook as the book shows them (call once, in the setup cell).

    Figures: :data:`BOOK_RC` and :func:`figure_png` as the PNG of every displayed or glued
    figure. Tables: every DataFrame a cell shows goes through :func:`labecg.tables.show_table`
    (human headers, three decimals, numbers right-aligned, no index, long tables collapsed),
    captioned by its ``attrs["caption"]``.
    """
    from IPython import get_ipython

    from labecg import tables

    plt.rcParams.update(BOOK_RC)
    shell = get_ipython()
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    formatters["image/png"].for_type(plt.Figure, lambda fig: figure_png(fig))
    for mime in ("image/svg+xml", "application/pdf", "image/jpeg"):
        formatters[mime].pop(plt.Figure, None)
    formatters["text/html"].for_type(
        pd.DataFrame, lambda frame: tables.show_table(frame, frame.attrs.get("caption", "")).data)


def _width(width_in: float) -> float:
    """A figure width that fits the content column (wider figures are split, not shrunk)."""
    return min(float(width_in), CONTENT_WIDTH_IN)


def _panel_grid(n_panels: int, panel_width_in: float, panel_height_in: float, extra_width_in: float = 0.0,
                **kwargs):
    """Figure and axes for ``n_panels`` panels wrapped in rows that fit the content column.

    Returns ``fig`` and a flat list of ``n_panels`` axes (surplus grid cells removed).
    """
    ncols = max(1, min(n_panels, int((CONTENT_WIDTH_IN - extra_width_in) // panel_width_in)))
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(_width(extra_width_in + ncols * panel_width_in),
                                                    panel_height_in * nrows), squeeze=False, **kwargs)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        fig.delaxes(ax)
    return fig, flat[:n_panels]

__all__ = ["plot_task_timeline", "plot_label_prevalence", "plot_ecg_12lead", "plot_cohort_ecg",
           "plot_filter_response", "plot_lead_before_after", "plot_s4_kernels", "plot_training_curves",
           "plot_forest", "plot_horizon_heatmap", "plot_roc_curves", "plot_intervals", "plot_reliability",
           "plot_subgroups", "plot_attribution", "plot_paper_comparison", "plot_value_scatter", "figure_png",
           "setup_notebook"]


# ---------------------------------------------------------------------------- pipeline chapters

# The usual printout: columns of 2.5 s, limb leads left, chest leads right.
_GRID_LAYOUT = (("I", "aVR", "V1", "V4"),
                ("II", "aVL", "V2", "V5"),
                ("III", "aVF", "V3", "V6"))
_PAPER_PINK = "#f4c7c3"
_CATEGORY_ORDER = ["Ca.", "Re./Ca.", "Re.", "He.", "Me.", "Im.", "Co.", "–"]
_ROW_IN = 0.19  # figure height per target row, inches: readable from ~20 to ~140 rows


_TASK_COLORS = {"est": "C0", "mon30": "C1", "mon60": "C2", "mon120": "C3"}
_ROW_PITCH_IN = 0.36  # inches per abnormality row of the grouped figures: four tasks side by side


def _category_title(category: str) -> str:
    name = catalog.CATEGORY_NAMES.get(category)
    return name[:1].upper() + name[1:] if name else "No category in the paper"


def _grouped_rows(frame: pd.DataFrame):
    """Rows of a figure grouped by category, a heading row above each group.

    Returns ``order`` (abnormality labels, top to bottom), ``ypos`` (label -> row),
    ``headings`` (list of (row, title)) and the number of rows.
    """
    order = _abnormality_order(frame)
    categories = frame.drop_duplicates("row_label").set_index("row_label")["category"]
    ypos, headings, row, previous = {}, [], 0, None
    for label in order:
        if categories[label] != previous:
            previous = categories[label]
            headings.append((row, _category_title(previous)))
            row += 1
        ypos[label] = row
        row += 1
    return order, ypos, headings, row


def _label_grouped_rows(ax, order, ypos, headings, n_rows) -> None:
    """Abnormality names as y tick labels, category headings in bold, a rule above each group."""
    ticks = [ypos[label] for label in order] + [r for r, _ in headings]
    labels = list(order) + [title for _, title in headings]
    ax.set_yticks(ticks, labels, fontsize=_SMALL)
    heading_rows = {r for r, _ in headings}
    for tick, label in zip(ax.yaxis.get_major_ticks(), ax.get_yticklabels()):
        if tick.get_loc() in heading_rows:
            label.set_fontweight("bold")
            label.set_fontsize(9)
            tick.tick1line.set_visible(False)
    for r, _ in headings[1:]:
        ax.axhline(r - 0.5, color="0.8", lw=0.8)
    ax.set_ylim(n_rows - 0.5, -0.5)


def _dodge(n: int) -> np.ndarray:
    """Offsets (rows) of ``n`` tasks drawn side by side within one row."""
    return (np.arange(n) - (n - 1) / 2) * (0.8 / max(n, 1))

def _wrap(text: str, width: int) -> str:
    """A panel title broken into lines of at most ``width`` characters (words kept whole)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


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


@_book_style
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
    shrink = min(1.0, CONTENT_WIDTH_IN / width_in)  # the proportions of the paper, the width of the page
    fig, ax = plt.subplots(figsize=(width_in * shrink, height_in * shrink + 0.5))
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
    ax.set_xlabel("time (s); grid 0.04 s / 0.1 mV, bold 0.2 s / 0.5 mV\n(25 mm/s, 10 mm/mV)")
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


@_book_style
def plot_task_timeline(horizons_min=HORIZONS_MIN, vitals_window_min: float = CohortConfig.vitals_window_min,
                       estimation_window_min: float = CohortConfig.estimation_window_min):
    """The paper's Figure 1 B and C as two timelines around the ECG at t = 0.

    Parameters
    ----------
    horizons_min : sequence of int
        Monitoring horizons; labs in [ecg_time, ecg_time + h], both ends included.
    vitals_window_min : float
        Inputs: the closest vital sign within +/- this many minutes of the ECG
        (default: :class:`labecg.cohort.CohortConfig`'s).
    estimation_window_min : float
        Estimation target: the lab closest to the ECG within +/- this many minutes
        (default: :class:`labecg.cohort.CohortConfig`'s).

    Returns
    -------
    matplotlib.figure.Figure
    """
    h_max = max(horizons_min)
    fig, axes = plt.subplots(2, 1, figsize=(_width(8), 4.4), sharex=True)
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
                ax.text(h, 0.7, f" {h}", va="center", fontsize=_SMALL)
        ax.set_yticks([])
        ax.set_ylim(0, 1)
        ax.set_title(f"{task.capitalize()} task", fontsize=10, loc="left")
        ax.legend(loc="upper right", fontsize=_SMALL, frameon=False)
    axes[-1].set_xlim(-estimation_window_min - 10, h_max + 15)
    axes[-1].set_xlabel("minutes relative to the ECG")
    fig.tight_layout()
    return fig


@_book_style
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
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(_width(9), 3.4))
    for label, run in run_dirs.items():
        path = Path(run) / layout.METRICS
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
    ax_loss.legend(fontsize=_SMALL)
    ax_auc.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylabel("validation macro AUROC")
    ax_auc.legend(fontsize=_SMALL)
    fig.tight_layout()
    return fig


@_book_style
def plot_label_prevalence(targets: dict, split: str = "test"):
    """Positive fraction of each target in ``split``: one row per abnormality, a bar per task.

    Rows are grouped by the paper's physiological category (bold headings), highest
    prevalence first within a group; the tasks' bars sit side by side in their colours.

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
    order, ypos, headings, n_rows = _grouped_rows(frame)
    tasks = [t for t in TASKS if (frame["task"] == t).any()]
    fig, ax = plt.subplots(figsize=(CONTENT_WIDTH_IN, 1.4 + _ROW_PITCH_IN * n_rows))
    for offset, task in zip(_dodge(len(tasks)), tasks):
        sub = frame[frame["task"] == task]
        ax.barh(sub["row_label"].map(ypos).to_numpy() + offset, sub["prevalence"].to_numpy(dtype=float),
                height=0.8 / len(tasks), color=_TASK_COLORS.get(task, "0.5"), label=TASK_TITLES[task])
    _label_grouped_rows(ax, order, ypos, headings, n_rows)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"positive fraction ({split} split)")
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(labeltop=True)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0 + 0.45 / (1.4 + _ROW_PITCH_IN * n_rows)),
              ncol=len(tasks), frameon=False)
    fig.tight_layout()
    return fig


@_book_style
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
    meta = read_json(cohort_dir / layout.SIGNALS_META)
    m = pd.read_parquet(cohort_dir / layout.SIGNALS_MANIFEST, columns=["row", "status"])
    ok_rows = np.sort(m.loc[m["status"] == "ok", "row"].to_numpy())
    if not 0 <= index < len(ok_rows):
        raise IndexError(f"{cohort_dir}: index {index} out of range; {len(ok_rows)} records converted")
    row = int(ok_rows[index])
    return plot_ecg_12lead(np.asarray(x[row], dtype=np.float32), fs_hz=float(meta["fs_hz"]), leads=leads,
                           title=f"Converted ECG no. {index + 1} of the cohort ({meta['fs_hz']:g} Hz)")


@_book_style
def plot_filter_response(response: pd.DataFrame, fs_out_hz: float = 100.0, mains_hz: float = 60.0):
    """Gain of the resampling filter against frequency (:func:`labecg.records.filter_response`).

    Shaded: frequencies at or above the output's Nyquist rate (``fs_out_hz / 2``), which
    the stored record cannot represent; dotted: mains hum at ``mains_hz``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    freqs = response.index.to_numpy(dtype=float)
    nyquist = fs_out_hz / 2
    fig, ax = plt.subplots(figsize=(_width(7), 3))
    ax.axvspan(nyquist, freqs.max(), color="0.9", zorder=0)
    ax.plot(freqs, response["gain_db"], lw=1.2)
    ax.axvline(nyquist, color="k", ls="--", lw=0.8)
    ax.text(nyquist, 3, f" {nyquist:g} Hz: Nyquist rate of {fs_out_hz:g} Hz", fontsize=_SMALL, va="bottom")
    ax.axvline(mains_hz, color="C3", lw=0.8, ls=":")
    ax.set_xlabel("frequency of a sine in the record (Hz)")
    ax.set_ylabel("gain (dB)")
    ax.set_xlim(0, freqs.max())
    ax.set_ylim(-100, 10)
    fig.tight_layout()
    return fig


@_book_style
def plot_lead_before_after(pair: dict, seconds: float = 2.5):
    """One lead as recorded and as stored (:func:`labecg.signals.lead_before_after`), first ``seconds``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = plt.subplots(figsize=(_width(8), 2.8))
    for key, fs_key, style, color, what in (("raw_mv", "raw_fs_hz", "-", "0.55", "as recorded"),
                                            ("stored_mv", "fs_hz", "o-", "C0", "as stored")):
        n = int(round(seconds * pair[fs_key]))
        ax.plot(np.arange(n) / pair[fs_key], pair[key][:n], style, ms=2.5, lw=0.8, color=color,
                label=f"{what} ({pair[fs_key]:g} Hz)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"lead {pair['lead']} (mV)")
    ax.legend(fontsize=_SMALL, loc="upper right")
    fig.tight_layout()
    return fig


@_book_style
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
    fig, axes = plt.subplots(len(channels), 1, figsize=(_width(8), 1.5 * len(channels) + 0.8), sharex=True, squeeze=False)
    for ax, h in zip(axes[:, 0], channels):
        ax.axvspan(0, t_s.max(), color="0.92", zorder=0)
        ax.plot(t_s, k2[h], lw=1.0)
        ax.axhline(0, color="0.6", lw=0.5)
        ax.set_ylabel(f"channel {h}", fontsize=_SMALL)
        ax.text(0.01, 0.85, f"D = {D[h]:+.2f} (lag 0, not drawn)", transform=ax.transAxes, fontsize=_SMALL)
    axes[0, 0].set_title("left: past samples (forward kernel)\ngrey, right: future samples "
                         "(backward kernel, bidirectional layers only)", fontsize=9)
    axes[-1, 0].set_xlabel("input time relative to the output sample (s)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- results chapter


@_book_style
def plot_forest(results: pd.DataFrame, tasks=TASKS, auroc_threshold: float = AUROC_THRESHOLD):
    """Forest plot: AUROC with its 95% interval for each abnormality and task, in one panel.

    One row per abnormality (lab and direction) with a readable label, grouped by the
    paper's physiological category (bold headings), best first within a group; the tasks
    sit side by side within a row, each in its colour. Filled markers are significant above
    ``auroc_threshold`` (dotted line), open ones are not.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.lines import Line2D

    frame = target_rows(results)
    tasks = [t for t in tasks if (frame["task"] == t).any()]
    if not tasks:
        raise ValueError(f"results have no targets of tasks {list(TASKS)}")
    frame = frame[frame["task"].isin(tasks)]
    order, ypos, headings, n_rows = _grouped_rows(frame)
    height = 1.6 + _ROW_PITCH_IN * n_rows
    fig, ax = plt.subplots(figsize=(CONTENT_WIDTH_IN, height))
    for offset, task in zip(_dodge(len(tasks)), tasks):
        sub = frame[frame["task"] == task]
        color = _TASK_COLORS.get(task, "0.3")
        y = sub["row_label"].map(ypos).to_numpy() + offset
        sig = significant(sub["low"], auroc_threshold).to_numpy()
        err = np.vstack([sub["auroc"] - sub["low"], sub["high"] - sub["auroc"]]).clip(min=0)
        ax.errorbar(sub["auroc"], y, xerr=np.nan_to_num(err), fmt="none", ecolor=color, elinewidth=1.0)
        ax.scatter(sub["auroc"][sig], y[sig], s=16, color=color, zorder=3)
        ax.scatter(sub["auroc"][~sig], y[~sig], s=16, facecolor="white", edgecolor=color, zorder=3)
    ax.axvline(auroc_threshold, color="0.3", ls=":", lw=1)
    ax.axvline(0.5, color="0.7", lw=0.8)
    _label_grouped_rows(ax, order, ypos, headings, n_rows)
    ax.set_xlabel("AUROC with 95% bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(labeltop=True)
    handles = [Line2D([], [], color=_TASK_COLORS.get(t, "0.3"), marker="o", lw=1, label=TASK_TITLES.get(t, t))
               for t in tasks]
    handles += [Line2D([], [], color="0.3", marker="o", lw=0, label=f"filled: significant > {auroc_threshold:.2f}"),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="white", lw=0, label="open: not significant")]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0 + 0.45 / height), ncol=3,
              frameon=False)
    fig.tight_layout()
    return fig


@_book_style
def plot_horizon_heatmap(results: pd.DataFrame, auroc_threshold: float = AUROC_THRESHOLD, annotate: bool | None = None):
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
    not_sig = np.isfinite(values) & ~significant(low.to_numpy(dtype=float), auroc_threshold)
    for i, j in zip(*np.nonzero(not_sig)):
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                   edgecolor="white", lw=0))
    if annotate:
        for i, j in zip(*np.nonzero(np.isfinite(values))):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=_SMALL,
                    color="white" if values[i, j] < (vmin + 0.9) / 2 + 0.1 else "black")
    ax.set_xticks(range(len(tasks)), [TASK_TITLES[t] for t in tasks])
    ax.set_yticks(range(len(order)), order, fontsize=_SMALL)
    ax.xaxis.tick_top()
    if missing:
        ax.set_xlabel(f"no target at: {', '.join(missing)}")
    fig.colorbar(im, ax=ax, label="AUROC", shrink=0.6)
    fig.tight_layout()
    return fig


@_book_style
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
    ax.legend(loc="lower right", fontsize=_SMALL)
    fig.tight_layout()
    return fig


@_book_style
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
    ax.axvline(AUROC_THRESHOLD, color="C3", ls=":", lw=1)
    ax.set_yticks(y, frame["row_label"], fontsize=_SMALL)
    ax.set_ylim(len(frame) - 0.5, -0.5)
    ax.set_xlabel("AUROC with 95% bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=_SMALL)
    fig.tight_layout()
    return fig


@_book_style
def plot_reliability(reliability: pd.DataFrame, results: pd.DataFrame, targets):
    """Reliability curves: observed fraction of positives against mean predicted probability, per bin.

    Parameters
    ----------
    reliability : DataFrame
        ``RUN/evaluation/reliability.csv`` (:func:`labecg.stats.reliability_frame`).
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
    fig, axes = _panel_grid(len(targets), 2.6, 3.4)
    for ax, target in zip(axes, targets):
        curve = reliability[reliability["target"] == target]
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
        ax.plot(curve["mean_predicted"], curve["fraction_positive"], "o-", color="C0", ms=3.5, lw=1.2)
        for r in curve.itertuples():
            ax.annotate(str(int(r.n)), (r.mean_predicted, r.fraction_positive), fontsize=_SMALL, color="0.4",
                        xytext=(2, -8), textcoords="offset points")
        ax.set_title(f"{_wrap(target_label(results, target), 30)}\nBrier {results.loc[target, 'brier']:.3f}",
                     fontsize=_SMALL)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("mean predicted probability")
    for ax in axes[::max(1, int(CONTENT_WIDTH_IN // 2.6))]:
        ax.set_ylabel("fraction positive")
    fig.tight_layout()
    return fig


@_book_style
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
    fig, axes = _panel_grid(len(targets), 2.2, 1.2 + 0.26 * len(labels), extra_width_in=1.6, sharey=True)
    for ax, target in zip(axes, targets):
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
        ax.set_title(_wrap(target_label(results, target), 26), fontsize=_SMALL)
        ax.set_xlabel("AUROC")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=_SMALL)
    axes[0].set_ylim(len(labels) - 0.5, -0.5)
    for ax in axes:
        ax.tick_params(labelleft=True)
    fig.tight_layout()
    return fig


@_book_style
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
    fig, axes = _panel_grid(len(targets), 2.3, 5.2, extra_width_in=0.4, sharey=True)
    for ax, j in zip(axes, range(len(targets))):
        a = attr[j] / max(float(attr[j].max()), 1e-12)  # (W, C)
        ax.imshow(a.T, extent=(time_s[0] - dt / 2, time_s[-1] + dt / 2, len(leads) - 0.5, -0.5),
                  aspect="auto", cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
        for c in range(len(leads)):
            ax.plot(time_s, c - 0.45 * (beat[:, c] - np.median(beat[:, c])) / scale, color="k", lw=0.6)
        if targets[j] in own:
            start, end, name = own[targets[j]]
            ax.axvspan(start, end, fill=False, edgecolor="C0", lw=1.2, ls="--")
            ax.text(start, -0.9, name, fontsize=_SMALL, color="C0")
        ax.axvline(0.0, color="0.5", lw=0.5, ls=":")
        ax.set_title(_wrap(targets[j].replace("_", " "), 24), fontsize=_SMALL)
        ax.set_xlabel("s from R peak")
    axes[0].set_yticks(range(len(leads)), leads, fontsize=_SMALL)
    axes[0].set_ylim(len(leads) - 0.5, -1.2)
    for ax in axes:
        ax.tick_params(labelleft=True)
    fig.tight_layout()
    return fig


@_book_style
def plot_paper_comparison(comparison: pd.DataFrame):
    """This run's AUROC against the paper's, one point per target both report (the book's summary figure).

    Parameters
    ----------
    comparison : DataFrame
        :func:`labecg.tables.compare_with_paper` (``paper_auroc``, ``paper_low``,
        ``paper_high``, ``auroc``, ``low``, ``high``, ``task``, ``paper_version``).

    Returns
    -------
    matplotlib.figure.Figure
        x: the paper's AUROC, y: this run's, both with 95% intervals, a colour per task;
        dashed: equal AUROC. Without a common target, a figure that says so.
    """
    version = comparison.attrs.get("paper_version", paper.VERSION)
    if comparison.empty:
        fig, ax = plt.subplots(figsize=(_width(6.0), 1.4))
        ax.text(0.5, 0.5, f"No target of this run is in the tables of {version}.", ha="center", va="center")
        ax.set_axis_off()
        return fig
    fig, ax = plt.subplots(figsize=(_width(6.4), 4.2))
    lo = float(np.nanmin(comparison[["paper_low", "low"]].to_numpy(dtype=float)))
    lo = min(0.5, np.floor(lo * 20) / 20) if np.isfinite(lo) else 0.5
    ax.plot([lo, 1], [lo, 1], color="0.6", ls="--", lw=0.8, label="equal AUROC")
    for task in TASKS:
        sub = comparison[comparison["task"] == task]
        if sub.empty:
            continue
        xerr = np.vstack([sub["paper_auroc"] - sub["paper_low"], sub["paper_high"] - sub["paper_auroc"]]).clip(min=0)
        yerr = np.vstack([sub["auroc"] - sub["low"], sub["high"] - sub["auroc"]]).clip(min=0)
        ax.errorbar(sub["paper_auroc"], sub["auroc"], xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt="o",
                    ms=4, lw=0.8, color=_TASK_COLORS.get(task, "0.3"),
                    label=f"{TASK_TITLES.get(task, task)} ({len(sub)})")
    ax.axhline(AUROC_THRESHOLD, color="0.8", lw=0.6, ls=":")
    ax.axvline(AUROC_THRESHOLD, color="0.8", lw=0.6, ls=":")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(f"AUROC in the paper ({version}, MIMIC-IV)")
    ax.set_ylabel("AUROC in this build")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, title="task (targets)")
    fig.tight_layout()
    return fig



#: A value scatter's axes are logarithmic when its largest value exceeds its smallest (positive) by this factor.
LOG_AXES_RATIO = 100.0


@_book_style
def plot_value_scatter(predictions: dict, values: pd.DataFrame, columns):
    """Predicted against measured values of a value run, one panel per value column, in the lab's unit.

    Parameters
    ----------
    predictions : dict
        :func:`labecg.evaluate.read_predictions` of a value run (``y_true``, ``y_score`` in the
        lab's unit, ``target_names`` the value columns).
    values : DataFrame
        :func:`labecg.evaluate.read_values` of its evaluation (``name``, ``lab``, ``task``, ``unit``,
        ``spearman``, ``mae``).
    columns : sequence of str
        The value columns to draw (e.g. ``selfcheck.values_summary``'s ``labs``).

    Returns
    -------
    matplotlib.figure.Figure
        One point per test ECG with a measured value (x measured, y predicted), the line of
        equality dashed, the panel titled with the lab, task, Spearman and MAE; log axes where
        all values are positive and span more than :data:`LOG_AXES_RATIO`. Without a column, a
        figure that says so.
    """
    columns = [str(c) for c in columns]
    if not columns:
        fig, ax = plt.subplots(figsize=(_width(6.0), 1.4))
        ax.text(0.5, 0.5, "No value run in this build: no values to plot.", ha="center", va="center")
        ax.set_axis_off()
        return fig
    names = [str(n) for n in predictions["target_names"]]
    meta = values.set_index("name")
    fig, axes = _panel_grid(len(columns), 2.6, 2.6)
    for ax, name in zip(axes, columns):
        j = names.index(name)
        t = np.asarray(predictions["y_true"][:, j], dtype=float)
        p = np.asarray(predictions["y_score"][:, j], dtype=float)
        seen = ~np.isnan(t)
        ax.scatter(t[seen], p[seen], s=6, alpha=0.5, color="C0", linewidths=0)
        lo, hi = np.nanmin([t[seen].min(), p[seen].min()]), np.nanmax([t[seen].max(), p[seen].max()])
        ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=0.8)
        if lo > 0 and hi / lo > LOG_AXES_RATIO:  # e.g. NT-proBNP: most points would sit in a corner
            ax.set_xscale("log")
            ax.set_yscale("log")
        row = meta.loc[name]
        unit = f" ({row['unit']})" if isinstance(row["unit"], str) and row["unit"] else ""
        ax.set_xlabel(f"measured{unit}")
        ax.set_ylabel(f"predicted{unit}")
        ax.set_title(f"{row['lab']} ({TASK_TITLES.get(row['task'], row['task'])})\n"
                     f"Spearman {row['spearman']:.2f}, MAE {row['mae']:.3g}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
