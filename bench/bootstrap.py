"""Bootstrap AUROC intervals: labecg.stats.bootstrap vs. a loop over sklearn.

Problem of the paper's size: 40,000 test ECGs x 140 targets x 1000 resamples, with the
missingness of lab targets (each target observed for a log-uniform 1-60% of ECGs,
prevalence 5-40%, scores with ties at float32 precision).

Ours: sort once, then per resample a weighted Mann-Whitney over all targets. The
patient-level (cluster) bootstrap, ``groups=subject_id``, is timed on the same problem
with about 3 ECGs per patient (MIMIC-IV-ECG: about 5); it must cost what the ECG-level
one costs.
Baseline: per resample and target, ``sklearn.metrics.roc_auc_score`` on the resampled,
masked arrays (what the authors' code does, minus its process pool). It is timed on a
few resamples and extrapolated to 1000; the output says so.

Last, the calibration intervals of ``labecg.stats.calibration`` (a logistic fit per target and
resample) on 1,500 ECGs: seconds per target.

    .venv/bin/python bench/bootstrap.py [--ecgs 40000] [--targets 140] [--iterations 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np
from sklearn.metrics import roc_auc_score

from labecg.metrics import resample_indices
from labecg.stats import bootstrap, calibration


def make_problem(n_ecgs: int, n_targets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    observed_frac = np.exp(rng.uniform(np.log(0.01), np.log(0.60), n_targets))  # (T,)
    prevalence = rng.uniform(0.05, 0.40, n_targets)  # (T,)
    y_true = (rng.random((n_ecgs, n_targets)) < prevalence).astype(np.float32)  # (n, T)
    y_true[rng.random((n_ecgs, n_targets)) > observed_frac] = np.nan
    signal = rng.uniform(0.2, 1.5, n_targets)
    logit = rng.normal(size=(n_ecgs, n_targets)) + signal * np.nan_to_num(y_true)
    y_score = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return y_true, y_score


def sklearn_loop(y_true, y_score, n_iterations: int, seed: int) -> np.ndarray:
    n, T = y_true.shape
    out = np.full((n_iterations, T), np.nan)
    for i, idx in enumerate(resample_indices(n, n_iterations, seed)):
        yt, ys = y_true[idx], y_score[idx]
        for t in range(T):
            m = ~np.isnan(yt[:, t])
            labels = yt[m, t]
            if labels.size and labels.min() != labels.max():
                out[i, t] = roc_auc_score(labels, ys[m, t])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ecgs", type=int, default=40_000)
    parser.add_argument("--targets", type=int, default=140)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--baseline-iterations", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median)")
    args = parser.parse_args()

    y_true, y_score = make_problem(args.ecgs, args.targets)
    observed = ~np.isnan(y_true)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared, noisy)")
    print(f"problem: {args.ecgs} ECGs x {args.targets} targets, {args.iterations} resamples; "
          f"{observed.mean():.1%} of labels observed ({observed.sum():,} pairs), "
          f"prevalence {np.nanmean(y_true):.1%}")

    bootstrap(y_true[:2000], y_score[:2000], 5, progress=False)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res, its = bootstrap(y_true, y_score, args.iterations, seed=0, return_iterations=True,
                             progress=False)
        times.append(time.perf_counter() - t0)
    t_ours = statistics.median(times)
    print(f"ours (labecg.stats.bootstrap): {t_ours:.2f} s median of {args.repeats} "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}); "
          f"{1000 * t_ours / args.iterations:.2f} ms per resample")

    groups = np.sort(np.random.default_rng(1).integers(0, args.ecgs // 3, args.ecgs))  # (n,) patient ids
    times_p = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        bootstrap(y_true, y_score, args.iterations, seed=0, groups=groups, progress=False)
        times_p.append(time.perf_counter() - t0)
    t_patient = statistics.median(times_p)
    print(f"ours, patient-level (groups=, {np.unique(groups).size:,} patients): {t_patient:.2f} s median of "
          f"{args.repeats}; patient-level vs ECG-level: {t_patient / t_ours:.2f}x the time "
          f"(target: under 30 s -> {'met' if t_patient < 30 else 'NOT met'})")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        base = sklearn_loop(y_true, y_score, args.baseline_iterations, seed=0)
        t_base_run = time.perf_counter() - t0
    t_base = t_base_run / args.baseline_iterations * args.iterations
    diff = np.nanmax(np.abs(base - its[: args.baseline_iterations, : args.targets]))
    print(f"baseline (roc_auc_score per target per resample): {t_base_run:.2f} s for "
          f"{args.baseline_iterations} resamples, EXTRAPOLATED to {args.iterations}: {t_base:.0f} s")
    print(f"max |ours - sklearn| on those resamples: {diff:.1e}")
    print(f"bootstrap speed-up vs sklearn loop: {t_base / t_ours:.0f}x "
          f"(target: ours under 30 s -> {'met' if t_ours < 30 else 'NOT met'})")

    # calibration intervals: a logistic fit per target and resample, on a chapter-sized test split
    n_cal, t_cal = min(1500, args.ecgs), min(3, args.targets)
    t0 = time.perf_counter()
    calibration(y_true[:n_cal, :t_cal], y_score[:n_cal, :t_cal].astype(float), n_iterations=args.iterations, seed=0)
    t_cal_run = time.perf_counter() - t0
    print(f"calibration intervals (labecg.stats.calibration, {n_cal} ECGs, {args.iterations} resamples): "
          f"{t_cal_run / t_cal:.2f} s per target ({t_cal} targets)")


if __name__ == "__main__":
    main()
