"""Shared fixtures: one small synthetic MIMIC tree per test session, and the stages on it.

Each fixture runs the real stage function once per session; tests that need a stage's
output ask for the fixture rather than rebuilding it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# labecg leaves the matplotlib backend to its user; the tests draw without a display
os.environ["MPLBACKEND"] = "Agg"

from labecg.sources import source_paths  # noqa: E402, F401  (tests import it from here)

SMALL_PATIENTS = 80


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A synthetic tree in the layout of the four MIMIC sources (seed 0, 80 patients)."""
    from labecg.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "mimic"
    return Path(generate(SynthConfig(data_root=out, patients=SMALL_PATIENTS, seed=0)))


@pytest.fixture(scope="session")
def cohort_dir(synthetic_root, tmp_path_factory) -> Path:
    """``build_cohort`` on the small tree, with thresholds loosened for its size."""
    from labecg.cohort import CohortConfig, build_cohort

    out = tmp_path_factory.mktemp("cohort")
    build_cohort(CohortConfig(**source_paths(synthetic_root), cohort_dir=out,
                              min_lab_events=20, min_per_class=2))
    return out


@pytest.fixture(scope="session")
def signals_dir(cohort_dir, synthetic_root) -> Path:
    """The cohort folder after ``convert_signals`` (signals.npy and friends beside it)."""
    from labecg.signals import SignalsConfig, convert_signals

    convert_signals(SignalsConfig(cohort_dir=cohort_dir, ecg=synthetic_root / "mimic-iv-ecg", workers=1))
    return cohort_dir


@pytest.fixture(scope="session")
def tiny_run(signals_dir, tmp_path_factory) -> Path:
    """One epoch of a tiny model on the shared cohort (copy it before changing it)."""
    from labecg.train import TrainConfig, train

    return train(TrainConfig(cohort_dir=signals_dir, run_dir=tmp_path_factory.mktemp("tiny_run") / "run", epochs=1,
                             d_model=16, n_layers=1, dropout=0.0, batch_size=16, max_steps_per_epoch=1,
                             accelerator="cpu", seed=3))


#: Settings of the session's tiny trained run (:func:`trained_run`); tests that need their own
#: run start from these with ``dataclasses.replace``.
TINY_RUN = dict(epochs=1, d_model=16, n_layers=1, dropout=0.0, batch_size=16, max_steps_per_epoch=2, seed=3)


@dataclass(frozen=True)
class TrainedRun:
    """A finished tiny run: ``path``, its ``config`` and the wall clock of its ``train`` call."""

    path: Path
    config: object  # labecg.train.TrainConfig
    started: float  # time.time() before train()
    seconds: float  # wall time of train()


@pytest.fixture(scope="session")
def trained_run(signals_dir, tmp_path_factory) -> TrainedRun:
    """One epoch of two steps (:data:`TINY_RUN`) on a copy of the session's cohort; then the
    cohort copy is deleted and the run folder moved, so that the run must stand on its own
    (``labecg predict``). A test that changes a run works on a copy (``shutil.copytree``);
    one that continues it gives ``cohort_dir=signals_dir``, whose files are the same bytes,
    so the run's settings match."""
    from labecg.train import COHORT_INPUTS, TrainConfig, train

    cohort = tmp_path_factory.mktemp("trained_run_cohort")
    for name in COHORT_INPUTS:
        shutil.copy(signals_dir / name, cohort / name)
    where = tmp_path_factory.mktemp("trained_run")
    cfg = TrainConfig(cohort_dir=cohort, run_dir=where / "trained_here", **TINY_RUN)
    started = time.time()
    run = train(cfg)
    seconds = time.time() - started
    shutil.rmtree(cohort)
    moved = Path(run).rename(where / "run")
    return TrainedRun(moved, cfg, started, seconds)
