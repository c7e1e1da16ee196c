"""Ablation of the choices where labecg follows the paper or the authors' code (issue 10).

On the classroom defaults of ``labecg book`` (``labecg.book.BookConfig``: 3,000 synthetic
patients, seed 0, width 64, 2 S4 blocks, 12 epochs, batch 32), each line changes one choice
back to the earlier one (or to the option the book names) and reruns the stages it touches:

    default            every new default
    unlisted_assign    cohort: ECGs absent from ecg_icd dealt into folds (unlisted_ecgs="assign")
    keep_untargeted    cohort: ECGs without any target kept (drop_ecgs_without_targets=False)
    exclude_flagged    signals: records with a flat or mostly missing lead excluded
    decay_all          training: weight decay on every parameter (weight_decay_scope="all")
    legs               model: S4D-LegS initialization instead of S4D-Lin (ssm_init="legs")

and prints, per line, the test macro AUROC (95% bootstrap interval, 1000 resamples), the
abnormalities significantly above 0.70 per task, the evaluated targets and ECGs, and the
wall time; the table also goes to ``OUT/ablation.csv``. Stages whose outputs exist are
reused (``labecg`` stages refuse stale outputs), so an interrupted run continues.

    python bench/ablation.py --out artifacts/ablation --workers 1 [--variants default legs]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from labecg import book, cohort, evaluate, layout, selfcheck, signals, train

VARIANTS = {
    "default": ({}, {}, {}, "new defaults"),
    "unlisted_assign": ({"unlisted_ecgs": "assign"}, {}, {}, "ECGs absent from ecg_icd assigned to folds"),
    "keep_untargeted": ({"drop_ecgs_without_targets": False}, {}, {}, "ECGs without targets kept"),
    "exclude_flagged": ({}, {"exclude_flagged": True}, {}, "flat / mostly missing leads excluded"),
    "decay_all": ({}, {}, {"weight_decay_scope": "all"}, "weight decay on every parameter"),
    "legs": ({}, {}, {"ssm_init": "legs"}, "S4D-LegS initialization"),
}


def _cohort_dir(work: Path, cohort_kw: dict, signals_kw: dict) -> Path:
    key = "_".join(f"{k}-{v}" for k, v in sorted({**cohort_kw, **signals_kw}.items())) or "default"
    return work / "cohorts" / key


def run_variant(name: str, work: Path, src: dict, bc: book.BookConfig, workers: int) -> dict:
    cohort_kw, signals_kw, train_kw, what = VARIANTS[name]
    t0 = time.perf_counter()
    cdir = _cohort_dir(work, cohort_kw, signals_kw)
    if not (cdir / layout.TARGETS).exists():
        base = _cohort_dir(work, cohort_kw, {})
        if signals_kw and (base / layout.TARGETS).exists():  # same cohort, other signals
            cdir.mkdir(parents=True, exist_ok=True)
            for f in (layout.COHORT, layout.TARGETS, layout.FLOW):
                shutil.copy2(base / f, cdir / f)
        else:
            cohort.build_cohort(cohort.CohortConfig(**src, cohort_dir=cdir, min_lab_events=bc.min_lab_events,
                                                    min_per_class=bc.min_per_class, **cohort_kw))
    signals.convert_signals(signals.SignalsConfig(cohort_dir=cdir, ecg=src["ecg"], workers=workers, **signals_kw))
    run = work / "runs" / name
    train.train(train.TrainConfig(cohort_dir=cdir, run_dir=run, epochs=bc.epochs, d_model=bc.d_model,
                                  n_layers=bc.n_layers, batch_size=bc.batch_size, accelerator=bc.accelerator,
                                  seed=bc.seed, **train_kw))
    folder = evaluate.evaluate_run(evaluate.EvaluateConfig(run_dir=run, n_iterations=bc.n_iterations, seed=bc.seed))
    s = selfcheck.results_summary(evaluate.read_results(folder / layout.RESULTS))
    n_ecgs = len(pd.read_parquet(cdir / layout.COHORT, columns=["study_id"]))
    return {"variant": name, "change": what, "macro_auroc": round(s["macro_auroc"], 3),
            "low": round(s["macro_low"], 3), "high": round(s["macro_high"], 3),
            **{f"sig_{t}": n for t, n in s["n_significant"].items()},
            "targets": s["n_targets"], "ecgs": n_ecgs, "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("artifacts/ablation"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--patients", type=int, help="override the classroom default (smoke runs)")
    ap.add_argument("--epochs", type=int, help="override the classroom default (smoke runs)")
    args = ap.parse_args(argv)
    bc = book.BookConfig()
    bc = dataclasses.replace(bc, **{k: getattr(args, k) for k in ("patients", "epochs") if getattr(args, k)})
    work = args.out.resolve()
    torch.set_num_threads(max(1, args.workers))
    print(f"device: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; classroom defaults: {bc.patients} patients, seed {bc.seed}, "
          f"width {bc.d_model}, {bc.n_layers} blocks, {bc.epochs} epochs", flush=True)
    src = book.locate_source(work / "synthetic", True, bc.patients, bc.seed, workers=args.workers)
    rows = []
    for name in args.variants:
        rows.append(run_variant(name, work, src, bc, args.workers))
        table = pd.DataFrame(rows).set_index("variant")
        table.to_csv(work / "ablation.csv")
        print(table.to_string(), flush=True)
    base = next((r for r in rows if r["variant"] == "default"), None)
    if base is not None:
        for r in rows:
            if r is not base:
                print(f"{r['variant']:>16}: macro AUROC {r['macro_auroc']:.3f} vs default {base['macro_auroc']:.3f} "
                      f"({r['macro_auroc'] - base['macro_auroc']:+.3f}); significant est {r['sig_est']} vs "
                      f"{base['sig_est']}")


if __name__ == "__main__":
    main()
