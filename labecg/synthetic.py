"""Synthetic cohort in the layout of the four MIMIC sources, with planted lab-ECG effects.

Each patient carries 13 latent physiological factors (standardized; see
:data:`labecg.planted.FACTORS`). A factor is the patient's own mean (a random level plus
chronic-disease offsets) plus an Ornstein-Uhlenbeck deviation that evolves within an
encounter (time constant 6-30 h, sampled on a 10-minute grid); encounters months apart are
independent draws. Laboratory values (:data:`labecg.planted.LAB_MODELS`), ED vital signs and
the ECG all read the factors at their own chart times, with per-patient gains and
measurement noise. What is planted where is :mod:`labecg.planted`'s (``PLANTED_EFFECTS``,
``planted_effects_frame()``); this module draws the source from it. The reference range
printed on a lab row is its test's ``labecg.catalog`` range, except for the tests of
``planted.PLANTED_RANGES`` (hemoglobin and hematocrit by sex, creatinine by sex and age),
whose rows print the range of the patient's sex and ``anchor_age``; the printing quirks
(widened, empty, 0-0 or one-sided ranges) apply to both.

Layout written (``generate(cfg)``; column lists in MIMIC_FORMAT.md order)::

    out/mimiciv/hosp/{patients,admissions,labevents,d_labitems,omr}.csv.gz
    out/mimic-iv-ed/ed/{edstays,vitalsign}.csv.gz
    out/mimic-iv-ecg/record_list.csv, machine_measurements.csv, files/p..../p......../s......../*.hea|.dat
    out/mimic-iv-ecg-ext-icd-labels/records_w_diag_icd10.csv
    out/labecg_synthetic.json

Determinism: every random draw comes from a generator seeded by
``SeedSequence([seed, stream, id])`` of the patient (tables) or the study (waveforms), so
the bytes do not depend on ``workers`` or on chunking; gzip headers carry mtime 0 and no
file name.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import multiprocessing as mp
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from labecg import ecgsim
from labecg.catalog import LAB_TESTS, MIMIC_COLUMNS
from labecg.layout import MIMIC_FILES, SYNTHETIC_MARKER
from labecg.planted import (ANEMIA_DRIVE, DERIVED, FACTORS, LAB_MODELS, PLANTED_WINDOWS_S, VITAL_MODELS,
                            ecg_null_labs, planted_effects_frame, planted_ranges_frame,
                            planted_row_ranges)
from labecg.util import atomic_path, get_logger, hold_paths, progress_bar, write_json

GENERATOR_VERSION = "1.0"
log = get_logger("labecg.synthetic")


@dataclass(frozen=True)
class SynthConfig:
    """Settings of ``generate``.

    ``ecgs_per_patient`` is the mean number of ECGs per patient (1-8 each);
    ``waveform_fraction`` the seeded share of ECGs whose WFDB record is written (all
    ECGs are listed in the CSV files either way); ``chunk_patients`` the number of
    patients held in memory at once; ``writer`` "wfdb" calls ``wfdb.wrsamp`` per record,
    "fast" writes the same bytes directly (``wfdb.wrsamp`` is slow in header bookkeeping,
    ``bench/synthetic.py`` prints both writers' time per record; the tests check the two
    agree byte for byte).

    Parameters
    ----------
    data_root : Path
        Folder to write; must be empty, absent, or an earlier synthetic tree (it is replaced).
    patients : int
        Synthetic patients.
    seed : int
        Seed of everything drawn.
    ecgs_per_patient : float
        Mean ECGs per patient (1-8 each).
    waveform_fraction : float
        Share of ECGs whose WFDB record is written.
    workers : int
        Processes drawing the waveforms (the bytes do not depend on it).
    chunk_patients : int
        Patients held in memory at once.
    writer : {"fast", "wfdb"}
        Write WFDB files directly or through ``wfdb.wrsamp`` (same bytes).
    progress : bool
        Show a progress bar.
    """

    data_root: Path
    patients: int = 300
    seed: int = 0
    ecgs_per_patient: float = 2.5
    waveform_fraction: float = 1.0
    workers: int = 1
    chunk_patients: int = 1000
    writer: Literal["fast", "wfdb"] = "fast"
    progress: bool = True

    def __post_init__(self):
        hold_paths(self)
        if self.patients < 1:
            raise ValueError(f"patients must be >= 1, got {self.patients}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 1.0 <= self.ecgs_per_patient <= 8.0:
            raise ValueError(f"ecgs_per_patient must be in [1, 8], got {self.ecgs_per_patient}")
        if not 0.0 <= self.waveform_fraction <= 1.0:
            raise ValueError(f"waveform_fraction must be in [0, 1], got {self.waveform_fraction}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.writer not in ("fast", "wfdb"):
            raise ValueError(f"writer must be 'fast' or 'wfdb', got {self.writer!r}")
        if self.chunk_patients < 1:
            raise ValueError(f"chunk_patients must be >= 1, got {self.chunk_patients}")


# ---------------------------------------------------------------- latent factors (labecg.planted)
F = {name: i for i, name in enumerate(FACTORS)}
_K = len(FACTORS)
_GRID_MIN = 10           # latent grid step within an encounter
_GRID_START_MIN = -180   # grid covers [arrival - 3 h, arrival + 29 h)
_GRID_N = 192


_DERIVED_DECIMALS = {"Hematocrit": 1, "Red Blood Cells": 2, "RDW-SD": 1, "PT": 1, "eAG": 0}

# Panels: (name, labels, probability at the first draw of an encounter, later draws, outpatient)
_PANELS = (
    ("chem", ("Sodium", "Potassium", "Chloride", "Bicarbonate", "Anion Gap", "Urea Nitrogen",
              "Creatinine", "Glucose"), 0.92, 0.75, 0.8),
    ("cbc", ("Hemoglobin", "Hematocrit", "Red Blood Cells", "RDW", "RDW-SD", "MCHC", "MCH", "MCV",
             "Platelet Count", "White Blood Cells"), 0.88, 0.7, 0.8),
    ("diff", ("Lymphocytes", "Monocytes", "Neutrophils", "Absolute Basophil Count"), 0.5, 0.3, 0.3),
    ("minerals", ("Calcium, Total", "Magnesium", "Phosphate"), 0.7, 0.55, 0.3),
    ("coag", ("INR(PT)", "PT", "PTT"), 0.45, 0.3, 0.1),
    ("lft", ("Albumin", "Bilirubin, Total"), 0.4, 0.2, 0.3),
    ("trop", ("Troponin T",), 0.5, 0.3, 0.02),
    ("ck", ("Creatine Kinase (CK)", "Creatine Kinase, MB Isoenzyme"), 0.15, 0.08, 0.02),
    ("bnp", ("NTproBNP",), 0.35, 0.08, 0.05),
    ("lactate", ("Lactate",), 0.2, 0.15, 0.0),
    ("iron", ("Ferritin", "Iron Binding Capacity, Total", "Transferrin"), 0.07, 0.03, 0.12),
    ("a1c", ("% Hemoglobin A1c", "eAG"), 0.06, 0.0, 0.2),
    ("urine", ("__urine_glucose__",), 0.15, 0.05, 0.1),
)

_PANEL_P = np.array([p[2:5] for p in _PANELS]).T  # (3 kinds, n_panels)
_TESTS = {t.label: t for t in LAB_TESTS}
URINE_GLUCOSE = (51478, "Glucose", "Urine", "Hematology", "mg/dL")
_ITEMS = [t for t in LAB_TESTS if t.label in LAB_MODELS or t.label in DERIVED]
_ITEM_INDEX = {t.label: i for i, t in enumerate(_ITEMS)}
_URINE_INDEX = len(_ITEMS)

COLUMNS = MIMIC_COLUMNS  # the exact column lists, in order (labecg.catalog)
RELPATHS = MIMIC_FILES  # where each table lives under the data root (labecg.catalog)
_RACES = (("WHITE", 0.55), ("BLACK/AFRICAN AMERICAN", 0.15), ("HISPANIC/LATINO - PUERTO RICAN", 0.04),
          ("HISPANIC/LATINO - DOMINICAN", 0.03), ("HISPANIC OR LATINO", 0.02), ("ASIAN - CHINESE", 0.03),
          ("ASIAN", 0.02), ("WHITE - OTHER EUROPEAN", 0.03), ("OTHER", 0.04), ("UNKNOWN", 0.06),
          ("UNABLE TO OBTAIN", 0.01), ("PORTUGUESE", 0.02))
_EPOCH = np.datetime64("2100-01-01T00:00:00", "s")

# Real-world quirks of the MIMIC tables (book/mimic.md lists their sources), planted at these
# rates from their own random streams, so the rest of the data is drawn as without them.
QUIRK_STREAM = 11
QUIRK_RATES = {
    "lab_error": 0.0005,          # value 'ERROR', no valuenum
    "range_empty": 0.02,          # both reference bounds empty
    "range_zero": 0.003,          # both reference bounds 0 (the cohort drops these rows)
    "second_itemid": 0.08,        # share of a label's rows under its second itemid
    "temperature_celsius": 0.01,  # ED temperatures recorded in degrees Celsius
    "pain_free_text": 0.05,       # ED pain as free text
    "height_typo": 0.005,         # omr height typed twice ('6868')
    "dead_lead": 0.003,           # WFDB record with one lead entirely NaN
    "header_time_shift": 0.02,    # WFDB header base time differs from record_list ecg_time
}
NTPROBNP_MAX = 25000.0  # upper limit of the assay: larger values print as '>25000'
ONE_SIDED_RANGE = ("Troponin T", "NTproBNP")
# MIMIC-IV d_labitems has several itemids with one label and fluid (mimic-code issues 1163, 1266)
SECOND_ITEMIDS = {"Potassium": 52610, "Creatinine": 52546, "Glucose": 52569}
PAIN_TEXTS = ("uta", "denies", "8-9", "unable", "10, chest")


def _rng(seed: int, stream: int, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, int(key)]))


def _fmt_time(sec: np.ndarray) -> np.ndarray:
    """Seconds since 2100-01-01 -> 'YYYY-MM-DD HH:MM:SS' strings ('' for NaN)."""
    sec = np.asarray(sec, dtype=float)
    ok = np.isfinite(sec)
    out = np.full(sec.shape, "", dtype=object)
    if not ok.any():
        return out
    s = np.datetime_as_string(_EPOCH + sec[ok].astype(np.int64).astype("timedelta64[s]"), unit="s")
    out[ok] = np.char.replace(s, "T", " ")
    return out


def _ou(mu: np.ndarray, sd: np.ndarray, tau_min: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Ornstein-Uhlenbeck paths on the 10-minute grid.

    mu, sd, tau_min : (K,); z : (K, N) standard normal innovations. Returns (K, N).
    """
    a = np.exp(-_GRID_MIN / tau_min)  # (K,)
    out = np.empty_like(z)
    for k in range(z.shape[0]):  # K filters, each vectorized over the grid
        x0 = z[k, 0] * sd[k]
        innov = z[k] * sd[k] * np.sqrt(1 - a[k] ** 2)
        innov[0] = x0
        out[k] = lfilter([1.0], [1.0, -a[k]], innov)
    return mu[:, None] + out


