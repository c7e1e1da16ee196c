"""AUROC and bootstrap against sklearn and hand-worked cases; the run-folder stage end to end."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from labecg import evaluate, metrics, stats
from labecg.evaluate import EvaluateConfig, evaluate_run
from labecg.metrics import auroc, resample_indices
from labecg.stats import bootstrap


def _sklearn_auroc(y_true, y_score):
    """Per-column roc_auc_score on the observed rows; NaN for a single class."""
    out = []
    for t in range(y_true.shape[1]):
        m = ~np.isnan(y_true[:, t])
        labels = y_true[m, t]
        out.append(roc_auc_score(labels, y_score[m, t]) if len(np.unique(labels)) == 2 else np.nan)
    return np.array(out)


def _random_problem(n=400, T=25, seed=0, decimals=1):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, T)) < rng.uniform(0.05, 0.5, T)).astype(float)
    y[rng.random((n, T)) < rng.uniform(0.0, 0.9, T)] = np.nan
    s = np.round(rng.random((n, T)) + 0.4 * np.nan_to_num(y), decimals)  # rounding -> many ties
    s[np.isnan(y)] = np.nan  # scores of missing labels are never read
    return y, s


def test_auroc_equals_sklearn_with_ties_and_masks():
    for seed, decimals in [(0, 1), (1, 2), (2, 6)]:
        y, s = _random_problem(seed=seed, decimals=decimals)
        np.testing.assert_allclose(auroc(y, s), _sklearn_auroc(y, s), rtol=0, atol=1e-12)


def test_auroc_nan_for_single_class_and_empty_targets():
    y, s = _random_problem(n=50, T=4)
    y[:, 1] = np.where(np.isnan(y[:, 1]), np.nan, 1.0)  # positives only
    y[:, 2] = np.where(np.isnan(y[:, 2]), np.nan, 0.0)  # negatives only
    y[:, 3] = np.nan  # never observed
    s = np.nan_to_num(s)
    result = auroc(y, s)
    assert result.shape == (4,) and result.dtype == np.float64
    assert np.isfinite(result[0]) and np.isnan(result[1:]).all()


def test_auroc_hand_case_and_1d():
    # pos {0.9, 0.8}, neg {0.1, 0.8}: pairs 1 + 1 + 1 + 0.5 = 3.5 of 4
    assert auroc([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.8]) == 0.875


def test_auroc_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        auroc(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"0.0, 1.0 or NaN; found 2.0 at ECG row 1, target column 0"):
        auroc([[0.0], [2.0]], [[0.1], [0.2]])
    with pytest.raises(ValueError, match="finite where y_true is observed"):
        auroc([[0.0], [1.0]], [[0.1], [np.nan]])


def test_weighted_auroc_equals_sklearn_with_sample_weight():
    y, s = _random_problem(n=120, T=6, seed=4)
    w = np.random.default_rng(5).integers(0, 4, size=120).astype(float)
    got = metrics.weighted_auroc(metrics.sort_targets(y, s), w)
    for t in range(6):
        m = ~np.isnan(y[:, t]) & (w > 0)
        expected = roc_auc_score(y[m, t], s[m, t], sample_weight=w[m])
        assert abs(got[t] - expected) < 1e-12


def test_bootstrap_iterations_equal_sklearn_on_resampled_arrays():
    y, s = _random_problem(n=300, T=8, seed=6)
    res, its = bootstrap(y, s, n_iterations=20, seed=11, return_iterations=True, progress=False)
    assert its.shape == (20, 9)
    for i, idx in enumerate(resample_indices(300, 4, seed=11)):  # the first four resamples
        expected = _sklearn_auroc(y[idx], s[idx])
        np.testing.assert_allclose(its[i, :8], expected, rtol=0, atol=1e-12)
        assert its[i, 8] == pytest.approx(np.nanmean(expected), abs=1e-12)
    np.testing.assert_allclose(res["auroc"].to_numpy()[:8], _sklearn_auroc(y, s), atol=1e-12)
    lo, hi = np.percentile(its[:, 0], [2.5, 97.5])
    assert res.loc[0, "low"] == pytest.approx(lo) and res.loc[0, "high"] == pytest.approx(hi)
    assert list(res.columns) == ["auroc", "low", "high", "n_pos", "n_neg", "n_skipped"]
    assert list(res.index) == [*range(8), "macro"]
    assert res.loc[3, "n_pos"] == np.nansum(y[:, 3]) and res.loc[3, "n_neg"] == np.sum(y[:, 3] == 0)


def test_bootstrap_is_seeded():
    y, s = _random_problem(n=100, T=3, seed=7)
    a = bootstrap(y, s, 30, seed=1, progress=False)
    b = bootstrap(y, s, 30, seed=1, progress=False)
    c = bootstrap(y, s, 30, seed=2, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert not a["low"].equals(c["low"])


def test_interval_covers_known_auroc_about_95_percent():
    # Binormal scores, negatives N(0, 1), positives N(d, 1): true AUROC = Phi(d / sqrt(2)).
    # Each column is an independent draw; the shared resample leaves each column's
    # bootstrap distribution intact, so coverage per column is the usual coverage.
    rng = np.random.default_rng(123)
    n, draws, d = 300, 200, 1.2
    truth = norm.cdf(d / math.sqrt(2))
    y = (rng.random((n, draws)) < 0.3).astype(float)
    s = rng.normal(size=(n, draws)) + d * y
    res = bootstrap(y, s, n_iterations=400, seed=0, progress=False).drop(index="macro")
    covered = ((res["low"] < truth) & (truth < res["high"])).mean()
    assert 0.89 <= covered <= 0.99, covered
    assert abs(res["auroc"].mean() - truth) < 0.01


def test_macro_leaves_out_undefined_targets():
    y = np.array([[1, 1, 1], [1, 0, 1], [0, 1, np.nan], [0, 0, 1]], dtype=float)
    s = np.array([[0.9, 0.5, 0.3], [0.8, 0.5, 0.2], [0.1, 0.5, 0.0], [0.2, 0.5, 0.1]])
    res = bootstrap(y, s, n_iterations=50, seed=0, progress=False)
    assert res.loc[0, "auroc"] == 1.0 and res.loc[1, "auroc"] == 0.5 and np.isnan(res.loc[2, "auroc"])
    assert res.loc["macro", "auroc"] == 0.75  # (1.0 + 0.5) / 2, not (1.0 + 0.5 + 0.5) / 3
    assert res.loc[2, "n_skipped"] == 50 and np.isnan(res.loc[2, "low"])


def test_n_skipped_counts_resamples_without_both_classes():
    n = 20
    rng = np.random.default_rng(3)
    y = np.zeros((n, 2))
    y[5, 0] = 1.0  # one positive: resamples without row 5 have a single class
    y[:, 1] = np.arange(n) % 2
    s = rng.random((n, 2))
    res, its = bootstrap(y, s, n_iterations=200, seed=9, return_iterations=True, progress=False)
    without_pos = sum(5 not in idx for idx in resample_indices(n, 200, seed=9))
    assert 0 < without_pos < 200
    assert res.loc[0, "n_skipped"] == without_pos
    assert res.loc[1, "n_skipped"] == 0
    kept = [_sklearn_auroc(y[idx], s[idx])[0] for idx in resample_indices(n, 200, seed=9)
            if 5 in idx]
    lo, hi = np.percentile(kept, [2.5, 97.5])
    assert res.loc[0, "low"] == pytest.approx(lo, abs=1e-12)
    assert res.loc[0, "high"] == pytest.approx(hi, abs=1e-12)


def test_significance_is_lower_bound_strictly_above_threshold():
    boot = pd.DataFrame({"auroc": [0.8, 0.75, 0.72, 0.9, np.nan],
                         "low": [0.71, 0.70, 0.69, np.nan, np.nan],
                         "high": [0.9, 0.8, 0.75, np.nan, np.nan],
                         "n_pos": 1, "n_neg": 1, "n_skipped": 0},
                        index=pd.Index(["a", "b", "c", "d", "macro"], name="target", dtype=object))
    meta = pd.DataFrame({c: [None] * 4 for c in evaluate.METADATA_COLUMNS},
                        index=pd.Index(["a", "b", "c", "d"], name="target", dtype=object))
    res = evaluate.assemble_results(boot, meta, 0.7)
    assert res["significant"].tolist() == [True, False, False, False, False]
    assert evaluate.assemble_results(boot, meta, 0.695)["significant"].tolist()[:3] == [True, True, False]


# ---------------------------------------------------------------------------- run folder


def _one_ecg_per_patient(n):
    """The patient arrays of a predictions file (PATIENT_KEYS): one ECG per patient, no subgroup variable."""
    return dict(subject_id=np.arange(n, dtype=np.int64), sex=np.full(n, np.nan), age=np.full(n, np.nan),
                race=np.array([""] * n))


def _write_run(run, n=400, seed=0):
    rng = np.random.default_rng(seed)
    specs = [("NTproBNP", "ntprobnp", "high", 353.0, "pg/mL", "Ca.", "est", None, 2.0),
             ("Urea Nitrogen", "urea_nitrogen", "low", 6.0, "mg/dL", "Re.", "est", None, 0.0),
             ("NTproBNP", "ntprobnp", "high", 353.0, "pg/mL", "Ca.", "mon30", 30, 1.8),
             ("NTproBNP", "ntprobnp", "high", 353.0, "pg/mL", "Ca.", "mon60", 60, 2.2),
             ("NTproBNP", "ntprobnp", "high", 353.0, "pg/mL", "Ca.", "mon120", 120, 2.0)]
    targets, names = [], []
    y = np.full((n, len(specs)), np.nan, dtype=np.float32)
    for j, (label, slug, direction, thr, unit, cat, task, horizon, _d) in enumerate(specs):
        name = f"{slug}_{direction}_{task}"
        names.append(name)
        observed = rng.random(n) < 0.6
        y[observed, j] = (rng.random(observed.sum()) < 0.3).astype(np.float32)
        targets.append({"name": name, "lab": slug, "label": label, "itemids": [1], "fluid": "Blood",
                        "direction": direction, "threshold": thr, "unit": unit, "category": cat,
                        "task": task, "horizon_min": horizon,
                        "counts": {"test": {"pos": int(np.nansum(y[:, j])), "neg": int(np.sum(y[:, j] == 0))}}})
    d = np.array([s[-1] for s in specs])
    s = (1 / (1 + np.exp(-(rng.normal(size=y.shape) + d * np.nan_to_num(y))))).astype(np.float32)
    np.savez(run / "predictions_test.npz", study_id=np.arange(n, dtype=np.int64),
             target_names=np.array(names), y_true=y, y_score=s, **_one_ecg_per_patient(n))
    (run / "targets.json").write_text(json.dumps({"version": 1, "targets": targets}))
    return y, s, names


def test_evaluate_run_writes_results_and_tables(tmp_path):
    y, s, names = _write_run(tmp_path)
    out = evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=100, seed=0))
    assert out == tmp_path / "evaluation"
    for f in ["results.csv", "bootstrap_iterations.npz", "table1_estimation.csv", "table1_estimation.md",
              "table2_monitoring.csv", "table2_monitoring.md", "paper_comparison.csv"]:
        assert (out / f).exists(), f
    res = evaluate.read_results(out / "results.csv")
    assert list(res.index) == [*names, "macro"]
    np.testing.assert_allclose(res["auroc"].to_numpy()[:5], _sklearn_auroc(y.astype(float), s.astype(float)),
                               atol=1e-12)
    assert res.loc["ntprobnp_high_est", "significant"]  # d = 2: AUROC about 0.92
    assert not res.loc["urea_nitrogen_low_est", "significant"]  # d = 0: chance
    assert res.loc["ntprobnp_high_mon60", "horizon_min"] == 60 and res.loc["ntprobnp_high_est", "unit"] == "pg/mL"
    with np.load(out / "bootstrap_iterations.npz") as npz:
        assert npz["auroc"].shape == (100, 6) and npz["target_names"][-1] == "macro"
    t1 = (out / "table1_estimation.md").read_text().splitlines()
    assert t1[2].startswith("| NTproBNP [Ca.] | ≥353 pg/mL | ") and len(t1) == 3
    assert "**" in (out / "table2_monitoring.md").read_text()
    comparison = pd.read_csv(out / "paper_comparison.csv")
    assert set(comparison["task"]) == {"est", "mon30", "mon60", "mon120"}
    assert (comparison["paper_version"] == "arXiv v1").all()


def test_evaluate_run_names_the_file_on_bad_input(tmp_path):
    _write_run(tmp_path, n=50)
    with pytest.raises(FileNotFoundError, match="predictions_val.npz"):
        evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=5, split="val"))
    (tmp_path / "targets.json").write_text(json.dumps({"version": 1, "targets": []}))
    with pytest.raises(KeyError, match="targets.json"):
        evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=5))
    np.savez(tmp_path / "predictions_test.npz", study_id=np.arange(3))
    with pytest.raises(KeyError, match=r"predictions_test.npz: missing arrays \['target_names'"):
        evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=5))
    with pytest.raises(ValueError, match="n_iterations"):
        EvaluateConfig(run_dir=tmp_path, n_iterations=0)


# ---------------------------------------------------------------------------- issue 14


def _patient_problem(n_patients=150, seed=1):
    """Patients with 1-4 ECGs that share the patient's labels (the case that makes ECG-level intervals narrow)."""
    rng = np.random.default_rng(seed)
    n_ecgs = rng.integers(1, 5, n_patients)
    subject = np.repeat(np.arange(1000, 1000 + n_patients), n_ecgs)
    y_patient = (rng.random((n_patients, 3)) < [0.3, 0.2, 0.4]).astype(float)
    y = np.repeat(y_patient, n_ecgs, axis=0)
    y[rng.random(y.shape) < 0.2] = np.nan
    s = np.round(0.6 * np.nan_to_num(y) * [1.0, 0.5, 0.0] + rng.normal(size=y.shape), 2)
    return y, s, subject


