"""labecg.signals: WFDB records -> 100 Hz memmap, checked against independent computations."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from labecg import signals
from labecg.records import LEADS, RecordError, clean_signal, read_record, resample
from labecg.signals import SignalsConfig, convert_signals, load_signals

MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
FS = 500
T = np.arange(5000) / FS  # s


def known_signal(seed: int) -> np.ndarray:
    """(5000, 12) mV in stored lead order: lead c is a distinct low-frequency sine mix."""
    rng = np.random.default_rng(seed)
    amp = rng.uniform(0.2, 1.0, 12)
    phase = rng.uniform(0, 2 * np.pi, 12)
    freq = 1.0 + np.arange(12) * 0.5  # 1 ... 6.5 Hz, all well inside the 50 Hz passband
    return amp * np.sin(2 * np.pi * freq * T[:, None] + phase) + 0.1 * (np.arange(12) - 6) / 6


def analytic_100hz(seed: int) -> np.ndarray:
    """The same sine mix evaluated at t = k / 100 s: what an ideal decimation returns."""
    rng = np.random.default_rng(seed)
    amp = rng.uniform(0.2, 1.0, 12)
    phase = rng.uniform(0, 2 * np.pi, 12)
    freq = 1.0 + np.arange(12) * 0.5
    t = np.arange(1000) / 100
    return amp * np.sin(2 * np.pi * freq * t[:, None] + phase) + 0.1 * (np.arange(12) - 6) / 6


def write_record(root: Path, rel: str, x_stored: np.ndarray, names=MIMIC_ORDER) -> None:
    """Write a record whose header lists ``names``; column for name n is stored lead n."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [LEADS.index(next(l for l in LEADS if l.lower() == n.lower())) if
            any(l.lower() == n.lower() for l in LEADS) else 0 for n in names]
    x = x_stored[:, cols]
    wfdb.wrsamp(path.name, fs=FS, units=["mV"] * len(names), sig_name=list(names), p_signal=x,
                fmt=["16"] * len(names), adc_gain=[200.0] * len(names), baseline=[0] * len(names),
                write_dir=str(path.parent))


def write_cohort(cohort: Path, rels: list[str], folds: list[int]) -> None:
    cohort.mkdir(parents=True, exist_ok=True)
    n = len(rels)
    pd.DataFrame({"subject_id": np.arange(n, dtype=np.int64) + 10_000_000,
                  "study_id": np.arange(n, dtype=np.int64) + 40_000_000,
                  "ecg_time": pd.Timestamp("2150-01-01") + pd.to_timedelta(np.arange(n), "h"),
                  "path": rels, "fold": np.asarray(folds, dtype=np.int64)}
                 ).to_parquet(cohort / "cohort.parquet", index=False)


def rel_path(i: int) -> str:
    return f"files/p1000/p{10000000 + i}/s{40000000 + i}/{40000000 + i}"


@pytest.fixture
def small(tmp_path):
    """8 good records (folds 0, 0, 1, 2, 3, 18, 19, 5) and a cohort folder over them."""
    root = tmp_path / "ecg"
    folds = [0, 0, 1, 2, 3, 18, 19, 5]
    rels = [rel_path(i) for i in range(len(folds))]
    for i, rel in enumerate(rels):
        x = known_signal(i)
        if folds[i] >= 18:
            x = x + 1.5  # validation/test offset: would move the statistics if they leaked
        write_record(root, rel, x)
    write_cohort(tmp_path / "cohort", rels, folds)
    return tmp_path / "cohort", root, folds


# ---------------------------------------------------------------------------- resampling

