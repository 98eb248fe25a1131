"""Where steering goes inside a causal LM: the decoder stack, its blocks and their MLP down-projections.

:func:`discover_layout` inspects a loaded Hugging Face model and returns a :class:`ModelLayout`. Known
architectures (Llama, Mistral, Qwen2, Qwen3, Gemma-2, Gemma-3 text, GPT-2) are found from
``config.model_type``; any other model works through the ``blocks_path=`` / ``down_proj_path=`` override.

Whether the frozen blocks below a control can be computed once and reused
(``ModelLayout.lower_layers_reusable``) is decided by an exactness probe on the loaded model
(:func:`lightning_split.lower_reuse.probe_lower_reuse`), not by architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from transformers import PreTrainedModel

from .lower_reuse import probe_lower_reuse


class UnsupportedArchitectureError(ValueError):
    """The layout of a model could not be discovered; pass ``blocks_path=`` and ``down_proj_path=``."""


@dataclass(frozen=True)
class _ArchSpec:
    """How a known architecture is laid out (paths relative to the model root / to a block)."""

    decoder_path: str
    blocks_attr: str
    down_proj_path: str


_ROTARY = _ArchSpec("model", "layers", "mlp.down_proj")

#: Known architectures by ``config.model_type``.
KNOWN_ARCHITECTURES: dict[str, _ArchSpec] = {
    "llama": _ROTARY,
    "mistral": _ROTARY,
    "qwen2": _ROTARY,
    "qwen3": _ROTARY,
    "gemma2": _ROTARY,
    "gemma3_text": _ROTARY,
    "gpt2": _ArchSpec("transformer", "h", "mlp.c_proj"),
}


@dataclass(eq=False)
class ModelLayout:
    """Where steering goes in a loaded causal LM.

    Attributes:
        model_type: ``config.model_type`` of the model (``"custom"`` style types are kept as they are).
        decoder: the inner stack module whose forward accepts ``inputs_embeds`` (``model.model`` for
            Llama-style models, ``model.transformer`` for GPT-2).
        blocks: the decoder blocks, ``getattr(decoder, blocks_attr)``.
        blocks_attr: attribute name of ``blocks`` on ``decoder`` (``"layers"`` or ``"h"``).
        down_proj_path: dotted path of the MLP down-projection relative to a block (``"mlp.down_proj"``,
            ``"mlp.c_proj"`` for GPT-2).
        lm_head: the output projection to the vocabulary.
        final_logit_softcapping: Gemma-2/3 ``tanh`` soft cap of the logits, ``None`` when absent.
        num_layers: number of decoder blocks.
        hidden_size: width of the residual stream.
        intermediate_size: input width of the down-projection (GPT-2: ``n_inner`` or ``4 * n_embd``).
        down_proj_conv1d: the down-projection is a GPT-2 style ``Conv1D`` whose weight is stored
            ``[in, out]`` instead of ``nn.Linear``'s ``[out, in]``.
    """

    model_type: str
    decoder: nn.Module = field(repr=False)
    blocks: nn.ModuleList = field(repr=False)
    blocks_attr: str
    down_proj_path: str
    lm_head: nn.Module = field(repr=False)
    final_logit_softcapping: float | None
    num_layers: int
    hidden_size: int
    intermediate_size: int
    down_proj_conv1d: bool = False

    @property
    def lower_layers_reusable(self) -> bool:
        """Whether a block's input can be computed once and the blocks above it rerun on it exactly.

        Decided by :func:`~lightning_split.lower_reuse.probe_lower_reuse` on first access (a short forward
        of the model), then cached for the model instance.
        """
        return probe_lower_reuse(self).exact

    def block(self, layer: int) -> nn.Module:
        """Return decoder block ``layer`` (0-based).

        Raises:
            IndexError: ``layer`` is outside ``[0, num_layers)``.
        """
        if not 0 <= layer < self.num_layers:
            raise IndexError(
                f"layer {layer} out of range: the model has {self.num_layers} blocks (0..{self.num_layers - 1})"
            )
        return self.blocks[layer]

    def down_proj(self, layer: int) -> nn.Module:
        """Return the MLP down-projection of block ``layer`` (maps intermediate -> hidden)."""
        return self.block(layer).get_submodule(self.down_proj_path)


def middle_layer(layout: ModelLayout) -> int:
    """Return the middle block index, ``num_layers // 2`` (the default steering layer)."""
    return layout.num_layers // 2


