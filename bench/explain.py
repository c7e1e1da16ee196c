"""Integrated gradients vs occlusion on a trained run: time, and attribution in the planted windows.

Runs :func:`labecg.explain.explain_run` on the run's test ECGs with each method and prints
its wall time and, per planted effect, the share of the target's attribution inside the
window the synthetic generator planted it in, beside the share of targets with nothing
planted (the higher the contrast, the better the method localizes).

    .venv/bin/python bench/explain.py --run-dir runs/default [--ecgs 48] [--steps 8 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import torch

from labecg import layout
from labecg.explain import ExplainConfig, explain_run, read_attribution


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/default"))
    parser.add_argument("--ecgs", type=int, default=48)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--occlusion-s", type=float, nargs="+", default=[0.04, 0.08])
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared, noisy); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        for name in (layout.CONFIG, layout.TARGETS):
            shutil.copy(args.run / name, run / name)
        (run / layout.CHECKPOINTS).mkdir()
        shutil.copy(layout.checkpoint_path(args.run, "best"), layout.checkpoint_path(run, "best"))
        rows = []
        settings = [("integrated_gradients", {"n_steps": s}) for s in args.steps]
        settings += [("occlusion", {"occlusion_s": w}) for w in args.occlusion_s]
        for method, extra in settings:
            explain_run(ExplainConfig(run_dir=run, method=method, n_ecgs=args.ecgs, **extra))
            data, frac = read_attribution(run / "evaluation")
            own = frac[frac["planted_window"]]
            label = f"{method} {extra}"
            for r in own.itertuples():
                rows.append({"method": label, "seconds": float(data["seconds"]), "target": r.target,
                             "window": r.window, "fraction": r.fraction, "null": r.null_fraction,
                             "uniform": r.uniform, "contrast": r.fraction - r.null_fraction})
            print(f"{label}: {float(data['seconds']):.1f} s for {int(data['n_ecgs'])} ECGs x "
                  f"{len(data['targets'])} targets ({int(data['n_beats'])} beats)")
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table.round(3).to_string(index=False))
        print("mean contrast (planted-window share minus null share) per method:")
        print(table.groupby("method", sort=False)[["seconds", "contrast"]].mean().round(3).to_string())


if __name__ == "__main__":
    main()
