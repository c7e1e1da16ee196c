"""Training: the masked loss by hand, checkpoint/resume, and learning a planted effect."""

import csv
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_RUN, source_paths
from labecg.train import TrainConfig, masked_loss, train

PATIENTS = 300  # more than the shared fixture: the validation fold needs positives of the planted target


@pytest.fixture(scope="session")
def train_cohort(tmp_path_factory) -> Path:
    """A synthetic cohort with signals, 300 patients, seed 0 (about 750 ECGs)."""
    from labecg.cohort import CohortConfig, build_cohort
    from labecg.signals import SignalsConfig, convert_signals
    from labecg.synthetic import SynthConfig, generate

    root = Path(generate(SynthConfig(data_root=tmp_path_factory.mktemp("train_synth") / "mimic", patients=PATIENTS,
                                     seed=0)))
    out = tmp_path_factory.mktemp("train_cohort")
    build_cohort(CohortConfig(**source_paths(root), cohort_dir=out, min_lab_events=20, min_per_class=2))
    convert_signals(SignalsConfig(cohort_dir=out, ecg=root / "mimic-iv-ecg", workers=1))
    return out


def _hand_loss(logits, y, mask, gamma=None, reduction="mean"):
    """Per target: mean over observed entries of -[y log p + (1-y) log(1-p)] (times (1-p_t)^gamma)."""
    p = 1.0 / (1.0 + np.exp(-logits))
    per_target = []
    for t in range(logits.shape[1]):
        terms = []
        for b in range(logits.shape[0]):
            if mask[b, t]:
                pt = p[b, t] if y[b, t] == 1 else 1.0 - p[b, t]
                terms.append(-np.log(pt) * ((1.0 - pt) ** gamma if gamma is not None else 1.0))
        if terms:
            per_target.append(sum(terms) / len(terms))
    return np.mean(per_target) if reduction == "mean" else np.sum(per_target)


@pytest.mark.parametrize("kind, reduction", [("bce", "mean"), ("bce", "sum"), ("focal", "mean")])
def test_masked_loss_equals_hand_computation(kind, reduction):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)) * 2
    y = rng.integers(0, 2, size=(6, 4)).astype(float)
    mask = rng.integers(0, 2, size=(6, 4)).astype(float)
    mask[:, 3] = 0  # a target with nothing observed contributes nothing
    y_garbage = np.where(mask > 0, y, 7.0)  # values under the mask must not matter
    got = masked_loss(torch.tensor(logits), torch.tensor(y_garbage), torch.tensor(mask), kind, 2.0, reduction)
    want = _hand_loss(logits, y, mask, 2.0 if kind == "focal" else None, reduction)
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_masked_entries_get_zero_gradient():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, requires_grad=True)
    y = torch.randint(0, 2, (5, 3)).float()
    mask = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 0], [1, 0, 1], [0, 0, 0]], dtype=torch.float32)
    masked_loss(logits, y, mask).backward()
    assert torch.all(logits.grad[mask == 0] == 0)
    assert torch.all(logits.grad[mask == 1] != 0)
    empty = torch.zeros(2, 2, requires_grad=True)
    assert float(masked_loss(empty, torch.ones(2, 2), torch.zeros(2, 2)).detach()) == 0.0


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(cohort_dir=tmp_path, run_dir=tmp_path / "run", epochs=0)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        TrainConfig(cohort_dir=tmp_path / "missing", run_dir=tmp_path / "run")


def _tiny(cohort, out, **kw):
    """The settings of the session's ``trained_run`` (conftest.TINY_RUN), changed by ``kw``."""
    return TrainConfig(cohort_dir=cohort, run_dir=out, **{**TINY_RUN, **kw})


def _copy(trained_run, dst: Path) -> Path:
    """A copy of the session's tiny run to change (file times kept)."""
    shutil.copytree(trained_run.path, dst)
    return dst