def test_resampling_keeps_5hz_and_removes_60hz():
    x = np.stack([np.sin(2 * np.pi * 5 * T), np.sin(2 * np.pi * 60 * T)], axis=1)
    x = np.tile(x, (1, 6))
    y = resample(x, 500.0, 100.0)
    assert y.shape == (1000, 12)
    freqs = np.fft.rfftfreq(1000, d=1 / 100)
    amp = 2 * np.abs(np.fft.rfft(y, axis=0)) / 1000  # sine amplitude per bin
    k5 = np.argmin(np.abs(freqs - 5))
    assert abs(amp[k5, 0] - 1.0) < 0.01
    # 60 Hz would alias to 40 Hz at 100 Hz sampling; nothing may survive anywhere
    assert amp[:, 1].max() < 0.01, f"60 Hz leaked: max {amp[:, 1].max():.4f} at {freqs[amp[:, 1].argmax()]} Hz"


def test_resampling_has_no_time_shift():
    # 5 Hz sine: output sample k must equal the sine at t = k / 100 s
    y = resample(np.tile(np.sin(2 * np.pi * 5 * T)[:, None], (1, 12)), 500.0, 100.0)
    t = np.arange(1000) / 100
    np.testing.assert_allclose(y[20:-20, 0], np.sin(2 * np.pi * 5 * t[20:-20]), atol=0.005)
    # a narrow bump centred on input sample 2500 (t = 5 s) must peak at output sample 500
    bump = np.exp(-0.5 * ((T - 5.0) / 0.02) ** 2)
    yb = resample(np.tile(bump[:, None], (1, 12)), 500.0, 100.0)[:, 0]
    assert yb.argmax() == 500
    centroid = (np.arange(1000) * yb).sum() / yb.sum()
    assert abs(centroid - 500) < 1e-3


# ---------------------------------------------------------------------------- reading

def test_record_reads_back_in_stored_lead_order(tmp_path):
    x = known_signal(3)
    write_record(tmp_path, "r", x)  # header in MIMIC order: aVF before aVL
    assert wfdb.rdheader(str(tmp_path / "r")).sig_name[4:6] == ["aVF", "aVL"]
    got, fs = read_record(tmp_path / "r")
    assert got.shape == (5000, 12) and fs == 500
    np.testing.assert_allclose(got, x, atol=0.5 / 200 + 1e-9)  # half an ADC step
    # case-insensitive names, shuffled header order
    names = ["v6", "AVL", "i", "V1", "avf", "III", "II", "aVR", "V2", "V3", "V4", "V5"]
    write_record(tmp_path, "s", x, names=names)
    np.testing.assert_allclose(read_record(tmp_path / "s")[0], x, atol=0.5 / 200 + 1e-9)


