"""The LightningModule family: :class:`SteeringModule` and one named subclass per method."""

from .methods import DiffMeanSteering, DPOSteering, RePSSteering, SFTSteering, SplitSteering
from .steering_module import SteeringModule

__all__ = ["DPOSteering", "DiffMeanSteering", "RePSSteering", "SFTSteering", "SplitSteering", "SteeringModule"]