def test_patient_bootstrap_of_duplicated_ecgs_equals_the_deduplicated_one():
    y, s, subject = _patient_problem()
    k = 3
    once = bootstrap(y, s, 300, seed=4, groups=subject)
    dup_y, dup_s, dup_g = np.tile(y, (k, 1)), np.tile(s, (k, 1)), np.tile(subject, k)
    dup_patient = bootstrap(dup_y, dup_s, 300, seed=4, groups=dup_g)
    np.testing.assert_allclose(dup_patient[["auroc", "low", "high"]], once[["auroc", "low", "high"]], atol=1e-12)
    ecg_once = bootstrap(y, s, 300, seed=4)
    ecg_dup = bootstrap(dup_y, dup_s, 300, seed=4)
    width_once = (ecg_once["high"] - ecg_once["low"]).to_numpy()
    width_dup = (ecg_dup["high"] - ecg_dup["low"]).to_numpy()
    assert np.all(width_dup < 0.75 * width_once)  # about 1 / sqrt(3) of the width


def test_patient_bootstrap_iterations_equal_sklearn_on_the_drawn_patients():
    y, s, subject = _patient_problem(n_patients=60, seed=2)
    rng_order = np.random.default_rng(9).permutation(len(subject))  # rows need not be sorted by patient
    y, s, subject = y[rng_order], s[rng_order], subject[rng_order]
    _, its = bootstrap(y, s, 15, seed=7, groups=subject, return_iterations=True)
    ids = np.unique(subject)
    members = [np.flatnonzero(subject == g) for g in ids]
    rng = np.random.default_rng(7)
    for i in range(15):
        draw = rng.integers(0, ids.size, size=ids.size)
        rows = np.concatenate([members[g] for g in draw])
        np.testing.assert_allclose(its[i, :3], _sklearn_auroc(y[rows], s[rows]), atol=1e-12)


