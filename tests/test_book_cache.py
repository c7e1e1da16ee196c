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


def test_the_code_hash_follows_every_module_a_page_runs_but_not_the_builder(tmp_path, monkeypatch):
    """The results page shows labecg.cli.reproduce_commands, so a change to the CLI reruns it;
    the builder and the Sphinx extension run no notebook."""
    from labecg import book

    pkg = tmp_path / "labecg"
    pkg.mkdir()
    for name in ("book.py", "cli.py", "sphinx_ext.py", "stats.py"):
        (pkg / name).write_text(f"# {name}\n")
    monkeypatch.setattr(book, "__file__", str(pkg / "book.py"))
    before = book._code_hash()
    for name, reruns in (("book.py", False), ("sphinx_ext.py", False), ("cli.py", True), ("stats.py", True)):
        (pkg / name).write_text(f"# {name}, changed\n")
        after = book._code_hash()
        assert (after != before) == reruns, name
        before = after
