"""Convert a cohort's WFDB records into one 100 Hz memory-mapped array.

Each record of ``cohort.parquet`` is read (:mod:`labecg.records`: MIMIC-IV-ECG's layout,
format 16 in one ``.dat``, directly with numpy; any other layout ``wfdb`` reads, such as
PTB's 1000 Hz records with Frank leads or the CinC challenges' ``.mat`` files, with
``wfdb``), its 12 standard leads picked and put in the stored order by *name* (any case;
extra channels ignored), converted to millivolts, cut to its first 10 s, missing samples
interpolated, clipped to ``±clip_mv``, and resampled from the record's own rate to
``fs_hz`` with a zero-phase anti-aliasing filter. Row ``i`` of ``signals.npy`` is row
``i`` of ``cohort.parquet``.

Files written into the cohort folder (ARCHITECTURE.md §3):

- ``signals.npy``: shape (n_ecgs, n_samples, 12), float16 (or float32), millivolts.
- ``signals.json``: leads, fs_hz, n_samples, dtype, units, clip_mv, record_s, n_rows;
  written last, so its presence marks a finished conversion.
- ``signals_manifest.parquet``: study_id, row, status (``ok`` | ``failed``), reason (why
  failed), flag (why a kept record is suspect: a flat or mostly missing lead; "" if none).
- ``signals_stats.json``: per-lead mean_mv, std_mv over ok rows of the training folds.

While running, ``signals_progress/`` holds one small JSON per finished chunk (written
atomically after the chunk's rows are flushed) and the cohort fingerprint; a restarted
run skips finished chunks and refuses to continue on a different cohort. A
``signals.npy`` without ``signals.json`` is unfinished; :func:`load_signals` refuses it.
Failed rows stay zero and are marked ``failed`` in the manifest; the dataset drops them.
A readable record with a flat or mostly missing lead is kept, as the authors keep every
readable record (interpolated, a lead without samples as zeros), and flagged; with
``exclude_flagged`` it fails instead.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import shutil
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import pandas as pd

from labecg import layout
from labecg.layout import TRAIN_FOLDS
from labecg.records import (FLAT_MV, LEADS, MAX_NAN_FRAC, RECORD_S, SOURCE_FS_HZ, SOURCE_SAMPLES, RecordError,
                            RecordFlag, clean_signal, read_record, resample)
from labecg.util import (atomic_path, check_free_space, folder_lock, format_bytes, get_logger, hold_paths,
                         progress_bar, read_json, shown_path, write_json)

log = get_logger("labecg.signals")


@dataclass(frozen=True)
class SignalsConfig:
    """Settings of the signal conversion.

    Parameters
    ----------
    cohort_dir : Path
        Cohort folder holding ``cohort.parquet``; outputs are written beside it.
    ecg : Path
        ECG root (MIMIC-IV-ECG's, or any folder of 12-lead WFDB records);
        ``cohort.parquet``'s ``path`` column is relative to it, no extension.
    workers : int
        Worker processes (1 = convert in this process).
    dtype : {"float16", "float32"}
        Stored dtype; float16 resolves 0.002 mV at 3 mV, below the 0.005 mV ADC step.
    clip_mv : float
        Samples are clipped to [-clip_mv, clip_mv] mV before resampling (authors: 3 mV).
    fs_hz : float
        Output sampling rate; 500 / fs_hz must be a whole number.
    chunk_size : int
        Records per unit of work; also the unit of resumption.
    max_nan_frac : float
        A lead with more than this fraction of missing samples flags the record. Every
        missing sample is linearly interpolated; a lead with no sample at all becomes zeros.
    flat_mv : float
        A lead whose peak-to-peak amplitude is below this (mV) is flat and flags the record.
    exclude_flagged : bool
        False (the authors: every readable record is kept): a flagged record is converted,
        ``ok`` in the manifest with the reason in its ``flag`` column. True: it is
        ``failed``, left zero, and the dataset drops it.
    overwrite : bool
        Delete existing signal outputs (finished or partial) and convert from scratch.
    replace_stale : bool
        Outputs (finished or partial) made from another ``cohort.parquet`` or other settings
        are converted again instead of refused (the book, whose cohort may have been rebuilt);
        a partial conversion of the same cohort is resumed either way.
    max_failed_frac : float
        A conversion in which more than this share of records fails is an error (a wrong
        ``ecg`` root fails them all); if every record of the first chunk fails, the
        conversion stops there and keeps nothing.
    break_lock : bool
        Take the cohort folder's lock (``.labecg.lock``) even when it names a process on
        another host (see :func:`labecg.util.folder_lock`).
    """

    cohort_dir: Path
    ecg: Path
    workers: int = 1
    dtype: Literal["float16", "float32"] = "float16"
    clip_mv: float = 3.0
    fs_hz: float = 100.0  # the paper's rate; MIMIC-IV-ECG stores 500 Hz
    chunk_size: int = 256
    max_nan_frac: float = MAX_NAN_FRAC
    flat_mv: float = FLAT_MV
    exclude_flagged: bool = False
    overwrite: bool = False
    replace_stale: bool = False
    max_failed_frac: float = 0.5
    break_lock: bool = False

    def __post_init__(self):
        hold_paths(self)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {self.dtype!r}")
        if not self.clip_mv > 0:
            raise ValueError(f"clip_mv must be > 0 mV, got {self.clip_mv}")
        factor = SOURCE_FS_HZ / self.fs_hz if self.fs_hz > 0 else float("nan")
        if not (factor >= 1 and abs(factor - round(factor)) < 1e-9):
            raise ValueError(f"fs_hz={self.fs_hz}: 500 Hz / fs_hz must be a whole number >= 1")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 0 <= self.max_nan_frac < 1:
            raise ValueError(f"max_nan_frac must be in [0, 1), got {self.max_nan_frac}")
        if self.flat_mv < 0:
            raise ValueError(f"flat_mv must be >= 0 mV, got {self.flat_mv}")
        if not 0 <= self.max_failed_frac <= 1:
            raise ValueError(f"max_failed_frac must be in [0, 1], got {self.max_failed_frac}")

    @property
    def decimation(self) -> int:
        return int(round(SOURCE_FS_HZ / self.fs_hz))

    @property
    def n_samples(self) -> int:
        return SOURCE_SAMPLES // self.decimation


# ---------------------------------------------------------------------------- pure pieces

def convert_record(path: str | os.PathLike, cfg: SignalsConfig, flags: Optional[list] = None) -> np.ndarray:
    """Read, clean, clip and resample one record (any rate, any layout wfdb reads).

    Parameters
    ----------
    flags : list, optional
        Receives the reasons a kept record is flagged (flat or mostly missing leads).

    Returns
    -------
    y : ndarray of shape (cfg.n_samples, 12), cfg.dtype
        Millivolts at ``cfg.fs_hz``, the record's first 10 s, stored lead order, within
        ±clip_mv.

    Raises
    ------
    RecordError
        If the record is rejected (unreadable; flagged when ``cfg.exclude_flagged``); the
        message is the reason.
    """
    x, fs = read_record(path)
    return convert_samples(x, fs, cfg, flags)


def convert_samples(x: np.ndarray, fs: float, cfg: SignalsConfig, flags: Optional[list] = None) -> np.ndarray:
    """:func:`convert_record` on samples already read (:func:`read_record`'s ``x`` (L, 12) mV and ``fs``)."""
    if fs < cfg.fs_hz - 1e-9:
        raise RecordError(f"fs {fs:g} Hz, below the stored rate {cfg.fs_hz:g} Hz")
    found: list = []
    x = clean_signal(x, cfg.max_nan_frac, cfg.flat_mv, found)
    if found and cfg.exclude_flagged:
        raise RecordFlag("; ".join(found))
    if flags is not None:
        flags.extend(found)
    np.clip(x, -cfg.clip_mv, cfg.clip_mv, out=x)
    y = resample(x, fs, cfg.fs_hz)[:cfg.n_samples]
    # the filter overshoots a clipped plateau slightly; keep the documented range exact
    np.clip(y, -cfg.clip_mv, cfg.clip_mv, out=y)
    return y.astype(cfg.dtype)


def _convert_chunk(paths: list[str], cfg: SignalsConfig) -> tuple[np.ndarray, list[str], list[str]]:
    """Convert a list of records; failed rows are zeros with a non-empty reason; kept
    flagged rows have a non-empty flag."""
    out = np.zeros((len(paths), cfg.n_samples, len(LEADS)), dtype=cfg.dtype)
    reasons = [""] * len(paths)
    flags = [""] * len(paths)
    for i, p in enumerate(paths):
        try:
            found: list = []
            out[i] = convert_record(p, cfg, found)
            flags[i] = "; ".join(found)
        except RecordError as e:
            reasons[i] = str(e)
        except Exception as e:  # never let one odd record stop an 800k-record run
            reasons[i] = f"error: {type(e).__name__}: {e}"
    return out, reasons, flags


# ---------------------------------------------------------------------------- the stage

class _AllFailed(Exception):
    """Every record tried so far failed: the conversion stops early."""

    def __init__(self, tried: int, first_reason: str):
        super().__init__(tried, first_reason)
        self.tried, self.first_reason = tried, first_reason


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: on Linux, end this worker when the converting process dies.

    Killed with SIGTERM or SIGKILL, the parent runs no cleanup; without this its idle
    workers would wait on their queue for ever.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel queued chunks and end the workers now, without waiting for running ones."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)


def _read_cohort(cohort_dir: Path) -> pd.DataFrame:
    path = cohort_dir / layout.COHORT
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found; run `labecg cohort --cohort-dir {cohort_dir}` first")
    frame = pd.read_parquet(path)
    missing = [c for c in ("study_id", "path", "fold") if c not in frame.columns]
    if missing:
        raise KeyError(f"{path}: missing columns {missing}; expected study_id, path, fold")
    return frame[["study_id", "path", "fold"]]


def fingerprint_cohort(frame: pd.DataFrame, cfg: SignalsConfig) -> str:
    """SHA-256 over the cohort's row order (study_id, path), the ECG root and the settings that change rows."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(frame["study_id"].to_numpy(np.int64)).tobytes())
    h.update("\n".join(frame["path"].astype(str)).encode())
    h.update(str(cfg.ecg.resolve()).encode())  # the same paths under another root are other records
    settings = {k: getattr(cfg, k) for k in ("dtype", "clip_mv", "fs_hz", "max_nan_frac", "flat_mv")}
    if cfg.exclude_flagged:  # only when set, so fingerprints of the default stay as they were
        settings["exclude_flagged"] = True
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def _stale_record(cohort_dir: Path, fp: str, n_rows: int) -> Optional[Path]:
    """The record (``signals.json``, or a partial run's state) of outputs made from another cohort, or None."""
    for path in (cohort_dir / layout.SIGNALS_META, cohort_dir / layout.SIGNALS_PROGRESS / "state.json"):
        if path.exists():
            record = read_json(path)
            if record.get("fingerprint") != fp or record.get("n_rows", n_rows) != n_rows:
                return path
    return None


#: Checked free space beyond the array: the manifest, the statistics, the progress records.
FREE_SPACE_MARGIN_BYTES = 1 << 20
FREE_SPACE_PER_RECORD_BYTES = 256
PROBE_RECORDS = 10  # records tried before outputs are deleted or a changed ECG root is named


def _probe_ecg_root(frame: pd.DataFrame, cfg: SignalsConfig) -> str:
    """"" when one of the cohort's first records reads under ``cfg.ecg``, else the first one's reason."""
    first = ""
    for rel in frame["path"].astype(str)[:PROBE_RECORDS]:
        try:
            read_record(cfg.ecg / rel)
            return ""
        except RecordError as e:
            first = first or f"{rel}: {e}"
    return first or "cohort.parquet lists no record"


def _allocated_bytes(path: Path) -> int:
    """Bytes the filesystem holds for ``path`` (a sparse memmap holds less than its size)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return min(st.st_size, st.st_blocks * 512)


def _reserve(path: Path, cohort_dir: Path) -> None:
    """Allocate every block of a new (all-zero) memmap now: a full disk is an error here, not a SIGBUS later."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"{cohort_dir}: signals.npy needs {format_bytes(size)} ({size} bytes), "
                                        f"{format_bytes(shutil.disk_usage(cohort_dir).free)} free; free some "
                                        f"space and rerun") from None
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _remove_outputs(cohort_dir: Path) -> None:
    for name in layout.SIGNAL_FILES:
        (cohort_dir / name).unlink(missing_ok=True)
    shutil.rmtree(cohort_dir / layout.SIGNALS_PROGRESS, ignore_errors=True)


def convert_signals(cfg: SignalsConfig, *, stop_after_chunks: Optional[int] = None,
                    on_chunk: Optional[Callable[[int], None]] = None) -> Path:
    """Convert every record of ``cfg.cohort_dir/cohort.parquet`` into ``signals.npy``.

    Resumable: finished chunks (``signals_progress/chunk_*.json``) are skipped and their
    rows never rewritten; a cohort or settings change since the partial run is refused.

    Parameters
    ----------
    cfg : SignalsConfig
    stop_after_chunks : int, optional
        Stop (as if interrupted) after this many chunks are finished in this call; for
        tests and for converting a large cohort in several sittings.
    on_chunk : callable, optional
        Called with the start row of each finished chunk.

    Returns
    -------
    path : Path
        ``cfg.cohort_dir / "signals.npy"``.
    """
    cohort_dir = cfg.cohort_dir
    frame = _read_cohort(cohort_dir)
    if not cfg.ecg.is_dir():  # a typo: say so before anything is compared or deleted
        raise FileNotFoundError(f"--ecg {cfg.ecg}: not a folder; expected the MIMIC-IV-ECG root that "
                                f"cohort.parquet's paths are relative to (nothing in {cohort_dir} was changed)")
    command = shlex.join(["labecg", *sys.argv[1:]] if Path(sys.argv[0]).name == "labecg" else sys.argv)
    with folder_lock(cohort_dir, command, break_lock=cfg.break_lock):
        return _convert_locked(cfg, frame, stop_after_chunks, on_chunk)


def _convert_locked(cfg: SignalsConfig, frame: pd.DataFrame, stop_after_chunks: Optional[int],
                    on_chunk: Optional[Callable[[int], None]]) -> Path:
    """:func:`convert_signals` once the cohort folder is locked: open or resume, convert the chunks left, finish."""
    cohort_dir = cfg.cohort_dir
    n = len(frame)
    fp = fingerprint_cohort(frame, cfg)
    npy = cohort_dir / layout.SIGNALS
    progress = cohort_dir / layout.SIGNALS_PROGRESS
    opened = _open_or_resume(cfg, frame, fp)
    if opened is None:
        return npy
    mm, chunk_size = opened
    starts = [s for s in range(0, n, chunk_size) if not (progress / f"chunk_{s:09d}.json").exists()]
    log.info("%s: %d records, %d of %d chunks to convert with %d worker(s)",
             npy, n, len(starts), -(-n // chunk_size), cfg.workers)
    try:
        _convert_chunks(cfg, mm, [str(cfg.ecg / p) for p in frame["path"].astype(str)], starts, chunk_size,
                        stop_after_chunks, on_chunk)
    except _AllFailed as e:
        del mm
        _remove_outputs(cohort_dir)
        raise RuntimeError(f"{cohort_dir}: all {e.tried} records tried failed (first: {e.first_reason}); is "
                           f"--ecg {cfg.ecg} the MIMIC-IV-ECG root that cohort.parquet's paths are relative "
                           f"to? Nothing was kept") from None
    finally:
        if "mm" in locals():
            del mm
    remaining = [s for s in range(0, n, chunk_size) if not (progress / f"chunk_{s:09d}.json").exists()]
    if remaining:
        log.info("%s: stopped with %d chunk(s) left; run again to resume", npy, len(remaining))
        return npy
    _finalize(cohort_dir, frame, cfg, fp, chunk_size)
    return npy


def _open_or_resume(cfg: SignalsConfig, frame: pd.DataFrame, fp: str) -> Optional[tuple[np.memmap, int]]:
    """The memory map to write into and its chunk size: a new one, or the unfinished one of this cohort.

    Deletes the outputs first where ``overwrite`` (or ``replace_stale`` for outputs of another
    cohort) asks for it, once a record reads under ``cfg.ecg``; refuses finished or partial
    outputs of another cohort, ECG root or settings; checks and reserves the space of a new
    array. None when the signals of this cohort are finished already.
    """
    cohort_dir = cfg.cohort_dir
    n = len(frame)
    npy = cohort_dir / layout.SIGNALS
    progress = cohort_dir / layout.SIGNALS_PROGRESS
    state_path = progress / "state.json"
    stale = _stale_record(cohort_dir, fp, n)
    replace = cfg.overwrite or (stale is not None and cfg.replace_stale)
    existing = [p.name for p in (npy, cohort_dir / layout.SIGNALS_META, cohort_dir / layout.SIGNALS_MANIFEST,
                                 cohort_dir / layout.SIGNALS_STATS, progress) if p.exists()]
    if replace and existing:
        # hours of conversion are deleted only for an ECG root from which records read
        unreadable = _probe_ecg_root(frame, cfg)
        if unreadable:
            raise RuntimeError(f"{cohort_dir}: kept {', '.join(existing)}: none of the first "
                               f"{min(n, PROBE_RECORDS)} records of cohort.parquet reads under --ecg {cfg.ecg} "
                               f"(first: {unreadable}); is it the MIMIC-IV-ECG root? Nothing was deleted")
    if stale is not None and cfg.replace_stale and not cfg.overwrite:
        log.info("%s: made from another cohort.parquet or settings; converting again", stale)
    if replace:
        _remove_outputs(cohort_dir)

    if (cohort_dir / layout.SIGNALS_META).exists():
        meta = read_json(cohort_dir / layout.SIGNALS_META)
        if meta.get("fingerprint") == fp:
            log.info("%s: already converted for this cohort; nothing to do", npy)
            return None
        then, now = meta.get("ecg", "?"), str(cfg.ecg.resolve())
        unreadable = _probe_ecg_root(frame, cfg) if then != now else ""
        if unreadable:  # most likely a typo, not a new ECG root: --overwrite would delete good signals
            raise RuntimeError(f"{cohort_dir / layout.SIGNALS_META}: converted from the ECG root {then}; none of the "
                               f"first {min(n, PROBE_RECORDS)} records reads under --ecg {cfg.ecg} (first: "
                               f"{unreadable}): a typo in --ecg? The signals are kept; --overwrite would not help")
        raise RuntimeError(f"{cohort_dir / layout.SIGNALS_META}: made from a different cohort.parquet, ECG root "
                           f"(then {then}, now {now}) or settings "
                           f"(fingerprint {meta.get('fingerprint', '?')[:12]}, expected "
                           f"{fp[:12]}); rerun with --overwrite to convert again")
    array_bytes = n * cfg.n_samples * len(LEADS) * np.dtype(cfg.dtype).itemsize
    # a memmap written on a full disk dies with SIGBUS, which no handler can turn into a message
    check_free_space(cohort_dir, array_bytes - _allocated_bytes(npy) + FREE_SPACE_MARGIN_BYTES
                     + FREE_SPACE_PER_RECORD_BYTES * n, f"signals.npy ({n} records x {cfg.n_samples} samples x "
                     f"{len(LEADS)} leads, {cfg.dtype})")
    if state_path.exists():
        return _resume(cfg, n, fp, state_path)
    # the array first, then the state: a state file always has its array beside it
    with atomic_path(npy) as tmp:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=cfg.dtype,
                                  shape=(n, cfg.n_samples, len(LEADS))).flush()
        _reserve(tmp, cohort_dir)
    progress.mkdir(parents=True, exist_ok=True)
    write_json(state_path, {"fingerprint": fp, "n_rows": n, "chunk_size": cfg.chunk_size,
                            "ecg": str(cfg.ecg.resolve()),
                            "config": {k: str(v) for k, v in asdict(cfg).items()}})
    return np.load(npy, mmap_mode="r+"), cfg.chunk_size


def _resume(cfg: SignalsConfig, n: int, fp: str, state_path: Path) -> tuple[np.memmap, int]:
    """The unfinished memory map recorded in ``state_path`` and its chunk size, refused unless of this cohort."""
    npy = cfg.cohort_dir / layout.SIGNALS
    state = read_json(state_path)
    if state.get("fingerprint") != fp or state.get("n_rows") != n:
        raise RuntimeError(f"{state_path}: the partial conversion was made from a different "
                           f"cohort.parquet, ECG root (then {state.get('ecg', '?')}) or settings "
                           f"(fingerprint {state.get('fingerprint', '?')[:12]}"
                           f", {state.get('n_rows')} rows; now {fp[:12]}, {n} rows); refusing to "
                           f"resume; rerun with --overwrite to start again")
    if not npy.exists():
        raise RuntimeError(f"{npy}: missing although {state_path} records a partial run; "
                           f"rerun with --overwrite")
    chunk_size = int(state["chunk_size"])
    done = len(list(state_path.parent.glob("chunk_*.json")))
    log.warning("%s: the last conversion stopped unfinished (%d of %d chunks done); resuming", npy, done,
                -(-n // chunk_size))
    mm = np.load(npy, mmap_mode="r+")
    expected = (n, cfg.n_samples, len(LEADS))
    if mm.shape != expected or mm.dtype != np.dtype(cfg.dtype):
        raise RuntimeError(f"{npy}: shape {mm.shape} {mm.dtype}, expected {expected} {cfg.dtype}")
    return mm, chunk_size


class _InProcess:
    """An executor that converts a chunk when it is submitted: one worker takes the pool's path."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # as a pool would: raised by result()
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _convert_chunks(cfg: SignalsConfig, mm: np.memmap, paths: list[str], starts: list[int], chunk_size: int,
                    stop_after_chunks: Optional[int], on_chunk: Optional[Callable[[int], None]]) -> None:
    """Convert the chunks at ``starts`` into ``mm``, each recorded in the progress folder once its rows are flushed.

    One path for any number of workers: ``workers`` processes with a bounded look-ahead of
    two chunks each, or (one worker) each chunk in this process when it is submitted. Raises
    :class:`_AllFailed` when every record of the first chunk's worth failed.
    """
    n = len(paths)
    progress = cfg.cohort_dir / layout.SIGNALS_PROGRESS
    tried, failed_here, first_reason, done = 0, 0, "", 0
    bar = progress_bar(total=n, initial=n - sum(min(chunk_size, n - s) for s in starts), unit="ecg", desc="signals")
    pool = (_InProcess() if cfg.workers == 1 else
            ProcessPoolExecutor(cfg.workers, initializer=_die_with_parent, initargs=(os.getpid(),)))
    # bounded look-ahead keeps memory at a few chunks per worker; one worker converts one chunk at a time
    look_ahead = 1 if cfg.workers == 1 else 2 * cfg.workers
    try:
        todo = iter(starts)
        running: dict = {}
        while True:
            while len(running) < look_ahead and (stop_after_chunks is None or done + len(running) < stop_after_chunks):
                s = next(todo, None)
                if s is None:
                    break
                running[pool.submit(_convert_chunk, paths[s:s + chunk_size], cfg)] = s
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                start = running.pop(fut)
                x, reasons, flags = fut.result()
                mm[start:start + len(x)] = x
                mm.flush()
                write_json(progress / f"chunk_{start:09d}.json", {"start": start, "reasons": reasons, "flags": flags})
                tried += len(reasons)
                failed_here += sum(r != "" for r in reasons)
                first_reason = first_reason or next((r for r in reasons if r), "")
                if tried >= min(n, chunk_size) and failed_here == tried:
                    raise _AllFailed(tried, first_reason)
                if on_chunk is not None:
                    on_chunk(start)
                done += 1
                bar.update(min(chunk_size, n - start))
    except BaseException:
        _stop_pool(pool)  # an error or Ctrl-C: no worker may outlive this call
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)


def _finalize(cohort_dir: Path, frame: pd.DataFrame, cfg: SignalsConfig, fp: str, chunk_size: int) -> None:
    """Write manifest, per-lead statistics and signals.json; drop the progress folder."""
    n = len(frame)
    progress = cohort_dir / layout.SIGNALS_PROGRESS
    reasons, flags = [""] * n, [""] * n
    for s in range(0, n, chunk_size):
        part = read_json(progress / f"chunk_{s:09d}.json")
        reasons[s:s + len(part["reasons"])] = part["reasons"]
        flags[s:s + len(part["reasons"])] = part.get("flags", [""] * len(part["reasons"]))
    status = np.where(np.array([r == "" for r in reasons], dtype=bool), "ok", "failed")
    manifest = pd.DataFrame({"study_id": frame["study_id"].to_numpy(np.int64),
                             "row": np.arange(n, dtype=np.int64),
                             "status": pd.array(status, dtype="string"),
                             "reason": pd.array(reasons, dtype="string"),
                             "flag": pd.array(flags, dtype="string")})
    with atomic_path(cohort_dir / layout.SIGNALS_MANIFEST) as tmp:
        manifest.to_parquet(tmp, index=False)
    failed = np.flatnonzero(status == "failed")
    n_failed = len(failed)
    n_flagged = sum(f != "" for f in flags)
    if n_flagged:
        log.info("signals: %d of %d records kept with a flat or mostly missing lead (column 'flag' of "
                 "signals_manifest.parquet)", n_flagged, n)
    if n_failed:
        log.info("signals: %d of %d records failed (listed in signals_manifest.parquet); "
                 "first: row %d, %s", n_failed, n, failed[0], reasons[failed[0]])
    if n_failed > cfg.max_failed_frac * n:
        if n_failed == n:
            _remove_outputs(cohort_dir)
        raise RuntimeError(f"{cohort_dir}: {n_failed} of {n} records failed, more than max_failed_frac="
                           f"{cfg.max_failed_frac:g} (first: row {failed[0]}, {reasons[failed[0]]}); is --ecg "
                           f"{cfg.ecg} the MIMIC-IV-ECG root? "
                           + ("Nothing was kept" if n_failed == n else
                              f"the reasons are in {cohort_dir / layout.SIGNALS_MANIFEST}; rerun with a higher "
                              "--max-failed-frac to accept them"))

    ok_train = (status == "ok") & frame["fold"].isin(TRAIN_FOLDS).to_numpy()
    mean, std = compute_lead_stats(np.load(cohort_dir / layout.SIGNALS, mmap_mode="r"),
                                   np.flatnonzero(ok_train))
    write_json(cohort_dir / layout.SIGNALS_STATS,
               {"leads": list(LEADS), "folds": list(TRAIN_FOLDS), "n_records": int(ok_train.sum()),
                "mean_mv": mean.tolist(), "std_mv": std.tolist()})
    write_json(cohort_dir / layout.SIGNALS_META,
               {"leads": list(LEADS), "fs_hz": cfg.fs_hz, "n_samples": cfg.n_samples,
                "dtype": cfg.dtype, "units": "mV", "clip_mv": cfg.clip_mv,
                "record_s": RECORD_S, "n_rows": n, "n_ok": n - n_failed,
                "n_failed": n_failed, "n_flagged": n_flagged, "max_nan_frac": cfg.max_nan_frac,
                "flat_mv": cfg.flat_mv, "exclude_flagged": cfg.exclude_flagged,
                "resampling": "scipy.signal.resample_poly(x, up, down, padtype='line'), up/down = "
                              "fs_hz / the record's rate in lowest terms; none at fs_hz",
                "ecg": str(cfg.ecg.resolve()), "fingerprint": fp})
    shutil.rmtree(progress, ignore_errors=True)


def compute_lead_stats(x: np.ndarray, rows: np.ndarray, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead mean and standard deviation over the given rows, streamed in blocks.

    Parameters
    ----------
    x : ndarray of shape (n_ecgs, L, 12)
        Millivolts (the memmap).
    rows : ndarray of shape (n_rows,), int
        Rows to include.

    Returns
    -------
    mean_mv, std_mv : ndarray of shape (12,), float64
        Over all samples of all rows; std with ddof 0. NaN when ``rows`` is empty.
    """
    c = x.shape[2]
    s = np.zeros(c)
    s2 = np.zeros(c)
    count = 0
    for i in range(0, len(rows), block):
        b = np.asarray(x[np.sort(rows[i:i + block])], dtype=np.float64).reshape(-1, c)
        s += b.sum(axis=0)
        s2 += np.square(b).sum(axis=0)
        count += b.shape[0]
    if count == 0:
        return np.full(c, np.nan), np.full(c, np.nan)
    mean = s / count
    return mean, np.sqrt(np.maximum(s2 / count - mean ** 2, 0.0))


def load_signals(cohort_dir: str | os.PathLike) -> tuple[np.ndarray, tuple[str, ...]]:
    """Open a finished ``signals.npy`` read-only.

    Returns
    -------
    x : numpy.memmap of shape (n_ecgs, n_samples, 12)
        Millivolts at ``signals.json['fs_hz']``; row i is row i of ``cohort.parquet``.
    leads : tuple of str
        Lead names in the stored order.
    """
    cohort_dir = Path(cohort_dir)
    meta_path = cohort_dir / layout.SIGNALS_META
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: not found; the conversion has not finished — run "
                                f"`labecg signals --cohort-dir {cohort_dir} --ecg DIR`")
    meta = read_json(meta_path)
    try:
        x = np.load(cohort_dir / layout.SIGNALS, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:  # numpy names no file
        raise ValueError(f"{cohort_dir / layout.SIGNALS}: not a readable signal array ({type(e).__name__}: {e}); "
                         f"rerun `labecg signals --cohort-dir {cohort_dir} --ecg DIR --overwrite`") from e
    expected = (meta["n_rows"], meta["n_samples"], len(meta["leads"]))
    if x.shape != expected:
        raise ValueError(f"{cohort_dir / layout.SIGNALS}: shape {x.shape}, expected {expected} "
                         f"from signals.json")
    return x, tuple(meta["leads"])


def count_records(cohort_dir) -> pd.DataFrame:
    """Records converted (``ok``) and rejected (``failed``), with the rejection reasons.

    Reads ``cohort_dir/signals_manifest.parquet``.

    Returns
    -------
    DataFrame indexed by status (ok, failed; both always present), columns ``records``
    (int) and ``reasons`` (the distinct reasons with counts, ``"; "``-joined).
    """
    path = Path(cohort_dir) / layout.SIGNALS_MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run the signal conversion first")
    m = pd.read_parquet(path, columns=["status", "reason"])
    rows = []
    for status in ("ok", "failed"):
        part = m[m["status"] == status]
        reasons = part["reason"].fillna("").astype(str)
        counts = reasons[reasons != ""].value_counts()
        rows.append({"status": status, "records": int(len(part)),
                     "reasons": "; ".join(f"{r} ({n})" for r, n in counts.items())})
    return pd.DataFrame(rows).set_index("status")


# ---------------------------------------------------------------------------- what the book shows


def conversion_settings(cohort_dir) -> pd.DataFrame:
    """What ``signals.json`` records of a conversion, one row per setting, for a page.

    Columns ``setting`` and ``value`` (text); the ECG root relative to the repository
    (:func:`labecg.util.shown_path`), the fingerprint left out.
    """
    meta = read_json(Path(cohort_dir) / layout.SIGNALS_META)
    rows = [{"setting": key, "value": shown_path(value) if key == "ecg" else
             (", ".join(map(str, value)) if isinstance(value, list) else str(value))}
            for key, value in meta.items() if key != "fingerprint"]
    return pd.DataFrame(rows, columns=["setting", "value"])


def lead_before_after(cfg: SignalsConfig, index: int = 0, lead: str = "II") -> dict:
    """One lead of one converted ECG as its WFDB record holds it and as ``signals.npy`` stores it.

    Parameters
    ----------
    cfg : SignalsConfig
        The conversion's settings (``cohort_dir`` with finished signals, ``ecg`` root).
    index : int
        Position among the rows whose manifest status is ``ok``.
    lead : str
        One of :data:`LEADS`.

    Returns
    -------
    dict with ``lead``; ``raw_mv``, ndarray of shape (n_raw,), float64, millivolts at
    ``raw_fs_hz`` (the record's first 10 s, before cleaning and clipping); ``stored_mv``,
    ndarray of shape (n_samples,), float64, the stored row at ``fs_hz``. No identifier.
    """
    if lead not in LEADS:
        raise ValueError(f"lead {lead!r} unknown; expected one of {list(LEADS)}")
    cohort_dir = cfg.cohort_dir
    x, _ = load_signals(cohort_dir)
    manifest = pd.read_parquet(cohort_dir / layout.SIGNALS_MANIFEST, columns=["row", "status"])
    ok_rows = np.sort(manifest.loc[manifest["status"] == "ok", "row"].to_numpy())
    if not 0 <= index < len(ok_rows):
        raise IndexError(f"{cohort_dir}: index {index} out of range; {len(ok_rows)} records converted")
    row = int(ok_rows[index])
    path = pd.read_parquet(cohort_dir / layout.COHORT, columns=["path"])["path"].iloc[row]
    raw, fs_in_hz = read_record(cfg.ecg / str(path))  # (L_raw, 12) mV, stored lead order
    c = LEADS.index(lead)
    return {"lead": lead, "raw_mv": np.asarray(raw[:, c], dtype=np.float64), "raw_fs_hz": float(fs_in_hz),
            "stored_mv": np.asarray(x[row, :, c], dtype=np.float64), "fs_hz": float(cfg.fs_hz)}
