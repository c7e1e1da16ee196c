"""Attribution against hand-worked cases and the synthetic generator's own beat geometry."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.signal import resample_poly

from labecg import ecgsim, explain
from labecg.synthetic import PLANTED_WINDOWS_S


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
    attr = explain.integrated_gradients(model, x, tab, [0, 2], n_steps=128)
    with torch.no_grad():
        gap = (model(x, tab) - model(torch.zeros_like(x), tab))[:, [0, 2]].T.numpy()  # (K, B)
    np.testing.assert_allclose(attr.sum(axis=(2, 3)), gap, rtol=0.02, atol=2e-3)


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
    np.savez(tmp_path / explain.ATTRIBUTION_FILE, targets=np.array(targets))
    frac.to_csv(tmp_path / explain.WINDOWS_FILE, index=False)
    _, back = explain.read_attribution(tmp_path)
    assert back["role"].notna().all()
    assert list(back["role"]) == ["planted", "null_target", "null_target"]
    assert list(back["planted_window"]) == [True, False, False]
    assert back["null_fraction"].tolist() == pytest.approx([0.4] * 3)
