"""The value target kind (issue #25): Spearman against scipy, its losses by hand, the value scales against numpy and
scipy's skewness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from labecg import targets
from labecg.metrics import spearman
from labecg.targets import VALUE, fit_value_scales, standardize_values, unstandardize_values


def test_spearman_equals_scipy_on_observed_pairs():
    rng = np.random.default_rng(0)
    n, t = 200, 6
    y = np.round(rng.normal(size=(n, t)), 1)  # rounded: ties in the values
    score = np.round(0.5 * y + rng.normal(size=(n, t)), 1)
    y[rng.random((n, t)) < 0.3] = np.nan
    got = spearman(y, score)
    for j in range(t):
        seen = ~np.isnan(y[:, j])
        assert got[j] == pytest.approx(stats.spearmanr(y[seen, j], score[seen, j]).statistic, abs=1e-12)
    assert spearman(y[:, 0], score[:, 0]) == pytest.approx(got[0])


def test_spearman_is_undefined_without_two_pairs_or_with_a_constant_side():
    y = np.array([[1.0, 1.0, np.nan], [2.0, 1.0, np.nan], [3.0, 1.0, 4.0]])
    score = np.array([[3.0, 1.0, 0.0], [2.0, 2.0, 0.0], [1.0, 3.0, 1.0]])
    got = spearman(y, score)
    assert got[0] == -1.0 and np.isnan(got[1]) and np.isnan(got[2])


def test_value_losses_by_hand():
    torch = pytest.importorskip("torch")
    from labecg.train import masked_loss

    outputs = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 2.0], [1.0, float("nan")]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # target 0: ((1 - 0)^2 + (3 - 1)^2) / 2 = 2.5; target 1: (2 - 2)^2 = 0; mean 1.25
    assert masked_loss(outputs, y, mask, loss="mse", target_kind=VALUE).item() == pytest.approx(1.25)
    # Huber, delta 1: errors 1 -> 0.5, 2 -> 1.5, 0 -> 0: target 0 (0.5 + 1.5) / 2 = 1, target 1 0; mean 0.5
    assert masked_loss(outputs, y, mask, loss="huber", target_kind=VALUE).item() == pytest.approx(0.5)
    assert VALUE.output(outputs).equal(outputs) and VALUE.chance == 0.0 and targets.KINDS["value"] is VALUE
    with pytest.raises(ValueError, match="loss"):
        masked_loss(outputs, y, mask, loss="bce", target_kind=VALUE)


def test_value_scales_log_where_skewed():
    rng = np.random.default_rng(1)
    n = 500
    lognormal = np.exp(rng.normal(1.0, 1.0, n))      # skewed, positive: log scale
    normal = rng.normal(140.0, 4.0, n)               # symmetric: linear
    shifted = rng.normal(0.0, 1.0, n) ** 3           # skewed but not all positive: linear
    values = np.stack([lognormal, normal, shifted, np.full(n, np.nan)], axis=1)
    values[:, :3][rng.random((n, 3)) < 0.2] = np.nan  # a view: sets the values
    names = ["ntprobnp_value_est", "sodium_value_est", "x_value_mon30", "empty_value_mon60"]
    scales = fit_value_scales(values, names)
    assert list(scales.index) == names and list(scales["log"]) == [True, False, False, False]
    for j, name in enumerate(names[:3]):
        x = values[~np.isnan(values[:, j]), j]
        assert scales.loc[name, "skewness"] == pytest.approx(stats.skew(x))
        z = np.log(x) if scales.loc[name, "log"] else x
        assert scales.loc[name, "center"] == pytest.approx(z.mean()) and scales.loc[name, "scale"] == pytest.approx(
            z.std())
        assert scales.loc[name, "n"] == len(x)
    assert tuple(scales.loc["empty_value_mon60", ["center", "scale", "n"]]) == (0.0, 1.0, 0)
    z = standardize_values(values, scales)
    observed = ~np.isnan(values)
    assert (np.isnan(z) == ~observed).all()
    np.testing.assert_allclose(np.nanmean(z[:, :3], axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(z[:, :3], axis=0), 1.0)
    np.testing.assert_allclose(unstandardize_values(z, scales)[observed], values[observed], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="values must be"):
        fit_value_scales(values[:, :2], names)


def test_value_scales_by_hand():
    # 1, 10, 100: skewness 0.69 (below 1): linear, center 37, scale sqrt(((36^2 + 27^2 + 63^2) / 3)) = 44.5
    scales = fit_value_scales(np.array([[1.0], [10.0], [100.0]]), ["a_value_est"])
    assert not scales.loc["a_value_est", "log"]
    assert scales.loc["a_value_est", "center"] == 37.0
    assert scales.loc["a_value_est", "scale"] == pytest.approx(np.sqrt((36 ** 2 + 27 ** 2 + 63 ** 2) / 3))
    # skewness 1.42 > 1, but a value near 0 makes the logs' -1.70, larger in size: linear
    x = np.array([[0.01], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [6.0], [6.0]])
    assert stats.skew(x[:, 0]) > 1 and abs(stats.skew(np.log(x[:, 0]))) > stats.skew(x[:, 0])
    assert not fit_value_scales(x, ["b"]).loc["b", "log"]
    frame = pd.DataFrame({"log": [True], "center": [0.0], "scale": [1.0]}, index=["c"])
    np.testing.assert_allclose(standardize_values([[np.e]], frame), [[1.0]])


def test_value_bootstrap_against_scipy_on_the_same_resamples():
    from labecg.metrics import resample_weights
    from labecg.stats import value_bootstrap

    rng = np.random.default_rng(2)
    n, t = 80, 3
    y = rng.normal(size=(n, t))
    pred = y + rng.normal(size=(n, t))
    y[rng.random((n, t)) < 0.25] = np.nan
    patient = rng.integers(0, 30, n)
    out = value_bootstrap(y, pred, 50, seed=3, groups=patient, target_names=["a", "b", "c"])
    per = np.full((50, t), np.nan)
    for i, w in enumerate(resample_weights(n, 50, 3, patient)):
        rows = np.repeat(np.arange(n), w.astype(int))
        for j in range(t):
            ok = ~np.isnan(y[rows, j])
            per[i, j] = stats.spearmanr(y[rows, j][ok], pred[rows, j][ok]).statistic
    np.testing.assert_allclose(out[["low", "high"]].to_numpy(), np.percentile(per, [2.5, 97.5], axis=0).T,
                               rtol=1e-12)
    for j, name in enumerate("abc"):
        ok = ~np.isnan(y[:, j])
        assert out.loc[name, "n"] == ok.sum()
        assert out.loc[name, "mae"] == pytest.approx(np.abs(pred[ok, j] - y[ok, j]).mean())
        assert out.loc[name, "spearman"] == pytest.approx(stats.spearmanr(y[ok, j], pred[ok, j]).statistic)
    assert (out["n_skipped"] == 0).all()


def test_value_bootstrap_by_hand_and_per_patient():
    from labecg.stats import value_bootstrap

    y = np.array([[1.0], [2.0], [np.nan], [4.0]])
    pred = np.array([[1.5], [1.0], [9.0], [5.0]])
    out = value_bootstrap(y, pred, 20)
    # |0.5|, |-1|, |1| over the three measured: 2.5 / 3; ranks (1, 2, 3) against (2, 1, 3): 0.5
    assert out.loc[0, "mae"] == pytest.approx(2.5 / 3) and out.loc[0, "spearman"] == pytest.approx(0.5)
    # each patient's ECGs copied three times: the patient-level interval does not move
    rng = np.random.default_rng(4)
    yy, pp, patient = rng.normal(size=(40, 1)), rng.normal(size=(40, 1)), np.arange(40)
    once = value_bootstrap(yy, pp + yy, 100, groups=patient)
    thrice = value_bootstrap(np.tile(yy, (3, 1)), np.tile(pp + yy, (3, 1)), 100, groups=np.tile(patient, 3))
    np.testing.assert_allclose(once[["low", "high"]], thrice[["low", "high"]])
