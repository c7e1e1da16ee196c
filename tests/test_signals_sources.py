"""labecg.signals on 12-lead WFDB records of other origins and layouts than MIMIC-IV-ECG.

The real records under tests/data (README.md there: origin, licence, cropping) are checked
against an independent computation written here with ``wfdb.rdrecord`` and
``scipy.signal.resample_poly``, and against the lead identities of the 12-lead ECG
(Einthoven, Goldberger), which hold for any correctly named record.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import resample_poly

from labecg.records import LEADS, RecordError, read_record, resample
from labecg.signals import SignalsConfig, convert_record, convert_signals, load_signals

DATA = Path(__file__).parent / "data"
# record (relative to DATA) -> (sampling rate in Hz, samples in the file)
REAL = {"ptbdb/s0010_re": (1000, 12000),     # PTB Diagnostic: i ... v6 + vx vy vz in a 2nd file
        "cinc2021/HR06000": (500, 5000),     # PTB-XL as in CinC 2021: .mat at offset 24, "mv"
        "cinc2021/JS20000": (500, 5000),     # Ningbo (CinC 2021), .mat
        "cinc2021/E07500": (500, 5000)}      # Georgia (CinC 2021), .mat
UNREADABLE = "cinc2021/E07500_orig"          # the challenge's header: wfdb rejects its record line
MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def independent(path: Path, fs_out: float = 100.0, clip_mv: float = 3.0) -> np.ndarray:
    """First 10 s of the 12 leads by lower-case name, in mV, clipped, resampled, clipped."""
    rec = wfdb.rdrecord(str(path))
    names = [n.lower() for n in rec.sig_name]
    cols = [names.index(lead.lower()) for lead in LEADS]
    to_mv = np.array([{"mv": 1.0, "uv": 1e-3}[rec.units[c].lower()] for c in cols])
    n10 = int(round(10 * rec.fs))
    x = np.clip(rec.p_signal[:n10, cols] * to_mv, -clip_mv, clip_mv)
    if rec.fs == fs_out:
        return x
    ratio = Fraction(int(fs_out)) / Fraction(int(rec.fs))
    y = resample_poly(x, ratio.numerator, ratio.denominator, axis=0, padtype="line")
    return np.clip(y, -clip_mv, clip_mv)


def assert_limb_leads_consistent(x: np.ndarray, atol_mv: float) -> None:
    """Einthoven and Goldberger: holds only if every limb lead was picked by the right name."""
    i, ii, iii, avr, avl, avf = (x[:, k] for k in range(6))
    np.testing.assert_allclose(i + iii, ii, atol=atol_mv)
    np.testing.assert_allclose(avr, -(i + ii) / 2, atol=atol_mv)
    np.testing.assert_allclose(avl, (i - iii) / 2, atol=atol_mv)
    np.testing.assert_allclose(avf, (ii + iii) / 2, atol=atol_mv)


def _cfg(tmp_path: Path, **kw) -> SignalsConfig:
    return SignalsConfig(cohort_dir=tmp_path, ecg=tmp_path, **kw)


# ---------------------------------------------------------------------------- one record

@pytest.mark.parametrize("name", sorted(REAL))
def test_real_record_converts_like_rdrecord_and_resample_poly(name, tmp_path):
    fs, n_file = REAL[name]
    path = DATA / name
    assert wfdb.rdheader(str(path)).sig_len == n_file  # the README's description of the file
    x, got_fs = read_record(path)
    assert got_fs == fs and x.shape == (10 * fs, 12)
    # ADC steps of 1-2 uV: derived leads agree to a few steps
    assert_limb_leads_consistent(x, atol_mv=0.01)
    y = convert_record(path, _cfg(tmp_path))
    assert y.shape == (1000, 12) and y.dtype == np.float16
    ref = independent(path)
    assert ref.shape == (1000, 12)
    # float16 rounding: half a step, 2**-11 relative
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=2 ** -10, atol=1e-4)
    # float32 output is the same computation without the float16 rounding
    y32 = convert_record(path, _cfg(tmp_path, dtype="float32"))
    np.testing.assert_allclose(y32.astype(np.float64), ref, rtol=1e-6, atol=1e-6)


def test_longer_record_contributes_its_first_10_s_only(tmp_path):
    path = DATA / "ptbdb/s0010_re"
    rec = wfdb.rdrecord(str(path))
    assert rec.sig_len == 12000 and rec.n_sig == 15  # 12 s, 12 leads + 3 Frank leads
    y = convert_record(path, _cfg(tmp_path, dtype="float32")).astype(np.float64)
    later = independent(path)  # samples 0..9999
    cols = [[n.lower() for n in rec.sig_name].index(lead.lower()) for lead in LEADS]
    shifted = resample_poly(np.clip(rec.p_signal[2000:12000, cols], -3, 3), 1, 10, axis=0, padtype="line")
    np.testing.assert_allclose(y, later, atol=1e-6)
    assert np.abs(y - shifted).max() > 0.1  # not the last 10 s


def test_unreadable_real_header_names_the_problem():
    with pytest.raises(RecordError, match="unreadable.*record line"):
        read_record(DATA / UNREADABLE)


# ---------------------------------------------------------------------------- written records

def _write(root: Path, name: str, x_mv: np.ndarray, fs: float, names=MIMIC_ORDER, units="mV",
           fmt="16", gain=200.0) -> Path:
    """Write ``x_mv`` (stored lead order) under header names ``names`` in ``units``."""
    cols = [[lead.lower() for lead in LEADS].index(n.lower()) if n.lower() in [lead.lower() for lead in LEADS]
            else 0 for n in names]
    scale = {"mV": 1.0, "uV": 1e3, "µV": 1e3}[units]
    wfdb.wrsamp(name, fs=fs, units=[units] * len(names), sig_name=list(names), p_signal=x_mv[:, cols] * scale,
                fmt=[fmt] * len(names), adc_gain=[gain / scale] * len(names), baseline=[0] * len(names),
                write_dir=str(root))
    return root / name


def _sines(n: int, fs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    f = 0.7 + 0.4 * np.arange(12)  # 0.7 ... 5.1 Hz
    return rng.uniform(0.3, 1.2, 12) * np.sin(2 * np.pi * f * t[:, None] + rng.uniform(0, 6, 12))


def test_record_at_100_hz_is_not_filtered(tmp_path):
    x = _sines(1200, 100.0)  # 12 s at 100 Hz
    path = _write(tmp_path, "r100", x, 100.0)
    y = convert_record(path, _cfg(tmp_path, dtype="float32"))
    raw = wfdb.rdrecord(str(path)).p_signal[:1000]
    np.testing.assert_array_equal(y, raw[:, [MIMIC_ORDER.index(lead) for lead in LEADS]].astype(np.float32))


@pytest.mark.parametrize("fs", [257.0, 360.0, 1000.0])
def test_any_rate_matches_the_analytic_signal(fs, tmp_path):
    # a low-frequency mix evaluated at t = k / 100 s is what any correct resampler returns
    n = int(round(11 * fs))
    path = _write(tmp_path, "r", _sines(n, fs), fs, gain=2000.0)
    y = convert_record(path, _cfg(tmp_path, dtype="float32")).astype(np.float64)
    want = _sines(1000, 100.0)
    np.testing.assert_allclose(y[20:-20], want[20:-20], atol=2e-3)


def test_units_names_and_extra_channels(tmp_path):
    x = _sines(5000, 500.0, seed=3)
    names = ["v6", "AVL", "i", "V1", "avf", "III", "II", "aVR", "V2", "V3", "V4", "V5", "vx", "RESP"]
    ref, _ = read_record(_write(tmp_path, "mv", x, 500.0))
    got_uv, _ = read_record(_write(tmp_path, "uv", x, 500.0, names=names, units="uV"))
    np.testing.assert_allclose(got_uv, ref, atol=1e-3)
    np.testing.assert_allclose(got_uv, x, atol=0.5 / 200 + 1e-9)  # half an ADC step
    got_mu, _ = read_record(_write(tmp_path, "mu", x, 500.0, units="µV"))
    np.testing.assert_allclose(got_mu, x, atol=0.5 / 200 + 1e-9)
    _write(tmp_path, "mmhg", x, 500.0)
    hea = tmp_path / "mmhg.hea"
    hea.write_text(hea.read_text().replace("/mV", "/mmHg"))
    with pytest.raises(RecordError, match=r"lead I in 'mmHg', expected mV"):
        read_record(tmp_path / "mmhg")


def test_short_record_is_rejected_with_its_length(tmp_path):
    path = _write(tmp_path, "short", _sines(2500, 500.0), 500.0)
    with pytest.raises(RecordError, match=r"short: 2500 samples = 5 s at 500 Hz, expected at least 10 s"):
        read_record(path)


def test_resample_reduces_the_ratio():
    x = _sines(2570, 257.0)
    np.testing.assert_array_equal(resample(x, 257.0, 100.0), resample_poly(x, 100, 257, axis=0, padtype="line"))
    assert resample(x, 100.0, 100.0) is x
    with pytest.raises(RecordError, match="no resampling ratio"):
        resample(x, 999.56, 100.0)


# ---------------------------------------------------------------------------- the stage

def test_cohort_of_mixed_sources_converts_every_readable_record(tmp_path):
    root = tmp_path / "ecg"
    shutil.copytree(DATA, root)
    (root / "mimic").mkdir()
    _write(root / "mimic", "40000001", _sines(5000, 500.0, seed=1), 500.0)  # MIMIC's layout
    (root / "other").mkdir()
    _write(root / "other", "r257", _sines(2827, 257.0, seed=2), 257.0, fmt="212", gain=400.0)
    _write(root / "other", "r100", _sines(1000, 100.0, seed=4), 100.0)
    _write(root / "other", "short", _sines(4000, 500.0), 500.0)
    _write(root / "other", "no_v3", _sines(5000, 500.0), 500.0, names=[n for n in MIMIC_ORDER if n != "V3"])
    rels = sorted(REAL) + ["mimic/40000001", "other/r257", "other/r100", UNREADABLE, "other/short",
                           "other/no_v3"]
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    pd.DataFrame({"study_id": np.arange(len(rels), dtype=np.int64) + 1, "path": rels,
                  "fold": np.zeros(len(rels), dtype=np.int64)}).to_parquet(cohort / "cohort.parquet")
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=4))
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    status = dict(zip(rels, manifest["status"]))
    reason = dict(zip(rels, manifest["reason"]))
    readable = rels[:7]
    assert [status[r] for r in readable] == ["ok"] * 7, reason
    assert "record line" in reason[UNREADABLE]
    assert reason["other/short"].startswith("short: 4000 samples = 8 s at 500 Hz")
    assert "missing lead V3" in reason["other/no_v3"]
    x, _ = load_signals(cohort)
    for i, rel in enumerate(readable):
        np.testing.assert_allclose(x[i].astype(np.float64), independent(root / rel), rtol=2 ** -10, atol=1e-4,
                                   err_msg=rel)
    assert not x[len(readable):].any()
