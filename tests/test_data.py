"""labecg.data: tabular preprocessing, crops, segments and batches on a handmade cohort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from labecg.data import (CONTINUOUS, RACES, TABULAR_FEATURES, DataConfig, LabDataModule,
                         average_segments, fit_tabular, transform_tabular)
from labecg.records import LEADS

TARGETS = ["potassium_high_est", "sodium_low_est", "potassium_high_mon30"]
N = 40
# folds: rows 0-27 train (folds 0-17 cycling), 28-33 validation, 34-39 test
FOLDS = np.array([i % 18 for i in range(28)] + [18] * 6 + [19] * 6, dtype=np.int64)


def encode(rows, t, c):
    """Signal value of row r, sample t, lead c: decodes back to (r, t, c) exactly in float32."""
    return rows * 10_000.0 + t * 10.0 + c


def make_frame(rng: np.random.Generator, n: int = N) -> pd.DataFrame:
    frame = pd.DataFrame({
        "subject_id": np.arange(n, dtype=np.int64) + 10_000_000,
        "study_id": np.arange(n, dtype=np.int64) + 40_000_000,
        "ecg_time": pd.Timestamp("2150-01-01") + pd.to_timedelta(np.arange(n), "h"),
        "path": [f"files/p1000/p{10000000 + i}/s{40000000 + i}/{40000000 + i}" for i in range(n)],
        "fold": FOLDS[:n] if n == N else np.arange(n) % 20,
        "sex": rng.integers(0, 2, n).astype(float),
        "age": rng.uniform(20, 90, n),
        "race": pd.array(rng.choice(list(RACES), n), dtype="string"),
        "temperature": rng.normal(98.4, 1, n), "heartrate": rng.normal(80, 10, n),
        "resprate": rng.normal(17, 2, n), "o2sat": rng.normal(97, 2, n),
        "sbp": rng.normal(130, 15, n), "dbp": rng.normal(75, 10, n),
        "bmi": rng.normal(28, 5, n), "weight": rng.normal(80, 15, n), "height": rng.normal(170, 10, n),
    })
    for t in TARGETS:
        y = rng.integers(0, 2, n).astype(np.float32)
        y[rng.random(n) < 0.3] = np.nan
        frame[t] = y
    return frame


@pytest.fixture
def cohort(tmp_path) -> Path:
    """A cohort folder with every file the data module reads; signals encode (row, t, lead)."""
    rng = np.random.default_rng(0)
    frame = make_frame(rng)
    frame.loc[3, "age"] = np.nan
    frame.loc[5, "race"] = pd.NA
    frame.to_parquet(tmp_path / "cohort.parquet", index=False)
    (tmp_path / "targets.json").write_text(json.dumps(
        {"version": 1, "targets": [{"name": t} for t in TARGETS]}))
    r, t, c = np.meshgrid(np.arange(N), np.arange(1000), np.arange(12), indexing="ij")
    x = np.lib.format.open_memmap(tmp_path / "signals.npy", mode="w+", dtype=np.float32,
                                  shape=(N, 1000, 12))
    x[:] = encode(r, t, c)
    x.flush()
    del x
    status = np.array(["ok"] * N, dtype=object)
    status[[2, 30, 36]] = "failed"  # one train, one validation, one test row
    pd.DataFrame({"study_id": frame["study_id"], "row": np.arange(N, dtype=np.int64),
                  "status": status, "reason": np.where(status == "ok", "", "flat: leads ['V4']")}
                 ).to_parquet(tmp_path / "signals_manifest.parquet", index=False)
    (tmp_path / "signals.json").write_text(json.dumps(
        {"leads": list(LEADS), "fs_hz": 100.0, "n_samples": 1000, "dtype": "float32",
         "units": "mV", "clip_mv": 3.0, "source_fs_hz": 500.0, "n_rows": N}))
    (tmp_path / "signals_stats.json").write_text(json.dumps(
        {"mean_mv": [0.0] * 12, "std_mv": [1.0] * 12}))
    return tmp_path


def decode(ecg: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(rows, first sample) of each batch item from the encoded values."""
    v = ecg[:, 0, 0].numpy().astype(np.int64)
    return v // 10_000, (v % 10_000) // 10


# ---------------------------------------------------------------------------- tabular

