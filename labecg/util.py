"""Small helpers shared by every stage: files, JSON, logging, progress, repository paths.

Atomic file writes, JSON, logging, progress bars, and paths relative to the
repository.

Imports no other ``labecg`` module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import functools
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import typing
from pathlib import Path
from typing import Iterator, Optional

from tqdm.std import tqdm as _tqdm

#: Set by ``labecg book`` while it executes a notebook: progress bars are appended to this
#: file, which the book echoes on its terminal, and never written into the notebook.
PROGRESS_ENV = "LABECG_PROGRESS_FILE"


def _new_file_beside(path: Path) -> Path:
    """Create an empty file ``.NAME.RANDOM.tmp`` beside ``path``; return its path.

    Created with mode 0666 less the umask in force now, as ``open`` would create ``path``
    itself (``tempfile.mkstemp`` gives 0600), and without reading or changing the umask.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name} in 100 tries")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    A crash mid-write leaves the previous file (or none) in place, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically. Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


def read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    return json.loads(path.read_text())


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


#: The lock file a stage keeps in the folder it writes (``labecg train``: the run folder;
#: ``labecg signals``: the cohort folder) while it runs; see :func:`folder_lock`.
LOCK_NAME = ".labecg.lock"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept and how to go on (the CLI prints the message and exits 130)."""


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock (or a lock from another host is in the way)."""


@functools.lru_cache(maxsize=None)
def _path_fields(cls) -> tuple[str, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in dataclasses.fields(cls) if hints[f.name] in (Path, Optional[Path]))


def hold_paths(cfg) -> None:
    """Make every ``Path`` (or ``Optional[Path]``) field of a frozen config dataclass a ``Path``.

    Called first in a config's ``__post_init__``, so a config holds ``Path`` whether the CLI,
    a notebook (whose papermill parameters are strings) or a caller built it.

    Raises
    ------
    TypeError
        A field holds something that is not a path (``str`` or ``os.PathLike``); the message
        names the config and field.
    """
    for name in _path_fields(type(cfg)):
        value = getattr(cfg, name)
        if value is None or isinstance(value, Path):
            continue
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{type(cfg).__name__}.{name}: expected a path (str or Path), got {value!r}")
        object.__setattr__(cfg, name, Path(value))  # frozen: the one write, at construction


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe_holder(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(since {holder.get('started', '?')}: {holder.get('command', '?')})")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str, break_lock: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` while the block runs (creating the folder if needed).

    The lock is the file ``folder/.labecg.lock``: JSON with ``pid``, ``host``, ``started``
    (UTC, ISO 8601) and ``command``, held with ``flock`` for as long as this process has it
    open, and removed on leaving the block. A second process gets :class:`FolderInUse` at
    once, naming the holder's pid and host. A lock file whose process is gone (no ``flock``
    on it, or its pid is not running, on this host) is taken over; one written on another
    host cannot be checked from here and is refused unless ``break_lock``.

    Yields
    ------
    path : Path, the lock file.
    """
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    host = socket.gethostname()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held_here = False
        except BlockingIOError:
            held_here = True
        except OSError:  # a filesystem without flock: the pid check below decides
            held_here = None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed it between our open and our lock
            same = False
        if not same:
            os.close(fd)
            continue
        raw = os.pread(fd, 65536, 0).decode(errors="replace")
        try:
            holder = json.loads(raw) if raw.strip() else {}
        except ValueError:
            holder = {}
        other_host = bool(holder) and holder.get("host") != host
        if held_here or (held_here is None and holder and not other_host and holder.get("pid") != os.getpid()
                         and _pid_alive(int(holder.get("pid", -1)))):
            os.close(fd)  # a running process holds it (flock says so, which --break-lock cannot undo)
            raise FolderInUse(f"{folder}: in use by {_describe_holder(holder)}; wait for it to finish")
        if other_host and not break_lock:
            os.close(fd)
            raise FolderInUse(f"{folder}: locked by {_describe_holder(holder)}, a host this process cannot "
                              f"check; if that process is gone, rerun with --break-lock")
        if holder:
            get_logger("labecg.util").info("%s: taking over the lock of %s (%s)", folder, _describe_holder(holder),
                                           "--break-lock" if other_host else "that process is gone")
        break
    mine = {"pid": os.getpid(), "host": host,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
    os.fsync(fd)
    try:
        yield path
    finally:
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                path.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)
        if created:  # a folder made only for the lock goes with it
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_free_space(folder: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Raise ``OSError(ENOSPC)`` in one line unless ``folder``'s filesystem has ``needed_bytes`` free.

    Parameters
    ----------
    folder : path-like, an existing folder
    needed_bytes : int
    what : str, what the space is for (named in the message)
    """
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(errno.ENOSPC, f"{folder}: {what} needs {format_bytes(needed_bytes)} "
                                    f"({needed_bytes} bytes), {format_bytes(free)} ({free} bytes) free; "
                                    f"free some space and rerun")


