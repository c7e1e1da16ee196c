"""``labecg train --objective value`` (#25): scales on the training folds, predictions in the lab's unit.

Every check recomputes independently: the scales with numpy and ``scipy.stats.skew`` on the
training rows read straight from ``cohort.parquet``; the predictions by running the best
checkpoint's network on the test segments and undoing the scales by hand.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import skew

from conftest import TINY_RUN
from labecg import layout
from labecg.data import DataConfig, LabDataModule, TabularStats, cut_segments, transform_tabular
from labecg.model import FusionModel, ModelConfig
from labecg.signals import load_signals
from labecg.train import TrainConfig, train


#: A value column made log-normal in the copy of the shared cohort, so that the log path is trained.
SKEWED = "glucose_value_est"


@pytest.fixture(scope="module")
def value_cohort(signals_dir, tmp_path_factory):
    """The shared cohort with signals, its ``SKEWED`` column replaced by exp(1.5 z) of its own z-scores."""
    out = tmp_path_factory.mktemp("value_cohort") / "cohort"
    shutil.copytree(signals_dir, out)
    frame = pd.read_parquet(out / layout.COHORT)
    v = frame[SKEWED]
    frame[SKEWED] = np.exp(1.5 * (v - v.mean()) / v.std())
    frame.to_parquet(out / layout.COHORT, index=False)
    return out


@pytest.fixture(scope="module")
def value_run(value_cohort, tmp_path_factory):
    cfg = TrainConfig(cohort_dir=value_cohort, run_dir=tmp_path_factory.mktemp("value_run") / "run",
                      accelerator="cpu", objective="value", **{**TINY_RUN, "epochs": 2})
    return train(cfg)


def _evaluated_rows(cohort_dir):
    """Cohort rows with a converted signal, by split (from the files, not the data module)."""
    frame = pd.read_parquet(cohort_dir / layout.COHORT)
    manifest = pd.read_parquet(cohort_dir / layout.SIGNALS_MANIFEST)
    ok = manifest["status"].eq("ok").to_numpy()
    fold = frame["fold"].to_numpy()
    return frame, {"train": np.flatnonzero(np.isin(fold, layout.TRAIN_FOLDS) & ok),
                   "val": np.flatnonzero((fold == layout.VAL_FOLD) & ok),
                   "test": np.flatnonzero((fold == layout.TEST_FOLD) & ok)}


def _hand_scale(x):
    """(log, center, scale) of one column's training values, from the rule of targets.SKEWNESS_FOR_LOG."""
    x = x[~np.isnan(x)]
    s = skew(x)
    log = bool((x > 0).all() and s > 1.0 and abs(skew(np.log(x))) < abs(s))
    z = np.log(x) if log else x
    return log, z.mean(), (z.std() if z.std() > 0 else 1.0)


