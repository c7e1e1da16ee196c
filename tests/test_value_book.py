"""The book's values section (#25): the value variant of the fuller build, its summaries, check and scatter.

Expected verdicts, tables and points are worked by hand from small frames; the planted and null
labs come from :mod:`labecg.planted`'s table, read independently of the check.
"""

import numpy as np
import pandas as pd
import pytest

from labecg import planted, selfcheck
from labecg.evaluate import VALUE_COLUMNS


def _values(rows):
    """A values.csv frame (evaluate.VALUE_COLUMNS) from (lab, task, spearman, low, high, mae, flags) rows."""
    out = []
    for lab, task, rho, low, high, mae, flags in rows:
        row = {c: np.nan for c in VALUE_COLUMNS}
        row.update(lab=lab, task=task, unit="u", n=50, mae=mae, spearman=rho, low=low, high=high,
                   name=f"{lab}_value_{task}", n_patients=40, n_skipped=0, low_target="", high_target="")
        for d, (auc_v, auc_f, diff, dlo, dhi) in flags.items():
            row.update({f"{d}_target": f"{lab}_{d}_{task}", f"{d}_auroc_value": auc_v, f"{d}_auroc_flag": auc_f,
                        f"{d}_difference": diff, f"{d}_difference_low": dlo, f"{d}_difference_high": dhi})
        out.append(row)
    return pd.DataFrame(out, columns=VALUE_COLUMNS)


FRAME = _values([
    ("potassium", "est", 0.60, 0.50, 0.70, 0.30, {"low": (0.80, 0.75, 0.05, 0.01, 0.09),
                                                  "high": (0.85, 0.86, -0.01, -0.05, 0.03)}),
    ("creatinine", "est", 0.10, -0.02, 0.22, 0.20, {"high": (0.60, 0.70, -0.10, -0.16, -0.04)}),
    ("sodium", "est", 0.05, -0.10, 0.15, 3.0, {}),
    ("glucose", "est", -0.02, -0.12, 0.08, 20.0, {}),
    ("platelet_count", "est", 0.20, 0.11, 0.29, 40.0, {}),
    ("potassium", "mon30", 0.40, 0.20, 0.55, 0.35, {}),
    ("magnesium", "est", 0.30, 0.20, 0.40, 0.1, {}),  # strength 1: neither planted nor null here
])


def test_value_check_by_hand():
    effects = planted.planted_effects_frame()
    strength = dict(zip(effects["lab"], effects["strength"]))
    assert strength["potassium"] == 3 and strength["creatinine"] == 2 and strength["magnesium"] == 1
    assert {"Sodium", "Glucose", "Platelet Count"} <= set(planted.ecg_null_labs())
    checked = selfcheck.value_check(FRAME, effects)
    table = checked["table"].set_index("lab")
    # the nulls' highest upper bound is platelet_count's 0.29: potassium's 0.60 is above it, creatinine's 0.10 not
    assert checked["null_high"] == pytest.approx(0.29)
    assert table.loc["potassium", "verdict"] == "recovered" and table.loc["creatinine", "verdict"] == "not above the nulls"
    assert table.loc["sodium", "verdict"] == "near 0" and table.loc["glucose", "verdict"] == "near 0"
    assert table.loc["platelet_count", "verdict"] == "unexpected signal"
    assert "magnesium" not in table.index and list(table["role"]).count("planted") == 2  # estimation only
    assert (checked["n_recovered"], checked["n_planted"], checked["n_null_near_0"], checked["n_null"]) == (1, 2, 2, 3)
    assert checked["median_spearman_planted"] == pytest.approx(0.35)  # median of 0.60, 0.10
    assert checked["median_spearman_null"] == pytest.approx(0.05)  # median of 0.05, -0.02, 0.20
    assert checked["text"].startswith("The value model does not fully recover") and "1 of 2 planted" in checked["text"]
    good = FRAME[FRAME["lab"].isin(["potassium", "sodium", "glucose"])]
    assert selfcheck.value_check(good, effects)["text"].startswith("The value model recovers the planted relations")
    assert "make book-full" in selfcheck.value_check(None, effects)["text"]
    assert "not synthetic" in selfcheck.value_check(FRAME, effects.iloc[:0])["text"]


