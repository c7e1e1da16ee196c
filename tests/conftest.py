"""Shared fixtures: one small synthetic MIMIC tree per test session, and the stages on it.

Each fixture runs the real stage function once per session; tests that need a stage's
output ask for the fixture rather than rebuilding it.
"""

from __future__ import annotations

import os
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
