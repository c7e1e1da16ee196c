"""What in the ECG the model uses: attribution of a target's output to the ECG, aligned on the R peak.

For each explained target and each of ``n_ecgs`` test ECGs, the target's logit on each of
the four 2.5 s segments that the test predictions average is attributed to every input
sample and lead, by integrated gradients (:func:`integrated_gradients`) or by occlusion
(:func:`occlusion`); the segments are put back end to end (10 s). R peaks are found in the
ECG (:func:`find_r_peaks`), and the absolute attribution is averaged over every beat in a
window around its R peak, per lead (:func:`beat_windows`): a heat strip over the median
beat (:func:`labecg.figures.plot_attribution`).

On the synthetic source the truth is known (:data:`labecg.synthetic.PLANTED_WINDOWS_S`):
potassium is planted in the T wave, calcium in the QT interval (the ST-T segment),
NTproBNP in the QRS voltage (and the rate), troponin in the ST segment.
:func:`window_fractions` gives the share of each target's attribution mass inside that
window, beside the share of targets with nothing planted, on the same ECGs. On real data
the same figure shows what the model uses, with no claim attached.
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

from labecg.data import DataConfig, LabDataModule
from labecg.model import FusionModel, ModelConfig
from labecg.synthetic import PLANTED_EFFECTS, PLANTED_WINDOWS_S
from labecg.util import atomic_path, get_logger, lab_slug, read_json

__all__ = ["ExplainConfig", "explain_run", "integrated_gradients", "occlusion", "find_r_peaks",
           "beat_windows", "window_fractions", "read_attribution", "default_targets", "load_model",
           "label_windows", "ATTRIBUTION_FILE", "WINDOWS_FILE", "ROLES"]

log = get_logger("labecg.explain")

ATTRIBUTION_FILE = "attribution.npz"
WINDOWS_FILE = "attribution_windows.csv"
Method = Literal["integrated_gradients", "occlusion"]
#: ``role`` of a target in ``attribution_windows.csv``: its effect was planted, or nothing was.
#: Not "null": ``pd.read_csv`` reads that (and "NA", "None", "NaN", ...) back as missing.
ROLES = ("planted", "null_target")


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of ``labecg explain``.

    Attributes
    ----------
    run_dir : Path
        Run folder of ``labecg train`` (``config.json``, ``checkpoints/best.ckpt``); the
        cohort folder recorded in its ``config.json`` supplies the test ECGs.
    method : {"integrated_gradients", "occlusion"}
        Integrated gradients from an all-zero (lead-mean) baseline, per sample and lead;
        or occlusion of ``occlusion_s`` stretches of all leads at once (time only).
        Measured on the classroom run (bench/explain.py, 48 ECGs, 6 targets, loaded
        2-core CPU): occlusion (0.08 s) took 30 s, integrated gradients 132 s (8 steps)
        and 229 s (16 steps), with planted-window shares within 0.06 of each other and
        8 and 16 steps equal to 3 decimals. Integrated gradients is the default because
        only it resolves leads; 8 steps and 24 ECGs keep it to about a quarter of that.
    n_ecgs : int
        Test ECGs explained (drawn with ``seed``); the same ECGs for every target.
    n_steps : int
        Integrated-gradients steps (midpoint rule).
    occlusion_s : float
        Width of an occluded stretch, seconds.
    targets : tuple of str
        Targets to explain; empty: :func:`default_targets`.
    before_s, after_s : float
        Beat window around each R peak, seconds: [R - before_s, R + after_s).
    seed : int
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

    def __post_init__(self):
        if self.method not in ("integrated_gradients", "occlusion"):
            raise ValueError(f"method must be 'integrated_gradients' or 'occlusion', got {self.method!r}")
        for name in ("n_ecgs", "n_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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


# ---------------------------------------------------------------------------- run folder


def default_targets(target_names) -> tuple[list[str], list[str]]:
    """The estimation targets of the planted windows and two with nothing planted, where the run has them.

    Returns
    -------
    planted : list of str
        ``{lab}_{direction}_est`` of every lab in :data:`~labecg.synthetic.PLANTED_WINDOWS_S`
        (direction ``high`` for a lab planted in both directions).
    null : list of str
        The first two estimation targets, by name, of labs planted with strength 0.

    :func:`explain_run` falls back to the run's first four estimation targets when none
    of these exists.
    """
    names = set(target_names)
    effects = {e.label: e for e in PLANTED_EFFECTS}
    planted = []
    for label in PLANTED_WINDOWS_S:
        direction = "high" if effects[label].direction == "both" else effects[label].direction
        name = f"{lab_slug(label)}_{direction}_est"
        if name in names:
            planted.append(name)
    null = sorted(n for e in PLANTED_EFFECTS if e.strength == 0
                  for n in (f"{lab_slug(e.label)}_{d}_est" for d in ("low", "high")) if n in names)[:2]
    return planted, null


def label_windows(frac: pd.DataFrame, null) -> pd.DataFrame:
    """Add ``role``, ``planted_window`` and ``null_fraction`` to :func:`window_fractions`' frame.

    ``role`` is :data:`ROLES` ``[1]`` (``"null_target"``) for the targets in ``null``, else
    ``"planted"``; ``planted_window`` is True on a planted target's own window
    (:data:`~labecg.synthetic.PLANTED_WINDOWS_S`); ``null_fraction`` is the mean share of the
    null targets in the same window (NaN without null targets).
    """
    planted_role, null_role = ROLES
    frac = frac.copy()
    frac["role"] = np.where(frac["target"].isin(list(null)), null_role, planted_role)
    own = {f"{lab_slug(label)}": w for label, (w, _, _) in PLANTED_WINDOWS_S.items()}
    frac["planted_window"] = [r.role == planted_role and own.get(r.target.rsplit("_", 2)[0]) == r.window
                              for r in frac.itertuples()]
    null_mean = frac[frac["role"] == null_role].groupby("window")["fraction"].mean()
    frac["null_fraction"] = frac["window"].map(null_mean)
    return frac


def load_model(run) -> tuple[FusionModel, dict]:
    """The best checkpoint of a run folder, in evaluation mode, and the run's ``config.json``."""
    run = Path(run)
    cfg_path, ckpt = run / "config.json", run / "checkpoints" / "best.ckpt"
    for path in (cfg_path, ckpt):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; expected a run folder written by `labecg train`")
    config = read_json(cfg_path)
    model = FusionModel(ModelConfig(**config["model"]))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.eval(), config


