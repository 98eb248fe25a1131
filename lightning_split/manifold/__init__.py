"""Measuring the activation manifold the paper only assumes (its Assumptions 4.1 and 4.2).

Unsteered activations of training pairs define the reference at a layer (:mod:`.reference`); every activation
of a sweep is measured against it (:mod:`.measure`): residual outside the top principal subspaces, k-NN
distance in units of the unsteered neighbour distance, shrunk Mahalanobis distance, projection on the
principal direction of the update. :mod:`.relate` ties the distances to the utility drop,
:mod:`.utility_directions` finds the directions that move the utility, :mod:`.plots` and :mod:`.report` show
them, and :mod:`.run_folder` runs it all on a training run's folder (``lightning-split analyze``).
"""

from .measure import LayerMeasures, ManifoldSweep, measure_manifold
from .reference import ManifoldReference, fit_reference
from .relate import MeasureRelation, relate
from .run_folder import AnalysisOptions, analyze_run

__all__ = [
    "AnalysisOptions",
    "LayerMeasures",
    "ManifoldReference",
    "ManifoldSweep",
    "MeasureRelation",
    "analyze_run",
    "fit_reference",
    "measure_manifold",
    "relate",
]
