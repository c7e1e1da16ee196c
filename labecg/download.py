"""Fetching the open MIMIC demo from PhysioNet (or a mirror) into the data-root layout.

``labecg download mimic-demo --data-root DIR`` writes what the pipeline reads from three
open (ODbL) PhysioNet projects, in the four-source layout of ARCHITECTURE.md section 1
(:data:`labecg.layout.MIMIC_FILES`):

- ``mimic-iv-demo/2.2``: ``hosp/`` patients, admissions, labevents, d_labitems, omr
  -> ``DIR/mimiciv/hosp/``;
- ``mimic-iv-ed-demo/2.2``: ``ed/`` edstays, vitalsign -> ``DIR/mimic-iv-ed/ed/``;
- ``mimic-iv-ecg-demo/0.1``: ``record_list.csv`` and every WFDB file of every record it
  lists (659 records, a ``.hea`` and a ``.dat`` each) -> ``DIR/mimic-iv-ecg/``.

Each project's ``LICENSE.txt`` and ``SHA256SUMS.txt`` are written beside its files. There is
no MIMIC-IV-ECG-ICD (credentialed): the cohort stage then takes ``--unlisted-ecgs assign``.

Rules:

- A file is fetched from ``BASE_URL/files/<project>/<version>/<path>`` (PhysioNet's own
  layout, so a mirror can stand in) and verified against the SHA-256 that the project's
  ``SHA256SUMS.txt`` (fetched first, from the same place) lists for it.
- A table shipped with labecg (``labecg/mimic_demo/``) whose SHA-256 matches is copied
  instead of fetched.
- A file already in place whose SHA-256 matches is skipped, so a rerun fetches only what is
  missing or bad.
- Every file is written to a temporary name in its own folder and renamed only once it is
  complete and verified: nothing half-written is kept (a killed run leaves temporary files,
  ``.<name>.*.labecg-part``, which the next run removes).
- The first failure ends the download with one line (:class:`DownloadError`): no connection
  (offline, refused, wrong ``--base-url``), an HTTP error such as 404, a transfer cut off
  before its ``Content-Length``, or a SHA-256 mismatch (the bad file is removed and named).
  Nothing verified is lost: a rerun continues.

Only the standard library (:mod:`urllib`) speaks HTTP.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Literal, Optional

from labecg.layout import MIMIC_DEMO_ROOT, MIMIC_FILES
from labecg.util import get_logger, hold_paths, progress_bar

log = get_logger("labecg.download")

PHYSIONET = "https://physionet.org/"
SUMS_FILE = "SHA256SUMS.txt"
LICENSE_FILE = "LICENSE.txt"
PART_SUFFIX = ".labecg-part"
SHIPPED = MIMIC_DEMO_ROOT  # the tables labecg ships (catalog), copied instead of fetched
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Project:
    """One PhysioNet project: where it is served and where it goes under a data root.

    Attributes
    ----------
    name, version : str
        PhysioNet's project slug and version (``files/<name>/<version>/``).
    folder : str
        Its folder under the data root (the shipped copy under ``labecg/mimic_demo/`` has
        the same name).
    tables : tuple of str
        The tables of :data:`labecg.layout.MIMIC_FILES` it provides.
    waveforms : bool
        Also every file of every record its ``record_list.csv`` lists.
    """

    name: str
    version: str
    folder: str
    tables: tuple[str, ...]
    waveforms: bool = False

    def path_of(self, table: str) -> str:
        """The table's path inside the project (and inside ``folder``)."""
        return MIMIC_FILES[table].removeprefix(self.folder + "/")


MIMIC_DEMO: tuple[Project, ...] = (
    Project("mimic-iv-demo", "2.2", "mimiciv", ("patients", "admissions", "labevents", "d_labitems", "omr")),
    Project("mimic-iv-ed-demo", "2.2", "mimic-iv-ed", ("edstays", "vitalsign")),
    Project("mimic-iv-ecg-demo", "0.1", "mimic-iv-ecg", ("record_list",), waveforms=True),
)
DATASETS = {"mimic-demo": MIMIC_DEMO}


class DownloadError(RuntimeError):
    """A file could not be fetched or verified; the message is one line naming it."""