def test_imputation_statistics_come_from_training_rows_only():
    rng = np.random.default_rng(1)
    frame = make_frame(rng, 50)
    train = np.arange(50) < 30
    frame.loc[[2, 7, 11], "heartrate"] = np.nan
    frame.loc[[4], "sex"] = np.nan
    # extreme values and missingness only outside the training rows
    frame.loc[30:, "heartrate"] = 1e6
    frame.loc[30:, "bmi"] = np.nan
    frame.loc[30:, "sex"] = 1.0
    stats = fit_tabular(frame, np.flatnonzero(train))
    hr_train = frame.loc[:29, "heartrate"].to_numpy()
    obs = hr_train[~np.isnan(hr_train)]
    # hand computation: median of the observed training values; mean/std after imputing it
    med = sorted(obs)[len(obs) // 2] if len(obs) % 2 else np.mean(sorted(obs)[len(obs) // 2 - 1:len(obs) // 2 + 1])
    assert stats.median["heartrate"] == pytest.approx(med)
    filled = np.where(np.isnan(hr_train), med, hr_train)
    assert stats.mean["heartrate"] == pytest.approx(filled.sum() / 30)
    assert stats.std["heartrate"] == pytest.approx(np.sqrt(((filled - filled.mean()) ** 2).sum() / 30))
    assert stats.median["bmi"] == pytest.approx(np.median(frame.loc[:29, "bmi"]))
    assert stats.median["sex"] == np.median(np.delete(frame.loc[:29, "sex"].to_numpy(), 4))
    # boolean masks and positions give the same statistics
    assert fit_tabular(frame, train) == stats

    x = transform_tabular(frame, stats)
    assert x.shape == (50, len(TABULAR_FEATURES)) and x.dtype == np.float32
    col = {n: i for i, n in enumerate(TABULAR_FEATURES)}
    assert x[7, col["heartrate"]] == pytest.approx((med - filled.mean()) / filled.std(), rel=1e-5)
    assert x[7, col["heartrate_missing"]] == 1 and x[8, col["heartrate_missing"]] == 0
    assert x[4, col["sex"]] == stats.median["sex"] and x[4, col["sex_missing"]] == 1
    assert (x[30:, col["bmi_missing"]] == 1).all() and (x[:30, col["bmi_missing"]] == 0).all()
    # standardized training columns: mean 0, std 1 over training rows
    for name in CONTINUOUS:
        assert abs(x[:30, col[name]].mean()) < 1e-4, name
        assert x[:30, col[name]].std() == pytest.approx(1.0, rel=1e-3), name


def test_missing_race_is_imputed_with_training_medians_and_flagged():
    frame = make_frame(np.random.default_rng(2), 7)
    frame["race"] = pd.array(["white", "black", None, "white", "other", "white", None], dtype="string")
    # training rows 0-5: known races white, black, white, other, white -> medians of the one-hot
    # columns over those five: white 1 (3 of 5), every other race 0; row 2 (missing) is not counted
    stats = fit_tabular(frame, np.arange(6))
    assert {r: stats.median[f"race_{r}"] for r in RACES} == {"white": 1.0, "black": 0.0, "hispanic": 0.0,
                                                              "asian": 0.0, "other": 0.0}
    x = transform_tabular(frame, stats)
    col = {n: i for i, n in enumerate(TABULAR_FEATURES)}
    onehot = x[:, [col[f"race_{r}"] for r in RACES]]
    np.testing.assert_array_equal(onehot[:, RACES.index("white")], [1, 0, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(onehot.sum(axis=1), [1] * 7)
    assert onehot[1, RACES.index("black")] == 1 and onehot[4, RACES.index("other")] == 1
    np.testing.assert_array_equal(x[:, col["race_missing"]], [0, 0, 1, 0, 0, 0, 1])
    assert len(TABULAR_FEATURES) == 1 + len(CONTINUOUS) + len(RACES) + 12
    # an even split gives the median 0.5, as numpy's median of 0/1 values
    frame["race"] = pd.array(["black", "white", None, "black", "white", "asian", None], dtype="string")
    stats = fit_tabular(frame, np.arange(5))
    assert stats.median["race_black"] == 0.5 and stats.median["race_white"] == 0.5
    frame["race"] = pd.array(["martian"] * 7, dtype="string")
    with pytest.raises(ValueError, match="race"):
        transform_tabular(frame, fit_tabular(frame, np.arange(6)))


# ---------------------------------------------------------------------------- batches

def test_training_crops_stay_inside_the_record_and_vary(cohort):
    dm = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=8, seed=3))
    seen_rows, offsets = [], []
    for _ in range(5):
        for batch in dm.train_dataloader():
            ecg = batch["ecg"]
            assert ecg.shape[1:] == (250, 12) and ecg.dtype == torch.float32
            rows, start = decode(ecg)
            np.testing.assert_array_equal(rows, batch["row"].numpy())
            # the whole crop is 250 consecutive samples of that row, every lead in order
            b = len(rows)
            expected = encode(rows[:, None, None], start[:, None, None] + np.arange(250)[None, :, None],
                              np.arange(12)[None, None, :])
            np.testing.assert_array_equal(ecg.numpy(), expected)
            assert (start >= 0).all() and (start + 250 <= 1000).all()
            assert (batch["segment"] == -1).all() and b <= 8
            seen_rows.append(rows)
            offsets.append(start)
    rows, offsets = np.concatenate(seen_rows), np.concatenate(offsets)
    train = sorted(set(np.flatnonzero(FOLDS < 18)) - {2})
    assert sorted(set(rows)) == train and len(rows) == 5 * len(train)  # each row once per epoch
    assert len(np.unique(offsets)) > 50  # crops cover many offsets
    assert offsets.min() < 100 and offsets.max() > 650


def test_training_order_is_seeded_and_independent_of_workers(cohort):
    def first_epoch(workers, seed):
        dm = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=8, seed=seed, num_workers=workers))
        return [(b["row"].numpy().copy(), decode(b["ecg"])[1]) for b in dm.train_dataloader()]

    a, b, c = first_epoch(0, 1), first_epoch(2, 1), first_epoch(0, 2)
    assert all((ra == rb).all() and (oa == ob).all() for (ra, oa), (rb, ob) in zip(a, b))
    assert not all(len(ra) == len(rc) and (ra == rc).all() and (oa == oc).all()
                   for (ra, oa), (rc, oc) in zip(a, c))


