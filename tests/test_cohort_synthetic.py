"""build_cohort on the session's synthetic tree vs. the slow per-ECG pandas baseline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import source_paths

BASELINE = Path(__file__).resolve().parent / "reference" / "cohort_baseline.py"
FEATURES = ["sex", "age", "temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "bmi", "weight", "height"]


@pytest.fixture(scope="module")
def baseline(synthetic_root):
    spec = importlib.util.spec_from_file_location("cohort_baseline", BASELINE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    df, meta = mod.build_labels(source_paths(synthetic_root), min_lab_events=20)  # as conftest's cohort_dir
    # the default row policies, applied here by hand: ECGs listed in ecg_icd (their strat_fold),
    # then those with at least one kept target
    icd = pd.read_csv(source_paths(synthetic_root)["ecg_icd"], usecols=["study_id", "strat_fold"]).dropna()
    fold = df["study_id"].map(icd.drop_duplicates("study_id").set_index("study_id")["strat_fold"])
    df, fold = df[fold.notna()].reset_index(drop=True), fold[fold.notna()].to_numpy()
    kept = mod.kept_targets(df, fold, 2)
    has = df[kept].notna().any(axis=1).to_numpy()
    return mod, df[has].reset_index(drop=True), meta


def test_every_label_matches_the_baseline(cohort_dir, baseline):
    mod, ref, _ = baseline
    df = pd.read_parquet(cohort_dir / "cohort.parquet")
    targets = json.loads((cohort_dir / "targets.json").read_text())["targets"]
    names = [t["name"] for t in targets]
    assert names, "no target survived on the synthetic tree"
    np.testing.assert_array_equal(df["study_id"].to_numpy(), ref["study_id"].to_numpy())
    assert sorted(mod.kept_targets(ref, df["fold"].to_numpy(), 2)) == sorted(names)
    n_values = 0
    for n in names:
        a, b = df[n].to_numpy(np.float64), ref[n].to_numpy(np.float64)
        np.testing.assert_array_equal(a, b, err_msg=n)
        n_values += int(np.isfinite(a).sum())
    assert n_values > 100  # the comparison is not vacuous


def test_features_match_the_baseline(cohort_dir, baseline):
    _, ref, _ = baseline
    df = pd.read_parquet(cohort_dir / "cohort.parquet")
    for f in FEATURES:
        np.testing.assert_allclose(df[f].to_numpy(float), ref[f].to_numpy(float), rtol=1e-12, err_msg=f)
    assert (df["race"].to_numpy() == ref["race"].to_numpy()).all()
    # not vacuous: all features but at most one (omr height is sparse at 80 patients) observed
    assert df[FEATURES].notna().any().sum() >= len(FEATURES) - 1


def test_thresholds_and_itemids_match_the_baseline(cohort_dir, baseline):
    _, _, meta = baseline
    for t in json.loads((cohort_dir / "targets.json").read_text())["targets"]:
        m = meta[t["label"]]
        assert t["threshold"] == pytest.approx(m["lower"] if t["direction"] == "low" else m["upper"])
        assert t["itemids"] == m["itemids"] and t["fluid"] == m["fluid"] and t["unit"] == m["unit"]


def test_folds_are_patient_level_and_follow_ecg_icd(cohort_dir, synthetic_root):
    df = pd.read_parquet(cohort_dir / "cohort.parquet")
    assert df.groupby("subject_id")["fold"].nunique().max() == 1
    icd = pd.read_csv(source_paths(synthetic_root)["ecg_icd"], usecols=["study_id", "strat_fold"])
    m = df.merge(icd.dropna(), on="study_id")
    assert len(m) and (m["fold"] == m["strat_fold"]).all()
    tj = json.loads((cohort_dir / "targets.json").read_text())
    assert tj["source"]["synthetic"] is True
    assert tj["summary"]["n_ecgs"] == len(df)


def test_a_cohort_without_targets_says_what_to_lower(synthetic_root, tmp_path):
    import re

    from labecg.cohort import CohortConfig, build_cohort

    with pytest.raises(ValueError, match="0 targets") as info:
        build_cohort(CohortConfig(**source_paths(synthetic_root), cohort_dir=tmp_path / "none",
                                  min_lab_events=20, min_per_class=500))
    message = str(info.value)
    assert "\n" not in message and "--min-lab-events" in message
    assert not (tmp_path / "none" / "cohort.parquet").exists()
    offers = {int(k): int(n) for k, n in re.findall(r"(\d+) keeps (\d+) targets", message)}
    best = max(offers)
    # each offered value really gives that many targets, and the largest is the largest that works
    for k in (best, min(offers)):
        result = build_cohort(CohortConfig(**source_paths(synthetic_root), cohort_dir=tmp_path / f"k{k}",
                                           min_lab_events=20, min_per_class=k))
        assert sum(result.summary["n_targets"].values()) == offers[k] > 0
    with pytest.raises(ValueError, match="0 targets"):
        build_cohort(CohortConfig(**source_paths(synthetic_root), cohort_dir=tmp_path / "over",
                                  min_lab_events=20, min_per_class=best + 1))
