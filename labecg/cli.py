"""The ``labecg`` command: one subcommand per stage.

Each subcommand is a stage's config dataclass turned into flags (field ``min_lab_events``
becomes ``--min-lab-events``) and the function the notebooks call with that config. Only
the chosen stage's module is imported, so ``labecg synth`` does not load torch.

A field with ``metadata["positional"]`` is a positional argument instead (``labecg download
mimic-demo``). A flag's help is the field's entry in the config's numpydoc ``Parameters``
section, and only that, so ``--help`` and the docstring cannot disagree. An error the stages raise on purpose (bad
input, a missing file, a refused resume) ends the command with one line on stderr and exit
status 1; ``--debug`` (any position) or ``LABECG_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import inspect
import os
import re
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
