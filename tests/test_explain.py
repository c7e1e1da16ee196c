"""Attribution against hand-worked cases and the synthetic generator's own beat geometry."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.signal import resample_poly
from scipy.stats import spearmanr

from labecg import ecgsim, explain, layout, selfcheck
from labecg.planted import PLANTED_WINDOWS_S


class _Linear(torch.nn.Module):
    """f(ecg) = sum w * ecg + b per target: attributions known in closed form."""

    def __init__(self, L, C, T, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(T, L, C, generator=g))

    def forward(self, ecg, tabular):
        return torch.einsum("blc,tlc->bt", ecg, self.w) + 0.3


def test_integrated_gradients_of_a_linear_model_is_weight_times_input():
    model = _Linear(20, 3, 4)
    x = torch.randn(5, 20, 3, generator=torch.Generator().manual_seed(1))
    attr = explain.integrated_gradients(model, x, None, [1, 3], n_steps=3)
    expected = (model.w.detach()[[1, 3]][:, None] * x[None]).numpy()  # (K, B, L, C)
    np.testing.assert_allclose(attr, expected, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_completeness_on_the_fusion_model():
    from labecg.model import FusionModel, ModelConfig

    torch.manual_seed(0)
    model = FusionModel(ModelConfig(n_targets=3, n_tabular=4, d_model=8, n_layers=1, dropout=0.0)).eval()
    x, tab = torch.randn(2, 40, 12), torch.randn(2, 4)
    # the midpoint rule's error falls as 1/n_steps^2: 16 steps reach 4e-4 here (128: 2e-4, the
    # float32 floor) at an eighth of the cost; 4 steps miss by 6e-3, so the check can fail
    attr = explain.integrated_gradients(model, x, tab, [0, 2], n_steps=16)
    with torch.no_grad():
        gap = (model(x, tab) - model(torch.zeros_like(x), tab))[:, [0, 2]].T.numpy()  # (K, B)
    np.testing.assert_allclose(attr.sum(axis=(2, 3)), gap, rtol=0.02, atol=1e-3)


def test_occlusion_of_a_linear_model_spreads_each_stretch_contribution():
    model = _Linear(10, 2, 2)
    x = torch.randn(3, 10, 2, generator=torch.Generator().manual_seed(2))
    attr = explain.occlusion(model, x, None, [0, 1], width=4)  # stretches 0-3, 4-7, 8-9
    contrib = (model.w.detach()[:, None] * x[None]).numpy()  # (K, B, L, C)
    for start, stop in ((0, 4), (4, 8), (8, 10)):
        stretch = contrib[:, :, start:stop].sum(axis=(2, 3))  # (K, B)
        np.testing.assert_allclose(attr[:, :, start:stop], np.broadcast_to(
            (stretch / ((stop - start) * 2))[:, :, None, None], attr[:, :, start:stop].shape), rtol=1e-5, atol=1e-6)


def _synthetic_beats(hr_bpm, seed, fs_hz=100):
    """Twelve leads from ecgsim's beat template placed at known R peaks, 10 s at 100 Hz."""
    rng = np.random.default_rng(seed)
    p = dict(hr_bpm=hr_bpm, af=False, qrs_ms=95.0, qt_ms=380.0, pr_ms=160.0, t_amp=0.9, t_width_s=0.055,
             r_amp=1.1, st_mv=0.0, axis_deg=rng.uniform(-20, 80))
    tmpl = ecgsim.beat_template(p)  # (3, W) at 500 Hz, R at 0.40 s
    rr = 60.0 / hr_bpm
    r_s = np.arange(0.3 + rng.uniform(0, 0.2), 10.0, rr)
    n = 5000
    w = tmpl.shape[1]
    dip = np.zeros((3, n + 2 * w))  # padded by a template on each side
    for r in r_s:
        i = w + int(round(r * 500)) - 200
        dip[:, i:i + w] += tmpl
    dip = dip[:, w:w + n]
    proj = rng.normal(size=(12, 3))
    sig = (proj @ dip).T + 0.02 * rng.normal(size=(n, 12))
    return resample_poly(sig, 1, 5, axis=0), np.round(r_s * fs_hz).astype(int)


