"""The truth planted in a synthetic source: latent factors, lab models, and the effects they reach.

Each synthetic patient carries latent physiological factors (standardized; :data:`FACTORS`).
A laboratory value reads some of them through its :data:`LAB_MODELS` loadings (or through
the test it is derived from, :data:`DERIVED`); the ECG reads others (:data:`ECG_FACTORS`),
and the ED vital signs theirs through :data:`VITAL_MODELS`. :data:`PLANTED_EFFECTS` says, per laboratory test, which channel
carries its signal and how strongly, :data:`PLANTED_WINDOWS_S` where in the beat the ECG
effects sit, :func:`ecg_null_labs` which tests the ECG can say nothing about, and
:data:`PLANTED_RANGES` the sex- and age-specific reference ranges printed on the rows of a few
tests (the truth ``labecg cohort --thresholds row`` has to recover). The
generator (:mod:`labecg.synthetic`) draws from these; the attribution check
(:mod:`labecg.explain`) and the pages' self-check (:mod:`labecg.selfcheck`) read them
without loading the generator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from labecg.targets import lab_slug

FACTORS = ("potassium", "calcium", "renal", "heart_failure", "anemia", "inflammation",
           "coagulation", "liver", "nutrition", "glycemia", "iron_deficiency", "muscle",
           "ischemia")


@dataclass(frozen=True)
class PlantedEffect:
    """One row of the planted-effects table.

    ``strength`` is a design grade of the planted link from the lab's latent factor to
    its channel: 0 none, 1 weak, 2 moderate, 3 strong (roughly: expected AUROC from a
    perfect reader of the channel <0.55, 0.55-0.65, 0.65-0.8, >0.8).
    """

    label: str
    direction: Literal["low", "high", "both"]
    channel: Literal["ecg", "vitals", "ecg+vitals", "none"]
    mechanism: str
    strength: float


PLANTED_EFFECTS: tuple[PlantedEffect, ...] = (
    PlantedEffect("Potassium", "both", "ecg", "potassium -> T-wave amplitude (strongly), T narrowing, QRS width", 3),
    PlantedEffect("Calcium, Total", "low", "ecg", "calcium -> QT interval (low calcium lengthens QT)", 3),
    PlantedEffect("NTproBNP", "high", "ecg+vitals", "heart failure -> lower QRS voltage, faster rate, AF-like irregular RR; lower SpO2, faster breathing", 3),
    PlantedEffect("Creatinine", "both", "ecg", "renal function -> QRS voltage, and potassium's T-wave/QRS effects", 2),
    PlantedEffect("Urea Nitrogen", "both", "ecg", "renal function -> QRS voltage, and potassium's T-wave/QRS effects", 2),
    PlantedEffect("Phosphate", "high", "ecg", "renal function (weaker loading) -> QRS voltage via renal factor", 1),
    PlantedEffect("Hemoglobin", "both", "ecg+vitals", "anemia -> heart rate (ECG and ED heart rate)", 2),
    PlantedEffect("Hematocrit", "both", "ecg+vitals", "anemia -> heart rate (ECG and ED heart rate)", 2),
    PlantedEffect("Red Blood Cells", "low", "ecg+vitals", "anemia -> heart rate", 2),
    PlantedEffect("RDW", "high", "ecg+vitals", "iron deficiency and anemia -> heart rate", 1),
    PlantedEffect("RDW-SD", "high", "ecg+vitals", "iron deficiency and anemia -> heart rate", 1),
    PlantedEffect("MCHC", "low", "ecg+vitals", "iron deficiency -> heart rate (weak)", 1),
    PlantedEffect("Ferritin", "low", "ecg+vitals", "iron deficiency -> heart rate (weak)", 1),
    PlantedEffect("Troponin T", "high", "ecg", "ischemia -> ST depression and T flattening, lateral leads", 2),
    PlantedEffect("Creatine Kinase, MB Isoenzyme", "high", "ecg", "ischemia (partial loading) -> ST depression", 1),
    PlantedEffect("White Blood Cells", "high", "vitals", "inflammation -> temperature, respiratory rate (ED vitals only)", 2),
    PlantedEffect("Lymphocytes", "low", "vitals", "inflammation -> temperature, respiratory rate (ED vitals only)", 2),
    PlantedEffect("Neutrophils", "high", "vitals", "inflammation -> temperature, respiratory rate (ED vitals only)", 2),
    PlantedEffect("Monocytes", "high", "vitals", "inflammation -> temperature, respiratory rate (ED vitals only)", 1),
    PlantedEffect("Lactate", "high", "ecg+vitals", "inflammation and heart failure -> vitals, rate and voltage", 1),
    PlantedEffect("Albumin", "low", "vitals", "nutrition (no channel) and inflammation (vitals, weak)", 1),
    PlantedEffect("Sodium", "both", "none", "no planted signal", 0),
    PlantedEffect("Chloride", "both", "none", "no planted signal", 0),
    PlantedEffect("Glucose", "both", "none", "glycemia factor, which nothing observed reads", 0),
    PlantedEffect("% Hemoglobin A1c", "high", "none", "glycemia factor, which nothing observed reads", 0),
    PlantedEffect("eAG", "high", "none", "glycemia factor, which nothing observed reads", 0),
    PlantedEffect("Platelet Count", "both", "none", "no planted signal", 0),
    PlantedEffect("Bilirubin, Total", "high", "none", "liver factor, which nothing observed reads", 0),
    PlantedEffect("INR(PT)", "high", "none", "coagulation factor, which nothing observed reads", 0),
    PlantedEffect("PT", "high", "none", "coagulation factor, which nothing observed reads", 0),
    PlantedEffect("PTT", "high", "none", "coagulation factor, which nothing observed reads", 0),
    PlantedEffect("Creatine Kinase (CK)", "low", "none", "muscle factor, which nothing observed reads", 0),
    PlantedEffect("Magnesium", "both", "ecg", "renal function (weak loading) only", 1),
    PlantedEffect("Bicarbonate", "high", "ecg", "renal function (weak, negative loading) only", 1),
    PlantedEffect("Anion Gap", "high", "ecg+vitals", "renal function and inflammation (weak)", 1),
    PlantedEffect("Iron Binding Capacity, Total", "low", "vitals", "inflammation (negative) and iron deficiency", 1),
    PlantedEffect("Transferrin", "low", "vitals", "inflammation (negative) and iron deficiency", 1),
    PlantedEffect("Absolute Basophil Count", "low", "vitals", "inflammation (weak, negative)", 1),
    PlantedEffect("MCH", "low", "ecg+vitals", "iron deficiency -> heart rate (weak)", 1),
    PlantedEffect("MCV", "low", "ecg+vitals", "iron deficiency -> heart rate (weak)", 1),
)

#: Where in the beat the ECG effects of ``PLANTED_EFFECTS`` sit, as (window name, start s,
#: end s) relative to the R peak, start included, end excluded. From :mod:`labecg.ecgsim`'s
#: beat template over the generator's ranges (heart rate 55-100 bpm, QTc 380-460 ms,
#: potassium factor -2 to 2; tests/test_explain.py checks them): the T wave peaks
#: -QRS/2 + QT - 2.5 T-width after R (about 0.10-0.29 s, width 0.04-0.07 s); the ST deflection
#: sits halfway between QRS end and T peak; the R wave is at 0 with QRS about 90 ms.
PLANTED_WINDOWS_S: dict[str, tuple[str, float, float]] = {
    "Potassium": ("T wave", 0.08, 0.40),  # T amplitude and width (high potassium: T peak +- 1 width)
    "Calcium, Total": ("ST–T", 0.04, 0.45),  # QT length moves the T wave
    "NTproBNP": ("QRS", -0.06, 0.06),  # QRS voltage (also rate and RR irregularity: not in one window)
    "Troponin T": ("ST segment", 0.04, 0.20),  # ST depression
}


#: The latent factors the ECG waveform reads (:func:`labecg.synthetic._ecg_params`: rate, QRS, QT, T wave,
#: voltage, ST). A lab whose value reads none of them is independent of the ECG by
#: construction (tests/test_synthetic.py perturbs the factors to check both sides).
ECG_FACTORS: tuple[str, ...] = ("anemia", "iron_deficiency", "heart_failure", "renal", "potassium",
                                "inflammation", "calcium", "ischemia")


def lab_factors(label: str) -> tuple[str, ...]:
    """The latent factors a laboratory test's value reads (through the tests it is derived from).

    Red blood cells read MCH besides hemoglobin (``labecg.synthetic._derive``).
    """
    sources = {"Red Blood Cells": ("Hemoglobin", "MCH")}.get(label) or (DERIVED.get(label, (label,))[0],)
    out: list[str] = []
    for src in sources:
        if src in DERIVED:
            out += lab_factors(src)
        else:
            out += [name for name, _ in LAB_MODELS[src].loadings if name not in out]
    return tuple(dict.fromkeys(out))


def ecg_null_labs() -> tuple[str, ...]:
    """Labels of the tests with nothing planted whose value is independent of the ECG waveform.

    A test qualifies when its planted strength is 0 and its value (or the value it is
    derived from) reads no factor of :data:`ECG_FACTORS`: its draw is then the patient's
    residual level plus noise, and factors no part of the ECG reads. Which draws are
    measured (panels, times) does not depend on any factor either. So its labels are
    independent of the ECG it is paired with, and an ECG model has nothing to learn for
    it; these are the null targets of the attribution check (:mod:`labecg.explain`).
    Sorted by label.
    """
    return tuple(sorted(e.label for e in PLANTED_EFFECTS
                        if e.strength == 0 and not set(lab_factors(e.label)) & set(ECG_FACTORS)))


def planted_effects_frame() -> pd.DataFrame:
    """The planted effects as a table.

    Returns
    -------
    DataFrame with columns label, lab (``targets.lab_slug(label)``), direction, channel,
    mechanism, strength; one row per laboratory test.
    """
    df = pd.DataFrame([asdict(e) for e in PLANTED_EFFECTS])
    df.insert(1, "lab", df["label"].map(lab_slug))
    return df


@dataclass(frozen=True)
class LabModel:
    """value = centre + sd * z (linear) or centre * exp(sd * z) (log); z = loadings . factors + residual."""

    centre: float
    sd: float
    log: bool
    decimals: int
    loadings: tuple[tuple[str, float], ...]


_L = LabModel
LAB_MODELS: dict[str, LabModel] = {
    "NTproBNP": _L(170.0, 1.3, True, 0, (("heart_failure", 0.85), ("renal", 0.35))),
    "Troponin T": _L(0.006, 1.2, True, 2, (("ischemia", 0.85), ("renal", 0.3))),
    "Creatine Kinase (CK)": _L(90.0, 0.75, True, 0, (("muscle", 0.9),)),
    "Creatine Kinase, MB Isoenzyme": _L(3.0, 0.7, True, 0, (("ischemia", 0.6), ("muscle", 0.4))),
    "Urea Nitrogen": _L(14.0, 0.6, True, 0, (("renal", 0.9),)),
    "Creatinine": _L(0.85, 0.42, True, 1, (("renal", 0.9),)),
    "Calcium, Total": _L(8.85, 0.55, False, 1, (("calcium", 0.85), ("renal", -0.2), ("nutrition", -0.2))),
    "Phosphate": _L(3.6, 0.8, False, 1, (("renal", 0.6),)),
    "Potassium": _L(4.4, 0.65, False, 1, (("potassium", 0.9), ("renal", 0.3))),
    "Sodium": _L(139.0, 4.5, False, 0, ()),
    "Chloride": _L(102.0, 5.0, False, 0, ()),
    "Magnesium": _L(1.95, 0.3, False, 1, (("renal", 0.3),)),
    "Glucose": _L(105.0, 0.3, True, 0, (("glycemia", 0.8),)),
    "Bicarbonate": _L(27.0, 3.5, False, 0, (("renal", -0.4),)),
    "Anion Gap": _L(15.0, 3.5, False, 0, (("renal", 0.5), ("inflammation", 0.3))),
    "Albumin": _L(3.8, 0.5, False, 1, (("nutrition", -0.8), ("inflammation", -0.3))),
    "Bilirubin, Total": _L(0.7, 0.7, True, 1, (("liver", 0.9),)),
    "Ferritin": _L(60.0, 1.1, True, 0, (("iron_deficiency", -0.7), ("inflammation", 0.5))),
    "Lactate": _L(1.4, 0.45, True, 1, (("inflammation", 0.5), ("heart_failure", 0.4))),
    "% Hemoglobin A1c": _L(5.7, 0.18, True, 1, (("glycemia", 0.7),)),
    "Hemoglobin": _L(14.6, 1.8, False, 1, (("anemia", -0.85), ("iron_deficiency", -0.35))),
    "MCHC": _L(32.0, 1.2, False, 1, (("iron_deficiency", -0.7),)),
    "MCH": _L(29.5, 2.2, False, 1, (("iron_deficiency", -0.6),)),
    "MCV": _L(90.0, 6.0, False, 0, (("iron_deficiency", -0.6), ("liver", 0.3))),
    "RDW": _L(14.2, 1.8, False, 1, (("iron_deficiency", 0.6), ("anemia", 0.4))),
    "Platelet Count": _L(240.0, 0.45, True, 0, ()),
    "White Blood Cells": _L(8.5, 0.4, True, 1, (("inflammation", 0.85),)),
    "Lymphocytes": _L(22.0, 8.0, False, 1, (("inflammation", -0.8),)),
    "Monocytes": _L(8.0, 2.5, False, 1, (("inflammation", 0.5),)),
    "Neutrophils": _L(68.0, 10.0, False, 1, (("inflammation", 0.8),)),
    "Absolute Basophil Count": _L(0.03, 0.6, True, 2, (("inflammation", -0.3),)),
    "Iron Binding Capacity, Total": _L(300.0, 60.0, False, 0, (("iron_deficiency", 0.5), ("inflammation", -0.4), ("nutrition", -0.4))),
    "Transferrin": _L(230.0, 50.0, False, 0, (("iron_deficiency", 0.5), ("inflammation", -0.4), ("nutrition", -0.4))),
    "INR(PT)": _L(1.05, 0.25, True, 1, (("coagulation", 0.85), ("liver", 0.3))),
    "PTT": _L(30.0, 0.25, True, 1, (("coagulation", 0.6),)),
}
# Derived from another test of the same draw: label -> (source, slope, intercept, noise sd)
DERIVED = {
    "Hematocrit": ("Hemoglobin", 3.0, 0.5, 1.0),
    "Red Blood Cells": ("Hemoglobin", 0.33, 0.0, 0.2),
    "RDW-SD": ("RDW", 3.1, 0.0, 1.5),
    "PT": ("INR(PT)", 11.0, 0.3, 0.3),
    "eAG": ("% Hemoglobin A1c", 28.7, -46.7, 0.0),
}

#: Heart rate's anemia drive, read by the ECG's rate (``labecg.synthetic._ecg_params``) and the
#: ED heart rate: 0.85 * anemia + 0.5 * iron deficiency, added in this order.
ANEMIA_DRIVE: tuple[tuple[str, float], ...] = (("anemia", 0.85), ("iron_deficiency", 0.5))


@dataclass(frozen=True)
class VitalModel:
    """One ED vital sign: value = centre + sum(weight * term) + sd * noise, capped at ``upper``.

    Terms are added left to right; a term is a factor of :data:`FACTORS` or
    ``"anemia_drive"`` (:data:`ANEMIA_DRIVE`). ``centre`` None is the patient's own resting
    heart rate (drawn per patient, as the ECG's). The value is rounded to ``decimals``, and a
    seeded share ``missing`` of the rows is left empty. Units are the vitalsign table's
    (degrees F, beats/min, breaths/min, %, mmHg).
    """

    centre: float | None
    loadings: tuple[tuple[str, float], ...]
    sd: float
    decimals: int
    missing: float
    upper: float | None = None


_V = VitalModel
#: The ED vital signs, in the vitalsign table's column order: inflammation raises temperature and
#: breathing rate, heart failure and the anemia drive the heart rate, heart failure lowers SpO2
#: and systolic pressure; diastolic pressure reads no factor.
VITAL_MODELS: dict[str, VitalModel] = {
    "temperature": _V(98.2, (("inflammation", 1.0),), 0.4, 1, 0.3),
    "heartrate": _V(None, (("anemia_drive", 9.0), ("heart_failure", 6.0), ("inflammation", 3.0)), 6.0, 0, 0.08),
    "resprate": _V(17.0, (("inflammation", 1.8), ("heart_failure", 1.5)), 1.5, 0, 0.1),
    "o2sat": _V(97.5, (("heart_failure", -1.3),), 1.0, 0, 0.1, upper=100.0),
    "sbp": _V(130.0, (("heart_failure", -5.0),), 15.0, 0, 0.1),
    "dbp": _V(78.0, (), 10.0, 0, 0.1),
}


@dataclass(frozen=True)
class PlantedRange:
    """The reference range printed on the lab rows of one test for patients of one sex and age band.

    ``age_min`` and ``age_max`` are whole years of ``patients.anchor_age`` (the cohort's
    ``age``), both included; ``lower`` and ``upper`` are in the test's unit
    (``labecg.catalog``). Design values of the synthetic source, close to common laboratory
    practice, not any laboratory's.
    """

    label: str
    sex: Literal["F", "M"]
    age_min: int
    age_max: int
    lower: float
    upper: float


#: Reference ranges that depend on the patient, printed on every row of these tests (before
#: the printing quirks of ``labecg.synthetic``: 10% of rows print the range widened by 5% on
#: each side, some print none, 0-0, or an upper limit only). Hemoglobin and hematocrit by sex,
#: creatinine by sex and age (below 65, 65 and over). Every other test prints its
#: ``labecg.catalog`` range for everyone; the men's hemoglobin and hematocrit ranges and the
#: younger men's creatinine range are the catalog's.
PLANTED_RANGES: tuple[PlantedRange, ...] = (
    PlantedRange("Hemoglobin", "F", 0, 200, 12.0, 16.0),
    PlantedRange("Hemoglobin", "M", 0, 200, 13.7, 17.5),
    PlantedRange("Hematocrit", "F", 0, 200, 36.0, 46.0),
    PlantedRange("Hematocrit", "M", 0, 200, 40.0, 51.0),
    PlantedRange("Creatinine", "F", 0, 64, 0.4, 1.1),
    PlantedRange("Creatinine", "F", 65, 200, 0.5, 1.3),
    PlantedRange("Creatinine", "M", 0, 64, 0.5, 1.2),
    PlantedRange("Creatinine", "M", 65, 200, 0.6, 1.5),
)


def planted_ranges_frame() -> pd.DataFrame:
    """The planted reference ranges as a table.

    Returns
    -------
    DataFrame with columns label, lab (``targets.lab_slug(label)``), sex ("F", "M"), age_min,
    age_max (years, both included), lower, upper (the test's unit); one row per
    :data:`PLANTED_RANGES` entry.
    """
    df = pd.DataFrame([asdict(r) for r in PLANTED_RANGES])
    df.insert(1, "lab", df["label"].map(lab_slug))
    return df


def planted_row_ranges(labels, female, age) -> tuple[np.ndarray, np.ndarray]:
    """The planted range of each lab row, NaN where its test has none (:data:`PLANTED_RANGES`).

    Parameters
    ----------
    labels : array-like of shape (n_rows,), str
        The ``d_labitems.label`` of each row.
    female : array-like of shape (n_rows,), bool
    age : array-like of shape (n_rows,), int
        The patient's ``anchor_age``, years.

    Returns
    -------
    lower, upper : ndarray of shape (n_rows,), float64
    """
    labels = np.asarray(labels, dtype=object)
    female, age = np.asarray(female, dtype=bool), np.asarray(age)
    lower, upper = np.full(labels.shape, np.nan), np.full(labels.shape, np.nan)
    for r in PLANTED_RANGES:
        rows = (labels == r.label) & (female == (r.sex == "F")) & (age >= r.age_min) & (age <= r.age_max)
        lower[rows], upper[rows] = r.lower, r.upper
    return lower, upper
