"""The conda environment and the package metadata list the same dependencies (and test tools)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalize(spec: str) -> tuple[str, str]:
    spec = spec.replace(" ", "")
    name = re.match(r"[A-Za-z0-9_.\-]+", spec).group(0)
    return name.lower().replace("_", "-"), ",".join(sorted(spec[len(name):].split(",")))


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    meta = project["dependencies"] + project["optional-dependencies"]["test"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip_deps = next(d["pip"] for d in env if isinstance(d, dict) and "pip" in d)
    assert dict(map(_normalize, pip_deps)) == dict(map(_normalize, meta))


def test_normalize_distinguishes_versions():
    assert _normalize("torch>=2.4,<2.14") != _normalize("torch>=2.4,<2.15")
    assert _normalize("Scikit_Learn >=1.5") == _normalize("scikit-learn>=1.5")