def test_validation_items_are_the_four_segments_of_each_ecg(cohort):
    dm = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=6))
    batches = list(dm.val_dataloader())
    rows = np.concatenate([b["row"].numpy() for b in batches])
    seg = np.concatenate([b["segment"].numpy() for b in batches])
    starts = np.concatenate([decode(b["ecg"])[1] for b in batches])
    val = [r for r in np.flatnonzero(FOLDS == 18) if r != 30]
    assert rows.tolist() == np.repeat(val, 4).tolist()
    assert seg.tolist() == [0, 1, 2, 3] * len(val)
    assert starts.tolist() == [0, 250, 500, 750] * len(val)
    test_rows = np.concatenate([b["row"].numpy() for b in dm.test_dataloader()])
    assert sorted(set(test_rows)) == [r for r in np.flatnonzero(FOLDS == 19) if r != 36]


def test_batches_carry_targets_mask_and_tabular(cohort):
    frame = pd.read_parquet(cohort / "cohort.parquet")
    dm = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=8, targets=(TARGETS[2], TARGETS[0])))
    assert dm.target_names == (TARGETS[2], TARGETS[0]) and dm.n_targets == 2
    assert dm.n_tabular == len(TABULAR_FEATURES)
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"ecg", "tabular", "y", "mask", "row", "segment", "start"}
    np.testing.assert_array_equal(batch["start"].numpy(), decode(batch["ecg"])[1])
    rows = batch["row"].numpy()
    assert batch["row"].dtype == torch.int64 and batch["segment"].dtype == torch.int64
    truth = frame.loc[rows, [TARGETS[2], TARGETS[0]]].to_numpy(dtype=np.float64, na_value=np.nan)
    np.testing.assert_array_equal(batch["mask"].numpy(), ~np.isnan(truth))
    np.testing.assert_array_equal(batch["y"].numpy(), np.nan_to_num(truth))
    assert batch["tabular"].shape == (8, dm.n_tabular) and batch["tabular"].dtype == torch.float32
    col = {n: i for i, n in enumerate(TABULAR_FEATURES)}
    np.testing.assert_array_equal(batch["tabular"][:, col["sex"]].numpy(), frame.loc[rows, "sex"])
    with pytest.raises(KeyError, match="unknown targets"):
        LabDataModule(DataConfig(cohort_dir=cohort, targets=("nope_high_est",)))