def test_resume_continues_where_a_straight_run_would_be(trained_run, signals_dir, tmp_path):
    straight = train(_tiny(signals_dir, tmp_path / "straight", epochs=2))
    split = _copy(trained_run, tmp_path / "split")  # the same settings, one epoch
    # mark the checkpoint: a resumed run carries the mark into metrics.csv, a fresh one cannot
    last = split / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    ckpt["labecg_history"][0]["train_loss"] = 123.0
    torch.save(ckpt, last)
    split = train(_tiny(signals_dir, split, epochs=2))  # resumes from last.ckpt
    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(split / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    steps = 2 * TINY_RUN["max_steps_per_epoch"]
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"] == steps
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6)
    # AdamW moments survive the restart, else the second epoch's updates would differ
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    torch.testing.assert_close(sb[0]["exp_avg_sq"], sa[0]["exp_avg_sq"], rtol=1e-5, atol=1e-9)
    with open(split / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and float(rows[0]["train_loss"]) == 123.0


@pytest.mark.slow  # four full epochs on 300 patients: the one test that training learns
def test_short_run_learns_the_planted_potassium_effect(train_cohort, tmp_path):
    from labecg.metrics import auroc

    out = train(TrainConfig(cohort_dir=train_cohort, run_dir=tmp_path / "run", epochs=4, d_model=32, n_layers=2,
                            lr=3e-3, dropout=0.0, seed=0))
    for name in ("config.json", "run_info.json", "targets.json", "metrics.csv", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt", "predictions_val.npz", "predictions_test.npz"):
        assert (out / name).exists(), name
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_macro_auroc"] and len(rows) == 4
    pred = np.load(out / "predictions_val.npz")
    assert sorted(pred.files) == ["age", "race", "sex", "study_id", "subject_id", "target_names", "y_score",
                                  "y_true"]
    cohort = pd.read_parquet(train_cohort / "cohort.parquet").set_index("study_id").loc[pred["study_id"]]
    np.testing.assert_array_equal(pred["subject_id"], cohort["subject_id"].to_numpy())
    np.testing.assert_array_equal(pred["sex"], cohort["sex"].to_numpy(np.float64))
    np.testing.assert_array_equal(pred["age"], cohort["age"].to_numpy(np.float64))
    assert list(pred["race"]) == [r if isinstance(r, str) else "" for r in cohort["race"]]
    names = list(pred["target_names"])
    assert names == [t["name"] for t in json.loads((train_cohort / "targets.json").read_text())["targets"]]
    assert pred["y_true"].shape == pred["y_score"].shape == (len(pred["study_id"]), len(names))
    k = names.index("potassium_high_est")
    observed = ~np.isnan(pred["y_true"][:, k])
    # independent AUROC: fraction of (positive, negative) pairs ranked right
    pos = pred["y_score"][observed & (pred["y_true"][:, k] == 1), k]
    neg = pred["y_score"][observed & (pred["y_true"][:, k] == 0), k]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert pairs == pytest.approx(auroc(pred["y_true"], pred["y_score"])[k])
    print(f"potassium_high_est validation AUROC {pairs:.3f}")
    assert pairs > 0.7, f"potassium_high_est validation AUROC {pairs:.3f}"
    info = json.loads((out / "run_info.json").read_text())
    assert info["source"]["synthetic"] is True and info["hardware"]["torch"] == torch.__version__


def test_resume_refuses_a_run_folder_of_other_settings(trained_run, signals_dir, tmp_path):
    run = _copy(trained_run, tmp_path / "run")
    other = _tiny(signals_dir, run, epochs=2, d_model=24)
    with pytest.raises(ValueError, match="d_model"):
        train(other)
    # --no-resume starts over: the old checkpoints go, the new run has the new width
    fresh = train(dataclasses.replace(other, resume=False, epochs=1))
    state = torch.load(fresh / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 0
    assert json.loads((fresh / "run_settings.json").read_text())["d_model"] == 24


def test_variant_settings_are_the_papers_model_and_the_authors_code(tmp_path):
    from labecg import book
    from labecg.train import VARIANT_SETTINGS, variant_run_dir, variant_settings

    paper = TrainConfig(cohort_dir=tmp_path, run_dir=tmp_path / "run", **variant_settings("fusion"))
    code = TrainConfig(cohort_dir=tmp_path, run_dir=tmp_path / "run", **variant_settings("code"))
    assert (paper.fusion, paper.tabular_encoder, paper.loss, paper.freeze_ssm) == ("outer", "linear", "bce", False)
    # REFERENCE_NOTES.md: MLP tabular encoder, concatenation, focal BCE (gamma 2) summed over targets, frozen SSM
    assert (code.fusion, code.tabular_encoder, code.loss, code.focal_gamma, code.target_reduction, code.freeze_ssm) \
        == ("concat", "mlp", "focal", 2.0, "sum", True)
    assert TrainConfig(cohort_dir=tmp_path, run_dir=tmp_path, **variant_settings("ecg")).variant == "ecg"
    assert list(VARIANT_SETTINGS) == ["fusion", "code", "ecg", "tabular", "value"]
    assert variant_run_dir("runs/default", "code") == Path("runs/default-code")
    assert book.BookConfig(variants=("fusion", "code")).variants == ("fusion", "code")
    with pytest.raises(ValueError, match="variant 'paper' unknown"):
        variant_settings("paper")
    with pytest.raises(ValueError, match="variants"):
        book.BookConfig(variants=("paper",))


def test_parameter_groups_follow_the_s4_reference():
    """No weight decay on log_dt, log_a_re, a_im (their own rate), biases and norms; decay on the rest."""
    from labecg.model import FusionModel, ModelConfig
    from labecg.train import parameter_groups

    m = FusionModel(ModelConfig(n_targets=3, n_tabular=5, d_model=8, n_layers=2, tabular_encoder="mlp"))
    groups = {g["name"]: g for g in parameter_groups(m, lr=3e-3, weight_decay=0.05)}
    names = {id(p): n for n, p in m.named_parameters()}
    got = {k: sorted(names[id(p)] for p in g["params"]) for k, g in groups.items()}
    ssm = sorted(f"ecg_encoder.layers.{i}.{p}" for i in range(2) for p in ("log_dt", "log_a_re", "a_im"))
    assert got["ssm"] == ssm
    assert (groups["ssm"]["lr"], groups["ssm"]["weight_decay"]) == (1e-3, 0.0)  # min(3e-3, 1e-3)
    no_decay = ([f"ecg_encoder.norms.{i}.{p}" for i in range(2) for p in ("weight", "bias")]
                + [f"tab_encoder.layers.{j}.{p}" for j in (0, 4, 8) for p in ("weight", "bias")]  # BatchNorm1d
                + [n for n in names.values() if n.endswith(".bias")])
    assert got["no_decay"] == sorted(set(no_decay))
    assert (groups["no_decay"]["lr"], groups["no_decay"]["weight_decay"]) == (3e-3, 0.0)
    decay = sorted(set(names.values()) - set(ssm) - set(no_decay))
    assert got["decay"] == decay and "ecg_encoder.layers.0.C" in decay and "ecg_encoder.layers.0.D" in decay
    assert (groups["decay"]["lr"], groups["decay"]["weight_decay"]) == (3e-3, 0.05)
    # the earlier behaviour: one group, every parameter decays
    (one,) = parameter_groups(m, lr=3e-3, weight_decay=0.05, weight_decay_scope="all")
    assert len(one["params"]) == len(names) and one["weight_decay"] == 0.05
    # frozen state-space parameters are in no group
    f = FusionModel(ModelConfig(n_targets=3, n_tabular=5, d_model=8, n_layers=1, freeze_ssm=True))
    assert "ssm" not in {g["name"] for g in parameter_groups(f, 1e-3, 1e-3)}


def test_fusion_latent_sizes_reach_the_model(tmp_path):
    cfg = TrainConfig(cohort_dir=tmp_path, run_dir=tmp_path, ecg_latent=8, tab_latent=4, ssm_init="legs")
    mc = cfg.model_config(n_targets=7, n_tabular=30)
    assert (mc.ecg_latent, mc.tab_latent, mc.ssm_init) == (8, 4, "legs")
    from labecg.model import FusionModel

    m = FusionModel(mc)
    assert m.head.in_features == (8 + 1) * (4 + 1)
    with pytest.raises(ValueError, match="weight_decay_scope"):
        TrainConfig(cohort_dir=tmp_path, run_dir=tmp_path, weight_decay_scope="some")


# ---------------------------------------------------------------------------- work never lost or mixed


def _cohort_without_signals(cohort: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("cohort.parquet", "targets.json", "cohort_flow.csv"):
        shutil.copy(cohort / name, dst / name)
    return dst


def test_no_resume_checks_inputs_before_touching_the_run(trained_run, signals_dir, tmp_path):
    run = _copy(trained_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    bare = _cohort_without_signals(signals_dir, tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match=r"signals\.json: not found; expected the output of `labecg signals`"):
        train(dataclasses.replace(_tiny(bare, run), resume=False))
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


def test_a_fresh_run_killed_midway_leaves_no_file_of_the_previous_run(trained_run, signals_dir, tmp_path,
                                                                      monkeypatch):
    from labecg import train as train_module
    from labecg.evaluate import EvaluateConfig, evaluate_run

    run = _copy(trained_run, tmp_path / "run")
    evaluate_run(EvaluateConfig(run_dir=run, n_iterations=5))
    assert (run / "evaluation" / "results.csv").exists()

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # as if the new run were killed during its first epoch

    monkeypatch.setattr(train_module.pl.Trainer, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        train(dataclasses.replace(_tiny(signals_dir, run), resume=False, d_model=24))
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == ["run_settings.json"], left
    assert json.loads((run / "run_settings.json").read_text())["d_model"] == 24
    with pytest.raises(FileNotFoundError, match="predictions_test.npz"):
        evaluate_run(EvaluateConfig(run_dir=run, n_iterations=5))


def test_a_folder_that_is_not_a_run_is_refused(signals_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a run folder"):
        train(_tiny(signals_dir, out))
    assert (out / "notes.txt").read_text() == "keep me" and sorted(out.iterdir()) == [out / "notes.txt"]


def test_duration_counts_every_call_of_a_resumed_run(trained_run, signals_dir, tmp_path):
    run = _copy(trained_run, tmp_path / "run")  # copytree keeps the checkpoint's time
    t1 = trained_run.seconds
    to_checkpoint = (run / "checkpoints" / "last.ckpt").stat().st_mtime - trained_run.started
    t0 = time.time()
    train(_tiny(signals_dir, run, epochs=2))  # resumes for a second epoch
    t2 = time.time() - t0
    total = json.loads((run / "run_info.json").read_text())["duration_s"]
    # the first call up to the checkpoint the second resumed from, plus the second call
    assert 0.9 * to_checkpoint + 0.8 * t2 - 0.5 <= total <= t1 + t2 + 1.0, (to_checkpoint, t1, t2, total)


def test_lightning_noise_is_silenced_and_real_warnings_kept():
    """Adverts, echoed settings and absent accelerators are dropped; an unused GPU and warnings stay (#23)."""
    import logging
    import warnings

    from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

    from labecg import train

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logging.getLogger("pytorch_lightning").addHandler(handler)
    logging.getLogger("lightning_fabric").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train._silence_library_noise()
            for message in ("GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
                            "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]",
                            "`Trainer(limit_train_batches=1.0)` was configured so 100% of the batches will be used.",
                            "GPU available: True (cuda), used: False"):
                rank_zero_info(message)
            rank_zero_warn("Checkpoint directory /tmp/run/checkpoints exists and is not empty.")
            rank_zero_warn("The dataloader does not have many workers which may be a bottleneck.")
    finally:
        logging.getLogger("pytorch_lightning").removeHandler(handler)
        logging.getLogger("lightning_fabric").removeHandler(handler)
    assert seen == ["GPU available: True (cuda), used: False"], seen
    assert [str(w.message) for w in caught] == ["The dataloader does not have many workers which may be a bottleneck."]
