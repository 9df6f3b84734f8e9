"""Evaluation of anomaly maps under an explicit, exact protocol (``blindspot evaluate``).

* :mod:`~blindspot.evaluation.options`: every protocol choice, its presets (``benchmark``,
  ``benchmark-compat``, ``brain-mri``) and which options apply to which choices;
* :mod:`~blindspot.evaluation.cases`: the cases to evaluate and the validation hold-out (:class:`Case`,
  :class:`CaseStream`, :func:`split_validation`);
* :mod:`~blindspot.evaluation.protocol`: cases in, every metric out (:func:`evaluate`);
* :mod:`~blindspot.evaluation.sources`: cases from a folder of maps, or maps of a model or a
  baseline on any data source (:class:`MapsFolder`, :class:`OnData`);
* :mod:`~blindspot.evaluation.output`: the result folder (:func:`run_evaluation`).

>>> import numpy as np
>>> from blindspot.evaluation import Case, evaluate, make_options
>>> label = np.zeros((4, 4), bool); label[1, 1] = True
>>> result = evaluate([Case("a", label * 1.0, label)], make_options("benchmark"))
>>> result.metrics["pixel"]["ap"], result.metrics["pixel"]["best_dice"]
(1.0, 1.0)
"""

from blindspot.evaluation.cases import Case, CaseStream, split_validation
from blindspot.evaluation.options import PRESETS, EvaluationOptions, make_options
from blindspot.evaluation.output import run_evaluation, write_evaluation
from blindspot.evaluation.protocol import Evaluation, evaluate
from blindspot.evaluation.sources import MapMaker, MapsFolder, OnData, maps_cases, test_images

__all__ = [
    "PRESETS",
    "Case",
    "CaseStream",
    "Evaluation",
    "EvaluationOptions",
    "MapMaker",
    "MapsFolder",
    "OnData",
    "evaluate",
    "make_options",
    "maps_cases",
    "run_evaluation",
    "split_validation",
    "test_images",
    "write_evaluation",
]