def test_value_data_standardises_on_training_rows_only(value_cohort):
    signals_dir = value_cohort
    frame, rows = _evaluated_rows(signals_dir)
    dm = LabDataModule(DataConfig(cohort_dir=signals_dir, objective="value"))
    dm.setup()
    spec = json.loads((signals_dir / layout.TARGETS).read_text())
    assert set(dm.target_names) <= {v["name"] for v in spec["values"]} and len(dm.target_names) >= 4
    assert dm.value_scales.loc[SKEWED, "log"] and not dm.value_scales["log"].all()
    for j, name in enumerate(dm.target_names):
        raw = frame[name].to_numpy(float)
        log, center, scale = _hand_scale(raw[rows["train"]])
        assert dm.value_scales.loc[name, "log"] == log, name
        np.testing.assert_allclose([dm.value_scales.loc[name, "center"], dm.value_scales.loc[name, "scale"]],
                                   [center, scale], rtol=1e-10)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = ((np.log(raw) if log else raw) - center) / scale
        observed = np.isfinite(z)
        np.testing.assert_array_equal(dm.dataset.mask[:, j], observed.astype(np.float32))
        np.testing.assert_allclose(dm.dataset.y[observed, j], z[observed], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(dm.y_true[:, j], raw.astype(np.float32))  # the lab's unit
        for split in ("train", "val", "test"):
            assert dm.targets_json()["values"][j]["counts"][split]["n"] == int(np.isfinite(raw[rows[split]]).sum())
    # a validation or test value moves no scale
    changed = frame.copy()
    name = dm.target_names[0]
    changed.loc[changed.index[rows["test"]], name] = 1e6
    changed.to_parquet(signals_dir / "cohort_changed.parquet")
    raw = changed[name].to_numpy(float)
    assert _hand_scale(raw[rows["train"]])[1] == pytest.approx(dm.value_scales.loc[name, "center"], rel=1e-10)
    (signals_dir / "cohort_changed.parquet").unlink()


def test_setup_reads_only_the_columns_it_needs(signals_dir, monkeypatch):
    import labecg.data as data

    asked = []
    real = pd.read_parquet

    def spy(path, *a, **kw):
        if str(path).endswith(layout.COHORT):
            asked.append(kw.get("columns"))
        return real(path, *a, **kw)

    monkeypatch.setattr(data.pd, "read_parquet", spy)
    dm = LabDataModule(DataConfig(cohort_dir=signals_dir))
    dm.setup()
    assert asked and asked[0] is not None
    assert not [c for c in asked[0] if "_value_" in c], "a flag run reads no value column"
    assert len(asked[0]) < len(pd.read_parquet(signals_dir / layout.COHORT).columns)


def test_value_run_predicts_each_value_in_the_labs_unit(value_run, value_cohort):
    run, signals_dir = value_run, value_cohort
    frame, rows = _evaluated_rows(signals_dir)
    config = json.loads((run / layout.CONFIG).read_text())
    assert config["train"]["objective"] == "value" and config["data"]["objective"] == "value"
    scales = json.loads((run / layout.VALUE_SCALES).read_text())["columns"]
    names = [c["name"] for c in scales]
    assert any(c["log"] for c in scales if c["name"] == SKEWED)
    # the scales stored are those of the training rows
    for c in scales:
        log, center, scale = _hand_scale(frame[c["name"]].to_numpy(float)[rows["train"]])
        assert c["log"] == log and c["center"] == pytest.approx(center, rel=1e-10) and \
            c["scale"] == pytest.approx(scale, rel=1e-10)
    pred = np.load(run / "predictions_test.npz")
    assert list(pred["target_names"]) == names
    np.testing.assert_array_equal(pred["study_id"], frame["study_id"].to_numpy()[rows["test"]])
    np.testing.assert_array_equal(pred["y_true"], frame[names].to_numpy(np.float32)[rows["test"]])
    targets = json.loads((run / layout.TARGETS).read_text())
    assert targets["objective"] == "value" and [v["name"] for v in targets["values"]] == names
    assert list(pred["flag_names"]) == [t["name"] for t in targets["targets"]]
    np.testing.assert_array_equal(pred["flag_true"], frame[list(pred["flag_names"])].to_numpy(np.float32)[rows["test"]])
    # the best checkpoint's network on the four test segments, averaged, scales undone by hand
    inference = json.loads((run / layout.INFERENCE).read_text())
    state = torch.load(layout.checkpoint_path(run, "best"), map_location="cpu", weights_only=True)["state_dict"]
    model = FusionModel(ModelConfig(**config["model"]))
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    x, _ = load_signals(signals_dir)
    tab = inference["tabular"]
    tabular = transform_tabular(frame.iloc[rows["test"]], TabularStats(tab["median"], tab["mean"], tab["std"],
                                                                       tab["n_rows"]))
    crop = inference["crop_samples"]
    stats = inference["signal_stats"]
    outs = []
    with torch.no_grad():
        for k in range(x.shape[1] // crop):
            ecg = cut_segments(x, rows["test"], np.full(len(rows["test"]), k * crop), crop, np.array(stats["mean_mv"]),
                               np.array(stats["std_mv"]))
            outs.append(model(torch.from_numpy(ecg), torch.from_numpy(tabular)).numpy().astype(np.float64))
    z = np.mean(outs, axis=0)
    expected = np.empty_like(z)
    for j, c in enumerate(scales):
        v = z[:, j] * c["scale"] + c["center"]
        expected[:, j] = np.exp(v) if c["log"] else v
    np.testing.assert_allclose(pred["y_score"], expected.astype(np.float32), rtol=2e-4, atol=1e-5)
    # selection: the lowest validation loss; the metrics carry the macro Spearman
    metrics = pd.read_csv(run / layout.METRICS)
    assert list(metrics.columns) == ["epoch", "train_loss", "val_loss", "val_macro_spearman"]
    info = json.loads((run / layout.RUN_INFO).read_text())
    assert info["best_val_loss"] == pytest.approx(metrics["val_loss"].min(), rel=1e-6)


def test_predict_and_explain_refuse_a_value_run(value_run):
    from labecg.explain import ExplainConfig, explain_run
    from labecg.predict import predict_record

    with pytest.raises(ValueError, match="objective value"):
        predict_record(value_run, value_run / "no_record")
    with pytest.raises(ValueError, match="objective value"):
        explain_run(ExplainConfig(run_dir=value_run))


def test_objective_settings_are_checked(signals_dir, tmp_path):
    with pytest.raises(ValueError, match="value-loss"):
        TrainConfig(cohort_dir=signals_dir, run_dir=tmp_path / "r", objective="value", loss="focal")
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(cohort_dir=signals_dir, run_dir=tmp_path / "r", objective="ordinal")
    with pytest.raises(ValueError, match="objective"):
        DataConfig(cohort_dir=signals_dir, objective="values")
    from labecg.cli import config_from_args

    cfg = config_from_args(TrainConfig, ["--cohort-dir", str(signals_dir), "--run-dir", str(tmp_path / "r"),
                                         "--objective", "value", "--value-loss", "huber"])
    assert (cfg.objective, cfg.value_loss) == ("value", "huber")
    default = config_from_args(TrainConfig, ["--cohort-dir", str(signals_dir), "--run-dir", str(tmp_path / "r")])
    assert (default.objective, default.loss) == ("flag", "bce")


# ---------------------------------------------------------------------------- evaluation: values.csv


def _draws(subject, n_iterations, seed):
    """The patient resamples as metrics.resample_weights documents them, drawn again here: row indices."""
    ids, codes = np.unique(subject, return_inverse=True)
    rng = np.random.default_rng(seed)
    for _ in range(n_iterations):
        count = np.bincount(rng.integers(0, len(ids), size=len(ids)), minlength=len(ids))
        yield np.repeat(np.arange(len(subject)), count[codes])


def _hand_pred():
    """Ten ECGs of five patients: potassium (est, mon30) values and flags, a sodium flag without a value."""
    subject = np.array([1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    true_est = np.array([3.0, 4.0, 5.0, np.nan, 6.0, 3.5, 4.5, 5.5, 2.5, 4.2])
    pred_est = np.array([3.5, 4.0, 4.0, 4.4, 5.0, 3.0, 4.8, 5.0, 3.0, 4.0])
    true_mon = np.array([np.nan, 4.1, 5.2, 3.3, np.nan, 3.9, 4.4, np.nan, 2.9, 4.0])
    pred_mon = np.array([3.2, 4.3, 4.6, 3.9, 5.1, 3.6, 4.5, 4.7, 3.4, 4.1])
    flag_names = ["potassium_low_est", "potassium_high_est", "potassium_high_mon30", "sodium_low_est"]
    flag_true = np.array([[1, 0, np.nan, 0], [0, 0, 0, 1], [0, 1, 1, 0], [np.nan, np.nan, 0, 0], [0, 1, np.nan, 1],
                          [1, 0, 0, 0], [0, 0, 0, 1], [0, 1, np.nan, 0], [1, 0, 0, 1], [0, 0, 1, 0]])
    flag_score = np.array([[.7, .2, .4, .1], [.3, .4, .2, .6], [.2, .6, .7, .3], [.5, .5, .5, .2], [.1, .9, .6, .5],
                           [.6, .1, .3, .4], [.4, .3, .2, .8], [.3, .5, .4, .1], [.8, .2, .1, .7], [.2, .3, .6, .2]])
    pred = {"study_id": np.arange(100, 110), "target_names": np.array(["potassium_value_est", "potassium_value_mon30"]),
            "y_true": np.column_stack([true_est, true_mon]).astype(np.float32),
            "y_score": np.column_stack([pred_est, pred_mon]).astype(np.float32), "subject_id": subject,
            "flag_names": np.array(flag_names), "flag_true": flag_true.astype(np.float32)}
    values = [{"name": "potassium_value_est", "lab": "potassium", "task": "est", "unit": "mEq/L"},
              {"name": "potassium_value_mon30", "lab": "potassium", "task": "mon30", "unit": "mEq/L"}]
    # the flag run lists its ECGs in another order and has one more
    order = np.array([3, 0, 9, 1, 8, 2, 7, 4, 6, 5])
    flag_pred = {"study_id": np.append(pred["study_id"][order], 999), "target_names": np.array(flag_names[::-1]),
                 "y_score": np.vstack([flag_score[order][:, ::-1], np.full((1, 4), 0.5)]).astype(np.float32)}
    return pred, values, flag_pred, flag_score


def test_values_csv_by_hand_and_against_scipy_and_sklearn():
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from labecg.evaluate import VALUE_COLUMNS, value_results

    pred, values, flag_pred, flag_score = _hand_pred()
    frame = value_results(pred, values, flag_pred, n_iterations=50, seed=4).set_index("name")
    assert list(value_results(pred, values, n_iterations=5).columns) == VALUE_COLUMNS
    est, mon = frame.loc["potassium_value_est"], frame.loc["potassium_value_mon30"]
    # MAE by hand: |0.5| + 0 + 1 + 1 + 0.5 + 0.3 + 0.5 + 0.5 + 0.2 over 9 measured values
    assert est["mae"] == pytest.approx(4.5 / 9, abs=1e-6) and est["n"] == 9 and est["n_patients"] == 5
    # |4.3-4.1| + |4.6-5.2| + |3.9-3.3| + |3.6-3.9| + |4.5-4.4| + |3.4-2.9| + |4.1-4.0| over 7
    assert mon["mae"] == pytest.approx(2.4 / 7, abs=1e-6) and mon["n"] == 7 and mon["unit"] == "mEq/L"
    subject = pred["subject_id"]
    for j, name in enumerate(pred["target_names"]):
        t, p = pred["y_true"][:, j].astype(float), pred["y_score"][:, j].astype(float)
        seen = ~np.isnan(t)
        assert frame.loc[name, "spearman"] == pytest.approx(spearmanr(t[seen], p[seen]).statistic, abs=1e-9)
        boot = []
        for rows in _draws(subject, 50, 4):
            r = rows[seen[rows]]
            boot.append(spearmanr(t[r], p[r]).statistic if len(np.unique(t[r])) > 1 and len(np.unique(p[r])) > 1
                        else np.nan)
        low, high = np.nanpercentile(boot, [2.5, 97.5])
        assert (frame.loc[name, "low"], frame.loc[name, "high"]) == pytest.approx((low, high), abs=1e-9)
    # the value as the flag's score: + for high, - for low; the flag run's own AUROC; the paired difference
    assert (est["low_target"], est["high_target"], mon["low_target"], mon["high_target"]) == \
        ("potassium_low_est", "potassium_high_est", "", "potassium_high_mon30")
    for row, direction, flag, j, f in ((est, "low", "potassium_low_est", 0, 0), (est, "high", "potassium_high_est", 0, 1),
                                       (mon, "high", "potassium_high_mon30", 1, 2)):
        assert str(pred["flag_names"][f]) == flag == row[f"{direction}_target"]
        y = pred["flag_true"][:, f].astype(float)
        seen = ~np.isnan(y)
        value = pred["y_score"][:, j].astype(float) * (1 if direction == "high" else -1)
        auc_value = roc_auc_score(y[seen], value[seen])
        auc_flag = roc_auc_score(y[seen], flag_score[seen, f].astype(np.float32))
        assert row[f"{direction}_auroc_value"] == pytest.approx(auc_value, abs=1e-9)
        assert row[f"{direction}_auroc_flag"] == pytest.approx(auc_flag, abs=1e-6)
        assert row[f"{direction}_difference"] == pytest.approx(auc_value - auc_flag, abs=1e-6)
        diffs = []
        for rows in _draws(subject, 50, 4):
            r = rows[seen[rows]]
            if len(np.unique(y[r])) == 2:
                diffs.append(roc_auc_score(y[r], value[r]) - roc_auc_score(y[r], flag_score[r, f].astype(np.float32)))
        low, high = np.percentile(diffs, [2.5, 97.5])
        assert (row[f"{direction}_difference_low"], row[f"{direction}_difference_high"]) == \
            pytest.approx((low, high), abs=1e-6)
    assert np.isnan(mon["low_auroc_value"]) and mon["low_target"] == ""
    # without a flag run: the value's AUROC alone
    alone = value_results(pred, values, None, n_iterations=20, seed=4).set_index("name")
    assert alone.loc["potassium_value_est", "high_auroc_value"] == pytest.approx(est["high_auroc_value"])
    assert alone[["high_auroc_flag", "high_difference"]].isna().all().all()
    # a flag run of other ECGs is refused by name
    other = dict(flag_pred, study_id=flag_pred["study_id"] + 1000)
    with pytest.raises(ValueError, match="study_id"):
        value_results(pred, values, other, n_iterations=5)


def test_evaluate_writes_values_csv_for_a_value_run(value_run, trained_run, tmp_path):
    from labecg.evaluate import EvaluateConfig, evaluate_run, read_values

    run = tmp_path / "value_run"
    shutil.copytree(value_run, run)
    out = evaluate_run(EvaluateConfig(run_dir=run, n_iterations=20, flag_run_dir=trained_run.path))
    frame = read_values(out / layout.VALUES)
    pred = np.load(run / "predictions_test.npz")
    assert list(frame["name"]) == list(pred["target_names"])
    assert not (out / layout.RESULTS).exists()
    j = 0
    t, p = pred["y_true"][:, j].astype(float), pred["y_score"][:, j].astype(float)
    seen = ~np.isnan(t)
    assert frame.loc[j, "mae"] == pytest.approx(np.abs(p[seen] - t[seen]).mean(), rel=1e-6)
    flags = frame[frame["high_target"] != ""]
    assert len(flags) and flags["high_auroc_flag"].notna().any()
    with pytest.raises(ValueError, match="flag run"):
        evaluate_run(EvaluateConfig(run_dir=trained_run.path, flag_run_dir=run))


def test_reproduce_commands_train_and_evaluate_the_value_run(value_run, trained_run):
    from labecg.cli import reproduce_commands

    lines = reproduce_commands([trained_run.path, value_run], {"run_dir": str(trained_run.path), "n_iterations": 20,
                                                                 "seed": 0})
    trains = [line for line in lines if line.startswith("labecg train")]
    evaluates = [line for line in lines if line.startswith("labecg evaluate")]
    assert "--objective" not in trains[0] and "--objective value" in trains[1]
    assert "--flag-run-dir" not in evaluates[0]
    assert f"--flag-run-dir {trained_run.path}" in evaluates[1] and f"--run-dir {value_run}" in evaluates[1]
