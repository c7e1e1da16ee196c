"""House rules that a reader relies on: stage order of imports, the CLI's flags."""

import ast
import dataclasses
from pathlib import Path
from typing import Literal, Optional

import pytest

from labecg import cli

PKG = Path(__file__).resolve().parents[1] / "labecg"
# Modules that import no stage, in order: each imports only earlier ones (util imports none).
BASE = ["util", "layout", "catalog", "metrics", "stats", "targets", "planted", "paper"]
# Stages in pipeline order; a module may import only base modules and earlier stages.
ORDER = ["ecgsim", "synthetic", "download", "sources", "readers", "features", "labels", "cohort", "cohort_report", "records", "signals", "data", "s4", "model",
         "train", "predict", "explain", "tables", "evaluate", "figures", "selfcheck", "privacy", "sphinx_ext", "book"]


def _labecg_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module == "labecg":
                found.update(a.name for a in node.names)
            elif node.level == 0 and module.startswith("labecg."):
                found.add(module.split(".")[1])
            elif node.level == 1:
                found.update([module.split(".")[0]] if module else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("labecg."))
    return found - {"__version__"}


def test_every_module_is_placed_in_the_stage_order():
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__", "cli"}
    unplaced = modules - set(BASE) - set(ORDER)
    assert not unplaced, f"add {sorted(unplaced)} to ORDER or BASE in tests/test_layout.py"


def test_modules_import_only_earlier_stages():
    bad = []
    for path in sorted(PKG.glob("*.py")):
        name = path.stem
        if name in ("__init__", "cli"):
            continue
        for dep in _labecg_imports(path):
            if name in BASE:
                ok = dep in BASE and BASE.index(dep) < BASE.index(name)
            else:
                ok = dep in BASE or (dep in ORDER and ORDER.index(dep) < ORDER.index(name))
            if not ok:
                bad.append(f"labecg.{name} imports labecg.{dep}")
    assert not bad, bad


def test_only_the_source_and_the_cli_import_the_generator():
    # the planted truth is labecg.planted's; a stage that reads it must not load the generator
    importers = sorted(p.stem for p in PKG.glob("*.py") if "synthetic" in _labecg_imports(p))
    assert importers == ["sources"], importers  # cli reaches it by name, through COMMANDS
    assert "labecg.synthetic" in (PKG / "cli.py").read_text()