def test_direct_format16_reader_agrees_with_wfdb(tmp_path):
    # baselines, gains and missing samples vary per lead; wfdb.rdrecord is the reference
    x = known_signal(5)
    x[10:13, 4] = np.nan
    names = MIMIC_ORDER
    cols = [LEADS.index(n) for n in names]
    wfdb.wrsamp("g", fs=FS, units=["mV"] * 12, sig_name=names, p_signal=x[:, cols], fmt=["16"] * 12,
                adc_gain=list(np.linspace(100, 400, 12)), baseline=list(range(-60, 60, 10)),
                write_dir=str(tmp_path), comments=["age: 60"])
    ref = wfdb.rdrecord(str(tmp_path / "g"))
    assert ref.baseline[3] == -30 and ref.fmt[0] == "16"
    expected = ref.p_signal[:, [ref.sig_name.index(l) for l in LEADS]]
    np.testing.assert_array_equal(read_record(tmp_path / "g")[0], expected)
    # another storage format (212: 12-bit packed) goes through wfdb and gives the same values
    wfdb.wrsamp("h", fs=FS, units=["mV"] * 12, sig_name=names, p_signal=x[:, cols], fmt=["212"] * 12,
                adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    ref = wfdb.rdrecord(str(tmp_path / "h"))
    np.testing.assert_array_equal(read_record(tmp_path / "h")[0],
                                  ref.p_signal[:, [ref.sig_name.index(l) for l in LEADS]])
    np.testing.assert_allclose(read_record(tmp_path / "h")[0], x, atol=0.5 / 200 + 1e-9)


def test_record_missing_a_lead_is_rejected(tmp_path):
    names = [n for n in MIMIC_ORDER if n != "aVL"] + ["V7"]
    write_record(tmp_path, "r", known_signal(0), names=names)
    with pytest.raises(RecordError, match="missing lead aVL"):
        read_record(tmp_path / "r")


def test_clean_signal_interpolates_isolated_nans_and_rejects_bad_leads():
    x = known_signal(1)
    y = x.copy()
    y[100, 2] = np.nan
    y[200:203, 7] = np.nan
    got = clean_signal(y)
    assert got[100, 2] == pytest.approx((x[99, 2] + x[101, 2]) / 2)
    expected = x[199, 7] + (x[203, 7] - x[199, 7]) * np.array([1, 2, 3]) / 4
    np.testing.assert_allclose(got[200:203, 7], expected)
    np.testing.assert_array_equal(np.delete(got, [100], 0)[:, 2], np.delete(x, [100], 0)[:, 2])
    nan_filled = x.copy()
    nan_filled[:4000, 5] = np.nan
    with pytest.raises(RecordError, match=r"NaN-filled: leads \['aVF'\]"):
        clean_signal(nan_filled)
    flat = x.copy()
    flat[:, 9] = 0.25
    with pytest.raises(RecordError, match=r"flat: leads \['V4'\]"):
        clean_signal(flat)


# ---------------------------------------------------------------------------- conversion

def test_conversion_matches_ideal_decimation_and_writes_contract_files(small):
    cohort, root, folds = small
    out = convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root))
    x, leads = load_signals(cohort)
    assert out == cohort / "signals.npy" and leads == LEADS
    assert x.shape == (8, 1000, 12) and x.dtype == np.float16
    assert np.load(out, mmap_mode="r").shape == (8, 1000, 12)
    for i in range(8):
        expected = analytic_100hz(i) + (1.5 if folds[i] >= 18 else 0.0)
        expected = np.clip(expected, -3, 3)
        # interior: independent of the padding; float16 + ADC steps stay below 0.01 mV
        np.testing.assert_allclose(x[i, 10:-10].astype(np.float64), expected[10:-10], atol=0.01)
        np.testing.assert_allclose(x[i].astype(np.float64), expected, atol=0.05)
    meta = pd.read_json(cohort / "signals.json", typ="series")
    assert list(meta["leads"]) == list(LEADS) and meta["fs_hz"] == 100 and meta["n_samples"] == 1000
    assert meta["units"] == "mV" and meta["dtype"] == "float16" and meta["record_s"] == 10
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    assert list(manifest.columns) == ["study_id", "row", "status", "reason", "flag"]
    assert (manifest["status"] == "ok").all()
    assert manifest["study_id"].tolist() == pd.read_parquet(cohort / "cohort.parquet")["study_id"].tolist()
    assert not (cohort / "signals_progress").exists()


def test_lead_statistics_use_training_rows_only(small):
    cohort, root, folds = small
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root))
    x = np.load(cohort / "signals.npy").astype(np.float64)
    train = [i for i, f in enumerate(folds) if f < 18]
    stats = pd.read_json(cohort / "signals_stats.json", typ="series")
    np.testing.assert_allclose(stats["mean_mv"], x[train].mean(axis=(0, 1)), atol=1e-9)
    np.testing.assert_allclose(stats["std_mv"], x[train].std(axis=(0, 1)), atol=1e-9)
    # the +1.5 mV validation/test records would move the mean by ~0.4 mV if they leaked
    assert np.abs(np.asarray(stats["mean_mv"]) - x.mean(axis=(0, 1))).min() > 0.2


def _corrupt(root: Path) -> None:
    rels = [rel_path(i) for i in range(8)]
    # row 1: garbage .dat; row 2: truncated; row 3: NaN-filled lead; row 4: flat record;
    # row 6: .dat missing; row 7: missing lead
    (root / (rels[1] + ".dat")).write_bytes(np.random.default_rng(0).bytes(999))
    dat = root / (rels[2] + ".dat")
    dat.write_bytes(dat.read_bytes()[: 5000 * 12])
    x = known_signal(3)
    x[:, 6] = np.nan
    write_record(root, rels[3], x)
    write_record(root, rels[4], np.zeros((5000, 12)))
    (root / (rels[6] + ".dat")).unlink()
    write_record(root, rels[7], known_signal(7), names=[n for n in MIMIC_ORDER if n != "V3"] + ["X"])


