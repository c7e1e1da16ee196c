"""The run summary on hand-made results: the self-check's verdicts under both bootstraps, the interval sentence."""

import numpy as np
import pandas as pd
import pytest

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


def test_attribution_check_gives_verdicts_only_where_every_interval_is_above_zero():
    from labecg.explain import CONTRAST_COLUMNS, NULL_COMPARATOR, RANDOMIZATION_COLUMNS

    windows = pd.DataFrame({
        "target": ["potassium_high_est", "troponin_t_high_est", "ntprobnp_high_est"],
        "window": ["T wave", "ST segment", "QRS"], "start_s": [0.08, 0.04, -0.06], "end_s": [0.40, 0.20, 0.06],
        "fraction": [0.62, 0.208, 0.5], "low": [0.55, 0.15, 0.45], "high": [0.7, 0.26, 0.55],
        "uniform": [0.4, 0.2, 0.15], "role": "planted", "planted_window": True, "null_fraction": [0.45, 0.195, 0.2]})
    rows = [("potassium_high_est", "T wave", 0.08, 0.40, NULL_COMPARATOR, 0.62, 0.45, 0.17, 0.10, 0.24),
            ("potassium_high_est", "T wave", 0.08, 0.40, "troponin_t_high_est", 0.62, 0.50, 0.12, 0.05, 0.20),
            ("potassium_high_est", "T wave", 0.08, 0.40, "ntprobnp_high_est", 0.62, 0.30, 0.32, 0.20, 0.40),
            ("troponin_t_high_est", "ST segment", 0.04, 0.20, NULL_COMPARATOR, 0.208, 0.195, 0.013, -0.02, 0.05),
            ("troponin_t_high_est", "ST segment", 0.04, 0.20, "potassium_high_est", 0.208, 0.1, 0.108, 0.05, 0.2),
            ("ntprobnp_high_est", "QRS", -0.06, 0.06, NULL_COMPARATOR, 0.5, 0.2, 0.3, 0.2, 0.4),
            ("ntprobnp_high_est", "QRS", -0.06, 0.06, "potassium_high_est", 0.5, 0.1, 0.4, 0.3, 0.5),
            ("ntprobnp_high_est", "QRS", -0.06, 0.06, "troponin_t_high_est", 0.5, 0.45, 0.05, -0.01, 0.11)]
    contrasts = pd.DataFrame([r + (24, 1000, 0.95) for r in rows], columns=CONTRAST_COLUMNS)
    check = selfcheck.attribution_check(windows, contrasts)
    assert list(check["target"]) == ["potassium_high_est", "troponin_t_high_est", "ntprobnp_high_est"]
    assert list(check["verdict"]) == ["concentrated", "not shown", "above nulls only"]  # 0.208 vs 0.195: no verdict
    assert check.loc[0, "closest_planted"] == "troponin_t_high_est" and check.loc[0, "vs_planted_low"] == 0.05
    assert check.loc[2, "closest_planted"] == "troponin_t_high_est"
    assert check.loc[0, "window_s"] == "0.08–0.40" and check.loc[0, "low"] == 0.55
    randomization = pd.DataFrame([("all", 0.9, 0.3, 0.6, 0.5, 0.7, 0.4, 8, 2, 1000, 0.95)],
                                 columns=RANDOMIZATION_COLUMNS)
    text = selfcheck.summarize_attribution(check, randomization)
    assert "95% bootstrap intervals over the 24 explained ECGs" in text
    assert "1 of 3 planted targets put more" in text and "potassium high est (T wave" in text
    assert "1 of 3 exceed the null targets" in text and "For 1 of 3 the interval against the null" in text
    assert "troponin t high est (ST segment, +0.013 (-0.020 to +0.050))" in text
    assert "depend on the trained weights." in text
    weak = randomization.assign(low=-0.1)
    assert "does not show that the attributions depend" in selfcheck.summarize_attribution(check, weak)
    assert selfcheck.attribution_check(None).empty and selfcheck.attribution_check(windows, None).empty
    shares = selfcheck.attribution_shares(windows)
    assert shares.loc[0, "T wave"] == "0.62 (0.55–0.70)" and list(shares.columns)[:2] == ["target", "role"]