@dataclass(frozen=True)
class DownloadConfig:
    """What to download, from where, into which data root.

    Parameters
    ----------
    dataset : {"mimic-demo"}
        The open MIMIC-IV, MIMIC-IV-ED and MIMIC-IV-ECG demos (ODbL, no credentials).
    data_root : Path
        Data root to write, in the layout of ARCHITECTURE.md section 1.
    base_url : str
        Server holding ``files/<project>/<version>/<path>``: PhysioNet or a mirror of it.
    workers : int
        Files fetched at once.
    timeout_s : float
        Seconds without a byte from the server before a transfer fails.
    """

    dataset: Literal["mimic-demo"] = field(metadata={"positional": True})
    data_root: Path
    base_url: str = PHYSIONET
    workers: int = 4
    timeout_s: float = 60.0

    def __post_init__(self):
        hold_paths(self)
        if not isinstance(self.data_root, Path):
            raise TypeError(f"DownloadConfig.data_root must be a pathlib.Path, got {self.data_root!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset {self.dataset!r} unknown; expected one of {list(DATASETS)}")
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {self.base_url!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class DownloadResult:
    """What a download did: files fetched, copied from labecg's shipped tables, or already in place."""

    data_root: Path
    fetched: int
    copied: int
    skipped: int
    bytes_fetched: int

    def __str__(self) -> str:
        return (f"{self.data_root}: {self.fetched + self.copied + self.skipped} files verified "
                f"({self.fetched} fetched, {self.bytes_fetched / 2**20:.1f} MiB; {self.copied} copied from "
                f"labecg's shipped tables; {self.skipped} already in place)")


@dataclass(frozen=True)
class _File:
    project: Project
    path: str      # inside the project
    sha256: str

    def dest(self, root: Path) -> Path:
        return root / self.project.folder / self.path


def project_url(base_url: str, project: Project, path: str) -> str:
    """``BASE_URL/files/<project>/<version>/<path>``."""
    return (base_url.rstrip("/") + "/" + "/".join(["files", project.name, project.version])
            + "/" + urllib.parse.quote(path))


def parse_sums(text: str, source: str) -> dict[str, str]:
    """``{path: sha256}`` from a ``SHA256SUMS.txt`` (lines ``<64 hex digits> <path>``)."""
    sums = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0].lower()):
            raise DownloadError(f"{source}: line {n} is not '<sha256> <path>': {line[:80]!r}")
        sums[parts[1].strip().removeprefix("./").removeprefix("*")] = parts[0].lower()
    return sums


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_files(record_list: Path, sums: dict[str, str], source: str) -> list[str]:
    """Every file of ``sums`` belonging to a record of ``record_list`` (``<path>.<ext>``).

    Raises naming the record when ``sums`` lists no ``.hea`` for it.
    """
    import csv

    with open(record_list, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise DownloadError(f"{record_list}: no 'path' column; expected MIMIC-IV-ECG's record_list.csv")
        paths = [row["path"].strip() for row in reader]
    by_stem: dict[str, list[str]] = {}
    for name in sums:
        stem, dot, _ = name.rpartition(".")
        if dot:
            by_stem.setdefault(stem, []).append(name)
    out = []
    for p in paths:
        files = sorted(by_stem.get(p, []))
        if p + ".hea" not in files:
            raise DownloadError(f"{source}: lists no {p}.hea, yet {record_list.name} names record {p}")
        out += files
    return out


class _Fetcher:
    """One download's connection settings, progress bar and stop flag (shared by the worker threads)."""

    def __init__(self, cfg: DownloadConfig, bar):
        self.cfg, self.bar = cfg, bar
        self.stop = threading.Event()
        self.bytes = 0
        self._lock = threading.Lock()

    def get(self, project: Project, path: str, dest: Path, sha256: Optional[str]) -> None:
        """Fetch ``path`` of ``project`` to ``dest`` through a temporary file; verify; rename."""
        url = project_url(self.cfg.base_url, project, path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{os.getpid()}.{threading.get_ident()}{PART_SUFFIX}"
        h = hashlib.sha256()
        try:
            try:
                with urllib.request.urlopen(url, timeout=self.cfg.timeout_s) as resp, open(tmp, "wb") as out:
                    expected = resp.headers.get("Content-Length")
                    got = 0
                    while not self.stop.is_set():
                        block = resp.read(_CHUNK)
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        got += len(block)
                        with self._lock:
                            self.bytes += len(block)
                            self.bar.update(len(block))
                    if self.stop.is_set():
                        return
                    if expected is not None and got != int(expected):
                        raise DownloadError(f"{url}: transfer cut off after {got} of {expected} bytes; "
                                            f"nothing kept of {dest.name}, run again to continue")
            except urllib.error.HTTPError as e:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                raise DownloadError(f"{url}: no connection ({_reason(e.reason)}); offline, or is "
                                    f"--base-url {self.cfg.base_url} right?") from None
            except HTTPException as e:  # IncompleteRead and friends
                raise DownloadError(f"{url}: transfer cut off ({type(e).__name__}); nothing kept of "
                                    f"{dest.name}, run again to continue") from None
            except (TimeoutError, socket.timeout, ConnectionError) as e:
                raise DownloadError(f"{url}: transfer failed ({_reason(e)}); nothing kept of {dest.name}, "
                                    "run again to continue") from None
            if sha256 is not None and h.hexdigest() != sha256:
                raise DownloadError(f"{dest}: SHA-256 {h.hexdigest()[:16]}… differs from {sha256[:16]}… in "
                                    f"{project.name}/{project.version}/{SUMS_FILE}; removed")
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)


def _reason(reason) -> str:
    text = str(reason.strerror if isinstance(reason, OSError) and reason.strerror else reason)
    return text or type(reason).__name__


def _copy_verified(src: Path, dest: Path, sha256: str) -> bool:
    """Copy a shipped file to ``dest`` (through a temporary name) if its SHA-256 is ``sha256``."""
    if not src.is_file() or sha256_file(src) != sha256:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}{PART_SUFFIX}"
    try:
        shutil.copyfile(src, tmp)
        if sha256_file(tmp) != sha256:
            return False
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def download(cfg: DownloadConfig) -> DownloadResult:
    """Fetch (or copy, or keep) every file of ``cfg.dataset`` into ``cfg.data_root``, verified.

    Returns
    -------
    DownloadResult
        How many files were fetched, copied from ``labecg/mimic_demo/`` or already in place.

    Raises
    ------
    DownloadError
        At the first file that cannot be fetched or verified (one line naming it); the
        files verified before it stay, and a rerun continues.
    """
    root = cfg.data_root
    root.mkdir(parents=True, exist_ok=True)
    for project in DATASETS[cfg.dataset]:  # what a killed run left half-written
        if (root / project.folder).is_dir():
            for part in (root / project.folder).rglob(f"*{PART_SUFFIX}"):
                part.unlink(missing_ok=True)
    t0 = time.perf_counter()
    counts = {"fetched": 0, "copied": 0, "skipped": 0}
    bar = progress_bar(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=cfg.dataset)
    fetcher = _Fetcher(cfg, bar)
    try:
        for project in DATASETS[cfg.dataset]:
            base = root / project.folder
            sums_path = base / SUMS_FILE
            fetcher.get(project, SUMS_FILE, sums_path, None)  # fetched each time: the reference
            sums = parse_sums(sums_path.read_text(), project_url(cfg.base_url, project, SUMS_FILE))
            wanted = [LICENSE_FILE] + [project.path_of(t) for t in project.tables]
            _get_all(cfg, fetcher, [_file(project, p, sums, cfg) for p in wanted], counts, bar)
            if project.waveforms:
                record_list = base / project.path_of("record_list")
                names = record_files(record_list, sums, project_url(cfg.base_url, project, SUMS_FILE))
                log.info("%s/%s: %d WFDB files of %s's records", project.name, project.version, len(names),
                         record_list.name)
                _get_all(cfg, fetcher, [_file(project, p, sums, cfg) for p in names], counts, bar)
    finally:
        bar.close()
    result = DownloadResult(data_root=root, bytes_fetched=fetcher.bytes, **counts)
    log.info("%s (%.1f s)", result, time.perf_counter() - t0)
    return result


