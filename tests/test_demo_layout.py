"""The shipped MIMIC demo tables through the stages: no MIMIC-IV-ECG-ICD, the ECG demo 0.1 layout.

The demo's record list has 9-digit study ids, times with seconds and paths
``files/p<subject>/s<study>/<study>`` without the ``pNNNN`` level; MIMIC-IV-ECG-ICD is
credentialed and absent, so the folds are assigned. Expected values are read here from the
shipped ``record_list.csv`` with pandas, not from the stage's own output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

import labecg
from labecg import cli
from labecg.records import LEADS
from labecg.signals import SignalsConfig, convert_signals, load_signals
from labecg.sources import locate_source, source_paths

DEMO = Path(labecg.__file__).parent / "mimic_demo"
DEMO_SOURCES = ["--hosp", str(DEMO / "mimiciv/hosp"), "--ed", str(DEMO / "mimic-iv-ed/ed"),
                "--ecg", str(DEMO / "mimic-iv-ecg")]
#: The largest --min-per-class that keeps targets on the demo: `make book-mimic-demo`'s (README, book/mimic.md).
DEMO_MIN_PER_CLASS = int(re.search(r"^MIMIC_DEMO_BOOK\s*=.*?--min-per-class (\d+)",
                                   (Path(__file__).resolve().parents[1] / "Makefile").read_text(), re.M).group(1))


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return pd.read_csv(DEMO / "mimic-iv-ecg/record_list.csv", dtype={"path": str})


@pytest.fixture(scope="module")
def demo_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "cohort"
    assert cli.main(["cohort", *DEMO_SOURCES, "--unlisted-ecgs", "assign", "--cohort-dir", str(out),
                     "--min-per-class", str(DEMO_MIN_PER_CLASS)]) == 0
    return out


def test_demo_cohort_assigns_every_fold_and_says_so(demo_cohort, records):
    flow = pd.read_csv(demo_cohort / "cohort_flow.csv").set_index("step")
    row = flow.loc["folds: assigned, no MIMIC-IV-ECG-ICD file given"]
    assert (row["rows_in"], row["rows_out"], row["dropped"]) == (659, 659, 0) == (len(records), len(records), 0)
    assert f"all {len(records)} ECGs of {records['subject_id'].nunique()} patients were assigned" in row["reason"]
    assert records["subject_id"].nunique() == 92
    targets = json.loads((demo_cohort / "targets.json").read_text())
    assert targets["source"]["ecg_icd"] is None and targets["config"]["ecg_icd"] is None
    cohort = pd.read_parquet(demo_cohort / "cohort.parquet")
    assert (cohort.groupby("subject_id")["fold"].nunique() == 1).all()  # patient-level folds
    assert set(cohort["fold"]) <= set(range(20)) and len(set(cohort["fold"])) > 10


def test_demo_cohort_keeps_the_record_list_layout(demo_cohort, records):
    cohort = pd.read_parquet(demo_cohort / "cohort.parquet")
    assert cohort["study_id"].dtype == np.int64 and len(cohort) > 0
    assert cohort["study_id"].astype(str).str.len().eq(9).all()
    want = records.set_index("study_id").loc[cohort["study_id"]]
    assert cohort["subject_id"].tolist() == want["subject_id"].tolist()
    assert cohort["path"].tolist() == want["path"].tolist()
    assert all(p == f"files/p{s}/s{t}/{t}" for p, s, t in zip(cohort["path"], cohort["subject_id"], cohort["study_id"]))
    # the seconds of ecg_time survive (the 1.0 record list has whole minutes)
    assert cohort["ecg_time"].tolist() == pd.to_datetime(want["ecg_time"]).tolist()
    assert (cohort["ecg_time"].dt.second != 0).any()


def test_demo_min_per_class_is_the_largest_that_keeps_targets(demo_cohort):
    """Counted here from cohort.parquet: every kept target has >= 4 of each class in validation and
    test, and the best has exactly 4, so no candidate has 5 (it would have been kept too)."""
    cohort = pd.read_parquet(demo_cohort / "cohort.parquet")
    targets = json.loads((demo_cohort / "targets.json").read_text())["targets"]
    assert targets
    smallest = []
    for t in targets:
        y = cohort[t["name"]]
        counts = [int(((cohort["fold"] == f) & (y == c)).sum()) for f in (18, 19) for c in (0, 1)]
        smallest.append(min(counts))
    assert min(smallest) >= DEMO_MIN_PER_CLASS and max(smallest) == DEMO_MIN_PER_CLASS


def test_without_ecg_icd_and_without_assign_is_one_error_line(tmp_path, capsys):
    assert cli.main(["cohort", *DEMO_SOURCES, "--cohort-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MIMIC-IV-ECG-ICD" in err[0] and "--unlisted-ecgs assign" in err[0]
    assert not (tmp_path / "c").exists()
    missing = tmp_path / "records_w_diag_icd10.csv"
    assert cli.main(["cohort", *DEMO_SOURCES, "--ecg-icd", str(missing), "--cohort-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "not found" in err[0]


def test_a_data_root_without_ecg_icd_has_none_and_is_complete(tmp_path):
    paths = source_paths(DEMO)
    assert paths["ecg_icd"] is None and paths["ecg"] == DEMO / "mimic-iv-ecg"
    assert locate_source(DEMO, False, 0, 0) == paths
    given = tmp_path / "x.csv"
    assert source_paths(DEMO, ecg_icd=given)["ecg_icd"] == given  # given explicitly: kept, then checked
    with pytest.raises(FileNotFoundError, match="ecg_icd="):
        locate_source(DEMO, False, 0, 0, ecg_icd=given)


def _sines(seed: int) -> np.ndarray:
    """(5000, 12) mV at 500 Hz, slow sines well inside the passband."""
    rng = np.random.default_rng(seed)
    t = np.arange(5000)[:, None] / 500
    return rng.uniform(0.2, 1.0, 12) * np.sin(2 * np.pi * (1.0 + 0.5 * np.arange(12)) * t + rng.uniform(0, 6, 12))


def test_signals_read_the_waveforms_by_the_demo_paths(demo_cohort, tmp_path):
    """Records written at the demo's own paths (no pNNNN level) are found by ``path`` under --ecg."""
    cohort = pd.read_parquet(demo_cohort / "cohort.parquet")
    work = tmp_path / "cohort"
    work.mkdir()
    cohort.to_parquet(work / "cohort.parquet", index=False)
    ecg = tmp_path / "mimic-iv-ecg"
    written = [0, 1, 2]
    for i in written:
        rel = Path(cohort["path"][i])
        (ecg / rel.parent).mkdir(parents=True)
        wfdb.wrsamp(rel.name, fs=500, units=["mV"] * 12, sig_name=list(LEADS), p_signal=_sines(i), fmt=["16"] * 12,
                    adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(ecg / rel.parent))
    convert_signals(SignalsConfig(cohort_dir=work, ecg=ecg, max_failed_frac=1.0))
    manifest = pd.read_parquet(work / "signals_manifest.parquet")
    assert manifest["status"].tolist() == ["ok"] * len(written) + ["failed"] * (len(cohort) - len(written))
    assert manifest["reason"][len(written):].str.contains("missing file").all()
    x, _ = load_signals(work)
    for i in written:  # every fifth sample of the slow sines: what a 500 -> 100 Hz decimation keeps
        np.testing.assert_allclose(x[i, 10:-10].astype(np.float64), _sines(i)[::5][10:-10], atol=0.01)
