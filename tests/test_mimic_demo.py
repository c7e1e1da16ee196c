"""The shipped MIMIC demo tables are the projects' original bytes (their own SHA256SUMS)."""

import hashlib
from pathlib import Path

import labecg

DEMO = Path(labecg.__file__).parent / "mimic_demo"
SUMS = {"mimiciv": "SHA256SUMS.txt", "mimic-iv-ed": "SHA256SUMS.txt", "mimic-iv-ecg": "SHA256SUMS.partial.txt"}
LICENSE_SHA256 = "bcdfcd4f31c790e30fb645dc36414907172405897adff329ad379eed85d12017"


def _sums(project: str) -> dict[str, str]:
    lines = (DEMO / project / SUMS[project]).read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_shipped_table_matches_its_projects_sha256sums():
    checked = []
    for project in SUMS:
        sums = _sums(project)
        for path in sorted((DEMO / project).rglob("*")):
            if path.is_file() and not path.name.startswith("SHA256SUMS"):
                rel = path.relative_to(DEMO / project).as_posix()
                assert rel in sums, f"{path}: not listed in {project}/{SUMS[project]}"
                assert _sha256(path) == sums[rel], f"{path}: SHA-256 differs from {project}/{SUMS[project]}"
                checked.append(rel)
    assert len(checked) == 8, checked  # 5 hosp tables, 2 ED tables, the ECG record list


def test_licence_is_the_one_every_project_lists():
    assert _sha256(DEMO / "LICENSE.txt") == LICENSE_SHA256
    for project in SUMS:
        assert _sums(project)["LICENSE.txt"] == LICENSE_SHA256
    assert (DEMO / "PROVENANCE.md").is_file()
