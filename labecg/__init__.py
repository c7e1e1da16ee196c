"""labecg: a reproducible companion to CardioLab (ECG -> laboratory value abnormalities).

Stages, each one module, each importing only earlier ones (plus ``util`` and ``catalog``,
which import no stage)::

    synthetic -> cohort -> signals -> data -> s4 -> model -> train -> predict -> evaluate -> report -> book

``cli`` exposes one subcommand per stage (``labecg synth``, ``labecg cohort``, ...).
"""

__version__ = "0.1.0"
