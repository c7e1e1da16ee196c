"""labecg download mimic-demo, against a local mirror served by http.server on 127.0.0.1.

The mirror (tests/demo_mirror.py) serves the shipped tables, three rows of the demo's record
list with WFDB records written at their paths, and SHA256SUMS computed for what it serves.
Every expected file and byte is taken from the mirror here, not from the downloader.
"""

from __future__ import annotations

import filecmp
import hashlib
import re
import socket
from pathlib import Path

import pytest

from demo_mirror import ECG, build_mirror, serve, write_sums
from labecg import cli
from labecg.util import PROGRESS_ENV

N_RECORDS = 3
TABLES = {"mimiciv/hosp/" + n: "files/mimic-iv-demo/2.2/hosp/" + n
          for n in ("patients.csv.gz", "admissions.csv.gz", "labevents.csv.gz", "d_labitems.csv.gz", "omr.csv.gz")}
TABLES |= {"mimic-iv-ed/ed/" + n: "files/mimic-iv-ed-demo/2.2/ed/" + n for n in ("edstays.csv.gz", "vitalsign.csv.gz")}


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"), n_records=N_RECORDS)


@pytest.fixture
def mirror(mirror_root, tmp_path):
    """A fresh copy of the mirror per test (tests break it in their own ways), served."""
    import shutil

    root = tmp_path / "mirror"
    shutil.copytree(mirror_root, root)
    with serve(root) as server:
        yield root, server


def _expected(root: Path) -> dict[str, Path]:
    """Data-root path -> mirror file, for every file the download must write."""
    out = {dest: root / src for dest, src in TABLES.items()}
    out["mimic-iv-ecg/record_list.csv"] = root / ECG / "record_list.csv"
    for p in sorted((root / ECG / "files").rglob("*")):
        if p.is_file():
            out["mimic-iv-ecg/" + p.relative_to(root / ECG).as_posix()] = p
    for folder, project in (("mimiciv", "mimic-iv-demo/2.2"), ("mimic-iv-ed", "mimic-iv-ed-demo/2.2"),
                            ("mimic-iv-ecg", "mimic-iv-ecg-demo/0.1")):
        for name in ("LICENSE.txt", "SHA256SUMS.txt"):
            out[f"{folder}/{name}"] = root / "files" / project / name
    return out


def _run(data_root: Path, url: str, capsys) -> tuple[int, list[str]]:
    rc = cli.main(["download", "mimic-demo", "--data-root", str(data_root), "--base-url", url, "--workers", "2"])
    return rc, capsys.readouterr().err.strip().splitlines()


def _files(data_root: Path) -> set[str]:
    return {p.relative_to(data_root).as_posix() for p in data_root.rglob("*") if p.is_file()}


def _errors(err: list[str]) -> list[str]:
    return [line for line in err if line.startswith("labecg download: error:")]


def test_download_writes_the_layout_and_copies_the_shipped_tables(mirror, tmp_path, capsys):
    root, server = mirror
    out = tmp_path / "data"
    rc, err = _run(out, server.url, capsys)
    assert rc == 0, err
    expected = _expected(root)
    assert len([p for p in expected if p.endswith((".hea", ".dat"))]) == 2 * N_RECORDS
    assert _files(out) == set(expected)  # nothing else: no temporary file left
    for dest, src in expected.items():
        assert filecmp.cmp(out / dest, src, shallow=False), dest
    asked = set(server.requested)
    assert not asked & {"/" + src for src in TABLES.values()}  # the shipped tables were copied
    assert "/" + ECG + "/record_list.csv" in asked  # three rows: not the shipped list, so fetched
    assert all("/" + ECG + "/" + p.removeprefix("mimic-iv-ecg/") in asked for p in expected if p.endswith(".dat"))
    assert all(url.startswith("/files/") for url in asked)


