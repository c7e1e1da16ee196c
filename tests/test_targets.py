"""What a target is (labecg.targets): names built and read back, horizons, the binary kind."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from labecg import targets
from labecg.train import masked_loss


def test_names_are_built_and_read_back_for_every_task_and_direction():
    # the paper's tasks, written out by hand
    assert targets.TASKS == ("est", "mon30", "mon60", "mon120")
    horizons = {"est": None, "mon30": 30, "mon60": 60, "mon120": 120}
    for task, h in horizons.items():
        assert targets.task_name(h) == task and targets.horizon_min(task) == h
        assert targets.is_monitoring(task) == (h is not None)
        for label, slug in (("Bilirubin, Total", "bilirubin_total"), ("INR(PT)", "inr_pt"),
                            ("NTproBNP", "ntprobnp"), ("Calcium, Total", "calcium_total")):
            for direction in ("low", "high"):
                name = targets.target_name(label, direction, task)
                assert name == f"{slug}_{direction}_{task}"
                assert targets.parse_target(name) == (slug, direction, task)


@pytest.mark.parametrize("bad", ["potassium_high", "potassium_up_est", "potassium_high_mon45", "est"])
def test_a_name_that_is_not_a_target_is_refused(bad):
    with pytest.raises(ValueError, match="expected"):
        targets.parse_target(bad)


def test_unknown_tasks_and_directions_are_refused():
    with pytest.raises(ValueError, match="est or mon"):
        targets.horizon_min("monthly")
    with pytest.raises(ValueError, match="direction"):
        targets.target_name("Sodium", "up", "est")
    with pytest.raises(ValueError, match="task"):
        targets.target_name("Sodium", "low", "mon45")


def test_significant_is_the_lower_bound_above_the_threshold_and_never_nan():
    low = pd.Series([0.71, 0.70, 0.69, np.nan], index=list("abcd"))
    got = targets.significant(low, 0.7)
    assert got.dtype == bool and got.index.equals(low.index)
    assert got.tolist() == [True, False, False, False]  # strictly above; no interval, not significant
    assert targets.significant(np.array([[0.6, np.nan], [0.4, 0.51]]), 0.5).tolist() == [[True, False],
                                                                                            [False, True]]


def test_the_binary_kind_outputs_probabilities_and_scores_with_auroc():
    kind = targets.KINDS["binary"]
    x = torch.tensor([[-3.0, 0.0, 2.5]], dtype=torch.float64)
    np.testing.assert_allclose(kind.output(x).numpy(), 1 / (1 + np.exp(-x.numpy())), rtol=1e-6)
    assert kind.output(x).dtype == torch.float32 and kind.chance == 0.5
    rng = np.random.default_rng(0)
    y = (rng.random((80, 2)) < 0.4).astype(float)
    s = y + rng.normal(size=y.shape)
    y[:5, 1] = np.nan  # missing labels are left out
    got = kind.metric(y, s)
    ok = ~np.isnan(y[:, 1])
    np.testing.assert_allclose(got, [roc_auc_score(y[:, 0], s[:, 0]), roc_auc_score(y[ok, 1], s[ok, 1])])


def test_the_binary_kinds_losses_are_bce_and_focal_by_hand():
    logits = torch.tensor([[1.2, -0.4], [-2.0, 0.3]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    bce = -(y.numpy() * np.log(p) + (1 - y.numpy()) * np.log(1 - p))
    p_true = np.where(y.numpy() == 1, p, 1 - p)
    np.testing.assert_allclose(targets.BINARY.losses["bce"](logits, y, 2.0).numpy(), bce, rtol=1e-5)
    np.testing.assert_allclose(targets.BINARY.losses["focal"](logits, y, 2.0).numpy(), (1 - p_true) ** 2 * bce,
                               rtol=1e-5)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # target 0: two entries, target 1: one
    expected = np.mean([(bce[0, 0] + bce[1, 0]) / 2, bce[1, 1]])
    np.testing.assert_allclose(float(masked_loss(logits, y, mask, "bce")), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="'bce' or 'focal'"):
        masked_loss(logits, y, mask, "hinge")
