"""Tables in the paper's format, compared with strings written by hand; paper comparison; every figure draws."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from labecg import catalog, figures, paper, tables  # noqa: E402
from labecg.targets import lab_slug  # noqa: E402

TASK_HORIZON = {"est": None, "mon30": 30, "mon60": 60, "mon120": 120}


def _results(rows):
    """A results frame from (label, direction, threshold, unit, category, task, auroc, low, high)."""
    records, names = [], []
    for label, direction, threshold, unit, category, task, auc, low, high in rows:
        names.append(f"{lab_slug(label)}_{direction}_{task}")
        records.append({"task": task, "lab": lab_slug(label), "label": label, "direction": direction,
                        "threshold": threshold, "unit": unit, "category": category,
                        "horizon_min": TASK_HORIZON[task], "auroc": auc, "low": low, "high": high,
                        "n_pos": 10, "n_neg": 90, "n_skipped": 0, "significant": low > 0.7})
    names.append("macro")
    records.append({"task": None, "auroc": 0.7, "low": 0.69, "high": 0.71, "n_pos": 1, "n_neg": 1,
                    "n_skipped": 0, "significant": False})
    return pd.DataFrame(records, index=pd.Index(names, name="target", dtype=object))


def test_format_threshold_and_auroc():
    assert tables.format_threshold("high", 353.0, "pg/mL") == "≥353 pg/mL"
    assert tables.format_threshold("low", 6.0, "mg/dL") == "≤6 mg/dL"
    assert tables.format_threshold("high", 17.50, "g/dL") == "≥17.5 g/dL"
    assert tables.format_threshold("low", 0.01, "K/uL") == "≤0.01 K/uL"
    assert tables.format_threshold("high", 46.300000000000004, "fL") == "≥46.3 fL"
    assert tables.format_threshold("high", 51.0, "%") == "≥51 %"
    assert tables.format_threshold("high", 1200.0, None) == "≥1200"
    assert tables.format_auroc(0.8821, 0.86, 0.9024) == "0.882 (0.860, 0.902)"
    assert tables.format_auroc(float("nan"), float("nan"), float("nan")) == "–"
    with pytest.raises(ValueError, match="direction"):
        tables.format_threshold("up", 1.0, "mg/dL")


def test_table_estimation_keeps_significant_sorted_by_auroc():
    res = _results([
        ("Urea Nitrogen", "low", 6.0, "mg/dL", "Re.", "est", 0.860, 0.822, 0.890),
        ("NTproBNP", "high", 353.0, "pg/mL", "Ca.", "est", 0.882, 0.860, 0.902),
        ("Potassium", "high", 5.1, "mEq/L", "Me.", "est", 0.75, 0.70, 0.80),  # low == 0.7: out
        ("INR(PT)", "high", 1.1, "ratio", "Co.", "est", 0.734, 0.723, 0.746),
        ("NTproBNP", "high", 353.0, "pg/mL", "Ca.", "mon30", 0.95, 0.94, 0.96),  # other task
        ("Creatinine", "low", 0.5, "mg/dL", "Re./Ca.", "est", 0.825, 0.792, 0.857),
        ("Lactate", "high", 2.0, "mmol/L", None, "est", 0.801, 0.7004, 0.89),  # no category; shown 0.700 yet above 0.7
    ])
    table = tables.table_estimation(res)
    assert list(table.columns) == ["Value", "Threshold", "Estimation AUROC", *tables.COUNT_COLUMNS]
    assert table.iloc[:, :3].to_numpy().tolist() == [
        ["NTproBNP [Ca.]", "≥353 pg/mL", "0.882 (0.860, 0.902)"],
        ["Urea Nitrogen [Re.]", "≤6 mg/dL", "0.860 (0.822, 0.890)"],
        ["Creatinine [Re./Ca.]", "≤0.5 mg/dL", "0.825 (0.792, 0.857)"],
        ["Lactate", "≥2 mmol/L", "0.801 (0.700, 0.890)"],
        ["INR PT [Co.]", "≥1.1 ratio", "0.734 (0.723, 0.746)"],
    ]
    assert list(table.index)[:2] == ["ntprobnp_high_est", "urea_nitrogen_low_est"]
    # the same from a frame read back from CSV, with a ``target`` column
    assert tables.table_estimation(res.reset_index()).equals(table)


def test_table_monitoring_sorts_by_mean_of_significant_horizons_and_bolds_best():
    res = _results([
        # significant at all three horizons: mean 0.800
        ("Creatinine", "high", 1.2, "mg/dL", "Re./Ca.", "mon30", 0.794, 0.781, 0.808),
        ("Creatinine", "high", 1.2, "mg/dL", "Re./Ca.", "mon60", 0.801, 0.790, 0.812),
        ("Creatinine", "high", 1.2, "mg/dL", "Re./Ca.", "mon120", 0.804, 0.795, 0.815),
        # significant only at 120 min: sorted by 0.821 although the three-horizon mean is 0.796
        ("Hemoglobin", "high", 17.5, "g/dL", "He.", "mon30", 0.786, 0.609, 0.919),
        ("Hemoglobin", "high", 17.5, "g/dL", "He.", "mon60", 0.782, 0.676, 0.867),
        ("Hemoglobin", "high", 17.5, "g/dL", "He.", "mon120", 0.821, 0.736, 0.894),
        # no significant horizon: left out
        ("Potassium", "high", 5.1, "mEq/L", "Me.", "mon30", 0.9, 0.6, 0.95),
        ("Potassium", "high", 5.1, "mEq/L", "Me.", "mon60", 0.9, 0.69, 0.95),
        # only the 60 min. target exists
        ("Ferritin", "low", 13.0, "ng/mL", "Me.", "mon60", 0.760, 0.710, 0.800),
        # estimation rows are not Table 2's
        ("NTproBNP", "high", 353.0, "pg/mL", "Ca.", "est", 0.99, 0.98, 1.0),
    ])
    table = tables.table_monitoring(res)
    assert list(table.columns) == ["Value", "Threshold", "30 min. AUROC", "60 min. AUROC", "120 min. AUROC",
                                   "30 min. n", "60 min. n", "120 min. n"]
    assert table.iloc[:, :5].to_numpy().tolist() == [
        ["Hemoglobin [He.]", "≥17.5 g/dL", "0.786 (0.609, 0.919)", "0.782 (0.676, 0.867)", "0.821 (0.736, 0.894)"],
        ["Creatinine [Re./Ca.]", "≥1.2 mg/dL", "0.794 (0.781, 0.808)", "0.801 (0.790, 0.812)", "0.804 (0.795, 0.815)"],
        ["Ferritin [Me.]", "≤13 ng/mL", "–", "0.760 (0.710, 0.800)", "–"],
    ]
    # the best horizon, decided once on the AUROCs, set in bold by the Markdown and the page alike
    assert table.attrs["best"] == {"hemoglobin_high": "120 min. AUROC", "creatinine_high": "120 min. AUROC",
                                   "ferritin_low": "60 min. AUROC"}
    assert tables.to_markdown(table).splitlines()[2].startswith(
        "| Hemoglobin [He.] | ≥17.5 g/dL | 0.786 (0.609, 0.919) | 0.782 (0.676, 0.867) | **0.821 (0.736, 0.894)** |")
    assert "| **0.760 (0.710, 0.800)** | – | – | 10 / 90 · 10.0% | – |" in tables.to_markdown(table).splitlines()[4]
    styles = tables.style_table(table)._compute().ctx  # {(row, col): [(prop, value)]}
    assert sorted(k for k, v in styles.items() if ("font-weight", "bold") in v) == [(0, 4), (1, 4), (2, 3)]


def test_to_markdown():
    table = pd.DataFrame({"Value": ["a|b", "c"], "AUROC": ["0.9 (0.8, 1.0)", "–"]})
    assert tables.to_markdown(table) == (
        "| Value | AUROC |\n|---|---|\n| a\\|b | 0.9 (0.8, 1.0) |\n| c | – |\n")


def _paper_as_results():
    """The paper's published values as a results frame (bounds put in order)."""
    label_of = {v: k for k, v in catalog.PAPER_NAMES.items()}
    published = paper.read_paper_tables()
    rows = [(label_of.get(r.value, r.value), r.direction, r.threshold, r.unit, r.category, r.task,
             r.auroc, min(r.low, r.high), max(r.low, r.high)) for r in published.itertuples()]
    return _results(rows)