def test_corrupt_records_are_reported_and_skipped(small):
    """exclude_flagged=True: the earlier policy, flat and NaN-filled records fail too."""
    cohort, root, folds = small
    _corrupt(root)
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=3, exclude_flagged=True,
                                  max_failed_frac=0.8))
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    status = manifest["status"].tolist()
    assert status == ["ok", "failed", "failed", "failed", "failed", "ok", "failed", "failed"]
    reason = manifest["reason"].tolist()
    assert reason[0] == "" and reason[5] == ""
    assert reason[1] and reason[2]
    assert "NaN-filled" in reason[3] and "V1" in reason[3]
    assert reason[4].startswith("flat")
    assert "missing" in reason[6] and "missing lead V3" in reason[7]
    arr = np.load(cohort / "signals.npy")
    assert not arr[[1, 2, 3, 4, 6, 7]].any()
    counts = signals.count_records(cohort)  # the book's status table: 2 ok, 6 failed, each reason once
    assert counts["records"].to_dict() == {"ok": 2, "failed": 6} and counts.at["ok", "reasons"] == ""
    assert counts.at["failed", "reasons"].count("(1)") == 6 and "missing lead V3" in counts.at["failed", "reasons"]
    np.testing.assert_allclose(arr[0, 10:-10].astype(float), analytic_100hz(0)[10:-10], atol=0.01)


def test_flat_and_empty_leads_are_kept_and_flagged_by_default(small):
    """The authors keep every readable record: a lead without samples becomes zeros."""
    cohort, root, folds = small
    _corrupt(root)
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=3))
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    assert manifest["status"].tolist() == ["ok", "failed", "failed", "ok", "ok", "ok", "failed", "failed"]
    flag = manifest["flag"].tolist()
    assert flag[0] == flag[5] == ""
    assert flag[3] == "NaN-filled: leads ['V1'] > 50% missing"
    assert flag[4] == f"flat: leads {list(LEADS)} peak-to-peak < 0.01 mV"
    assert manifest.loc[3, "reason"] == ""
    arr = np.load(cohort / "signals.npy").astype(float)
    assert not arr[3, :, 6].any() and not arr[4].any()
    others = [c for c in range(12) if c != 6]
    np.testing.assert_allclose(arr[3, 10:-10, others].T, analytic_100hz(3)[10:-10, others], atol=0.01)
    meta = json.loads((cohort / "signals.json").read_text())
    assert meta["n_flagged"] == 2 and meta["n_failed"] == 4


def test_header_base_time_other_than_ecg_time_is_ignored(small):
    """MIMIC-IV-ECG times come from the cart's clock; the cohort's ecg_time is the one used:
    a header whose base date and time differ converts like any other record."""
    cohort, root, folds = small
    rel = rel_path(5)
    x = known_signal(5)
    cols = [LEADS.index(n) for n in MIMIC_ORDER]
    wfdb.wrsamp(Path(rel).name, fs=FS, units=["mV"] * 12, sig_name=list(MIMIC_ORDER), p_signal=x[:, cols],
                fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(root / Path(rel).parent),
                base_time=datetime.time(3, 17, 0), base_date=datetime.date(2101, 6, 30))
    assert wfdb.rdheader(str(root / rel)).base_date == datetime.date(2101, 6, 30)
    before = pd.read_parquet(cohort / "cohort.parquet")
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root))
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    assert manifest.loc[5, "status"] == "ok" and manifest.loc[5, "flag"] == ""
    arr = np.load(cohort / "signals.npy").astype(float)
    np.testing.assert_allclose(arr[5, 10:-10], analytic_100hz(5)[10:-10], atol=0.01)
    pd.testing.assert_frame_equal(pd.read_parquet(cohort / "cohort.parquet"), before)


