"""The book's cache records, without executing a notebook (fast).

A stage reruns when its settings (:func:`labecg.book.stage_key`) or its files change. The
settings must not depend on what an earlier stage writes: the first build's 01_data
generates the synthetic source, ICD file included, so a key that read the disk would
differ at the second build and run every stage again.
"""

from __future__ import annotations

from pathlib import Path

from labecg.book import STAGES, BookConfig, cache_key, stage_files, stage_key

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path, **kw) -> BookConfig:
    return BookConfig(data_root=tmp_path / "synthetic", cohort_dir=tmp_path / "cohort",
                      demo_cohort_dir=tmp_path / "demo_cohort", run_dir=tmp_path / "runs" / "r",
                      book_root=REPO, **kw)


def test_stage_keys_do_not_change_when_01_data_writes_the_icd_file(tmp_path):
    cfg = _cfg(tmp_path)
    before = {s: stage_key(cfg, s) for s in STAGES}
    key_before = cache_key(cfg)
    icd = tmp_path / "synthetic" / "mimic-iv-ecg-ext-icd-labels" / "records_w_diag_icd10.csv"
    icd.parent.mkdir(parents=True)
    icd.write_text("study_id,strat_fold\n1,0\n")
    assert {s: stage_key(cfg, s) for s in STAGES} == before
    assert cache_key(cfg) == key_before
    # the file itself is fingerprinted by 01_data, before and after it exists
    assert (icd, False) in stage_files("01_data", cfg)


def test_an_icd_file_given_is_passed_to_the_notebook_as_given(tmp_path):
    icd = tmp_path / "elsewhere" / "icd.csv"
    cfg = _cfg(tmp_path, ecg_icd=icd)
    assert stage_key(cfg, "01_data")["params"]["ecg_icd"] == str(icd.resolve())
    assert (icd, False) in stage_files("01_data", cfg)
    assert stage_key(_cfg(tmp_path), "01_data")["params"]["ecg_icd"] is None