def test_one_ecg_per_patient_gives_the_ecg_level_bootstrap():
    y, s = _random_problem(n=200, T=5, seed=3)
    ecg = bootstrap(y, s, 50, seed=2)
    patient = bootstrap(y, s, 50, seed=2, groups=np.arange(200) * 7 + 3)
    pd.testing.assert_frame_equal(ecg, patient)


def test_bootstrap_rejects_bad_groups():
    y, s = _random_problem(n=30, T=2)
    with pytest.raises(ValueError, match=r"groups must have shape \(30,\)"):
        bootstrap(y, s, 5, groups=np.arange(29))
    with pytest.raises(ValueError, match="no group id"):
        bootstrap(y, s, 5, groups=np.where(np.arange(30) == 4, np.nan, 1.0))


def test_brier_and_reliability_equal_sklearn():
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    y, s = _random_problem(n=500, T=6, seed=5, decimals=3)
    s = np.clip(s / 1.5, 0, 1)
    s[:7, 0] = [0.0, 0.1, 0.2, 0.5, 0.9, 1.0, 0.3]  # scores on bin edges
    y[:7, 0] = [0, 1, 0, 1, 1, 1, 0]
    brier = stats.brier_loss(y, s)
    for t in range(6):
        m = ~np.isnan(y[:, t])
        assert brier[t] == pytest.approx(brier_score_loss(y[m, t], s[m, t]), abs=1e-12)
        for n_bins in (5, 10):
            curve = stats.reliability_curve(y[:, t], s[:, t], n_bins=n_bins)
            prob_true, prob_pred = calibration_curve(y[m, t], s[m, t], n_bins=n_bins, strategy="uniform")
            np.testing.assert_allclose(curve["fraction_positive"], prob_true, atol=1e-12)
            np.testing.assert_allclose(curve["mean_predicted"], prob_pred, atol=1e-12)
            assert curve["n"].sum() == m.sum()


