"""The book: execute the stage notebooks with papermill, then build the Jupyter Book.

``labecg book`` (and ``make book``) runs ``notebooks/01_data.ipynb`` ... ``04_results.ipynb``
in order (``01b_real_rows``: the cohort stage on the shipped MIMIC demo tables, offline), each into ``book/notebooks/`` (git-ignored; the book renders these executed
copies, ``_config.yml`` sets ``execute_notebooks: "off"``), then ``jupyter-book build``,
then the privacy check (:func:`labecg.privacy.check_privacy`) over the HTML and the executed
notebooks, with the ids of the cohort, of the run folders and of the shipped demo (:func:`demo_ids`). It builds the book and nothing else: the notebooks call the stages themselves
(:mod:`labecg.sources`, :mod:`labecg.signals`, :mod:`labecg.train`, ...), as the CLI does.

Caching: a stage is skipped when its record in ``book/notebooks/.cache/<stage>.json``
equals what it would be now: the parameters passed, the SHA-256 of the source notebook and
of the package's modules the notebooks run (all but the builder and the Sphinx extension,
:mod:`labecg.sphinx_ext`), and the size and mtime of every file the stage reads or writes
(listed in :func:`stage_files`). Records are written after a stage succeeds, with
the fingerprints taken after it ran, so a second build with nothing changed executes no
notebook. A stage that reruns rewrites its outputs, which changes the fingerprints of the
stages after it, so they rerun too.

Split execution (``from_run=True``): only ``04_results`` runs, from ``run_dir`` alone;
the earlier chapters are copied unexecuted with a note saying so. The run folders are
checked first, and the placeholders are written only after ``04_results`` succeeded, so a
failed build leaves the previous book and cache as they were.

Progress: on a terminal, one bar per chapter counts its cells and shows, beside it, the
latest state of the stage's own bar (synthetic patients, signals, training epochs,
bootstrap). The stages write those bars to a file named by ``LABECG_PROGRESS_FILE``
(:func:`labecg.util.progress_bar`), never into the notebook, so no page shows progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Optional

from labecg import layout
from labecg.layout import MIMIC_DEMO_ROOT, MIMIC_FILES, MIMIC_SOURCES, MIMIC_TABLES, SYNTHETIC_MARKER
from labecg.metrics import N_RESAMPLES
from labecg.privacy import check_privacy
from labecg.sources import source_paths
from labecg.util import PROGRESS_ENV, atomic_path, get_logger, hold_paths, read_json, write_json

__all__ = ["BookConfig", "BookResult", "STAGES", "build_book", "demo_ids", "stage_files"]

log = get_logger("labecg.book")

STAGES: tuple[str, ...] = ("01_data", "01b_real_rows", "02_signals", "03_training", "04_results")
_ECG_TOP_FILES = tuple(name for source, name in MIMIC_TABLES.values() if source == "ecg")


@dataclass(frozen=True)
class BookConfig:
    """Parameters of a book build; the notebook parameters share these names.

    Paths are relative to the current directory unless absolute (the notebooks receive
    them relative to ``book_root`` when they lie inside it, else absolute). The defaults
    are the classroom scale: the whole book, training included, on a 2-core CPU in minutes.

    Parameters
    ----------
    data_root : Path
        Data source in the MIMIC layout.
    generate_synthetic : bool
        Write a synthetic source into data_root unless it holds one (never overwrites real data).
    hosp : Path, optional
        Default: DATA_ROOT/mimiciv/hosp.
    ed : Path, optional
        Default: DATA_ROOT/mimic-iv-ed/ed.
    ecg : Path, optional
        Default: DATA_ROOT/mimic-iv-ecg.
    ecg_icd : Path, optional
        Default: DATA_ROOT/mimic-iv-ecg-ext-icd-labels/records_w_diag_icd10.csv; where it is
        absent (the open MIMIC demo), none, which needs ``--unlisted-ecgs assign``.
    unlisted_ecgs : {"exclude", "assign"}
        Cohort: ECGs without a strat_fold in ECG_ICD: exclude (the authors') or assign (their
        patient's fold or a stratified one; every fold when there is no ECG_ICD file).
    cohort_dir : Path
        Cohort folder (signals go beside it).
    demo_cohort_dir : Path
        Cohort folder of the real-rows chapter (the shipped MIMIC demo tables).
    run_dir : Path
        Run folder of the fusion model.
    patients : int
        Synthetic patients (labecg synth: 300, a quick test size; the book's 3,000 give the
        paper's cohort rules targets).
    min_lab_events : int
        Cohort: rows per lab label (the paper's 200).
    min_per_class : int
        Cohort: positives and negatives per validation/test fold (paper: 10).
    workers : int
        Processes for synthetic waveforms and signal conversion (labecg synth and labecg
        signals: 1; the book uses a laptop's 2 cores).
    epochs : int
        Training epochs (labecg train and the paper: 20; 12 keep the book at classroom scale).
    d_model : int
        S4 width (labecg train and the paper: 512; 64 trains in minutes on a CPU).
    n_layers : int
        S4 blocks (labecg train and the paper: 4; 2 for a CPU).
    batch_size : int
        ECGs per training batch.
    accelerator : str
        Lightning accelerator: cpu, gpu, auto (labecg train: auto; the book pins cpu so a
        build does not depend on the machine).
    seed : int
        Seed of the synthetic source, folds, training and bootstrap.
    n_iterations : int
        Bootstrap resamples.
    variants : tuple of str
        Models to train and compare: fusion (the paper's), code (the authors' code), ecg,
        tabular (the first fills the tables; with tabular the results show what the ECG adds).
    full : bool
        The fuller build (make book-full): also build, train and evaluate the ablations
        (labecg.cohort.ABLATIONS: the causal and row-range cohorts), each in <cohort_dir>-<name> and
        <run_dir>-<name>, and the variants of :data:`FULL_VARIANTS` (the value model) beside ``variants``.
    stages : tuple of str
        Stages to execute.
    book_root : Path
        Folder holding _config.yml, _toc.yml, book/, notebooks/.
    build_html : bool
        Run jupyter-book build after the notebooks.
    force : bool
        Rerun every stage, ignoring the cache.
    from_run : bool
        Split execution: build the results from RUN_DIR alone, without data or training.
    """

    data_root: Path = Path("data/synthetic")
    generate_synthetic: bool = True
    hosp: Optional[Path] = None
    ed: Optional[Path] = None
    ecg: Optional[Path] = None
    ecg_icd: Optional[Path] = None
    unlisted_ecgs: Literal["exclude", "assign"] = "exclude"
    cohort_dir: Path = Path("data/cohort")
    demo_cohort_dir: Path = Path("data/demo_cohort")
    run_dir: Path = Path("runs/default")
    patients: int = 3000
    min_lab_events: int = 200
    min_per_class: int = 10
    workers: int = 2
    epochs: int = 12
    d_model: int = 64
    n_layers: int = 2
    batch_size: int = 32
    accelerator: str = "cpu"
    seed: int = 0
    n_iterations: int = N_RESAMPLES
    variants: tuple[str, ...] = ("fusion", "tabular")
    full: bool = False
    stages: tuple[str, ...] = STAGES
    book_root: Path = Path(".")
    build_html: bool = True
    force: bool = False
    from_run: bool = False

    def __post_init__(self):
        hold_paths(self)
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown:
            raise ValueError(f"stages {unknown} unknown; expected a subset of {list(STAGES)}")
        bad = sorted(set(self.variants) - set(_variant_names()))
        if bad or not self.variants:
            raise ValueError(f"variants {list(self.variants)}: expected one or more of {list(_variant_names())}")
        if self.variants[0] in FULL_VARIANTS:
            raise ValueError(f"variants {list(self.variants)}: the first fills the tables and must be a flag model; "
                             f"put {self.variants[0]!r} after it")
        if self.unlisted_ecgs not in ("exclude", "assign"):
            raise ValueError(f"unlisted_ecgs must be 'exclude' or 'assign', got {self.unlisted_ecgs!r}")
        for name in ("patients", "epochs", "d_model", "n_layers", "batch_size", "n_iterations", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class BookResult:
    """What a build did: ``stages`` maps stage -> "ran" | "cached" | "placeholder" | "not requested"."""

    stages: dict = field(default_factory=dict)
    notebooks: dict = field(default_factory=dict)  # stage -> executed notebook path
    html_index: Optional[Path] = None
    seconds: dict = field(default_factory=dict)  # stage (and "html") -> wall seconds
    reasons: dict = field(default_factory=dict)  # stage -> why it ran (cache miss)

    def __str__(self) -> str:
        lines = [f"{s}: {st} ({self.seconds.get(s, 0.0):.1f} s)" for s, st in self.stages.items()]
        if self.html_index:
            lines.append(f"book: {self.html_index}")
        return "\n".join(lines)


def _variant_names() -> tuple[str, ...]:
    from labecg.train import VARIANT_SETTINGS  # imported late: torch is slow to load for `labecg --help`

    return tuple(VARIANT_SETTINGS)


#: Variants the fuller build (``--full``) trains beside ``BookConfig.variants``: the value model
#: (``labecg train --objective value``). At the classroom size one more fusion-size training
#: (about as long as the fusion model's, the chapter's largest share) would take the default
#: build past its five minutes, so the default leaves it out (measured: ARCHITECTURE.md, issue #25).
FULL_VARIANTS: tuple[str, ...] = ("value",)


def _variants(cfg: BookConfig) -> list[str]:
    """The variants this build trains: ``cfg.variants``, then with ``full`` those of :data:`FULL_VARIANTS` not among them."""
    return list(cfg.variants) + ([v for v in FULL_VARIANTS if v not in cfg.variants] if cfg.full else [])


def _ablations(cfg: BookConfig) -> list[str]:
    """The ablations this build runs: all of ``labecg.cohort.ABLATIONS`` with ``full``, else none."""
    from labecg.cohort import ABLATIONS  # imported late, as above

    return list(ABLATIONS) if cfg.full else []


def _ablation_dirs(cfg: BookConfig, base) -> list[Path]:
    """``<base>-<name>`` of each ablation of the build (:func:`labecg.cohort.ablation_dir`)."""
    from labecg.cohort import ablation_dir

    return [ablation_dir(base, name) for name in _ablations(cfg)]


def _run_dirs(cfg: BookConfig) -> list[Path]:
    """The run folder of each variant of the build (:func:`labecg.train.variant_run_dir`), then of each ablation."""
    from labecg.train import variant_run_dir  # imported late, as above

    return [variant_run_dir(cfg.run_dir, name) for name in _variants(cfg)] + _ablation_dirs(cfg, cfg.run_dir)


# ---------------------------------------------------------------------------- parameters


def _notebook_path(path, book_root: Path) -> str:
    """``path`` (relative to the working directory) as the notebooks read it.

    The notebooks resolve a relative path against the repository (``book_root``,
    :func:`labecg.util.repo_path`), so a path inside ``book_root`` is passed relative to it
    (the pages show no home folder) and any other path absolute.
    """
    full = (Path.cwd() / Path(path).expanduser()).resolve()
    try:
        return full.relative_to(Path(book_root).resolve()).as_posix()
    except ValueError:
        return str(full)


def notebook_parameters(cfg: BookConfig) -> dict:
    """Every papermill parameter, as literals (paths as strings, see :func:`_notebook_path`)."""
    src = source_paths(cfg.data_root, cfg.hosp, cfg.ed, cfg.ecg, cfg.ecg_icd)
    rel = lambda p: _notebook_path(p, cfg.book_root)  # noqa: E731
    return {
        "data_root": rel(cfg.data_root), "generate_synthetic": cfg.generate_synthetic,
        "hosp": rel(src["hosp"]), "ed": rel(src["ed"]), "ecg": rel(src["ecg"]),
        # as given: the notebook looks for the default file itself, after it may have generated it
        "ecg_icd": None if cfg.ecg_icd is None else rel(cfg.ecg_icd),
        "unlisted_ecgs": cfg.unlisted_ecgs, "cohort_dir": rel(cfg.cohort_dir), "run_dir": rel(cfg.run_dir),
        "demo_cohort_dir": rel(cfg.demo_cohort_dir),
        "patients": cfg.patients, "min_lab_events": cfg.min_lab_events,
        "min_per_class": cfg.min_per_class, "workers": cfg.workers, "epochs": cfg.epochs,
        "d_model": cfg.d_model, "n_layers": cfg.n_layers, "batch_size": cfg.batch_size,
        "accelerator": cfg.accelerator, "seed": cfg.seed, "n_iterations": cfg.n_iterations,
        "variants": _variants(cfg), "ablations": _ablations(cfg),
    }


def stage_files(stage: str, cfg: BookConfig) -> list[tuple[Path, bool]]:
    """Files and folders a stage reads or writes, as (path, recurse) pairs for fingerprints.

    Folders with ``recurse=False`` count only the named files below them. The ECG tree
    (800k WFDB records on MIMIC) is represented by its two index files; a WFDB file
    changed in place without them needs ``force=True``.
    """
    src = source_paths(cfg.data_root, cfg.hosp, cfg.ed, cfg.ecg, cfg.ecg_icd)
    # the ICD file's place whether or not it exists yet (01_data may generate it)
    ecg_icd = cfg.ecg_icd or cfg.data_root / MIMIC_SOURCES["ecg_icd"]
    cohort = cfg.cohort_dir
    ecg_index = [(src["ecg"] / f, False) for f in _ECG_TOP_FILES]
    runs = _run_dirs(cfg)
    cohorts = [cohort] + _ablation_dirs(cfg, cohort)
    if stage == "01_data":
        return ([(src["hosp"], True), (src["ed"], True), (ecg_icd, False)]
                + [(cfg.data_root / SYNTHETIC_MARKER, False)] + ecg_index
                + [(c / f, False) for c in cohorts for f in layout.COHORT_FILES])
    if stage == "01b_real_rows":
        return [(MIMIC_DEMO_ROOT, True)] + [(cfg.demo_cohort_dir / f, False) for f in layout.COHORT_FILES]
    if stage == "02_signals":
        return ecg_index + [(c / f, False) for c in cohorts for f in layout.COHORT_FILES + layout.SIGNAL_FILES]
    if stage == "03_training":
        files = [(c / f, False) for c in cohorts for f in layout.COHORT_FILES + layout.SIGNAL_FILES]
        for r in runs:
            files += ([(r / f, False) for f in (layout.CONFIG, layout.RUN_INFO, layout.TARGETS, layout.METRICS)]
                      + [(layout.predictions_path(r, s), False) for s in layout.PREDICTION_SPLITS]
                      + [(r / layout.LAST_VALUES, False)]
                      + [(layout.checkpoint_path(r, which), False) for which in ("best", "last")])
        return files
    if stage == "04_results":
        return [(r, True) for r in runs]
    raise ValueError(f"stage {stage!r} unknown; expected one of {list(STAGES)}")


def _fingerprint(paths: Iterable[tuple[Path, bool]]) -> dict[str, list]:
    """{path: [size, mtime_ns]} of every file; a missing one maps to None."""
    out: dict[str, list | None] = {}
    for path, recurse in paths:
        path = Path(path)
        if recurse and path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    out[str(p)] = [st.st_size, st.st_mtime_ns]
        elif path.is_file():
            st = path.stat()
            out[str(path)] = [st.st_size, st.st_mtime_ns]
        else:
            out[str(path)] = None
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


#: Modules that change no executed page: this builder and the Sphinx extension (which runs in
#: ``jupyter-book build``, after the notebooks). The CLI is hashed: the results page shows
#: :func:`labecg.cli.reproduce_commands`.
_NOT_HASHED = ("book.py", "sphinx_ext.py")


def _code_hash() -> str:
    """SHA-256 over the package's modules that the notebooks run (all but :data:`_NOT_HASHED`)."""
    h = hashlib.sha256()
    pkg = Path(__file__).parent
    for p in sorted(pkg.glob("*.py")):
        if p.name not in _NOT_HASHED:
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def stage_key(cfg: BookConfig, stage: str, book_root=None, code_hash: str | None = None) -> dict:
    """The settings part of a stage's cache record: what makes it rerun besides its files.

    Returns
    -------
    dict with ``params`` (the papermill parameters the notebook declares, as passed),
    ``notebook_sha256`` (of ``notebooks/<stage>.ipynb``) and ``code_sha256`` (of the
    package's modules the notebooks run, :func:`_code_hash`).
    """
    source = Path(cfg.book_root if book_root is None else book_root).resolve() / "notebooks" / f"{stage}.ipynb"
    params_all = notebook_parameters(cfg)
    params = {k: params_all[k] for k in _declared_parameters(source) if k in params_all}
    return {"params": params, "notebook_sha256": _sha256(source),
            "code_sha256": code_hash if code_hash is not None else _code_hash()}


def cache_key(cfg: BookConfig) -> str:
    """One hex digest over :func:`stage_key` of every stage this build executes.

    ``labecg book-cache-key`` prints it (with the same flags as ``labecg book``); the
    Pages workflow names its cache of the executed notebooks, data and runs after it, so a
    cache restored under this key holds stage records that the build will find current
    (the file fingerprints of each record still decide, as in any build).
    """
    executed = [s for s in STAGES if s in cfg.stages and (not cfg.from_run or s == "04_results")]
    code_hash = _code_hash()
    keys = {s: stage_key(cfg, s, code_hash=code_hash) for s in executed}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


def _declared_parameters(notebook: Path) -> list[str]:
    """Names assigned in the cell tagged ``parameters``."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return re.findall(r"^([A-Za-z_]\w*)\s*=", cell.source, flags=re.M)
    raise ValueError(f"{notebook}: no cell tagged 'parameters'; expected the first code cell to carry it")


# ---------------------------------------------------------------------------- execution


def _kernel_dir(book_root: Path) -> Path:
    """A kernelspec that runs this very interpreter (the venv's), whatever PATH says."""
    kdir = book_root / "_build" / ".jupyter"
    spec = kdir / "kernels" / "labecg-python"
    spec.mkdir(parents=True, exist_ok=True)
    # jupyter_client interrupts (SIGINT) every kernel it shuts down; ipykernel then logs
    # "KeyboardInterrupt caught in kernel" on the terminal after a successful notebook.
    # Cell errors reach the notebook and papermill, not this log.
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=CRITICAL"],
        "display_name": "Python 3 (labecg)", "language": "python"}, indent=1))
    return kdir


class _ChapterProgress:
    """A terminal bar over a notebook's cells, with the stage's latest bar beside it.

    The stages append their bars to ``path`` (:data:`labecg.util.PROGRESS_ENV`); a thread
    shows the last state written there as this bar's postfix twice a second.
    """

    def __init__(self, stage: str, n_cells: int, path: Path):
        from tqdm.std import tqdm

        self.path = path
        path.write_text("")
        self.bar = tqdm(total=n_cells, desc=stage, unit="cell", file=sys.stderr, disable=None,
                        bar_format="{desc}: {n_fmt}/{total_fmt} cells [{elapsed}] {postfix}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def cell_done(self, **_):
        self.bar.update(1)

    def _follow(self):
        while not self._stop.wait(0.5):
            try:
                text = self.path.read_text(errors="replace")
            except OSError:
                continue
            last = next((p.strip() for p in reversed(re.split(r"[\r\n]", text)) if p.strip()), "")
            self.bar.set_postfix_str(last[:80], refresh=True)

    def close(self):
        self._stop.set()
        self._thread.join()
        self.bar.close()
        self.path.unlink(missing_ok=True)


def _execute(source: Path, target: Path, params: dict, kernel_dir: Path, cwd: Path) -> None:
    """Run one notebook with papermill into ``target`` (replaced only on success), in ``cwd``."""
    import nbformat
    import papermill as pm

    failed = target.with_name(target.stem + ".failed.ipynb")
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "MPLBACKEND", PROGRESS_ENV)}
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(kernel_dir)] + ([saved["JUPYTER_PATH"]] if saved["JUPYTER_PATH"] else []))
    os.environ["MPLBACKEND"] = "Agg"  # the notebooks display their figures; no GUI window
    progress_file = target.with_name(f".{target.stem}.progress")
    os.environ[PROGRESS_ENV] = str(progress_file)
    n_cells = sum(c.cell_type == "code" for c in nbformat.read(source, as_version=4).cells) + 1  # + injected
    progress = _ChapterProgress(target.stem, n_cells, progress_file)
    try:
        with atomic_path(target) as tmp:
            tmp_nb = tmp.with_suffix(".ipynb")
            try:
                pm.execute_notebook(str(source), str(tmp_nb), parameters=params,
                                    kernel_name="labecg-python", cwd=str(cwd),
                                    progress_bar=False, log_output=False, request_save_on_cell_execute=False,
                                    on_cell_complete=progress.cell_done)
            except pm.PapermillExecutionError as exc:
                shutil.move(tmp_nb, failed)
                raise RuntimeError(
                    f"{source}: cell {exc.cell_index} (execution count {exc.exec_count}) raised "
                    f"{exc.ename}: {exc.evalue} (executed notebook: {failed})\n--- cell source ---\n"
                    f"{exc.source}\n--- executed notebook with the error: {failed}") from exc
            nb = nbformat.read(tmp_nb, as_version=4)
            # papermill records where it read and wrote; published, those name the builder's folders
            record = nb.metadata.get("papermill", {})
            record["input_path"] = _notebook_path(source, cwd)
            record["output_path"] = _notebook_path(target, cwd)
            for cell in nb.cells:
                tags = cell.metadata.get("tags", [])
                if "injected-parameters" in tags or "parameters" in tags:
                    cell.metadata["tags"] = sorted(set(tags) | {"hide-input"})
            nbformat.write(nb, tmp)
            tmp_nb.unlink()
    finally:
        progress.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if failed.exists():
        failed.unlink()


