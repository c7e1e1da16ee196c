"""`labecg predict` says what its numbers are, and refuses records it would score wrongly.

The facts it reports are checked against ``wfdb.rdheader``, ``run_info.json`` and numbers
written here (calibration slopes, header comments); the probabilities against
:func:`labecg.predict.predict_record` with the features given explicitly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from labecg import cli
from labecg.predict import predict_record
from labecg.records import LEADS, RecordError
from test_signals_sources import MIMIC_ORDER, _sines, _write


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


@pytest.fixture
def record(tmp_path) -> Path:
    """A clean 12 s, 500 Hz record (stored mV sines) under MIMIC's header lead order."""
    return _write(tmp_path, "rec", _sines(6000, 500.0), 500.0)


def _predict(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["predict", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)


def test_predict_says_which_run_record_and_features_before_the_table(run, record, capsys):
    rc, out, err = _predict(capsys, "--run-dir", run, "--record", record)
    assert rc == 0, err
    info = json.loads((run / "run_info.json").read_text())
    header = wfdb.rdheader(str(record))
    lines = err.strip().splitlines()
    assert all(ln.startswith("labecg predict: ") for ln in lines)
    text = "\n".join(lines)
    assert info["source"]["synthetic"] is True and "trained on synthetic" in lines[0]
    assert info["date"] in lines[0] and info["git_commit"][:12] in lines[0]
    assert "WARNING" in lines[1] and "mean nothing clinically" in lines[1]
    assert (f"{header.fs:g} Hz, {header.sig_len} samples ({header.sig_len / header.fs:.3g} s); the first 10 s used"
            in text)
    assert f"{header.n_sig} channels found ({', '.join(header.sig_name)})" in text
    assert "features given (none): none; imputed" in text and "temperature" in text
    assert "holds no evaluation" in text
    assert "suspect" not in text and "clipped" not in text
    table = out.strip().splitlines()
    assert len(table) == 1 + len(json.loads((run / "targets.json").read_text())["targets"])


def test_calibration_is_the_median_slope_of_the_runs_evaluation(run, record, capsys):
    (run / "evaluation").mkdir()
    slopes = [0.5, 0.8, 1.7, np.nan]
    pd.DataFrame({"target": list("abcd"), "calibration_slope": slopes}).to_csv(
        run / "evaluation" / "calibration.csv", index=False)
    rc, _, err = _predict(capsys, "--run-dir", run, "--record", record)
    assert rc == 0
    assert f"median calibration slope {np.nanmedian(slopes):.2f} over 3 targets" in err


def test_header_comments_are_read_without_features_and_ignored_with_them(run, tmp_path, capsys):
    x = _sines(6000, 500.0)
    wfdb.wrsamp("hc", fs=500, units=["mV"] * 12, sig_name=MIMIC_ORDER, p_signal=x[:, [LEADS.index(n) for n in
                                                                                          MIMIC_ORDER]],
                fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path),
                comments=["age: 81", "Sex: Female", "Dx: 426783006"])
    rec = tmp_path / "hc"
    rc, out, err = _predict(capsys, "--run-dir", run, "--record", rec, "--out", tmp_path / "a.csv")
    assert rc == 0, err
    assert "features given (header comments): sex=0.0, age=81.0" in err
    got = pd.read_csv(tmp_path / "a.csv")
    want = predict_record(run, rec, {"age": 81, "sex": "F"})
    np.testing.assert_allclose(got["probability"], want["probability"], rtol=0, atol=1e-6)
    imputed = predict_record(run, rec, {"race": ""})  # a features argument: the header is not read
    assert not np.allclose(imputed["probability"], want["probability"], rtol=0, atol=1e-7)

    (tmp_path / "f.csv").write_text("age,temperature\n60,98.6\n")
    rc, _, err = _predict(capsys, "--run-dir", run, "--record", rec, "--features", tmp_path / "f.csv")
    assert rc == 0
    assert "header comments age: 81, sex: F ignored: --features was given" in err
    assert f"features given (--features {tmp_path / 'f.csv'}): age=60.0, temperature=98.6" in err