@pytest.mark.parametrize("hr, seed", [(55, 0), (75, 1), (110, 2)])
def test_r_peaks_found_where_the_beats_were_placed(hr, seed):
    sig, truth = _synthetic_beats(hr, seed)
    found = explain.find_r_peaks(sig, 100.0)
    truth = truth[truth < sig.shape[0]]
    assert len(found) == len(truth)
    assert np.max(np.abs(found - truth)) <= 3  # 30 ms: the largest deflection may be the S wave


def test_beat_windows_and_window_fractions_by_hand():
    signal = np.arange(20, dtype=float)[:, None] * [1.0, -1.0]  # (20, 2)
    beats = explain.beat_windows(signal, [1, 6, 12, 19], before=2, after=3)
    np.testing.assert_array_equal(beats[:, :, 0], [[4, 5, 6, 7, 8], [10, 11, 12, 13, 14]])  # 1 and 19 do not fit
    attr = np.zeros((2, 5, 2))
    attr[0, 3] = 1.0  # all mass at t = +0.1 s
    attr[1] = 1.0  # spread
    time_s = np.arange(-2, 3) / 10
    frac = explain.window_fractions(attr, time_s, ["a", "b"], {"late": (0.05, 0.25)})
    assert list(frac["fraction"]) == [1.0, pytest.approx(0.4)] and list(frac["uniform"]) == [0.4, 0.4]


def test_planted_windows_hold_the_waves_of_the_generator():
    """The windows contain the wave the generator moves, over its range of rates and intervals."""
    for hr in (55, 75, 100):
        for qtc in (380, 415, 460):
            for k in (-2, 0, 2):
                qt = qtc * np.sqrt(60.0 / hr) ** 0.66
                bt = 0.055 * np.exp(-0.12 * k)
                qrs = 0.095
                t_peak = -qrs / 2 + qt / 1000 - 2.5 * bt
                windows = {label: (a, b) for label, (_, a, b) in PLANTED_WINDOWS_S.items()}
                if k >= 0:  # the explained potassium target is the high one: narrow, tall T waves
                    a, b = windows["Potassium"]
                    assert a <= t_peak - bt and t_peak + bt <= b, (hr, qtc, k)
                a, b = windows["Calcium, Total"]
                assert a <= qrs / 2 and t_peak + 2 * bt <= b, (hr, qtc, k)
                a, b = windows["Troponin T"]
                assert a <= (qrs / 2 + t_peak) / 2 <= b
    a, b = PLANTED_WINDOWS_S["NTproBNP"][1:]
    assert a <= -0.04 and 0.04 <= b  # R wave at 0, QRS about 90 ms


def test_default_targets_pick_planted_and_null_estimation_targets():
    names = ["potassium_high_est", "potassium_low_est", "calcium_total_low_est", "sodium_low_est", "ptt_high_est",
             "sodium_high_mon30", "troponin_t_high_mon60"]
    planted, null = explain.default_targets(names)
    assert planted == ["potassium_high_est", "calcium_total_low_est"]
    assert null == ["ptt_high_est", "sodium_low_est"]


def test_explain_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="method"):
        explain.ExplainConfig(run_dir=tmp_path, method="saliency")
    with pytest.raises(ValueError, match="n_ecgs"):
        explain.ExplainConfig(run_dir=tmp_path, n_ecgs=0)
    with pytest.raises(FileNotFoundError, match="config.json"):
        explain.explain_run(explain.ExplainConfig(run_dir=tmp_path))


def test_attribution_windows_roles_survive_a_default_read(tmp_path):
    """Issue 21, defect 4: role "null" came back from pd.read_csv as NaN."""
    attr = np.ones((3, 5, 2))
    time_s = np.arange(-2, 3) / 10
    targets = ["potassium_high_est", "sodium_low_est", "ptt_high_est"]
    frac = explain.label_windows(explain.window_fractions(attr, time_s, targets, {"T wave": (0.05, 0.25)}),
                                 null=["sodium_low_est", "ptt_high_est"])
    np.savez(tmp_path / layout.ATTRIBUTION, targets=np.array(targets))
    frac.to_csv(tmp_path / layout.ATTRIBUTION_WINDOWS, index=False)
    _, back = explain.read_attribution(tmp_path)
    assert back["role"].notna().all()
    assert list(back["role"]) == ["planted", "null_target", "null_target"]
    assert list(back["planted_window"]) == [True, False, False]
    assert back["null_fraction"].tolist() == pytest.approx([0.4] * 3)


# ---------------------------------------------------------------------------- the check's statistics


