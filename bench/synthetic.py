"""Throughput and peak memory of ``labecg.synthetic.generate`` at several sizes.

Each size runs in a fresh child process (so peak RSS is that run's alone: the child's own
maximum resident set plus that of its worker processes), ``--repeats`` times; the table
shows medians. Last, the two WFDB writers (``SynthConfig.writer``) on 200 patients, one worker.

    python bench/synthetic.py                      # 1k patients with all waveforms, 10k tables + 10 % waveforms
    python bench/synthetic.py --large              # adds 40k patients (~100k ECGs), tables only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from labecg import layout
from labecg.synthetic import SynthConfig, generate
kw = json.loads(sys.argv[1])
t0 = time.perf_counter()
root = generate(SynthConfig(progress=False, **kw))
wall = time.perf_counter() - t0
meta = json.loads((Path(root) / layout.SYNTHETIC_MARKER).read_text())
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": wall, "ecgs": meta["rows"]["record_list"], "lab_rows": meta["rows"]["labevents"],
                  "waveforms": meta["n_waveforms"], "peak_rss_mib": rss / 1024,
                  "peak_rss_worker_mib": rss_children / 1024}))
"""


def run_once(kw: dict) -> dict:
    tmp = tempfile.mkdtemp(prefix="labecg_bench_")
    try:
        kw = dict(kw, data_root=os.path.join(tmp, "mimic"))
        res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kw)], check=True, capture_output=True, text=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        out["disk_mib"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs) / 2**20
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--large", action="store_true", help="also 40k patients, tables only")
    args = ap.parse_args()
    sizes = [("1k, all waveforms", dict(patients=1000, waveform_fraction=1.0)),
             ("10k, 10% waveforms", dict(patients=10000, waveform_fraction=0.1))]
    if args.large:
        sizes.append(("40k, tables only", dict(patients=40000, waveform_fraction=0.0)))
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"workers={args.workers}, repeats={args.repeats} (medians)")
    print(f"{'size':<22}{'wall s':>8}{'ECGs':>9}{'ECGs/s':>9}{'wave/s':>8}{'lab rows':>11}{'rows/s':>10}"
          f"{'RSS MiB':>9}{'wkr MiB':>9}{'disk MiB':>10}")
    base = None
    for name, kw in sizes:
        runs = [run_once(dict(kw, seed=0, workers=args.workers)) for _ in range(args.repeats)]
        r = {k: median([x[k] for x in runs]) for k in runs[0]}
        ecg_s = r["ecgs"] / r["wall_s"]
        print(f"{name:<22}{r['wall_s']:>8.1f}{r['ecgs']:>9d}{ecg_s:>9.0f}{r['waveforms'] / r['wall_s']:>8.0f}"
              f"{r['lab_rows']:>11d}{r['lab_rows'] / r['wall_s']:>10.0f}{r['peak_rss_mib']:>9.0f}"
              f"{r['peak_rss_worker_mib']:>9.0f}{r['disk_mib']:>10.0f}")
        base = base or ecg_s
    print(f"(ECGs/s counts every ECG listed; wave/s only those with a WFDB record; "
          f"first size is the {base:.0f} ECGs/s baseline)")
    writer = {w: run_once(dict(patients=200, seed=0, workers=1, writer=w)) for w in ("fast", "wfdb")}
    n_wave = writer["fast"]["waveforms"]
    print(f"writers, 200 patients ({n_wave} records, 1 worker): fast {writer['fast']['wall_s']:.1f} s, "
          f"wfdb.wrsamp {writer['wfdb']['wall_s']:.1f} s: "
          f"{(writer['wfdb']['wall_s'] - writer['fast']['wall_s']) / n_wave * 1e3:.1f} ms more per record")


if __name__ == "__main__":
    main()
