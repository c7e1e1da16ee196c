"""The laboratory tests of the paper as MIMIC-IV describes them, and the columns of the MIMIC files.

Static domain knowledge shared by the synthetic generator (which writes these itemids,
labels, fluids and units) and by the cohort builder (which looks up the paper's
physiological category of a label), ``MIMIC_COLUMNS``, the column lists of the four
sources (where their files lie under a data root is :mod:`labecg.layout`'s). Imports no other
``labecg`` module.

Categories are the paper's codes: ``Ca.`` cardiac, ``Re.`` renal, ``He.`` hematological,
``Me.`` metabolic, ``Im.`` immunological, ``Co.`` coagulation; ``Re./Ca.`` where the
paper gives two.

Reference ranges are the typical ``ref_range_lower``/``ref_range_upper`` that MIMIC-IV
prints for the test; the paper's thresholds are their medians over all rows (and match
the thresholds of the paper's Tables 1-2).

Itemids checked against the public MIT-LCP/mimic-code concept queries
(``mimic-iv/concepts/measurement/``: chemistry 50862 50868 50882 50893 50902 50912 50931
50971 50983 51006; complete_blood_count 51221 51222 51248 51249 51250 51265 51277 51279
51301; blood_differential 51244 51254 51256 52069; cardiac_marker 50911 50963 51003;
enzyme 50885 50910 50911; coagulation 51237 51274 51275) and against a public
itemid -> label listing of ``d_labitems`` (50813 Lactate, 50852 % Hemoglobin A1c, 50924
Ferritin, 50953 Iron Binding Capacity, Total, 50960 Magnesium, 50970 Phosphate, 50998
Transferrin, 52172 RDW-SD; mimic-code's CBC query reads RDW-SD from 52159 instead).
Not verified: eAG's itemid 50854 (one public listing names 50854 "Absolute A1c").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabTest:
    itemid: int
    label: str           # d_labitems.label, exactly
    fluid: str           # d_labitems.fluid
    d_category: str      # d_labitems.category (Chemistry, Hematology, Blood Gas)
    unit: str            # labevents.valueuom
    ref_lower: float     # typical ref_range_lower
    ref_upper: float     # typical ref_range_upper
    category: str | None  # the paper's physiological category code


LAB_TESTS: tuple[LabTest, ...] = (
    # cardiac
    LabTest(50963, "NTproBNP", "Blood", "Chemistry", "pg/mL", 0.0, 353.0, "Ca."),
    LabTest(51003, "Troponin T", "Blood", "Chemistry", "ng/mL", 0.0, 0.01, "Ca."),
    LabTest(50910, "Creatine Kinase (CK)", "Blood", "Chemistry", "IU/L", 38.0, 174.0, "Ca."),
    LabTest(50911, "Creatine Kinase, MB Isoenzyme", "Blood", "Chemistry", "ng/mL", 0.0, 10.0, "Ca."),
    # renal
    LabTest(51006, "Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 6.0, 20.0, "Re."),
    LabTest(50912, "Creatinine", "Blood", "Chemistry", "mg/dL", 0.5, 1.2, "Re./Ca."),
    LabTest(50893, "Calcium, Total", "Blood", "Chemistry", "mg/dL", 8.4, 10.3, "Re."),
    LabTest(50970, "Phosphate", "Blood", "Chemistry", "mg/dL", 2.7, 4.5, "Re."),
    # electrolytes and metabolism
    LabTest(50971, "Potassium", "Blood", "Chemistry", "mEq/L", 3.3, 5.1, "Me."),
    LabTest(50983, "Sodium", "Blood", "Chemistry", "mEq/L", 133.0, 145.0, "Me."),
    LabTest(50902, "Chloride", "Blood", "Chemistry", "mEq/L", 96.0, 108.0, "Me."),
    LabTest(50960, "Magnesium", "Blood", "Chemistry", "mg/dL", 1.6, 2.6, "Me."),
    LabTest(50931, "Glucose", "Blood", "Chemistry", "mg/dL", 70.0, 100.0, "Me."),
    LabTest(50882, "Bicarbonate", "Blood", "Chemistry", "mEq/L", 22.0, 32.0, "Me."),
    LabTest(50868, "Anion Gap", "Blood", "Chemistry", "mEq/L", 8.0, 20.0, "Me."),
    LabTest(50862, "Albumin", "Blood", "Chemistry", "g/dL", 3.5, 5.2, "Me."),
    LabTest(50885, "Bilirubin, Total", "Blood", "Chemistry", "mg/dL", 0.0, 1.5, "Me."),
    LabTest(50924, "Ferritin", "Blood", "Chemistry", "ng/mL", 13.0, 150.0, "Me."),
    LabTest(50813, "Lactate", "Blood", "Blood Gas", "mmol/L", 0.5, 2.0, "Me."),
    LabTest(50852, "% Hemoglobin A1c", "Blood", "Chemistry", "%", 4.0, 6.0, "Me."),
    LabTest(50854, "eAG", "Blood", "Chemistry", "mg/dL", 68.0, 123.0, "Me."),
    # hematology
    LabTest(51222, "Hemoglobin", "Blood", "Hematology", "g/dL", 13.7, 17.5, "He."),
    LabTest(51221, "Hematocrit", "Blood", "Hematology", "%", 40.0, 51.0, "He."),
    LabTest(51279, "Red Blood Cells", "Blood", "Hematology", "m/uL", 4.6, 6.1, "He."),
    LabTest(51277, "RDW", "Blood", "Hematology", "%", 10.5, 15.5, "He."),
    LabTest(52172, "RDW-SD", "Blood", "Hematology", "fL", 35.1, 46.3, "He."),
    LabTest(51249, "MCHC", "Blood", "Hematology", "g/dL", 31.0, 37.0, "He."),
    LabTest(51248, "MCH", "Blood", "Hematology", "pg", 26.0, 32.0, "He."),
    LabTest(51250, "MCV", "Blood", "Hematology", "fL", 82.0, 98.0, "He."),
    LabTest(51265, "Platelet Count", "Blood", "Hematology", "K/uL", 150.0, 440.0, "He."),
    # immunology, iron studies
    LabTest(51301, "White Blood Cells", "Blood", "Hematology", "K/uL", 4.0, 11.0, "Im."),
    LabTest(51244, "Lymphocytes", "Blood", "Hematology", "%", 18.0, 42.0, "Im."),
    LabTest(51254, "Monocytes", "Blood", "Hematology", "%", 2.0, 11.0, "Im."),
    LabTest(51256, "Neutrophils", "Blood", "Hematology", "%", 50.0, 70.0, "Im."),
    LabTest(52069, "Absolute Basophil Count", "Blood", "Hematology", "K/uL", 0.01, 0.08, "Im."),
    LabTest(50953, "Iron Binding Capacity, Total", "Blood", "Chemistry", "ug/dL", 260.0, 470.0, "Im."),
    LabTest(50998, "Transferrin", "Blood", "Chemistry", "mg/dL", 200.0, 360.0, "Im."),
    # coagulation
    LabTest(51237, "INR(PT)", "Blood", "Hematology", "ratio", 0.9, 1.1, "Co."),
    LabTest(51274, "PT", "Blood", "Hematology", "sec", 9.4, 12.5, "Co."),
    LabTest(51275, "PTT", "Blood", "Hematology", "sec", 25.0, 36.5, "Co."),
)

_BY_LABEL = {t.label: t for t in LAB_TESTS}

#: The paper's category codes in words: what ``[Me.]`` after a value means.
CATEGORY_NAMES = {"Ca.": "cardiac", "Re.": "renal", "Re./Ca.": "renal and cardiac", "He.": "hematological",
                  "Me.": "metabolic", "Im.": "immunological", "Co.": "coagulation"}

# The paper's table names where they differ from d_labitems labels.
PAPER_NAMES: dict[str, str] = {
    "Creatine Kinase (CK)": "Creatine Kinase",
    "INR(PT)": "INR PT",
    "Absolute Basophil Count": "Abs. Basophils",
    "Iron Binding Capacity, Total": "Iron Binding",
}


def category_for_label(label: str) -> str | None:
    """The paper's category code for a ``d_labitems.label``, or None when unknown."""
    test = _BY_LABEL.get(label)
    return test.category if test else None


