"""Reading one 12-lead WFDB record in millivolts, cleaning it, and resampling it.

The record-level half of the signal conversion, free of any cohort: :func:`read_record`
reads the first :data:`RECORD_S` seconds of a record's 12 standard leads by name
(MIMIC-IV-ECG's format-16 layout directly with numpy, anything else ``wfdb`` reads through
``wfdb.rdrecord``) in millivolts, in the stored lead order :data:`LEADS`;
:func:`clean_signal` interpolates missing samples and flags flat or mostly missing leads;
:func:`resample` changes the rate with a zero-phase anti-aliasing filter, whose measured
response is :func:`filter_response`. A record that cannot be used raises
:class:`RecordError`, whose message is the reason :mod:`labecg.signals` writes into the
manifest (and :mod:`labecg.predict` shows).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import wfdb
from scipy.signal import resample_poly
from wfdb.io.header import rx_record, rx_signal

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF",
                          "V1", "V2", "V3", "V4", "V5", "V6")
SOURCE_FS_HZ = 500.0  # MIMIC-IV-ECG's rate; other sources bring their own
SOURCE_SAMPLES = 5000  # 10 s at 500 Hz
RECORD_S = 10.0  # every record is cut to its first 10 s; shorter ones are rejected
#: A lead missing more than this fraction of its samples flags the record (SignalsConfig's default).
MAX_NAN_FRAC = 0.5
#: A lead whose peak-to-peak amplitude is below this, mV, is flat and flags the record (the same).
FLAT_MV = 0.01
# physical units of an ECG lead -> factor to millivolts (lower case; micro sign and Greek mu)
MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3}


class RecordError(ValueError):
    """A record that cannot be converted; the message is the manifest's reason."""


class RecordFlag(RecordError):
    """A readable record with a flat or mostly missing lead (kept unless ``exclude_flagged``)."""


