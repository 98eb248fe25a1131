"""lightning_split: train and evaluate LLM steering controls with PyTorch Lightning.

Every control is a dynamic weight update ``Δh = m·(ΔW h + Δb)`` (:mod:`lightning_split.interventions`,
installed by :func:`lightning_split.steering.steer`), trained by an objective
(:mod:`lightning_split.objectives`) inside one LightningModule (:mod:`lightning_split.models`), and
measured with preference and utility log-odds (:mod:`lightning_split.metrics`).
"""

from .models import DiffMeanSteering, SteeringModule

__version__ = "0.1.0"

__all__ = [
    "DiffMeanSteering",
    "SteeringModule",
    "__version__",
]
