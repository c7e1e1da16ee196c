"""The ``labecg`` command: one subcommand per stage.

Each subcommand is a stage's config dataclass turned into flags (field ``min_lab_events``
becomes ``--min-lab-events``) and the function the notebooks call with that config. Only
the chosen stage's module is imported, so ``labecg synth`` does not load torch.

A field with ``metadata["positional"]`` is a positional argument instead (``labecg download
mimic-demo``). A flag's help is the field's entry in the config's numpydoc ``Parameters``
section, and only that, so ``--help`` and the docstring cannot disagree. An error the stages raise on purpose (bad
input, a missing file, a refused resume) ends the command with one line on stderr and exit
status 1; ``--debug`` (any position) or ``LABECG_DEBUG=1`` shows the traceback instead.

The inverse lives here too: :func:`reproduce_commands` turns the settings that runs recorded
back into the ``labecg`` commands that rebuild them (the results pages' box).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import inspect
import json
import os
import re
import shlex
import sys
import zipfile
import types
import typing
from pathlib import Path

# subcommand: (module, config class, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "synth": ("labecg.synthetic", "SynthConfig", "generate",
              "write a synthetic cohort in the layout of the four MIMIC sources"),
    "cohort": ("labecg.cohort", "CohortConfig", "build_cohort",
               "build cohort.parquet and targets.json from MIMIC-format files"),
    "signals": ("labecg.signals", "SignalsConfig", "convert_signals",
                "convert the cohort's WFDB records into a 100 Hz memory-mapped array"),
    "train": ("labecg.train", "TrainConfig", "train",
              "train the fusion model and write test predictions to the run folder"),
    "predict": ("labecg.predict", "PredictConfig", "predict",
                "score one ECG record with a trained run: every target's probability"),
    "explain": ("labecg.explain", "ExplainConfig", "explain_run",
                "attribute the test predictions to the ECG, averaged over beats aligned on the R peak"),
    "evaluate": ("labecg.evaluate", "EvaluateConfig", "evaluate_run",
                 "bootstrap AUROCs and write the paper's tables to the run folder"),
    "download": ("labecg.download", "DownloadConfig", "download",
                 "fetch the open MIMIC demo (mimic-demo) from PhysioNet or a mirror into a data root, verified"),
    "book": ("labecg.book", "BookConfig", "build_book",
             "execute the notebooks with papermill and build the Jupyter Book"),
    "book-cache-key": ("labecg.book", "BookConfig", "cache_key",
                       "print the key of the book's notebook cache for these flags (the Pages workflow's)"),
}


#: Exceptions the stages raise on purpose for bad input; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, KeyError, OSError, RuntimeError, zipfile.BadZipFile)
DEBUG_ENV = "LABECG_DEBUG"


def docstring_params(cls) -> dict[str, str]:
    """Field descriptions from the numpydoc ``Parameters`` section of a config's docstring.

    ``name : type`` followed by indented lines gives those lines, joined (the type alone
    when nothing is indented below it); ``a, b : text`` gives ``text`` (and any indented
    lines) to both names. Returns {field name: description}.
    """
    doc = inspect.getdoc(cls) or ""
    section = re.search(r"^Parameters\n-+\n(.*?)(?=\n[A-Z][A-Za-z ]+\n-+\n|\Z)", doc,
                        flags=re.M | re.S)
    out: dict[str, str] = {}
    if not section:
        return out
    entries: list[tuple[list[str], str, list[str]]] = []
    for line in section.group(1).splitlines():
        head = re.match(r"^([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:\s*(.*)$", line)
        if head and not line[:1].isspace():
            entries.append(([n.strip() for n in head.group(1).split(",")], head.group(2).strip(), []))
        elif line.strip() and entries:
            entries[-1][2].append(line.strip())
    for names, rest, lines in entries:
        text = " ".join(([rest] if len(names) > 1 or not lines else []) + lines)
        text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")  # reST roles and literals
        for name in names:
            out[name] = text
    return out


def _flag_kwargs(field: dataclasses.Field, hint, doc_help: str = "") -> dict:
    """argparse keyword arguments for one dataclass field."""
    kwargs: dict = {"help": doc_help}
    has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    default = field.default if field.default is not dataclasses.MISSING else (
        field.default_factory() if field.default_factory is not dataclasses.MISSING else None)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is typing.Literal:
        kwargs["choices"] = list(args)
        kwargs["type"] = type(args[0])
    elif origin in (tuple, list):
        kwargs["nargs"] = "+"
        kwargs["type"] = args[0] if args else str
    elif hint in (int, float, str, Path):
        kwargs["type"] = hint
    else:
        raise TypeError(f"labecg.cli: field {field.name!r} has unsupported type {hint!r}")
    if has_default:
        kwargs["default"] = default
        # percent signs would be read as argparse format fields
        shown = str(default).replace("%", "%%")
        kwargs["help"] = f"{kwargs['help'].replace('%', '%%')} (default: {shown})".strip()
        if hint is bool:
            kwargs["help"] = kwargs["help"].replace(f"(default: {shown})",
                                                    f"(default: --{'' if default else 'no-'}"
                                                    f"{field.name.replace('_', '-')})")
    else:
        kwargs["required"] = True
    return kwargs


def build_parser(config_cls, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of ``config_cls``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error")
    hints = typing.get_type_hints(config_cls)
    docs = docstring_params(config_cls)
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        kwargs = _flag_kwargs(field, hints[field.name], docs.get(field.name, ""))
        if field.metadata.get("positional"):  # e.g. `labecg download mimic-demo`
            kwargs.pop("required", None)
            parser.add_argument(field.name, **kwargs)
            continue
        action = parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, **kwargs)
        if isinstance(action, argparse.BooleanOptionalAction) and action.help:
            # Python < 3.14 appends its own "(default: ...)" to boolean flags; keep ours only
            action.help = action.help.replace(" (default: %(default)s)", "")
    return parser


def config_from_args(config_cls, argv: list[str], prog: str = "labecg", description: str = ""):
    """Parse ``argv`` into an instance of ``config_cls``; lists become tuples."""
    ns = build_parser(config_cls, prog, description).parse_args(argv)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()}
    return config_cls(**values)


# ---------------------------------------------------------------- the inverse: recorded settings to commands

def config_class(command: str) -> type:
    """The config dataclass of subcommand ``command`` (``COMMANDS``), its module imported only now."""
    module_name, cls_name = COMMANDS[command][:2]
    return getattr(importlib.import_module(module_name), cls_name)


#: Settings that change how a stage runs, never what it writes.
RUNTIME_ONLY = {"synth": ("data_root", "workers", "chunk_patients", "writer", "progress"),
                 "cohort": ("memory_limit", "threads"), "train": ("resume",)}


def flags_from_values(config_cls, values: dict, always=(), skip=()) -> list[str]:
    """``--flag value`` for each field of ``config_cls`` in ``values`` that differs from its default.

    Fields in ``always`` are given even at their default; a field whose recorded value is
    None while its default is not cannot be given as a flag and is left out. A name in
    ``always`` or ``skip`` that is not a field of ``config_cls`` is an error, so that a
    renamed field cannot silently drop its flag.
    """
    unknown = sorted((set(always) | set(skip)) - {f.name for f in dataclasses.fields(config_cls)})
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no field {', '.join(unknown)}; "
                         f"expected names of its fields in always and skip")
    out = []
    for f in dataclasses.fields(config_cls):
        if f.name in skip or f.name not in values:
            continue
        value = values[f.name]
        default = (f.default if f.default is not dataclasses.MISSING else f.default_factory()
                   if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        same = default is not dataclasses.MISSING and json.dumps(value, default=str) == json.dumps(
            list(default) if isinstance(default, tuple) else default, default=str)
        if (same and f.name not in always) or value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, (list, tuple)):
            out += [flag] + [shlex.quote(str(v)) for v in value]
        else:
            out += [flag, shlex.quote(str(value))]
    return out


def reproduce_commands(run_dirs, page_parameters: dict, notebook: str = "notebooks/04_results.ipynb") -> list[str]:
    """The shell commands that rebuild a results page from nothing, from the runs' own records.

    Settings come from what the stages wrote: the synthetic generator's and the cohort's
    (``RUN/targets.json``: ``source.synthetic_config``, ``config``), the signal
    conversion's (``COHORT/signals.json``, when present) and training's
    (``RUN/config.json``); flags at their defaults are left out, as are settings that do
    not change results (workers, threads, resume). Paths are printed as the stages
    recorded them.

    Parameters
    ----------
    run_dirs : sequence of path-like
        Run folders shown on the page, the one that fills the tables first.
    page_parameters : dict
        The page's papermill parameters (``run_dir``, ``variants``, ``n_iterations``,
        ``seed``, ...): ``n_iterations`` and ``seed`` also go to ``labecg evaluate``.
    notebook : str
        The page's source notebook, relative to the repository root.

    Returns
    -------
    list of str
        One command per line: ``labecg synth`` (synthetic sources only), ``labecg
        cohort``, ``labecg signals``, then per run ``labecg train`` and ``labecg explain``
        (where the run holds an attribution), then per run ``labecg evaluate`` (the first
        with ``--tabular-run-dir`` when a tabular-only run is shown, a value run with
        ``--flag-run-dir`` the first), then ``papermill``
        for the page.

    Raises
    ------
    FileNotFoundError
        A run folder without ``config.json``.
    ValueError
        The first run's ``targets.json`` without the cohort's settings (``config``) or, for a
        synthetic source, the generator's (``source.synthetic_config``).
    """
    import numpy as np

    from labecg import layout
    from labecg.util import read_json

    SynthConfig, CohortConfig, SignalsConfig, TrainConfig, ExplainConfig, EvaluateConfig = (
        config_class(c) for c in ("synth", "cohort", "signals", "train", "explain", "evaluate"))

    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise ValueError("run_dirs is empty; expected the run folders shown on the page")
    lines: list[str] = []
    trains = []
    for run in runs:
        config_path = run / layout.CONFIG
        if not config_path.exists():
            raise FileNotFoundError(f"{config_path}: not found; expected a run folder written by labecg train")
        trains.append(read_json(config_path)["train"])
    targets_path = runs[0] / layout.TARGETS
    targets = read_json(targets_path)
    source = targets.get("source", {})
    missing = [name for name, absent in (("config", targets.get("config") is None),
                                         ("source.synthetic_config",
                                          bool(source.get("synthetic")) and source.get("synthetic_config") is None))
               if absent]
    if missing:
        raise ValueError(f"{targets_path}: no {' and no '.join(missing)}; expected the settings labecg cohort "
                         f"records (rebuild the cohort to reproduce this run)")
    if source.get("synthetic"):
        out = layout.data_root(source["ecg"])
        lines.append(" ".join(["labecg synth", "--data-root", shlex.quote(str(out))]
                              + flags_from_values(SynthConfig, source["synthetic_config"], always=("patients", "seed"),
                                                  skip=RUNTIME_ONLY["synth"])))
    cohorts = list(dict.fromkeys(t["cohort_dir"] for t in trains))
    for cohort in cohorts:
        lines.append(" ".join(["labecg cohort"] + flags_from_values(
            CohortConfig, {**targets["config"], "cohort_dir": cohort}, always=("hosp", "ed", "ecg", "ecg_icd", "cohort_dir"),
            skip=RUNTIME_ONLY["cohort"])))
    for cohort in cohorts:
        meta_path = Path(cohort) / layout.SIGNALS_META
        meta = read_json(meta_path) if meta_path.exists() else {}
        signal_settings = {k: meta[k] for k in ("dtype", "clip_mv", "fs_hz") if k in meta}
        lines.append(" ".join(["labecg signals"] + flags_from_values(
            SignalsConfig, {"cohort_dir": cohort, "ecg": source.get("ecg"), **signal_settings},
            always=("cohort_dir", "ecg"))))
    evaluate = {"n_iterations": page_parameters["n_iterations"], "seed": page_parameters["seed"]}
    for run, train in zip(runs, trains):
        lines.append(" ".join(["labecg train"] + flags_from_values(TrainConfig, train, always=("cohort_dir", "run_dir"),
                                                         skip=RUNTIME_ONLY["train"])))
        attribution = layout.evaluation_dir(run) / layout.ATTRIBUTION
        if attribution.exists():
            with np.load(attribution, allow_pickle=False) as npz:
                method = str(npz["method"])  # the one setting explain records
            lines.append(" ".join(["labecg explain"] + flags_from_values(ExplainConfig, {"run_dir": str(run), "method": method},
                                                               always=("run_dir",))))
    # evaluated after every run is trained: the tables' run is compared with the tabular-only one
    tabular = [str(run) for run, train in zip(runs[1:], trains[1:]) if train.get("variant") == "tabular"]
    for i, (run, train) in enumerate(zip(runs, trains)):
        extra = {"tabular_run_dir": tabular[0]} if i == 0 and tabular else {}
        if train.get("objective", "flag") == "value":  # beside the tables' flag run (values.csv)
            extra = {"flag_run_dir": str(runs[0])}
        lines.append(" ".join(["labecg evaluate"] + flags_from_values(EvaluateConfig, {"run_dir": str(run), **evaluate, **extra},
                                                            always=("run_dir", "n_iterations", "seed"))))
    output = Path(runs[0]) / Path(notebook).name
    pm = ["papermill", shlex.quote(notebook), shlex.quote(str(output))]
    for name, value in page_parameters.items():
        if isinstance(value, (list, tuple, dict)):
            pm += ["-y", shlex.quote(json.dumps({name: list(value) if isinstance(value, tuple) else value}))]
        else:
            pm += ["-p", name, shlex.quote(str(value))]
    lines.append(" ".join(pm))
    return lines


def error_line(exc: BaseException) -> str:
    """One line for an expected error: its message's first line (KeyError without quotes)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    first = str(msg).strip().splitlines()[0] if str(msg).strip() else type(exc).__name__
    return first if isinstance(exc, (ValueError, RuntimeError, KeyError)) else f"{type(exc).__name__}: {first}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["--version"]:
        from labecg import __version__

        print(f"labecg {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {spec[3]}" for name, spec in COMMANDS.items()]
        print("usage: labecg [--version] <command> [flags] [--debug]   "
              "(labecg <command> --help for its flags)\n\ncommands:")
        print("\n".join(lines))
        print(f"\n--debug (or {DEBUG_ENV}=1) shows the traceback of an error instead of one line")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nlabecg: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module_name, cls_name, fn_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    try:
        # a stage may say more in --help than the one line of the command list
        cfg = config_from_args(getattr(module, cls_name), argv[1:], prog=f"labecg {argv[0]}",
                               description=". ".join(filter(None, [help_text, getattr(module, "CLI_DESCRIPTION", "")])))
        result = getattr(module, fn_name)(cfg)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        print(f"labecg {argv[0]}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        if debug:
            raise
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and exc.filename:
            from labecg.util import disk_full

            exc = disk_full(exc.filename, None, exc)  # the one line names the file and the space left
        print(f"labecg {argv[0]}: error: {error_line(exc)}", file=sys.stderr)
        return 1
    if result is not None:
        print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