def disk_full(path: str | os.PathLike, needed_bytes: Optional[int], exc: OSError) -> OSError:
    """The one-line ``OSError(ENOSPC)`` for a write to ``path`` that found the disk full."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    need = f"needs about {format_bytes(needed_bytes)}" if needed_bytes else "needs more space"
    have = f", {format_bytes(free)} free" if free is not None else ""
    return OSError(errno.ENOSPC, f"{path}: disk full ({exc.strerror or exc}); the write {need}{have}; "
                                 f"free some space and rerun the same command")


def format_bytes(n: Optional[float]) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def get_logger(name: str) -> logging.Logger:
    """A logger that prints ``labecg.<stage>: message`` once configured by the CLI or notebook."""
    logger = logging.getLogger(name)
    if not logging.getLogger("labecg").handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root = logging.getLogger("labecg")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return logger


def _in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def progress_bar(iterable=None, **kwargs):
    """A ``tqdm`` bar that goes to a terminal, never into a book page.

    - While ``labecg book`` runs a notebook (:data:`PROGRESS_ENV` set): a text bar appended
      to that file, echoed by the book on its terminal; nothing in the notebook.
    - In a Jupyter kernel run by hand: the notebook widget when ``ipywidgets`` is installed
      (``make lab`` installs it), else a text bar in the cell's output.
    - Elsewhere: a text bar on stderr, shown only when stderr is a terminal.

    Takes ``tqdm``'s arguments; ``disable=True`` hides the bar everywhere.
    """
    target = os.environ.get(PROGRESS_ENV)
    if kwargs.get("disable"):
        return _tqdm(iterable, **kwargs)
    if target:
        kwargs.update(disable=False, mininterval=max(kwargs.get("mininterval", 0), 1.0), ncols=100)
        return _FileBar(iterable, target=target, **kwargs)
    if _in_kernel():
        kwargs["disable"] = False
        try:
            import ipywidgets  # noqa: F401  (tqdm.notebook needs it)
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(iterable, **kwargs)
        except ImportError:
            return _tqdm(iterable, **kwargs)
    kwargs.setdefault("disable", None)
    return _tqdm(iterable, **kwargs)


class _FileBar(_tqdm):
    """A text bar appended to a file that it opens and closes itself."""

    def __init__(self, iterable=None, *, target, **kwargs):
        self._owned = open(target, "a", buffering=1)
        super().__init__(iterable, file=self._owned, **kwargs)

    def close(self):
        super().close()
        if not self._owned.closed:
            self._owned.close()


def repo_root() -> Path:
    """The repository the notebooks belong to, whatever folder inside it is the working directory.

    The nearest folder, from the working directory upwards, that holds ``_config.yml``
    and ``notebooks/`` (a notebook opened in ``notebooks/`` finds its checkout); else the
    working directory itself (papermill run elsewhere: paths relative to where it runs).
    """
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return here


def repo_path(path) -> Path | None:
    """``path`` as given when absolute, else resolved against :func:`repo_root`; None stays None.

    The notebooks' parameters (``"data/synthetic"``, ``"runs/default"``) name folders of
    the repository, so a notebook run from ``notebooks/`` in Jupyter writes where the CLI
    and the book do, not into ``notebooks/data/``.
    """
    if path is None:
        return None
    path = Path(path).expanduser()
    root = repo_root()
    # kept relative when the working directory is the repository: logs and pages show no home folder
    return path if path.is_absolute() or root == Path.cwd().resolve() else root / path


def shown_path(path) -> str:
    """``path`` as pages and run folders show it: relative to :func:`repo_root` when inside it.

    A path outside the repository (real MIMIC folders elsewhere) is shown as given; no
    page names the folders of the machine that built it otherwise.
    """
    given = Path(path).expanduser()
    full = (given if given.is_absolute() else Path.cwd() / given).resolve()
    try:
        return full.relative_to(repo_root()).as_posix()
    except ValueError:
        return str(path)
