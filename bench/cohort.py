"""Cohort builder speed and memory: DuckDB streaming vs. the per-ECG pandas baseline, and at full MIMIC scale.

Default mode (small/large comparison) builds (or reuses) two synthetic trees, tables only:
- small: ``labecg.synthetic.generate`` (the planted-effect generator), where the baseline
  (``bench/cohort_baseline.py``) also runs; labels must be identical, and the speed ratio is
  printed;
- large: ``labecg.synthetic.generate`` if it makes ``--large-lab-rows`` quickly enough, else the
  numpy-fast random tree of ``tests/mimic_fixtures.py`` (same file layouts).

Each build runs in a child process: wall time, peak resident memory of the child (maxrss)
and lab rows per second; then a projection to full MIMIC (~158M lab rows, ~800k ECGs) by
lab rows per second at the large size.

    python bench/cohort.py [--work /tmp/labecg_bench] [--small-patients 500] [--large-lab-rows 10000000]

Scale mode (``--tile K``): the book's default 3,000-patient synthetic tree (``BookConfig``'s
patients and seed, tables only; or ``--base DIR``) repeated K times with every id offset per copy
(:func:`tile_tree`: patients, admissions, ED stays, lab rows, specimens and ECG studies stay
unique and consistent). K = 228 is real MIMIC's size (158M lab rows, 1.71M ECGs). It
measures the floor first (DuckDB scanning ``labevents`` alone, the stage's columns and
types, in a child process), then runs the cohort stage ``--repeats`` times, each in a
fresh child process, and prints wall time, peak RSS (the child's own maxrss, DuckDB
included), lab rows/s, the per-step timings of the flow log, the stage's time as a ratio
to the floor, and the projection to real MIMIC-IV 3.1 (~158M lab rows, ~800k ECGs).
``--machine-memory 16GB`` runs the stage with the default memory share of a machine of
that size (what the stage would choose there); ``--memory-limit`` sets the limit itself.

    python bench/cohort.py --tile 228 [--base DIR] [--work /tmp/labecg_bench] [--machine-memory 16GB] [--repeats 2]

The tiled tree (``WORK/tile<K>``, ~4.5 GB at K = 228, built once in ~6 min and reused)
is the benchmark's input, never committed.
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
extra = {"memory_limit": sys.argv[5]} if sys.argv[5] else {}
t = time.perf_counter()
r = build_cohort(CohortConfig(**src, cohort_dir=out, min_lab_events=int(sys.argv[3]), min_per_class=int(sys.argv[4]),
                              **extra))
print(json.dumps({"wall_s": time.perf_counter() - t, "summary": r.summary,
                  "maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""

# the floor: DuckDB scanning labevents alone, the stage's columns and types, every column used
FLOOR = """
import sys, json, time, resource
from pathlib import Path
import duckdb
from labecg import readers
path = Path(sys.argv[1])
header = readers.read_header(path, readers.REQUIRED["labevents"])
types = {"labevent_id": "BIGINT", "subject_id": "BIGINT", "itemid": "BIGINT", "charttime": "TIMESTAMP",
         "valuenum": "DOUBLE", "ref_range_lower": "DOUBLE", "ref_range_upper": "DOUBLE"}
con = duckdb.connect(config={"memory_limit": sys.argv[2]} if sys.argv[2] else {})
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
n = con.execute(f"SELECT count(*), sum(labevent_id), sum(subject_id), sum(itemid), max(charttime), sum(valuenum), "
                f"max(valueuom), sum(ref_range_lower), sum(ref_range_upper) "
                f"FROM {readers.scan_sql(path, header, types)}").fetchone()[0]
