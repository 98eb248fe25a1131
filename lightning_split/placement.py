"""Where and in which dtype the frozen backbone lives, given the Lightning trainer it runs under.

The backbone is loaded by :class:`~lightning_split.models.SteeringModule` itself and kept out of the
LightningModule's module tree, so Lightning never moves it (``.to(device)`` is refused for 8-bit models),
never casts it (the ``*-true`` precision plugins call ``module.to(dtype)``), DDP never broadcasts or wraps it,
and checkpoints never contain it. These functions decide what Lightning would otherwise have decided:

- :func:`backbone_device_map`: one full copy per process on that process's device (``{"": local_rank}`` on
  GPU, ``"cpu"`` on CPU), never ``"auto"`` (which would silently shard one model over the GPUs of a DDP run);
- :func:`backbone_dtype`: the backbone dtype implied by ``trainer.precision`` (``bf16-true``/``bf16-mixed``
  give a bf16 backbone; the control stays float32);
- :func:`check_precision_plugin`: refuses Lightning's ``BitsandbytesPrecision`` plugin, which would quantize
  the trainable control (the backbone is quantized by ``quantization=``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

_HALF_PRECISIONS = {"bf16-true": "bfloat16", "bf16-mixed": "bfloat16", "16-true": "float16", "16-mixed": "float16"}


def backbone_device_map(device: torch.device | str, quantized: bool) -> dict[str, Any] | str | None:
    """The ``device_map`` that puts a full copy of the backbone on ``device`` (this process's root device).

    Args:
        device: the strategy's root device (``cuda:<local_rank>`` under DDP on GPUs, ``cpu`` on CPU).
        quantized: whether bitsandbytes loads it (bitsandbytes needs an explicit map).

    Returns:
        ``None`` for an unquantized model on CPU (transformers' default placement), ``"cpu"`` for a quantized
        one, ``{"": index}`` on an accelerator.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu" if quantized else None
    if device.type == "cuda":
        return {"": device.index if device.index is not None else torch.cuda.current_device()}
    return {"": str(device)}


def backbone_dtype(dtype: str, precision: str | None) -> str:
    """The backbone dtype for the model's ``dtype`` option under the trainer's ``precision``.

    ``bf16-true``/``bf16-mixed`` (``16-true``/``16-mixed``) load the backbone in bfloat16 (float16) when
    ``dtype`` is left at ``float32`` or ``auto``; the same half dtype is accepted; a different one is refused.
    Other precisions keep ``dtype``.

    Raises:
        ValueError: ``dtype`` contradicts ``precision`` (e.g. ``float16`` with ``bf16-true``).
    """
    half = _HALF_PRECISIONS.get(str(precision))
    if half is None or dtype == half:
        return dtype
    if dtype in ("float32", "auto"):
        log.info("trainer precision %s: loading the backbone in %s (the control stays float32)", precision, half)
        return half
    raise ValueError(
        f"model dtype={dtype!r} contradicts trainer precision={precision!r} (which computes in {half}); "
        f"set model.dtype to {half!r} or float32, or change trainer.precision"
    )


def check_precision_plugin(trainer: Any, quantization: str | None) -> None:
    """Refuses Lightning's bitsandbytes precision plugin.

    The backbone is quantized when it is loaded (``quantization: nf4 | nf4-dq | int8``). The plugin would
    replace the ``nn.Linear`` layers of the LightningModule, which with this design are the trainable control's
    (the backbone is not in the module tree), and on top of an already quantized backbone it is the size-mismatch
    trap users hit (pytorch-lightning #19732).

    Raises:
        ValueError: the trainer uses ``BitsandbytesPrecision``.
    """
    from lightning.pytorch.plugins.precision import BitsandbytesPrecision

    plugin = getattr(trainer, "precision_plugin", None)
    if not isinstance(plugin, BitsandbytesPrecision):
        return
    both = f" on top of model.init_args.backbone_options.quantization={quantization!r}" if quantization else ""
    raise ValueError(
        f"trainer uses Lightning's BitsandbytesPrecision plugin{both}: lightning_split quantizes the "
        "frozen backbone when loading it and keeps the trained control in float32. Remove the plugin from "
        "trainer.plugins/trainer.precision and set model.init_args.backbone_options.quantization to 'nf4', "
        "'nf4-dq' or 'int8' instead."
    )