def test_paper_tables_are_reproduced_from_published_values():
    res = _paper_as_results()
    t1 = tables.table_estimation(res)
    # rows copied by hand from the paper's Table 1
    assert t1.iloc[:, :3].iloc[0].tolist() == ["NTproBNP [Ca.]", "≥353 pg/mL", "0.882 (0.860, 0.902)"]
    assert t1.iloc[:, :3].iloc[6].tolist() == ["Hematocrit [He.]", "≥51 %", "0.789 (0.731, 0.840)"]
    assert t1.iloc[:, :3].iloc[16].tolist() == ["INR PT [Co.]", "≥1.1 ratio", "0.734 (0.723, 0.746)"]
    assert t1.iloc[:, :3].iloc[22].tolist() == ["Lymphocytes [Im.]", "≤18 %", "0.720 (0.710, 0.731)"]
    assert len(t1) == 23  # "23 abnormalities across 19 unique laboratory values"
    t2 = tables.table_monitoring(res)
    # the paper's row order (its caption's rule), as printed
    expected = ["NTproBNP", "Urea Nitrogen", "Creatinine", "Hemoglobin", "Iron Binding", "Transferrin",
                "Creatinine", "Hematocrit", "Urea Nitrogen", "Albumin", "RDW-SD", "Hemoglobin", "eAG",
                "Abs. Basophils", "Bicarbonate", "Anion Gap", "RDW", "Creatine Kinase", "Monocytes",
                "Hematocrit", "MCHC", "Bilirubin, Total", "Red Blood Cells", "Lymphocytes", "INR PT",
                "Calcium, Total", "PT"]
    assert [v.split(" [")[0] for v in t2["Value"]] == expected
    assert t2.iloc[:, :5].iloc[4].tolist() == ["Iron Binding [Im.]", "≤260 ug/dL", "0.728 (0.615, 0.837)",
                                   "0.803 (0.737, 0.873)", "0.802 (0.745, 0.861)"]


