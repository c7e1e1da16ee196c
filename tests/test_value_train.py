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