def test_ecg_is_normalized_with_the_stored_statistics(cohort):
    mean = np.arange(12) * 2.0
    std = np.arange(1, 13) * 0.5
    (cohort / "signals_stats.json").write_text(json.dumps({"mean_mv": mean.tolist(), "std_mv": std.tolist()}))
    dm = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=4))
    batch = next(iter(dm.val_dataloader()))
    raw = np.load(cohort / "signals.npy")[batch["row"].numpy()][:, :250]  # segment 0 of each
    np.testing.assert_allclose(batch["ecg"][batch["segment"] == 0].numpy(),
                               ((raw - mean) / std)[batch["segment"].numpy() == 0], rtol=1e-6)


def test_manifest_that_does_not_match_the_cohort_is_refused(cohort):
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    manifest.loc[7, "study_id"] = 1
    manifest.to_parquet(cohort / "signals_manifest.parquet", index=False)
    dm = LabDataModule(DataConfig(cohort_dir=cohort))
    with pytest.raises(ValueError, match="row 7"):
        dm.setup()


def test_average_segments_groups_the_four_segments_of_each_ecg():
    row = np.array([5, 5, 9, 5, 9, 9, 5, 9, 2, 2, 2, 2])
    prob = np.array([[0.1, 0.9], [0.3, 0.7], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6],
                     [0.7, 0.3], [0.6, 0.4], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    rows, mean = average_segments(row, prob)
    assert rows.tolist() == [2, 5, 9]
    np.testing.assert_allclose(mean, [[0.5, 0.5], [0.4, 0.6], [0.3, 0.7]])


def test_config_rejects_overlapping_folds(tmp_path):
    with pytest.raises(ValueError, match="overlap"):
        DataConfig(cohort_dir=tmp_path, val_fold=3)
    with pytest.raises(ValueError, match="batch_size"):
        DataConfig(cohort_dir=tmp_path, batch_size=0)


def test_data_module_fits_tabular_on_ok_training_rows_only(cohort):
    frame = pd.read_parquet(cohort / "cohort.parquet")
    frame.loc[FOLDS >= 18, "weight"] = 5000.0  # extreme values only in validation/test rows
    frame.loc[2, "weight"] = -5000.0  # a training row whose signal failed: not trained on
    frame.to_parquet(cohort / "cohort.parquet", index=False)
    dm = LabDataModule(DataConfig(cohort_dir=cohort))
    dm.setup()
    used = [r for r in range(N) if FOLDS[r] < 18 and r != 2]
    w = frame.loc[used, "weight"].to_numpy()
    assert dm.tabular_stats.median["weight"] == pytest.approx(np.median(w))
    assert dm.tabular_stats.mean["weight"] == pytest.approx(w.mean())
    assert dm.tabular_stats.std["weight"] == pytest.approx(w.std())
    assert dm.tabular_stats.n_rows == len(used)


def test_constant_training_column_does_not_blow_up_other_rows():
    # 37 copies of 98.6 have a float std of ~1.4e-14; a value of 99.0 elsewhere must stay O(1)
    frame = pd.DataFrame({"sex": [1.0] * 38, "age": [60.0] * 38, "race": ["white"] * 38,
                          "temperature": [98.6] * 37 + [99.0]})
    for name in ("heartrate", "resprate", "o2sat", "sbp", "dbp", "bmi", "weight", "height"):
        frame[name] = np.nan
    stats = fit_tabular(frame, np.arange(37))
    x = transform_tabular(frame, stats)
    assert np.all(np.abs(x) < 10), np.abs(x).max()


# ---------------------------------------------------------------------------- data parallelism

def test_ranks_train_on_disjoint_equal_shares_of_each_epoch(cohort):
    from labecg.data import TrainCrops

    train = np.array(sorted(set(np.flatnonzero(FOLDS < 18)) - {2}))  # 27 rows
    for world in (2, 4):
        samplers = [TrainCrops(train, 4, 1000, 250, seed=5, rank=r, world_size=world) for r in range(world)]
        for epoch in (0, 1):
            shares = []
            for s in samplers:
                s.set_epoch(epoch)
                plans = list(s)
                assert len(plans) == len(s)
                shares.append(np.concatenate([rows for rows, _, _ in plans]))
            # equal sizes (equal step counts), no row twice, no row on two ranks
            assert {len(x) for x in shares} == {len(train) // world}
            union = np.concatenate(shares)
            assert len(set(union.tolist())) == len(union) and set(union.tolist()) <= set(train.tolist())
        # the same seed and world size give the same shares again
        samplers[0].set_epoch(1)
        again = TrainCrops(train, 4, 1000, 250, seed=5, rank=0, world_size=world)
        again.set_epoch(1)
        assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(samplers[0], again))
    # one rank of world size 1 is the single-process order
    single = TrainCrops(train, 4, 1000, 250, seed=5)
    assert [p[0].tolist() for p in single] == [p[0].tolist() for p in
                                               TrainCrops(train, 4, 1000, 250, seed=5, rank=0, world_size=1)]
    with pytest.raises(ValueError, match="rank"):
        TrainCrops(train, 4, 1000, 250, seed=5, rank=2, world_size=2)


def test_evaluation_shares_cover_each_ecg_once_with_marked_padding(cohort):
    from labecg.data import Segments

    dm = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=3))
    dm.setup()
    val = dm.rows["val"]  # 5 ECGs
    for world in (1, 2, 3, 4):
        counts = []
        items = []
        for r in range(world):
            s = Segments(val, 3, 1000, 250, rank=r, world_size=world)
            batches = [dm.dataset[p] for p in s]
            counts.append(len(batches))
            rows = np.concatenate([b["row"] for b in batches])
            pad = rows < 0
            assert (np.concatenate([b["mask"] for b in batches])[pad] == 0).all()
            items.append(rows[~pad])
        assert len(set(counts)) == 1  # every rank runs the same number of batches
        rows, n = np.unique(np.concatenate(items), return_counts=True)
        assert rows.tolist() == sorted(val.tolist()) and (n == 4).all()


