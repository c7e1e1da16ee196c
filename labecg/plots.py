"""Figures of the pipeline chapters: the ECG, the filter, the tasks, the model's kernels, training.

The clinical 12-lead layout, one lead before and after conversion, the resampling filter's
measured response, the task timeline of the paper's Figure 1, an S4 layer's kernels (what
bidirectional means), training curves, the signal conversion's status.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``show``; the
notebooks glue the figure (``glue(name, fig)``: shown in Jupyter, placed by the pages).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: papermill kernels and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from labecg.signals import LEADS  # noqa: E402  (the stored order)

__all__ = ["plot_ecg_12lead", "plot_cohort_ecg", "plot_task_timeline", "signal_status_counts",
           "plot_training_curves"]

# The usual printout: columns of 2.5 s, limb leads left, chest leads right.
_GRID_LAYOUT = (("I", "aVR", "V1", "V4"),
                ("II", "aVL", "V2", "V5"),
                ("III", "aVF", "V3", "V6"))
_PAPER_PINK = "#f4c7c3"


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


def plot_task_timeline(horizons_min=(30, 60, 120), vitals_window_min: float = 30,
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


def signal_status_counts(cohort_dir) -> pd.DataFrame:
    """Records converted (``ok``) and rejected (``failed``), with the rejection reasons.

    Reads ``cohort_dir/signals_manifest.parquet``.

    Returns
    -------
    DataFrame indexed by status (ok, failed; both always present), columns ``records``
    (int) and ``reasons`` (the distinct reasons with counts, ``"; "``-joined).
    """
    path = Path(cohort_dir) / "signals_manifest.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run the signal conversion first")
    m = pd.read_parquet(path, columns=["status", "reason"])
    rows = []
    for status in ("ok", "failed"):
        part = m[m["status"] == status]
        reasons = part["reason"].fillna("").astype(str)
        counts = reasons[reasons != ""].value_counts()
        rows.append({"status": status, "records": int(len(part)),
                     "reasons": "; ".join(f"{r} ({n})" for r, n in counts.items())})
    return pd.DataFrame(rows).set_index("status")


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
    from labecg.signals import load_signals
    from labecg.util import read_json

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