print(json.dumps({"wall_s": time.perf_counter() - t, "rows": n,
                  "maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


# ---------------------------------------------------------------------------------------
# the tiled source (--tile K): the default tree K times, ids offset per copy

#: Per copy k every id below is moved by k * TILE_ID_STEP (all the synthetic tree's ids are
#: < 10^8), so patients, admissions, ED stays, lab rows, specimens and ECG studies stay unique
#: and still point at each other; times, values and text are the base tree's.
TILE_ID_STEP = 100_000_000
TILE_TABLES = {  # file under the data root -> columns holding ids
    "mimiciv/hosp/patients.csv.gz": ("subject_id",),
    "mimiciv/hosp/admissions.csv.gz": ("subject_id", "hadm_id"),
    "mimiciv/hosp/labevents.csv.gz": ("labevent_id", "subject_id", "hadm_id", "specimen_id"),
    "mimiciv/hosp/omr.csv.gz": ("subject_id",),
    "mimiciv/hosp/d_labitems.csv.gz": (),
    "mimic-iv-ed/ed/edstays.csv.gz": ("subject_id", "hadm_id", "stay_id"),
    "mimic-iv-ed/ed/vitalsign.csv.gz": ("subject_id", "stay_id"),
    "mimic-iv-ecg/record_list.csv": ("subject_id", "study_id", "file_name"),
    "mimic-iv-ecg/machine_measurements.csv": ("subject_id", "study_id"),
    "mimic-iv-ecg-ext-icd-labels/records_w_diag_icd10.csv": ("study_id", "subject_id", "ed_stay_id", "ed_hadm_id",
                                                            "hosp_hadm_id"),
}
# the record path names the (new) subject and study: files/p<first 4 digits>/p<subject>/s<study>/<study>
_PATH = ("'files/p' || left(CAST(subject_id AS VARCHAR), 4) || '/p' || CAST(subject_id AS VARCHAR) || '/s' "
         "|| CAST(study_id AS VARCHAR) || '/' || CAST(study_id AS VARCHAR)")
TILE_PATHS = {"mimic-iv-ecg/record_list.csv": {"path": _PATH},
              "mimic-iv-ecg-ext-icd-labels/records_w_diag_icd10.csv": {
                  "file_name": "'mimic-iv-ecg-diagnostic-electrocardiogram-matched-subset-1.0/' || " + _PATH}}


def zlib_gzip(data: bytes) -> bytes:
    """One gzip member of ``data`` at compression level 1."""
    return gzip.compress(data, compresslevel=1, mtime=0)


def tile_tree(base: Path, root: Path, k: int) -> dict:
    """Write ``root``: every table of ``base`` repeated ``k`` times, ids offset per copy (:data:`TILE_ID_STEP`).

    Copy 0 is the base tree's rows unchanged (up to CSV quoting); the copies follow in order,
    each its own gzip member (level 1) of the ``.csv.gz`` (a multi-member gzip, which gzip, pandas and
    DuckDB read as one file). ``d_labitems`` is written once. A stamp ``tile.json`` (base, k,
    row counts) makes a finished tree reusable; a tree without one is rebuilt. Returns the stamp.
    """
    import duckdb
    stamp = root / "tile.json"
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info["k"] == k and info["base"] == str(base):
            return info
        raise SystemExit(f"{root}: holds a tile of {info['base']} x {info['k']}, not {base} x {k}; use another --work")
    t0 = time.perf_counter()
    con = duckdb.connect(config={"threads": 2, "preserve_insertion_order": True})
    con.execute("SET enable_progress_bar = false")
    part = root / ".part"
    rows = {}
    for rel, id_cols in TILE_TABLES.items():
        src, dst = base / rel, root / rel
        if not src.exists():
            raise SystemExit(f"{src}: missing; --base must be a tree of `labecg synth` (tables only is enough)")
        dst.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"CREATE OR REPLACE TABLE base AS SELECT * FROM read_csv('{src}', header=true, all_varchar=true)")
        header = [d[0] for d in con.execute("SELECT * FROM base LIMIT 0").description]
        paths = TILE_PATHS.get(rel, {})
        gz = rel.endswith(".gz")
        n = k if id_cols else 1
        with open(dst.with_name(dst.name + ".tmp"), "wb") as out:
            for copy in range(n):
                inner = ", ".join(f"CAST(CAST(\"{c}\" AS BIGINT) + {copy * TILE_ID_STEP} AS VARCHAR) AS \"{c}\""
                                  if c in id_cols else f"\"{c}\"" for c in header)
                outer = ", ".join(f"{paths[c]} AS \"{c}\"" if c in paths else f"\"{c}\"" for c in header)
                con.execute(f"COPY (SELECT {outer} FROM (SELECT {inner} FROM base)) TO '{part}' "
                            f"(FORMAT csv, HEADER {'true' if copy == 0 else 'false'})")
                # zlib level 1: 5x faster than DuckDB's gzip here; reading speed barely depends on the level
                out.write(zlib_gzip(part.read_bytes()) if gz else part.read_bytes())
        dst.with_name(dst.name + ".tmp").replace(dst)
        rows[rel] = con.execute("SELECT count(*) FROM base").fetchone()[0] * n
        print(f"  tiled {rel}: {rows[rel]:,} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    part.unlink(missing_ok=True)
    info = {"base": str(base), "k": k, "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    stamp.write_text(json.dumps(info, indent=1))
    return info


def count_rows(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for _ in f) - 1


def run_child(code: str, args: list[str], log: list | None = None) -> tuple[dict, float, float]:
    """Run ``code`` in a fresh interpreter; return its JSON line, wall seconds, peak RSS GiB.

    The peak is the child's own maxrss when it reports one (``maxrss_gib``: that run
    alone), else the maximum over all children so far. ``log`` receives the child's stderr
    lines (the stage's flow log).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if p.returncode:
        raise RuntimeError(f"child failed:\n{p.stderr[-3000:]}")
    if log is not None:
        log.extend(p.stderr.splitlines())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited children (KiB on Linux)
    line = json.loads([x for x in p.stdout.splitlines() if x.startswith("{")][-1])
    return line, wall, line.get("maxrss_gib", max(peak, before) / 2**20)


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


def default_base(work: Path) -> Path:
    """The book's default synthetic tree (``BookConfig``'s patients and seed), tables only, under ``work``."""
    from labecg.book import BookConfig
    from labecg.synthetic import SynthConfig, generate
    book = BookConfig()
    root = work / f"base{book.patients}"
    if not (root / "mimic-iv-ecg" / "record_list.csv").exists():
        t = time.perf_counter()
        generate(SynthConfig(data_root=root, patients=book.patients, seed=book.seed,
                             waveform_fraction=0.0, progress=False))
        print(f"  generated the default synthetic tree (tables only) in {root} in {time.perf_counter() - t:.0f} s")
    return root


def scale(a) -> None:
    """``--tile K``: the stage on the default tree repeated K times (see the module docstring)."""
    from labecg import cohort
    base = a.base.resolve() if a.base else default_base(a.work)
    root = a.work / f"tile{a.tile}"
    print(f"tiled source {root}: base {base} x {a.tile}")
    info = tile_tree(base, root, a.tile)
    n_lab = info["rows"]["mimiciv/hosp/labevents.csv.gz"]
    n_ecg = info["rows"]["mimic-iv-ecg/record_list.csv"]
    gz = (root / "mimiciv/hosp/labevents.csv.gz").stat().st_size
    print(f"  {n_lab:,} lab rows ({gz / 1e9:.2f} GB of gzip, level 1), {n_ecg:,} ECGs, "
          f"{info['rows']['mimiciv/hosp/patients.csv.gz']:,} patients (built in {info['seconds']:.0f} s)")
    limit = a.memory_limit
    if a.machine_memory:
        total = cohort.parse_bytes(a.machine_memory)
        limit = cohort.memory_limit_bytes(cohort.CohortConfig.memory_limit, total)
        limit = f"{limit / 2**30:.2f}GiB"
        print(f"  memory_limit: the default {cohort.CohortConfig.memory_limit!r} of a {a.machine_memory} machine = {limit}")
    floor_walls = []
    for _ in range(a.repeats if a.floor else 0):
        res, _, peak = run_child(FLOOR, [str(root / "mimiciv/hosp/labevents.csv.gz"), limit or ""])
        floor_walls.append(res["wall_s"])
    floor = float(np.median(floor_walls)) if floor_walls else None
    if floor:
        print(f"floor: DuckDB scanning labevents alone (the stage's 8 columns and types): {floor:.1f} s "
              f"(median of {len(floor_walls)}: {', '.join(f'{w:.1f}' for w in floor_walls)}), "
              f"{n_lab / floor:,.0f} rows/s, peak RSS {peak:.2f} GiB")
    walls, peaks = [], []
    for i in range(a.repeats):
        out = a.work / f"tile{a.tile}_cohort"
        log: list[str] = []
        res, _, peak = run_child(CHILD, [str(root), str(out), "200", "10", limit or ""], log)
        walls.append(res["wall_s"])
        peaks.append(peak)
        print(f"run {i + 1}: {res['wall_s']:.0f} s, peak RSS {peak:.2f} GiB; {res['summary']['n_ecgs']:,} ECGs in the cohort")
        (a.work / f"tile{a.tile}_run{i + 1}.log").write_text("\n".join(log) + "\n")
        for line in log:
            if "time per step" in line or "memory_limit" in line or line.endswith(" s)"):
                print("    " + line)
    wall, peak = float(np.median(walls)), float(np.median(peaks))
    print(f"stage: {wall:.0f} s (median of {len(walls)}: {', '.join(f'{w:.0f}' for w in walls)}), "
          f"peak RSS {peak:.2f} GiB (median; max {max(peaks):.2f}), {n_lab / wall:,.0f} lab rows/s"
          + (f", {wall / floor:.1f}x the floor" if floor else ""))
    proj_lab = wall * MIMIC_LAB_ROWS / n_lab
    proj_ecg = wall * MIMIC_ECGS / n_ecg
    print(f"projected real MIMIC-IV 3.1 ({MIMIC_LAB_ROWS / 1e6:.0f}M lab rows, {MIMIC_ECGS / 1e3:.0f}k ECGs): "
          f"{proj_lab / 60:.1f} min linear in lab rows ({proj_ecg / 60:.1f} min linear in ECGs; "
          "real labevents rows are wider text, and this tree has 2.1x real MIMIC's ECGs per lab row)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/labecg_bench"))
    ap.add_argument("--small-patients", type=int, default=500)
    ap.add_argument("--large-lab-rows", type=int, default=10_000_000)
    ap.add_argument("--large-kind", choices=["synthetic", "random"], default="random")
    ap.add_argument("--memory-limit", default=None,
                    help="DuckDB memory limit (default: the stage's default, a share of this machine's memory)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per size (default 3; 2 with --tile)")
    ap.add_argument("--tile", type=int, default=None, metavar="K",
                    help="scale mode: the default tree repeated K times (228 = real MIMIC's lab rows)")
    ap.add_argument("--base", type=Path, default=None, help="--tile: the tree to repeat (default: generated)")
    ap.add_argument("--machine-memory", default=None,
                    help="--tile: run with the default memory share of a machine with this much memory, e.g. 16GB")
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="--tile: skip the labevents scan floor")
    a = ap.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
          f"python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
    if a.tile:
        a.repeats = a.repeats or 2
        return scale(a)
    a.repeats = a.repeats or 3

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
            res, wall, peak = run_child(CHILD, [str(root), str(out), str(mle), str(mpc), a.memory_limit or ""])
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
