"""Measuring the activation manifold the paper only assumes (its Assumptions 4.1 and 4.2).

Unsteered activations of training pairs define the reference at a layer (:mod:`.reference`); every activation
of a sweep is measured against it (:mod:`.measure`): residual outside the top principal subspaces, k-NN
distance in units of the unsteered neighbour distance, shrunk Mahalanobis distance, projection on the
principal direction of the update. :mod:`.relate` ties the distances to the utility drop,
:mod:`.utility_directions` finds the directions that move the utility, :mod:`.plots` and :mod:`.report` show
them (:mod:`.tables` holds the report's tables as values), and :mod:`.run_folder` runs it all on a training run's
folder (``lightning-split analyze``) or on a control in memory (:func:`.run_folder.analyze_control`).
"""

from .measure import LayerMeasures, ManifoldSweep, measure_manifold
from .reference import ManifoldReference, fit_reference
from .relate import MeasureRelation, relate
from .run_folder import AnalysedControl, AnalysisOptions, analyze_control, analyze_run, measured_layers
from .tables import ReportTable, distance_table, fit_table, relation_table

__all__ = [
    "AnalysedControl",
    "AnalysisOptions",
    "LayerMeasures",
    "ManifoldReference",
    "ManifoldSweep",
    "MeasureRelation",
    "ReportTable",
    "analyze_control",
    "analyze_run",
    "distance_table",
    "fit_table",
    "fit_reference",
    "measure_manifold",
    "measured_layers",
    "relate",
    "relation_table",
]
