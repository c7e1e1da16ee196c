"""The folder contracts of labecg.layout: finding the data root, reading a run, cutting segments."""

import json

import numpy as np
import pytest
import torch

from labecg import layout, sources
from labecg.data import cut_segments


def test_data_root_is_where_source_paths_put_the_ecg_folder(tmp_path):
    for root in (tmp_path / "data" / "synthetic", tmp_path / "a b" / "mimic"):
        assert layout.data_root(sources.source_paths(root)["ecg"]) == root


class _Payload:
    """Stands for any object a pickle could name; unpickling it runs code chosen by the file."""


def _run_folder(tmp_path, checkpoint: dict):
    run = tmp_path / "run"
    (run / layout.CHECKPOINTS).mkdir(parents=True)
    (run / layout.CONFIG).write_text(json.dumps({"model": {}, "train": {}, "data": {}}))
    (run / layout.TARGETS).write_text(json.dumps({"targets": []}))
    torch.save(checkpoint, layout.checkpoint_path(run, "best"))
    return run


def test_load_run_reads_only_tensors_and_plain_values(tmp_path):
    w = torch.arange(6.0).reshape(2, 3)
    run = _run_folder(tmp_path, {"state_dict": {"model.head.weight": w, "other.x": torch.zeros(1)}, "epoch": 3})
    got = layout.load_run(run)
    assert list(got.weights) == ["head.weight"] and torch.equal(got.weights["head.weight"], w)
    assert got.checkpoint == run / "checkpoints" / "best.ckpt" and got.inference is None

    unsafe = _run_folder(tmp_path / "x", {"state_dict": {}, "callbacks": _Payload()})
    with pytest.raises(ValueError, match=r"best.ckpt: cannot load the model"):
        layout.load_run(unsafe)


def test_load_run_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        layout.load_run(tmp_path / "nothing")
    run = _run_folder(tmp_path, {"state_dict": {}})
    with pytest.raises(FileNotFoundError, match=r"inference.json: not found"):
        layout.load_run(run, need_inference=True)
    (run / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config.json: not found"):
        layout.load_run(run)


def test_cut_segments_are_the_slices_minus_the_mean_over_the_std():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (3, 40, 12)).astype(np.float16)  # stored dtype of signals.npy by default
    mean, std = rng.normal(0, 0.1, 12).astype(np.float32), rng.uniform(0.5, 2, 12).astype(np.float32)
    rows, starts = np.array([2, 0, 2]), np.array([0, 7, 30])
    got = cut_segments(x, rows, starts, 10, mean, std)
    assert got.dtype == np.float32 and got.shape == (3, 10, 12)
    for i, (r, s) in enumerate(zip(rows, starts)):
        expected = (x[r, s:s + 10].astype(np.float64) - mean) / std
        np.testing.assert_allclose(got[i], expected, rtol=1e-6, atol=1e-6)