def _read_format16(path: Path) -> Optional[tuple[np.ndarray, list[str], list[str], float]]:
    """Read the common MIMIC-IV-ECG layout directly: one .dat, format 16, no skew or offset.

    wfdb's header parser spends much of a record's read time in pandas look-ups
    (``bench/signals.py`` prints ``wfdb.rdsamp``'s time per record beside the conversion's); this reads the same
    fields with wfdb's own header regular expressions and the first :data:`RECORD_S`
    seconds of samples with one ``numpy.fromfile``. Returns None for any other layout
    (the caller falls back to wfdb).

    Returns
    -------
    x : ndarray of shape (n, n_sig), float64, physical units (NaN where the sample is -32768)
        n = min(sig_len, ceil(RECORD_S * fs)).
    names, units : list of str, header order
    fs : float, Hz
    """
    lines = [ln.strip() for ln in path.with_suffix(".hea").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    rec = rx_record.match(lines[0]) if lines else None
    if rec is None or rec["n_seg"] or not rec["fs"] or not rec["sig_len"]:
        return None
    n_sig, sig_len, fs = int(rec["n_sig"]), int(rec["sig_len"]), float(rec["fs"])
    sigs = [rx_signal.match(ln) for ln in lines[1:1 + n_sig]]
    if n_sig == 0 or len(sigs) != n_sig or any(m is None for m in sigs):
        return None
    if any(m["fmt"] != "16" or m["samps_per_frame"] or m["skew"] or m["byte_offset"]
           or m["file_name"] != sigs[0]["file_name"] for m in sigs):
        return None
    gain = np.array([float(m["adc_gain"] or 200.0) or 200.0 for m in sigs])
    baseline = np.array([int(m["baseline"]) if m["baseline"] else int(m["adc_zero"] or 0)
                         for m in sigs], dtype=np.float64)
    n = min(sig_len, math.ceil(RECORD_S * fs - 1e-9)) if fs > 0 else sig_len
    d = np.fromfile(path.parent / sigs[0]["file_name"], dtype="<i2", count=n_sig * n)
    if d.size < n_sig * n:
        raise RecordError(f"truncated: {d.size // n_sig} samples in {sigs[0]['file_name']}, "
                          f"expected {sig_len}")
    d = d.reshape(n, n_sig)
    x = (d - baseline) / gain
    x[d == -32768] = np.nan  # WFDB's "no sample" value for format 16
    return x, [m["sig_name"] for m in sigs], [m["units"] or "mV" for m in sigs], fs


def _read_wfdb(path: Path) -> tuple[np.ndarray, list[str], list[str], float]:
    """Read the first :data:`RECORD_S` seconds of any record ``wfdb`` reads (every channel).

    Returns
    -------
    x : ndarray of shape (n, n_sig), float64, physical units; NaN where a sample is missing
    names, units : list of str, header order
    fs : float, Hz
    """
    header = wfdb.rdheader(str(path))
    fs = float(header.fs)
    sampto = None
    if header.sig_len and fs > 0:
        sampto = min(int(header.sig_len), math.ceil(RECORD_S * fs - 1e-9))
    rec = wfdb.rdrecord(str(path), sampto=sampto)
    if rec.p_signal is None:
        raise RecordError("unreadable: no physical signal")
    units = [u or "mV" for u in (rec.units or [None] * rec.n_sig)]
    return rec.p_signal, list(rec.sig_name), units, float(rec.fs)


def header_fs_problem(path: str | os.PathLike) -> str:
    """Why the sampling rate a ``.hea`` states is unusable ("" when it is a positive number or absent).

    WFDB's header grammar has no sign or NaN, so ``wfdb`` reads ``-500`` or ``nan`` as an
    absent rate and falls back to 250 Hz; a record read that way is scored wrongly, never
    refused. This reads the token itself: the third field of the first line that is not a
    comment, up to its ``/`` (counter frequency).
    """
    try:
        lines = Path(path).with_suffix(".hea").read_text(errors="replace").splitlines()
    except OSError:
        return ""  # the reader names a missing header
    first = next((ln.split() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), [])
    if len(first) < 3:
        return ""
    token = first[2].split("/")[0]
    try:
        fs = float(token)
    except ValueError:
        return ""  # e.g. a base time in the third field: no rate given, WFDB's 250 Hz default applies
    if not (math.isfinite(fs) and fs > 0):
        return f"header sampling rate {first[2]!r} is not a positive number (wfdb would read it as 250 Hz)"
    return ""


def read_record(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read the first 10 s of one WFDB record's 12 standard leads, in millivolts.

    Leads are matched by name without regard to case (``i``, ``avr``, ``V1``), never by
    position: MIMIC-IV-ECG headers list I, II, III, aVR, aVF, aVL, V1-V6, PTB's list
    ``i ... v6`` and three Frank leads; the stored order is :data:`LEADS`, other channels
    are ignored. Units ``mV``/``mv``, ``uV``/``µV`` and ``V`` are converted to millivolts.
    Records in MIMIC-IV-ECG's layout (format 16, one .dat) are read directly with numpy;
    anything else goes through ``wfdb.rdrecord`` (other formats, several signal files,
    ``.mat`` signal files at a byte offset, multi-segment records).

    Parameters
    ----------
    path : path-like
        Record path without extension (``.../40689238`` for ``40689238.hea/.dat``).

    Returns
    -------
    x : ndarray of shape (ceil(10 * fs_hz), 12), float64
        Millivolts at the record's own rate, samples [0 s, 10 s) of the record, leads I,
        II, III, aVR, aVL, aVF, V1-V6; NaN where the record marks a sample missing.
    fs_hz : float
        The record's sampling rate.

    Raises
    ------
    RecordError
        Unreadable or truncated file, a record shorter than 10 s (the reason gives its
        length), a unit that is not a voltage, a missing or duplicated lead.
    """
    path = Path(path)
    try:
        fast = _read_format16(path)
        if fast is None:  # the fast path reads only a positive rate; wfdb turns a bad one into 250 Hz
            bad_fs = header_fs_problem(path)
            if bad_fs:
                raise RecordError(f"unreadable: {bad_fs}")
            fast = _read_wfdb(path)
    except RecordError:
        raise
    except FileNotFoundError as e:
        raise RecordError(f"missing file: {e.filename or path}") from None
    except Exception as e:  # wfdb raises ValueError, struct/IndexError... on corrupt files
        raise RecordError(f"unreadable: {type(e).__name__}: {e}") from None
    x, sig_name, sig_units, fs = fast
    fs = float(fs)
    if not fs > 0:
        raise RecordError(f"unreadable: sampling rate {fs} Hz")
    n_keep = math.ceil(RECORD_S * fs - 1e-9)
    if x.shape[0] < n_keep:
        raise RecordError(f"short: {x.shape[0]} samples = {x.shape[0] / fs:.3g} s at {fs:g} Hz, "
                          f"expected at least {RECORD_S:g} s")
    names = [str(n).strip().lower() for n in sig_name]
    index, factor = [], []
    for lead in LEADS:
        hits = [i for i, n in enumerate(names) if n == lead.lower()]
        if not hits:
            raise RecordError(f"missing lead {lead}; header has {list(sig_name)}")
        if len(hits) > 1:
            raise RecordError(f"lead {lead} appears {len(hits)} times in {list(sig_name)}")
        unit = str(sig_units[hits[0]]).strip()
        if unit.lower() not in MV_PER_UNIT:
            raise RecordError(f"lead {lead} in {unit!r}, expected mV, uV, \u00b5V or V")
        index.append(hits[0])
        factor.append(MV_PER_UNIT[unit.lower()])
    x = x[:n_keep, index]
    if any(f != 1.0 for f in factor):
        x = x * np.asarray(factor)
    return x, fs


def clean_signal(x: np.ndarray, max_nan_frac: float = MAX_NAN_FRAC, flat_mv: float = FLAT_MV,
                 flags: Optional[list] = None) -> np.ndarray:
    """Interpolate missing samples per lead; flag NaN-filled and flat records.

    Parameters
    ----------
    x : ndarray of shape (L, C)
        Millivolts; NaN marks missing samples.
    max_nan_frac : float
        A lead with more missing samples than this fraction flags the record.
    flat_mv : float
        A lead with peak-to-peak amplitude below this (mV) after interpolation flags it.
    flags : list, optional
        Where the flags go (their reasons are appended). None: the first flag raises.

    Returns
    -------
    y : ndarray of shape (L, C), float64
        ``x`` with each NaN replaced by linear interpolation between the nearest observed
        samples of the same lead (the nearest observed value at the record's ends); a lead
        without any observed sample is all zeros.

    Raises
    ------
    RecordFlag
        Only when ``flags`` is None. Reason names the leads: ``NaN-filled: leads [...] >
        50% missing`` or ``flat: leads [...] peak-to-peak < 0.01 mV``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(LEADS):
        raise ValueError(f"x must have shape (L, {len(LEADS)}), got {x.shape}")
    found, bad = [], []
    missing = np.isnan(x) | np.isinf(x)
    if missing.any():
        frac = missing.mean(axis=0)
        bad = [LEADS[c] for c in np.flatnonzero(frac > max_nan_frac)]
        if bad:
            found.append(f"NaN-filled: leads {bad} > {max_nan_frac:.0%} missing")
        x = x.copy()
        t = np.arange(x.shape[0])
        for c in np.flatnonzero(missing.any(axis=0)):
            m = missing[:, c]
            x[m, c] = np.interp(t[m], t[~m], x[~m, c]) if (~m).any() else 0.0
    ptp = x.max(axis=0) - x.min(axis=0)
    flat = [LEADS[c] for c in np.flatnonzero(ptp < flat_mv) if LEADS[c] not in bad]  # NaN-filled: named once
    if flat:
        found.append(f"flat: leads {flat} peak-to-peak < {flat_mv:g} mV")
    if found and flags is None:
        raise RecordFlag("; ".join(found))
    if flags is not None:
        flags.extend(found)
    return x


@lru_cache(maxsize=64)
def _resampling_factors(fs_in_hz: float, fs_out_hz: float) -> tuple[int, int]:
    """(up, down): fs_out_hz / fs_in_hz in lowest terms, the rates read as written decimals."""
    ratio = Fraction(repr(fs_out_hz)) / Fraction(repr(fs_in_hz))
    return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, fs_in_hz: float, fs_out_hz: float) -> np.ndarray:
    """Resample from ``fs_in_hz`` to ``fs_out_hz`` with a zero-phase anti-aliasing filter.

    ``scipy.signal.resample_poly(x, up, down)``, ``up / down = fs_out_hz / fs_in_hz`` in
    lowest terms (500 -> 100 Hz: 1/5; 1000 -> 100 Hz: 1/10; 257 -> 100 Hz: 100/257): a
    Kaiser-windowed (beta 5) FIR low-pass of 20*max(up, down)+1 taps, cut off at the
    lower Nyquist rate, applied centred, so output sample ``k`` sits at time
    ``k / fs_out_hz`` (no delay, linear phase). The record is extended by a fitted line at
    both ends (``padtype="line"``) rather than zeros, so a baseline offset does not ring
    at the edges (edge error on a 0.7 mV offset: 0.03 mV instead of 0.25 mV). Measured at
    500 -> 100 Hz (:func:`filter_response`): 60 Hz attenuated by 55 dB, a 5 Hz sine passed with
    +0.13% amplitude.
    Chosen over filtfilt + decimation (an IIR Chebyshev run forward and backward): same
    passband, faster (``bench/signals.py`` prints both times per record), and no edge transient from the filter's initial conditions
    beyond the padding. A record already at ``fs_out_hz`` is returned unfiltered.

    Parameters
    ----------
    x : ndarray of shape (L, C)
        Samples at ``fs_in_hz``.
    fs_in_hz, fs_out_hz : float
        Rates in Hz; their ratio must reduce to integers up to 1000.

    Returns
    -------
    y : ndarray of shape (ceil(L * up / down), C), float64
        Samples at ``fs_out_hz``; ``x`` itself when the rates are equal.
    """
    up, down = _resampling_factors(float(fs_in_hz), float(fs_out_hz))
    if up == down:
        return x
    if max(up, down) > 1000:
        raise RecordError(f"fs {fs_in_hz:g} Hz: no resampling ratio to {fs_out_hz:g} Hz with "
                          f"factors up to 1000 (got {up}/{down})")
    return resample_poly(x, up, down, axis=0, padtype="line")


def filter_response(fs_in_hz: float = SOURCE_FS_HZ, fs_out_hz: float = 100.0, freqs_hz=None) -> pd.DataFrame:
    """The amplitude response of :func:`resample`, measured with sines.

    Each frequency: a unit sine of ``RECORD_S`` seconds at ``fs_in_hz`` goes through
    :func:`resample` to ``fs_out_hz``; the gain is the RMS of the output, first and last
    second left out (the padding's reach), times sqrt(2). Above the output's Nyquist rate
    the sine comes out aliased to a lower frequency, and its gain is what leaks into the
    stored record. The measurement is of the function that converts the records, so it
    shows the filter as used, not as designed.

    Parameters
    ----------
    fs_in_hz, fs_out_hz : float
        Rates in Hz (MIMIC-IV-ECG's 500 Hz to the stored 100 Hz by default).
    freqs_hz : array-like of shape (n_freqs,), optional
        Frequencies in Hz below fs_in_hz / 2. Default: every 0.5 Hz from 0.5 Hz, except
        the multiples of fs_out_hz / 2, where the output samples a sine at fixed phases
        and shows no amplitude to read.

    Returns
    -------
    DataFrame indexed by ``freq_hz`` (float) with columns ``gain`` (output over input
    amplitude) and ``gain_db`` (20 log10 gain, floored at -240 dB).
    """
    if freqs_hz is None:
        grid = np.arange(0.5, fs_in_hz / 2, 0.5)
        half_rate = fs_out_hz / 2
        freqs_hz = grid[np.abs(grid / half_rate - np.round(grid / half_rate)) > 1e-9]
    freqs = np.asarray(freqs_hz, dtype=np.float64)
    if freqs.ndim != 1 or not ((freqs > 0) & (freqs < fs_in_hz / 2)).all():
        raise ValueError(f"freqs_hz must be frequencies in (0, {fs_in_hz / 2:g}) Hz; got {freqs_hz!r}")
    t_s = np.arange(round(RECORD_S * fs_in_hz)) / fs_in_hz  # (L,)
    y = resample(np.sin(2 * np.pi * t_s[:, None] * freqs[None, :]), fs_in_hz, fs_out_hz)  # (L_out, n_freqs)
    edge = int(round(fs_out_hz))  # one second at each end
    gain = np.sqrt(2.0 * np.mean(y[edge:-edge] ** 2, axis=0))
    return pd.DataFrame({"gain": gain, "gain_db": 20 * np.log10(np.maximum(gain, 1e-12))},
                        index=pd.Index(freqs, name="freq_hz"))