def _copy_inputs(src_cohort: Path, dst: Path) -> Path:
    dst.mkdir()
    shutil.copy(src_cohort / "cohort.parquet", dst / "cohort.parquet")
    return dst


def _start_slow_conversion(cohort_dir, ecg_root, workers: int, pause_s: float) -> subprocess.Popen:
    """A signals conversion in its own process, one record per chunk, pausing after each chunk."""
    script = ("import time, sys\nfrom pathlib import Path\n"
              "from labecg.signals import SignalsConfig, convert_signals\n"
              "convert_signals(SignalsConfig(cohort_dir=Path(sys.argv[1]), ecg=Path(sys.argv[2]), chunk_size=1,"
              f" workers={workers}), on_chunk=lambda s: time.sleep({pause_s}))\n")
    return subprocess.Popen([sys.executable, "-c", script, str(cohort_dir), str(ecg_root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_resume_after_interruption_is_byte_identical_and_skips_finished_rows(small, tmp_path):
    cohort, root, _ = small
    straight = _copy_inputs(cohort, tmp_path / "straight")
    convert_signals(SignalsConfig(cohort_dir=straight, ecg=root, chunk_size=2))
    resumed = _copy_inputs(cohort, tmp_path / "resumed")
    first: list[int] = []
    convert_signals(SignalsConfig(cohort_dir=resumed, ecg=root, chunk_size=2),
                    stop_after_chunks=2, on_chunk=first.append)
    assert len(first) == 2 and not (resumed / "signals.json").exists()
    # a different chunk size on resume must not change the chunking of the partial run
    second: list[int] = []
    convert_signals(SignalsConfig(cohort_dir=resumed, ecg=root, chunk_size=5), on_chunk=second.append)
    assert sorted(first + second) == [0, 2, 4, 6] and not set(first) & set(second)
    assert (resumed / "signals.npy").read_bytes() == (straight / "signals.npy").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(resumed / "signals_manifest.parquet"),
                                  pd.read_parquet(straight / "signals_manifest.parquet"))


def test_resume_after_killed_process_is_byte_identical(small, tmp_path):
    cohort, root, _ = small
    straight = _copy_inputs(cohort, tmp_path / "straight")
    convert_signals(SignalsConfig(cohort_dir=straight, ecg=root, chunk_size=1))
    killed = _copy_inputs(cohort, tmp_path / "killed")
    proc = _start_slow_conversion(killed, root, workers=1, pause_s=0.4)
    deadline = time.monotonic() + 30
    progress = killed / "signals_progress"
    while time.monotonic() < deadline and len(list(progress.glob("chunk_*.json"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(int(p.stem.split("_")[1]) for p in progress.glob("chunk_*.json"))
    assert 2 <= len(done_before) < 8 and not (killed / "signals.json").exists()
    rewritten: list[int] = []
    convert_signals(SignalsConfig(cohort_dir=killed, ecg=root), on_chunk=rewritten.append)
    assert not set(rewritten) & set(done_before)
    assert (killed / "signals.npy").read_bytes() == (straight / "signals.npy").read_bytes()


def test_resume_refuses_a_changed_cohort(small):
    cohort, root, _ = small
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=2), stop_after_chunks=1)
    frame = pd.read_parquet(cohort / "cohort.parquet")
    frame.iloc[::-1].reset_index(drop=True).to_parquet(cohort / "cohort.parquet", index=False)
    with pytest.raises(RuntimeError, match="different cohort"):
        convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=2))
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, overwrite=True))
    assert (cohort / "signals.json").exists()


