"""Analysis of multiplier sweeps: trade-off curves, the paper's validity-decay fits, reports and plots."""

from lightning_split.analysis.curve import COLUMNS, TradeoffCurve
from lightning_split.analysis.fit import CurveFit, RQDecay, fit_preference, fit_utility, r2_on
from lightning_split.analysis.plots import plot_curve, plot_preference, plot_tradeoff, plot_utility
from lightning_split.analysis.report import Selection, best_multiplier, fit_curve, write_report

__all__ = [
    "COLUMNS",
    "CurveFit",
    "RQDecay",
    "Selection",
    "TradeoffCurve",
    "best_multiplier",
    "fit_curve",
    "fit_preference",
    "fit_utility",
    "plot_curve",
    "plot_preference",
    "plot_tradeoff",
    "plot_utility",
    "r2_on",
    "write_report",
]
