"""The ``labecg`` command as a user meets it: version, help on every flag, one-line errors."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

from labecg import cli


def _parser(command: str):
    module_name, cls_name, _, help_text = cli.COMMANDS[command]
    return cli.build_parser(getattr(importlib.import_module(module_name), cls_name), f"labecg {command}", help_text)


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"labecg {importlib.metadata.version('labecg')}"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_is_described_and_shows_its_default(command):
    undescribed = []
    for action in _parser(command)._actions:
        if action.dest == "help":
            continue
        text = re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()
        if not text:
            undescribed.append(action.option_strings[0])
        if not action.required:
            assert (action.help or "").count("(default:") == 1, (action.option_strings, action.help)
    assert not undescribed, f"labecg {command}: flags without a description: {undescribed}"


def _napoleon_entries(cls) -> dict[str, tuple[str, str]]:
    """{field: (type, description)} of the config's docstring, as Sphinx's napoleon reads it."""
    import inspect

    from sphinx.ext.napoleon import Config, NumpyDocstring

    text = str(NumpyDocstring(inspect.getdoc(cls), Config(napoleon_use_param=True)))
    out: dict[str, list[str]] = {}
    for kind, name, body in re.findall(r"^:(param|type) (\w+):(.*(?:\n[ \t]+.*)*)", text, flags=re.M):
        out.setdefault(name, ["", ""])[kind == "param"] = body

    def plain(text):  # reST roles and literals as a terminal shows them, whitespace collapsed
        return " ".join(re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "").split())

    return {name: (plain(kind), plain(description)) for name, (kind, description) in out.items()}


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flags_help_is_its_fields_docstring_entry(command):
    """Help text has one home, the config's numpydoc docstring: each flag's help (less its
    default) is its field's entry there as Sphinx's napoleon reads it (the description; for
    ``a, b : text``, the text before it), and no field carries help of its own (#24)."""
    module_name, cls_name, _, _ = cli.COMMANDS[command]
    cls = getattr(importlib.import_module(module_name), cls_name)
    entries = _napoleon_entries(cls)
    for f in dataclasses.fields(cls):
        assert "help" not in f.metadata, f"{cls_name}.{f.name}: help belongs in the docstring"
    for action in _parser(command)._actions:
        if action.dest == "help":
            continue
        assert action.dest in entries, f"{cls_name}.{action.dest} has no entry in the docstring"
        kind, description = entries[action.dest]
        shown = re.sub(r" ?\(default: .*\)$", "", action.help, flags=re.S).replace("%%", "%")
        assert shown in (description or kind, f"{kind} {description}"), (action.dest, shown, entries[action.dest])


def test_signals_help_says_what_its_docstring_says():
    """signals' --ecg help said "MIMIC-IV-ECG root" where the docstring allows any folder of
    WFDB records (#24)."""
    help_text = " ".join(_parser("signals").format_help().split())
    assert "ECG root (MIMIC-IV-ECG's, or any folder of 12-lead WFDB records)" in help_text
    assert "Sort the table by probability, highest first (else the run's target order)" in " ".join(
        _parser("predict").format_help().split())


# What a measured time looks like in prose: "took 30 s", "2x faster", "~10 ms per record",
# "on the 2-core CPU", "0.95 s a step"
_TIMING = re.compile(r"\btook\b|\d+(\.\d+)?x (faster|slower)|\d+(\.\d+)? ?(ms|s) (per|a) (record|step|target)"
                     r"|\d+-core\b|under load")


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_quotes_no_benchmark_timing(command):
    """Timings belong to the benchmarks' output (bench/*.py), not to the help (#24)."""
    help_text = " ".join(_parser(command).format_help().split())
    assert not _TIMING.search(help_text), (command, _TIMING.search(help_text).group(0))


def test_the_generator_and_the_stages_docstrings_quote_no_benchmark_timing():
    """Measured times left the docstrings of records, stats, s4, explain and synthetic for the
    benchmarks that print them (#24)."""
    for name in ("records", "stats", "s4", "explain", "synthetic"):
        path = Path(importlib.import_module(f"labecg.{name}").__file__)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = " ".join((ast.get_docstring(node) or "").split())
                found = _TIMING.search(doc)
                assert not found, f"labecg/{name}.py {getattr(node, 'name', 'module')}: {found and found.group(0)!r}"


def test_resume_shows_its_default():
    help_text = " ".join(_parser("train").format_help().split())
    entry = help_text[help_text.index("--resume, --no-resume "):]
    entry = entry[:entry.index(")", entry.index("(default:")) + 1]  # up to the end of its default
    assert entry.endswith("(default: --resume)"), entry


def test_book_says_why_its_defaults_differ_from_the_stages():
    from labecg.book import BookConfig

    book = {f.name: f for f in dataclasses.fields(BookConfig)}
    for command in ("synth", "cohort", "signals", "train", "evaluate"):
        module_name, cls_name, _, _ = cli.COMMANDS[command]
        for f in dataclasses.fields(getattr(importlib.import_module(module_name), cls_name)):
            if f.name in book and f.default is not dataclasses.MISSING and f.default != book[f.name].default:
                help_text = cli.docstring_params(BookConfig).get(f.name, "")
                assert f"labecg {command}" in help_text and str(f.default) in help_text.replace(",", ""), \
                    (f.name, f.default, book[f.name].default, help_text)


def test_an_expected_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "real"
    folder.mkdir()
    (folder / "keep.csv").write_text("x\n")
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["synth", "--data-root", str(folder), "--patients", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labecg synth: error: FileExistsError: ") and str(folder) in err[0]
    with pytest.raises(FileExistsError):
        cli.main(["synth", "--data-root", str(folder), "--patients", "3", "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(FileExistsError):
        cli.main(["synth", "--data-root", str(folder), "--patients", "3"])
    assert (folder / "keep.csv").read_text() == "x\n"


@pytest.mark.parametrize("argv, names", [
    (["signals", "--ecg", "{d}"], "cohort.parquet"),
    (["train", "--run-dir", "{d}/run"], "cohort.parquet"),
])
def test_an_empty_cohort_folder_is_named(tmp_path, capsys, monkeypatch, argv, names):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    empty = tmp_path / "cohort"
    empty.mkdir()
    args = [a.format(d=tmp_path) for a in argv] + ["--cohort-dir", str(empty)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty / names) in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_corrupt_predictions_file_is_named_on_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    np.savez(tmp_path / "predictions_test.npz", study_id=np.arange(2))
    (tmp_path / "predictions_test.npz").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "targets.json").write_text('{"targets": []}')
    assert cli.main(["evaluate", "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predictions_test.npz: not a readable predictions file" in err[0], err


def test_book_prints_its_summary_once(tmp_path, capfd, caplog, monkeypatch):
    """`labecg book` printed the stage summary twice: logged on stderr and printed on stdout (#23)."""
    import shutil
    from pathlib import Path

    from labecg import book

    repo = Path(__file__).resolve().parents[1]
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(repo / name, tmp_path / name)
    shutil.copytree(repo / "notebooks", tmp_path / "notebooks")
    # executing a chapter is not what this test is about: the "executed" copy is the source
    monkeypatch.setattr(book, "_execute", lambda source, target, *a, **k: shutil.copy(source, target))
    assert cli.main(["book", "--book-root", str(tmp_path), "--stages", "01_data", "--no-build-html",
                     "--data-root", str(tmp_path / "absent"), "--cohort-dir", str(tmp_path / "cohort"),
                     "--run-dir", str(tmp_path / "run")]) == 0
    out, err = capfd.readouterr()
    # the package's log handler writes to the stderr of its creation, so its records are read here
    logged = caplog.text
    assert (out + err + logged).count("01_data: ran") == 1, (out, err, logged)
    assert "01_data: ran" in out


def test_flags_refuse_a_name_that_is_not_a_field():
    from labecg.explain import ExplainConfig

    assert cli.flags_from_values(ExplainConfig, {"run_dir": "r", "method": "occlusion"}, always=("run_dir",)) == [
        "--run-dir", "r", "--method", "occlusion"]
    with pytest.raises(ValueError, match="ExplainConfig has no field run;"):
        cli.flags_from_values(ExplainConfig, {"run_dir": "r"}, always=("run",))
    with pytest.raises(ValueError, match="has no field n_steps_typo"):
        cli.flags_from_values(ExplainConfig, {"run_dir": "r"}, skip=("n_steps_typo",))


# the cohort's settings as labecg cohort records them in targets.json (its config, as JSON)
_COHORT_SETTINGS = {"hosp": "/data/mimiciv/hosp", "ed": "/data/mimic-iv-ed/ed", "ecg": "/data/mimic-iv-ecg",
                    "ecg_icd": "/data/mimic-iv-ecg-ext-icd-labels", "cohort_dir": "cohort"}


@pytest.mark.parametrize("missing", ["config", "synthetic_config"])
def test_reproduce_commands_refuse_a_run_whose_settings_were_not_recorded(tmp_path, missing):
    """A targets.json without the cohort's (or a synthetic source's generator) settings is refused
    in one line naming the file, not answered with a "# not recorded" line (#24)."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"cohort_dir": str(tmp_path / "c"), "run_dir": str(run)}}))
    targets = {"source": {"synthetic": True, "ecg": str(tmp_path / "mimic" / "mimic-iv-ecg"),
                          "synthetic_config": {"patients": 40, "seed": 3}},
               "config": _COHORT_SETTINGS}
    if missing == "config":
        del targets["config"]
    else:
        del targets["source"]["synthetic_config"]
    (run / "targets.json").write_text(json.dumps(targets))
    with pytest.raises(ValueError) as caught:
        cli.reproduce_commands([run], {"run_dir": str(run), "n_iterations": 50, "seed": 0})
    message = str(caught.value)
    assert str(run / "targets.json") in message and missing in message and "\n" not in message, message


def test_reproduce_commands_for_an_explained_run_parse_back_to_its_settings(tmp_path):
    """A hand-made run folder (not synthetic, explained by occlusion): each printed command
    goes back through the CLI's parser to the settings the run recorded."""
    import json
    import shlex

    from labecg.evaluate import EvaluateConfig
    from labecg.explain import ExplainConfig
    from labecg.train import TrainConfig

    run, cohort = tmp_path / "run dir", tmp_path / "cohort"
    (run / "evaluation").mkdir(parents=True)
    cohort.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"cohort_dir": str(cohort), "run_dir": str(run),
                                                            "epochs": 3, "lr": 0.002}}))
    (run / "targets.json").write_text(json.dumps({"source": {"synthetic": False, "ecg": "/data/mimic-iv-ecg"},
                                                  "config": _COHORT_SETTINGS}))
    np.savez(run / "evaluation" / "attribution.npz", method=np.array("occlusion"))
    lines = cli.reproduce_commands([run], {"run_dir": str(run), "n_iterations": 50, "seed": 4})
    by_command = {" ".join(shlex.split(line)[:2]): shlex.split(line)[2:] for line in lines}
    assert list(by_command)[:2] == ["labecg cohort", "labecg signals"]  # every stage a command, none a comment
    explain = cli.config_from_args(ExplainConfig, by_command["labecg explain"])
    assert (Path(explain.run_dir), explain.method) == (run, "occlusion")
    train = cli.config_from_args(TrainConfig, by_command["labecg train"])
    assert (Path(train.cohort_dir), Path(train.run_dir), train.epochs, train.lr) == (cohort, run, 3, 0.002)
    evaluate = cli.config_from_args(EvaluateConfig, by_command["labecg evaluate"])
    assert (Path(evaluate.run_dir), evaluate.n_iterations, evaluate.seed) == (run, 50, 4)
    assert "labecg synth" not in by_command  # not a synthetic source


def test_reproduce_commands_evaluate_the_model_against_the_tabular_run_after_training_both(tmp_path):
    import json
    import shlex

    from labecg.evaluate import EvaluateConfig

    runs = [tmp_path / "default", tmp_path / "default-tabular"]
    for run, variant in zip(runs, ("fusion", "tabular")):
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"train": {"cohort_dir": str(tmp_path / "c"), "run_dir": str(run),
                                                                "variant": variant}}))
        (run / "targets.json").write_text(json.dumps({"source": {"synthetic": False, "ecg": "/data/mimic-iv-ecg"},
                                                      "config": _COHORT_SETTINGS}))
    lines = cli.reproduce_commands(runs, {"run_dir": str(runs[0]), "n_iterations": 50, "seed": 0})
    commands = [shlex.split(line) for line in lines]
    kinds = [" ".join(c[:2]) for c in commands]
    evaluations = [cli.config_from_args(EvaluateConfig, c[2:]) for c in commands if c[:2] == ["labecg", "evaluate"]]
    assert max(i for i, k in enumerate(kinds) if k == "labecg train") < kinds.index("labecg evaluate")
    assert Path(evaluations[0].tabular_run_dir) == runs[1] and evaluations[1].tabular_run_dir is None