def _loaded(state: np.ndarray, loadings: tuple[tuple[str, float], ...]) -> np.ndarray:
    """sum(weight * factor) over ``loadings``, added left to right; state (..., K) -> (...)."""
    (name, w), *rest = loadings
    out = w * state[..., F[name]]
    for name, w in rest:
        out = out + w * state[..., F[name]]
    return out


def _lab_values(state: np.ndarray, resid: np.ndarray, female: bool) -> dict[str, np.ndarray]:
    """Lab values for D draws. state (D, K) factors; resid (D, n_models) residual z."""
    vals = {}
    for j, (label, m) in enumerate(LAB_MODELS.items()):
        z = np.zeros(state.shape[0])
        w2 = 0.0
        for name, w in m.loadings:
            z += w * state[:, F[name]]
            w2 += w * w
        z += np.sqrt(max(0.15, 1.0 - w2)) * resid[:, j]
        centre = m.centre
        if female and label == "Creatinine":
            centre *= 0.8
        if female and label == "Hemoglobin":
            centre -= 1.0
        v = centre * np.exp(m.sd * z) if m.log else centre + m.sd * z
        vals[label] = np.maximum(np.round(v, m.decimals), 10.0 ** -m.decimals)
    return vals


def _derive(vals: dict, rng: np.random.Generator) -> None:
    for label, (src, slope, icpt, sd) in DERIVED.items():
        x = vals[src]
        v = slope * x + icpt + sd * rng.normal(size=x.shape)
        if label == "Red Blood Cells":
            v = x * 10.0 / vals["MCH"] + 0.15 * rng.normal(size=x.shape)
        vals[label] = np.maximum(np.round(v, _DERIVED_DECIMALS[label]), 0.01)


