"""lightning_split: train and evaluate LLM steering controls with PyTorch Lightning.

Every control is a dynamic weight update ``Δh = m·(ΔW h + Δb)`` (:mod:`lightning_split.interventions`,
installed by :func:`lightning_split.steering.steer`), trained by an objective
(:mod:`lightning_split.objectives`) inside one LightningModule (:mod:`lightning_split.models`), and
measured with preference and utility log-odds (:mod:`lightning_split.metrics`).
"""

import logging

# bitsandbytes logs this on import when the optional `kernels` package is absent, then uses its own CPU code.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")
)

from .models import DiffMeanSteering, SteeringModule  # noqa: E402  (after the filter: it imports bitsandbytes)

__version__ = "0.1.0"

__all__ = [
    "DiffMeanSteering",
    "SteeringModule",
    "__version__",
]
