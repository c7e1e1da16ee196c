"""Where every file of a data source, a cohort folder and a run folder lies, and loading a run folder.

The folder contracts of ARCHITECTURE.md sections 1-5 name their files here and nowhere else:
a stage joins its folder with one of these names (``cohort_dir / layout.TARGETS``), so a file
renamed here is renamed for every stage, page and test that reads it. Three folders:

- a *data source* (``data_root``): the four MIMIC downloads (:data:`MIMIC_SOURCES`, their
  tables :data:`MIMIC_TABLES` and :data:`MIMIC_FILES`) and, for a generated one,
  :data:`SYNTHETIC_MARKER`; :func:`data_root` finds the root again from the ECG folder;
- a *cohort folder* (``labecg cohort``, then ``labecg signals``): :data:`COHORT_FILES`,
  :data:`SIGNAL_FILES`, and what its ``fold`` column means (:data:`N_FOLDS`,
  :data:`TRAIN_FOLDS`, :data:`VAL_FOLD`, :data:`TEST_FOLD`);
- a *run folder* (``labecg train``, then ``labecg evaluate`` and ``labecg explain`` into
  :func:`evaluation_dir`): :data:`CONFIG`, :data:`INFERENCE`, :data:`RUN_INFO`,
  :data:`RUN_SETTINGS`, :data:`METRICS`, :func:`predictions_path`, :func:`checkpoint_path`
  (``TARGETS`` and ``LAST_VALUES`` are copied from the cohort).

:func:`load_run` is the one reader of a trained run: its settings, targets, preprocessing and
the weights of its best checkpoint. Imports torch only when a
checkpoint is read (``util`` is its one ``labecg`` import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from labecg.util import read_json

# ---------------------------------------------------------------------------- data source

#: Where the four sources lie under a data root laid out as the downloads are (CohortConfig's
#: hosp, ed, ecg folders and the ecg_icd file).
MIMIC_SOURCES = {"hosp": "mimiciv/hosp", "ed": "mimic-iv-ed/ed", "ecg": "mimic-iv-ecg",
                 "ecg_icd": "mimic-iv-ecg-ext-icd-labels/records_w_diag_icd10.csv"}
#: Each table: its source and its file name there (None: the source is the file itself).
MIMIC_TABLES = {
    "patients": ("hosp", "patients.csv.gz"), "admissions": ("hosp", "admissions.csv.gz"),
    "labevents": ("hosp", "labevents.csv.gz"), "d_labitems": ("hosp", "d_labitems.csv.gz"),
    "omr": ("hosp", "omr.csv.gz"), "edstays": ("ed", "edstays.csv.gz"), "vitalsign": ("ed", "vitalsign.csv.gz"),
    "record_list": ("ecg", "record_list.csv"), "machine_measurements": ("ecg", "machine_measurements.csv"),
    "records_w_diag_icd10": ("ecg_icd", None),
}
#: Where each table's file lives under a data root.
MIMIC_FILES = {table: MIMIC_SOURCES[src] + (f"/{name}" if name else "") for table, (src, name) in MIMIC_TABLES.items()}
#: Written by the synthetic generator at the data root; its absence marks real data.
SYNTHETIC_MARKER = "labecg_synthetic.json"
#: The open MIMIC demo tables shipped with labecg: a data root without waveforms and without
#: MIMIC-IV-ECG-ICD (its PROVENANCE.md names the projects, versions and licence).
MIMIC_DEMO_ROOT = Path(__file__).parent / "mimic_demo"


def data_root(ecg) -> Path:
    """The data root that holds the ECG folder ``ecg`` at its place (:data:`MIMIC_SOURCES`).

    Where :data:`SYNTHETIC_MARKER` of a generated source lies, and where ``labecg synth``
    writes again; a cohort's ``targets.json`` records ``source.ecg``, so a run folder finds
    its source with this too.

    >>> data_root("data/synthetic/mimic-iv-ecg").as_posix()
    'data/synthetic'
    """
    ecg = Path(ecg)
    return ecg.parents[len(Path(MIMIC_SOURCES["ecg"]).parts) - 1]


# ---------------------------------------------------------------------------- cohort folder

#: One row per ECG: ids, fold, features, targets (ARCHITECTURE.md section 2).
COHORT = "cohort.parquet"
#: What each target column means, the cohort's source and settings, its summary.
TARGETS = "targets.json"
#: Rows in and out of every filter.
FLOW = "cohort_flow.csv"
#: The last earlier lab values (the results chapter's last-value baseline); copied into a run.
LAST_VALUES = "last_values.parquet"
#: ``labecg cohort``'s files.
COHORT_FILES = (COHORT, TARGETS, FLOW, LAST_VALUES)
#: What the ``fold`` column of :data:`COHORT` means: MIMIC-IV-ECG-ICD's ``strat_fold``, 0 to
#: ``N_FOLDS - 1``; folds 0-17 train, 18 validation, 19 test (the authors' split).
N_FOLDS = 20
VAL_FOLD, TEST_FOLD = 18, 19
TRAIN_FOLDS: tuple[int, ...] = tuple(range(VAL_FOLD))  # 0-17

#: The signal memmap (N, L, 12), one row per cohort row (section 3).
SIGNALS = "signals.npy"
#: Its shape, dtype, sampling rate, leads and the cohort it was converted from.
SIGNALS_META = "signals.json"
#: One row per record: status and reason.
SIGNALS_MANIFEST = "signals_manifest.parquet"
#: Per-lead mean and std of the training folds.
SIGNALS_STATS = "signals_stats.json"
#: ``labecg signals``' files.
SIGNAL_FILES = (SIGNALS, SIGNALS_META, SIGNALS_MANIFEST, SIGNALS_STATS)
#: The folder of an unfinished conversion (its ``state.json`` and one JSON per chunk done).
SIGNALS_PROGRESS = "signals_progress"

# ---------------------------------------------------------------------------- run folder

#: The run's settings: ``{"train", "model", "data"}`` (section 5).
CONFIG = "config.json"
#: What scoring a new ECG needs besides the weights (``LabDataModule.inference_spec``).
INFERENCE = "inference.json"
#: Where the run came from: source, version, commit, hardware, duration.
RUN_INFO = "run_info.json"
#: The settings and input digests a resumed run must match.
RUN_SETTINGS = "run_settings.json"
#: One row per epoch: losses and validation macro AUROC (macro Spearman for a value run).
METRICS = "metrics.csv"
#: A value run's standardisation of each output (``labecg train --objective value``), fitted on
#: the training folds: log, center, scale per value column (``train.write_value_scales``).
VALUE_SCALES = "value_scales.json"
#: The checkpoint folder, its best (highest validation macro AUROC) and its last epoch.
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
#: The splits a run writes predictions of (:func:`predictions_path`).
PREDICTION_SPLITS = ("val", "test")


def predictions_path(run, split: str) -> Path:
    """``RUN/predictions_<split>.npz``: every ECG of the split once (section 5)."""
    if split not in PREDICTION_SPLITS:
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    return Path(run) / f"predictions_{split}.npz"


def checkpoint_path(run, which: str = "best") -> Path:
    """``RUN/checkpoints/best.ckpt`` or ``last.ckpt``."""
    names = {"best": BEST_CHECKPOINT, "last": LAST_CHECKPOINT}
    if which not in names:
        raise ValueError(f"checkpoint {which!r} unknown; expected one of {list(names)}")
    return Path(run) / CHECKPOINTS / names[which]


def evaluation_dir(run, split: str = "test") -> Path:
    """Where ``labecg evaluate --split SPLIT`` writes: ``RUN/evaluation`` for test, else ``RUN/evaluation_<split>``.

    ``labecg explain`` writes its attribution into the test folder.
    """
    if split not in PREDICTION_SPLITS:
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    return Path(run) / ("evaluation" if split == "test" else f"evaluation_{split}")


# the evaluation folder (labecg evaluate)
RESULTS = "results.csv"
BOOTSTRAP = "bootstrap_iterations.npz"
CALIBRATION = "calibration.csv"
HEADLINE = "headline.csv"
MULTIPLICITY = "multiplicity.csv"
RELIABILITY = "reliability.csv"
SUBGROUPS = "subgroups.csv"
ADDED_VALUE = "added_value.csv"
TABLE1 = "table1_estimation"  # .csv and .md
TABLE2 = "table2_monitoring"  # .csv and .md
PAPER_COMPARISON = "paper_comparison.csv"
VALUES = "values.csv"  # a value run's (labecg train --objective value)
# the evaluation folder (labecg explain)
ATTRIBUTION = "attribution.npz"
ATTRIBUTION_WINDOWS = "attribution_windows.csv"
ATTRIBUTION_CONTRASTS = "attribution_contrasts.csv"
ATTRIBUTION_RANDOMIZATION = "attribution_randomization.csv"


# ---------------------------------------------------------------------------- loading a run


@dataclass(frozen=True)
class RunFolder:
    """A trained run folder as :func:`load_run` read it.

    Attributes
    ----------
    path : Path
    config : dict
        ``config.json``: ``train``, ``model`` (the ``ModelConfig`` fields), ``data``.
    targets : dict
        ``targets.json``: the cohort's, with the counts of the ECGs the run evaluated.
    inference : dict or None
        ``inference.json`` (None when the folder lacks it and it was not required).
    checkpoint : Path
        The best checkpoint the weights come from.
    weights : dict
        The network's state dict (``LabModule.model``'s, the ``model.`` prefix removed), on the CPU.
    """

    path: Path
    config: dict
    targets: dict
    inference: Optional[dict]
    checkpoint: Path
    weights: dict


def load_run(run: str | os.PathLike, need_inference: bool = False) -> RunFolder:
    """Read a run folder of ``labecg train``: its settings, targets, preprocessing and best weights.

    The checkpoint is read with ``torch.load(weights_only=True)``: a Lightning checkpoint of
    this package holds only tensors, numbers, strings and containers, which that loader
    accepts, while ``weights_only=False`` would run whatever code a pickled object names, so
    a run folder received from someone else could execute code when scored or explained.

    Parameters
    ----------
    run : path
        The run folder (a copy of it suffices).
    need_inference : bool
        Require ``inference.json`` (scoring a new record needs it; explaining reads the cohort).

    A run of ``labecg train --objective value`` is refused (``ValueError``, one line): its
    outputs are standardised values, which ``labecg predict`` and ``labecg explain`` (its
    callers) would read as flag probabilities.

    Raises
    ------
    FileNotFoundError
        The folder, its checkpoint, ``config.json``, ``targets.json`` or (when needed)
        ``inference.json`` is missing; the message names the file.
    ValueError
        The checkpoint cannot be read.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: not a folder; expected the run folder of `labecg train --run-dir {run}`")
    for name in (CONFIG, TARGETS):
        if not (run / name).exists():
            raise FileNotFoundError(f"{run / name}: not found; expected a run folder written by `labecg train`")
    info = read_json(run / RUN_INFO) if (run / RUN_INFO).exists() else {}
    ckpt = run / CHECKPOINTS / info.get("best_checkpoint", BEST_CHECKPOINT)
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: not found; {run} holds no trained model "
                                f"(`labecg train --run-dir {run}` writes it)")
    if need_inference and not (run / INFERENCE).exists():
        raise FileNotFoundError(f"{run / INFERENCE}: not found; a finished run folder holds it (runs trained "
                                "before labecg stored its preprocessing statistics lack it; retrain)")
    objective = read_json(run / CONFIG).get("train", {}).get("objective", "flag")
    if objective != "flag":
        raise ValueError(f"{run / CONFIG}: a run of `labecg train --objective {objective}`; labecg predict and "
                         f"explain read flag runs only (`labecg evaluate --run-dir {run}` scores its values)")
    import torch

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as e:
        raise ValueError(f"{ckpt}: cannot load the model ({type(e).__name__}: {e})") from None
    # LabModule holds the network as ``self.model``
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    inference = read_json(run / INFERENCE) if (run / INFERENCE).exists() else None
    return RunFolder(path=run, config=read_json(run / CONFIG), targets=read_json(run / TARGETS),
                     inference=inference, checkpoint=ckpt, weights=weights)