def test_bootstrap_shares_of_two_ecgs_worked_by_hand():
    """ECG 0 puts 1 of 4 units in the window, ECG 1 puts 3 of 4: resamples give 1/4, 1/2 or 3/4."""
    inside, total = np.array([[[1.0], [3.0]]]), np.array([[4.0, 4.0]])  # (K=1, n=2, V=1), (K, n)
    share, boot = explain.bootstrap_shares(inside, total, n_iterations=2000, seed=3)
    assert share[0, 0] == 0.5
    assert set(np.round(boot[:, 0, 0], 12)) == {0.25, 0.5, 0.75}
    assert np.mean(boot[:, 0, 0] == 0.25) == pytest.approx(0.25, abs=0.03)  # both draws ECG 0
    frame = explain.share_intervals(share, boot, ["k"], {"w": (0.0, 0.1)}, level=0.95)
    assert (frame.loc[0, "low"], frame.loc[0, "high"]) == (0.25, 0.75)


def test_bootstrap_shares_equal_an_explicit_resampling_loop():
    rng = np.random.default_rng(0)
    mass = rng.random((3, 7, 30))  # (K, n, W)
    time_s = np.arange(30) / 100
    windows = {"a": (0.05, 0.12), "b": (0.0, 0.2)}
    inside = explain.window_mass(mass, time_s, windows)
    share, boot = explain.bootstrap_shares(inside, mass.sum(axis=2), n_iterations=40, seed=11)
    draw = np.random.default_rng(11)
    for b in range(40):
        idx = draw.integers(0, 7, size=7)
        for v, (start, end) in enumerate(windows.values()):
            keep = (time_s >= start) & (time_s < end)
            expected = mass[:, idx][:, :, keep].sum(axis=(1, 2)) / mass[:, idx].sum(axis=(1, 2))
            np.testing.assert_allclose(boot[b, :, v], expected, rtol=1e-12)
    # the point share is window_fractions of the mean over ECGs
    frac = explain.window_fractions(mass.mean(axis=1)[:, :, None], time_s, list("xyz"), windows)
    np.testing.assert_allclose(frac["fraction"].to_numpy(), share.T.ravel(), rtol=1e-12)


def test_a_small_margin_over_the_nulls_gets_no_verdict_when_its_interval_reaches_zero():
    """Shares 0.5 against the nulls' 0.4 and an even 0.3: the old rule called this concentrated."""
    names = ["potassium_high_est", "sodium_low_est"]
    inside = np.array([[[1.0], [1.0]], [[0.0], [0.8]]])  # potassium 1/2 in both ECGs; sodium 0 and 0.8
    total = np.array([[2.0, 2.0], [1.0, 1.0]])
    share, boot = explain.bootstrap_shares(inside, total, n_iterations=2000, seed=0)
    c = explain.share_contrasts(share, boot, names, {"T wave": (0.08, 0.40)}, {"potassium_high_est": "T wave"},
                                ["sodium_low_est"], n_ecgs=2)
    assert list(c.columns) == explain.CONTRAST_COLUMNS
    row = c.iloc[0]
    assert row.comparator == explain.NULL_COMPARATOR and row.difference == pytest.approx(0.1)
    # resamples: both ECG 0 (0.5 - 0), both ECG 1 (0.5 - 0.8), one each (0.5 - 0.4)
    assert (row.low, row.high) == (pytest.approx(-0.3), pytest.approx(0.5))
    check = selfcheck.attribution_check(pd.DataFrame({
        "target": names, "window": "T wave", "start_s": 0.08, "end_s": 0.40, "fraction": share[:, 0],
        "low": 0.0, "high": 1.0, "uniform": 0.3, "role": list(explain.ROLES),
        "planted_window": [True, False], "null_fraction": 0.4}), c)
    assert list(check["verdict"]) == ["not shown"]


