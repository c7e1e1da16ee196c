"""Small helpers shared by every stage: files, JSON, target names, logging, progress, repository paths.

Atomic file writes, JSON, target names, logging, progress bars, and paths relative to the
repository.

Imports no other ``labecg`` module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Iterator

from tqdm.std import tqdm as _tqdm

#: Set by ``labecg book`` while it executes a notebook: progress bars are appended to this
#: file, which the book echoes on its terminal, and never written into the notebook.
PROGRESS_ENV = "LABECG_PROGRESS_FILE"

HORIZONS_MIN: tuple[int, ...] = (30, 60, 120)  # the paper's monitoring horizons
TASKS: tuple[str, ...] = ("est",) + tuple(f"mon{h}" for h in HORIZONS_MIN)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def lab_slug(label: str) -> str:
    """Return the target-name stem of a ``d_labitems.label``.

    Lower-cased, every run of characters other than ``a-z0-9`` replaced by one ``_``,
    no leading or trailing ``_``.

    >>> lab_slug("Bilirubin, Total")
    'bilirubin_total'
    >>> lab_slug("INR(PT)")
    'inr_pt'
    """
    return _NON_ALNUM.sub("_", label.lower()).strip("_")


def target_name(label: str, direction: str, task: str) -> str:
    """``"{lab}_{low|high}_{est|mon30|mon60|mon120}"``.

    >>> target_name("Calcium, Total", "low", "mon60")
    'calcium_total_low_mon60'
    """
    if direction not in ("low", "high"):
        raise ValueError(f"direction must be 'low' or 'high', got {direction!r}")
    if task not in TASKS:
        raise ValueError(f"task must be est, mon30, mon60 or mon120, got {task!r}")
    return f"{lab_slug(label)}_{direction}_{task}"


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