def test_every_module_states_its_purpose_in_one_line():
    # the first line of each module's docstring is a whole sentence: what the module is for
    vague = []
    for path in sorted(PKG.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = doc.split("\n")[0]
        if not first.endswith(".") or len(first) > 120:
            vague.append(f"{path.name}: {first!r}")
    assert not vague, vague


def test_no_notebook_imports_the_book_builder():
    # the book runs the notebooks; the notebooks call the stages, as the CLI does
    import nbformat

    for nb_path in sorted((PKG.parent / "notebooks").glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code")
        imports = set()
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labecg"):
                imports |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                imports |= {a.name.split(".")[1] for a in node.names if a.name.startswith("labecg.")}
        assert imports and "book" not in imports, f"{nb_path.name} imports {sorted(imports)}"


def test_import_walker_finds_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from labecg.cohort import x\nimport labecg.data\nfrom labecg import util\nfrom . import train\n")
    assert _labecg_imports(src) == {"cohort", "data", "util", "train"}


@dataclasses.dataclass(frozen=True)
class _Cfg:
    out: Path
    patients: int = 300
    ratio: float = 0.5
    name: str = "x"
    flag: bool = True
    horizons_min: tuple[int, ...] = (30, 60)
    mode: Literal["a", "b"] = "a"
    limit: Optional[int] = None


def test_cli_maps_fields_to_flags():
    cfg = cli.config_from_args(_Cfg, ["--out", "d", "--patients", "7", "--no-flag",
                                      "--horizons-min", "5", "10", "--mode", "b", "--limit", "3"])
    assert cfg == _Cfg(out=Path("d"), patients=7, flag=False, horizons_min=(5, 10), mode="b", limit=3)
    assert cli.config_from_args(_Cfg, ["--out", "d"]) == _Cfg(out=Path("d"))


def test_cli_rejects_bad_values():
    with pytest.raises(SystemExit):
        cli.config_from_args(_Cfg, ["--out", "d", "--mode", "c"])
    with pytest.raises(SystemExit):
        cli.config_from_args(_Cfg, [])  # --out is required


def test_cli_unknown_command_exits_nonzero(capsys):
    assert cli.main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err


MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_star_import_gives_every_name_in_all(name):
    module = __import__(f"labecg.{name}", fromlist=["_"])
    namespace = {}
    exec(f"from labecg.{name} import *", namespace)  # AttributeError for a name in __all__ that is not there
    if hasattr(module, "__all__"):
        assert set(module.__all__) <= set(namespace), sorted(set(module.__all__) - set(namespace))


def test_importing_the_package_leaves_the_umask_and_the_matplotlib_backend_alone(tmp_path):
    """A student's process keeps its state: importing labecg.figures (and with it util, where
    the umask was read by setting it) changes the umask not even briefly and picks no
    matplotlib backend."""
    import os
    import subprocess
    import sys

    script = (
        "import os\n"
        "calls = []\n"
        "real = os.umask\n"
        "os.umask = lambda mask: (calls.append(mask), real(mask))[1]\n"
        "import labecg.figures\n"
        "import matplotlib\n"
        "print(calls, matplotlib.get_backend())\n")
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["[]", "svg"]


def test_figures_keep_the_callers_matplotlib_settings_and_draw_in_the_books(tmp_path):
    """Importing labecg.figures set the book's font sizes and dpi for the whole process (#24);
    now neither the import nor a figure changes rcParams, and the figure still has the
    book's sizes when saved under the caller's settings (its tick labels made lazily too)."""
    import os
    import subprocess
    import sys

    script = (
        "import matplotlib\n"
        "import matplotlib.pyplot as plt\n"
        "before = dict(matplotlib.rcParams)\n"
        "from labecg import figures\n"
        "after_import = dict(matplotlib.rcParams)\n"
        "fig = figures.plot_task_timeline()\n"
        "after_plot = dict(matplotlib.rcParams)\n"
        "png, meta = figures.figure_png(fig)\n"
        "ticks = [t.get_fontsize() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]\n"
        "print(before == after_import == after_plot == dict(matplotlib.rcParams), fig.dpi,\n"
        "      matplotlib.rcParams['font.size'], meta['labecg']['min_font_pt'], min(ticks), max(ticks))\n")
    env = {**os.environ, "MPLBACKEND": "agg"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # matplotlib's own font size is 10 and dpi 100; the book's 9 (8 for ticks) at 96
    assert out.stdout.split() == ["True", "96.0", "10.0", "8.0", "8.0", "8.0"], out.stdout


def test_atomic_writes_get_the_mode_a_plain_open_gives_under_the_umask_in_force(tmp_path):
    import os
    import stat

    from labecg.util import write_json

    old = os.umask(0o077)  # set after labecg.util was imported
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o600, oct(mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "plain.txt"]  # no temporary file left


@pytest.mark.parametrize("command", sorted(set(cli.COMMANDS) - {"book-cache-key"}))
def test_configs_hold_paths_however_they_are_built(command, tmp_path):
    """A notebook passes its papermill parameters as strings, the CLI as Paths: both build the
    same config, whose path fields are Paths (#24)."""
    import importlib
    import typing

    module_name, cls_name, _, _ = cli.COMMANDS[command]
    cls = getattr(importlib.import_module(module_name), cls_name)
    hints = typing.get_type_hints(cls)
    paths = [f.name for f in dataclasses.fields(cls) if Path in (hints[f.name], *typing.get_args(hints[f.name]))]
    assert paths, f"{cls_name} has no path field"
    given = {name: str(tmp_path / name) for name in paths}
    for folder in given.values():
        Path(folder).mkdir()  # a config may check that its input folder exists
    positional = {"download": ["mimic-demo"]}.get(command, [])
    argv = positional + [a for name, value in given.items() for a in (f"--{name.replace('_', '-')}", value)]
    from_strings = cls(*positional, **given)
    assert from_strings == cli.config_from_args(cls, argv)
    assert {name: getattr(from_strings, name) for name in paths} == {n: Path(v) for n, v in given.items()}
    assert all(type(getattr(from_strings, name)) is type(Path()) for name in paths)
    with pytest.raises(TypeError, match=f"{cls_name}.{paths[0]}: expected a path"):
        cls(*positional, **{**given, paths[0]: 3})


# (module, callee, parameter, setting): a setting handed to a parameter of another name on purpose
OTHER_NAMES = {
    ("explain", "_attribute", "n_steps", "randomization_steps"),  # the randomization check's own step count
    ("signals", "resample", "fs_out_hz", "fs_hz"),  # a pure resampler between two rates
    ("cohort", "ablation_dir", "folder", "cohort_dir"),  # a cohort or a run folder
    ("book", "_ablation_dirs", "base", "run_dir"),  # the same
    ("evaluate", "predictions_path", "run", "tabular_run_dir"),  # any run folder
    ("evaluate", "predictions_path", "run", "flag_run_dir"),  # the same
    ("download", "progress_bar", "desc", "dataset"),  # tqdm's label
}


def _setting_passes(module):
    """(callee name, parameter, setting) for each config field handed to a labecg function."""
    import inspect

    tree = ast.parse((PKG / f"{module.__name__.split('.')[-1]}.py").read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func
        obj = getattr(module, callee.id, None) if isinstance(callee, ast.Name) else None
        if isinstance(callee, ast.Attribute) and isinstance(callee.value, ast.Name):
            obj = getattr(getattr(module, callee.value.id, None), callee.attr, None)
        if not callable(obj) or not (getattr(obj, "__module__", None) or "").startswith("labecg"):
            continue  # torch, Lightning, tempfile, ...: their parameters are theirs
        try:
            params = list(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            continue
        starred = [i for i, a in enumerate(node.args) if isinstance(a, ast.Starred)]
        positional = node.args[:starred[0]] if starred else node.args  # after *args positions are unknown
        passed = list(enumerate(positional)) + [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
        for where, value in passed:
            if not (isinstance(value, ast.Attribute) and ast.unparse(value.value) in
                    ("cfg", "self.cfg", "hp", "self.hparams")):
                continue
            param = params[where] if isinstance(where, int) and where < len(params) else where
            if isinstance(param, str):
                yield getattr(obj, "__name__", ast.unparse(callee)), param, value.attr


@pytest.mark.parametrize("name", MODULES)
def test_a_setting_keeps_its_name_down_to_the_function_that_uses_it(name):
    """``focal_gamma`` is ``focal_gamma`` in the function that uses it, not ``gamma`` (#24)."""
    module = __import__(f"labecg.{name}", fromlist=["_"])
    renamed = sorted({(callee, param, setting) for callee, param, setting in _setting_passes(module)
                      if param != setting and (name, callee, param, setting) not in OTHER_NAMES})
    assert not renamed, f"labecg.{name}: (function, parameter, setting) renamed on the way: {renamed}"


def test_no_dead_code():
    """Every function, class and constant of the package is used outside its definition: by
    the package, the notebooks, the benchmarks or the book's pages (tests alone do not count).
    ``train.predict_split``, ``cohort.BASE_COLUMNS`` and ``evaluate.SUBGROUP_VARIABLES`` were
    left behind once (#24)."""
    import collections
    import re

    held_by_tests = {"figures.MIN_TEXT_PX"}  # the figures' smallest text, a contract two tests hold them to

    root = PKG.parent
    sources = [*PKG.glob("*.py"), *root.glob("notebooks/*.ipynb"), *root.glob("bench/*.py"),
               *root.glob("book/**/*.md"), *root.glob("*.md"), *root.glob("_config.yml"), root / "Makefile"]
    words = collections.Counter(w for path in sources for w in re.findall(r"\w+", path.read_text()))
    unused = []
    for path in sorted(PKG.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name) and t.id != "__all__"]
            else:
                continue
            unused += [f"{path.stem}.{n}" for n in names
                       if words[n] < 2 and not n.startswith("__") and f"{path.stem}.{n}" not in held_by_tests]
    assert not unused, f"defined and never used: {unused}"


@pytest.mark.parametrize("path", sorted((PKG.parent / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_are_stored_as_jupyter_writes_them_without_outputs(path):
    """The chapters are reviewed as .ipynb (ARCHITECTURE.md, "Notebooks in review"): stored
    as nbformat (Jupyter's own writer) writes them, one source line per line of the file, no
    outputs or execution counts, no metadata but cell tags, so that a diff shows only what
    changed and saving in Jupyter changes nothing else."""
    import nbformat

    text = path.read_text()
    nb = nbformat.read(path, as_version=4)
    assert text == nbformat.writes(nb) + "\n", f"{path.name}: not as nbformat writes it (key order, indent)"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name}: stored with outputs"
    assert {k for c in nb.cells for k in c.metadata} <= {"tags"}, path.name
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, path.name


def test_the_auroc_threshold_is_written_once():
    """0.7, the paper's AUROC threshold, was the default of 12 functions and a config and
    drawn as a literal in figures (#24): each ``auroc_threshold`` defaults to
    ``targets.AUROC_THRESHOLD``, and no module writes 0.7 as one."""
    import re

    from labecg.targets import AUROC_THRESHOLD

    assert AUROC_THRESHOLD == 0.7  # the paper's reading: the interval's lower bound above 0.7
    taken = 0
    for name in MODULES:
        source = (PKG / f"{name}.py").read_text()
        assert not re.search(r"auroc_threshold[^=\n]*=\s*0\.7\b|(?:axvline|axhline)\(0\.7\b", source), name
        taken += len(re.findall(r"auroc_threshold: float = AUROC_THRESHOLD\b", source))
    assert taken >= 13  # 12 functions and EvaluateConfig


def test_the_interval_level_is_written_once():
    """The 95% level was the default of five functions and a config, and its percentiles were
    written as [2.5, 97.5] six times (#24): ``stats.LEVEL`` and ``stats.PERCENTILES`` are its one
    home, and the percentiles are exactly 2.5 and 97.5, so no interval moves."""
    import re

    from labecg.stats import LEVEL, PERCENTILES

    assert LEVEL == 0.95 and PERCENTILES == (2.5, 97.5)
    assert 100 * (1 - LEVEL) / 2 != 2.5  # why PERCENTILES is rounded: float error would add a digit
    for name in MODULES:
        source = (PKG / f"{name}.py").read_text()
        assert not re.search(r"level[^=\n]*=\s*0\.95\b|\[2\.5,\s*97\.5\]", source.replace("LEVEL = 0.95", "")), name
