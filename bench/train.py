"""End-to-end training throughput in the paper's configuration, and where the time goes.

Builds a cohort folder of ``--n`` ECGs (default: the paper's 795,546; about 18/20 of them in
the training folds) with random tabular values, targets (the paper's 514) and a float16
``signals.npy`` of random millivolts (one random block written over and over: ~19 GB at the
paper's size, written at disk speed), then times, with the real ``LabDataModule`` and
``LabModule`` (d 512, 4 layers, N 8, batch 32 unless told):

1. loader: ``train_dataloader()`` alone, samples/s (``--workers`` processes);
2. host-to-device: one batch's ``.to(device, non_blocking=True)`` (CUDA only; pinned);
3. kernels: forward + loss, backward, AdamW step on a batch already on the device
   (CUDA synchronized between phases), and their sum;
4. end to end: ``pl.Trainer.fit`` over the real loader and ``training_step`` (no
   validation), timed from the end of ``--warmup`` steps to the last step.

It prints samples/s per phase and precision, the ratio to the 9,000 samples/s goal, and
the projected time of the paper's 20 epochs over its training ECGs at the end-to-end rate.

    .venv/bin/python bench/train.py --n 4096 --steps 10 --workers 0 2     # CPU, small
    python bench/train.py --device cuda --precision bf16 fp32 --workers 8   # paper size, GPU
    python bench/train.py --device cuda --precision bf16 --compile          # torch.compile'd model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from labecg import layout
from labecg.features import RACES
from labecg.paper import COHORT as PAPER_SUMMARY
from labecg.data import DataConfig, LabDataModule
from labecg.model import ModelConfig
from labecg.records import LEADS
from labecg.train import LabModule, masked_loss

PAPER_EPOCHS = 20
PAPER_TARGETS = sum(PAPER_SUMMARY["n_targets"].values())  # 514
PAPER_TRAIN_ECGS = round(PAPER_SUMMARY["n_ecgs"] * 18 / 20)  # folds 0-17 of 20
GOAL = 9000.0  # samples/s end to end on one H100-class GPU


def build_cohort(out: Path, n: int, n_targets: int, seed: int = 0) -> None:
    """A cohort folder as `labecg cohort` + `labecg signals` write it, random values."""
    rng = np.random.default_rng(seed)
    study = np.arange(n, dtype=np.int64) + 4 * 10**7
    frame = pd.DataFrame({
        "subject_id": np.arange(n, dtype=np.int64), "study_id": study,
        "ecg_time": pd.Timestamp("2150-01-01") + pd.to_timedelta(np.arange(n), "min"),
        "path": pd.array(np.char.add("files/p", study.astype(str)), dtype="string"),
        "fold": rng.integers(0, 20, n).astype(np.int64),
        "sex": rng.integers(0, 2, n).astype(float), "age": rng.uniform(18, 90, n),
        "race": pd.array(np.asarray(RACES)[rng.integers(0, len(RACES), n)], dtype="string"),
        **{v: rng.normal(100, 10, n) for v in ("temperature", "heartrate", "resprate", "o2sat",
                                               "sbp", "dbp", "bmi", "weight", "height")}})
    names = [f"lab{k}_high_est" for k in range(n_targets)]
    y = (rng.random((n, n_targets), dtype=np.float32) < 0.2).astype(np.float32)
    y[rng.random((n, n_targets), dtype=np.float32) < 0.7] = np.nan
    frame = pd.concat([frame, pd.DataFrame(y, columns=names)], axis=1)
    frame.to_parquet(out / layout.COHORT, index=False)
    (out / layout.TARGETS).write_text(json.dumps({"version": 1, "targets": [{"name": t} for t in names]}))
    x = np.lib.format.open_memmap(out / layout.SIGNALS, mode="w+", dtype=np.float16, shape=(n, 1000, 12))
    block = rng.normal(0, 0.3, (min(n, 4096), 1000, 12)).astype(np.float16)
    for i in range(0, n, len(block)):
        x[i:i + len(block)] = block[:n - i]
    x.flush()
    del x
    pd.DataFrame({"study_id": study, "row": np.arange(n, dtype=np.int64), "status": "ok",
                  "reason": ""}).to_parquet(out / layout.SIGNALS_MANIFEST, index=False)
    (out / layout.SIGNALS_META).write_text(json.dumps(
        {"leads": list(LEADS), "fs_hz": 100.0, "n_samples": 1000, "dtype": "float16", "units": "mV",
         "clip_mv": 3.0, "source_fs_hz": 500.0, "n_rows": n}))
    (out / layout.SIGNALS_STATS).write_text(json.dumps({"mean_mv": [0.0] * 12, "std_mv": [0.3] * 12}))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_module(dm: LabDataModule, args, device: torch.device) -> LabModule:
    cfg = ModelConfig(n_targets=dm.n_targets, n_tabular=dm.n_tabular, d_model=args.d_model, d_state=8,
                      n_layers=args.n_layers, dropout=0.2)
    module = LabModule(dataclasses.asdict(cfg))
    if args.compile:
        module.model = torch.compile(module.model)
    return module.to(device)


def _batches(loader):
    while True:  # epoch after epoch
        yield from loader


def time_loader(dm: LabDataModule, steps: int, warmup: int) -> float:
    it = _batches(dm.train_dataloader())
    for _ in range(warmup):
        next(it)
    t, n = time.perf_counter(), 0
    for _ in range(steps):
        n += len(next(it)["row"])
    return n / (time.perf_counter() - t)


def time_phases(module: LabModule, batch: dict, device: torch.device, precision: str, steps: int,
                warmup: int) -> dict[str, float]:
    """Median seconds per step of forward+loss, backward, optimizer on a device batch."""
    opt = module.configure_optimizers()
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    module.train()
    times: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        with amp:
            logits = module.model(batch["ecg"], batch["tabular"])
        loss = masked_loss(logits, batch["y"], batch["mask"])
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        t3 = time.perf_counter()
        if i >= warmup:
            times["forward"].append(t1 - t0)
            times["backward"].append(t2 - t1)
            times["optimizer"].append(t3 - t2)
    return {k: statistics.median(v) for k, v in times.items()}


class StepClock(pl.Callback):
    """Wall time from the end of step ``warmup`` to the end of the epoch's last step.

    Synchronizes CUDA only at those two points: a sync per step would hide the overlap of
    host and device that the end-to-end rate depends on.
    """

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.n = warmup, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == self.warmup:
            sync(pl_module.device)
            self.t0 = time.perf_counter()
        elif batch_idx + 1 > self.warmup:
            self.n += len(batch["row"])

    def on_train_epoch_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.t1 = time.perf_counter()


def time_end_to_end(dm: LabDataModule, args, device: torch.device, precision: str) -> float:
    module = make_module(dm, args, device)
    module.y_true = dm.y_true
    clock = StepClock(args.warmup)
    callbacks = [clock, pl.callbacks.TQDMProgressBar(refresh_rate=20)] if args.progress_bar else [clock]
    trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         precision="bf16-mixed" if precision == "bf16" else "32-true", callbacks=callbacks,
                         logger=False, enable_checkpointing=False, limit_train_batches=args.warmup + args.steps,
                         limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False,
                         enable_progress_bar=args.progress_bar, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    return clock.n / (clock.t1 - clock.t0)


def hms(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=PAPER_SUMMARY["n_ecgs"], help="ECGs in the built cohort")
    ap.add_argument("--targets", type=int, default=PAPER_TARGETS)
    ap.add_argument("--cohort-dir", type=Path, help="reuse a cohort folder built before (kept)")
    ap.add_argument("--build", type=Path, help="only build the cohort into this folder (kept), then exit")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 4], help="loader worker counts to time")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--progress-bar", action="store_true", help="Lightning's bar on (every 20 steps), as labecg train has it")
    args = ap.parse_args()
    device = torch.device(args.device)
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device: {hw}; {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")

    tmp = None
    if args.cohort is None:
        tmp = args.build or Path(tempfile.mkdtemp(prefix="labecg_bench_train_"))
        tmp.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        build_cohort(tmp, args.n, args.targets)
        print(f"built {args.n:,} ECGs x {args.targets} targets ({args.n * 24000 / 1e9:.1f} GB signals) "
              f"in {time.perf_counter() - t:.1f} s: {tmp}")
        if args.build:
            return
    cohort = args.cohort or tmp
    try:
        e2e_workers = max(args.workers)
        dm = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=args.batch, num_workers=e2e_workers))
        dm.setup()
        n_train = len(dm.rows["train"])
        print(f"{n_train:,} training ECGs; batch {args.batch}; d {args.d_model}, {args.n_layers} layers, N 8; "
              f"compile {args.compile}")

        for workers in args.workers:
            dmw = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=args.batch, num_workers=workers))
            rate = time_loader(dmw, args.steps * 4, args.warmup + (8 if workers else 0))
            print(f"loader, {workers} workers              : {rate:9.0f} samples/s ({rate / GOAL:.2f}x the goal)")
            del dmw

        batch = next(iter(dm.train_dataloader()))
        if device.type == "cuda":
            ts = []
            for _ in range(args.warmup + args.steps):
                torch.cuda.synchronize()
                t = time.perf_counter()
                {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                torch.cuda.synchronize()
                ts.append(time.perf_counter() - t)
            h2d = statistics.median(ts[args.warmup:])
            print(f"host-to-device, pinned {batch['ecg'].is_pinned()}: {h2d * 1e3:7.3f} ms/batch "
                  f"({args.batch / h2d:9.0f} samples/s)")
        else:
            print("host-to-device                   : n/a on CPU")
        dev_batch = {k: v.to(device) for k, v in batch.items()}

        for precision in args.precision:
            module = make_module(dm, args, device)
            ph = time_phases(module, dev_batch, device, precision, args.steps, args.warmup)
            step = sum(ph.values())
            print(f"[{precision}] forward+loss {ph['forward'] * 1e3:8.1f} ms, backward {ph['backward'] * 1e3:8.1f} ms, "
                  f"AdamW {ph['optimizer'] * 1e3:7.1f} ms: {args.batch / step:9.1f} samples/s on device "
                  f"({args.batch / step / GOAL:.2f}x the goal)")
            del module
            rate = time_end_to_end(dm, args, device, precision)
            total = PAPER_EPOCHS * PAPER_TRAIN_ECGS / rate
            print(f"[{precision}] end to end (Lightning, {e2e_workers} workers): {rate:9.1f} samples/s "
                  f"({rate / GOAL:.2f}x the {GOAL:.0f} goal; {rate * step / args.batch:.2f}x the device-only rate); "
                  f"paper's {PAPER_EPOCHS} epochs x {PAPER_TRAIN_ECGS:,} ECGs: {hms(total)} "
                  f"(authors: 19 h on one L40)")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
