"""What in the ECG the model uses: attribution of a target's output to the ECG, aligned on the R peak.

For each explained target and each of ``n_ecgs`` test ECGs, the target's logit on each of
the four 2.5 s segments that the test predictions average is attributed to every input
sample and lead, by integrated gradients (:func:`integrated_gradients`) or by occlusion
(:func:`occlusion`); the segments are put back end to end (10 s). R peaks are found in the
ECG (:func:`find_r_peaks`), and the absolute attribution is averaged over every beat in a
window around its R peak, per lead (:func:`beat_windows`): a heat strip over the median
beat (:func:`labecg.figures.plot_attribution`).

On the synthetic source the truth is known (:data:`labecg.planted.PLANTED_WINDOWS_S`):
potassium is planted in the T wave, calcium in the QT interval (the ST-T segment),
NTproBNP in the QRS voltage (and the rate), troponin in the ST segment.
:func:`window_fractions` gives the share of each target's attribution mass inside each
planted window. The check (:func:`share_contrasts`) compares shares *within one window*,
so a window's width and the integrated-gradients factor (x - baseline), which favours
large waves, cancel: a planted target's share in its own window against the mean share
of the null targets (:func:`labecg.planted.ecg_null_labs`: labs whose values the ECG
cannot carry), and against every other planted target's share in the same window, each
difference with a bootstrap interval over the explained ECGs (:func:`bootstrap_shares`).
A model-randomisation check (:func:`randomization_check`; Adebayo et al., 2018) asks
whether the attributions depend on the trained weights at all. On real data the same
figure shows what the model uses, with no claim attached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from scipy.signal import find_peaks

from scipy.stats import rankdata

from labecg import layout
from labecg.data import DataConfig, LabDataModule, cut_segments
from labecg.metrics import N_RESAMPLES, resample_weights
from labecg.model import FusionModel, ModelConfig, trained_model
from labecg.stats import LEVEL
from labecg.planted import PLANTED_EFFECTS, PLANTED_WINDOWS_S, ecg_null_labs
from labecg.targets import BINARY, DIRECTIONS, ESTIMATION, lab_slug, parse_target, target_name
from labecg.util import atomic_path, get_logger, hold_paths, read_json

__all__ = ["ExplainConfig", "explain_run", "integrated_gradients", "occlusion", "find_r_peaks",
           "beat_windows", "window_fractions", "window_mass", "bootstrap_shares", "share_intervals",
           "share_contrasts", "rank_correlation", "randomization_check", "read_attribution",
           "read_attribution_checks", "default_targets", "CONTRAST_COLUMNS", "RANDOMIZATION_COLUMNS",
           "label_windows", "ROLES", "NULL_COMPARATOR"]

log = get_logger("labecg.explain")

NULL_COMPARATOR = "null targets"  # the ``comparator`` of a contrast against the null targets' mean
#: Columns of ``attribution_contrasts.csv`` (:func:`share_contrasts`), in order.
CONTRAST_COLUMNS = ["target", "window", "start_s", "end_s", "comparator", "share", "comparator_share",
                    "difference", "low", "high", "n_ecgs", "n_iterations", "level"]
#: Columns of ``attribution_randomization.csv`` (:func:`randomization_check`), in order.
RANDOMIZATION_COLUMNS = ["target", "rho_trained", "rho_randomized", "difference", "low", "high", "rho_input",
                         "n_ecgs", "n_steps", "n_iterations", "level"]
Method = Literal["integrated_gradients", "occlusion"]
#: ``role`` of a target in ``attribution_windows.csv``: its effect was planted, or nothing was.
#: Not "null": ``pd.read_csv`` reads that (and "NA", "None", "NaN", ...) back as missing.
ROLES = ("planted", "null_target")


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of ``labecg explain``.

    Parameters
    ----------
    run_dir : Path
        Run folder of ``labecg train`` (``config.json``, ``checkpoints/best.ckpt``); the
        cohort folder recorded in its ``config.json`` supplies the test ECGs.
    method : {"integrated_gradients", "occlusion"}
        Integrated gradients from an all-zero (lead-mean) baseline, per sample and lead;
        or occlusion of ``occlusion_s`` stretches of all leads at once (time only).
        Integrated gradients is the default because only it resolves leads
        (``bench/explain.py`` prints each method's time and planted-window shares).
    n_ecgs : int
        Test ECGs explained (drawn with ``seed``); the same ECGs for every target.
    n_steps : int
        Integrated-gradients steps (midpoint rule). On the classroom run 8 and 16 steps gave
        planted-window shares equal to 3 decimals (``bench/explain.py --steps 8 16``).
    occlusion_s : float
        Width of an occluded stretch, seconds.
    targets : tuple of str
        Targets to explain; empty: :func:`default_targets`.
    before_s, after_s : float
        Beat window around each R peak, seconds: [R - before_s, R + after_s).
    seed : int
        Draws the explained ECGs, the bootstrap resamples and the re-drawn weights.
    n_iterations : int
        Bootstrap resamples of the explained ECGs for the share intervals and contrasts.
    level : float
        Coverage of the percentile intervals.
    randomization_ecgs : int
        Explained ECGs (the first ones, in test order) for the model-randomisation check;
        0 skips it.
    randomization_steps : int
        Integrated-gradients steps of the randomisation check, for both the re-drawn
        model and the trained model it is held against (few: the check compares the two
        at the same step count).
    """

    run_dir: Path
    method: Method = "integrated_gradients"
    n_ecgs: int = 24
    n_steps: int = 8
    occlusion_s: float = 0.08
    targets: tuple[str, ...] = ()
    before_s: float = 0.25
    after_s: float = 0.55
    seed: int = 0
    n_iterations: int = N_RESAMPLES
    level: float = LEVEL
    randomization_ecgs: int = 8
    randomization_steps: int = 2

    def __post_init__(self):
        hold_paths(self)
        if self.method not in ("integrated_gradients", "occlusion"):
            raise ValueError(f"method must be 'integrated_gradients' or 'occlusion', got {self.method!r}")
        for name in ("n_ecgs", "n_steps", "n_iterations", "randomization_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.randomization_ecgs < 0:
            raise ValueError(f"randomization_ecgs must be >= 0, got {self.randomization_ecgs}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if self.occlusion_s <= 0 or self.before_s <= 0 or self.after_s <= 0:
            raise ValueError(f"occlusion_s, before_s, after_s must be > 0; got {self.occlusion_s}, "
                             f"{self.before_s}, {self.after_s}")


# ---------------------------------------------------------------------------- attribution


def integrated_gradients(forward: Callable, ecg: torch.Tensor, tabular: torch.Tensor | None, targets,
                         n_steps: int = 16, baseline: torch.Tensor | None = None) -> np.ndarray:
    """Integrated gradients of each target's logit with respect to the ECG.

    ``attr = (x - x0) * mean_k grad f(x0 + a_k (x - x0))``, ``a_k = (k + 1/2) / n_steps``
    (midpoint rule); as ``n_steps`` grows, ``attr.sum()`` tends to ``f(x) - f(x0)``
    (completeness).

    Parameters
    ----------
    forward : callable
        ``forward(ecg, tabular) -> logits`` of shape (B, T).
    ecg : Tensor of shape (B, L, C)
        Normalized ECG windows.
    tabular : Tensor of shape (B, F) or None
        Held fixed.
    targets : sequence of int
        Columns of the logits to explain.
    n_steps : int
    baseline : Tensor of shape (B, L, C), optional
        Default zeros: every lead at its training mean (a flat line).

    Returns
    -------
    ndarray of shape (len(targets), B, L, C), float32
    """
    x0 = torch.zeros_like(ecg) if baseline is None else baseline
    delta = ecg - x0  # (B, L, C)
    out = np.zeros((len(targets), *ecg.shape), dtype=np.float32)
    for j, t in enumerate(targets):
        total = torch.zeros_like(ecg)
        for k in range(n_steps):
            x = (x0 + (k + 0.5) / n_steps * delta).detach().requires_grad_(True)
            logit = forward(x, tabular)[:, t].sum()
            (grad,) = torch.autograd.grad(logit, x)
            total += grad
        out[j] = (delta * total / n_steps).detach().cpu().numpy()
    return out


def occlusion(forward: Callable, ecg: torch.Tensor, tabular: torch.Tensor | None, targets,
              width: int, baseline: torch.Tensor | None = None) -> np.ndarray:
    """Occlusion: the drop of each target's logit when a stretch of all leads is set to the baseline.

    Stretches of ``width`` samples tile the window; the drop ``f(x) - f(x with the stretch
    occluded)`` is spread evenly over the stretch's samples and leads (occluding all leads
    at once resolves time, not leads). All targets come from the same forward passes.

    Parameters
    ----------
    forward, ecg, tabular, targets, baseline
        As for :func:`integrated_gradients`.
    width : int
        Samples per occluded stretch.

    Returns
    -------
    ndarray of shape (len(targets), B, L, C), float32
    """
    B, L, C = ecg.shape
    x0 = torch.zeros_like(ecg) if baseline is None else baseline
    targets = list(targets)
    out = np.zeros((len(targets), B, L, C), dtype=np.float32)
    with torch.no_grad():
        full = forward(ecg, tabular)[:, targets]  # (B, K)
        for start in range(0, L, width):
            x = ecg.clone()
            x[:, start:start + width] = x0[:, start:start + width]
            drop = (full - forward(x, tabular)[:, targets]).cpu().numpy()  # (B, K)
            n = min(width, L - start) * C
            out[:, :, start:start + width, :] = (drop.T / n)[:, :, None, None]
    return out


# ---------------------------------------------------------------------------- beats


def find_r_peaks(ecg_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """R peaks of one 12-lead ECG.

    The slope energy ``sum over leads |dx/dt|``, smoothed over 50 ms, peaks once per QRS;
    peaks at least 0.3 s apart and above 40% of its 99th percentile are kept, each then
    moved to the largest absolute deviation from the lead medians (summed over leads)
    within 50 ms: the R (or S) peak.

    Parameters
    ----------
    ecg_mv : ndarray of shape (L, C)
        Millivolts; NaN treated as 0.
    fs_hz : float

    Returns
    -------
    ndarray of shape (n_peaks,), int64
        Sample indices, increasing.
    """
    x = np.nan_to_num(np.asarray(ecg_mv, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"ecg_mv must have shape (n_samples, n_leads); got {x.shape}")
    slope = np.abs(np.diff(x, axis=0, prepend=x[:1])).sum(axis=1)  # (L,)
    k = max(1, int(round(0.05 * fs_hz)))
    energy = np.convolve(slope, np.ones(k) / k, mode="same")
    if not np.any(energy > 0):
        return np.zeros(0, dtype=np.int64)
    peaks, _ = find_peaks(energy, distance=max(1, int(0.3 * fs_hz)), height=0.4 * np.percentile(energy, 99))
    dev = np.abs(x - np.median(x, axis=0)).sum(axis=1)  # (L,)
    r = [p - k + int(np.argmax(dev[max(0, p - k):p + k + 1])) if p - k >= 0 else int(np.argmax(dev[:p + k + 1]))
         for p in peaks]
    return np.unique(np.asarray(r, dtype=np.int64))


def beat_windows(signal: np.ndarray, peaks, before: int, after: int) -> np.ndarray:
    """The windows [peak - before, peak + after) of a signal, for every peak that fits inside it.

    Parameters
    ----------
    signal : ndarray of shape (L, C)
    peaks : array-like of int
    before, after : int
        Samples before and after the peak.

    Returns
    -------
    ndarray of shape (n_beats, before + after, C)
    """
    peaks = np.asarray(peaks, dtype=np.int64)
    keep = peaks[(peaks - before >= 0) & (peaks + after <= signal.shape[0])]
    idx = keep[:, None] + np.arange(-before, after)[None, :]  # (n_beats, W)
    return signal[idx]


def window_fractions(attribution: np.ndarray, time_s: np.ndarray, target_names, windows: dict) -> pd.DataFrame:
    """Share of each target's attribution mass inside each window of the beat.

    Parameters
    ----------
    attribution : ndarray of shape (K, W, C)
        Mean absolute attribution per target, beat sample and lead (non-negative).
    time_s : ndarray of shape (W,)
        Seconds from the R peak.
    target_names : sequence of str of length K
    windows : dict
        name -> (start_s, end_s), both relative to the R peak, start included, end excluded.

    Returns
    -------
    DataFrame, one row per (target, window): ``target``, ``window``, ``start_s``,
    ``end_s``, ``fraction`` (mass inside / mass of the whole beat window), ``uniform``
    (the share of the window's samples: the fraction of an attribution spread evenly).
    """
    a = np.asarray(attribution, dtype=np.float64)
    per_time = a.sum(axis=2)  # (K, W)
    total = per_time.sum(axis=1)  # (K,)
    rows = []
    for name, (start, end) in windows.items():
        inside = (time_s >= start) & (time_s < end)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = per_time[:, inside].sum(axis=1) / total
        for t, f in zip(target_names, frac):
            rows.append({"target": t, "window": name, "start_s": start, "end_s": end, "fraction": float(f),
                         "uniform": float(inside.mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- statistics


def window_mass(mass: np.ndarray, time_s: np.ndarray, windows: dict) -> np.ndarray:
    """Attribution mass inside each window, per target and ECG.

    Parameters
    ----------
    mass : ndarray of shape (K, n, W)
        Per target and explained ECG: absolute attribution per beat sample, summed over
        the ECG's beats and leads.
    time_s : ndarray of shape (W,)
        Seconds from the R peak.
    windows : dict
        name -> (start_s, end_s), start included, end excluded; V windows, in order.

    Returns
    -------
    ndarray of shape (K, n, V)
    """
    mass = np.asarray(mass, dtype=np.float64)
    inside = np.stack([(time_s >= a) & (time_s < b) for a, b in windows.values()], axis=1)  # (W, V)
    return mass @ inside.astype(np.float64)


def bootstrap_shares(inside: np.ndarray, total: np.ndarray, n_iterations: int = N_RESAMPLES,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Window shares and their bootstrap over the explained ECGs.

    A share is a ratio of sums over ECGs (mass inside the window over all mass of the
    beat window), the same as :func:`window_fractions` of the beat-averaged attribution.
    Each resample draws the ECGs with replacement (:func:`labecg.metrics.resample_weights`,
    the ECG-level resamples of the AUROC bootstrap) and recomputes every target's share in
    every window on the same draw, so differences between targets are paired.

    Parameters
    ----------
    inside : ndarray of shape (K, n, V)
        :func:`window_mass`.
    total : ndarray of shape (K, n)
        All mass of each target and ECG inside the beat window.
    n_iterations, seed : int

    Returns
    -------
    share : ndarray of shape (K, V)
    boot : ndarray of shape (n_iterations, K, V)
        NaN where a resample carries no mass for a target.
    """
    inside, total = np.asarray(inside, dtype=np.float64), np.asarray(total, dtype=np.float64)
    n = total.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = inside.sum(axis=1) / total.sum(axis=1)[:, None]
        weights = np.stack(list(resample_weights(n, n_iterations, seed)))  # (B, n)
        boot = np.einsum("bn,knv->bkv", weights, inside) / (weights @ total.T)[:, :, None]
    return share, boot


def _interval(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis."""
    q = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return q[0], q[1]


def share_intervals(share: np.ndarray, boot: np.ndarray, target_names, windows: dict,
                    level: float = LEVEL) -> pd.DataFrame:
    """Every target's share in every window with its percentile interval.

    Returns
    -------
    DataFrame, one row per (target, window): ``target``, ``window``, ``fraction``,
    ``low``, ``high``.
    """
    low, high = _interval(boot, level)
    return pd.DataFrame([{"target": t, "window": w, "fraction": float(share[k, v]), "low": float(low[k, v]),
                          "high": float(high[k, v])}
                         for v, w in enumerate(windows) for k, t in enumerate(target_names)])


def share_contrasts(share: np.ndarray, boot: np.ndarray, target_names, windows: dict, own: dict, null,
                    level: float = LEVEL, n_ecgs: int | None = None) -> pd.DataFrame:
    """Each planted target's share in its own window against the null targets' and the other planted targets'.

    Shares are compared within one window only: the window's width, and the factor
    (x - baseline) of integrated gradients that favours large waves, are common to both.
    For a planted target ``p`` with window ``w = own[p]``, the comparators are the mean
    share in ``w`` of the ``null`` targets (:data:`NULL_COMPARATOR`), then each other
    planted target's share in ``w``. The difference's interval is the percentile interval
    of the same difference over the paired resamples of :func:`bootstrap_shares`.

    Parameters
    ----------
    share, boot : ndarray
        :func:`bootstrap_shares`, targets in the order of ``target_names``.
    target_names : sequence of str of length K
    windows : dict
        name -> (start_s, end_s), in the order of the last axis of ``share``.
    own : dict
        Planted target -> the name of its window.
    null : sequence of str
        Null targets (no comparator row when empty).
    level : float
    n_ecgs : int, optional
        Explained ECGs, written to the ``n_ecgs`` column.

    Returns
    -------
    DataFrame with :data:`CONTRAST_COLUMNS`, one row per (planted target, comparator).
    """
    names, wnames = list(target_names), list(windows)
    n_iter = boot.shape[0]
    null_idx = [names.index(t) for t in null]
    rows = []
    for target, window in own.items():
        k, v = names.index(target), wnames.index(window)
        comparators = []
        if null_idx:
            comparators.append((NULL_COMPARATOR, share[null_idx, v].mean(), boot[:, null_idx, v].mean(axis=1)))
        comparators += [(q, share[names.index(q), v], boot[:, names.index(q), v]) for q in own if q != target]
        for name, point, resampled in comparators:
            diff = boot[:, k, v] - resampled
            low, high = _interval(diff[:, None], level)
            rows.append({"target": target, "window": window, "start_s": windows[window][0],
                         "end_s": windows[window][1], "comparator": name, "share": float(share[k, v]),
                         "comparator_share": float(point), "difference": float(share[k, v] - point),
                         "low": float(low[0]), "high": float(high[0]), "n_ecgs": n_ecgs,
                         "n_iterations": n_iter, "level": level})
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of two attribution maps, row by row.

    Parameters
    ----------
    a, b : ndarray of shape (..., P)
        Maps flattened over their last axis (time and lead).

    Returns
    -------
    ndarray of shape (...)
        Pearson correlation of the ranks (ties averaged); 0 where a map is constant (it
        has no order to agree with).
    """
    ra = rankdata(np.asarray(a, dtype=np.float64), axis=-1)
    rb = rankdata(np.asarray(b, dtype=np.float64), axis=-1)
    ra -= ra.mean(axis=-1, keepdims=True)
    rb -= rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=-1) * (rb ** 2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=-1) / np.where(den > 0, den, 1.0), 0.0)


def randomization_check(explained: np.ndarray, trained: np.ndarray, randomized: np.ndarray, inputs: np.ndarray,
                        target_names, n_steps: int, n_iterations: int = N_RESAMPLES, seed: int = 0,
                        level: float = LEVEL) -> pd.DataFrame:
    """Model-randomisation sanity check (Adebayo et al., 2018), with an interval over ECGs.

    Attributions that do not depend on the trained weights explain the input, not the
    model. Per ECG and target, the explained map (absolute attribution over the whole
    ECG, every sample and lead) is rank-correlated with the same method's map of the
    trained model at ``n_steps`` (``rho_trained``: how close a map can come at that step
    count) and with the map of the same architecture with re-drawn weights at the same
    steps (``rho_randomized``). ``difference = rho_trained - rho_randomized`` is averaged
    over ECGs; its percentile interval comes from resampling the ECGs
    (:func:`labecg.metrics.resample_weights`). The maps differ when the interval lies
    above 0. ``rho_input`` is the explained map's rank correlation with the input's
    magnitude |x - baseline| (how much the map follows the waves' size).

    Parameters
    ----------
    explained, trained, randomized : ndarray of shape (K, n, P)
        Absolute attribution maps, flattened per ECG.
    inputs : ndarray of shape (n, P)
        |x - baseline| of the same ECGs.
    target_names : sequence of str of length K
    n_steps, n_iterations, seed : int
    level : float

    Returns
    -------
    DataFrame with :data:`RANDOMIZATION_COLUMNS`: one row per target, then ``all``
    (per ECG, the mean over targets).
    """
    rho_t = rank_correlation(explained, trained)  # (K, n)
    rho_r = rank_correlation(explained, randomized)
    rho_x = rank_correlation(explained, np.broadcast_to(inputs, explained.shape))
    n = rho_t.shape[1]
    weights = np.stack(list(resample_weights(n, n_iterations, seed)))  # (B, n)
    rows = []
    for name, t, r, x in [*zip(target_names, rho_t, rho_r, rho_x),
                          ("all", rho_t.mean(axis=0), rho_r.mean(axis=0), rho_x.mean(axis=0))]:
        low, high = _interval((weights @ (t - r) / n)[:, None], level)
        rows.append({"target": name, "rho_trained": float(t.mean()), "rho_randomized": float(r.mean()),
                     "difference": float((t - r).mean()), "low": float(low[0]), "high": float(high[0]),
                     "rho_input": float(x.mean()), "n_ecgs": n, "n_steps": n_steps, "n_iterations": n_iterations,
                     "level": level})
    return pd.DataFrame(rows, columns=RANDOMIZATION_COLUMNS)


# ---------------------------------------------------------------------------- run folder


def default_targets(target_names) -> tuple[list[str], list[str]]:
    """The estimation targets of the planted windows and two with nothing planted, where the run has them.

    Returns
    -------
    planted : list of str
        ``{lab}_{direction}_est`` of every lab in :data:`~labecg.planted.PLANTED_WINDOWS_S`
        (direction ``high`` for a lab planted in both directions).
    null : list of str
        The first two estimation targets, by name, of the labs whose values the ECG
        cannot carry (:func:`labecg.planted.ecg_null_labs`: nothing planted, and no
        factor the waveform reads).

    :func:`explain_run` falls back to the run's four best estimation targets on the
    validation split (never on test) when none of these exists.
    """
    names = set(target_names)
    effects = {e.label: e for e in PLANTED_EFFECTS}
    planted = []
    for label in PLANTED_WINDOWS_S:
        direction = "high" if effects[label].direction == "both" else effects[label].direction
        name = target_name(label, direction, ESTIMATION)
        if name in names:
            planted.append(name)
    null = sorted(n for label in ecg_null_labs()
                  for n in (target_name(label, d, ESTIMATION) for d in DIRECTIONS) if n in names)[:2]
    return planted, null


def label_windows(frac: pd.DataFrame, null) -> pd.DataFrame:
    """Add ``role``, ``planted_window`` and ``null_fraction`` to :func:`window_fractions`' frame.

    ``role`` is :data:`ROLES` ``[1]`` (``"null_target"``) for the targets in ``null``, else
    ``"planted"``; ``planted_window`` is True on a planted target's own window
    (:data:`~labecg.planted.PLANTED_WINDOWS_S`); ``null_fraction`` is the mean share of the
    null targets in the same window (NaN without null targets).
    """
    planted_role, null_role = ROLES
    frac = frac.copy()
    frac["role"] = np.where(frac["target"].isin(list(null)), null_role, planted_role)
    own = {lab_slug(label): w for label, (w, _, _) in PLANTED_WINDOWS_S.items()}
    frac["planted_window"] = [r.role == planted_role and own.get(parse_target(r.target)[0]) == r.window
                              for r in frac.itertuples()]
    null_mean = frac[frac["role"] == null_role].groupby("window")["fraction"].mean()
    frac["null_fraction"] = frac["window"].map(null_mean)
    return frac


def _best_on_validation(run: Path, names: list[str], top: int) -> list[str]:
    """The ``top`` estimation targets (else any) with the highest validation AUROC, never chosen on test."""
    with np.load(layout.predictions_path(run, "val"), allow_pickle=False) as npz:
        val_auroc = dict(zip(npz["target_names"].astype(str), BINARY.metric(npz["y_true"], npz["y_score"])))
    pool = [t for t in names if parse_target(t)[2] == ESTIMATION] or names
    return sorted(pool, key=lambda t: -np.nan_to_num(val_auroc.get(t, np.nan), nan=-1.0))[:top]


def _attribute(cfg: ExplainConfig, model, ecg, tabular, columns, n_steps: int, fs: float) -> np.ndarray:
    """``cfg.method``'s attribution, shape (K, B, crop, C)."""
    if cfg.method == "integrated_gradients":
        return integrated_gradients(model, ecg, tabular, columns, n_steps)
    return occlusion(model, ecg, tabular, columns, max(1, int(round(cfg.occlusion_s * fs))))


def explain_run(cfg: ExplainConfig) -> Path:
    """Attribute the run's test predictions to the ECG; write ``RUN/evaluation/attribution.npz`` and the checks.

    Writes ``attribution.npz``: ``targets`` (K,) str, ``leads`` (C,) str, ``time_s`` (W,)
    seconds from the R peak, ``attribution`` (K, W, C) mean absolute attribution over all
    beats of the explained ECGs, ``mass_per_ecg`` (K, n, W) the absolute attribution per
    ECG summed over its beats and leads, ``median_beat_mv`` (W, C), ``n_ecgs``,
    ``n_beats``, ``method``, ``seconds`` (wall time of the attribution), ``null_targets``;
    ``attribution_windows.csv`` (:func:`window_fractions` over the planted windows, with
    the interval ``low``/``high`` of each share (:func:`share_intervals`), ``role``
    (planted / null_target, :data:`ROLES`), ``planted_window`` True on a planted
    target's own window, and ``null_fraction``, the mean share of the null targets in the
    same window); ``attribution_contrasts.csv`` (:func:`share_contrasts`; no rows when
    the run has no planted target) and ``attribution_randomization.csv``
    (:func:`randomization_check` on the first ``randomization_ecgs`` explained ECGs; no
    rows when that is 0).

    Returns
    -------
    Path
        ``RUN/evaluation``.
    """
    run = cfg.run_dir
    folder = layout.load_run(run)
    model, config = trained_model(folder), folder.config
    if model.ecg_encoder is None:
        raise ValueError(f"{run / layout.CONFIG}: variant {model.config.variant!r} reads no ECG; "
                         f"explain a fusion or ecg run")
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in config["data"].items()}  # JSON lists
    dm = LabDataModule(DataConfig(**{**data, "cohort_dir": Path(data["cohort_dir"])}))
    dm.setup()
    names = list(dm.target_names)
    if cfg.targets:
        unknown = [t for t in cfg.targets if t not in names]
        if unknown:
            raise KeyError(f"{run / layout.CONFIG}: targets {unknown} are not targets of this run")
        planted, null = list(cfg.targets), []
    else:
        planted, null = default_targets(names)
    if not planted and not null:
        planted = _best_on_validation(run, names, 4)
        log.info("%s: none of the labs of the planted windows is a target; explaining %s", run, planted)
    chosen = planted + null
    columns = [names.index(t) for t in chosen]

    rng = np.random.default_rng(cfg.seed)
    test = dm.rows["test"]
    rows = np.sort(rng.choice(test, size=min(cfg.n_ecgs, test.size), replace=False))
    meta = read_json(Path(dm.cfg.cohort_dir) / layout.SIGNALS_META)
    fs = float(meta["fs_hz"])
    x_mv = np.asarray(dm.dataset.signals[rows], dtype=np.float32)  # (n, L, C)
    n, L, C = x_mv.shape
    crop = dm.cfg.crop_samples
    n_seg = L // crop
    ecg = torch.from_numpy(cut_segments(x_mv, np.repeat(np.arange(n), n_seg), np.tile(np.arange(n_seg) * crop, n),
                                        crop, dm.dataset.mean_mv, dm.dataset.std_mv))  # (n * S, crop, C) in order
    tabular = torch.from_numpy(np.repeat(dm.dataset.tabular[rows], n_seg, axis=0))
    t0 = time.perf_counter()
    attr = _attribute(cfg, model, ecg, tabular, columns, cfg.n_steps, fs)
    seconds = time.perf_counter() - t0
    attr = np.abs(attr).reshape(len(chosen), n, n_seg * crop, C)  # (K, n, L', C) segments end to end

    before, after = int(round(cfg.before_s * fs)), int(round(cfg.after_s * fs))
    per_ecg = np.zeros((len(chosen), n, before + after, C))
    beats_mv, n_beats = [], 0
    for i in range(n):
        peaks = find_r_peaks(x_mv[i, :n_seg * crop], fs)
        beats_mv.append(beat_windows(x_mv[i, :n_seg * crop], peaks, before, after))
        for j in range(len(chosen)):
            per_ecg[j, i] = beat_windows(attr[j, i], peaks, before, after).sum(axis=0)
        n_beats += len(beats_mv[-1])
    if n_beats == 0:
        raise ValueError(f"{run}: no R peak found in the {n} explained ECGs")
    mean_attr = per_ecg.sum(axis=1) / n_beats  # (K, W, C)
    mass = per_ecg.sum(axis=3)  # (K, n, W)
    time_s = np.arange(-before, after) / fs
    median_beat = np.median(np.concatenate(beats_mv), axis=0)  # (W, C)

    windows = {w: (a, b) for w, a, b in PLANTED_WINDOWS_S.values()}
    frac = window_fractions(mean_attr, time_s, chosen, windows)
    share, boot = bootstrap_shares(window_mass(mass, time_s, windows), mass.sum(axis=2), cfg.n_iterations, cfg.seed)
    bounds = share_intervals(share, boot, chosen, windows, cfg.level)
    frac = frac.merge(bounds[["target", "window", "low", "high"]], on=["target", "window"], how="left")
    frac = frac[["target", "window", "start_s", "end_s", "fraction", "low", "high", "uniform"]]
    frac = label_windows(frac, null)
    own = dict(frac.loc[frac["planted_window"].astype(bool), ["target", "window"]].itertuples(index=False))
    contrasts = share_contrasts(share, boot, chosen, windows, own, null, cfg.level, n_ecgs=n)

    r = min(cfg.randomization_ecgs, n)
    randomization = pd.DataFrame(columns=RANDOMIZATION_COLUMNS)
    if r:
        seg = slice(0, r * n_seg)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            redrawn = FusionModel(ModelConfig(**config["model"])).eval()
        maps = [np.abs(_attribute(cfg, m, ecg[seg], tabular[seg], columns, cfg.randomization_steps, fs))
                .reshape(len(chosen), r, -1) for m in (model, redrawn)]  # (K, r, L' C) each
        randomization = randomization_check(attr[:, :r].reshape(len(chosen), r, -1), *maps,
                                            np.abs(ecg[seg].numpy()).reshape(r, -1), chosen,
                                            cfg.randomization_steps, cfg.n_iterations, cfg.seed, cfg.level)

    out = layout.evaluation_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / layout.ATTRIBUTION) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, targets=np.array(chosen), leads=np.array(meta["leads"]), time_s=time_s,
                            attribution=mean_attr.astype(np.float32), mass_per_ecg=mass.astype(np.float32),
                            median_beat_mv=median_beat.astype(np.float32),
                            n_ecgs=np.int64(n), n_beats=np.int64(n_beats), method=np.array(cfg.method),
                            seconds=np.float64(seconds), null_targets=np.array(null, dtype=str))
    for name, frame in ((layout.ATTRIBUTION_WINDOWS, frac), (layout.ATTRIBUTION_CONTRASTS, contrasts),
                        (layout.ATTRIBUTION_RANDOMIZATION, randomization)):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    log.info("attribution (%s): %d targets x %d ECGs (%d beats) in %.1f s", cfg.method, len(chosen), n, n_beats,
             seconds)
    return out


def read_attribution(folder) -> tuple[dict, pd.DataFrame] | tuple[None, None]:
    """``attribution.npz`` (as a dict) and ``attribution_windows.csv`` of ``RUN/evaluation``; (None, None) when absent."""
    folder = Path(folder)
    if not (folder / layout.ATTRIBUTION).exists():
        return None, None
    with np.load(folder / layout.ATTRIBUTION, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    return data, pd.read_csv(folder / layout.ATTRIBUTION_WINDOWS)


def read_attribution_checks(folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``attribution_contrasts.csv`` and ``attribution_randomization.csv`` of ``RUN/evaluation``.

    An empty frame with the stable columns (:data:`CONTRAST_COLUMNS`,
    :data:`RANDOMIZATION_COLUMNS`) for a check the run did not make, or when the folder
    holds no attribution.
    """
    folder = Path(folder)
    frames = []
    for name, columns in ((layout.ATTRIBUTION_CONTRASTS, CONTRAST_COLUMNS),
                          (layout.ATTRIBUTION_RANDOMIZATION, RANDOMIZATION_COLUMNS)):
        path = folder / name
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else pd.DataFrame()
        if path.exists() and frame.columns.size and list(frame.columns) != columns:
            raise KeyError(f"{path}: columns {list(frame.columns)}; expected {columns} (rerun `labecg explain`)")
        frames.append(frame.reindex(columns=columns))
    return frames[0], frames[1]
