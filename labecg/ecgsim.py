"""Per-beat Gaussian-sum ECG model (ECGSYN-style) for the synthetic generator.

A beat is a sum of Gaussian waves (P, Q, R, S, ST, T) of a 3D heart dipole (x left,
y inferior, z anterior). One template per record is placed at every R peak; the dipole
is projected on leads I and II and on the six precordial axes, and the other limb leads
are derived so that Einthoven's and Goldberger's relations hold exactly:
III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2.

Imports no other ``labecg`` module.
"""

from __future__ import annotations

import numpy as np

FS_HZ = 500
N_SAMPLES = 5000
# MIMIC-IV-ECG header order: aVF before aVL.
LEADS_MIMIC = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")

# Precordial axes in the horizontal plane, angle from the left (x) towards anterior (z).
_PRECORDIAL_DEG = np.array([120.0, 95.0, 75.0, 55.0, 30.0, 5.0])
_PRECORDIAL_GAIN = 1.6  # chest electrodes sit closer to the heart than the limb leads

# Template window around the R peak, seconds.
_PRE_S, _POST_S = 0.40, 0.70

# Named parameters of one record (the order of the vector the generator passes in).
PARAM_NAMES = (
    "hr_bpm", "af", "qrs_ms", "qt_ms", "pr_ms", "t_amp", "t_width_s", "r_amp",
    "st_mv", "axis_deg", "noise_mv", "wander_mv", "flat_lead", "nan_start_s", "nan_len_s",
)


def beat_template(p: dict) -> np.ndarray:
    """Dipole template of one beat.

    Returns
    -------
    tmpl : ndarray of shape (3, W), float64
        Millivolts of the x, y, z dipole components, W samples covering
        [-0.40 s, +0.70 s] around the R peak at 500 Hz.
    """
    t = np.arange(-int(_PRE_S * FS_HZ), int(_POST_S * FS_HZ)) / FS_HZ  # (W,)
    qrs = p["qrs_ms"] / 1000.0
    qt = p["qt_ms"] / 1000.0
    bt = p["t_width_s"]
    t_peak = -qrs / 2 + qt - 2.5 * bt  # T wave ends ~2.5 widths after its peak
    ax = np.deg2rad(p["axis_deg"])
    frontal = np.array([np.cos(ax), np.sin(ax), 0.0])  # (3,) mean QRS axis, frontal plane
    posterior = np.array([0.0, 0.0, -1.0])
    r_vec = p["r_amp"] * (0.9 * frontal + 0.45 * posterior)
    waves = [  # (centre s, width s, dipole (3,) mV)
        (-qrs * 0.38, qrs * 0.09, -0.12 * p["r_amp"] * frontal + 0.25 * p["r_amp"] * np.array([0, 0, 1.0])),
        (0.0, qrs * 0.11, r_vec),
        (qrs * 0.36, qrs * 0.10, p["r_amp"] * np.array([-0.15, -0.10, 0.55])),
        (t_peak, bt, p["t_amp"] * (0.30 * frontal + np.array([0.0, 0.0, 0.12]))),
    ]
    if p["st_mv"] != 0.0:
        waves.append(((qrs / 2 + t_peak) / 2, 0.05, p["st_mv"] * np.array([0.8, 0.3, 0.6])))
    if not p["af"]:
        waves.append((-p["pr_ms"] / 1000.0, 0.022, np.array([0.09, 0.11, 0.03])))
    tmpl = np.zeros((3, t.size))
    for centre, width, vec in waves:  # a handful of waves, each vectorized over samples
        tmpl += vec[:, None] * np.exp(-0.5 * ((t - centre) / width) ** 2)[None, :]
    return tmpl


def rr_intervals(p: dict, rng: np.random.Generator) -> np.ndarray:
    """R-R intervals in seconds covering the 10 s record (irregular under AF)."""
    rr_mean = 60.0 / p["hr_bpm"]
    n = int(12.0 / rr_mean) + 4
    if p["af"]:
        rr = rr_mean * np.exp(rng.normal(0.0, 0.22, n))
    else:
        resp = 0.03 * np.sin(2 * np.pi * np.arange(n) * rr_mean / 4.0 + rng.uniform(0, 2 * np.pi))
        rr = rr_mean * (1.0 + resp + rng.normal(0.0, 0.015, n))
    return np.clip(rr, 0.28, 2.0)


