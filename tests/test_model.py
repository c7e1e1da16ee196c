"""Fusion model: output shapes of every variant, the outer product, and which inputs matter."""

import pytest
import torch

from labecg.model import FusionModel, ModelConfig, parameter_table

T, NTAB, B, L = 5, 7, 3, 40


@pytest.mark.parametrize("options", [
    dict(fusion="outer"), dict(fusion="concat"), dict(fusion="outer", tabular_encoder="mlp"),
    dict(fusion="concat", tabular_encoder="mlp"), dict(variant="ecg"), dict(variant="tabular"),
    dict(variant="tabular", tabular_encoder="mlp"), dict(freeze_ssm=True),
])
def test_output_shapes_of_all_variants(options):
    torch.manual_seed(0)
    model = FusionModel(ModelConfig(n_targets=T, n_tabular=NTAB, d_model=16, n_layers=2, **options))
    out = model(torch.randn(B, L, 12), torch.randn(B, NTAB))
    assert out.shape == (B, T)
    out.sum().backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not trained, f"parameters without gradient: {trained}"


def test_outer_fusion_head_input_is_the_kronecker_product():
    torch.manual_seed(1)
    model = FusionModel(ModelConfig(n_targets=T, n_tabular=NTAB, d_model=16, n_layers=1, ecg_latent=4, tab_latent=3)).eval()
    ecg, tab = torch.randn(B, L, 12), torch.randn(B, NTAB)
    with torch.no_grad():
        e = model.ecg_proj(model.ecg_encoder(ecg))
        t = model.tab_encoder(tab)
        z = torch.stack([torch.kron(torch.cat([e[i], torch.ones(1)]), torch.cat([t[i], torch.ones(1)]))
                         for i in range(B)])
        assert model.head.in_features == 5 * 4
        torch.testing.assert_close(model(ecg, tab), model.head(z))


def test_single_modality_variants_ignore_the_other_input():
    torch.manual_seed(2)
    ecg, tab = torch.randn(B, L, 12), torch.randn(B, NTAB)
    ecg_only = FusionModel(ModelConfig(T, NTAB, d_model=16, n_layers=1, variant="ecg")).eval()
    tab_only = FusionModel(ModelConfig(T, NTAB, d_model=16, n_layers=1, variant="tabular")).eval()
    fusion = FusionModel(ModelConfig(T, NTAB, d_model=16, n_layers=1)).eval()
    with torch.no_grad():
        torch.testing.assert_close(ecg_only(ecg, tab), ecg_only(ecg, None))
        torch.testing.assert_close(tab_only(ecg, tab), tab_only(None, tab))
        assert (fusion(ecg, tab) - fusion(ecg, tab + 1.0)).abs().max() > 1e-4
        assert (fusion(ecg, tab) - fusion(ecg + 1.0, tab)).abs().max() > 1e-4


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="fusion"):
        ModelConfig(n_targets=2, n_tabular=3, fusion="sum")
    with pytest.raises(ValueError, match="n_tabular"):
        ModelConfig(n_targets=2, n_tabular=0)
    cfg = ModelConfig(n_targets=2, n_tabular=3, d_model=8, n_layers=1, variant="ecg")
    assert FusionModel(cfg).config == cfg


def test_bf16_autocast_forward_backward():
    torch.manual_seed(3)
    model = FusionModel(ModelConfig(T, NTAB, d_model=16, n_layers=2))
    ecg, tab = torch.randn(B, L, 12), torch.randn(B, NTAB)
    with torch.no_grad():
        ref = model(ecg, tab)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ecg, tab)
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all() and (out.float() - ref).abs().max() < 0.2
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_parameter_table_counts_every_parameter_once():
    m = FusionModel(ModelConfig(n_targets=5, n_tabular=7, d_model=16, n_layers=2))
    table = parameter_table(m)
    assert table.loc["total", "parameters"] == sum(p.numel() for p in m.parameters())
    assert table.drop(index="total")["parameters"].sum() == table.loc["total", "parameters"]
    # one bidirectional S4 block by hand, H = 16, N = 8 (M = 4 modes): log_dt H, log_a_re and a_im
    # H M each, C 2 directions x H x M complex, D H, projection H -> 2H with bias
    H, M = 16, 4
    assert table.loc["ecg_encoder.layers.0", "parameters"] == H + 2 * H * M + 2 * H * M * 2 + H + H * 2 * H + 2 * H
    assert table.loc["ecg_encoder.inp", "parameters"] == 12 * H + H