def _ecg_params(s: np.ndarray, pat: dict, rng: np.random.Generator) -> dict:
    """Waveform parameters of one ECG from the factor state s (K,) at the ECG time."""
    anemia = _loaded(s, ANEMIA_DRIVE)
    hf, ren, k = s[F["heart_failure"]], s[F["renal"]], s[F["potassium"]] + 0.3 * s[F["renal"]]
    hr = pat["hr0"] + 9.0 * anemia + 6.0 * hf + 3.0 * s[F["inflammation"]] + rng.normal(0, 4)
    af = rng.random() < 1 / (1 + np.exp(-(-3.2 + 1.4 * hf + 0.03 * (pat["age"] - 65))))
    hr = float(np.clip(hr + (15 if af else 0), 38, 165))
    qrs = 88 + 7.0 * max(k, 0) + 3.0 * hf + pat["qrs0"] + rng.normal(0, 3)
    qtc = 415 - 24.0 * s[F["calcium"]] + pat["qt0"] + rng.normal(0, 8)
    qt = qtc * np.sqrt(60.0 / hr) ** 0.66  # damped Bazett so short RR does not collapse QT
    return dict(
        hr_bpm=hr, af=bool(af), qrs_ms=float(np.clip(qrs, 70, 170)), qt_ms=float(np.clip(qt, 260, 560)),
        pr_ms=float(np.clip(160 + rng.normal(0, 12), 110, 240)),
        t_amp=float(pat["tgain"] * np.exp(0.5 * np.clip(k, -3, 3))),
        t_width_s=float(0.055 * np.exp(-0.12 * np.clip(k, -3, 3))),
        r_amp=float(pat["vgain"] * np.exp(-0.22 * hf - 0.12 * ren)),
        st_mv=float(-0.12 * max(s[F["ischemia"]] - 0.3, 0.0)),
        axis_deg=float(pat["axis"] + rng.normal(0, 4)),
        noise_mv=float(rng.uniform(0.008, 0.03)), wander_mv=float(rng.uniform(0.02, 0.12)),
        flat_lead=int(rng.integers(6, 12)) if rng.random() < 0.02 else -1,
        nan_start_s=float(rng.uniform(0, 8)), nan_len_s=float(rng.uniform(0.2, 1.5)) if rng.random() < 0.02 else 0.0,
    )


