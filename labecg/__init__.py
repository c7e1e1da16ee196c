"""labecg: a reproducible companion to CardioLab (ECG -> laboratory value abnormalities).

Stages, each one module (the cohort stage's readers, features and labels in three more), each
importing only earlier ones (plus ``util``, ``layout``, ``catalog``, ``metrics``, ``targets`` and
``paper``, which import no stage)::

    synthetic -> sources -> readers -> features -> labels -> cohort -> signals -> data -> s4 -> model
    -> train -> predict -> explain -> tables -> evaluate -> figures -> selfcheck -> privacy -> book

ARCHITECTURE.md lists each module's entry points and files.

``cli`` exposes one subcommand per stage (``labecg synth``, ``labecg cohort``, ...).
"""

__version__ = "0.1.0"