def _write_placeholder(source: Path, target: Path, run_dir: Path) -> None:
    """Copy a notebook unexecuted, with a note that this build did not run it."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    note = nbformat.v4.new_markdown_cell(
        "```{note}\nThis chapter was **not executed** in this build: the book was built from the run "
        f"folder `{Path(run_dir).name}` alone (split execution). Its code is shown as written; run it "
        "where the data lives to see its outputs.\n```")
    nb.cells.insert(1, note)
    with atomic_path(target) as tmp:
        nbformat.write(nb, tmp)


def build_book(cfg: BookConfig) -> BookResult:
    """Execute the stage notebooks (cached), build the HTML book, check privacy.

    Parameters
    ----------
    cfg : BookConfig

    Returns
    -------
    BookResult
        Per-stage status and seconds, executed notebook paths, ``_build/html/index.html``.

    Raises
    ------
    RuntimeError
        A notebook cell failed (message: notebook, cell, error, cell source) or
        ``jupyter-book build`` failed (message: its output's tail).
    PrivacyError
        The privacy check found an identifier or row-level table.
    """
    book_root = cfg.book_root.resolve()
    for need in ("_config.yml", "_toc.yml", "notebooks"):
        if not (book_root / need).exists():
            raise FileNotFoundError(f"{book_root / need}: not found; book_root must hold _config.yml, "
                                    "_toc.yml, book/ and notebooks/")
    if cfg.from_run:
        check_run_folders(_run_dirs(cfg))
    out_dir = book_root / "book" / "notebooks"
    cache_dir = out_dir / ".cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    code_hash = _code_hash()
    kernel_dir = _kernel_dir(book_root)
    stages, notebooks, seconds, reasons = {}, {}, {}, {}
    placeholders = []  # split execution: written once the results chapter has run
    for stage in STAGES:
        source, target = book_root / "notebooks" / f"{stage}.ipynb", out_dir / f"{stage}.ipynb"
        if not source.exists():
            raise FileNotFoundError(f"{source}: stage notebook not found")
        notebooks[stage] = target
        if stage not in cfg.stages:
            stages[stage] = "not requested"
            continue
        t0 = time.perf_counter()
        if cfg.from_run and stage != "04_results":
            placeholders.append((stage, source, target))
            stages[stage], seconds[stage] = "placeholder", 0.0
            continue
        files = stage_files(stage, cfg)
        key = stage_key(cfg, stage, book_root, code_hash)
        params = key["params"]
        record = cache_dir / f"{stage}.json"
        why = _stale_reason(record, target, key, _fingerprint(files), cfg.force)
        if why is None:
            stages[stage], seconds[stage] = "cached", time.perf_counter() - t0
            log.info("%s: unchanged, skipped (cache %s)", stage, record)
            continue
        reasons[stage] = why
        log.info("%s: executing %s -> %s (%s)", stage, source, target, why)
        record.unlink(missing_ok=True)
        _execute(source, target, params, kernel_dir, cwd=book_root)
        write_json(record, {"key": key, "files": _fingerprint(files)})
        stages[stage], seconds[stage] = "ran", time.perf_counter() - t0
        log.info("%s: done in %.1f s", stage, seconds[stage])
    for stage, source, target in placeholders:
        _write_placeholder(source, target, cfg.run_dir)
        (cache_dir / f"{stage}.json").unlink(missing_ok=True)

    html_index = None
    if cfg.build_html:
        t0 = time.perf_counter()
        html_index = _build_html(book_root, rebuild_all=any(s == "ran" for s in stages.values()))
        seconds["html"] = time.perf_counter() - t0
    executed = [p for s, p in notebooks.items() if p.exists() and stages[s] in ("ran", "cached")]
    ids_from = cfg.cohort_dir / layout.COHORT
    check_privacy(html_index.parent if html_index else None, executed,
                  ids_from if ids_from.exists() else None,
                  ids=_run_study_ids(_run_dirs(cfg)) | demo_ids())
    # the summary is the caller's to print (`labecg book` prints it once, on stdout)
    return BookResult(stages=stages, notebooks=notebooks, html_index=html_index, seconds=seconds,
                      reasons=reasons)


def check_run_folders(run_dirs) -> None:
    """Raise, naming the file, unless each run folder holds what the results chapter reads.

    Split execution replaces chapters 1-3 and their cache records; checking first means a
    mistyped ``--run-dir`` costs nothing.
    """
    for run in run_dirs:
        needed = (Path(run) / layout.TARGETS, layout.predictions_path(run, "test"))
        for path in needed:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: not found; --from-run needs a run folder written "
                                        f"by `labecg train` ({', '.join(p.name for p in needed)})")


def _stale_reason(record: Path, target: Path, key: dict, files: dict, force: bool) -> str | None:
    """Why a stage must run, or None when its cache record still holds."""
    if force:
        return "force"
    if not target.exists():
        return f"no executed notebook {target.name}"
    if not record.exists():
        return "no cache record"
    cached = read_json(record)
    old = cached.get("key", {})
    for part, what in (("params", "parameters"), ("notebook_sha256", "notebook source"),
                       ("code_sha256", "labecg code")):
        if old.get(part) != key[part]:
            return f"{what} changed"
    changed = sorted(k for k in set(files) | set(cached.get("files", {}))
                     if files.get(k) != cached.get("files", {}).get(k))
    if changed:
        return f"{len(changed)} input/output file(s) changed, e.g. {changed[0]}"
    return None


def _build_html(book_root: Path, rebuild_all: bool) -> Path:
    """``jupyter-book build``; with ``rebuild_all`` every page is rewritten (``--all``).

    Sphinx rebuilds only pages whose own source changed, but the prose pages glue numbers
    and figures from the notebooks, a dependency it cannot see: after any notebook ran,
    an incremental build would leave those pages showing the previous run.
    """
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book_root)] + (["--all"] if rebuild_all else [])
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=book_root, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    warnings = [l for l in output.splitlines() if "WARNING" in l]
    for w in warnings:
        log.warning("jupyter-book: %s", w)
    index = book_root / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.exists():
        raise RuntimeError(f"jupyter-book build {book_root} failed (exit {proc.returncode}):\n{output[-4000:]}")
    return index


def demo_ids() -> set[int]:
    """Every subject and study id of the shipped MIMIC demo tables (the real-rows chapter's cohort is a subset)."""
    import pandas as pd

    root = MIMIC_DEMO_ROOT
    patients = pd.read_csv(root / MIMIC_FILES["patients"], usecols=["subject_id"])
    records = pd.read_csv(root / MIMIC_FILES["record_list"], usecols=["subject_id", "study_id"])
    return {int(i) for i in pd.concat([patients["subject_id"], records["subject_id"], records["study_id"]])}


def _run_study_ids(run_dirs) -> set[int]:
    from labecg.evaluate import read_predictions  # names a corrupt file

    ids: set[int] = set()
    for r in run_dirs:
        for split in layout.PREDICTION_SPLITS:
            p = layout.predictions_path(r, split)
            if p.exists():
                ids.update(int(i) for i in read_predictions(p)["study_id"])
    return ids