def _simulate_patient(subject_id: int, n_ecg: int, study_ids: np.ndarray, fold: int,
                      cfg: SynthConfig, ids: dict) -> dict:
    """All rows of one patient. ``ids`` holds running counters (hadm, stay, specimen)."""
    rng = _rng(cfg.seed, 1, subject_id)
    female = rng.random() < 0.48
    age0 = int(rng.integers(18, 90))
    anchor_year = int(rng.integers(2110, 2200))
    race = _RACES[rng.choice(len(_RACES), p=np.array([p for _, p in _RACES]) / sum(p for _, p in _RACES))][0]
    mu = rng.normal(0, 0.7, _K)
    if rng.random() < 0.2:  # chronic kidney disease
        mu[[F["renal"], F["potassium"], F["anemia"]]] += (1.4, 0.6, 0.7)
    if rng.random() < 0.15 + 0.003 * max(age0 - 50, 0):  # heart failure
        mu[[F["heart_failure"], F["renal"]]] += (1.5, 0.5)
    sd_w = np.full(_K, 0.6)
    tau = rng.uniform(360, 1800, _K)
    pat = dict(age=age0, hr0=72 + rng.normal(0, 7), qrs0=rng.normal(0, 5), qt0=rng.normal(0, 10),
               tgain=float(np.exp(rng.normal(0, 0.2))), vgain=float(np.exp(rng.normal(0, 0.2))),
               axis=rng.normal(50, 20))
    resid_mu = rng.normal(0, 0.6, len(LAB_MODELS))
    out = {k: [] for k in ("adm", "ed", "vit", "lab", "ecg", "omr")}
    n_enc = 1 + rng.binomial(n_ecg - 1, 0.45)
    per_enc = np.bincount(np.concatenate([np.arange(n_enc), rng.integers(0, n_enc, n_ecg - n_enc)]), minlength=n_enc)
    start = (anchor_year - 2100) * 365.25 * 86400 + np.sort(rng.uniform(0, 6 * 365.25 * 86400, n_enc))
    start = np.floor(start / 60) * 60
    e = 0
    for j in range(n_enc):
        t0 = start[j]
        z = rng.normal(size=(_K, _GRID_N))
        grid = _ou(mu, sd_w, tau, z).T  # (N, K)

        def state_at(t_sec, t0=t0, grid=grid):  # this encounter's clock and grid
            g = np.clip(np.round((np.asarray(t_sec) - t0) / 60 / _GRID_MIN - _GRID_START_MIN / _GRID_MIN), 0, _GRID_N - 1)
            return grid[g.astype(int)]

        has_ed = rng.random() < 0.8
        admitted = rng.random() < (0.45 if has_ed else 1.0)
        ed_out = t0 + 60 * np.floor(rng.uniform(180, 720))
        hadm = stay = None
        if admitted:
            ids["hadm"] += int(rng.integers(1, 50))
            hadm = ids["hadm"]
            adm_t = ed_out - 1800 if has_ed else t0
            out["adm"].append((subject_id, hadm, adm_t, adm_t + 60 * np.floor(60 * rng.uniform(20, 160)), has_ed, t0, ed_out))
        if has_ed:
            ids["stay"] += int(rng.integers(1, 50))
            stay = ids["stay"]
            out["ed"].append((subject_id, hadm, stay, t0, ed_out, admitted))
            vt = t0 + 60 * np.cumsum(rng.uniform(15, 60, 40))
            vt = np.floor(vt[vt < ed_out] / 60) * 60
            vs = state_at(vt)
            out["vit"].append((stay, vt, vs, pat["hr0"]))
        t_ecg = np.sort(np.concatenate([[t0 + rng.uniform(5, 45) * 60],
                                        t0 + rng.uniform(60, 1200, per_enc[j] - 1) * 60]))
        t_ecg = np.floor(t_ecg)
        for t in t_ecg:
            s = state_at(t)
            out["ecg"].append(dict(subject_id=subject_id, study_id=int(study_ids[e]), t=t, stay=stay, hadm=hadm,
                                   params=_ecg_params(s, pat, rng), state=s, fold=fold))
            e += 1
        # lab draws: one around the first ECG, then every 3-8 h, plus some soon after later ECGs
        d = [t_ecg[0] + rng.normal(0, 25) * 60]
        while d[-1] < t0 + 22 * 3600:
            d.append(d[-1] + rng.uniform(3, 8) * 3600)
        d += [t + rng.normal(0, 30) * 60 for t in t_ecg[1:] if rng.random() < 0.75]
        d += [t + rng.uniform(5, 110) * 60 for t in t_ecg[1:] if rng.random() < 0.5]
        d = np.floor(np.array(d) / 60) * 60
        first = np.arange(d.size) == 0
        out["lab"].append((d, state_at(d), first, hadm if admitted else None, stay))
    # outpatient draws months away from encounters: a fresh stationary state each
    n_out = rng.poisson(2.0)
    if n_out:
        d = (anchor_year - 2100) * 365.25 * 86400 + rng.uniform(0, 6 * 365.25 * 86400, n_out)
        d = np.floor(d / 60) * 60
        st = mu + sd_w * rng.normal(size=(n_out, _K))
        out["lab"].append((d, st, np.full(n_out, -1), None, None))
    # all draws of the patient at once: (D,) times, (D, K) states, (D,) kind (2 first, 3 later, 4 outpatient)
    d_t = np.concatenate([x[0] for x in out["lab"]])
    d_state = np.concatenate([x[1] for x in out["lab"]])
    d_kind = np.concatenate([np.where(np.asarray(x[2]) == -1, 4, np.where(np.asarray(x[2]) == 1, 2, 3)) for x in out["lab"]])
    d_hadm = np.concatenate([np.full(x[0].size, np.nan if x[3] is None else x[3]) for x in out["lab"]])
    resid = resid_mu[None, :] + 0.5 * rng.normal(size=(d_t.size, len(LAB_MODELS)))
    vals = _lab_values(d_state, resid, female)
    _derive(vals, rng)
    take = rng.random((d_t.size, len(_PANELS))) < _PANEL_P[d_kind - 2]  # (D, n_panels)
    labs = []
    for q in range(d_t.size):
        if not take[q].any():
            continue
        ids["specimen"] += int(rng.integers(1, 20))
        for j in np.flatnonzero(take[q]):
            for lb in _PANELS[j][1]:
                if lb == "__urine_glucose__":
                    labs.append((_URINE_INDEX, d_t[q], np.nan, d_hadm[q], ids["specimen"] + 7, d_kind[q] == 4))
                else:
                    labs.append((_ITEM_INDEX[lb], d_t[q], vals[lb][q], d_hadm[q], ids["specimen"], d_kind[q] == 4))
    omr = None
    if rng.random() < 0.6:
        n = int(rng.integers(1, 5))
        dates = (anchor_year - 2100) * 365.25 * 86400 + np.sort(rng.uniform(0, 6 * 365.25 * 86400, n))
        h_in = (70 if not female else 64.5) + rng.normal(0, 2.5)
        w_lb = (185 if not female else 160) * np.exp(rng.normal(0, 0.2) + 0.03 * rng.normal(size=n))
        omr = (dates, h_in, w_lb, 125 + 15 * rng.normal(size=n), 78 + 9 * rng.normal(size=n))
    return dict(subject_id=subject_id, female=female, age=age0, anchor_year=anchor_year, race=race,
                dod=(anchor_year - 2100 + 7) * 365.25 * 86400 if rng.random() < 0.08 else np.nan,
                adm=out["adm"], ed=out["ed"], vit=out["vit"], labs=labs, ecg=out["ecg"], omr=omr,
                rng=rng, fold=fold, seed=cfg.seed)


# ---------------------------------------------------------------- tables of one chunk
def _codes(s: np.ndarray, af: bool, rng: np.random.Generator) -> list[str]:
    """ICD-10 codes implied by the factor state of one ECG (plus background noise)."""
    rules = (("I10", rng.random() < 0.35), ("N189", s[F["renal"]] > 1.0), ("N179", s[F["renal"]] > 1.8),
             ("I509", s[F["heart_failure"]] > 1.0), ("D649", s[F["anemia"]] > 1.0),
             ("E875", s[F["potassium"]] > 1.3), ("I4891", af), ("R509", s[F["inflammation"]] > 1.3),
             ("E119", s[F["glycemia"]] > 1.0), ("I214", s[F["ischemia"]] > 1.6), ("E785", rng.random() < 0.25))
    return [c for c, on in rules if on]


def _patient_row(p: dict, rng: np.random.Generator) -> tuple:
    """The patients row of one simulated patient (``dod`` in seconds since 2100-01-01, or NaN)."""
    group = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")[int(rng.integers(0, 5))]
    return (p["subject_id"], "F" if p["female"] else "M", p["age"], p["anchor_year"], group, p["dod"])


def _admission_rows(p: dict, rng: np.random.Generator) -> list[tuple]:
    """admissions rows of one patient, one per admitted encounter (times in seconds)."""
    rows = []
    for (_, hadm, adm_t, dis_t, has_ed, t0, ed_out) in p["adm"]:
        rows.append((
            p["subject_id"], hadm, adm_t, dis_t, np.nan, "EW EMER." if has_ed else "ELECTIVE",
            f"P{int(rng.integers(10000, 99999))}", "EMERGENCY ROOM" if has_ed else "PHYSICIAN REFERRAL", "HOME",
            ("Medicare", "Private", "Medicaid", "Other")[int(rng.integers(0, 4))],
            "ENGLISH", ("MARRIED", "SINGLE", "WIDOWED", "DIVORCED", "")[int(rng.integers(0, 5))], p["race"],
            t0 if has_ed else np.nan, ed_out if has_ed else np.nan, 0))
    return rows