def test_calibration_intercept_and_slope_against_independent_fits():
    from scipy.optimize import brentq
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(11)
    n = 3000
    z = rng.normal(size=n)
    y_true = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    scores = np.column_stack([1 / (1 + np.exp(-z)),  # calibrated
                              1 / (1 + np.exp(-2 * z)),  # too extreme: slope 0.5
                              1 / (1 + np.exp(-(z - 1)))])  # under-predicts: intercept +1
    y = np.column_stack([y_true] * 3)
    y[rng.random(y.shape) < 0.1] = np.nan
    cal = stats.calibration(y, scores, ["ok", "extreme", "low"])
    for t, name in enumerate(["ok", "extreme", "low"]):
        m = ~np.isnan(y[:, t])
        x = np.log(scores[m, t] / (1 - scores[m, t]))
        fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(x[:, None], y[m, t])
        assert cal.loc[name, "calibration_slope"] == pytest.approx(fit.coef_[0, 0], abs=1e-4)
        # intercept with the slope fixed at 1: root of the score equation sum(y - sigmoid(x + a)) = 0
        a = brentq(lambda a, m=m, t=t, x=x: np.sum(y[m, t] - 1 / (1 + np.exp(-(x + a)))), -10, 10, xtol=1e-12)
        assert cal.loc[name, "calibration_intercept"] == pytest.approx(a, abs=1e-6)
        assert cal.loc[name, "n"] == m.sum() and cal.loc[name, "prevalence"] == pytest.approx(y[m, t].mean())
    assert cal.loc["ok", "calibration_slope"] == pytest.approx(1.0, abs=0.15)
    assert cal.loc["extreme", "calibration_slope"] == pytest.approx(0.5, abs=0.08)
    assert cal.loc["low", "calibration_intercept"] == pytest.approx(1.0, abs=0.15)
    single = stats.calibration(np.zeros((10, 1)), np.full((10, 1), 0.2))
    assert np.isnan(single.iloc[0]["calibration_slope"]) and single.iloc[0]["brier"] == pytest.approx(0.04)


def test_subgroup_auroc_against_sklearn_on_each_subgroup():
    y, s, subject = _patient_problem(n_patients=120, seed=6)
    rng = np.random.default_rng(6)
    patient_sex = rng.integers(0, 2, 120).astype(float)
    patient_sex[:5] = np.nan
    codes = np.unique(subject, return_inverse=True)[1]
    sex, age = patient_sex[codes], rng.uniform(20, 95, len(subject))
    race = rng.choice(["white", "black", "asian", ""], len(subject))
    labels = stats.subgroup_labels(sex, age, race)
    assert set(labels["age_band"].dropna()) <= {"<45", "45–64", "65–79", "≥80"}
    assert labels["race"].isna().sum() == (race == "").sum() and labels["sex"].isna().sum() == np.isnan(sex).sum()
    names = ["a", "b", "c"]
    sub = stats.subgroup_auroc(y, s, names, labels, ["a", "c"], groups=subject, n_iterations=12, seed=3)
    assert set(sub["target"]) == {"a", "c"} and (sub["interval"] == "patient").all()
    for row in sub.itertuples():
        m = np.ones(len(y), bool) if row.variable == "all" else (labels[row.variable] == row.subgroup).to_numpy()
        t = names.index(row.target)
        keep = m & ~np.isnan(y[:, t])
        assert row.n_ecgs == keep.sum()
        assert row.auroc == pytest.approx(roc_auc_score(y[keep, t], s[keep, t]), abs=1e-12)
    # one interval by hand: the women's AUROC of target "a" over the same patient draws
    ids = np.unique(subject)
    members = [np.flatnonzero(subject == g) for g in ids]
    rng = np.random.default_rng(3)
    women = (labels["sex"] == "female").to_numpy()
    draws = []
    for _ in range(12):
        rows = np.concatenate([members[g] for g in rng.integers(0, ids.size, size=ids.size)])
        rows = rows[women[rows] & ~np.isnan(y[rows, 0])]
        draws.append(roc_auc_score(y[rows, 0], s[rows, 0]))
    row = sub[(sub["target"] == "a") & (sub["subgroup"] == "female")].iloc[0]
    assert (row.low, row.high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])), abs=1e-12)