def test_paper_significant_counts_equal_the_papers_text():
    # section 4 of the paper, in words: 23 in estimation; 15, 25 and 26 at 30, 60 and 120 min.
    # (the 30 min. count leaves out Bicarbonate, whose printed bounds are swapped)
    assert paper.significant_counts() == {"est": 23, "mon30": 15, "mon60": 25, "mon120": 26}


def test_compare_with_paper_matches_on_name_direction_task():
    res = _results([
        ("NTproBNP", "high", 353.0, "pg/mL", "Ca.", "est", 0.85, 0.83, 0.87),
        ("NTproBNP", "low", 20.0, "pg/mL", "Ca.", "est", 0.9, 0.8, 0.95),  # not in the paper
        ("INR(PT)", "high", 1.2, "ratio", "Co.", "mon60", 0.70, 0.68, 0.72),
        ("Potassium", "high", 5.1, "mEq/L", "Me.", "est", 0.8, 0.75, 0.85),  # not in the paper
    ])
    cmp = tables.compare_with_paper(res)
    assert list(cmp["target"]) == ["ntprobnp_high_est", "inr_pt_high_mon60"]
    first = cmp.iloc[0]
    assert (first["value"], first["paper_auroc"], first["paper_low"], first["paper_high"]) == (
        "NTproBNP", 0.882, 0.860, 0.902)
    assert first["difference"] == pytest.approx(0.85 - 0.882)
    second = cmp.iloc[1]
    assert (second["value"], second["task"], second["paper_auroc"], second["paper_threshold"],
            second["threshold"]) == ("INR PT", "mon60", 0.733, 1.1, 1.2)
    assert second["difference"] == pytest.approx(0.70 - 0.733)
    assert (cmp["paper_version"] == "arXiv v1").all()


