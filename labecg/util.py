"""Small helpers shared by every stage: atomic file writes, JSON, target names, logging.

Imports no other ``labecg`` module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

HORIZONS_MIN: tuple[int, ...] = (30, 60, 120)  # the paper's monitoring horizons
TASKS: tuple[str, ...] = ("est",) + tuple(f"mon{h}" for h in HORIZONS_MIN)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_UMASK = os.umask(0)
os.umask(_UMASK)


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    A crash mid-write leaves the previous file (or none) in place, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual mode
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