def test_values_summary_by_hand():
    absent = selfcheck.values_summary(None)
    assert "make book-full" in absent["text"] and "--objective value" in absent["text"] and absent["mae"].empty
    out = selfcheck.values_summary(FRAME, headline=["creatinine_high_est", "potassium_low_est", "creatinine_low_est"],
                                   n_labs=3)
    # headline labs first (creatinine, potassium), then the best remaining estimation Spearman (magnesium 0.30)
    assert out["labs"] == ["creatinine_value_est", "potassium_value_est", "magnesium_value_est"]
    assert list(out["mae"]["MAE"]) == list(FRAME["mae"]) and len(out["mae"]) == len(FRAME)
    auroc = out["auroc"].set_index("target")
    assert sorted(auroc.index) == ["creatinine_high_est", "potassium_high_est", "potassium_low_est"]
    assert auroc.loc["potassium_low_est", "value − flag"] == pytest.approx(0.05)
    assert out["median_difference"] == pytest.approx(-0.01)  # median of 0.05, -0.01, -0.10
    assert (out["n_difference_above"], out["n_difference_below"]) == (1, 1)
    assert "median of -0.010" in out["text"]


def test_value_scatter_draws_the_measured_values():
    from labecg.figures import plot_value_scatter

    pred = {"target_names": np.array(["potassium_value_est", "creatinine_value_est"]),
            "y_true": np.array([[4.0, 1.0], [np.nan, 2.0], [5.0, np.nan]]),
            "y_score": np.array([[4.2, 1.1], [4.4, 1.8], [4.6, 1.5]])}
    fig = plot_value_scatter(pred, FRAME, ["creatinine_value_est", "potassium_value_est"])
    axes = fig.axes
    np.testing.assert_allclose(axes[0].collections[0].get_offsets(), [[1.0, 1.1], [2.0, 1.8]])
    np.testing.assert_allclose(axes[1].collections[0].get_offsets(), [[4.0, 4.2], [5.0, 4.6]])
    assert axes[1].get_xlabel() == "measured (u)" and "potassium" in axes[1].get_title()
    assert axes[0].get_xscale() == "linear"
    wide = {"target_names": np.array(["ntprobnp_value_est"]), "y_true": np.array([[20.0], [9000.0], [300.0]]),
            "y_score": np.array([[50.0], [2000.0], [400.0]])}
    frame = FRAME.assign(name=["ntprobnp_value_est"] + list(FRAME["name"][1:]))
    assert plot_value_scatter(wide, frame, ["ntprobnp_value_est"]).axes[0].get_xscale() == "log"
    empty = plot_value_scatter(None, None, [])
    assert "No value run" in empty.axes[0].texts[0].get_text()


def test_the_fuller_build_trains_the_value_variant(tmp_path):
    from labecg.book import BookConfig, _run_dirs, notebook_parameters
    from labecg.train import variant_run_dir, variant_settings

    assert variant_settings("value") == {"objective": "value"}
    default = BookConfig(run_dir=tmp_path / "runs" / "default", book_root=tmp_path)
    full = BookConfig(run_dir=tmp_path / "runs" / "default", book_root=tmp_path, full=True)
    assert notebook_parameters(default)["variants"] == ["fusion", "tabular"]
    assert notebook_parameters(full)["variants"] == ["fusion", "tabular", "value"]
    assert variant_run_dir(full.run_dir, "value") in _run_dirs(full)
    assert variant_run_dir(full.run_dir, "value") not in _run_dirs(default)
    assert variant_run_dir(full.run_dir, "value").name == "default-value"
    with pytest.raises(ValueError, match="flag model"):
        BookConfig(variants=("value", "fusion"))