def test_evaluate_run_writes_patient_interval_calibration_and_subgroups(tmp_path):
    y, s, names = _write_run(tmp_path)
    rng = np.random.default_rng(0)
    subject = np.repeat(np.arange(100), 4)  # four ECGs per patient
    with np.load(tmp_path / "predictions_test.npz") as npz:
        arrays = dict(npz)
    np.savez(tmp_path / "predictions_test.npz", **{**arrays, "subject_id": subject,
             "sex": np.repeat(rng.integers(0, 2, 100).astype(float), 4), "age": rng.uniform(20, 90, 400),
             "race": rng.choice(["white", "black", ""], 400)})
    out = evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=60, seed=0, n_headline=1))
    res = evaluate.read_results(out / "results.csv")
    direct = bootstrap(y, s, 60, seed=0, groups=subject, target_names=names)
    np.testing.assert_allclose(res["low_patient"], direct["low"], atol=1e-12)
    np.testing.assert_allclose(res["high_patient"], direct["high"], atol=1e-12)
    assert res.loc["macro", "n_patients"] == 100
    from sklearn.metrics import brier_score_loss
    m = ~np.isnan(y[:, 0])
    assert res.loc[names[0], "brier"] == pytest.approx(brier_score_loss(y[m, 0], s[m, 0]), abs=1e-7)
    calib = pd.read_csv(out / "calibration.csv")
    assert list(calib["target"]) == names
    direct_cal = stats.calibration(y, s, names, groups=subject, n_iterations=60, seed=0,
                                      interval_targets=evaluate.read_headline(out / "headline.csv"))
    np.testing.assert_allclose(calib["slope_low"], direct_cal["slope_low"], atol=1e-9)
    assert calib["slope_low"].notna().sum() == 1
    assert set(pd.read_csv(out / "reliability.csv")["target"]) == set(names)
    sub = pd.read_csv(out / "subgroups.csv")
    assert set(sub["target"]) == {"ntprobnp_high_est"}
    assert {"sex", "age_band", "race", "all"} == set(sub["variable"])
    with np.load(out / "bootstrap_iterations.npz") as npz:
        assert npz["auroc_patient"].shape == (60, 6)


def test_predictions_without_the_patient_arrays_are_refused_by_name(tmp_path):
    # every run of this 0.x writes them; a predictions file without them is not one labecg train wrote
    _write_run(tmp_path, n=120)
    with np.load(tmp_path / "predictions_test.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k not in evaluate.PATIENT_KEYS}
    np.savez(tmp_path / "predictions_test.npz", **arrays)
    with pytest.raises(KeyError, match=r"predictions_test.npz: missing arrays \['subject_id', 'sex', 'age', 'race'\]"):
        evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=10, seed=0))


def test_compare_variants_pairs_the_resamples(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    y, s_a, names = _write_run(tmp_path / "a")
    rng = np.random.default_rng(5)
    s_b = np.clip(s_a + rng.normal(0, 0.3, s_a.shape), 0, 1).astype(np.float32)
    subject = np.repeat(np.arange(100), 4)
    for folder, s in (("a", s_a), ("b", s_b)):
        np.savez(tmp_path / folder / "predictions_test.npz", study_id=np.arange(400, dtype=np.int64),
                 target_names=np.array(names), y_true=y, y_score=s, subject_id=subject,
                 sex=np.zeros(400), age=np.full(400, 50.0), race=np.array(["white"] * 400))
        if folder == "b":
            (tmp_path / "b" / "targets.json").write_text((tmp_path / "a" / "targets.json").read_text())
        evaluate_run(EvaluateConfig(run_dir=tmp_path / folder, n_iterations=50, seed=3))
    table = evaluate.compare_variants({"a": tmp_path / "a" / "evaluation", "b": tmp_path / "b" / "evaluation"})
    assert list(table.index) == ["a", "b"] and np.isnan(table.loc["a", "difference"])
    # independent: the same patient draws, macro AUROC of each model by sklearn, then the percentiles
    rng = np.random.default_rng(3)
    diffs = []
    for _ in range(50):
        rows = np.concatenate([np.arange(4 * g, 4 * g + 4) for g in rng.integers(0, 100, size=100)])
        diffs.append(np.nanmean(_sklearn_auroc(y[rows].astype(float), s_b[rows].astype(float)))
                     - np.nanmean(_sklearn_auroc(y[rows].astype(float), s_a[rows].astype(float))))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert (table.loc["b", "difference_low"], table.loc["b", "difference_high"]) == pytest.approx((lo, hi), abs=1e-9)
    point = np.nanmean(_sklearn_auroc(y.astype(float), s_b.astype(float))) - np.nanmean(
        _sklearn_auroc(y.astype(float), s_a.astype(float)))
    assert table.loc["b", "difference"] == pytest.approx(point, abs=1e-9)
    np.savez(tmp_path / "b" / "predictions_test.npz", study_id=np.arange(1, 401, dtype=np.int64),
             target_names=np.array(names), y_true=y, y_score=s_b, **_one_ecg_per_patient(400))
    with pytest.raises(ValueError, match="same test ECGs"):
        evaluate.compare_variants({"a": tmp_path / "a" / "evaluation", "b": tmp_path / "b" / "evaluation"})


def test_each_split_keeps_its_own_evaluation(tmp_path):
    _write_run(tmp_path, n=80)
    shutil.copy(tmp_path / "predictions_test.npz", tmp_path / "predictions_val.npz")
    with np.load(tmp_path / "predictions_val.npz") as z:  # another model's scores on "val"
        arrays = dict(z)
    arrays["y_score"] = np.random.default_rng(9).random(arrays["y_score"].shape).astype(np.float32)
    np.savez(tmp_path / "predictions_val.npz", **arrays)
    test_dir = evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=20))
    test_before = (test_dir / "results.csv").read_bytes()
    val_dir = evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=20, split="val"))
    assert test_dir == tmp_path / "evaluation" and val_dir == tmp_path / "evaluation_val"
    assert (test_dir / "results.csv").read_bytes() == test_before
    test_res, val_res = (pd.read_csv(d / "results.csv") for d in (test_dir, val_dir))
    assert set(test_res["split"]) == {"test"} and set(val_res["split"]) == {"val"}
    y = arrays["y_true"].astype(float)
    np.testing.assert_allclose(val_res["auroc"].to_numpy()[:5], _sklearn_auroc(y, arrays["y_score"].astype(float)),
                               atol=1e-12)


