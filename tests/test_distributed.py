"""Data-parallel training: two CPU processes (gloo) started by Lightning's DDP launcher.

Checked against the cohort, not against the code: every validation and test ECG with a
good signal is predicted exactly once with its own labels, and the two ranks train on
disjoint crops each epoch, other crops in the next. (Resuming is test_train's.)
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

HELPER = Path(__file__).parent / "ddp_run.py"


def _launch(cohort: Path, run: Path, record: Path, epochs: int) -> None:
    record.mkdir()
    cmd = [sys.executable, str(HELPER), str(record), "--cohort-dir", str(cohort), "--run-dir", str(run),
           "--epochs", str(epochs), "--batch-size", "16", "--d-model", "16", "--n-layers", "1",
           "--dropout", "0", "--seed", "3", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT", "MASTER_ADDR")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _crops(record: Path) -> list[np.ndarray]:
    """Per rank: (n_items, 3) epoch, row, crop start."""
    return [np.load(record / f"crops_rank{r}.npy") for r in (0, 1)]


@pytest.mark.slow  # two training processes end to end
def test_two_ddp_processes_split_the_crops_and_predict_each_ecg_once(signals_dir, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(signals_dir, cohort)
    frame = pd.read_parquet(cohort / "cohort.parquet")
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    fold = frame["fold"].to_numpy()
    # odd validation and test counts, so that one rank's evaluation share is padded
    for f in (18, 19):
        idx = np.flatnonzero((fold == f) & (manifest["status"] == "ok").to_numpy())
        if len(idx) % 2 == 0:
            manifest.loc[idx[0], ["status", "reason"]] = ["failed", "excluded by the test"]
    manifest.to_parquet(cohort / "signals_manifest.parquet", index=False)
    ok = (manifest["status"] == "ok").to_numpy()
    train_rows = set(np.flatnonzero((fold < 18) & ok).tolist())
    assert len(train_rows) > 100

    run = tmp_path / "run"
    _launch(cohort, run, tmp_path / "rec", epochs=2)

    shares = {}
    both = _crops(tmp_path / "rec")
    assert [sorted(set(r[:, 0])) for r in both] == [[0, 1], [0, 1]]
    for epoch in (0, 1):
        r0, r1 = (r[r[:, 0] == epoch] for r in both)
        a, b = r0[:, 1], r1[:, 1]
        half = len(train_rows) // 2
        # each rank: half of the training rows, each once; the two halves disjoint
        assert len(a) == len(set(a)) == half and len(b) == len(set(b)) == half
        assert not set(a) & set(b) and set(a) | set(b) <= train_rows
        starts = np.concatenate([r0[:, 2], r1[:, 2]])
        assert starts.min() >= 0 and starts.max() <= 1000 - 250 and len(np.unique(starts)) > 50
        shares[epoch] = set(a)
    assert shares[0] != shares[1]  # epoch 1 drew its own crops, not epoch 0's again

    with open(run / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["epochs_done"] == 2
    names = [t["name"] for t in json.loads((cohort / "targets.json").read_text())["targets"]]
    by_study = frame.set_index("study_id")
    for split, f in (("val", 18), ("test", 19)):
        pred = np.load(run / f"predictions_{split}.npz")
        expected = np.sort(frame["study_id"].to_numpy()[(fold == f) & ok])
        assert len(expected) % 2 == 1
        np.testing.assert_array_equal(np.sort(pred["study_id"]), expected)  # each ECG exactly once
        assert list(pred["target_names"]) == names
        truth = by_study.loc[pred["study_id"], names].to_numpy(dtype=np.float32, na_value=np.nan)
        np.testing.assert_array_equal(pred["y_true"], truth)  # NaN-equal: its own labels
        np.testing.assert_array_equal(pred["subject_id"], by_study.loc[pred["study_id"], "subject_id"])
        assert np.isfinite(pred["y_score"]).all() and (pred["y_score"] >= 0).all() and (pred["y_score"] <= 1).all()
    # the model-selection AUROC from gathered shards equals the one computed on the written file
    pred = np.load(run / "predictions_val.npz")
    scores = []
    for k in range(len(names)):
        seen = ~np.isnan(pred["y_true"][:, k])
        if len(np.unique(pred["y_true"][seen, k])) == 2:
            scores.append(roc_auc_score(pred["y_true"][seen, k], pred["y_score"][seen, k]))
    assert scores and info["best_val_macro_auroc"] == pytest.approx(np.mean(scores), abs=1e-6)