def test_figures_return_figures_for_many_targets():
    res = _paper_as_results()
    rng = np.random.default_rng(0)
    n_abnormalities = len({(r.label, r.direction) for r in res.drop(index="macro").itertuples()})
    n_categories = res.drop(index="macro")["category"].fillna("–").nunique()
    for fig in (figures.plot_forest(res), figures.plot_forest(res, tasks=("est",))):
        # one panel, a labelled row per abnormality and a bold heading per category (#23)
        assert isinstance(fig, Figure) and len(fig.axes) == 1
        assert fig.get_size_inches()[0] <= figures.CONTENT_WIDTH_IN + 1e-9
        plt.close(fig)
    fig = figures.plot_forest(res)
    labels = fig.axes[0].get_yticklabels()
    assert len(labels) == n_abnormalities + n_categories
    assert sum(l.get_fontweight() == "bold" for l in labels) == n_categories
    plt.close(fig)
    fig = figures.plot_horizon_heatmap(res)
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].get_yticklabels()) == len({(r.label, r.direction) for r in res.drop(index="macro").itertuples()})
    plt.close(fig)

    names = list(res.index[:-1])
    y = (rng.random((300, len(names))) < 0.3).astype(float)
    s = rng.random(y.shape) + 0.5 * y
    fig = figures.plot_roc_curves(y, s, names, res, top=5)
    assert len(fig.axes[0].get_legend().get_texts()) == 5
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "NTproBNP ≥353 pg/mL: 0.882 (0.860, 0.902)"
    plt.close(fig)
    # without results: the 3 targets of highest AUROC, each curve sklearn's ROC of its observed
    # rows; a target with one class only has no AUROC and no curve
    from sklearn.metrics import roc_auc_score

    y_missing = y.copy()
    y_missing[:100, 0] = np.nan
    y_missing[:, 1] = 1.0
    y_missing[:, 2] = (s[:, 2] > 0.6).astype(float)  # perfectly separated: AUROC 1, first
    observed = {n: ~np.isnan(y_missing[:, i]) for i, n in enumerate(names)}
    want = {n: roc_auc_score(y_missing[observed[n], i], s[observed[n], i]) for i, n in enumerate(names)
            if len(np.unique(y_missing[observed[n], i])) == 2}
    best = sorted(want, key=want.get, reverse=True)[:3]
    assert best[0] == names[2] and names[1] not in want
    fig = figures.plot_roc_curves(y_missing, s, names, top=3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"{n}: {want[n]:.3f}" for n in best]
    for line, n in zip(ax.lines, best):
        i = names.index(n)
        fpr, tpr, _ = roc_curve(y_missing[observed[n], i], s[observed[n], i])
        np.testing.assert_array_equal(line.get_xdata(), fpr)
        np.testing.assert_array_equal(line.get_ydata(), tpr)
    assert len(ax.lines) == 3 + 1  # and the chance diagonal
    plt.close(fig)

    targets = {"targets": [{"name": n, "label": r.label, "direction": r.direction, "task": r.task,
                            "category": r.category, "threshold": r.threshold, "unit": r.unit, "counts": {"test": {"pos": 10, "neg": 30}}}
                           for n, r in zip(names, res.iloc[:-1].itertuples())]}
    fig = figures.plot_label_prevalence(targets)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_legend().get_texts()) == 4
    assert fig.axes[0].patches[0].get_width() == pytest.approx(0.25)
    plt.close(fig)


def test_format_paper_comparison_on_a_hand_made_row():
    comparison = pd.DataFrame([{
        "target": "creatinine_low_est", "value": "Creatinine", "category": "Re./Ca.", "direction": "low",
        "task": "est", "paper_threshold": 0.5, "threshold": 0.5, "unit": "mg/dL", "paper_auroc": 0.825,
        "paper_low": 0.792, "paper_high": 0.857, "auroc": 0.8, "low": 0.75, "high": 0.85,
        "difference": 0.8 - 0.825, "paper_version": "arXiv v1"}])
    comparison.attrs["paper_version"] = "arXiv v1"
    shown = tables.format_paper_comparison(comparison)
    assert list(shown.columns) == ["Abnormality", "Task", "Paper threshold", "This run's threshold",
                                   "Paper (arXiv v1)", "This run", *tables.COUNT_COLUMNS, "Difference"]
    assert shown.iloc[0].tolist() == ["Creatinine [Re./Ca.]", "Estimation", "≤0.5 mg/dL", "≤0.5 mg/dL",
                                      "0.825 (0.792, 0.857)", "0.800 (0.750, 0.850)", "–", "–", "–", "–",
                                      "-0.025"]


def test_style_table_bolds_the_cells_the_table_names_and_hides_the_index():
    table = pd.DataFrame({"Value": ["A", "B"], "30 min. AUROC": ["0.710 (0.70, 0.72)", "0.800 (0.79, 0.81)"],
                          "60 min. AUROC": ["0.750 (0.74, 0.76)", "–"]}, index=["a_high", "b_low"])
    table.attrs["best"] = {"a_high": "60 min. AUROC", "b_low": "30 min. AUROC"}
    html = tables.style_table(table).to_html()
    assert "a_high" not in html and "b_low" not in html
    styles = tables.style_table(table)._compute().ctx  # {(row, col): [(prop, value)]}
    bold = sorted(k for k, v in styles.items() if ("font-weight", "bold") in v)
    assert bold == [(0, 2), (1, 1)]
    table.attrs = {}
    assert not [k for k, v in tables.style_table(table)._compute().ctx.items() if ("font-weight", "bold") in v]


