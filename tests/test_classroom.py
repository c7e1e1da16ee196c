"""The classroom path: notebooks opened in Jupyter from notebooks/, `make lab`, nothing stray for git."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from labecg.util import repo_path, repo_root

ROOT = Path(__file__).resolve().parents[1]
PATH_PARAMETERS = ("data_root", "cohort_dir", "run_dir", "hosp", "ed", "ecg", "ecg_icd")


def test_relative_paths_resolve_against_the_repository_from_notebooks(monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    assert repo_root() == ROOT
    assert repo_path("data/synthetic") == ROOT / "data" / "synthetic"
    assert repo_path("/abs/where") == Path("/abs/where") and repo_path(None) is None
    monkeypatch.chdir(ROOT)
    assert (Path.cwd() / repo_path("runs/default")).resolve() == ROOT / "runs" / "default"


def test_relative_paths_outside_a_checkout_stay_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()  # papermill run in a folder of its own: not a checkout
    monkeypatch.chdir(tmp_path / "notebooks")
    assert repo_root() == tmp_path / "notebooks"
    assert (Path.cwd() / repo_path("data/cohort")).resolve() == tmp_path / "notebooks" / "data" / "cohort"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_path_parameter_goes_through_repo_path(notebook):
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    params = re.findall(r"^(\w+)\s*=", "".join(cells[0]["source"]), flags=re.M)
    code = "".join("".join(c["source"]) for c in cells[1:])
    for name in (p for p in params if p in PATH_PARAMETERS):
        resolved = re.search(rf"\b{name}\b[^=\n]*=[^\n]*repo_path\({name}\)", code)
        assert resolved, f"{notebook.name}: parameter {name} is used without repo_path()"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_git_ignores_what_a_notebook_run_could_write_beside_it():
    for path in ("notebooks/data/synthetic/x.csv.gz", "notebooks/runs/default/config.json", "data/cohort/a",
                 "runs/default/b"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_installs_and_starts_jupyterlab_from_the_venv(tmp_path):
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "-n", "lab", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert f'{venv}/bin/python -m pip install -q -e ".[lab]"' in out
    assert re.search(rf"^{re.escape(str(venv))}/bin/jupyter lab notebooks/", out, flags=re.M), out
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["lab"]
    assert {re.match(r"[\w-]+", s).group(0) for s in extra} >= {"jupyterlab", "ipywidgets"}
    assert "make lab" in (ROOT / "README.md").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_book_small_is_documented_as_run_and_keeps_the_default_cohort():
    """The classroom size changes training and resamples only: its cohort is the default book's."""
    out = subprocess.run(["make", "-n", "book-small", "VENV=.venv"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    line = next(ln for ln in out.splitlines() if "labecg book" in ln)
    flags = line.split("labecg book", 1)[1].split()
    assert " ".join(["labecg book", *flags]) in (ROOT / "book" / "classroom.md").read_text()
    from labecg.book import BookConfig
    cohort_settings = {"--patients", "--seed", "--min-lab-events", "--min-per-class", "--data-root", "--cohort-dir"}
    assert not cohort_settings & set(flags), flags
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    assert int(given["--epochs"]) < BookConfig().epochs and int(given["--n-iterations"]) < BookConfig().n_iterations
    assert given["--run-dir"] != str(BookConfig().run_dir)
