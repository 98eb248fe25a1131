"""Lightning callbacks of lightning_split (installed as the package ``lightning_split.callbacks``)."""

from .predictions import JsonlPredictionWriter
from .tradeoff import TradeoffCurveCallback, default_grid

__all__ = ["JsonlPredictionWriter", "TradeoffCurveCallback", "default_grid"]