def test_issue14_figures_and_page_tables_from_an_evaluated_run(tmp_path):
    import matplotlib.pyplot as plt

    from labecg import evaluate, stats

    rng = np.random.default_rng(0)
    n, T = 300, 3
    names = ["potassium_high_est", "calcium_low_est", "sodium_low_mon30"]
    y = (rng.random((n, T)) < 0.3).astype(float)
    s = 1 / (1 + np.exp(-(rng.normal(size=(n, T)) + 1.5 * y)))
    subject = np.repeat(np.arange(100), 3)
    results = stats.bootstrap(y, s, 40, target_names=names)
    patient = stats.bootstrap(y, s, 40, groups=subject, target_names=names)
    meta = pd.DataFrame({"task": ["est", "est", "mon30"], "lab": ["potassium", "calcium", "sodium"],
                         "label": ["Potassium", "Calcium, Total", "Sodium"], "direction": ["high", "low", "low"],
                         "threshold": [5.1, 8.4, 135.0], "unit": ["mEq/L", "mg/dL", "mEq/L"],
                         "category": ["Me.", "Me.", "Me."], "horizon_min": [None, None, 30]},
                        index=pd.Index(names, name="target"))
    calib = stats.calibration(y, s, names)
    res = evaluate.assemble_results(results, meta, boot_patient=patient, n_patients=np.full(4, 100), calib=calib)
    headline = evaluate.headline_targets(res, top=2)
    assert headline == list(res.loc[["potassium_high_est", "calcium_low_est"], "auroc"]
                            .sort_values(ascending=False).index)
    rel = stats.reliability_frame(y, s, names)
    labels = stats.subgroup_labels(np.repeat(rng.integers(0, 2, 100), 3).astype(float),
                                      rng.uniform(20, 90, n), rng.choice(["white", "black"], n))
    sub = stats.subgroup_auroc(y, s, names, labels, headline, groups=subject, n_iterations=20)
    # intervals: the estimation targets, best first; per row the ECG-level bar above, the
    # patient-level bar below, the point at the AUROC (read back from the drawn artists)
    est = res.loc[[t for t in names if res.at[t, "task"] == "est"]].sort_values("auroc", ascending=False)
    fig = figures.plot_intervals(res)
    ax = fig.axes[0]
    ecg_bars, patient_bars = (np.array([seg[:, 0] for seg in c.get_segments()]) for c in ax.collections[:2])
    np.testing.assert_allclose(ecg_bars, est[["low", "high"]].to_numpy())
    np.testing.assert_allclose(patient_bars, est[["low_patient", "high_patient"]].to_numpy())
    np.testing.assert_allclose(ax.collections[2].get_offsets(), np.c_[est["auroc"], np.arange(len(est))])
    assert len(ax.get_yticklabels()) == len(est)
    plt.close(fig)
    # reliability: a panel per headline target, its curve the frame's bins, its Brier in the title
    fig = figures.plot_reliability(rel, res, headline)
    assert len(fig.axes) == len(headline)
    for ax, target in zip(fig.axes, headline):
        bins = rel[rel["target"] == target]
        curve = ax.lines[1]  # after the diagonal
        np.testing.assert_allclose(curve.get_xdata(), bins["mean_predicted"])
        np.testing.assert_allclose(curve.get_ydata(), bins["fraction_positive"])
        assert ax.get_title().endswith(f"Brier {calib.at[target, 'brier']:.3f}")
    plt.close(fig)
    # subgroups: a panel per target; a bar for each subgroup with enough of both classes, an
    # open circle (no bar) for the others, in the frame's order
    assert sub["too_few"].astype(bool).any() and not sub["too_few"].astype(bool).all()  # both kinds drawn
    fig = figures.plot_subgroups(sub, res)
    panels = list(dict.fromkeys(sub["target"]))
    assert sorted(panels) == sorted(headline) and len(fig.axes) == len(panels)
    for ax, target in zip(fig.axes, panels):
        rows = sub[sub["target"] == target].reset_index(drop=True)
        few = rows["too_few"].to_numpy(bool)
        (bars,) = ax.containers
        np.testing.assert_allclose(bars.lines[0].get_xdata().astype(float), rows.loc[~few, "auroc"])
        np.testing.assert_allclose(bars.lines[0].get_ydata(), np.flatnonzero(~few))
        open_circles = [line for line in ax.lines if line.get_markerfacecolor() == "none"]
        np.testing.assert_allclose(open_circles[0].get_xdata().astype(float), rows.loc[few, "auroc"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0] == "All"
    plt.close(fig)
    table = tables.format_subgroups(sub, res)
    assert len(table) == len(sub) // 2 and table.shape[1] == 2 + 2  # Variable, Subgroup, one column per target
    assert table.iloc[0]["Variable"] == "All"
    cal_table = tables.format_calibration(calib.reset_index(), res, headline)
    assert list(cal_table["Brier"]) == [f"{calib.at[t, 'brier']:.3f}" for t in headline]
    from labecg import selfcheck

    summary = selfcheck.calibration_summary(calib)
    assert summary["median_brier"] == pytest.approx(np.median(calib["brier"]))


def test_selfcheck_sentence_counts_each_group_and_agrees_in_number():
    """Every mix of group sizes (0, 1 or 3 targets) and verdicts: the sentence's counts are the
    frame's, counted here; subject and verb agree; an empty group is said to be empty."""
    import itertools
    import re

    from labecg.selfcheck import summarize_check

    groups = [(3, "recovered", "not resolved"), (1, "recovered", "not resolved"), (0, "as expected", "unexpected signal")]
    cases = [[(n, k) for n in (0, 1, 3) for k in range(n + 1)]] * 3
    for sizes in itertools.product(*cases):
        if all(n == 0 for n, _ in sizes):
            continue
        rows = [(strength, hit if i < k else miss) for (strength, hit, miss), (n, k) in zip(groups, sizes)
                for i in range(n)]
        check = pd.DataFrame(rows, columns=["strength", "verdict"])
        text = summarize_check(check)
        assert text[0] == text[0].upper() and text.endswith(".") and ". " not in text, text  # one sentence
        clauses = text[:-1].split("; ")
        assert len(clauses) == 3 and clauses[2].startswith("and "), text
        for clause, (n, k) in zip([clauses[0], clauses[1], clauses[2][4:]], sizes):
            counted = re.match(r"(\d+) of (\d+) ", clause)
            if n == 0:
                assert counted is None and not re.search(r"\d", clause), text
                assert re.match(r"(?i)(no target has|every target has a planted effect)", clause), text
                continue
            assert counted and (int(counted[1]), int(counted[2])) == (k, n), text
            singular = k == 1 or n == 1  # "1 of 3 targets has", "0 of 1 target has", "2 of 3 targets have"
            assert (" has " in clause) == singular and (" have " in clause) == (not singular), text
            if n == 1:
                assert "targets" not in clause, text


def test_a_run_without_monitoring_targets_says_so():
    results = _results([("Potassium", "high", 5.1, "mEq/L", "Me.", "est", 0.8, 0.75, 0.85),
                        ("Sodium", "low", 135.0, "mEq/L", "Me.", "est", 0.6, 0.5, 0.7)])
    table2 = tables.table_monitoring(results)
    assert table2.empty
    note = tables.style_table(table2, empty=tables.empty_table_note(results, ("mon30", "mon60", "mon120")))
    assert "no monitoring target" in note.data and "<table" not in note.data
    assert tables.empty_table_note(results, ("est",)) == "None of the 2 estimation targets is significantly above 0.70."
    fig = figures.plot_horizon_heatmap(results)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Estimation"]  # no blank monitoring columns
    assert ax.get_xlabel() == "no target at: 30 min., 60 min., 120 min."
    plt.close(fig)


def test_teaching_figures_draw():
    import torch

    from labecg.s4 import S4Layer
    from labecg.records import filter_response

    from reference.s4_convolutions import run_recurrence

    torch.manual_seed(0)
    L, fs = 50, 100.0
    for layer in (S4Layer(6), S4Layer(6, bidirectional=False)):
        fig = figures.plot_s4_kernels(layer, channels=(0, 5), fs_hz=fs, n_samples=L)
        assert len(fig.axes) == 2
        # the weight of an input sample for an output: the step-by-step recurrence's response
        # at every output to an impulse in the middle of 2L - 1 samples (D, lag 0, not drawn)
        u = torch.zeros(1, 2 * L - 1, 6)
        u[0, L - 1] = 1.0
        with torch.no_grad():
            response = run_recurrence(u, torch.view_as_complex(layer.C), layer.log_dt, layer.log_a_re, layer.a_im)[0]
        for ax, h in zip(fig.axes, (0, 5)):
            (curve,) = [line for line in ax.lines if len(line.get_xdata()) == 2 * L - 1]
            t = curve.get_xdata()  # input time minus output time: output i sees the impulse at (L - 1 - i) / fs
            np.testing.assert_allclose(t, (L - 1 - np.arange(2 * L - 1)) / fs)
            np.testing.assert_allclose(curve.get_ydata(), response[:, h].numpy(), rtol=1e-4, atol=1e-6)
            future = curve.get_ydata()[t > 0]
            assert (np.abs(future).max() > 0) == layer.bidirectional  # a causal layer never looks ahead
            assert f"D = {float(layer.D[h]):+.2f}" in [text.get_text().split(" (")[0] for text in ax.texts][0]
        plt.close(fig)
    fig = figures.plot_filter_response(filter_response(500.0, 100.0, [5.0, 60.0]))
    assert fig.axes[0].get_ylabel() == "gain (dB)"
    raw = np.sin(2 * np.pi * 1.2 * np.arange(5000) / 500.0)
    pair = {"lead": "II", "raw_mv": raw, "raw_fs_hz": 500.0, "stored_mv": raw[::5].copy(), "fs_hz": 100.0}
    fig = figures.plot_lead_before_after(pair)  # the first 2.5 s of each, on one time axis
    recorded, stored = fig.axes[0].lines
    np.testing.assert_array_equal(recorded.get_xdata(), np.arange(1250) / 500.0)
    np.testing.assert_array_equal(recorded.get_ydata(), raw[:1250])
    np.testing.assert_array_equal(stored.get_xdata(), np.arange(250) / 100.0)
    np.testing.assert_array_equal(stored.get_ydata(), raw[:1250:5])
    assert fig.axes[0].get_ylabel() == "lead II (mV)"
    plt.close(fig)


def test_comparison_shows_both_thresholds_and_no_difference_for_a_synthetic_run():
    """Issue 21, defect 5: our threshold beside the paper's; no difference column off MIMIC-IV."""
    res = _results([
        ("NTproBNP", "high", 353.0, "pg/mL", "Ca.", "est", 0.85, 0.83, 0.87),  # the paper's threshold
        ("INR(PT)", "high", 1.2, "ratio", "Co.", "mon60", 0.70, 0.68, 0.72),  # paper: 1.1
    ])
    real = tables.compare_with_paper(res, comparable=True)
    assert list(real["threshold_differs"]) == [False, True]
    assert real["difference"].tolist() == pytest.approx([0.85 - 0.882, 0.70 - 0.733])
    shown = tables.format_paper_comparison(real)
    assert list(shown["This run's threshold"]) == ["≥353 pg/mL", "≠ ≥1.2 ratio"]
    assert list(shown["Paper threshold"]) == ["≥353 pg/mL", "≥1.1 ratio"]
    assert list(shown["Positives / negatives"]) == ["10 / 90", "10 / 90"]
    synthetic = tables.compare_with_paper(res, comparable=False)
    assert synthetic["difference"].isna().all() and not synthetic["comparable"].any()
    shown = tables.format_paper_comparison(synthetic)
    assert "Difference" not in shown.columns and list(shown["This run"]) == ["0.850 (0.830, 0.870)",
                                                                             "0.700 (0.680, 0.720)"]
    note = tables.comparison_note(synthetic)
    assert "1 of them use a threshold other than the paper's" in note and "synthetic" in note
    assert "synthetic" not in tables.comparison_note(real)


def test_tables_show_counts_and_auprc_for_rare_targets():
    res = _results([
        ("NTproBNP", "high", 353.0, "pg/mL", "Ca.", "est", 0.85, 0.83, 0.87),
        ("Potassium", "high", 5.1, "mEq/L", "El.", "est", 0.80, 0.75, 0.85),
        ("INR(PT)", "high", 1.2, "ratio", "Co.", "mon60", 0.80, 0.78, 0.82),
    ])
    res["n_patients"] = [70, 60, 50, 100]
    res.loc["potassium_high_est", ["n_pos", "n_neg"]] = [30, 70]  # 30 %: not rare
    res["prevalence"] = res["n_pos"] / (res["n_pos"] + res["n_neg"])
    res["auprc"] = [0.4, 0.6, 0.35, np.nan]
    t1 = tables.table_estimation(res)
    assert list(t1.columns) == ["Value", "Threshold", "Estimation AUROC", *tables.COUNT_COLUMNS]
    assert t1.loc["ntprobnp_high_est"].tolist()[3:] == ["10 / 90", "70", "10.0%", "–"]  # 10 %: not below
    res.loc["ntprobnp_high_est", ["n_pos", "n_neg", "prevalence"]] = [9, 91, 0.09]
    t1 = tables.table_estimation(res)
    assert t1.loc["ntprobnp_high_est", "AUPRC (prevalence)"] == "0.400 (0.090)"
    assert t1.loc["potassium_high_est"].tolist()[3:] == ["30 / 70", "60", "30.0%", "–"]
    t2 = tables.table_monitoring(res)
    assert t2.loc["inr_pt_high", "60 min. n"] == "10 / 90 · 50 patients · 10.0%"
    assert t2.loc["inr_pt_high", "30 min. n"] == "–"


def _smallest_text_pt(fig) -> float:
    """Smallest font (points) over the texts a reader sees, gathered axis by axis (not by findobj)."""
    texts = list(fig.texts) + [t for leg in fig.legends for t in leg.get_texts()]
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += [t for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend() is not None:
            texts += list(ax.get_legend().get_texts())
    return min(t.get_fontsize() for t in texts if t.get_visible() and t.get_text().strip())


@pytest.mark.slow  # seconds of work; make test runs it, make test-fast does not
def test_every_figure_is_a_2x_png_with_text_of_9_px_at_content_width(tmp_path):
    """Text >= 9 CSS px once the figure is shown at most CONTENT_WIDTH_PX wide, from the PNG itself (#23)."""
    import io

    from PIL import Image

    res = _paper_as_results()
    res["low_patient"], res["high_patient"] = res["low"] - 0.02, res["high"] + 0.02
    names = list(res.index[:-1])
    rng = np.random.default_rng(0)
    y = (rng.random((300, len(names))) < 0.3).astype(float)
    s = rng.random(y.shape) + 0.5 * y
    targets = {"targets": [{"name": n, "label": r.label, "direction": r.direction, "task": r.task,
                            "category": r.category, "threshold": r.threshold, "unit": r.unit,
                            "counts": {"test": {"pos": 10, "neg": 30}}} for n, r in zip(names, res.iloc[:-1].itertuples())]}
    attribution = {"targets": np.array([f"t{i}_high_est" for i in range(7)]), "leads": np.array(list("ABCDEFGHIJKL")),
                   "time_s": np.arange(-25, 55) / 100, "attribution": rng.random((7, 80, 12)),
                   "median_beat_mv": rng.normal(size=(80, 12))}
    made = {"forest": figures.plot_forest(res), "heatmap": figures.plot_horizon_heatmap(res),
            "prevalence": figures.plot_label_prevalence(targets), "roc": figures.plot_roc_curves(y, s, names, res),
            "intervals": figures.plot_intervals(res), "attribution": figures.plot_attribution(attribution),
            "timeline": figures.plot_task_timeline(),
            "ecg": figures.plot_ecg_12lead(rng.normal(size=(1000, 12)) * 0.2)}
    for name, fig in made.items():
        png, meta = figures.figure_png(fig)
        image = Image.open(io.BytesIO(png))
        dpi = image.info["dpi"][0]
        assert round(dpi) == 2 * figures.CSS_DPI, (name, image.info)
        width_px = image.size[0]
        assert meta["width"] == width_px // 2  # two device pixels per CSS pixel
        shown_css = min(width_px / 2, figures.CONTENT_WIDTH_PX)
        # points -> device pixels at the PNG's dpi, then scaled to the shown width (CSS px per device px)
        text_px = _smallest_text_pt(fig) / 72 * dpi * shown_css / width_px
        assert text_px >= figures.MIN_TEXT_PX, (name, round(text_px, 2), width_px)
        assert abs(meta["labecg"]["min_text_px"] - text_px) < 0.05, (name, meta, text_px)
        plt.close(fig)


def test_headers_spell_tasks_and_counts_as_the_pages_do():
    """A frame with a column per task and a count of ECGs gets the tables' task titles, not 'Mon30'."""
    import re

    from labecg.targets import HORIZONS_MIN, TASKS
    frame = pd.DataFrame({"ecgs": [3], **{task: [1] for task in TASKS}, "all": [4]})
    html = tables.show_table(frame, "caption").data
    headers = [re.sub("<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", html)]
    assert headers == ["ECGs", "Estimation", *(f"{h} min." for h in HORIZONS_MIN), "All"], headers
