"""Cohort builder speed: DuckDB streaming vs. the per-ECG pandas baseline.

Builds (or reuses) two synthetic trees, tables only:
- small: ``labecg.synthetic.generate`` (the planted-effect generator), where the baseline
  (``bench/cohort_baseline.py``) also runs; labels must be identical, and the speed ratio is
  printed;
- large: ``labecg.synthetic.generate`` if it makes ``--large-lab-rows`` quickly enough, else the
  numpy-fast random tree of ``tests/mimic_fixtures.py`` (same file layouts).

Each build runs in a child process: wall time, peak resident memory of the child (maxrss)
and lab rows per second; then a projection to full MIMIC (~158M lab rows, ~800k ECGs) by
lab rows per second at the large size.

    python bench/cohort.py [--work /tmp/labecg_bench] [--small-patients 500] [--large-lab-rows 10000000]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labecg.sources import source_paths

ROOT = Path(__file__).resolve().parents[1]
MIMIC_LAB_ROWS = 158_000_000
MIMIC_ECGS = 800_000

CHILD = """
import sys, json, time, resource
from pathlib import Path
from labecg.cohort import CohortConfig, build_cohort
from labecg.sources import source_paths
root, out = Path(sys.argv[1]), Path(sys.argv[2])
src = source_paths(root)
t = time.perf_counter()
r = build_cohort(CohortConfig(**src, cohort_dir=out, min_lab_events=int(sys.argv[3]), min_per_class=int(sys.argv[4]),
                              memory_limit=sys.argv[5]))
print(json.dumps({"wall_s": time.perf_counter() - t, "summary": r.summary}))
"""


def count_rows(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for _ in f) - 1


def run_child(code: str, args: list[str]) -> tuple[dict, float, float]:
    """Run ``code`` in a fresh interpreter; return its JSON line, wall seconds, peak RSS GiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if p.returncode:
        raise RuntimeError(f"child failed:\n{p.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited children (KiB on Linux)
    line = [x for x in p.stdout.splitlines() if x.startswith("{")][-1]
    return json.loads(line), wall, max(peak, before) / 2**20


def make_tree(kind: str, root: Path, patients: int, seed: int, labs_per_patient: int = 250) -> Path:
    if (root / "mimic-iv-ecg" / "record_list.csv").exists():
        return root
    t = time.perf_counter()
    if kind == "synthetic":
        from labecg.synthetic import SynthConfig, generate
        generate(SynthConfig(data_root=root, patients=patients, seed=seed, waveform_fraction=0.0, progress=False))
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        import mimic_fixtures
        mimic_fixtures.random_tree(root, patients=patients, labs_per_patient=labs_per_patient,
                                   ecgs_per_patient=3, n_labels=40, seed=seed)
    print(f"  generated {kind} tree {root} in {time.perf_counter() - t:.0f} s")
    return root


def load_baseline():
    spec = importlib.util.spec_from_file_location("cohort_baseline", ROOT / "tests" / "reference" / "cohort_baseline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compare_labels(root: Path, out: Path, min_lab_events: int, min_per_class: int) -> tuple[float, int, int]:
    """Run the baseline; assert identical labels and kept targets. Returns (seconds, n_targets, n_values)."""
    cb = load_baseline()
    src = source_paths(root)
    t = time.perf_counter()
    df, _ = cb.build_labels(src, min_lab_events)
    secs = time.perf_counter() - t
    c = pd.read_parquet(out / "cohort.parquet")
    names = [m["name"] for m in json.loads((out / "targets.json").read_text())["targets"]]
    if not np.array_equal(c["study_id"].to_numpy(), df["study_id"].to_numpy()):
        raise AssertionError("row order differs from the baseline")
    kept = cb.kept_targets(df, c["fold"].to_numpy(), min_per_class)
    if sorted(kept) != sorted(names):
        raise AssertionError(f"kept targets differ: {sorted(set(kept) ^ set(names))[:10]}")
    for n in names:
        if not np.array_equal(c[n].to_numpy(float), df[n].to_numpy(float), equal_nan=True):
            raise AssertionError(f"labels of {n} differ from the baseline")
    return secs, len(names), int(np.isfinite(c[names].to_numpy(float)).sum())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/labecg_bench"))
    ap.add_argument("--small-patients", type=int, default=500)
    ap.add_argument("--large-lab-rows", type=int, default=10_000_000)
    ap.add_argument("--large-kind", choices=["synthetic", "random"], default="random")
    ap.add_argument("--memory-limit", default="16GB")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}")

    sizes = [("small", "synthetic", a.small_patients, 20, 2)]
    large_patients = max(1, a.large_lab_rows // 250)
    sizes.append(("large", a.large_kind, large_patients if a.large_kind == "random" else large_patients, 200, 10))
    results = {}
    for name, kind, patients, mle, mpc in sizes:
        root = make_tree(kind, a.work / f"{name}_{kind}_{patients}", patients, seed=1)
        n_lab = count_rows(root / "mimiciv" / "hosp" / "labevents.csv.gz")
        n_ecg = count_rows(root / "mimic-iv-ecg" / "record_list.csv")
        out = a.work / f"{name}_cohort"
        walls, peaks = [], []
        for _ in range(a.repeats if name == "small" else min(2, a.repeats)):
            res, wall, peak = run_child(CHILD, [str(root), str(out), str(mle), str(mpc), a.memory_limit])
            walls.append(res["wall_s"])
            peaks.append(peak)
        wall = float(np.median(walls))
        results[name] = {"lab_rows": n_lab, "ecgs": n_ecg, "wall_s": wall}
        print(f"{name:5s} ({kind}): {n_lab:,} lab rows, {n_ecg:,} ECGs: build_cohort {wall:.2f} s "
              f"(median of {len(walls)}), peak RSS {max(peaks):.2f} GiB, {n_lab / wall:,.0f} lab rows/s, "
              f"{res['summary']['n_targets']}")
        if name == "small":
            t_base, n_t, n_v = compare_labels(root, out, mle, mpc)
            results[name]["baseline_s"] = t_base
            print(f"       baseline (pandas, per ECG): {t_base:.1f} s; labels identical "
                  f"({n_t} targets, {n_v:,} non-missing values)")
            print(f"       cohort vs baseline: {t_base / wall:.1f}x")
    s, l = results["small"], results["large"]
    per_ecg = s["baseline_s"] / s["ecgs"]
    print(f"baseline per ECG {per_ecg * 1e3:.1f} ms -> projected at large size {per_ecg * l['ecgs']:.0f} s: "
          f"projected ratio {per_ecg * l['ecgs'] / l['wall_s']:.0f}x (projection, not run)")
    proj = l["wall_s"] * MIMIC_LAB_ROWS / l["lab_rows"]
    print(f"projected full MIMIC ({MIMIC_LAB_ROWS / 1e6:.0f}M lab rows) at {l['lab_rows'] / l['wall_s']:,.0f} "
          f"rows/s: {proj / 60:.1f} min (linear in lab rows; real labevents rows are wider text)")


if __name__ == "__main__":
    main()