def test_replace_stale_converts_again_for_another_cohort_and_resumes_the_same(small):
    # the book's setting: a rebuilt cohort makes finished or partial signals useless
    cohort, root, _ = small
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=2), stop_after_chunks=1)
    kept = []
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=2, replace_stale=True), on_chunk=kept.append)
    assert kept == [2, 4, 6]  # same cohort: the partial run resumed, its first chunk kept
    reference, _ = load_signals(cohort)
    reference = np.array(reference)
    frame = pd.read_parquet(cohort / "cohort.parquet")
    frame.iloc[::-1].reset_index(drop=True).to_parquet(cohort / "cohort.parquet", index=False)
    with pytest.raises(RuntimeError, match="different cohort"):
        convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root))
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, replace_stale=True))
    np.testing.assert_array_equal(np.array(load_signals(cohort)[0]), reference[::-1])  # rows follow the new cohort


def test_parallel_conversion_equals_serial(small, tmp_path):
    cohort, root, _ = small
    serial = _copy_inputs(cohort, tmp_path / "serial")
    convert_signals(SignalsConfig(cohort_dir=serial, ecg=root, chunk_size=3))
    parallel = _copy_inputs(cohort, tmp_path / "parallel")
    convert_signals(SignalsConfig(cohort_dir=parallel, ecg=root, chunk_size=3, workers=2, dtype="float16"))
    assert (parallel / "signals.npy").read_bytes() == (serial / "signals.npy").read_bytes()


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        SignalsConfig(cohort_dir=tmp_path, ecg=tmp_path, workers=0)
    with pytest.raises(ValueError, match="fs_hz"):
        SignalsConfig(cohort_dir=tmp_path, ecg=tmp_path, fs_hz=300.0)
    with pytest.raises(FileNotFoundError, match="cohort.parquet"):
        convert_signals(SignalsConfig(cohort_dir=tmp_path, ecg=tmp_path))


# ---------------------------------------------------------------------------- on the synthetic cohort

def test_synthetic_cohort_rows_match_an_independent_wfdb_decimation(signals_dir, synthetic_root):
    from scipy.signal import decimate

    frame = pd.read_parquet(signals_dir / "cohort.parquet")
    manifest = pd.read_parquet(signals_dir / "signals_manifest.parquet")
    assert manifest["study_id"].tolist() == frame["study_id"].tolist()
    assert manifest["row"].tolist() == list(range(len(frame)))
    x, leads = load_signals(signals_dir)
    assert x.shape == (len(frame), 1000, 12)
    ok = np.flatnonzero(manifest["status"].to_numpy() == "ok")
    assert len(ok) > 0.8 * len(frame)
    for i in ok[:: max(1, len(ok) // 8)]:
        sig, fields = wfdb.rdsamp(str(synthetic_root / "mimic-iv-ecg" / frame.loc[i, "path"]))
        names = [n.lower() for n in fields["sig_name"]]
        sig = sig[:, [names.index(l.lower()) for l in leads]]
        sig = pd.DataFrame(sig).interpolate(limit_direction="both").to_numpy()
        ref = decimate(np.clip(sig, -3, 3), 5, ftype="fir", zero_phase=True, axis=0)  # Hamming FIR
        err = np.abs(x[i, 10:-10].astype(np.float64) - ref[10:-10])
        assert err.max() < 0.01, f"row {i}: max |memmap - decimate(rdsamp)| = {err.max():.3f} mV"


# ---------------------------------------------------------------------------- wrong inputs, killed runs


def test_wrong_ecg_root_is_an_error_and_the_right_one_then_converts(small, tmp_path):
    cohort, root, _ = small
    wrong = tmp_path / "not-the-ecg-root"
    wrong.mkdir()
    with pytest.raises(RuntimeError, match=r"all 3 records tried failed .*missing file.*--ecg"):
        convert_signals(SignalsConfig(cohort_dir=cohort, ecg=wrong, chunk_size=3))
    # stopped after the first chunk, and nothing kept that a later run could mistake for signals
    assert sorted(p.name for p in cohort.iterdir()) == ["cohort.parquet"]
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=3))
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    assert (manifest["status"] == "ok").all()


