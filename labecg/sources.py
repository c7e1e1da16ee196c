"""Where a data source's four folders are, and finding it or writing a synthetic one.

A data source is laid out as the four MIMIC downloads are (ARCHITECTURE.md section 1;
:data:`labecg.layout.MIMIC_SOURCES`), real or written by :func:`labecg.synthetic.generate`.
"""

from __future__ import annotations

from pathlib import Path

from labecg.layout import MIMIC_SOURCES, SYNTHETIC_MARKER
from labecg.util import get_logger, read_json

log = get_logger("labecg.sources")


def source_paths(data_root, hosp=None, ed=None, ecg=None, ecg_icd=None) -> dict[str, Path | None]:
    """The four source locations, each defaulting to its place under ``data_root``.

    MIMIC-IV-ECG-ICD is credentialed and absent from the open demo: when ``ecg_icd`` is not
    given and no file lies at its default place, its entry is None (the cohort stage then
    needs ``unlisted_ecgs="assign"``); an ``ecg_icd`` given explicitly is kept as given.

    Returns
    -------
    dict with keys hosp, ed, ecg (folders) and ecg_icd (the CSV file, or None), as
    :class:`labecg.cohort.CohortConfig` takes them.
    """
    given = {"hosp": hosp, "ed": ed, "ecg": ecg, "ecg_icd": ecg_icd}
    paths = {k: Path(given[k]) if given[k] else Path(data_root) / rel for k, rel in MIMIC_SOURCES.items()}
    if not ecg_icd and not paths["ecg_icd"].exists():
        paths["ecg_icd"] = None
    return paths


def locate_source(data_root, generate_synthetic: bool, patients: int, seed: int,
                  hosp=None, ed=None, ecg=None, ecg_icd=None, workers: int = 1) -> dict[str, Path]:
    """Return the source paths, writing a synthetic source first where asked and needed.

    With ``generate_synthetic``, ``data_root`` is (re)generated with
    :func:`labecg.synthetic.generate` unless its ``labecg_synthetic.json`` already records
    the same ``patients`` and ``seed`` (``workers`` processes draw the waveforms; the
    bytes do not depend on it). A ``data_root`` that holds files but no
    ``labecg_synthetic.json`` is taken to be real data and is never overwritten.

    Returns
    -------
    dict with keys hosp, ed, ecg, ecg_icd (paths, as ``CohortConfig`` takes them; ecg_icd
    None where it was not given and ``data_root`` holds none, see :func:`source_paths`).
    """
    root = Path(data_root)
    marker = root / SYNTHETIC_MARKER
    if generate_synthetic:
        if not marker.exists() and root.exists() and any(root.iterdir()):
            raise FileExistsError(
                f"{root}: holds files but no {SYNTHETIC_MARKER}, so it looks like real data; "
                "set generate_synthetic=False to use it, or choose an empty data_root")
        if not marker.exists() or not _synthetic_matches(read_json(marker), patients, seed):
            from labecg.synthetic import SynthConfig, generate

            log.info("writing a synthetic source (%d patients, seed %d) into %s", patients, seed, root)
            generate(SynthConfig(data_root=root, patients=patients, seed=seed, workers=workers))
    paths = source_paths(root, hosp, ed, ecg, ecg_icd)
    missing = [f"{k}={v}" for k, v in paths.items() if v is not None and not v.exists()]
    if missing:
        raise FileNotFoundError(f"data source incomplete, not found: {', '.join(missing)}; expected the "
                                "MIMIC layout of ARCHITECTURE.md section 1 (or generate_synthetic=True)")
    return paths


def _synthetic_matches(meta: dict, patients: int, seed: int) -> bool:
    # an unfinished tree's marker has no config yet: it never matches, so it is written again
    cfg = meta.get("config") or {}
    return cfg.get("patients") == patients and cfg.get("seed") == seed