def _unwrap(model: nn.Module) -> nn.Module:
    """Return the transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _override_hint(model: nn.Module, model_type: str | None) -> str:
    """The text telling users how to describe an unknown model by hand."""
    return (
        f"{type(model).__name__} (model_type={model_type!r}); known types: {sorted(KNOWN_ARCHITECTURES)}. "
        "Describe it by hand with discover_layout(model, blocks_path=..., down_proj_path=...): "
        "blocks_path= is the dotted path from the model root to the nn.ModuleList of decoder blocks "
        "(e.g. 'model.layers'), down_proj_path= the dotted path from a block to its MLP down-projection "
        "(e.g. 'mlp.down_proj')."
    )


def _split_blocks_path(model: nn.Module, blocks_path: str) -> tuple[nn.Module, str]:
    """Resolve ``blocks_path`` into ``(decoder, blocks_attr)``."""
    decoder_path, _, blocks_attr = blocks_path.rpartition(".")
    try:
        decoder = model.get_submodule(decoder_path) if decoder_path else model
    except AttributeError as err:
        raise UnsupportedArchitectureError(
            f"blocks_path={blocks_path!r}: no module {decoder_path!r} in the model"
        ) from err
    return decoder, blocks_attr


def _down_proj_width(module: nn.Module, conv1d: bool) -> int | None:
    """Input width of a down-projection module, when it can be read off it."""
    in_features = getattr(module, "in_features", None)
    if isinstance(in_features, int):
        return in_features
    weight = getattr(module, "weight", None)
    if conv1d and weight is not None and weight.ndim == 2:
        return int(weight.shape[0])
    return None


def discover_layout(
    model: PreTrainedModel | nn.Module,
    blocks_path: str | None = None,
    down_proj_path: str | None = None,
) -> ModelLayout:
    """Find the decoder stack, blocks, down-projections and output head of a causal LM.

    Args:
        model: a loaded causal LM (a PEFT wrapper is unwrapped first).
        blocks_path: override: dotted path from the model root to the ``nn.ModuleList`` of decoder blocks
            (e.g. ``"model.layers"``); its parent module is taken as the decoder.
        down_proj_path: override: dotted path from a block to its MLP down-projection
            (e.g. ``"mlp.down_proj"``).

    Returns:
        The :class:`ModelLayout`.

    Raises:
        UnsupportedArchitectureError: the architecture is unknown and an override is missing, or a path
            does not lead to the expected modules. The message names ``blocks_path=`` and
            ``down_proj_path=`` and the model class.
    """
    model = _unwrap(model)
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    model_type = getattr(text_config, "model_type", None)
    spec = KNOWN_ARCHITECTURES.get(model_type or "")

    if spec is None and (blocks_path is None or down_proj_path is None):
        missing = " and ".join(
            n for n, v in (("blocks_path=", blocks_path), ("down_proj_path=", down_proj_path)) if v is None
        )
        raise UnsupportedArchitectureError(
            f"Unsupported architecture, {missing} missing: {_override_hint(model, model_type)}"
        )

    if blocks_path is None:
        assert spec is not None
        blocks_path = f"{spec.decoder_path}.{spec.blocks_attr}"
    decoder, blocks_attr = _split_blocks_path(model, blocks_path)
    blocks = getattr(decoder, blocks_attr, None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise UnsupportedArchitectureError(
            f"blocks_path={blocks_path!r} does not lead to a non-empty nn.ModuleList of decoder blocks in "
            + _override_hint(model, model_type)
        )

    down_path = down_proj_path if down_proj_path is not None else spec.down_proj_path  # type: ignore[union-attr]
    try:
        first_down = blocks[0].get_submodule(down_path)
    except AttributeError as err:
        raise UnsupportedArchitectureError(
            f"down_proj_path={down_path!r} is not a submodule of block 0 ({type(blocks[0]).__name__}) in "
            + _override_hint(model, model_type)
        ) from err
    conv1d = type(first_down).__name__ == "Conv1D"

    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if lm_head is None:
        lm_head = getattr(model, "lm_head", None)
    if lm_head is None:
        raise UnsupportedArchitectureError(f"no output head (lm_head) found on {type(model).__name__}")

    hidden_size = getattr(text_config, "hidden_size", None) or getattr(text_config, "n_embd", None)
    intermediate = getattr(text_config, "intermediate_size", None)
    if model_type == "gpt2":
        intermediate = getattr(text_config, "n_inner", None) or 4 * int(hidden_size)
    if intermediate is None:
        intermediate = _down_proj_width(first_down, conv1d)
    if hidden_size is None or intermediate is None:
        raise UnsupportedArchitectureError(
            f"cannot read hidden/intermediate sizes of {_override_hint(model, model_type)}"
        )

    softcap = getattr(text_config, "final_logit_softcapping", None)
    return ModelLayout(
        model_type=str(model_type),
        decoder=decoder,
        blocks=blocks,
        blocks_attr=blocks_attr,
        down_proj_path=down_path,
        lm_head=lm_head,
        final_logit_softcapping=float(softcap) if softcap is not None else None,
        num_layers=len(blocks),
        hidden_size=int(hidden_size),
        intermediate_size=int(intermediate),
        down_proj_conv1d=conv1d,
    )