def test_an_implausible_share_of_failures_is_an_error(small):
    cohort, root, _ = small
    for i in (1, 2, 3, 4, 6):  # 5 of 8 records lose their .dat: 62% > 50%
        (root / (rel_path(i) + ".dat")).unlink()
    with pytest.raises(RuntimeError, match=r"5 of 8 records failed, more than max_failed_frac=0.5"):
        convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=4))
    assert not (cohort / "signals.json").exists()
    # the same conversion, accepted with a higher share, finishes from what was converted
    redone: list[int] = []
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, chunk_size=4, max_failed_frac=0.7),
                    on_chunk=redone.append)
    assert redone == [] and (cohort / "signals.json").exists()


def test_signals_of_another_ecg_root_are_not_taken_as_done(small, tmp_path):
    cohort, root, _ = small
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root))
    other = tmp_path / "copy-of-ecg"
    shutil.copytree(root, other)
    with pytest.raises(RuntimeError, match="ECG root"):
        convert_signals(SignalsConfig(cohort_dir=cohort, ecg=other))


def _children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_a_parallel_conversion_leaves_no_workers(small, sig):
    cohort, root, _ = small
    proc = _start_slow_conversion(cohort, root, workers=2, pause_s=2.0)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and not (len(workers) >= 2 and
                                               list((cohort / "signals_progress").glob("chunk_*.json"))):
        workers |= _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the conversion did not start its workers"
    os.kill(proc.pid, sig)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed conversion"


def test_a_corrupt_signal_array_is_named(small):
    cohort, root, _ = small
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root))
    npy = cohort / "signals.npy"
    npy.write_bytes(npy.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"signals\.npy: not a readable signal array"):
        load_signals(cohort)


def test_filter_response_is_the_resampling_filter():
    # independent: scipy's resample_poly designs firwin(2 * 10 * 5 + 1, 1 / 5, kaiser 5) for 500 -> 100 Hz;
    # a sine below the output Nyquist rate keeps |H(f)|, one above it aliases with amplitude |H(f)|
    from scipy.signal import firwin, freqz

    from labecg.records import filter_response

    freqs = [1.0, 5.0, 20.0, 45.0, 60.0, 73.0, 130.0, 240.0]
    got = filter_response(500.0, 100.0, freqs)
    h = firwin(101, 1 / 5, window=("kaiser", 5.0))
    _, H = freqz(h, worN=2 * np.pi * np.asarray(freqs) / 500.0)
    np.testing.assert_allclose(got["gain_db"].to_numpy(), 20 * np.log10(np.abs(H)), atol=1e-6)
    default = filter_response()
    assert 60.0 in default.index and 50.0 not in default.index  # 50 Hz: sampled at fixed phases
    with pytest.raises(ValueError, match="freqs_hz"):
        filter_response(500.0, 100.0, [300.0])


def test_lead_before_after_are_the_record_and_its_stored_row(signals_dir, synthetic_root):
    from scipy.signal import resample_poly

    from labecg.records import LEADS, read_record
    from labecg.signals import SignalsConfig, lead_before_after, load_signals

    cfg = SignalsConfig(cohort_dir=signals_dir, ecg=synthetic_root / "mimic-iv-ecg")
    pair = lead_before_after(cfg, index=0, lead="V2")
    manifest = pd.read_parquet(signals_dir / "signals_manifest.parquet")
    row = int(np.sort(manifest.loc[manifest["status"] == "ok", "row"])[0])
    path = pd.read_parquet(signals_dir / "cohort.parquet")["path"].iloc[row]
    raw, fs = read_record(synthetic_root / "mimic-iv-ecg" / path)
    c = LEADS.index("V2")
    np.testing.assert_array_equal(pair["raw_mv"], raw[:, c])
    np.testing.assert_array_equal(pair["stored_mv"], np.asarray(load_signals(signals_dir)[0][row, :, c], float))
    assert pair["raw_fs_hz"] == fs == 500.0 and pair["fs_hz"] == 100.0
    thinned = resample_poly(np.clip(raw[:, c], -3, 3), 1, 5, padtype="line")
    assert np.abs(thinned - pair["stored_mv"]).max() < 0.01  # float16 storage
    with pytest.raises(ValueError, match="lead"):
        lead_before_after(cfg, lead="X")