def _edstay_rows(p: dict, rng: np.random.Generator) -> list[tuple]:
    """edstays rows of one patient, one per ED encounter (times in seconds)."""
    gender = "F" if p["female"] else "M"
    rows = []
    for (_, hadm, stay, t0, ed_out, admitted) in p["ed"]:
        arrival = ("WALK IN", "AMBULANCE", "UNKNOWN", "OTHER")[int(rng.choice(4, p=[0.55, 0.35, 0.07, 0.03]))]
        disposition = "ADMITTED" if admitted else (
            ("HOME", "LEFT WITHOUT BEING SEEN", "TRANSFER")[int(rng.choice(3, p=[0.9, 0.05, 0.05]))])
        rows.append((p["subject_id"], hadm, stay, t0, ed_out, gender, p["race"], arrival, disposition))
    return rows


def _vital_values(vs: np.ndarray, hr0: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 6) vital signs of ``planted.VITAL_MODELS`` from the factor states vs (n, K), NaN where missing."""
    n = vs.shape[0]
    terms = {"anemia_drive": _loaded(vs, ANEMIA_DRIVE)}
    cols = []
    for m in VITAL_MODELS.values():
        v = hr0 if m.centre is None else m.centre
        for term, w in m.loadings:
            v = v + w * (terms[term] if term in terms else vs[:, F[term]])
        v = v + m.sd * rng.normal(size=n)
        if m.upper is not None:
            v = np.minimum(m.upper, v)
        cols.append(np.round(v, m.decimals))
    cols = np.stack(cols, axis=1)
    cols[rng.random(cols.shape) < np.array([m.missing for m in VITAL_MODELS.values()])] = np.nan
    return cols


def _vitalsign_rows(p: dict, rng: np.random.Generator) -> list[tuple]:
    """vitalsign rows of one patient, with the Celsius and free-text pain quirks from their own stream."""
    rows = []
    for (stay, vt, vs, hr0) in p["vit"]:
        n = vt.size
        if n == 0:
            continue
        cols = _vital_values(vs, hr0, rng)
        q = _rng(p["seed"], QUIRK_STREAM, stay).random((n, 2))  # quirks: own stream, other draws unchanged
        celsius = q[:, 0] < QUIRK_RATES["temperature_celsius"]
        cols[celsius, 0] = np.round((cols[celsius, 0] - 32.0) * 5.0 / 9.0, 1)
        for r in range(n):
            pain = str(int(rng.integers(0, 11))) if rng.random() < 0.6 else ("UTA" if rng.random() < 0.2 else "")
            if q[r, 1] < QUIRK_RATES["pain_free_text"]:
                pain = PAIN_TEXTS[int(q[r, 1] / QUIRK_RATES["pain_free_text"] * len(PAIN_TEXTS))]
            rows.append((p["subject_id"], stay, vt[r], *cols[r], "Sinus Rhythm" if rng.random() < 0.05 else "", pain))
    return rows


def _omr_rows(p: dict, rng: np.random.Generator) -> list[tuple]:
    """omr rows of one patient: blood pressure, weight, BMI and height per visit date (seconds)."""
    if p["omr"] is None:
        return []
    sid = p["subject_id"]
    dates, h_in, w_lb, sbp, dbp = p["omr"]
    oq = _rng(p["seed"], QUIRK_STREAM + 1, sid).random(len(dates))
    rows = []
    for q, dt in enumerate(dates):
        rows.append((sid, dt, 1, "Blood Pressure", f"{int(sbp[q])}/{int(dbp[q])}"))
        # a scale's upper limit is written as text, as '>300'
        rows.append((sid, dt, 1, "Weight (Lbs)", f"{w_lb[q]:.1f}" if w_lb[q] <= 300 else ">300"))
        if rng.random() < 0.7:
            rows.append((sid, dt, 1, "BMI (kg/m2)", f"{703.0 * w_lb[q] / h_in ** 2:.1f}"))
        if q == 0 or rng.random() < 0.3:
            typo = oq[q] < QUIRK_RATES["height_typo"]  # digits typed twice: 6868 inches
            rows.append((sid, dt, 1, "Height (Inches)", f"{h_in:.0f}" * (2 if typo else 1)))
    return rows


def _machine_row(sid: int, ecg: dict, rng: np.random.Generator) -> tuple:
    """The machine_measurements row of one ECG: the machine's report lines and intervals (ms)."""
    prm = ecg["params"]
    rr = 60000.0 / prm["hr_bpm"]
    p_on = 40 + int(rng.integers(0, 30))
    qrs_on = p_on + int(prm["pr_ms"])
    qtc = prm["qt_ms"] / np.sqrt(rr / 1000.0)
    rep = ["Atrial fibrillation" if prm["af"] else ("Sinus tachycardia" if prm["hr_bpm"] > 100 else
           "Sinus bradycardia" if prm["hr_bpm"] < 60 else "Sinus rhythm")]
    if prm["r_amp"] < 0.7:
        rep.append("Low QRS voltages in limb leads")
    if qtc > 480:
        rep.append("Prolonged QT interval")
    rep.append("Abnormal ECG" if len(rep) > 1 or rep[0] != "Sinus rhythm" else "Normal ECG")
    rep += [""] * (18 - len(rep))
    return (sid, ecg["study_id"], int(rng.integers(6000, 6999)), ecg["t"], *rep, "0.005-150 Hz",
            "60 Hz notch  Baseline filter", int(round(rr)), 29999 if prm["af"] else p_on,
            29999 if prm["af"] else p_on + 100 + int(rng.integers(0, 20)),
            qrs_on, qrs_on + int(prm["qrs_ms"]), qrs_on + int(prm["qt_ms"]),
            29999 if prm["af"] else int(rng.normal(55, 15)), int(prm["axis_deg"]),
            int(prm["axis_deg"] + rng.normal(0, 25)))


