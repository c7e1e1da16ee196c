"""The documented command on the open MIMIC demo: download it from a local mirror, build the book.

The mirror (tests/demo_mirror.py) serves the shipped tables, the demo's own record list and
WFDB records written at all its 659 paths; the book's flags are read from the Makefile's
``MIMIC_DEMO_BOOK`` (what README and book/mimic.md document), at the smallest scale.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from demo_mirror import build_mirror, serve
from labecg import cli, selfcheck
from labecg.book import BookConfig, build_book
from labecg.features import FEATURES
from labecg.privacy import check_privacy
from test_book import copy_book_sources

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--d-model", "16", "--n-layers", "1", "--batch-size", "16", "--n-iterations", "50",
        "--workers", "1"]


def makefile_demo_flags(data_root: Path) -> list[str]:
    """The ``labecg book`` flags of ``make book-mimic-demo``, with ``$(MIMIC_DEMO)`` set to ``data_root``."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    value = re.search(r"^MIMIC_DEMO_BOOK\s*=\s*(.*)$", text, flags=re.M).group(1)
    return shlex.split(value.replace("$(MIMIC_DEMO)", str(data_root)))


def _results(macro: dict) -> pd.DataFrame:
    return pd.DataFrame([macro], index=["macro"])


def test_scale_verdict_speaks_only_when_the_interval_holds_chance_and_the_bar():
    wide = selfcheck.scale_verdict(_results({"low": 0.40, "high": 0.62, "low_patient": 0.21, "high_patient": 0.83,
                                             "n_patients": 7}))
    assert "cannot estimate anything" in wide and "0.21–0.83" in wide and "7 test patients" in wide
    assert selfcheck.scale_verdict(_results({"low": 0.6, "high": 0.8, "low_patient": 0.55, "high_patient": 0.85,
                                             "n_patients": 70})) == ""  # above chance
    assert selfcheck.scale_verdict(_results({"low": 0.3, "high": 0.6, "low_patient": 0.3, "high_patient": 0.65,
                                             "n_patients": 70})) == ""  # below the bar
    ecg_level = selfcheck.scale_verdict(_results({"low": 0.45, "high": 0.75, "low_patient": np.nan,
                                                  "high_patient": np.nan, "n_patients": -1}))
    assert "ECG-level 95% interval, 0.45–0.75" in ecg_level and "test patients" not in ecg_level


@pytest.mark.slow
def test_documented_demo_command_builds_the_book_from_the_mirror(tmp_path):
    data = tmp_path / "data" / "mimic-demo"
    with serve(build_mirror(tmp_path / "mirror", distinct=8)) as server:
        assert cli.main(["download", "mimic-demo", "--data-root", str(data), "--base-url", server.url]) == 0
    records = pd.read_csv(data / "mimic-iv-ecg" / "record_list.csv")
    assert len(records) == 659 and len(list((data / "mimic-iv-ecg" / "files").rglob("*.dat"))) == 659

    root = copy_book_sources(tmp_path / "book")
    cohort, run = tmp_path / "cohort", tmp_path / "run"
    flags = makefile_demo_flags(data)
    assert {"--no-generate-synthetic", "--unlisted-ecgs", "--min-per-class"} <= set(flags)
    cfg = cli.config_from_args(BookConfig, flags + TINY + ["--cohort-dir", str(cohort), "--run-dir", str(run),
                                                           "--book-root", str(root)])
    result = build_book(cfg)  # its privacy check runs on the pages and notebooks
    assert set(result.stages.values()) == {"ran"} and result.html_index.is_file()

    flow = pd.read_csv(cohort / "cohort_flow.csv").set_index("step")
    assert flow.loc["folds: assigned, no MIMIC-IV-ECG-ICD file given", "rows_in"] == len(records)
    frame = pd.read_parquet(cohort / "cohort.parquet")
    manifest = pd.read_parquet(cohort / "signals_manifest.parquet")
    assert len(frame) > 0 and (manifest["status"] == "ok").all() and len(manifest) == len(frame)
    results = pd.read_csv(run / "evaluation" / "results.csv", index_col=0)
    assert len(results) > 1

    # no identifier of any demo ECG or patient on any page or executed notebook
    ids = set(records["subject_id"]) | set(records["study_id"])
    check_privacy(root / "_build" / "html", sorted((root / "book" / "notebooks").glob("*.ipynb")), ids=ids)
    page = (root / "_build" / "html" / "book" / "notebooks" / "04_results.html").read_text()
    macro = results.loc["macro"]
    too_small = macro["low_patient"] <= 0.5 <= macro["high_patient"] and macro["low_patient"] <= 0.7 <= macro["high_patient"]
    assert ("This run cannot estimate anything." in page) == too_small

    # predict reads a record by its demo path and reproduces the run's own test prediction
    from labecg.predict import load_trained, predict_record

    pred = np.load(run / "predictions_test.npz")
    study = int(pred["study_id"][0])
    row = frame.set_index("study_id").loc[study]
    table = predict_record(load_trained(run), data / "mimic-iv-ecg" / row["path"], row[list(FEATURES)])
    np.testing.assert_allclose(table["probability"].to_numpy(), pred["y_score"][0], rtol=0, atol=1e-5)
    assert json.loads((run / "targets.json").read_text())["source"]["ecg_icd"] is None
