"""Reusing the frozen lower blocks: capture a block's input once, later run only the blocks above it.

The blocks below the first intervention do not depend on the control, so their output (the input of block
``start``) can be computed once and fed back. :func:`block_io` captures it; :func:`upper_blocks_only` runs
the decoder again with blocks ``0..start-1`` bypassed in place (so per-layer attention types and rotary
tables, picked by a block's index or by its attributes depending on the transformers version, stay as
they are) and with the captured tensor put in as block ``start``'s input. Nothing depends on what the
decoder does to the embeddings before block 0 (Gemma's ``sqrt(hidden_size)`` scaling, GPT-2's position
embeddings): whatever arrives at block ``start`` is replaced.

Whether this is exact for a loaded model is not read off a table: :func:`probe_lower_reuse` runs a short
input through the decoder plainly and through the reuse path and compares the final hidden states. The
result is cached per model instance (per decoder block list).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from .layout import ModelLayout

#: Length of the probe's token sequence.
PROBE_TOKENS = 16


@dataclass(frozen=True)
class LowerReuseProbe:
    """What :func:`probe_lower_reuse` found on a model.

    Attributes:
        exact: running the blocks from ``start`` on a captured block input reproduces the plain forward
            (bit for bit, or within the default ``torch.testing`` tolerance of the model's dtype).
        block_returns_tuple: the decoder blocks return ``(hidden_states, ...)`` (transformers 4.x Gemma,
            GPT-2) rather than the bare tensor; the bypass returns the same form.
        reason: why reuse is not exact (empty when it is).
    """

    exact: bool
    block_returns_tuple: bool
    reason: str = ""


class _StopForward(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden


def _first_hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a block is called with (first positional argument or ``hidden_states=``)."""
    return args[0] if args else kwargs["hidden_states"]


def _block_output_hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def block_io(layout: ModelLayout, layer: int, where: Literal["input", "output"], **decoder_kwargs: Any) -> torch.Tensor:
    """Runs the decoder with ``decoder_kwargs`` up to block ``layer``; returns that block's input or output.

    The blocks above ``layer`` are not run.

    Raises:
        RuntimeError: the decoder forward never called block ``layer``.
    """

    def stop_before(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        raise _StopForward(_first_hidden(args, kwargs))

    def stop_after(_module: nn.Module, _args: tuple, output: torch.Tensor | tuple) -> None:
        raise _StopForward(_block_output_hidden(output))

    block = layout.block(layer)
    if where == "input":
        handle = block.register_forward_pre_hook(stop_before, with_kwargs=True)
    else:
        handle = block.register_forward_hook(stop_after)
    try:
        layout.decoder(**decoder_kwargs)
    except _StopForward as done:
        return done.hidden
    finally:
        handle.remove()
    raise RuntimeError(f"block {layer} was never reached by the decoder forward of {type(layout.decoder).__name__}")


class _Bypassed(nn.Module):
    """Stands in for a lower block whose output is already known: returns its input.

    Attributes it does not have (``attention_type``, ``layer_idx``, ...) are read from the block it
    replaces, so a decoder that consults them keeps working.
    """

    def __init__(self, block: nn.Module, returns_tuple: bool) -> None:
        super().__init__()
        object.__setattr__(self, "_replaced", block)  # not registered: no parameters, no hooks of it fire
        self.returns_tuple = returns_tuple

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_replaced"), name)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor]:  # noqa: D102
        hidden = _first_hidden(args, kwargs)
        return (hidden,) if self.returns_tuple else hidden


@contextmanager
def _bypassed_below(layout: ModelLayout, start: int, lower: torch.Tensor, returns_tuple: bool) -> Iterator[None]:
    """Bypasses blocks ``0..start-1`` and makes ``lower`` the input of block ``start`` for the duration."""
    if not 0 < start < layout.num_layers:
        raise ValueError(f"start={start}: lower-state reuse needs 0 < start < {layout.num_layers} (the block count)")

    def put_lower(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        arriving = _first_hidden(args, kwargs)
        if arriving.shape != lower.shape:
            raise ValueError(
                f"cached lower states have shape {tuple(lower.shape)} but block {start} receives "
                f"{tuple(arriving.shape)}: they were computed for another input"
            )
        if args:
            return (lower, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": lower}

    blocks = layout.blocks
    saved = [blocks[i] for i in range(start)]
    handle = blocks[start].register_forward_pre_hook(put_lower, with_kwargs=True)
    try:
        for i, block in enumerate(saved):
            blocks[i] = _Bypassed(block, returns_tuple)
        yield
    finally:
        handle.remove()
        for i, block in enumerate(saved):
            blocks[i] = block


_PROBES: weakref.WeakKeyDictionary[nn.ModuleList, LowerReuseProbe] = weakref.WeakKeyDictionary()


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Puts every submodule of ``module`` in eval mode (no dropout), restoring each one's mode after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _probe_ids(layout: ModelLayout) -> torch.Tensor:
    embedding = layout.decoder.get_input_embeddings()
    vocab = int(embedding.weight.shape[0])
    return (torch.arange(PROBE_TOKENS, device=embedding.weight.device) * 7 + 1).remainder(vocab).unsqueeze(0)


def _run_probe(layout: ModelLayout) -> LowerReuseProbe:
    if layout.num_layers < 2:
        return LowerReuseProbe(False, False, "the model has a single block: there is nothing below a control")
    start = max(1, layout.num_layers // 2)
    kwargs = {"input_ids": _probe_ids(layout), "use_cache": False}
    returns_tuple: list[bool] = []
    handle = layout.blocks[0].register_forward_hook(lambda _m, _a, out: returns_tuple.append(isinstance(out, tuple)))
    try:
        plain = layout.decoder(**kwargs).last_hidden_state
    finally:
        handle.remove()
    if not returns_tuple:
        return LowerReuseProbe(False, False, "the decoder forward never called block 0")
    try:
        lower = block_io(layout, start, "input", **kwargs)
        with _bypassed_below(layout, start, lower, returns_tuple[0]):
            reused = layout.decoder(**kwargs).last_hidden_state
        torch.testing.assert_close(reused, plain)
    except Exception as err:  # noqa: BLE001 - foreign model code: any failure means "do not reuse"
        return LowerReuseProbe(False, returns_tuple[0], f"{type(err).__name__}: {err}")
    return LowerReuseProbe(True, returns_tuple[0])


def probe_lower_reuse(layout: ModelLayout) -> LowerReuseProbe:
    """Whether running the blocks above ``start`` on a captured block input reproduces the plain forward.

    Runs a :data:`PROBE_TOKENS`-token input through ``layout.decoder`` plainly and through
    :func:`upper_blocks_only` (eval mode, no gradients) and compares the final hidden states. The result is
    cached per model instance; a model where reuse is not exact gets a warning naming the reason.
    """
    probe = _PROBES.get(layout.blocks)
    if probe is None:
        with torch.no_grad(), _eval_mode(layout.decoder):
            probe = _run_probe(layout)
        _PROBES[layout.blocks] = probe
        if not probe.exact:
            warnings.warn(
                f"{type(layout.decoder).__name__}: the frozen lower blocks are recomputed in every pass "
                f"(reusing them is not exact on this model: {probe.reason})",
                stacklevel=2,
            )
    return probe


@contextmanager
def upper_blocks_only(layout: ModelLayout, start: int, lower: torch.Tensor) -> Iterator[None]:
    """Within this context a decoder forward skips blocks ``0..start-1`` and feeds ``lower`` to block ``start``.

    ``lower`` must be :func:`block_io` ``(layout, start, "input", ...)`` of the same input the forward
    gets; the forward may then be called with ``input_ids`` as usual.

    Raises:
        RuntimeError: :func:`probe_lower_reuse` found the reuse not exact on this model.
        ValueError: ``start`` is not in ``[1, num_layers)``.
    """
    probe = probe_lower_reuse(layout)
    if not probe.exact:
        raise RuntimeError(f"lower-state reuse is not exact on this model ({probe.reason}); run all blocks")
    with _bypassed_below(layout, start, lower, probe.block_returns_tuple):
        yield