def _file(project: Project, path: str, sums: dict[str, str], cfg: DownloadConfig) -> _File:
    if path not in sums:
        raise DownloadError(f"{project_url(cfg.base_url, project, SUMS_FILE)}: does not list {path}; "
                            f"expected {project.name} {project.version}")
    return _File(project, path, sums[path])


def _get_all(cfg: DownloadConfig, fetcher: _Fetcher, files: list[_File], counts: dict, bar) -> None:
    """Skip the verified files in place, copy the shipped ones, fetch the rest (``cfg.workers`` at once)."""
    todo = []
    for f in files:
        dest = f.dest(cfg.data_root)
        if dest.is_file() and sha256_file(dest) == f.sha256:
            counts["skipped"] += 1
        elif _copy_verified(SHIPPED / f.project.folder / f.path, dest, f.sha256):
            counts["copied"] += 1
        else:
            todo.append(f)
    bar.set_postfix_str(f"{counts['skipped'] + counts['copied']} files in place, {len(todo)} to fetch")
    if not todo:
        return
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="labecg-download")
    futures = []
    try:
        futures = [pool.submit(fetcher.get, f.project, f.path, f.dest(cfg.data_root), f.sha256) for f in todo]
        wait(futures, return_when=FIRST_EXCEPTION)
        for fut in futures:
            if fut.done() and fut.exception() is not None:
                raise fut.exception()
        counts["fetched"] += len(todo)
    finally:
        if any(not fut.done() for fut in futures):
            fetcher.stop.set()  # the transfers in flight end and remove their temporary files
        pool.shutdown(wait=True, cancel_futures=True)
        fetcher.stop.clear()
