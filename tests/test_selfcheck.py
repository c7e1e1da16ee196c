"""The pipeline self-check on hand-made results: verdicts under both bootstraps."""

import numpy as np
import pandas as pd

from labecg import selfcheck


def test_null_targets_counted_under_each_interval():
    results = pd.DataFrame({
        "task": ["est"] * 4, "lab": ["potassium", "sodium", "ptt", "inr"],
        "label": ["Potassium", "Sodium", "PTT", "INR(PT)"], "direction": ["high", "low", "high", "high"],
        "auroc": [0.80, 0.55, 0.31, 0.52], "low": [0.72, 0.51, 0.20, 0.45], "high": [0.88, 0.60, 0.40, 0.58],
        "low_patient": [0.70, 0.45, 0.15, 0.40], "high_patient": [0.90, 0.65, 0.52, 0.63]},
        index=pd.Index(["potassium_high_est", "sodium_low_est", "ptt_high_est", "inr_high_est"], name="target"))
    planted = pd.DataFrame({"label": ["Potassium", "Sodium", "PTT", "INR(PT)"],
                            "lab": ["potassium", "sodium", "ptt", "inr"], "direction": ["high", "both", "both", "both"],
                            "channel": ["ecg", "none", "none", "none"], "mechanism": [""] * 4,
                            "strength": [3, 0, 0, 0]})
    check = selfcheck.planted_effects_check(results, planted)
    by = check.set_index("target")
    assert by.loc["potassium_high_est", "verdict"] == "recovered"
    # sodium: ECG-level (0.51, 0.60) misses 0.5, patient-level (0.45, 0.65) contains it; ptt likewise
    assert by.loc["sodium_low_est", "verdict"] == "unexpected signal"
    assert by.loc["sodium_low_est", "verdict_patient"] == "as expected"
    assert by.loc["ptt_high_est", "verdict"] == "unexpected signal"
    assert by.loc["ptt_high_est", "verdict_patient"] == "as expected"
    cover = selfcheck.null_coverage(check)
    assert cover == {"n_null": 3, "contains_ecg": 1, "contains_patient": 3}
    assert "patient-level interval, 3 of 3" in selfcheck.summarize_check(check)
    no_patient = selfcheck.planted_effects_check(results.drop(columns=["low_patient", "high_patient"]), planted)
    assert selfcheck.null_coverage(no_patient)["contains_patient"] is None
    assert np.isnan(check["low"]).sum() == 0


def test_attribution_check_compares_the_planted_window_with_nulls():
    frame = pd.DataFrame({
        "target": ["potassium_high_est", "potassium_high_est", "sodium_low_est", "sodium_low_est",
                   "troponin_t_high_est", "troponin_t_high_est"],
        "window": ["T wave", "ST segment"] * 3, "start_s": [0.08, 0.04] * 3, "end_s": [0.40, 0.20] * 3,
        "fraction": [0.62, 0.2, 0.45, 0.21, 0.5, 0.18], "uniform": [0.4, 0.2] * 3,
        "role": ["planted", "planted", "null", "null", "planted", "planted"],
        "planted_window": [True, False, False, False, False, True], "null_fraction": [0.45, 0.21] * 3})
    check = selfcheck.attribution_check(frame)
    assert list(check["target"]) == ["potassium_high_est", "troponin_t_high_est"]
    assert list(check["verdict"]) == ["concentrated", "not concentrated"]  # 0.18 < null 0.21
    assert check.loc[0, "window_s"] == "0.08–0.40"
    assert "1 of 2 planted targets" in selfcheck.summarize_attribution(check)
    assert selfcheck.attribution_check(None).empty


def test_attribution_figure_draws_a_strip_per_lead():
    import matplotlib.pyplot as plt

    from labecg import report

    rng = np.random.default_rng(0)
    data = {"targets": np.array(["potassium_high_est", "sodium_low_est"]), "leads": np.array(list("ABC")),
            "time_s": np.arange(-25, 55) / 100, "attribution": rng.random((2, 80, 3)),
            "median_beat_mv": rng.normal(size=(80, 3))}
    fig = report.plot_attribution(data)
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["A", "B", "C"]
    plt.close(fig)
    plt.close(report.plot_attribution(None))
