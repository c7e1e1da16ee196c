"""What the ECG adds: the paired bootstrap against an explicit loop with scikit-learn, the last-value scores by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from labecg import evaluate, stats


def explicit_paired(y, a, b, groups, n_iterations, seed):
    """Resample patients as resample_weights documents, then sklearn on the rows drawn, per target."""
    uniq, codes = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(uniq.size)]
    rng = np.random.default_rng(seed)
    T = y.shape[1]
    diffs = np.full((n_iterations, T + 1), np.nan)
    for i in range(n_iterations):
        idx = np.concatenate([members[g] for g in rng.integers(0, uniq.size, size=uniq.size)])
        aa, bb = np.full(T, np.nan), np.full(T, np.nan)
        for t in range(T):
            keep = idx[~np.isnan(y[idx, t]) & ~np.isnan(b[idx, t])]
            if np.unique(y[keep, t]).size == 2:
                aa[t] = roc_auc_score(y[keep, t], a[keep, t])
                bb[t] = roc_auc_score(y[keep, t], b[keep, t])
        diffs[i, :T] = aa - bb
        if (~np.isnan(aa)).any():
            diffs[i, T] = np.nanmean(aa) - np.nanmean(bb)
    return diffs


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n, T = 90, 3
    groups = rng.integers(0, 35, n)  # several ECGs per patient
    y = (rng.random((n, T)) < 0.35).astype(float)
    y[rng.random((n, T)) < 0.2] = np.nan
    a = y + rng.normal(0, 0.8, (n, T))
    b = np.round(y + rng.normal(0, 1.2, (n, T)), 1)  # ties, as lab values have
    b[rng.random((n, T)) < 0.25] = np.nan  # no earlier value
    return y, np.nan_to_num(a), b, groups


def test_paired_bootstrap_equals_an_explicit_loop_with_sklearn(data):
    y, a, b, groups = data
    got = stats.paired_bootstrap(y, a, b, 200, seed=5, groups=groups, target_names=["p", "q", "r"])
    diffs = explicit_paired(y, a, b, groups, 200, 5)
    for t, name in enumerate(["p", "q", "r"]):
        keep = ~np.isnan(y[:, t]) & ~np.isnan(b[:, t])
        model, base = roc_auc_score(y[keep, t], a[keep, t]), roc_auc_score(y[keep, t], b[keep, t])
        assert got.loc[name, "auroc"] == pytest.approx(model)
        assert got.loc[name, "auroc_baseline"] == pytest.approx(base)
        assert got.loc[name, "delta"] == pytest.approx(model - base)
        assert got.loc[name, "n_ecgs"] == keep.sum()
        d = diffs[:, t][~np.isnan(diffs[:, t])]
        assert got.loc[name, "low"] == pytest.approx(np.percentile(d, 2.5))
        assert got.loc[name, "high"] == pytest.approx(np.percentile(d, 97.5))
        assert got.loc[name, "n_skipped"] == np.isnan(diffs[:, t]).sum()
    assert got.loc["macro", "low"] == pytest.approx(np.percentile(diffs[:, 3], 2.5))
    assert got.loc["macro", "high"] == pytest.approx(np.percentile(diffs[:, 3], 97.5))
    assert got.loc["macro", "delta"] == pytest.approx(got["delta"].iloc[:3].mean())


def test_paired_interval_is_narrower_than_the_two_intervals_apart(data):
    # a baseline equal to the model up to a small perturbation: the paired difference is tight
    y, a, _, groups = data
    b = a + np.random.default_rng(0).normal(0, 0.05, a.shape)
    got = stats.paired_bootstrap(y, a, b, 200, seed=1, groups=groups)
    single = stats.bootstrap(y, a, 200, seed=1, groups=groups)
    assert (got["high"] - got["low"]).loc["macro"] < 0.5 * (single["high"] - single["low"]).loc["macro"]


def test_last_value_scores_by_hand():
    targets = [{"lab": "potassium", "direction": "high", "task": "est"},
               {"lab": "potassium", "direction": "low", "task": "mon30"},
               {"lab": "sodium", "direction": "low", "task": "est"}]
    last = pd.DataFrame({"study_id": [1, 1, 2, 3], "lab": ["potassium"] * 4, "cutoff_min": [0, 60, 0, 60],
                         "value": [5.5, 4.0, 3.1, 6.0], "age_min": [10.0, 61.0, 5.0, 90.0]})
    got = evaluate.last_value_scores([1, 2, 3, 4], targets, last, estimation_window_min=60)
    expected = np.array([[4.0, -5.5, np.nan],      # est looks before the window (60), mon before the ECG (0)
                         [np.nan, -3.1, np.nan],   # ECG 2 has a value within the hour only
                         [6.0, np.nan, np.nan],
                         [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(got, expected)


def test_added_value_rows_and_columns(data):
    y, a, b, groups = data
    names = ["k_high_est", "k_low_mon30", "na_low_est"]
    pred = {"target_names": np.array(names), "study_id": np.arange(len(y)), "y_true": y, "y_score": a,
            "subject_id": groups}
    targets = {"config": {"estimation_window_min": 60},
               "targets": [{"name": n, "lab": n.split("_")[0], "direction": n.split("_")[1], "task": n.split("_")[2]}
                           for n in names]}
    last = pd.DataFrame({"study_id": np.arange(len(y)), "lab": "k", "cutoff_min": 0,
                         "value": np.where(np.isnan(b[:, 1]), np.nan, -b[:, 1]), "age_min": 5.0}).dropna()
    tab = {**pred, "y_score": b}
    got = evaluate.added_value(pred, targets, tabular_pred={**tab, "y_score": np.nan_to_num(b)}, last_values=last,
                               n_iterations=50)
    assert list(got.columns) == evaluate.ADDED_VALUE_COLUMNS
    assert list(got["baseline"].unique()) == ["tabular", "last_value"]
    lv = got[got["baseline"] == "last_value"].set_index("target")
    keep = ~np.isnan(y[:, 1]) & ~np.isnan(b[:, 1])
    assert lv.loc["k_low_mon30", "auroc_baseline"] == pytest.approx(roc_auc_score(y[keep, 1], b[keep, 1]))
    assert lv.loc["k_low_mon30", "n_ecgs"] == keep.sum()
    assert np.isnan(lv.loc["k_high_est", "auroc_baseline"])  # no value before the estimation window
    assert lv.loc["k_high_est", "n_ecgs"] == 0
    with pytest.raises(ValueError, match="same ECGs"):
        evaluate.added_value(pred, targets, tabular_pred={**tab, "study_id": np.arange(len(y)) + 1})


def _results(names):
    rows = [{"target": n, "task": "est", "lab": "k", "label": "Potassium", "direction": "high", "threshold": 5.0,
             "unit": "mEq/L", "category": None, "auroc": 0.8, "low": 0.7, "high": 0.9, "n_pos": 10, "n_neg": 30,
             "low_patient": 0.68, "high_patient": 0.91} for n in names]
    rows.append({**rows[0], "target": "macro", "task": None})
    return pd.DataFrame(rows).set_index("target")


@pytest.mark.parametrize("low, high, verdict", [(0.01, 0.2, "lies above 0"), (-0.2, -0.01, "lies below 0"),
                                                 (-0.05, 0.1, "contains 0, so no difference is shown")])
def test_added_value_sentence_is_never_stronger_than_its_interval(tmp_path, low, high, verdict):
    from labecg import selfcheck

    added = pd.DataFrame({"target": ["a", "macro"], "baseline": "tabular", "auroc_baseline": [0.7, 0.7],
                          "delta": [0.05, 0.05], "low": [low, low], "high": [high, high], "n_ecgs": [40, 40]})
    added.to_csv(tmp_path / "added_value.csv", index=False)
    out = selfcheck.added_value_summary(tmp_path, _results(["a"]))
    assert verdict in out["text"] and out["tabular_delta"] == 0.05
    assert "No last earlier values in this build" in out["text"]  # and says which command fills it
    assert list(out["table"]["Model − tabular"]) == [f"+0.050 ({low:+.3f}, {high:+.3f})"] * 2


def test_sections_without_their_runs_name_the_command():
    from labecg import selfcheck

    missing = selfcheck.added_value_summary("/nonexistent", _results(["a"]))
    assert "labecg book --variants fusion tabular" in missing["text"] and missing["table"].empty
    ablation = selfcheck.ablation_summary(_results(["a"]), {})
    assert "Not run in this build: causal" in ablation["text"] and "make book-full" in ablation["text"]
