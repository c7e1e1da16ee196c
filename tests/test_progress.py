"""Progress bars reach a terminal (or a Jupyter cell run by hand), never a book page."""

from __future__ import annotations

import ast
import sys
import types
import warnings
from pathlib import Path


from labecg import util

PKG = Path(__file__).resolve().parents[1] / "labecg"


def test_no_stage_picks_its_own_tqdm():
    """tqdm.auto in a kernel without ipywidgets warns "IProgress not found"; bars go through util.progress_bar."""
    offenders = []
    for path in sorted(PKG.glob("*.py")):
        if path.name in ("util.py", "book.py"):  # book.py: the chapter bar of `labecg book`'s own terminal
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.name}: {n}" for n in names if n == "tqdm" or n.startswith("tqdm.")]
    assert not offenders, offenders


def test_under_the_book_bars_go_to_the_progress_file_only(tmp_path, monkeypatch, capsys):
    target = tmp_path / "progress"
    monkeypatch.setenv(util.PROGRESS_ENV, str(target))
    for _ in util.progress_bar(range(5), desc="signals", unit="ecg"):
        pass
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert "signals: 100%" in target.read_text() and "5/5" in target.read_text()


def test_in_a_kernel_without_ipywidgets_a_text_bar_shows_without_warning(monkeypatch, capsys):
    monkeypatch.delenv(util.PROGRESS_ENV, raising=False)
    monkeypatch.setattr(util, "_in_kernel", lambda: True)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = util.progress_bar(total=3, desc="bootstrap")
        bar.update(3)
        bar.close()
    assert "bootstrap: 100%" in capsys.readouterr().err


def test_the_kernel_check_needs_a_kernel(monkeypatch):
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert util._in_kernel()
    fake.get_ipython = lambda: None
    assert not util._in_kernel()
