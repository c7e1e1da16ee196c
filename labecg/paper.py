"""The paper this package reproduces: its version, its cohort's counts, its published Tables 1 and 2.

Alsaad et al., CardioLab (arXiv v1). Every number of the paper that the book prints beside
ours comes from here; the tables are shipped in ``labecg/paper_tables/`` so the book can
compare without the paper's folder. Imports no stage.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from labecg.targets import AUROC_THRESHOLD, HORIZONS_MIN, TASKS, significant, task_name

VERSION = "arXiv v1"
#: Section 3.1: ECGs, patients and targets per task of the paper's cohort.
COHORT = {"n_ecgs": 795546, "n_patients": 159608,
          "n_targets": {"est": 137, "mon30": 116, "mon60": 126, "mon120": 135}}
_TABLES = Path(__file__).parent / "paper_tables"


def read_paper_tables() -> pd.DataFrame:
    """The paper's published Tables 1 and 2 (arXiv v1), one row per (value, direction, task).

    Returns
    -------
    DataFrame with columns ``value`` (the paper's name), ``category``, ``direction``,
    ``threshold``, ``unit``, ``task`` (est, mon30, mon60, mon120), ``auroc``, ``low``, ``high``.
    Published as printed, including Table 2's Bicarbonate 30 min. interval
    (0.763, 0.681), whose bounds the paper swapped.
    """
    folder = _TABLES
    keys = ["value", "category", "direction", "threshold", "unit"]
    t1 = pd.read_csv(folder / "table1_estimation.csv")
    frames = [t1.rename(columns={"ci_low": "low", "ci_high": "high"}).assign(task=task_name(None))]
    t2 = pd.read_csv(folder / "table2_monitoring.csv")
    for h in HORIZONS_MIN:
        part = t2[keys + [f"auroc_{h}", f"ci_low_{h}", f"ci_high_{h}"]]
        part = part.rename(columns={f"auroc_{h}": "auroc", f"ci_low_{h}": "low", f"ci_high_{h}": "high"})
        frames.append(part.assign(task=task_name(h)))
    paper = pd.concat(frames, ignore_index=True)
    paper = paper.astype({"value": object, "category": object, "direction": object,
                          "unit": object, "task": object})
    return paper[keys[:3] + ["threshold", "unit", "task", "auroc", "low", "high"]]


def significant_counts(auroc_threshold: float = AUROC_THRESHOLD) -> dict[str, int]:
    """Abnormalities of the paper's Tables 1 and 2 significantly above ``auroc_threshold``, per task.

    The paper's rule: the interval's lower bound exceeds the threshold. The lower bound is
    the smaller printed bound, so Table 2's swapped Bicarbonate interval (0.763, 0.681) at
    30 min. counts as not significant, as the paper's text counts it (section 4: 23 in
    estimation; 15, 25 and 26 at 30, 60 and 120 min.).

    Returns
    -------
    dict task -> int, for every task of ``targets.TASKS``.
    """
    tables = read_paper_tables()
    above = significant(tables[["low", "high"]].min(axis=1), auroc_threshold)
    return {task: int(above[tables["task"] == task].sum()) for task in TASKS}
