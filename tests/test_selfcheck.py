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
