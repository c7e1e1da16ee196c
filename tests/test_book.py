"""End to end: the four notebooks with papermill at the smallest scale, the Jupyter Book
build, its cache, a failing notebook, split execution, and the book in headless Chromium.

One session fixture builds the book once (in a temporary copy of the book sources, never
in the repository's ``book/``); the tests read what it produced. The numbers on the pages
are checked against the files the evaluation stage wrote, not against the glue itself.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import html
import http.server
import json
import os
import re
import shlex
import shutil
import socketserver
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from labecg.book import STAGES, BookConfig, build_book, cache_key
from labecg.sphinx_ext import repository_url
from labecg.train import variant_run_dir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(patients=50, epochs=1, d_model=16, n_layers=1, batch_size=16, n_iterations=50,
             min_lab_events=20, min_per_class=2, workers=1)
# the remote of the test book's git work tree; the build turns it into the buttons' URL
TEST_REMOTE = ("git@github.com:labecg-test/labecg.git", "https://github.com/labecg-test/labecg")
PAGES = ["index.html", "book/intro.html", "book/tasks.html", "book/methods.html",
         "book/notebooks/01_data.html", "book/notebooks/01b_real_rows.html", "book/notebooks/02_signals.html",
         "book/notebooks/03_training.html", "book/notebooks/04_results.html",
         "book/results.html", "book/mimic.html", "book/classroom.html"]


def copy_book_sources(dst: Path) -> Path:
    """_config.yml, _toc.yml, notebooks/*.ipynb and book/ (prose, _static) into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, dst / name)
    (dst / "notebooks").mkdir()
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, dst / "notebooks" / nb.name)
    (dst / "book").mkdir()
    for md in (REPO / "book").glob("*.md"):
        shutil.copy(md, dst / "book" / md.name)
    if (REPO / "book" / "_static").is_dir():
        shutil.copytree(REPO / "book" / "_static", dst / "book" / "_static")
    return dst


def small_config(root: Path, **overrides) -> BookConfig:
    kw = dict(data_root=root / "data" / "synthetic", cohort_dir=root / "data" / "cohort",
              demo_cohort_dir=root / "data" / "demo_cohort",
              run_dir=root / "runs" / "small", book_root=root, **SMALL)
    kw.update(overrides)
    return BookConfig(**kw)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The book built twice from one copy of the sources (second build: all cached)."""
    root = copy_book_sources(tmp_path_factory.mktemp("book"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "remote", "add", "origin", TEST_REMOTE[0]], check=True)
    cfg = small_config(root)
    first = build_book(cfg)
    mtimes = {s: p.stat().st_mtime_ns for s, p in first.notebooks.items()}
    second = build_book(cfg)
    return SimpleNamespace(root=root, cfg=cfg, first=first, second=second, mtimes=mtimes,
                           html=root / "_build" / "html")


class _Tables(HTMLParser):
    """Tables (rows of cell texts) and <img> sources of a page, by an independent parser."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self.images, self._row, self._cell = [], [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self._row = []
            self.tables[-1].append(self._row)
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_page(path: Path) -> _Tables:
    p = _Tables()
    p.feed(path.read_text())
    return p


#: What a progress bar leaves in text: tqdm's "%|" and rate, Lightning's "Epoch 0:", papermill's "Executing".
_PROGRESS = re.compile(r"\d+%\|| \d+(?:\.\d+)?(?:it|s)/(?:s|it)\b|\bEpoch \d+:|Executing:|IProgress|TqdmWarning")


def progress_in(text: str) -> list[str]:
    """Progress-bar fragments found in a page's text."""
    return sorted({m.group(0) for m in _PROGRESS.finditer(text)})


def is_truncated(cell: str) -> bool:
    """A table cell as pandas shortens it: "..." alone (rows or columns left out) or at the end of a text."""
    return cell in ("...", "…") or cell.endswith("...")


def test_progress_and_truncation_checks_catch_what_they_look_for():
    assert progress_in("Epoch 0:  40%|████      | 2/5 [00:01<00:02,  1.53it/s, v_num=0]")
    assert progress_in("signals: 100%|██████████| 141/141 [00:03<00:00, 40.2ecg/s]")
    assert not progress_in("macro AUROC 0.713 (0.64, 0.79); 12 of 95 targets")
    assert is_truncated("...") and is_truncated("QT prolongation and T-wave flat...")
    assert not is_truncated("0.71 (0.64, 0.79)")


def test_no_page_shows_progress_or_a_truncated_table(built):
    for page in PAGES:
        text = (built.html / page).read_text()
        assert not progress_in(text), (page, progress_in(text))
        cut = [c for t in parse_page(built.html / page).tables for row in t for c in row if is_truncated(c)]
        assert not cut, (page, cut[:5])
    # nor in the executed notebooks (papermill output, Lightning's bar, kernel warnings)
    for stage, path in built.first.notebooks.items():
        nb = json.loads(path.read_text())
        streams = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
        assert not progress_in(streams) and "\r" not in streams, (stage, progress_in(streams))
        assert "KeyboardInterrupt" not in streams, stage
    assert (built.html / "book/notebooks/03_training.html").stat().st_size < 100_000


#: An output that shows a Python object, not content: a bare repr or an empty container.
_BARE_OUTPUT = re.compile(r"^(<[\w.]+ object(?: at 0x[0-9a-f]+)?>|\{\}|\[\]|\(\)|None)$")


def test_bare_output_check_catches_what_it_looks_for():
    assert _BARE_OUTPUT.match("<IPython.core.display.Markdown object>")
    assert _BARE_OUTPUT.match("{}") and _BARE_OUTPUT.match("<Figure object at 0x7f00>")
    assert not _BARE_OUTPUT.match("{'a': 1}") and not _BARE_OUTPUT.match("120 ECGs")


def test_no_notebook_shows_a_bare_object_or_an_empty_container(built):
    for stage, path in built.first.notebooks.items():
        nb = json.loads(path.read_text())
        bare = [c["source"] for c in nb["cells"] for o in c.get("outputs", [])
                if set(o.get("data", {})) == {"text/plain"}
                and _BARE_OUTPUT.match("".join(o["data"]["text/plain"]).strip())]
        assert not bare, (stage, bare)


def test_every_table_a_notebook_shows_has_a_caption(built):
    """Tables, shown or glued, go through tables.show_table: a caption above human headers."""
    for stage, path in built.first.notebooks.items():
        nb = json.loads(path.read_text())
        bare = [c["source"][:3] for c in nb["cells"] for o in c.get("outputs", [])
                for html in [o.get("data", {}).get("text/html", "")]
                if "<table" in "".join(html) and "<caption" not in "".join(html)]
        assert not bare, (stage, bare)


def test_notebooks_show_each_glued_figure_and_table_once(built):
    """A student running a notebook sees every figure and table; the page shows each once."""
    for stage, path in built.first.notebooks.items():
        nb = json.loads(path.read_text())
        for c in nb["cells"]:
            glued = [o for o in c.get("outputs", []) if o.get("metadata", {}).get("scrapbook", {}).get("name")]
            shown = [o for o in glued if any(k.startswith(("image/", "text/html")) for k in o["data"])]
            hidden = [o["metadata"]["scrapbook"]["name"] for o in glued
                      if any("papermill.record/image" in k or "papermill.record/text/html" in k for k in o["data"])]
            plain = [o for o in c.get("outputs", []) if "scrapbook" not in o.get("metadata", {})
                     and any(k.startswith(("image/", "text/html")) for k in o.get("data", {}))]
            assert not hidden or plain, f"{stage}: {hidden} glued for the page only, not shown in the notebook"
            if shown:
                assert "remove-output" in c["metadata"].get("tags", []), (stage, c["source"])
    page = parse_page(built.html / "book/notebooks/01_data.html")
    sources = [s for s in page.images if "_images" in s]
    assert len(sources) == len(set(sources)) == 2, sources  # prevalence and task figures, once each


def test_every_notebook_executed_without_error(built):
    assert built.first.stages == {s: "ran" for s in STAGES}
    for stage, path in built.first.notebooks.items():
        nb = json.loads(path.read_text())
        assert nb["metadata"]["papermill"]["exception"] in (None, False), stage
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{stage}: {errors[:1]}"
        # the parameters this build passed were injected
        injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(injected) == 1, stage
        # sources stay free of outputs: the repository copies are never executed in place
        src = json.loads((REPO / "notebooks" / f"{stage}.ipynb").read_text())
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in src["cells"] if c["cell_type"] == "code"), stage


def test_glued_figures_are_png(built):
    nb = json.loads(built.first.notebooks["04_results"].read_text())
    glued = {}
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook", {})
            if meta.get("name"):
                glued[meta["name"]] = o["data"]
    # shown in the notebook (plain mime type) as well as glued; a PNG either way
    assert "image/png" in glued["fig_auroc"]
    for key in ("table1", "table2", "paper_comparison", "macro_auroc", "source_label"):
        assert key in glued, key


def test_glued_numbers_are_plain_numbers(built):
    # a numpy scalar glues as "np.float64(...)", which {glue:text}`name:.2f` cannot format
    for stage, path in built.first.notebooks.items():
        for c in json.loads(path.read_text())["cells"]:
            for o in c.get("outputs", []):
                name = o.get("metadata", {}).get("scrapbook", {}).get("name")
                text = o.get("data", {}).get("application/papermill.record/text/plain", "")
                assert not (name and text.startswith("np.")), f"{stage}: {name} glued as {text}"
    assert float(_glued(built.first.notebooks["02_signals"], "filter_atten_60hz_db")[
        "application/papermill.record/text/plain"]) > 40  # 60 Hz mains, the filter's stop band


def test_every_chapter_page_exists(built):
    assert built.first.html_index == built.html / "index.html"
    missing = [p for p in PAGES if not (built.html / p).exists()]
    assert not missing, missing


def test_results_pages_show_tables_figures_and_numbers(built):
    evaluation = built.cfg.run_dir / "evaluation"
    t1 = pd.read_csv(evaluation / "table1_estimation.csv")
    t2 = pd.read_csv(evaluation / "table2_monitoring.csv")
    results = pd.read_csv(evaluation / "results.csv").set_index("target")
    for page in ("book/results.html", "book/notebooks/04_results.html"):
        parsed = parse_page(built.html / page)
        text = (built.html / page).read_text()
        headers = [t[0] for t in parsed.tables if t]
        t1_html = [t for t in parsed.tables if t and "Estimation AUROC" in t[0]]
        t2_html = [t for t in parsed.tables if t and any("60 min. AUROC" in h for h in t[0])
                   and any("120 min. AUROC" in h for h in t[0])]  # Table 2's headers, not other tables' per-task counts
        # an empty table is a sentence saying why, never a header without rows
        for csv, found, kind in ((t1, t1_html, "estimation"), (t2, t2_html, "monitoring")):
            if csv.empty:
                assert not found and f"{kind} target" in text, f"{page}: no note for the empty {kind} table"
            else:
                assert found, f"{page}: {kind} table not found among headers {headers}"
        # body rows = rows of the CSV the evaluation stage wrote (header rows have no <td>)
        if t1_html:
            body1 = [r for r in t1_html[0][1:] if r and not all(c == "" for c in r[1:])]
            assert len(body1) == len(t1), page
        if t2_html:
            assert len([r for r in t2_html[0][1:] if r and not all(c == "" for c in r[1:])]) >= len(t2), page
        imgs = [s for s in parsed.images if "_images" in s]
        assert imgs, f"{page}: no figure"
        for src in imgs:
            assert (built.html / page).parent.joinpath(src).resolve().is_file(), src
    results_text = (built.html / "book/results.html").read_text()
    assert f"{results.loc['macro', 'auroc']:.3f}" in results_text
    assert "synthetic data" in results_text and "arXiv v1" in results_text
    nb_text = (built.html / "book/notebooks/04_results.html").read_text()
    assert "Built from synthetic data" in nb_text
    info = json.loads((built.cfg.run_dir / "run_info.json").read_text())
    if info.get("git_commit"):
        assert info["git_commit"] in nb_text


def test_attribution_files_use_the_generators_record_and_reach_the_page(built):
    """Windows and null targets as the synthetic source recorded them; the page's sentence from the contrasts."""
    from labecg import explain, selfcheck
    from labecg.targets import lab_slug

    evaluation = built.cfg.run_dir / "evaluation"
    record = json.loads((built.cfg.data_root / "labecg_synthetic.json").read_text())
    windows = pd.read_csv(evaluation / "attribution_windows.csv")
    recorded = {name: (a, b) for name, a, b in record["planted_windows_s"].values()}
    assert {(r.window, r.start_s, r.end_s) for r in windows.itertuples()} == {(w, a, b) for w, (a, b) in recorded.items()}
    null_slugs = {lab_slug(label) for label in record["ecg_null_labs"]}
    for target in windows.loc[windows["role"] == "null_target", "target"]:
        assert target.rsplit("_", 2)[0] in null_slugs, target
    contrasts = pd.read_csv(evaluation / "attribution_contrasts.csv")
    randomization = pd.read_csv(evaluation / "attribution_randomization.csv")
    assert list(contrasts.columns) == explain.CONTRAST_COLUMNS
    assert list(randomization.columns) == explain.RANDOMIZATION_COLUMNS
    sentence = selfcheck.summarize_attribution(selfcheck.attribution_check(windows, contrasts), randomization)
    page = html.unescape((built.html / "book/results.html").read_text())
    assert sentence[:40] in re.sub(r"<[^>]+>", "", page)


def test_results_page_shows_what_the_ecg_adds_and_names_the_missing_ablation(built):
    # the default build trains the tabular-only model: added_value.csv has both baselines
    added = pd.read_csv(built.cfg.run_dir / "evaluation" / "added_value.csv")
    assert set(added["baseline"]) == {"tabular", "last_value"}
    macro = added[(added["baseline"] == "tabular") & (added["target"] == "macro")].iloc[0]
    text = html.unescape(re.sub(r"<[^>]+>", " ", (built.html / "book/results.html").read_text()))
    assert f"{macro['delta']:+.3f} (95% paired interval {macro['low']:+.3f} to {macro['high']:+.3f})" in text
    tables = [t for t in parse_page(built.html / "book/results.html").tables if t and "Model − tabular" in t[0]]
    assert tables and len(tables[0]) - 1 == added["target"].nunique()  # one row per target and the macro
    # the causal ablation is not run by the default build: the page names the command that runs it
    assert "Not run in this build: causal" in text and "make book-full" in text


def test_second_build_is_cached(built):
    assert built.second.stages == {s: "cached" for s in STAGES}, built.second.reasons
    assert {s: p.stat().st_mtime_ns for s, p in built.second.notebooks.items()} == built.mtimes
    assert (built.html / "index.html").exists()


def test_failing_notebook_stops_the_build(tmp_path, built):
    root = copy_book_sources(tmp_path / "failing")
    cfg = small_config(root, run_dir=tmp_path / "no-such-run", stages=("04_results",))
    with pytest.raises(RuntimeError) as info:
        build_book(cfg)
    message = str(info.value)
    assert "04_results.ipynb" in message
    assert "FileNotFoundError" in message and "targets.json" in message
    assert "describe_run" in message  # the failing cell's source
    assert (root / "book" / "notebooks" / "04_results.failed.ipynb").exists()
    assert not (root / "book" / "notebooks" / "04_results.ipynb").exists()
    assert not (root / "_build" / "html" / "index.html").exists()


def test_a_missing_run_folder_leaves_the_previous_book(tmp_path, built):
    root = copy_book_sources(tmp_path / "keep")
    shutil.copytree(built.root / "book" / "notebooks", root / "book" / "notebooks")
    before = {p: p.read_bytes() for p in sorted((root / "book" / "notebooks").rglob("*")) if p.is_file()}
    cfg = small_config(root, data_root=built.cfg.data_root, cohort_dir=built.cfg.cohort_dir,
                       run_dir=tmp_path / "no-such-run", from_run=True)
    with pytest.raises(FileNotFoundError, match=r"no-such-run/targets\.json: not found"):
        build_book(cfg)
    after = {p: p.read_bytes() for p in sorted((root / "book" / "notebooks").rglob("*")) if p.is_file()}
    assert after == before


def test_book_builds_from_a_run_folder_alone(tmp_path, built):
    root = copy_book_sources(tmp_path / "split")
    run = tmp_path / "copied-run"
    # every variant's run folder (the default build compares fusion with tabular-only)
    for variant in built.cfg.variants:
        shutil.copytree(variant_run_dir(built.cfg.run_dir, variant), variant_run_dir(run, variant),
                        ignore=shutil.ignore_patterns("evaluation", "checkpoints"))
    cfg = small_config(root, data_root=tmp_path / "absent", cohort_dir=tmp_path / "absent-cohort",
                       run_dir=run, from_run=True)
    result = build_book(cfg)
    assert result.stages == {"01_data": "placeholder", "01b_real_rows": "placeholder", "02_signals": "placeholder",
                             "03_training": "placeholder", "04_results": "ran"}
    assert not (tmp_path / "absent").exists() and not (tmp_path / "absent-cohort").exists()
    page = (root / "_build" / "html" / "book" / "results.html").read_text()
    macro = pd.read_csv(run / "evaluation" / "results.csv").set_index("target").loc["macro", "auroc"]
    assert f"{macro:.3f}" in page
    assert "not executed" in (root / "_build" / "html" / "book" / "notebooks" / "01_data.html").read_text()


def test_privacy_check_covers_the_real_rows_chapter(built):
    from labecg.book import demo_ids
    from labecg.privacy import PrivacyError

    # every subject and study id of the shipped demo, read here without labecg
    demo = REPO / "labecg" / "mimic_demo"
    records = pd.read_csv(demo / "mimic-iv-ecg" / "record_list.csv")
    patients = pd.read_csv(demo / "mimiciv" / "hosp" / "patients.csv.gz")
    assert demo_ids() == set(records["subject_id"]) | set(records["study_id"]) | set(patients["subject_id"])
    page = (built.html / "book/notebooks/01b_real_rows.html").read_text()
    assert "folds" in page and "MIMIC-IV-ECG-ICD" in page
    # a study id planted in an output of the chapter's executed notebook fails the next (cached) build
    path = built.first.notebooks["01b_real_rows"]
    before, stat = path.read_bytes(), path.stat()
    study = int(records["study_id"].iloc[0])
    try:
        path.write_text(path.read_text().replace("labecg.cohort: ", f"labecg.cohort: study {study} ", 1))
        assert str(study) in path.read_text()
        with pytest.raises(PrivacyError, match=f"01b_real_rows.*{study}"):
            build_book(dataclasses.replace(built.cfg, build_html=False))
    finally:
        path.write_bytes(before)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_cache_key_is_the_key_of_the_books_records(built):
    # the digest the Pages workflow names its cache after, recomputed from the records the build wrote
    records = {s: json.loads((built.root / "book" / "notebooks" / ".cache" / f"{s}.json").read_text())["key"]
               for s in STAGES}
    expected = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    assert cache_key(built.cfg) == expected
    flags = ["--book-root", str(built.root), "--data-root", str(built.cfg.data_root),
             "--cohort-dir", str(built.cfg.cohort_dir), "--run-dir", str(built.cfg.run_dir),
             "--demo-cohort-dir", str(built.cfg.demo_cohort_dir)]
    for name, value in SMALL.items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    proc = subprocess.run([str(Path(sys.executable).parent / "labecg"), "book-cache-key", *flags],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == expected


def _glued(notebook: Path, key: str) -> dict:
    nb = json.loads(notebook.read_text())
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            if o.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                return o["data"]
    raise KeyError(f"{notebook}: nothing glued as {key!r}")


def _reproduce_commands(page_html: str) -> list[str]:
    box = re.search(r'<div class="admonition tip reproduce">.*?<pre>(.*?)</pre>', page_html, flags=re.S)
    assert box, "no reproduce box"
    return html.unescape(box.group(1)).splitlines()


def test_reproduce_box_commands_rebuild_the_same_results(built, tmp_path):
    # The box of the executed results chapter, run as printed, in a fresh folder: the paths it
    # prints lie in the test book's folder, relative to it.
    box = _glued(built.root / "book" / "notebooks" / "04_results.ipynb", "reproduce_box")["application/papermill.record/text/html"]
    commands = _reproduce_commands("".join(box))
    # the default build trains fusion, then tabular-only; fusion is evaluated against it after both trained
    assert [c.split()[:2] for c in commands] == [
        ["labecg", "synth"], ["labecg", "cohort"], ["labecg", "signals"], ["labecg", "train"],
        ["labecg", "explain"], ["labecg", "train"], ["labecg", "evaluate"], ["labecg", "evaluate"],
        ["papermill", "notebooks/04_results.ipynb"]]
    assert "--patients 50" in commands[0] and "--min-per-class 2" in commands[1]
    assert "--epochs 1" in commands[3] and "--d-model 16" in commands[3] and "--variant tabular" in commands[5]
    assert "--tabular-run-dir" in commands[6] and "--tabular-run-dir" not in commands[7]
    work = tmp_path / "again"
    (work / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "04_results.ipynb", work / "notebooks")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    prefix = str(built.root) + os.sep
    for command in commands:
        # the book passes the notebooks paths relative to its root (#11), so the box prints them so
        assert not [t for t in shlex.split(command) if t.startswith(os.sep)], command
        proc = subprocess.run(shlex.split(command.replace(prefix, "")), cwd=work, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    run = built.cfg.run_dir.relative_to(built.root)
    ours = pd.read_csv(built.cfg.run_dir / "evaluation" / "results.csv").set_index("target")
    again = pd.read_csv(work / run / "evaluation" / "results.csv").set_index("target")
    assert list(again.index) == list(ours.index)
    numbers = ["auroc", "low", "high", "n_pos", "n_neg", "n_skipped"]
    pd.testing.assert_frame_equal(again[numbers], ours[numbers], check_exact=False, rtol=0, atol=1e-9)
    assert (work / run / "04_results.ipynb").exists()  # the page itself, executed by papermill


def test_launch_and_edit_buttons_open_notebooks_that_exist(built):
    page = (built.html / "book" / "notebooks" / "04_results.html").read_text()
    links = set(re.findall(r'href="(https://[^"]+)"', page))
    url = TEST_REMOTE[1]
    binder = [l for l in links if l.startswith("https://mybinder.org/v2/gh/labecg-test/labecg/main")]
    colab = [l for l in links if l.startswith("https://colab.research.google.com/github/labecg-test/labecg/")]
    assert binder == ["https://mybinder.org/v2/gh/labecg-test/labecg/main?urlpath=tree/notebooks/04_results.ipynb"]
    assert colab == ["https://colab.research.google.com/github/labecg-test/labecg/blob/gh-pages/"
                     "_sources/book/notebooks/04_results.ipynb"]
    assert f"{url}/edit/main/notebooks/04_results.ipynb" in links
    assert url in links and any(l.startswith(f"{url}/issues/new") for l in links)
    # each target exists: the source notebook in the repository, the executed one on the site
    assert (REPO / "notebooks" / "04_results.ipynb").exists()
    launched = json.loads((built.html / "_sources" / "book" / "notebooks" / "04_results.ipynb").read_text())
    first = launched["cells"][0]
    assert first["metadata"]["tags"] == ["labecg-install"]
    assert f'labecg @ git+{url}"' in "".join(first["source"])  # no commit yet in the test work tree
    executed = json.loads(built.first.notebooks["04_results"].read_text())["cells"]
    assert [(c["source"], c.get("outputs")) for c in launched["cells"][1:]] == \
        [(c["source"], c.get("outputs")) for c in executed]
    prose = (built.html / "book" / "results.html").read_text()
    assert f"{url}/edit/main/book/results.md" in prose


# ---------------------------------------------------------------------------- browser


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (exe and driver):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium and chromedriver are required in CI (apt-get install chromium chromium-driver)")
        pytest.skip("chromium/chromedriver not installed")
    return exe, driver


@pytest.fixture
def browser(tmp_path):
    exe, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site(request):
    """The built book under test: ``LABECG_BOOK_HTML`` (a book built beforehand, as the Pages
    workflow does with ``make book``; its repository is this checkout), else the small book."""
    given = os.environ.get("LABECG_BOOK_HTML")
    if given:
        html_dir = Path(given).resolve()
        if not (html_dir / "index.html").is_file():
            pytest.fail(f"LABECG_BOOK_HTML={given}: no index.html; build the book first (make book)")
        # the book's folder holds _build/html; its runs/ are the run folders it shows
        root = html_dir.parents[1] if (html_dir.parents[1] / "_config.yml").is_file() else REPO
        return SimpleNamespace(html=html_dir, root=root, run_dirs=sorted((root / "runs").glob("*")))
    built = request.getfixturevalue("built")
    return SimpleNamespace(html=built.html, root=built.root, run_dirs=[built.cfg.run_dir])


@pytest.fixture
def served(site):
    handler = functools.partial(_QuietHandler, directory=str(site.html))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    # Chrome keeps an idle connection open; joining its handler thread on close took 100 s
    server.daemon_threads, server.block_on_close = True, False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_book_in_headless_chromium(browser, served):
    from selenium.webdriver.support.ui import WebDriverWait

    def loaded(page):
        browser.get(f"{served}/{page}")
        # index.html redirects to the root page; wait until the final page has loaded
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
            and d.execute_script("return document.querySelector('main') !== null"))

    severe, progress, truncated = {}, {}, {}
    for page in PAGES:
        loaded(page)
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        if logs:
            severe[page] = [e["message"] for e in logs]
        found = progress_in(browser.execute_script("return document.querySelector('main').innerText"))
        if found:
            progress[page] = found
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll('main td, main th')).map(c => c.innerText.trim())")
        cut = [c for c in cells if is_truncated(c)]
        if cut:
            truncated[page] = cut[:5]
    assert not severe, severe
    assert not progress, f"progress output in the pages: {progress}"
    assert not truncated, f"truncated table cells (pandas '...'): {truncated}"

    loaded("book/results.html")
    tables = browser.execute_script("return document.querySelectorAll('main table').length")
    assert tables >= 1
    heads = browser.execute_script(
        "return Array.from(document.querySelectorAll('main table')).map(t => t.innerText.split('\\n')[0])")
    # Table 1, or the sentence that stands for it when no estimation target is significant
    assert any("Estimation AUROC" in h for h in heads) or \
        "estimation target" in browser.execute_script("return document.querySelector('main').innerText"), heads
    loaded = browser.execute_script(
        "return Array.from(document.querySelectorAll('main img'))"
        ".filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded >= 1
    out = REPO / "artifacts"
    out.mkdir(exist_ok=True)
    shot = out / "book_results.png"
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 100, 8000))
    assert browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_buttons_and_reproduce_box_in_headless_chromium(browser, served, site):
    from selenium.webdriver.support.ui import WebDriverWait

    url = repository_url(site.root)
    assert url, f"{site.root}: no repository URL (set _config.yml repository.url or a git remote)"
    for page in ("book/notebooks/04_results.html", "book/results.html"):
        browser.get(f"{served}/{page}")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        hrefs = browser.execute_script(
            "return Array.from(document.querySelectorAll('.article-header-buttons a[href]')).map(a => a.href)")
        assert url in hrefs, (page, hrefs)
        assert any(h.startswith(f"{url}/issues/new") for h in hrefs), hrefs
        assert any(h.startswith(f"{url}/edit/") for h in hrefs), hrefs
        box = browser.execute_script("""
            const box = document.querySelector('main .admonition.reproduce');
            if (!box) return null;
            const r = box.getBoundingClientRect();
            return {title: box.querySelector('.admonition-title').innerText,
                    code: box.querySelector('pre').innerText, width: r.width, height: r.height,
                    copy: box.querySelector('button.copybtn') !== null};""")
        assert box, f"{page}: no reproduce box"
        assert box["title"] == "How to reproduce this page"
        assert box["width"] > 200 and box["height"] > 50, box  # rendered, not collapsed
        assert "labecg train" in box["code"] and "papermill notebooks/04_results.ipynb" in box["code"]
        assert box["copy"], f"{page}: the commands have no copy button"
        if page.startswith("book/notebooks/"):
            launch = [h for h in hrefs if "mybinder.org" in h or "colab.research.google.com" in h]
            assert any(h.startswith("https://mybinder.org/v2/gh/") and h.endswith(
                "urlpath=tree/notebooks/04_results.ipynb") for h in launch), launch
            assert any(h.startswith("https://colab.research.google.com/github/") and h.endswith(
                "/blob/gh-pages/_sources/book/notebooks/04_results.ipynb") for h in launch), launch


def test_prose_pages_follow_a_rerun_notebook(built):
    # Only stage 04 reruns (more resamples); results.md did not change, yet it must show the
    # new interval, which an incremental Sphinx build would not re-render. Runs last: it
    # leaves the shared build valid but with other bootstrap numbers.
    again = build_book(dataclasses.replace(built.cfg, n_iterations=SMALL["n_iterations"] + 17))
    assert again.stages["04_results"] == "ran" and again.stages["03_training"] == "cached"
    macro = pd.read_csv(built.cfg.run_dir / "evaluation" / "results.csv").set_index("target").loc["macro"]
    text = (built.html / "book" / "results.html").read_text()
    assert f"{macro['low']:.3f}" in text and f"{macro['high']:.3f}" in text


# ---------------------------------------------------------------------------- terminal


def test_chapter_progress_shows_cells_and_the_stage_bar_on_a_terminal(tmp_path, monkeypatch):
    import io
    import time

    from labecg import book

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    progress = book._ChapterProgress("02_signals", 3, tmp_path / ".02_signals.progress")
    with open(tmp_path / ".02_signals.progress", "a") as f:  # what a stage's bar appends
        f.write("\rsignals:  50%|#####     | 70/141 [00:02<00:02, 35.0ecg/s]")
    progress.cell_done()
    time.sleep(1.5)
    progress.close()
    shown = term.getvalue()
    assert "02_signals: 1/3 cells" in shown and "signals:  50%|#####     | 70/141" in shown, shown
    assert not (tmp_path / ".02_signals.progress").exists()


def test_a_notebook_run_prints_no_kernel_messages(tmp_path):
    """jupyter_client's shutdown interrupt made the kernel log "KeyboardInterrupt caught"; ipykernel warns on TCP."""
    import subprocess
    import sys

    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(x)")]
    nbformat.write(nb, tmp_path / "t.ipynb")
    script = ("import sys\nfrom pathlib import Path\nfrom labecg import book\n"
              "root = Path(sys.argv[1])\n"
              "book._execute(root / 't.ipynb', root / 'out.ipynb', {'x': 2}, book._kernel_dir(root), cwd=root)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "".join(json.loads((tmp_path / "out.ipynb").read_text())["cells"][-1]["outputs"][0]["text"]) == "2\n"
    noise = [line for line in proc.stderr.splitlines() if "Kernel" in line or "KeyboardInterrupt" in line]
    assert not noise, noise


def _shown_names(cell_source: str) -> set[str]:
    """Names a code cell shows as output: its last expression and every display(...) argument
    but Markdown text."""
    tree = ast.parse(cell_source)
    shown = set()
    if tree.body and isinstance(tree.body[-1], ast.Expr) and isinstance(tree.body[-1].value, ast.Name):
        shown.add(tree.body[-1].value.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "display":
            for arg in node.args:
                if isinstance(arg, ast.Name):
                    shown.add(arg.id)
    return shown


def test_no_page_shows_a_glued_figure_or_table_twice():
    # A figure or table that a Markdown glue directive places on the page must not also be
    # the visible output of its code cell: the student sees it in Jupyter, the reader once.
    import nbformat

    twice = []
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(nb_path, as_version=4).cells
        placed = set()
        for c in cells:
            if c.cell_type == "markdown":
                placed |= set(re.findall(r"```\{glue(?::\w*)?\}\s+(\w+)", c.source))
        for i, c in enumerate(cells):
            if c.cell_type != "code" or "remove-output" in c.metadata.get("tags", []):
                continue
            tree = ast.parse(c.source)
            shown = _shown_names(c.source)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "glue" and node.args
                        and isinstance(node.args[0], ast.Constant) and node.args[0].value in placed):
                    value_names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} if len(node.args) > 1 else set()
                    hidden = any(k.arg == "display" and isinstance(k.value, ast.Constant) and k.value.value is False
                                 for k in node.keywords)
                    if value_names & shown or not hidden:
                        twice.append(f"{nb_path.name} cell {i}: {node.args[0].value}")
    assert not twice, twice


# ---------------------------------------------------------------------------- reading (#23)

WIDTHS = (390, 768, 1400)


def _load(browser, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
        and d.execute_script("return document.querySelector('main') !== null"))


def test_no_page_is_wider_than_its_window(browser, served):
    """Wide tables scroll inside their own box; the page never scrolls sideways."""
    wide = {}
    for width in WIDTHS:
        browser.set_window_size(width, 900)
        for page in PAGES:
            _load(browser, f"{served}/{page}")
            page_width, window = browser.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            if page_width > window + 1:
                culprits = browser.execute_script("""
                    const w = document.documentElement.clientWidth;
                    return Array.from(document.querySelectorAll('main *'))
                      .filter(e => e.getBoundingClientRect().right > w + 1)
                      .slice(0, 3).map(e => e.tagName + '.' + e.className);""")
                wide[(width, page)] = (page_width, culprits)
    assert not wide, wide


def test_glued_text_is_not_set_in_bold(browser, served):
    """myst-nb sets every glued text in bold: whole summary paragraphs read as walls of bold."""
    _load(browser, f"{served}/book/results.html")
    heavy = browser.execute_script("""
        return Array.from(document.querySelectorAll('main span.pasted-text'))
          .filter(s => getComputedStyle(s).fontWeight !== getComputedStyle(s.parentElement).fontWeight)
          .map(s => s.innerText.slice(0, 60));""")
    assert browser.execute_script("return document.querySelectorAll('main span.pasted-text').length") > 5
    assert not heavy, heavy


class _Links(HTMLParser):
    """Every internal reference of a page: href and src of a, link, script, img, source; and its ids."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag in ("a", "link") and a.get("href"):
            self.refs.append(a["href"])
        if tag in ("img", "script", "source", "iframe") and a.get("src"):
            self.refs.append(a["src"])


def test_every_link_resolves(site):
    """Crawl every page of the built site: each internal link, asset and fragment exists."""
    from urllib.parse import unquote, urlsplit

    # the pages, not the theme's templates under _static
    pages = sorted(p for p in site.html.rglob("*.html") if "_static" not in p.relative_to(site.html).parts)
    parsed = {}
    for page in pages:
        p = _Links()
        p.feed(page.read_text(errors="replace"))
        parsed[page.resolve()] = p
    broken = []
    for page, p in parsed.items():
        for ref in p.refs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith(("//", "mailto:", "javascript:", "data:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append((str(page.relative_to(site.html.resolve())), ref))
            elif parts.fragment and target.suffix == ".html" and target in parsed:
                if parts.fragment not in parsed[target].ids:
                    broken.append((str(page.relative_to(site.html.resolve())), ref))
    assert not broken, broken[:20]


def _builder_paths(site) -> list[str]:
    """Absolute paths of the machine that built the book: its folder, the checkout, the venv, home."""
    paths = {str(site.root.resolve()), str(REPO), sys.prefix, str(Path(sys.executable).parent)}
    home = str(Path.home())
    if len(home) > 1:
        paths.add(home + "/")
    return sorted(p for p in paths if len(p) > 1)


def test_no_builder_path_in_pages_or_run_folders(site):
    leaks = {}
    files = list(site.html.rglob("*.html")) + list((site.html / "_sources").rglob("*.ipynb"))
    files += [p for run in site.run_dirs for p in Path(run).rglob("*.json")]
    for path in files:
        text = path.read_text(errors="replace")
        found = [b for b in _builder_paths(site) if b in text] + (["site-packages"] if "site-packages" in text else [])
        if found:
            leaks[str(path)] = found
    assert files and not leaks, leaks


def test_no_unexplained_mark(site):
    """Category tags, bold cells and file names are explained on the page that shows them."""
    from labecg import catalog

    tracked = {Path(f).name for f in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                                                     check=True).stdout.split()}
    unexplained = []
    for page in sorted(site.html.rglob("*.html")):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        text = re.sub(r"<[^>]+>", " ", page.read_text())
        text = html.unescape(re.sub(r"\s+", " ", text))
        for code, name in catalog.CATEGORY_NAMES.items():
            if f"[{code}]" in text and f"[{code}] {name}" not in text:
                unexplained.append((page.name, f"[{code}]"))
        if "font-weight: bold" in page.read_text() and "Bold:" not in text:
            unexplained.append((page.name, "bold cells"))
        # a file the reader is pointed to exists in the repository
        for name in set(re.findall(r"\b([A-Za-z][\w-]*\.md)\b", text)):
            if name not in tracked:
                unexplained.append((page.name, name))
        if "REFERENCE_NOTES" in text:
            unexplained.append((page.name, "REFERENCE_NOTES"))
    assert not unexplained, unexplained


def _image_records(site) -> dict:
    """sha256 of each PNG in the executed notebooks -> its display metadata (figure_png's)."""
    import base64

    records = {}
    for nb_path in (site.root / "book" / "notebooks").glob("*.ipynb"):
        for cell in json.loads(nb_path.read_text())["cells"]:
            for out in cell.get("outputs", []):
                for key, value in out.get("data", {}).items():
                    if key.endswith("image/png"):
                        digest = hashlib.sha256(base64.b64decode("".join(value))).hexdigest()
                        records[digest] = out.get("metadata", {}).get("image/png", {})
    return records


def test_figures_are_2x_with_text_of_9_px_at_content_width(browser, served, site):
    """Every figure: a PNG with two device pixels per CSS pixel, its smallest text >= 9 CSS px as shown.

    Text size from the figure's record (smallest font in points, saved with the figure) and the
    PNG's own dpi and width: points x dpi / 72 device pixels, scaled by shown width / image width.
    """
    from PIL import Image

    from labecg import figures

    records = _image_records(site)
    browser.set_window_size(1400, 1000)
    bad, seen = [], 0
    for page in PAGES:
        _load(browser, f"{served}/{page}")
        content = browser.execute_script("return document.querySelector('article.bd-article').clientWidth")
        assert content >= figures.CONTENT_WIDTH_PX, (page, content)
        images = browser.execute_script("""
            return Array.from(document.querySelectorAll('main img')).map(i =>
              [new URL(i.src).pathname, i.getBoundingClientRect().width, i.naturalWidth]);""")
        for src, shown, natural in images:
            path = site.html / src.lstrip("/")
            if path.suffix == ".svg" or not src.startswith("/_images/"):  # the theme's icons are not figures
                continue
            seen += 1
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            record = records.get(digest, {}).get("labecg")
            if record is None:
                bad.append((page, src, "no record of its fonts (not saved by figures.figure_png)"))
                continue
            with Image.open(path) as image:
                dpi, width_px = image.info["dpi"][0], image.size[0]
            text_px = record["min_font_pt"] * dpi / 72 * shown / width_px
            if natural < 2 * shown - 1 or text_px < figures.MIN_TEXT_PX:
                bad.append((page, src, f"{natural} px shown {shown:.0f} px, text {text_px:.1f} px"))
    assert seen >= 5
    assert not bad, bad