def test_code_variant_tabular_mlp_is_the_authors(tmp_path):
    """The spec from the authors' code (REFERENCE_NOTES.md, BasicEncoderStaticMLP, lin_ftrs [128, 128, 128],
    dropout 0.5, embedding_dims [16, 32] for vocab_sizes [2, 5], AdamW decay on every parameter), written out here."""
    from torch import nn

    from labecg.data import TABULAR_FEATURES
    from labecg.train import TrainConfig, parameter_groups, variant_settings

    cfg = TrainConfig(cohort_dir=tmp_path, run_dir=tmp_path / "run", d_model=16, n_layers=1, **variant_settings("code"))
    n_tab = len(TABULAR_FEATURES)
    model = FusionModel(cfg.model_config(n_targets=T, n_tabular=n_tab))
    enc = model.tab_encoder
    embeddings = [m for m in enc.modules() if isinstance(m, nn.Embedding)]
    assert [(e.num_embeddings, e.embedding_dim) for e in embeddings] == [(2, 16), (5, 32)]
    n_other = n_tab - 1 - 5  # every column but sex and the five race columns
    blocks = [type(m).__name__ for m in enc.layers]
    assert blocks == ["BatchNorm1d", "Dropout", "Linear", "ReLU"] * 2 + ["BatchNorm1d", "Dropout", "Linear"]
    assert [m.p for m in enc.layers if isinstance(m, nn.Dropout)] == [0.25, 0.25, 0.5]
    assert [(m.in_features, m.out_features) for m in enc.layers if isinstance(m, nn.Linear)] == [
        (16 + 32 + n_other, 128), (128, 128), (128, 128)]
    assert [m.num_features for m in enc.layers if isinstance(m, nn.BatchNorm1d)] == [16 + 32 + n_other, 128, 128]
    assert model.head.in_features == 16 + 128  # concatenation of the ECG embedding (d_model) and the MLP
    # the first block's input: sex's embedding row, race's, then the other columns in order
    tab = torch.zeros(2, n_tab)
    tab[:, 0] = torch.tensor([0.0, 1.0])  # sex
    race = [i for i, name in enumerate(TABULAR_FEATURES) if name.startswith("race_")]
    tab[0, race[2]] = tab[1, race[4]] = 1.0
    tab[:, 1] = torch.tensor([0.3, -1.2])  # age
    with torch.no_grad():
        x = enc.embed(tab)
    torch.testing.assert_close(x[:, :16], embeddings[0].weight[[0, 1]])
    torch.testing.assert_close(x[:, 16:48], embeddings[1].weight[[2, 4]])
    torch.testing.assert_close(x[:, 48], tab[:, 1])
    # weight decay on every trained parameter, at the one learning rate
    groups = parameter_groups(model, cfg.lr, cfg.weight_decay, cfg.weight_decay_scope, cfg.ssm_lr)
    decayed = {id(p) for g in groups if g["weight_decay"] == cfg.weight_decay == 1e-3 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.requires_grad}


def test_outer_head_weights_count_the_built_heads_weights():
    model = FusionModel(ModelConfig(n_targets=T, n_tabular=NTAB, d_model=16, n_layers=1, ecg_latent=4, tab_latent=3))
    from labecg.model import outer_head_weights

    assert outer_head_weights(4, 3, T) == model.head.weight.numel() == 5 * 4 * T
    assert outer_head_weights(512, 512, 514) == 513 * 513 * 514  # the paper's sizes, all four tasks' targets


def _groups_by_the_old_rule(model, lr, weight_decay, ssm_lr):
    """The weight-decay groups as train.parameter_groups decided them before the parameters
    carried tags (#24): by the last part of each parameter's name (the state-space
    parameters ``log_dt``, ``log_a_re``, ``a_im``; ``bias``) and by the LayerNorm/BatchNorm
    modules' parameters, in the order of ``named_parameters``."""
    from torch import nn

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    norm_ids = {id(p) for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.BatchNorm1d))
                for p in m.parameters(recurse=False)}
    groups = {"decay": [], "no_decay": [], "ssm": []}
    for name, p in named:
        leaf = name.rsplit(".", 1)[-1]
        key = "ssm" if leaf in ("log_dt", "log_a_re", "a_im") else (
            "no_decay" if leaf == "bias" or id(p) in norm_ids else "decay")
        groups[key].append(name)
    settings = {"decay": (lr, weight_decay), "no_decay": (lr, 0.0), "ssm": (min(lr, ssm_lr), 0.0)}
    return [(k, v, *settings[k]) for k, v in groups.items() if v]


@pytest.mark.parametrize("options", [
    dict(), dict(fusion="concat"), dict(tabular_encoder="mlp"), dict(variant="ecg"), dict(variant="tabular"),
    dict(variant="tabular", tabular_encoder="mlp"), dict(freeze_ssm=True), dict(ssm_init="legs"),
    dict(bidirectional=False, n_layers=3),
])
def test_parameter_groups_are_the_old_rules(options, tmp_path):
    """Weight-decay groups come from tags set where the parameters are created (S4Layer,
    FusionModel) and are the groups the old name rule gave, parameter for parameter and in
    order (an optimizer's state is resumed by position), also for the network a LabModule
    builds and one moved to float64."""
    from labecg.train import LabModule, parameter_groups

    cfg = ModelConfig(n_targets=T, n_tabular=NTAB, **{"d_model": 8, "n_layers": 2, **options})
    for model in (FusionModel(cfg), FusionModel(cfg).double(),
                  LabModule(vars(cfg) | {"categorical": list(cfg.categorical)}).model):
        names = {id(p): n for n, p in model.named_parameters()}
        got = [(g["name"], [names[id(p)] for p in g["params"]], g["lr"], g["weight_decay"])
               for g in parameter_groups(model, 3e-3, 0.05, "weights", 1e-3)]
        assert got == _groups_by_the_old_rule(model, 3e-3, 0.05, 1e-3)
