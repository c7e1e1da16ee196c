"""Training-loader throughput: samples/s of LabDataModule.train_dataloader with 0, 2, 4 workers.

Builds a cohort folder with N rows (random tabular values and targets, a float16
signals.npy of random millivolts, manifest and statistics as `convert_signals` writes
them), reads signals.npy once so it is page-cached, then iterates training epochs and
prints samples/s per worker count (median over epochs after one warm-up epoch), next to
the rate of a bare memmap fancy-index read of the same batches (the floor). Target: the
loader can feed >= 10k samples/s.

    .venv/bin/python bench/loader.py --rows 8192 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labecg import layout
from labecg.data import RACES, DataConfig, LabDataModule
from labecg.records import LEADS

N_TARGETS = 100  # about the size of the paper's estimation + monitoring target sets


def build_cohort(out: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "subject_id": np.arange(n, dtype=np.int64), "study_id": np.arange(n, dtype=np.int64) + 4 * 10**7,
        "ecg_time": pd.Timestamp("2150-01-01") + pd.to_timedelta(np.arange(n), "min"),
        "path": [f"files/p{i}" for i in range(n)], "fold": rng.integers(0, 20, n).astype(np.int64),
        "sex": rng.integers(0, 2, n).astype(float), "age": rng.uniform(18, 90, n),
        "race": pd.array(rng.choice(list(RACES), n), dtype="string"),
        **{v: rng.normal(100, 10, n) for v in ("temperature", "heartrate", "resprate", "o2sat",
                                               "sbp", "dbp", "bmi", "weight", "height")}})
    names = [f"lab{k}_high_est" for k in range(N_TARGETS)]
    y = rng.integers(0, 2, (n, N_TARGETS)).astype(np.float32)
    y[rng.random((n, N_TARGETS)) < 0.5] = np.nan
    frame = pd.concat([frame, pd.DataFrame(y, columns=names)], axis=1)
    frame.to_parquet(out / layout.COHORT, index=False)
    (out / layout.TARGETS).write_text(json.dumps({"version": 1, "targets": [{"name": t} for t in names]}))
    x = np.lib.format.open_memmap(out / layout.SIGNALS, mode="w+", dtype=np.float16, shape=(n, 1000, 12))
    for i in range(0, n, 1024):
        x[i:i + 1024] = rng.normal(0, 0.3, (min(1024, n - i), 1000, 12)).astype(np.float16)
    x.flush()
    del x
    pd.DataFrame({"study_id": frame["study_id"], "row": np.arange(n, dtype=np.int64),
                  "status": ["ok"] * n, "reason": [""] * n}).to_parquet(out / layout.SIGNALS_MANIFEST)
    (out / layout.SIGNALS_META).write_text(json.dumps(
        {"leads": list(LEADS), "fs_hz": 100.0, "n_samples": 1000, "dtype": "float16", "units": "mV",
         "clip_mv": 3.0, "source_fs_hz": 500.0, "n_rows": n}))
    (out / layout.SIGNALS_STATS).write_text(json.dumps({"mean_mv": [0.0] * 12, "std_mv": [0.3] * 12}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="labecg_bench_loader_"))
    try:
        build_cohort(out, args.rows)
        np.load(out / layout.SIGNALS).sum()  # page-cache the array
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"{args.rows} rows, batch {args.batch_size}, {N_TARGETS} targets")

        dm = LabDataModule(DataConfig(cohort_dir=out, batch_size=args.batch_size))
        dm.setup()
        x = np.load(out / layout.SIGNALS, mmap_mode="r")
        plans = list(dm.train_sampler)
        t = time.perf_counter()
        for rows, _offs, _ in plans:
            x[rows]
        floor = sum(len(p[0]) for p in plans) / (time.perf_counter() - t)
        print(f"bare memmap read of the same batches : {floor:10.0f} samples/s")

        for workers in args.workers:
            dm = LabDataModule(DataConfig(cohort_dir=out, batch_size=args.batch_size, num_workers=workers))
            loader = dm.train_dataloader()
            rates = []
            for epoch in range(args.epochs + 1):  # epoch 0 warms up (worker start)
                t, n = time.perf_counter(), 0
                for batch in loader:
                    n += batch["ecg"].shape[0]
                if epoch:
                    rates.append(n / (time.perf_counter() - t))
            rate = float(np.median(rates))
            print(f"train loader, {workers} workers            : {rate:10.0f} samples/s "
                  f"({rate / 1e4:.1f}x the 10k samples/s target; {rate / floor:.2f}x the bare read)")
            del loader
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
