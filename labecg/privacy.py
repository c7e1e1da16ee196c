"""The privacy check of the built book: no cohort identifier and no row-level patient table.

``labecg book`` runs :func:`check_privacy` over the HTML pages and the executed notebooks
after every build; a page that shows a subject or study id of the cohort, or a table whose
rows are individual ECGs, fails the build.
"""

from __future__ import annotations

import html.parser
import json
import re
from pathlib import Path
from typing import Iterable

from labecg.features import FEATURES
from labecg.util import get_logger

__all__ = ["PrivacyError", "check_privacy", "row_level_reason", "IDENTIFIER_COLUMNS", "FEATURE_COLUMNS",
           "MAX_TABLE_ROWS", "MIN_ID_DIGITS"]

log = get_logger("labecg.privacy")


class PrivacyError(RuntimeError):
    """The built book or an executed notebook shows patient identifiers or row-level data."""


#: Column headers that make a table row-level: identifiers and per-event timestamps.
IDENTIFIER_COLUMNS = frozenset({"subject_id", "study_id", "hadm_id", "stay_id", "ecg_time",
                                "charttime", "path", "file_name"})


#: Per-ECG feature columns of cohort.parquet.
FEATURE_COLUMNS = frozenset(FEATURES)


#: More body rows than any summary table can have (the paper's 514 targets of all tasks).
MAX_TABLE_ROWS = 600


MIN_ID_DIGITS = 5


# A run of digits that is not the fraction part of a decimal number ("0.12345678") and
# not part of a hex digest (asset URLs of the built HTML: "?digest=5b4479735964").
_DIGIT_RUN = re.compile(r"(?<![\da-fA-F])(?<!\d\.)\d+(?![\da-fA-F])")


_DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+")


class _TableParser(html.parser.HTMLParser):
    """Collect each <table>: header cell texts, and (first cell text) of each body row."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._stack: list[dict] = []
        self._cell: list[str] | None = None
        self._in_head = False
        self._row: list[str] | None = None
        self._row_cells_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._stack.append({"headers": [], "rows": []})
        elif not self._stack:
            return
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row, self._row_cells_tags = [], []
        elif tag in ("td", "th"):
            self._cell = []
            self._row_cells_tags.append(tag)

    def handle_endtag(self, tag):
        if not self._stack:
            return
        t = self._stack[-1]
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._in_head or (self._row_cells_tags and all(c == "th" for c in self._row_cells_tags)
                                 and not t["rows"]):
                t["headers"].extend(self._row)
            else:
                t["rows"].append(self._row)
            self._row = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "table":
            self.tables.append(self._stack.pop())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def row_level_reason(table: dict) -> str | None:
    """Why a parsed table is row-level patient data, or None.

    A table is row-level when (a) a header names an identifier or per-event time column
    (:data:`IDENTIFIER_COLUMNS`), or (b) it has more than :data:`MAX_TABLE_ROWS` body
    rows, or (c) at least three headers are per-ECG feature columns
    (:data:`FEATURE_COLUMNS`) and its rows are labelled by integers (a DataFrame's
    positional index: individual ECGs, not summary statistics or groups).
    """
    headers = {h.strip().lower() for h in table["headers"]}
    ident = sorted(headers & IDENTIFIER_COLUMNS)
    if ident:
        return f"identifier column(s) {ident}"
    if len(table["rows"]) > MAX_TABLE_ROWS:
        return f"{len(table['rows'])} rows (> {MAX_TABLE_ROWS})"
    feats = headers & FEATURE_COLUMNS
    if len(feats) >= 3 and table["rows"] and all(r and r[0].strip().isdigit() for r in table["rows"]):
        return f"per-ECG features {sorted(feats)} in rows labelled by position"
    return None


def _scan_text(text: str, ids: set[str], where: str, problems: list[str]) -> None:
    text = _DATA_URI.sub(" ", text)
    found = sorted({m.group(0) for m in _DIGIT_RUN.finditer(text)} & ids)
    if found:
        problems.append(f"{where}: identifier(s) {found[:5]}{' ...' if len(found) > 5 else ''}")
    if "<table" in text.lower():
        parser = _TableParser()
        parser.feed(text)
        for i, table in enumerate(parser.tables):
            reason = row_level_reason(table)
            if reason:
                problems.append(f"{where}: table {i} is row-level patient data: {reason}")


def check_privacy(html_dir=None, notebooks: Iterable = (), cohort_parquet=None, ids: Iterable[int] = ()) -> int:
    """Fail if the book shows a cohort identifier or a row-level patient table.

    Scans every ``.html`` file under ``html_dir`` and every output (``text/plain``,
    ``text/html``, streams, errors; images skipped) of each executed notebook.

    An identifier is any ``subject_id`` or ``study_id`` of ``cohort_parquet`` (plus
    ``ids``) with at least :data:`MIN_ID_DIGITS` digits, found as a whole run of digits
    that is not the fraction part of a decimal number (so ``12345678``, ``12345678.0``
    and ``id=12345678`` match, ``0.12345678`` and ``123456789`` do not). Shorter ids
    cannot be told from ordinary numbers and are not searched (MIMIC's have 8 digits).
    Row-level tables: see :func:`row_level_reason`.

    Returns
    -------
    int
        Number of files scanned.

    Raises
    ------
    PrivacyError
        Listing each file and what was found in it.
    """
    id_set = {int(i) for i in ids}
    if cohort_parquet is not None:
        import pandas as pd

        df = pd.read_parquet(cohort_parquet, columns=["subject_id", "study_id"])
        id_set.update(int(i) for i in df["subject_id"].unique())
        id_set.update(int(i) for i in df["study_id"].unique())
    id_strs = {str(i) for i in id_set if len(str(abs(i))) >= MIN_ID_DIGITS}
    problems: list[str] = []
    n = 0
    if html_dir is not None:
        for page in sorted(Path(html_dir).rglob("*.html")):
            _scan_text(page.read_text(errors="replace"), id_strs, str(page), problems)
            n += 1
    for nb_path in notebooks:
        nb = json.loads(Path(nb_path).read_text())
        for ci, cell in enumerate(nb.get("cells", [])):
            for oi, out in enumerate(cell.get("outputs", [])):
                where = f"{nb_path} cell {ci} output {oi}"
                texts = []
                if "text" in out:
                    texts.append(out["text"])
                for mime, value in out.get("data", {}).items():
                    if not mime.startswith("image/"):
                        texts.append(value if isinstance(value, (str, list)) else json.dumps(value))
                if "traceback" in out:
                    texts.append(out["traceback"])
                for t in texts:
                    _scan_text("".join(t) if isinstance(t, list) else t, id_strs, where, problems)
        n += 1
    if problems:
        raise PrivacyError("privacy check failed; the book must not show patient identifiers or "
                           "row-level data:\n  " + "\n  ".join(problems))
    log.info("privacy check: %d files clean (%d identifiers searched)", n, len(id_strs))
    return n