def test_rerun_fetches_only_what_is_missing_or_bad(mirror, tmp_path, capsys):
    root, server = mirror
    out = tmp_path / "data"
    assert _run(out, server.url, capsys)[0] == 0
    server.requested.clear()
    assert _run(out, server.url, capsys)[0] == 0
    assert sorted(server.requested) == sorted(f"/files/{p}/SHA256SUMS.txt" for p in
                                              ("mimic-iv-demo/2.2", "mimic-iv-ed-demo/2.2", "mimic-iv-ecg-demo/0.1"))
    dats = sorted(p for p in _expected(root) if p.endswith(".dat"))
    heas = sorted(p for p in _expected(root) if p.endswith(".hea"))
    (out / dats[0]).unlink()
    (out / heas[1]).write_text("changed\n")
    server.requested.clear()
    assert _run(out, server.url, capsys)[0] == 0
    fetched = sorted(u for u in server.requested if not u.endswith("SHA256SUMS.txt"))
    assert fetched == sorted("/" + ECG + "/" + p.removeprefix("mimic-iv-ecg/") for p in (dats[0], heas[1]))
    assert filecmp.cmp(out / heas[1], root / ECG / heas[1].removeprefix("mimic-iv-ecg/"), shallow=False)


def test_a_transfer_cut_off_midway_keeps_nothing_and_a_rerun_completes(mirror, tmp_path, capsys):
    root, server = mirror
    dat = sorted((root / ECG / "files").rglob("*.dat"))[1]
    url_path = "/" + dat.relative_to(root).as_posix()
    server.cut.add(url_path)
    out = tmp_path / "data"
    rc, err = _run(out, server.url, capsys)
    assert rc == 1 and len(_errors(err)) == 1
    assert "cut off" in err[-1] and url_path in err[-1]
    dest = out / "mimic-iv-ecg" / dat.relative_to(root / ECG)
    assert not dest.exists()
    assert not [p for p in out.rglob("*") if p.is_file() and p.name.startswith(".")]
    server.cut.clear()
    assert _run(out, server.url, capsys)[0] == 0
    assert filecmp.cmp(dest, dat, shallow=False)


def test_a_corrupted_file_is_removed_and_named(mirror, tmp_path, capsys):
    root, server = mirror
    hea = sorted((root / ECG / "files").rglob("*.hea"))[0]
    hea.write_text(hea.read_text().replace(" 500 ", " 250 ", 1))  # served bytes no longer match SHA256SUMS
    out = tmp_path / "data"
    rc, err = _run(out, server.url, capsys)
    dest = out / "mimic-iv-ecg" / hea.relative_to(root / ECG)
    assert rc == 1 and len(_errors(err)) == 1
    assert str(dest) in err[-1] and "SHA-256" in err[-1] and "removed" in err[-1]
    assert not dest.exists()
    assert not [p for p in out.rglob("*") if p.is_file() and p.name.startswith(".")]


def test_a_missing_file_is_one_http_404_line(mirror, tmp_path, capsys):
    root, server = mirror
    dat = sorted((root / ECG / "files").rglob("*.dat"))[2]
    dat.unlink()  # still listed in SHA256SUMS.txt
    rc, err = _run(tmp_path / "data", server.url, capsys)
    assert rc == 1 and len(_errors(err)) == 1
    assert "HTTP 404" in err[-1] and dat.relative_to(root).as_posix() in err[-1]


def test_an_unreachable_server_is_one_line(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, err = _run(tmp_path / "data", f"http://127.0.0.1:{port}/", capsys)
    assert rc == 1 and len(err) == 1
    assert "no connection" in err[0] and "--base-url" in err[0]


def test_a_record_without_its_header_in_sha256sums_is_named(mirror, tmp_path, capsys):
    root, server = mirror
    hea = sorted((root / ECG / "files").rglob("*.hea"))[0]
    hea.unlink()
    write_sums(root)  # the sums no longer list it
    rc, err = _run(tmp_path / "data", server.url, capsys)
    assert rc == 1 and hea.relative_to(root / ECG).with_suffix("").as_posix() in err[-1]


def test_progress_counts_bytes(mirror, tmp_path, monkeypatch, capsys):
    root, server = mirror
    progress = tmp_path / "progress.txt"
    monkeypatch.setenv(PROGRESS_ENV, str(progress))
    assert _run(tmp_path / "data", server.url, capsys)[0] == 0
    text = progress.read_text()
    sizes = re.findall(r"mimic-demo: ([\d.]+)([kMG]?)B \[", text)  # a byte count, as tqdm prints it
    assert sizes and float(sizes[-1][0]) * {"": 1, "k": 2**10, "M": 2**20}[sizes[-1][1]] > 100_000


def test_checksums_of_the_mirror_are_what_it_serves(mirror_root):
    """The mirror itself: its SHA256SUMS agree with hashlib over the served bytes."""
    for sums in mirror_root.rglob("SHA256SUMS.txt"):
        for line in sums.read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            assert hashlib.sha256((sums.parent / name).read_bytes()).hexdigest() == digest
