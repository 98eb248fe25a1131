"""The LightningModules: :class:`SteeringModule` (any objective, any form) and :class:`DiffMeanSteering`."""

from .diffmean import DiffMeanSteering
from .steering_module import SteeringModule

__all__ = ["DiffMeanSteering", "SteeringModule"]