def simulate(p: dict, rng: np.random.Generator) -> np.ndarray:
    """Simulate one 10 s, 500 Hz, 12-lead record.

    Parameters
    ----------
    p : dict
        Record parameters named in ``PARAM_NAMES`` (heart rate in bpm, intervals in ms,
        amplitudes in mV, ``flat_lead`` -1 for none or a precordial lead index 6..11,
        ``nan_len_s`` 0 for no NaN stretch).
    rng : numpy.random.Generator

    Returns
    -------
    sig : ndarray of shape (5000, 12), float64
        Millivolts, leads in MIMIC-IV-ECG order I, II, III, aVR, aVF, aVL, V1-V6; NaN
        inside the NaN stretch if any.
    """
    tmpl = beat_template(p)  # (3, W)
    pre = int(_PRE_S * FS_HZ)
    w = tmpl.shape[1]
    rr = rr_intervals(p, rng)
    r_s = rng.uniform(0.0, rr[0]) - rr[0] + np.cumsum(rr)  # R peak times, first within [0, rr0)
    r_idx = np.round(r_s * FS_HZ).astype(int)
    r_idx = r_idx[r_idx < N_SAMPLES + pre]
    pad = N_SAMPLES + 2 * w
    dip = np.zeros((3, pad))
    idx = (r_idx[:, None] - pre + w + np.arange(w)[None, :]).ravel()  # (n_beats * W,)
    for c in range(3):
        dip[c] = np.bincount(idx, weights=np.tile(tmpl[c], r_idx.size), minlength=pad)[:pad]
    dip = dip[:, w:w + N_SAMPLES]  # (3, L)
    t = np.arange(N_SAMPLES) / FS_HZ
    if p["af"]:  # fibrillatory waves instead of P waves
        f = rng.uniform(5.0, 7.0)
        dip += 0.04 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))[None, :] * np.array([0.3, 0.5, 1.0])[:, None]
    # baseline wander: breathing-frequency sinusoids on the dipole so derived leads stay consistent
    for fw in (rng.uniform(0.12, 0.35), rng.uniform(0.35, 0.6)):
        dip += p["wander_mv"] * rng.normal(0, 1, (3, 1)) * np.sin(2 * np.pi * fw * t + rng.uniform(0, 6.3))[None, :]
    ang = np.deg2rad(_PRECORDIAL_DEG)
    chest = _PRECORDIAL_GAIN * np.stack([np.cos(ang), 0.15 * np.ones(6), np.sin(ang)], axis=1)  # (6, 3)
    lead_i = dip[0]
    lead_ii = 0.5 * dip[0] + np.sqrt(3) / 2 * dip[1]
    noise = p["noise_mv"] * rng.normal(0.0, 1.0, (8, N_SAMPLES))
    lead_i = lead_i + noise[0]
    lead_ii = lead_ii + noise[1]
    v = chest @ dip + noise[2:]  # (6, L)
    sig = np.empty((N_SAMPLES, 12))
    sig[:, 0] = lead_i
    sig[:, 1] = lead_ii
    sig[:, 2] = lead_ii - lead_i
    sig[:, 3] = -(lead_i + lead_ii) / 2
    sig[:, 4] = lead_ii - lead_i / 2  # aVF
    sig[:, 5] = lead_i - lead_ii / 2  # aVL
    sig[:, 6:] = v.T
    if p["flat_lead"] >= 6:
        sig[:, int(p["flat_lead"])] = 0.0
    if p["nan_len_s"] > 0:
        a = int(p["nan_start_s"] * FS_HZ)
        sig[a:a + int(p["nan_len_s"] * FS_HZ), :] = np.nan
    return np.clip(sig, -32.0, 32.0)
