"""Conversion throughput: records/s of `convert_signals` vs `wfdb.rdsamp` alone.

Writes N synthetic 12-lead records (500 Hz, 10 s, format 16, MIMIC header order) with
wfdb into a scratch folder, warms the page cache, then times on the same records:
  1. `wfdb.rdsamp` alone, one process (the floor: reading),
  2. `convert_signals` with 1 worker and with W workers (read + clean + resample + write).
Prints records/s per worker and in total, bytes written, projected hours for 800k
records, and the ratio to rdsamp (target: conversion within 2x of rdsamp alone). Then the
resampling step alone, 500 -> 100 Hz: ``labecg.records.resample`` (polyphase FIR) beside
filtfilt + decimation (``scipy.signal.decimate``, IIR Chebyshev, zero phase), the alternative
its docstring names.

    .venv/bin/python bench/signals.py --records 400 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.signal
import wfdb

from labecg import layout
from labecg.records import resample
from labecg.signals import SignalsConfig, convert_signals

MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
REAL_RECORDS = 800_000


def time_resamplers(n: int, repeats: int, seed: int = 0) -> tuple[float, float]:
    """Median seconds per record, over ``repeats`` passes of n (5000, 12) records at 500 Hz, of
    ``records.resample`` to 100 Hz and of filtfilt + decimation by 5."""
    x = np.random.default_rng(seed).normal(size=(n, 5000, 12))
    out = []
    for fn in (lambda r: resample(r, 500.0, 100.0),
               lambda r: scipy.signal.decimate(r, 5, ftype="iir", axis=0, zero_phase=True)):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for r in x:
                fn(r)
            times.append((time.perf_counter() - t) / n)
        out.append(float(np.median(times)))
    return out[0], out[1]


def write_records(root: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500
    rels = []
    for i in range(n):
        rel = f"files/p{1000 + i // 1000}/p{10000000 + i}/s{40000000 + i}/{40000000 + i}"
        d = root / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        hr = rng.uniform(50, 110) / 60
        beat = np.exp(-0.5 * ((np.mod(t * hr, 1.0) - 0.3) / 0.015) ** 2)  # R waves
        x = beat[:, None] * rng.uniform(-1.5, 1.5, 12) + 0.05 * rng.standard_normal((5000, 12)) \
            + 0.1 * np.sin(2 * np.pi * 0.3 * t)[:, None]
        wfdb.wrsamp(d.name, fs=500, units=["mV"] * 12, sig_name=MIMIC_ORDER, p_signal=x,
                    fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(d.parent))
        rels.append(rel)
    return rels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scratch", type=Path, default=None)
    args = ap.parse_args()
    logging.getLogger("labecg").setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="labecg_bench_signals_"))
    root = scratch / "ecg"
    t0 = time.perf_counter()
    rels = write_records(root, args.records)
    n = len(rels)
    print(f"wrote {n} records in {time.perf_counter() - t0:.1f} s under {scratch}")
    paths = [str(root / r) for r in rels]
    for p in paths:  # warm the page cache
        Path(p + ".dat").read_bytes()

    def time_rdsamp() -> float:
        t = time.perf_counter()
        for p in paths:
            wfdb.rdsamp(p)
        return time.perf_counter() - t

    def time_convert(workers: int) -> tuple[float, int]:
        cohort = scratch / f"cohort_w{workers}"
        shutil.rmtree(cohort, ignore_errors=True)
        cohort.mkdir()
        pd.DataFrame({"study_id": np.arange(n, dtype=np.int64), "path": rels,
                      "fold": np.arange(n, dtype=np.int64) % 20}).to_parquet(cohort / layout.COHORT)
        t = time.perf_counter()
        npy = convert_signals(SignalsConfig(cohort_dir=cohort, ecg=root, workers=workers, chunk_size=64))
        dt = time.perf_counter() - t
        return dt, npy.stat().st_size

    time_rdsamp()  # warm-up (imports, caches)
    t_rd = float(np.median([time_rdsamp() for _ in range(args.repeats)]))
    t_c1, nbytes = map(float, np.median([time_convert(1) for _ in range(args.repeats)], axis=0))
    t_cw = float(np.median([time_convert(args.workers)[0] for _ in range(args.repeats)]))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{n} records, medians of {args.repeats}")
    print(f"wfdb.rdsamp alone, 1 process   : {n / t_rd:8.1f} records/s  ({t_rd / n * 1e3:.2f} ms/record)")
    print(f"convert_signals, 1 worker      : {n / t_c1:8.1f} records/s  ({t_c1 / n * 1e3:.2f} ms/record)")
    print(f"convert_signals, {args.workers} workers     : {n / t_cw:8.1f} records/s total, "
          f"{n / t_cw / args.workers:.1f} per worker")
    print(f"convert (1 worker) vs rdsamp   : {t_c1 / t_rd:.2f}x the time of reading alone (target <= 2x)")
    print(f"bytes written (signals.npy)    : {nbytes / 1e6:.2f} MB = {nbytes / n / 1e3:.1f} kB/record; "
          f"800k records -> {nbytes / n * REAL_RECORDS / 1e9:.1f} GB")
    print(f"projected 800k records         : {REAL_RECORDS * t_c1 / n / 3600:.2f} h with 1 worker, "
          f"{REAL_RECORDS * t_cw / n / 3600:.2f} h with {args.workers} workers "
          f"(rdsamp alone: {REAL_RECORDS * t_rd / n / 3600:.2f} h on 1 core)")
    t_poly, t_iir = time_resamplers(min(n, 200), args.repeats)
    print(f"resample 500 -> 100 Hz         : records.resample {t_poly * 1e3:.2f} ms/record, "
          f"filtfilt + decimation {t_iir * 1e3:.2f} ms/record ({t_iir / t_poly:.1f}x the time)")
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