def _icd_row(p: dict, ecg: dict, path: str, codes: list[str], codes_all: list[str]) -> tuple:
    """The records_w_diag_icd10 row of one ECG: its codes per setting, the patient's, and its fold."""
    lst = lambda x: "[" + ", ".join(f"'{v}'" for v in x) + "]"  # noqa: E731
    ed, hosp = ecg["stay"] is not None, ecg["hadm"] is not None
    year = 2100 + int(ecg["t"] // (365.25 * 86400))
    return (f"mimic-iv-ecg-diagnostic-electrocardiogram-matched-subset-1.0/{path}", ecg["study_id"],
            p["subject_id"], ecg["t"], ecg["stay"], ecg["hadm"] if ed else None, ecg["hadm"],
            lst(codes) if ed else "[]", lst(codes) if hosp and ed else "[]",
            lst(codes) if hosp else "[]", lst(codes_all) if hosp else "[]",
            lst(codes_all), "F" if p["female"] else "M", p["age"] + year - p["anchor_year"], p["anchor_year"],
            p["age"], p["fold"])


def _ecg_rows(p: dict, rng: np.random.Generator) -> dict[str, list[tuple]]:
    """record_list, machine_measurements and records_w_diag_icd10 rows of one patient's ECGs.

    One loop over the ECGs, because the three tables' draws interleave per ECG; 7% of the
    ECGs are left out of the ICD-labels file.
    """
    sid = p["subject_id"]
    ecg_codes = [_codes(ecg["state"], ecg["params"]["af"], rng) for ecg in p["ecg"]]
    codes_all = sorted(set().union(*ecg_codes))
    rows = {"record_list": [], "machine_measurements": [], "records_w_diag_icd10": []}
    for ecg, c in zip(p["ecg"], ecg_codes):
        st = ecg["study_id"]
        path = f"files/p{str(sid)[:4]}/p{sid}/s{st}/{st}"
        rows["record_list"].append((sid, st, st, ecg["t"], path))
        rows["machine_measurements"].append(_machine_row(sid, ecg, rng))
        if rng.random() < 0.07:  # not every ECG is in the ICD-labels file
            continue
        rows["records_w_diag_icd10"].append(_icd_row(p, ecg, path, c, codes_all))
    return rows


# Columns written as times (seconds since 2100-01-01 -> text; the dates keep the day only) and
# as nullable integers, per table
_TIME_COLUMNS = {"patients": ("dod",), "admissions": ("admittime", "dischtime", "deathtime", "edregtime", "edouttime"),
                 "edstays": ("intime", "outtime"), "vitalsign": ("charttime",), "omr": ("chartdate",),
                 "record_list": ("ecg_time",), "machine_measurements": ("ecg_time",),
                 "records_w_diag_icd10": ("ecg_time",)}
_DATE_COLUMNS = {("patients", "dod"), ("omr", "chartdate")}
_INT_COLUMNS = {"admissions": ("hadm_id",), "edstays": ("hadm_id",),
                "records_w_diag_icd10": ("ed_stay_id", "ed_hadm_id", "hosp_hadm_id"),
                "vitalsign": ("heartrate", "resprate", "o2sat", "sbp", "dbp")}


def _table_frame(table: str, rows: list[tuple]) -> pd.DataFrame:
    """One table's rows as a DataFrame in MIMIC column order, times as text, ids as Int64."""
    df = pd.DataFrame(rows, columns=COLUMNS[table])
    for c in _TIME_COLUMNS.get(table, ()):
        df[c] = _fmt_time(df[c].to_numpy(dtype=float))
        if (table, c) in _DATE_COLUMNS:
            df[c] = df[c].str[:10]
    for c in _INT_COLUMNS.get(table, ()):
        df[c] = pd.array(pd.to_numeric(df[c]).round(), dtype="Int64")
    return df


def _assemble(sims: list[dict], counters: dict) -> dict[str, pd.DataFrame]:
    """DataFrames of one chunk of simulated patients, in MIMIC column order.

    Each patient's tables are built in a fixed order (patients, admissions, edstays,
    vitalsign, omr, the ECG tables, labevents), since they draw from one generator.
    """
    rows = {k: [] for k in COLUMNS if k not in ("d_labitems", "labevents")}
    lab_parts = []
    for p in sims:
        rng = p["rng"]
        rows["patients"].append(_patient_row(p, rng))
        rows["admissions"] += _admission_rows(p, rng)
        rows["edstays"] += _edstay_rows(p, rng)
        rows["vitalsign"] += _vitalsign_rows(p, rng)
        rows["omr"] += _omr_rows(p, rng)
        for table, table_rows in _ecg_rows(p, rng).items():
            rows[table] += table_rows
        if p["labs"]:
            a = np.array(p["labs"], dtype=float)
            lab_parts.append((np.full(len(a), p["subject_id"]), a, rng.random((len(a), 6)), p["female"], p["age"]))
    out = {k: _table_frame(k, v) for k, v in rows.items()}
    out["labevents"] = _lab_frame(lab_parts, counters)
    return out


def _lab_frame(parts: list, counters: dict) -> pd.DataFrame:
    """labevents rows of one chunk, with MIMIC's value text, units, ranges and flags."""
    if not parts:
        return pd.DataFrame(columns=COLUMNS["labevents"])
    subj = np.concatenate([s for s, *_ in parts]).astype(np.int64)
    a = np.concatenate([x for _, x, *_ in parts])
    u = np.concatenate([x for _, _, x, *_ in parts])  # (n, 6) uniforms from each patient's stream
    female = np.concatenate([np.full(len(x), f, dtype=bool) for _, x, _, f, _ in parts])
    age = np.concatenate([np.full(len(x), g) for _, x, _, _, g in parts])
    n = len(a)
    item = a[:, 0].astype(int)
    t, val, hadm, spec, outp = a[:, 1], a[:, 2].copy(), a[:, 3], a[:, 4].astype(np.int64), a[:, 5] > 0
    itemids = np.array([x.itemid for x in _ITEMS] + [URINE_GLUCOSE[0]])
    units = np.array([x.unit for x in _ITEMS] + [URINE_GLUCOSE[4]], dtype=object)[item]
    lower = np.array([x.ref_lower for x in _ITEMS] + [np.nan])[item]
    upper = np.array([x.ref_upper for x in _ITEMS] + [np.nan])[item]
    own_lower, own_upper = planted_row_ranges(np.array([x.label for x in _ITEMS] + [""], dtype=object)[item],
                                              female, age)
    lower = np.where(np.isnan(own_lower), lower, own_lower)
    upper = np.where(np.isnan(own_upper), upper, own_upper)
    decimals = np.array([LAB_MODELS[x.label].decimals if x.label in LAB_MODELS else _DERIVED_DECIMALS[x.label]
                         for x in _ITEMS] + [0])[item]
    wiggle = u[:, 0] < 0.1  # some rows print a slightly different reference range
    lower = np.where(wiggle, np.round(lower * 0.95, 2), lower)
    upper = np.where(wiggle, np.round(upper * 1.05, 2), upper)
    is_urine = item == _URINE_INDEX
    val[is_urine] = np.where(u[is_urine, 1] < 0.8, np.nan, np.where(u[is_urine, 1] < 0.93, 100.0, 300.0))
    value = np.full(n, "", dtype=object)
    for dec in np.unique(decimals):
        m = (decimals == dec) & np.isfinite(val)
        value[m] = np.char.mod(f"%.{dec}f", val[m])
    value[is_urine & ~np.isfinite(val)] = "NEG"
    lower[is_urine], upper[is_urine] = np.nan, np.nan
    trop = itemids[item] == _TESTS["Troponin T"].itemid
    value[trop & (val <= 0.01)] = "<0.01"
    val[trop & (val < 0.01)] = 0.01
    mchc = itemids[item] == _TESTS["MCHC"].itemid
    units[mchc & (u[:, 2] < 0.3)] = "%"  # a second spelling of the same unit
    hidden = u[:, 3] < 0.004  # de-identified values
    value[hidden] = "___"
    val[hidden & (u[:, 3] < 0.002)] = np.nan  # half keep their valuenum, as in MIMIC
    error = (u[:, 3] >= 0.004) & (u[:, 3] < 0.004 + QUIRK_RATES["lab_error"])
    value[error], val[error] = "ERROR", np.nan
    bnp = itemids[item] == _TESTS["NTproBNP"].itemid
    over = bnp & (val > NTPROBNP_MAX)  # above the assay's range: text only
    value[over], val[over] = f">{NTPROBNP_MAX:g}", np.nan
    # reference ranges as printed: u[:, 1] only serves urine rows above, so it is free here
    r = np.where(is_urine, 1.0, u[:, 1])
    no_range = r < QUIRK_RATES["range_empty"]
    zero_range = (r >= QUIRK_RATES["range_empty"]) & (r < QUIRK_RATES["range_empty"] + QUIRK_RATES["range_zero"])
    lower[no_range], upper[no_range] = np.nan, np.nan
    lower[zero_range], upper[zero_range] = 0.0, 0.0
    one_sided = np.isin(itemids[item], [_TESTS[lb].itemid for lb in ONE_SIDED_RANGE]) & (u[:, 0] >= 0.1)
    lower[one_sided] = np.nan  # an upper limit only, as printed for troponin and NTproBNP
    # a second itemid with the same label and fluid (another analyser); u[:, 2] serves MCHC only
    itemids_row = itemids[item].copy()
    for label, second in SECOND_ITEMIDS.items():
        itemids_row[(itemids[item] == _TESTS[label].itemid) & (u[:, 2] < QUIRK_RATES["second_itemid"])] = second
    flag = np.where((val < lower) | (val > upper), "abnormal", "")
    ids = counters["labevent"] + np.arange(1, n + 1)
    counters["labevent"] += n
    return pd.DataFrame({
        "labevent_id": ids, "subject_id": subj, "hadm_id": pd.array(np.where(np.isfinite(hadm), hadm, np.nan), dtype="Int64"),
        "specimen_id": spec, "itemid": itemids_row,
        "order_provider_id": np.where(u[:, 4] < 0.3, "", np.char.add("P", (10000 + (u[:, 4] * 89999).astype(int)).astype(str))),
        "charttime": _fmt_time(t), "storetime": _fmt_time(t + 60 * np.floor(20 + 160 * u[:, 5])),
        "value": value, "valuenum": val, "valueuom": units, "ref_range_lower": lower, "ref_range_upper": upper,
        "flag": flag, "priority": np.where(outp, "ROUTINE", np.where(u[:, 5] < 0.6, "STAT", "ROUTINE")),
        "comments": np.where(hidden, "___", ""),
    })


def d_labitems_frame() -> pd.DataFrame:
    """The d_labitems rows the generator writes: the catalog's tests plus urine glucose."""
    rows = [(t.itemid, t.label, t.fluid, t.d_category) for t in LAB_TESTS]
    rows += [(second, label, _TESTS[label].fluid, _TESTS[label].d_category) for label, second in SECOND_ITEMIDS.items()]
    rows.append(URINE_GLUCOSE[:4])
    return pd.DataFrame(sorted(rows), columns=COLUMNS["d_labitems"])


# ---------------------------------------------------------------- writing
class _CsvStream:
    """Append-only CSV writer; gzip with mtime 0 and no file name when the path ends .gz."""

    def __init__(self, tmp: Path, gz: bool, columns: list[str]):
        self._raw = open(tmp, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=4) if gz else None
        self._text = io.TextIOWrapper(self._gz or self._raw, encoding="utf-8", newline="")
        self._text.write(",".join(columns) + "\n")
        self.rows = 0

    def append(self, df: pd.DataFrame) -> None:
        df.to_csv(self._text, header=False, index=False, lineterminator="\n")
        self.rows += len(df)

    def close(self) -> None:
        self._text.flush()
        self._text.detach()
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


_NO_CONTENT = ("data_root", "workers", "chunk_patients", "writer", "progress")
ADC_GAIN = 200.0  # digital units per mV, as in MIMIC-IV-ECG headers


def write_record_fast(write_dir: Path, name: str, sig: np.ndarray, when) -> None:
    """Write a 12-lead fmt-16 WFDB record as ``wfdb.wrsamp`` would, without its overhead.

    Parameters
    ----------
    write_dir : Path
    name : str
        Record name (the study id).
    sig : ndarray of shape (5000, 12), float64
        Millivolts, leads in ``ecgsim.LEADS_MIMIC`` order; NaN is written as -32768.
    when : datetime.datetime
        Base date and time of the header.
    """
    d = sig * ADC_GAIN
    nan = np.isnan(d)
    d = np.round(d)
    d[nan] = -32768
    d = d.astype(np.int64)  # (L, C)
    checksum = d.sum(axis=0) % 65536
    lines = [f"{name} 12 {ecgsim.FS_HZ} {ecgsim.N_SAMPLES} {when:%H:%M:%S} {when:%d/%m/%Y}"]
    for c, lead in enumerate(ecgsim.LEADS_MIMIC):
        lines.append(f"{name}.dat 16 {ADC_GAIN}(0)/mV 16 0 {d[0, c]} {checksum[c]} 0 {lead}")
    (write_dir / f"{name}.hea").write_text("\n".join(lines) + "\n")
    (write_dir / f"{name}.dat").write_bytes(d.astype("<i2").tobytes())


def _write_records(batch: list[tuple], ecg_root: str, seed: int, writer: str) -> int:
    """Simulate and write the WFDB records of a batch of (study_id, path, params, ecg_time_s)."""
    import datetime as dt

    import wfdb

    for study_id, path, params, t in batch:
        rng = _rng(seed, 2, study_id)
        sig = ecgsim.simulate(params, rng)  # (5000, 12) mV
        q = _rng(seed, QUIRK_STREAM + 2, study_id).random(3)
        if q[0] < QUIRK_RATES["dead_lead"]:
            sig[:, int(q[1] * 12)] = np.nan  # a lead without any sample
        d = Path(ecg_root) / Path(path).parent
        d.mkdir(parents=True, exist_ok=True)
        when = dt.datetime(2100, 1, 1) + dt.timedelta(seconds=int(t))
        if q[0] >= 1.0 - QUIRK_RATES["header_time_shift"]:  # the cart's clock, not record_list's time
            when += dt.timedelta(minutes=int(-90 + 180 * q[2]) or 1)
        if writer == "fast":
            write_record_fast(d, str(study_id), sig, when)
        else:
            wfdb.wrsamp(str(study_id), fs=ecgsim.FS_HZ, units=["mV"] * 12, sig_name=list(ecgsim.LEADS_MIMIC),
                        p_signal=sig, fmt=["16"] * 12, adc_gain=[ADC_GAIN] * 12, baseline=[0] * 12,
                        base_time=when.time(), base_date=when.date(), write_dir=str(d))
    return len(batch)


def _write_batch(args) -> int:
    return _write_records(*args)


def generate(cfg: SynthConfig) -> Path:
    """Write a synthetic MIMIC-shaped tree under ``cfg.data_root`` and return ``cfg.data_root``.

    Patients are simulated in chunks of ``cfg.chunk_patients`` and appended to the
    table writers; waveform records are simulated by ``cfg.workers`` processes. Each
    table file appears atomically when complete.

    ``cfg.data_root`` must be absent, empty, or an earlier synthetic tree (it holds
    ``labecg_synthetic.json``, written first as an "incomplete" marker and last in full);
    the source folders of an earlier tree are replaced. Anything else, such as real MIMIC
    folders, is refused with ``FileExistsError`` before a file is written.
    """
    root = cfg.data_root
    marker = root / SYNTHETIC_MARKER
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: is a file; expected a folder for the synthetic tree")
    if root.is_dir() and any(root.iterdir()) and not marker.exists():
        first = sorted(p.name for p in root.iterdir())
        raise FileExistsError(f"{root}: holds {first[0]}{f' and {len(first) - 1} more' if len(first) > 1 else ''} "
                              "but no labecg_synthetic.json, so it is not an earlier synthetic tree; "
                              "refusing to overwrite it: choose an empty or new --data-root")
    for top in sorted({rel.split("/")[0] for rel in RELPATHS.values()} | {"mimic-iv-ecg"}):
        shutil.rmtree(root / top, ignore_errors=True)  # an earlier synthetic tree: no stale records stay
    root.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"generator": "labecg.synthetic", "version": GENERATOR_VERSION, "status": "incomplete"})
    master = _rng(cfg.seed, 0, 0)
    n = cfg.patients
    step = max(2, 9_000_000 // n)
    subject_ids = 10_000_000 + np.cumsum(master.integers(1, step, n))
    n_ecg = np.clip(1 + master.poisson(cfg.ecgs_per_patient - 1.0, n), 1, 8)
    study_ids = 40_000_000 + master.choice(50_000_000, int(n_ecg.sum()), replace=False)
    folds = master.integers(0, 20, n)
    first_ecg = np.concatenate([[0], np.cumsum(n_ecg)])
    counters = {"hadm": 20_000_000, "stay": 30_000_000, "specimen": 1_000_000, "labevent": 0}
    ecg_root = root / "mimic-iv-ecg"
    n_wave = 0
    pool = None
    if cfg.workers > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        pool = ctx.Pool(cfg.workers)
    with contextlib.ExitStack() as stack:
        streams = {}
        for k, rel in RELPATHS.items():
            tmp = stack.enter_context(atomic_path(root / rel))
            streams[k] = _CsvStream(tmp, rel.endswith(".gz"), COLUMNS[k])
        try:
            bar = progress_bar(total=n, desc="synthetic patients", unit="patient", disable=True if not cfg.progress else None)
            for c0 in range(0, n, cfg.chunk_patients):
                sims = []
                for i in range(c0, min(n, c0 + cfg.chunk_patients)):
                    sims.append(_simulate_patient(int(subject_ids[i]), int(n_ecg[i]),
                                                  study_ids[first_ecg[i]:first_ecg[i + 1]], int(folds[i]), cfg, counters))
                frames = _assemble(sims, counters)
                for k, df in frames.items():
                    streams[k].append(df)
                jobs = [(r.study_id, r.path, e["params"], e["t"])
                        for r, e in zip(frames["record_list"].itertuples(), (e for p in sims for e in p["ecg"]))
                        if _rng(cfg.seed, 9, r.study_id).random() < cfg.waveform_fraction]
                n_wave += len(jobs)
                batches = [(jobs[j:j + 32], str(ecg_root), cfg.seed, cfg.writer) for j in range(0, len(jobs), 32)]
                if pool is None:
                    for b in batches:
                        _write_batch(b)
                else:
                    for _ in pool.imap_unordered(_write_batch, batches):
                        pass
                bar.update(len(sims))
            bar.close()
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            for s in streams.values():
                s.close()
        counts = {k: s.rows for k, s in streams.items()}
    with atomic_path(root / RELPATHS["d_labitems"]) as tmp:
        s = _CsvStream(tmp, True, COLUMNS["d_labitems"])
        s.append(d_labitems_frame())
        s.close()
    meta = {"generator": "labecg.synthetic", "version": GENERATOR_VERSION,
            # only fields that change the content, so the file is identical across out/workers
            "config": {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in _NO_CONTENT},
            "seed": cfg.seed,
            "rows": counts, "n_waveforms": n_wave, "factors": list(FACTORS),
            "planted_effects": planted_effects_frame().to_dict(orient="records"),
            "planted_windows_s": {label: list(w) for label, w in PLANTED_WINDOWS_S.items()},
            "planted_ranges": planted_ranges_frame().to_dict(orient="records"),
            "ecg_null_labs": list(ecg_null_labs())}
    write_json(root / SYNTHETIC_MARKER, meta)
    log.info("wrote %d patients, %d ECGs (%d waveforms), %d lab rows to %s",
             n, counts["record_list"], n_wave, counts["labevents"], root)
    return root