def test_attribution_figure_draws_a_strip_per_lead():
    import matplotlib.pyplot as plt

    from labecg import figures

    rng = np.random.default_rng(0)
    data = {"targets": np.array(["potassium_high_est", "sodium_low_est"]), "leads": np.array(list("ABC")),
            "time_s": np.arange(-25, 55) / 100, "attribution": rng.random((2, 80, 3)),
            "median_beat_mv": rng.normal(size=(80, 3))}
    fig = figures.plot_attribution(data)
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["A", "B", "C"]
    plt.close(fig)
    plt.close(figures.plot_attribution(None))


def test_interval_summary_counts_and_widths_worked_by_hand():
    # three targets; widths ECG-level 0.10, 0.20, 0.10 and patient-level 0.20, 0.30, 0.10 -> ratios 2, 1.5, 1
    results = pd.DataFrame({
        "task": ["est", "est", "mon60", None], "auroc": [0.85, 0.78, 0.74, 0.79],
        "low": [0.80, 0.71, 0.72, 0.75], "high": [0.90, 0.91, 0.82, 0.83],
        "low_patient": [0.75, 0.66, 0.71, 0.70], "high_patient": [0.95, 0.96, 0.81, 0.88],
        "significant": [True, True, True, True], "n_patients": [40, 40, 30, 50]},
        index=pd.Index(["potassium_high_est", "calcium_low_est", "sodium_low_mon60", "macro"], name="target"))
    out = selfcheck.interval_summary(results)
    # patient-level lower bounds above 0.7: potassium (0.75) and sodium (0.71); calcium (0.66) is lost
    assert out["n_significant_patient"] == {"est": 1, "mon30": 0, "mon60": 1, "mon120": 0}
    assert out["n_significant_patient_mon_max"] == 1
    assert out["n_lost"] == 1
    assert out["median_width_ratio"] == pytest.approx(1.5)
    assert (out["macro_low_patient"], out["macro_high_patient"], out["n_patients"]) == (0.70, 0.88, 50)
    assert "1.50 times as wide" in out["text"] and "1 targets significant by the paper's rule" in out["text"]


def test_describe_multiplicity_reads_its_counts_from_the_frame():
    from labecg import evaluate, tables

    frame = pd.DataFrame([
        {"task": "est", "n_targets": 20, "level": 0.95, "critical_value": 2.9, "critical_value_patient": 3.1,
         "n_significant": 7, "n_significant_simultaneous": 4, "n_significant_patient": 5,
         "n_significant_simultaneous_patient": 3},
        {"task": "mon30", "n_targets": 10, "level": 0.95, "critical_value": 2.6, "critical_value_patient": 2.7,
         "n_significant": 2, "n_significant_simultaneous": 1, "n_significant_patient": 1,
         "n_significant_simultaneous_patient": 0}], columns=evaluate.MULTIPLICITY_COLUMNS)
    text = selfcheck.describe_multiplicity(frame)
    assert "9 of 30 targets" in text and "5 stay above it" in text and "3 with the patient-level" in text
    shown = tables.format_multiplicity(frame)
    assert shown.iloc[0].tolist() == ["Estimation", 20, 7, 4, 5, 3, "2.90 / 3.10"]


def test_planted_effects_are_read_from_the_marker_and_an_unfinished_one_is_refused(tmp_path):
    import json

    from labecg.planted import planted_effects_frame

    recorded = planted_effects_frame().head(3)
    (tmp_path / "labecg_synthetic.json").write_text(json.dumps({"planted_effects": recorded.to_dict(orient="records")}))
    got = selfcheck.read_planted_effects(tmp_path)
    assert set(got["label"]) == set(recorded["label"]) and len(got) == 3
    (tmp_path / "labecg_synthetic.json").write_text(json.dumps({"status": "incomplete"}))
    with pytest.raises(KeyError, match=r"labecg_synthetic.json: planted_effects lack columns"):
        selfcheck.read_planted_effects(tmp_path)