@pytest.mark.parametrize("corrupt", ["not a zip", "pickled"])
def test_a_corrupt_predictions_file_is_named(tmp_path, corrupt):
    _write_run(tmp_path, n=20)
    path = tmp_path / "predictions_test.npz"
    if corrupt == "not a zip":
        path.write_bytes(path.read_bytes()[:100])
    else:
        np.savez(path, study_id=np.arange(3), target_names=np.array([{"a": 1}], dtype=object),
                 y_true=np.zeros((3, 1)), y_score=np.zeros((3, 1)), **_one_ecg_per_patient(3))
    with pytest.raises(ValueError, match=r"predictions_test\.npz: not a readable predictions file"):
        evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=5))


# ---------------------------------------------------------------------------- issue 21


def _loglik(a, b, x, y):
    eta = a + b * x
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


@pytest.mark.parametrize("labels, scores", [
    ([0, 0, 0, 1, 1, 1], [.1, .2, .3, .7, .8, .9]),  # complete separation (the case)
    ([1, 1, 1, 0, 0, 0], [.1, .2, .3, .7, .8, .9]),  # reversed
    ([0, 0, 0, 1, 1, 1], [.1, .2, .5, .5, .8, .9]),  # quasi-complete: one tie at the boundary
])
def test_calibration_slope_is_nan_under_separation(labels, scores):
    y, p = np.array(labels, float), np.array(scores)
    x = np.log(p / (1 - p))
    # by hand: the likelihood has no finite maximum; along b -> inf (or -inf), with the intercept
    # centring the boundary, it keeps rising toward 0
    c = 0.5 * (x[y == 0].max() + x[y == 1].min()) if y[-1] == 1 else 0.5 * (x[y == 1].max() + x[y == 0].min())
    sign = 1.0 if y[-1] == 1 else -1.0
    path = [_loglik(-sign * b * c, sign * b, x, y) for b in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert np.all(np.diff(path) > 0) and path[-1] < 0
    cal = stats.calibration(y[:, None], p[:, None])
    assert np.isnan(cal.iloc[0]["calibration_slope"])
    # the intercept (slope fixed at 1) still exists: root of sum(y - sigmoid(x + a)) = 0
    from scipy.optimize import brentq
    a = brentq(lambda a: np.sum(y - 1 / (1 + np.exp(-(x + a)))), -20, 20, xtol=1e-12)
    assert cal.iloc[0]["calibration_intercept"] == pytest.approx(a, abs=1e-6)


def test_calibration_slope_of_barely_overlapping_classes_equals_sklearn():
    from sklearn.linear_model import LogisticRegression

    y = np.array([0, 0, 1, 0, 1, 1], float)  # one negative above one positive: overlap, a finite slope
    p = np.array([.1, .2, .3, .7, .8, .9])
    x = np.log(p / (1 - p))
    fit = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(x[:, None], y)
    cal = stats.calibration(y[:, None], p[:, None])
    assert cal.iloc[0]["calibration_slope"] == pytest.approx(fit.coef_[0, 0], abs=1e-4)


def test_calibration_intervals_equal_an_explicit_patient_resample_loop():
    from scipy.optimize import brentq
    from sklearn.linear_model import LogisticRegression

    y, s, subject = _patient_problem(n_patients=80, seed=4)
    p = 1 / (1 + np.exp(-s))  # scores as probabilities
    cal = stats.calibration(y, p, ["a", "b", "c"], groups=subject, n_iterations=25, seed=7)
    ids = np.unique(subject)
    members = [np.flatnonzero(subject == g) for g in ids]
    rng = np.random.default_rng(7)
    draws = [np.concatenate([members[g] for g in rng.integers(0, ids.size, size=ids.size)]) for _ in range(25)]
    for t, name in enumerate(["a", "b", "c"]):
        slopes, intercepts = [], []
        for rows in draws:
            rows = rows[~np.isnan(y[rows, t])]
            x, lab = np.log(p[rows, t] / (1 - p[rows, t])), y[rows, t]
            fit = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(x[:, None], lab)
            slopes.append(fit.coef_[0, 0])
            intercepts.append(brentq(lambda a, lab=lab, x=x: np.sum(lab - 1 / (1 + np.exp(-(x + a)))), -20, 20,
                                     xtol=1e-12))
        assert (cal.loc[name, "slope_low"], cal.loc[name, "slope_high"]) == pytest.approx(
            tuple(np.percentile(slopes, [2.5, 97.5])), abs=1e-4)
        assert (cal.loc[name, "intercept_low"], cal.loc[name, "intercept_high"]) == pytest.approx(
            tuple(np.percentile(intercepts, [2.5, 97.5])), abs=1e-6)
        assert cal.loc[name, "calibration_n_skipped"] == 0


def test_calibration_interval_skips_separated_resamples():
    y = np.array([0, 0, 1, 0, 1, 1], float)[:, None]  # overlap rests on rows 2 and 3 alone
    p = np.array([.1, .2, .3, .7, .8, .9])[:, None]
    cal = stats.calibration(y, p, n_iterations=200, seed=1)
    rng = np.random.default_rng(1)
    skipped = 0
    for _ in range(200):
        rows = rng.integers(0, 6, size=6)
        lab, x = y[rows, 0], p[rows, 0]
        overlap = (lab.min() < lab.max() and x[lab == 1].min() < x[lab == 0].max()
                   and x[lab == 0].min() < x[lab == 1].max())
        skipped += not overlap
    assert cal.iloc[0]["calibration_n_skipped"] == skipped > 0


def test_headline_targets_are_chosen_on_validation(tmp_path):
    """Issue 21, E: the headline (calibration, subgroups) is the best on validation, not on test."""
    y, s, names = _write_run(tmp_path, n=300)
    rng = np.random.default_rng(9)
    subject = np.repeat(np.arange(100), 3)
    with np.load(tmp_path / "predictions_test.npz") as npz:
        arrays = dict(npz)
    extra = dict(subject_id=subject, sex=np.repeat(rng.integers(0, 2, 100).astype(float), 3),
                 age=rng.uniform(20, 90, 300), race=rng.choice(["white", "black"], 300))
    np.savez(tmp_path / "predictions_test.npz", **{**arrays, **extra})
    # validation: the chance target (urea_nitrogen_low_est, d = 0 on test) is the strong one
    y_val = arrays["y_true"].copy()
    s_val = arrays["y_score"].copy()
    s_val[:, 0] = rng.random(300)  # ntprobnp_high_est: chance on validation
    s_val[:, 1] = np.nan_to_num(y_val[:, 1]) * 0.5 + 0.5 * rng.random(300)
    np.savez(tmp_path / "predictions_val.npz", **{**arrays, "y_score": s_val.astype(np.float32), **extra})
    out = evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=20, seed=0, n_headline=1))
    val_auc = _sklearn_auroc(y_val.astype(float), s_val.astype(float))
    est = [i for i, n in enumerate(names) if n.endswith("_est")]
    best_val = names[max(est, key=lambda i: val_auc[i])]
    best_test = names[max(est, key=lambda i: _sklearn_auroc(y.astype(float), s.astype(float))[i])]
    assert best_val == "urea_nitrogen_low_est" != best_test
    head = pd.read_csv(out / "headline.csv")
    assert list(head["target"]) == [best_val] and (head["chosen_on"] == "val").all()
    assert head.loc[0, "auroc_val"] == pytest.approx(val_auc[1], abs=1e-9)
    assert evaluate.read_headline(out / "headline.csv") == [best_val]
    assert set(pd.read_csv(out / "subgroups.csv")["target"]) == {best_val}
    calib = pd.read_csv(out / "calibration.csv").set_index("target")
    assert calib["slope_low"].notna().tolist() == [n == best_val for n in names]


