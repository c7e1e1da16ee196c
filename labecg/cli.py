"""The ``labecg`` command: one subcommand per stage.

Each subcommand is a stage's config dataclass turned into flags (field ``min_lab_events``
becomes ``--min-lab-events``) and the function the notebooks call with that config. Only
the chosen stage's module is imported, so ``labecg synth`` does not load torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
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
    "book": ("labecg.book", "BookConfig", "build_book",
             "execute the notebooks with papermill and build the Jupyter Book"),
    "book-cache-key": ("labecg.book", "BookConfig", "cache_key",
                       "print the key of the book's notebook cache for these flags (the Pages workflow's)"),
}


def _flag_kwargs(field: dataclasses.Field, hint) -> dict:
    """argparse keyword arguments for one dataclass field."""
    kwargs: dict = {"help": field.metadata.get("help", "")}
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
        if kwargs["help"] is not None and "action" not in kwargs:
            kwargs["help"] = f"{kwargs['help']} (default: {default})".strip()
    else:
        kwargs["required"] = True
    return kwargs


def build_parser(config_cls, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of ``config_cls``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name,
                            **_flag_kwargs(field, hints[field.name]))
    return parser


def config_from_args(config_cls, argv: list[str], prog: str = "labecg", description: str = ""):
    """Parse ``argv`` into an instance of ``config_cls``; lists become tuples."""
    ns = build_parser(config_cls, prog, description).parse_args(argv)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()}
    return config_cls(**values)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {spec[3]}" for name, spec in COMMANDS.items()]
        print("usage: labecg <command> [flags]   (labecg <command> --help for its flags)\n\ncommands:")
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nlabecg: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module_name, cls_name, fn_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    cfg = config_from_args(getattr(module, cls_name), argv[1:], prog=f"labecg {argv[0]}",
                           description=help_text)
    result = getattr(module, fn_name)(cfg)
    if result is not None:
        print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
