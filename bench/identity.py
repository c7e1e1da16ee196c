"""Digests of every file a fixed pipeline run writes, to show a refactor changes no number.

Runs synth (300 patients, seed 0) -> cohort -> signals -> train (2 epochs, width 16, one S4
block) -> evaluate (200 resamples) -> explain (4 ECGs, 2 steps), on one thread, and prints the
SHA-256 of each output that carries numbers (the cohort, the signals, the predictions,
every evaluation file; of an ``.npz``, of its arrays less the wall-time entry; of a
``.parquet``, of its frame read back by pandas: column names, dtypes, values and order, so
that the writer's bytes, row groups and metadata do not count). With ``--compare FILE`` it compares with the digests an earlier run
saved (``--save FILE``) and exits 1 naming the files that differ.

    python bench/identity.py --work /tmp/id_old --save /tmp/id_old.json     # before a change
    python bench/identity.py --work /tmp/id_new --compare /tmp/id_old.json  # after it

``--source DIR`` runs the stages on a source tree already written (e.g. ``/tmp/id_old/data``),
so that a change of the generator is kept apart from a change of the stages. Where a
``.parquet`` differs, the comparison names its columns that differ, were added or removed.

The pipeline is deterministic run to run on one machine (seeded, single thread), so equal
digests before and after a change are a real check; run both on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labecg import cohort, evaluate, explain, layout, signals, sources, synthetic, train

# run-specific records (dates, durations, paths) carry no number of the result
_SKIP = {layout.RUN_INFO, layout.RUN_SETTINGS, layout.CONFIG, layout.SIGNALS_META, layout.TARGETS, layout.METRICS}
_TIMINGS = {"seconds"}  # npz entries that hold wall time (attribution.npz)


def _digest(path: Path) -> str:
    """SHA-256 of a file; of an .npz, of its arrays (names, dtypes, shapes, bytes) less the timings;
    of a .parquet, of the frame pandas reads back (names, dtypes, row count, each column's values)."""
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        h = hashlib.sha256(f"{len(frame)}|{list(frame.index[:1])}".encode())
        for name in frame.columns:
            h.update(f"{name}|{frame[name].dtype}|".encode())
            h.update(pd.util.hash_pandas_object(frame[name], index=False).to_numpy().tobytes())
        return h.hexdigest()
    if path.suffix != ".npz":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as npz:
        for name in sorted(set(npz.files) - _TIMINGS):
            a = npz[name]
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def run_pipeline(work: Path, source: Path | None = None) -> Path:
    """Run every stage into ``work`` (on ``source`` when given, else a new synthetic tree); return the run folder."""
    torch.set_num_threads(1)
    root = source or synthetic.generate(synthetic.SynthConfig(data_root=work / "data", patients=300, seed=0,
                                                              progress=False))
    src = sources.source_paths(root)
    cdir = work / "cohort"
    cohort.build_cohort(cohort.CohortConfig(**src, cohort_dir=cdir, min_lab_events=50, min_per_class=3, threads=1))
    signals.convert_signals(signals.SignalsConfig(cohort_dir=cdir, ecg=src["ecg"], workers=1))
    run = work / "run"
    train.train(train.TrainConfig(cohort_dir=cdir, run_dir=run, epochs=2, d_model=16, n_layers=1, batch_size=32,
                                  accelerator="cpu", seed=0, resume=False))
    evaluate.evaluate_run(evaluate.EvaluateConfig(run_dir=run, n_iterations=200, seed=0))
    explain.explain_run(explain.ExplainConfig(run_dir=run, n_ecgs=4, n_steps=2))
    return run


def column_digests(path: Path) -> dict[str, str]:
    """SHA-256 of each column of a .parquet (name, dtype, values), by column name."""
    frame = pd.read_parquet(path)
    return {name: hashlib.sha256(f"{name}|{frame[name].dtype}|".encode()
                                 + pd.util.hash_pandas_object(frame[name], index=False).to_numpy().tobytes()
                                 ).hexdigest() for name in frame.columns}


def digests(work: Path) -> dict[str, str]:
    """SHA-256 of the cohort, signals, predictions and evaluation files, by path under ``work``."""
    files = [*(work / "cohort").glob("*.parquet"), work / "cohort" / layout.SIGNALS, work / "cohort" / layout.FLOW,
             *(work / "run").glob("predictions_*.npz"), *sorted(layout.evaluation_dir(work / "run").glob("*"))]
    found = {str(p.relative_to(work)): _digest(p) for p in sorted(files) if p.is_file() and p.name not in _SKIP}
    for p in files:
        if p.suffix == ".parquet" and p.is_file():
            found.update({f"{p.relative_to(work)}::{c}": d for c, d in column_digests(p).items()})
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="empty folder for the run")
    ap.add_argument("--save", type=Path, help="write the digests to this JSON file")
    ap.add_argument("--compare", type=Path, help="compare with the digests in this JSON file")
    ap.add_argument("--source", type=Path, help="run on this source tree instead of generating one")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run_pipeline(args.work, args.source)
    found = digests(args.work)
    files = {k: v for k, v in found.items() if "::" not in k}
    print(f"pipeline in {time.perf_counter() - t0:.0f} s; {len(files)} files")
    for name, digest in files.items():
        print(f"  {digest[:16]}  {name}")
    if args.save:
        args.save.write_text(json.dumps(found, indent=1))
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = sorted(k for k in before.keys() | found.keys() if "::" not in k and before.get(k) != found.get(k))
        for name in (d for d in differ if d.endswith(".parquet")):
            old, new = ({k.split("::", 1)[1]: v for k, v in digs.items() if k.startswith(f"{name}::")}
                        for digs in (before, found))
            if old:  # an earlier --save of this script also kept the columns
                print(f"{name}: {len(new.keys() - old.keys())} columns added {sorted(new.keys() - old.keys())[:8]}, "
                      f"{len(old.keys() - new.keys())} removed {sorted(old.keys() - new.keys())[:8]}, "
                      f"{sum(old[c] != new[c] for c in old.keys() & new.keys())} of {len(old.keys() & new.keys())} "
                      f"shared columns differ {sorted(c for c in old.keys() & new.keys() if old[c] != new[c])[:8]}")
        if differ:
            print(f"differ from {args.compare}: {differ}")
            return 1
        print(f"all {len(files)} files byte-identical to {args.compare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