def test_a_subgroup_with_fewer_than_ten_of_a_class_gets_no_interval():
    """Issue 21, defect 1: 6 positives and 6 negatives gave 1.000 (1.000, 1.000)."""
    from labecg import tables

    rng = np.random.default_rng(0)
    n = 300
    y = (rng.random((n, 1)) < 0.4).astype(float)
    s = y + 0.5 * rng.normal(size=(n, 1))
    race = np.array(["white"] * n, dtype=object)
    pos, neg = np.flatnonzero(y[:, 0] == 1), np.flatnonzero(y[:, 0] == 0)
    race[pos[:6]], race[neg[:6]] = "asian", "asian"  # 6/6
    race[pos[6:16]], race[neg[6:30]] = "black", "black"  # 10/24: just enough
    s[pos[:6], 0], s[neg[:6], 0] = 5.0, -5.0  # perfectly separated: the old interval was (1.000, 1.000)
    labels = stats.subgroup_labels(np.zeros(n), np.full(n, 50.0), race)
    sub = stats.subgroup_auroc(y, s, ["k"], labels, groups=np.arange(n), n_iterations=200, seed=0)
    row = sub.set_index("subgroup").loc["asian"]
    assert (row.n_pos, row.n_neg) == (6, 6) and row.auroc == 1.0
    assert bool(row.too_few) and np.isnan(row.low) and np.isnan(row.high)
    # n_skipped by hand: resamples of the patients in which the asian subgroup lacks a class
    draws = np.random.default_rng(0)
    asian_pos, asian_neg = set(pos[:6]), set(neg[:6])
    skipped = 0
    for _ in range(200):
        drawn = set(draws.integers(0, n, size=n))
        skipped += not (drawn & asian_pos and drawn & asian_neg)
    assert row.n_skipped == skipped
    black = sub.set_index("subgroup").loc["black"]
    assert not black.too_few and black.low < black.high
    assert not sub.set_index("subgroup").loc["all"].too_few
    table = tables.format_subgroups(sub.assign(target="potassium_high_est"), pd.DataFrame(
        {"label": ["Potassium"], "direction": ["high"], "threshold": [5.1], "unit": ["mEq/L"], "task": ["est"],
         "category": ["El."]}, index=pd.Index(["potassium_high_est"], name="target")))
    cell = table.set_index("Subgroup").iloc[:, -1]
    assert cell["asian"] == f"1.000 (too few) [6/6, {skipped} skipped]"
    assert "too few" not in cell["black"]