def paper_name(label: str) -> str:
    """The name the paper's tables print for a ``d_labitems.label``."""
    return PAPER_NAMES.get(label, label)


# The files of the four MIMIC sources: every column, in the order the real files have it
# (MIMIC-IV v3.1 hosp, MIMIC-IV-ED v2.2, MIMIC-IV-ECG v1.0, MIMIC-IV-ECG-ICD).
MIMIC_COLUMNS = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "admissions": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                   "admit_provider_id", "admission_location", "discharge_location", "insurance",
                   "language", "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag"],
    "labevents": ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
                  "charttime", "storetime", "value", "valuenum", "valueuom", "ref_range_lower",
                  "ref_range_upper", "flag", "priority", "comments"],
    "d_labitems": ["itemid", "label", "fluid", "category"],
    "omr": ["subject_id", "chartdate", "seq_num", "result_name", "result_value"],
    "edstays": ["subject_id", "hadm_id", "stay_id", "intime", "outtime", "gender", "race",
                "arrival_transport", "disposition"],
    "vitalsign": ["subject_id", "stay_id", "charttime", "temperature", "heartrate", "resprate", "o2sat",
                  "sbp", "dbp", "rhythm", "pain"],
    "record_list": ["subject_id", "study_id", "file_name", "ecg_time", "path"],
    "machine_measurements": ["subject_id", "study_id", "cart_id", "ecg_time"]
    + [f"report_{i}" for i in range(18)]
    + ["bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end",
       "p_axis", "qrs_axis", "t_axis"],
    "records_w_diag_icd10": ["file_name", "study_id", "subject_id", "ecg_time", "ed_stay_id", "ed_hadm_id",
                             "hosp_hadm_id", "ed_diag_ed", "ed_diag_hosp", "hosp_diag_hosp", "all_diag_hosp",
                             "all_diag_all", "gender", "age", "anchor_year", "anchor_age", "strat_fold"],
}