def test_nested_windows_need_the_other_planted_target_beaten_in_the_same_window():
    """Potassium and calcium both load the T wave: potassium beats the nulls there but not calcium."""
    names = ["potassium_high_est", "calcium_total_low_est", "sodium_low_est"]
    windows = {"T wave": (0.08, 0.40), "ST–T": (0.04, 0.45)}
    rng = np.random.default_rng(1)
    n = 30
    inside = np.empty((3, n, 2))
    inside[0, :, 0], inside[1, :, 0], inside[2, :, 0] = 0.6, 0.6, 0.3  # T wave: equal for K and Ca
    inside[0, :, 1], inside[1, :, 1], inside[2, :, 1] = 0.65, 0.8, 0.35  # ST-T: calcium beats potassium
    inside *= 1 + 0.05 * rng.standard_normal((3, n, 1))
    share, boot = explain.bootstrap_shares(inside, np.ones((3, n)), n_iterations=500, seed=0)
    own = {"potassium_high_est": "T wave", "calcium_total_low_est": "ST–T"}
    c = explain.share_contrasts(share, boot, names, windows, own, ["sodium_low_est"], n_ecgs=n)
    assert [(r.target, r.comparator) for r in c.itertuples()] == [
        ("potassium_high_est", explain.NULL_COMPARATOR), ("potassium_high_est", "calcium_total_low_est"),
        ("calcium_total_low_est", explain.NULL_COMPARATOR), ("calcium_total_low_est", "potassium_high_est")]
    k_vs_ca = c.iloc[1]
    assert k_vs_ca.share == pytest.approx(share[0, 0]) and k_vs_ca.comparator_share == pytest.approx(share[1, 0])
    frame = pd.DataFrame([{"target": t, "window": w, "start_s": a, "end_s": b, "fraction": share[k, v],
                           "low": 0.0, "high": 1.0, "uniform": 0.5, "role": "planted", "planted_window": own.get(t) == w,
                           "null_fraction": 0.3} for v, (w, (a, b)) in enumerate(windows.items())
                          for k, t in enumerate(names)])
    check = selfcheck.attribution_check(frame, c)
    assert dict(zip(check["target"], check["verdict"])) == {"potassium_high_est": "above nulls only",
                                                           "calcium_total_low_est": "concentrated"}
    assert check.loc[0, "closest_planted"] == "calcium_total_low_est" and check.loc[0, "vs_planted_low"] < 0


def test_rank_correlation_equals_scipy_spearman_row_by_row():
    rng = np.random.default_rng(2)
    a, b = rng.random((2, 3, 50)), rng.random((2, 3, 50))
    b[0, 1] = a[0, 1] ** 2 + 0.01 * b[0, 1]
    a[1, 2, ::2] = 0.5  # ties
    rho = explain.rank_correlation(a, b)
    for i in range(2):
        for j in range(3):
            assert rho[i, j] == pytest.approx(spearmanr(a[i, j], b[i, j]).statistic, abs=1e-12)
    assert explain.rank_correlation(np.ones(5), np.arange(5.0)) == 0.0


def test_randomization_check_separates_a_map_that_changes_from_one_that_does_not():
    rng = np.random.default_rng(4)
    explained = rng.random((2, 12, 200))
    trained = explained + 0.05 * rng.random((2, 12, 200))  # the trained model at fewer steps: nearly the same
    inputs = rng.random((12, 200))
    changed = explain.randomization_check(explained, trained, rng.random((2, 12, 200)), inputs, ["a", "b"],
                                          n_steps=2, n_iterations=300)
    assert list(changed.columns) == explain.RANDOMIZATION_COLUMNS
    assert list(changed["target"]) == ["a", "b", "all"]
    rho_t = np.mean([spearmanr(explained[0, i], trained[0, i]).statistic for i in range(12)])
    assert changed.loc[0, "rho_trained"] == pytest.approx(rho_t, abs=1e-12)
    assert changed.loc[2, "low"] > 0.5  # re-drawn weights give unrelated maps
    same = explain.randomization_check(explained, trained, trained, inputs, ["a", "b"], n_steps=2, n_iterations=300)
    assert same.loc[2, "difference"] == 0 and same.loc[2, "low"] == 0 == same.loc[2, "high"]


def test_fallback_targets_are_the_best_on_validation(tmp_path):
    """Issue 21, E: without planted labs, the explained targets are the best on validation (sklearn)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    names = ["a_high_est", "b_low_est", "c_high_est", "d_high_mon30"]
    y = (rng.random((200, 4)) < 0.4).astype(np.float32)
    s = (y * [0.2, 1.5, 0.8, 3.0] + rng.normal(size=y.shape)).astype(np.float32)
    np.savez(tmp_path / "predictions_val.npz", target_names=np.array(names), y_true=y, y_score=s)
    by_sklearn = sorted(names[:3], key=lambda i: -roc_auc_score(y[:, names.index(i)], s[:, names.index(i)]))
    assert explain._best_on_validation(tmp_path, names, 2) == by_sklearn[:2] == ["b_low_est", "c_high_est"]