def test_average_precision_equals_sklearn_with_ties_and_masks():
    from sklearn.metrics import average_precision_score

    y, s = _random_problem(n=300, T=12, seed=3, decimals=1)
    ap = metrics.average_precision(y, s)
    for t in range(y.shape[1]):
        m = ~np.isnan(y[:, t])
        expected = average_precision_score(y[m, t], s[m, t]) if y[m, t].sum() > 0 else np.nan
        assert ap[t] == pytest.approx(expected, abs=1e-12, nan_ok=True)


def _slow_simultaneous(y, s, tasks, n_iterations, seed, level=0.95):
    """An explicit loop: resample rows, sklearn AUROC per target, then the max |t| over each task's targets."""
    point = _sklearn_auroc(y, s)
    draws = np.array([_sklearn_auroc(y[idx], s[idx]) for idx in resample_indices(len(y), n_iterations, seed)])
    low, high, crit = np.full(len(point), np.nan), np.full(len(point), np.nan), {}
    for task in dict.fromkeys(tasks):
        cols = [t for t in range(len(point)) if tasks[t] == task]
        se = {t: np.std(draws[~np.isnan(draws[:, t]), t], ddof=1) for t in cols}
        maxima = []
        for i in range(n_iterations):
            devs = [abs(draws[i, t] - point[t]) / se[t] for t in cols if not np.isnan(draws[i, t])]
            if devs:
                maxima.append(max(devs))
        crit[task] = np.quantile(maxima, level)
        for t in cols:
            low[t] = max(0.0, point[t] - crit[task] * se[t])
            high[t] = min(1.0, point[t] + crit[task] * se[t])
    return low, high, crit


def test_simultaneous_intervals_equal_a_slow_max_statistic_loop():
    """Issue 21, D: the max-statistic band over a task's targets, against an explicit loop over resamples."""
    y, s = _random_problem(n=150, T=7, seed=5)
    tasks = np.array(["est", "est", "est", "mon30", "mon30", "mon60", "mon60"], dtype=object)
    boot, its = bootstrap(y, s, 60, seed=2, return_iterations=True)
    sim, crit = stats.simultaneous_intervals(boot["auroc"].to_numpy()[:7], its[:, :7], tasks)
    low, high, slow_crit = _slow_simultaneous(y, s, tasks, 60, 2)
    np.testing.assert_allclose(sim["low"], low, atol=1e-12)
    np.testing.assert_allclose(sim["high"], high, atol=1e-12)
    assert crit == pytest.approx(slow_crit, abs=1e-12)
    # simultaneous intervals are wider than the pointwise ones of more than one target
    assert crit["est"] > norm.ppf(0.975) * 0.9 and (sim["high"] - sim["low"]).gt(0).all()


def test_evaluate_run_writes_auprc_prevalence_and_multiplicity(tmp_path):
    from sklearn.metrics import average_precision_score

    y, s, names = _write_run(tmp_path, n=300)
    out = evaluate_run(EvaluateConfig(run_dir=tmp_path, n_iterations=40, seed=1))
    res = evaluate.read_results(out / "results.csv")
    for t, name in enumerate(names):
        m = ~np.isnan(y[:, t])
        assert res.loc[name, "auprc"] == pytest.approx(average_precision_score(y[m, t], s[m, t]), abs=1e-9)
        assert res.loc[name, "prevalence"] == pytest.approx(y[m, t].astype(float).mean(), abs=1e-12)
    tasks = res.drop(index="macro")["task"].to_numpy(dtype=object)
    low, _, crit = _slow_simultaneous(y.astype(float), s.astype(float), tasks, 40, 1)
    np.testing.assert_allclose(res["sim_low"].drop("macro"), low, atol=1e-9)
    multi = evaluate.read_multiplicity(out / "multiplicity.csv").set_index("task")
    assert multi.loc["est", "critical_value"] == pytest.approx(crit["est"], abs=1e-9)
    est = res.drop(index="macro")[lambda f: f["task"] == "est"]
    assert multi.loc["est", "n_significant"] == (est["low"] > 0.7).sum()
    assert multi.loc["est", "n_significant_simultaneous"] == (pd.Series(low)[tasks == "est"] > 0.7).sum()


def test_evaluate_run_decides_comparability_from_the_runs_targets_json(tmp_path):
    """Issue 21, defect 5: the difference column follows targets.json source.synthetic, nothing else."""
    _write_run(tmp_path, n=200)
    record = json.loads((tmp_path / "targets.json").read_text())
    for synthetic, filled in ((True, False), (False, True)):
        record["source"] = {"synthetic": synthetic}
        (tmp_path / "targets.json").write_text(json.dumps(record))
        out = evaluate.evaluate_run(evaluate.EvaluateConfig(run_dir=tmp_path, n_iterations=5))
        cmp = evaluate.read_paper_comparison(out / "paper_comparison.csv")
        assert len(cmp) and cmp["difference"].notna().all() == filled and (cmp["comparable"] == filled).all()
