"""The privacy check must catch planted identifiers and row-level tables, and pass clean input."""

from __future__ import annotations


import nbformat
import numpy as np
import pandas as pd
import pytest

from labecg.privacy import MAX_TABLE_ROWS, PrivacyError, check_privacy

SUBJECT, STUDY = 12345678, 40001234


@pytest.fixture
def cohort(tmp_path):
    path = tmp_path / "cohort.parquet"
    pd.DataFrame({"subject_id": np.array([SUBJECT, 10000032], dtype="int64"),
                  "study_id": np.array([STUDY, 40002222], dtype="int64"),
                  "age": [60.0, 70.0]}).to_parquet(path)
    return path


def page(tmp_path, body: str, name="page.html"):
    d = tmp_path / "html"
    d.mkdir(exist_ok=True)
    (d / name).write_text(f"<html><body>{body}</body></html>")
    return d


def notebook(tmp_path, outputs, name="nb.ipynb"):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = outputs
    nb.cells.append(cell)
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


SUMMARY = pd.DataFrame({"targets": [12, 9], "significant": [3, 1]},
                       index=pd.Index(["est", "mon30"], name="task"))


def test_clean_input_passes(tmp_path, cohort):
    body = (SUMMARY.to_html() + pd.DataFrame({"age": [1.0, 2.0], "sbp": [3.0, 4.0], "bmi": [5.0, 6.0]}).describe().to_html()
            + "<p>AUROC 0.12345678, 123456789 ECG samples, 1234567 rows, 795546 ECGs</p>"
            + '<link href="_static/x.css?digest=5b4479735964841361fd">')
    nb = notebook(tmp_path, [nbformat.v4.new_output("execute_result", {"text/plain": "0.40001234"})])
    assert check_privacy(page(tmp_path, body), [nb], cohort) == 2


@pytest.mark.parametrize("text", [f"Patient {SUBJECT} had", f"study={STUDY}.", f"p1000/p{SUBJECT}/s{STUDY}",
                                  f"<td>{float(STUDY)}</td>"])
def test_planted_id_in_html_is_caught(tmp_path, cohort, text):
    with pytest.raises(PrivacyError, match="page.html.*identifier"):
        check_privacy(page(tmp_path, text), [], cohort)


def test_planted_id_in_notebook_output_is_caught(tmp_path, cohort):
    nb = notebook(tmp_path, [nbformat.v4.new_output("stream", name="stdout", text=f"reading {SUBJECT}.0 ...\n")])
    with pytest.raises(PrivacyError, match=r"nb.ipynb cell 0 output 0: identifier\(s\) \['12345678'\]"):
        check_privacy(None, [nb], cohort)


def test_ids_passed_directly_are_searched(tmp_path):
    nb = notebook(tmp_path, [nbformat.v4.new_output("execute_result", {"text/html": f"<b>{STUDY}</b>"})])
    with pytest.raises(PrivacyError, match=str(STUDY)):
        check_privacy(None, [nb], None, ids=[STUDY])
    assert check_privacy(None, [nb], None, ids=[999999]) == 1


def test_identifier_column_is_row_level(tmp_path):
    # no id of the cohort in it, but the column makes it row-level
    table = pd.DataFrame({"study_id": [1, 2], "auroc": [0.5, 0.6]}).to_html(index=False)
    with pytest.raises(PrivacyError, match=r"row-level.*study_id"):
        check_privacy(page(tmp_path, table), [], None)


def test_long_table_is_row_level(tmp_path):
    n = MAX_TABLE_ROWS + 1
    table = pd.DataFrame({"score": np.linspace(0, 1, n)}).to_html()
    nb = notebook(tmp_path, [nbformat.v4.new_output("execute_result", {"text/html": table, "text/plain": "df"})])
    with pytest.raises(PrivacyError, match=f"{n} rows"):
        check_privacy(None, [nb], None)
    short = pd.DataFrame({"score": np.linspace(0, 1, MAX_TABLE_ROWS)}).to_html()
    assert check_privacy(page(tmp_path, short), [], None) == 1


def test_per_ecg_feature_rows_are_row_level(tmp_path):
    rows = pd.DataFrame({"age": [61.0, 72.0], "sex": [1.0, 0.0], "heartrate": [80.0, 95.0], "race": ["white", "asian"]})
    with pytest.raises(PrivacyError, match="per-ECG features"):
        check_privacy(page(tmp_path, rows.to_html()), [], None)
    # the same columns summarized by group are not row-level
    grouped = rows.groupby("race")[["age", "sex", "heartrate"]].mean()
    assert check_privacy(page(tmp_path, grouped.to_html()), [], None) == 1


def test_images_are_not_scanned_as_text(tmp_path, cohort):
    nb = notebook(tmp_path, [nbformat.v4.new_output("display_data", {"image/png": f"iVBOR{SUBJECT}xyz", "text/plain": "<Figure>"})])
    assert check_privacy(None, [nb], cohort) == 1
