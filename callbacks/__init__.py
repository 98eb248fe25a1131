"""Lightning callbacks of lightning_split (installed as the package ``lightning_split.callbacks``)."""

from lightning_split.progress import LogProgressBar, SteeringRichProgressBar

from .manifold import ManifoldAnalysisCallback
from .predictions import JsonlPredictionWriter
from .sigterm import StopOnSigterm
from .tradeoff import TradeoffCurveCallback, default_grid

__all__ = [
    "JsonlPredictionWriter",
    "LogProgressBar",
    "ManifoldAnalysisCallback",
    "SteeringRichProgressBar",
    "StopOnSigterm",
    "TradeoffCurveCallback",
    "default_grid",
]