def test_mlp_trains_when_the_last_batch_would_hold_one_ecg(cohort, tmp_path):
    """27 ok training rows at batch 13: 13 + 13 + 1 would leave BatchNorm one sample."""
    from labecg.train import TrainConfig, train

    dm = LabDataModule(DataConfig(cohort_dir=cohort, batch_size=13))
    dm.setup()
    assert len(dm.rows["train"]) == 27
    batches = list(dm.train_dataloader())
    assert [len(b["row"]) for b in batches] == [13, 14]
    assert sorted(np.concatenate([b["row"].numpy() for b in batches])) == sorted(dm.rows["train"])
    train(TrainConfig(cohort_dir=cohort, run_dir=tmp_path / "run", variant="tabular", tabular_encoder="mlp",
                      batch_size=13, epochs=1, accelerator="cpu"))
    assert (tmp_path / "run" / "predictions_test.npz").exists()


def test_targets_are_recounted_over_the_ecgs_with_signal(cohort):
    """Rows 30 (validation) and 36 (test) failed: counts and the >= min_per_class rule use the rest."""
    frame = pd.read_parquet(cohort / "cohort.parquet")
    #                             validation rows 28-33      test rows 34-39
    frame["potassium_high_est"] = [0.0] * 28 + [0, 1, 1, 0, 0, np.nan] + [1, 1, 0, 0, 0, 1]
    frame["sodium_low_est"] = [1.0] * 28 + [1, 1, 0, 0, 0, 1] + [1, 1, 0, 0, 0, 1]
    frame["potassium_high_mon30"] = [0.0] * 28 + [0, 0, 1, 1, 1, 0] + [0, 1, 1, 1, np.nan, 0]
    frame.to_parquet(cohort / "cohort.parquet", index=False)
    (cohort / "targets.json").write_text(json.dumps(
        {"version": 1, "config": {"min_per_class": 2},
         "targets": [{"name": t, "counts": "as the cohort counted"} for t in TARGETS]}))
    dm = LabDataModule(DataConfig(cohort_dir=cohort))
    dm.setup()
    # potassium_high_est: validation positives 29, 30 -> only 29 remains: 1 < 2, dropped
    assert dm.target_names == ("sodium_low_est", "potassium_high_mon30")
    assert dm.n_targets == 2 and dm.y_true.shape == (N, 2)
    sodium = dm.targets[0]
    assert sodium["counts"]["val"] == {"pos": 3, "neg": 2}  # row 30 (a 0) left out
    assert sodium["counts"]["test"] == {"pos": 3, "neg": 2}  # row 36 (a 0) left out
    assert sodium["counts"]["train"] == {"pos": 27, "neg": 0}  # row 2 left out
    assert dm.targets[1]["counts"]["val"] == {"pos": 2, "neg": 3}  # row 30 (a 1) left out
    assert dm.targets[1]["counts"]["test"] == {"pos": 2, "neg": 2}  # row 36 (a 1) out, row 38 missing
    assert [t["name"] for t in dm.targets_json()["targets"]] == list(dm.target_names)