def test_sort_orders_by_probability_and_out_writes_a_plain_csv_and_its_sidecar(run, record, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    rc, text, _ = _predict(capsys, "--run-dir", run, "--record", record, "--sort", "--out", out)
    assert rc == 0
    csv = pd.read_csv(out)
    plain = predict_record(run, record)
    want = plain.sort_values("probability", ascending=False).reset_index(drop=True)
    assert csv["target"].tolist() == want["target"].tolist()
    assert list(csv.columns) == list(plain.columns)
    assert text.strip().splitlines()[1].split()[0] == want["target"].iloc[0]
    side = json.loads(Path(f"{out}.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    assert side["run_dir"] == str(run) and side["record"] == str(record) and side["synthetic"] is True
    assert side["run_git_commit"] == info["git_commit"] and side["labecg_version"]
    assert side["utc_time"].endswith("+00:00") and side["features_used"] == {}
    assert side["features_imputed"][:3] == ["sex", "age", "race"]
    assert side["record_info"]["fs_hz"] == 500.0 and side["record_info"]["n_samples"] == 6000


def test_a_feature_out_of_range_names_its_unit_and_the_likely_slip(run, record, tmp_path, capsys):
    for column, value, expected in [("temperature", 37.2, "is 37.2, outside the plausible range [50, 150] \u00b0F; was it \u00b0C?"),
                                    ("height", 1.75, "is 1.75, outside the plausible range [60, 400] cm; was it m?"),
                                    ("weight", 480, "is 480, outside the plausible range [20, 400] kg; was it lb?")]:
        (tmp_path / "f.csv").write_text(f"{column}\n{value}\n")
        rc, _, err = _predict(capsys, "--run-dir", run, "--record", record, "--features", tmp_path / "f.csv")
        assert rc == 1 and len(err.strip().splitlines()) == 1 and expected in err, err
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    helptext = capsys.readouterr().out
    for unit in ("\u00b0F", "kg", "cm", "M / F", "mmHg"):
        assert unit in helptext
    assert "probability" in helptext and "calibration slope" in helptext


def _header_with_fs(src: Path, folder: Path, fs_token: str) -> Path:
    """``src`` copied into ``folder`` with the header's sampling rate replaced by ``fs_token``."""
    folder.mkdir()
    lines = src.with_suffix(".hea").read_text().splitlines()
    first = lines[0].split()
    first[2] = fs_token
    (folder / src.with_suffix(".hea").name).write_text("\n".join([" ".join(first), *lines[1:]]) + "\n")
    shutil.copy(src.with_suffix(".dat"), folder / src.with_suffix(".dat").name)
    return folder / src.name


@pytest.mark.parametrize("fs_token", ["-500", "0", "nan"])
def test_a_header_rate_that_is_not_positive_is_refused(run, record, tmp_path, fs_token):
    bad = _header_with_fs(record, tmp_path / "bad", fs_token)
    with pytest.raises(RecordError, match="(sampling rate|rate '?" + fs_token + ")"):
        predict_record(run, bad)


def test_an_all_zero_record_and_a_microvolt_record_labelled_mv_are_refused(run, tmp_path, capsys):
    zero = _write(tmp_path, "zero", np.zeros((5000, 12)), 500.0)
    with pytest.raises(RecordError, match="every sample of the 12 leads is 0"):
        predict_record(run, zero)
    # the same sines in µV, stored with a gain that says mV
    uv = _write(tmp_path, "uv", _sines(5000, 500.0) * 1000.0, 500.0, gain=0.2)
    assert np.median(np.abs(wfdb.rdrecord(str(uv)).p_signal)) > 100  # mV as wfdb reads the header
    rc, _, err = _predict(capsys, "--run-dir", run, "--record", uv)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "\u00b5V labelled mV" in err, err
    # a few clipped samples are scored, and said
    x = _sines(5000, 500.0)
    x[100:110, LEADS.index("V2")] = 4.0
    clipped = _write(tmp_path, "clipped", x, 500.0)
    rc, _, err = _predict(capsys, "--run-dir", run, "--record", clipped)
    assert rc == 0 and "clipped at \u00b13 mV: V2 (10 samples)" in err, err


def test_record_by_hea_or_dat_a_folder_and_out_on_a_folder(run, record, tmp_path, capsys):
    want = predict_record(run, record)
    for suffix in (".hea", ".dat"):
        got = predict_record(run, record.with_suffix(suffix))
        np.testing.assert_array_equal(got["probability"], want["probability"])
    rc, _, err = _predict(capsys, "--run-dir", run, "--record", tmp_path)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and f"--record {tmp_path}: a folder" in err, err
    rc, _, err = _predict(capsys, "--run-dir", run, "--record", record, "--out", tmp_path)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and f"--out {tmp_path}: a folder" in err, err
    assert ".tmp" not in err