def explain_run(cfg: ExplainConfig) -> Path:
    """Attribute the run's test predictions to the ECG; write ``RUN/evaluation/attribution.npz`` and the window shares.

    Writes ``attribution.npz``: ``targets`` (K,) str, ``leads`` (C,) str, ``time_s`` (W,)
    seconds from the R peak, ``attribution`` (K, W, C) mean absolute attribution over all
    beats of the explained ECGs, ``median_beat_mv`` (W, C), ``n_ecgs``, ``n_beats``,
    ``method``, ``seconds`` (wall time of the attribution); and
    ``attribution_windows.csv`` (:func:`window_fractions` over the planted windows, with
    ``role`` planted/null_target (:data:`ROLES`), ``planted_window`` True on a planted target's own window, and
    ``null_fraction``, the mean share of the null targets in the same window).

    Returns
    -------
    Path
        ``RUN/evaluation``.
    """
    run = Path(cfg.run_dir)
    model, config = load_model(run)
    if model.ecg_encoder is None:
        raise ValueError(f"{run / 'config.json'}: variant {model.config.variant!r} reads no ECG; "
                         f"explain a fusion or ecg run")
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in config["data"].items()}  # JSON lists
    dm = LabDataModule(DataConfig(**{**data, "cohort_dir": Path(data["cohort_dir"])}))
    dm.setup()
    names = list(dm.target_names)
    if cfg.targets:
        unknown = [t for t in cfg.targets if t not in names]
        if unknown:
            raise KeyError(f"{run / 'config.json'}: targets {unknown} are not targets of this run")
        planted, null = list(cfg.targets), []
    else:
        planted, null = default_targets(names)
    if not planted and not null:
        planted = ([t for t in names if t.endswith("_est")] or names)[:4]
        log.info("%s: none of the labs of the planted windows is a target; explaining %s", run, planted)
    chosen = planted + null
    columns = [names.index(t) for t in chosen]

    rng = np.random.default_rng(cfg.seed)
    test = dm.rows["test"]
    rows = np.sort(rng.choice(test, size=min(cfg.n_ecgs, test.size), replace=False))
    meta = read_json(Path(dm.cfg.cohort_dir) / "signals.json")
    fs = float(meta["fs_hz"])
    x_mv = np.asarray(dm.dataset.signals[rows], dtype=np.float32)  # (n, L, C)
    n, L, C = x_mv.shape
    crop = dm.cfg.crop_samples
    n_seg = L // crop
    ecg = (x_mv[:, :n_seg * crop] - dm.dataset.mean) * dm.dataset.scale
    ecg = torch.from_numpy(ecg.reshape(n * n_seg, crop, C))  # (n * S, crop, C) segments in order
    tabular = torch.from_numpy(np.repeat(dm.dataset.tabular[rows], n_seg, axis=0))
    t0 = time.perf_counter()
    if cfg.method == "integrated_gradients":
        attr = integrated_gradients(model, ecg, tabular, columns, cfg.n_steps)
    else:
        attr = occlusion(model, ecg, tabular, columns, max(1, int(round(cfg.occlusion_s * fs))))
    seconds = time.perf_counter() - t0
    attr = np.abs(attr).reshape(len(chosen), n, n_seg * crop, C)  # (K, n, L', C) segments end to end

    before, after = int(round(cfg.before_s * fs)), int(round(cfg.after_s * fs))
    sums = np.zeros((len(chosen), before + after, C))
    beats_mv, n_beats = [], 0
    for i in range(n):
        peaks = find_r_peaks(x_mv[i, :n_seg * crop], fs)
        beats_mv.append(beat_windows(x_mv[i, :n_seg * crop], peaks, before, after))
        for j in range(len(chosen)):
            sums[j] += beat_windows(attr[j, i], peaks, before, after).sum(axis=0)
        n_beats += len(beats_mv[-1])
    if n_beats == 0:
        raise ValueError(f"{run}: no R peak found in the {n} explained ECGs")
    mean_attr = sums / n_beats  # (K, W, C)
    time_s = np.arange(-before, after) / fs
    median_beat = np.median(np.concatenate(beats_mv), axis=0)  # (W, C)

    windows = {w: (a, b) for w, a, b in PLANTED_WINDOWS_S.values()}
    frac = window_fractions(mean_attr, time_s, chosen, windows)
    frac = label_windows(frac, null)

    out = run / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / ATTRIBUTION_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, targets=np.array(chosen), leads=np.array(meta["leads"]), time_s=time_s,
                            attribution=mean_attr.astype(np.float32), median_beat_mv=median_beat.astype(np.float32),
                            n_ecgs=np.int64(n), n_beats=np.int64(n_beats), method=np.array(cfg.method),
                            seconds=np.float64(seconds), null_targets=np.array(null, dtype=str))
    with atomic_path(out / WINDOWS_FILE) as tmp:
        frac.to_csv(tmp, index=False)
    log.info("attribution (%s): %d targets x %d ECGs (%d beats) in %.1f s", cfg.method, len(chosen), n, n_beats,
             seconds)
    return out


def read_attribution(folder) -> tuple[dict, pd.DataFrame] | tuple[None, None]:
    """``attribution.npz`` (as a dict) and ``attribution_windows.csv`` of ``RUN/evaluation``; (None, None) when absent."""
    folder = Path(folder)
    if not (folder / ATTRIBUTION_FILE).exists():
        return None, None
    with np.load(folder / ATTRIBUTION_FILE, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    return data, pd.read_csv(folder / WINDOWS_FILE)
