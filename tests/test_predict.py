"""labecg.predict: a copied run folder, without its cohort, scores single ECG records.

The reference values are the run's own predictions_test.npz (written by training through
the signal memmap and the batch loader) and, for a non-MIMIC record, a computation written
here with ``wfdb.rdrecord`` and ``scipy.signal.resample_poly``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

from labecg import cli
from labecg.features import FEATURES
from labecg.predict import OUTPUT_COLUMNS, load_trained, predict_record
from labecg.records import RecordError
from test_signals_sources import DATA, MIMIC_ORDER, UNREADABLE, _sines, _write, independent

@pytest.fixture(scope="module")
def run_copy(trained_run, signals_dir, synthetic_root, tmp_path_factory):
    """The session's tiny trained run, copied elsewhere; the cohort copy it was trained on and
    the folder it was trained in are gone."""
    assert not Path(trained_run.config.cohort_dir).exists() and not Path(trained_run.config.run_dir).exists()
    copy = tmp_path_factory.mktemp("predict_copy") / "run"
    shutil.copytree(trained_run.path, copy)
    frame = pd.read_parquet(signals_dir / "cohort.parquet")  # the same bytes as the deleted copy
    manifest = pd.read_parquet(signals_dir / "signals_manifest.parquet")
    stats = json.loads((signals_dir / "signals_stats.json").read_text())
    return copy, frame, manifest, stats, synthetic_root / "mimic-iv-ecg"


def test_copied_run_reproduces_its_own_test_predictions(run_copy):
    run, frame, _, _, ecg_root = run_copy
    pred = np.load(run / "predictions_test.npz")
    assert len(pred["study_id"]) > 0
    trained = load_trained(run)
    by_study = frame.set_index("study_id")
    for k, study in enumerate(pred["study_id"]):
        row = by_study.loc[study]
        table = predict_record(trained, ecg_root / row["path"], row[list(FEATURES)])
        assert table["target"].tolist() == pred["target_names"].tolist()
        np.testing.assert_allclose(table["probability"].to_numpy(), pred["y_score"][k], rtol=0, atol=1e-5,
                                   err_msg=f"study {study}")


def test_run_folder_stores_the_training_statistics(run_copy):
    run, frame, manifest, stats, _ = run_copy
    spec = json.loads((run / "inference.json").read_text())
    assert spec["signal_stats"]["mean_mv"] == stats["mean_mv"] and spec["signal_stats"]["std_mv"] == stats["std_mv"]
    train = frame[(frame["fold"] < 18) & (manifest["status"] == "ok").to_numpy()]
    for name in ("sex", "age", "heartrate", "bmi"):
        assert spec["tabular"]["median"][name] == pytest.approx(train[name].median())
    for name in ("age", "heartrate", "bmi"):
        filled = train[name].fillna(train[name].median())
        assert spec["tabular"]["mean"][name] == pytest.approx(filled.mean())
        assert spec["tabular"]["std"][name] == pytest.approx(filled.std(ddof=0))
    assert spec["signals"]["fs_hz"] == 100 and spec["crop_samples"] == 250
    targets = [t["name"] for t in json.loads((run / "targets.json").read_text())["targets"]]
    assert spec["target_names"] == [t for t in targets if t in spec["target_names"]]


def test_non_mimic_record_equals_an_independent_computation(run_copy):
    run, *_ = run_copy
    path = DATA / "ptbdb/s0010_re"  # 1000 Hz, lower-case names, Frank leads
    table = predict_record(run, path, {"sex": "F", "age": 81})
    assert list(table.columns) == list(OUTPUT_COLUMNS)
    targets = {t["name"]: t for t in json.loads((run / "targets.json").read_text())["targets"]}
    for _, r in table.iterrows():
        t = targets[r["target"]]
        assert (r["task"], r["lab"], r["direction"], r["threshold"]) == (t["task"], t["lab"], t["direction"],
                                                                         t["threshold"])
    # by hand: stored as float16 like signals.npy, 4 segments, normalized, model, mean of sigmoids
    spec = json.loads((run / "inference.json").read_text())
    x = independent(path).astype(np.float16).astype(np.float32)
    x = (x - np.float32(spec["signal_stats"]["mean_mv"])) / np.float32(spec["signal_stats"]["std_mv"])
    ecg = torch.from_numpy(np.ascontiguousarray(x.reshape(4, 250, 12)))
    med, mean, std = (spec["tabular"][k] for k in ("median", "mean", "std"))
    tab = dict.fromkeys(spec["tabular"]["features"], 0.0)
    tab["sex"] = 0.0
    tab["age"] = (81 - mean["age"]) / std["age"]
    for v in ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "bmi", "weight", "height"):
        tab[v] = (med[v] - mean[v]) / std[v]
        tab[f"{v}_missing"] = 1.0
    for r in ("white", "black", "hispanic", "asian", "other"):  # a missing race: training medians, flagged
        tab[f"race_{r}"] = med[f"race_{r}"]
    tab["race_missing"] = 1.0
    tabular = torch.tensor([list(tab.values())] * 4, dtype=torch.float32)
    model = load_trained(run).model
    with torch.no_grad():
        want = torch.sigmoid(model(ecg, tabular)).double().mean(0).numpy()
    np.testing.assert_allclose(table["probability"].to_numpy(), want, rtol=0, atol=1e-5)


def test_cli_prints_the_table_and_writes_csv(run_copy, tmp_path, capsys):
    run, *_ = run_copy
    record = DATA / "cinc2021/HR06000"  # .mat signal file, unit "mv"
    features = tmp_path / "features.csv"
    features.write_text("sex,age,race,heartrate,weight\n1,59,white,72,\n")
    out = tmp_path / "pred" / "one.csv"
    assert cli.main(["predict", "--run-dir", str(run), "--record", str(record), "--features", str(features),
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    got = pd.read_csv(out)
    assert list(got.columns) == list(OUTPUT_COLUMNS)
    want = predict_record(run, record, {"sex": 1, "age": 59, "race": "white", "heartrate": 72})
    np.testing.assert_allclose(got["probability"].to_numpy(), want["probability"].to_numpy(), atol=1e-7)
    assert got["target"].tolist() == want["target"].tolist()
    assert all(name in printed for name in got["target"])  # every row, none elided


def test_bad_inputs_name_the_file_lead_or_column(run_copy, tmp_path):
    run, *_ = run_copy
    good = DATA / "cinc2021/JS20000"
    with pytest.raises(RecordError, match=r"E07500_orig: unreadable.*record line"):
        predict_record(run, DATA / UNREADABLE)
    _write(tmp_path, "no_v3", _sines(5000, 500.0), 500.0, names=[n for n in MIMIC_ORDER if n != "V3"])
    with pytest.raises(RecordError, match=r"no_v3: missing lead V3"):
        predict_record(run, tmp_path / "no_v3")
    with pytest.raises(RecordError, match=r"nothing_here: missing file"):
        predict_record(run, tmp_path / "nothing_here")
    with pytest.raises(ValueError, match=r"unknown feature columns \['potassium'\]"):
        predict_record(run, good, {"potassium": 4.1})
    with pytest.raises(ValueError, match=r"column 'heartrate' is 900, outside the plausible range \[0, 700\]"):
        predict_record(run, good, {"heartrate": 900})
    csv = tmp_path / "f.csv"
    csv.write_text("bmi\n0\n")
    with pytest.raises(ValueError, match=rf"{csv}: column 'bmi' is 0, outside the plausible range \(0, 100\]"):
        predict_record(run, good, csv)
    with pytest.raises(ValueError, match=r"column 'race' is 'martian'"):
        predict_record(run, good, {"race": "martian"})
    with pytest.raises(ValueError, match=r"column 'sex' is 'x'"):
        predict_record(run, good, {"sex": "x"})
    no_model = tmp_path / "run"
    shutil.copytree(run, no_model, ignore=shutil.ignore_patterns("*.ckpt"))
    with pytest.raises(FileNotFoundError, match=r"best.ckpt: not found; .* holds no trained model"):
        predict_record(no_model, good)
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    (old / "inference.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"inference.json: not found"):
        predict_record(old, good)


def test_record_path_and_features_may_be_strings(run_copy):
    run, *_ = run_copy
    a = predict_record(str(run), str(DATA / "cinc2021/E07500"), {"age": 78, "sex": "M"})
    b = predict_record(run, DATA / "cinc2021/E07500", pd.DataFrame({"age": [78.0], "sex": [1.0]}))
    np.testing.assert_array_equal(a["probability"], b["probability"])
    assert wfdb.rdheader(str(DATA / "cinc2021/E07500")).fs == 500
