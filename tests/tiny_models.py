"""Tiny randomly initialised causal LMs for tests (no network, no downloads).

Every model has hidden size 64, a small vocabulary and 2-4 layers, and is seeded, so two calls with the
same arguments give identical weights. Use :func:`make_tiny_model` directly or through the
``tiny_model`` fixture in ``conftest.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen3Config,
)

TINY_VOCAB = 128
TINY_HIDDEN = 64
TINY_INTERMEDIATE = 96
TINY_LAYERS = 4

_ROTARY_COMMON: dict[str, Any] = {
    "vocab_size": TINY_VOCAB,
    "hidden_size": TINY_HIDDEN,
    "intermediate_size": TINY_INTERMEDIATE,
    "num_hidden_layers": TINY_LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

_GEMMA_COMMON: dict[str, Any] = {
    **_ROTARY_COMMON,
    "head_dim": 16,
    "sliding_window": 8,
    "query_pre_attn_scalar": 16,
}


def _config(arch: str, overrides: dict[str, Any]) -> PretrainedConfig:
    """Build the tiny config of ``arch`` with ``overrides`` applied."""
    if arch == "llama":
        return LlamaConfig(**{**_ROTARY_COMMON, **overrides})
    if arch == "mistral":
        return MistralConfig(**{**_ROTARY_COMMON, "sliding_window": 8, **overrides})
    if arch == "qwen2":
        return Qwen2Config(**{**_ROTARY_COMMON, **overrides})
    if arch == "qwen3":
        return Qwen3Config(**{**_ROTARY_COMMON, "head_dim": 16, **overrides})
    if arch == "gemma2":
        return Gemma2Config(**{**_GEMMA_COMMON, "final_logit_softcapping": 30.0, **overrides})
    if arch == "gemma3":
        return Gemma3TextConfig(**{**_GEMMA_COMMON, "sliding_window_pattern": 2, **overrides})
    if arch == "gpt2":
        gpt2 = {
            "vocab_size": TINY_VOCAB,
            "n_embd": TINY_HIDDEN,
            "n_layer": TINY_LAYERS,
            "n_head": 4,
            "n_positions": 128,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }
        return GPT2Config(**{**gpt2, **overrides})
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {sorted(TINY_ARCHS)}")


TINY_ARCHS: tuple[str, ...] = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2")


def make_tiny_model(
    arch: str, *, seed: int = 0, attn_implementation: str = "eager", **overrides: Any
) -> PreTrainedModel:
    """Return a tiny randomly initialised causal LM of ``arch`` in eval mode (float32).

    Args:
        arch: one of :data:`TINY_ARCHS` (``"llama"``, ``"mistral"``, ``"qwen2"``, ``"qwen3"``,
            ``"gemma2"``, ``"gemma3"`` for ``Gemma3ForCausalLM``, ``"gpt2"``).
        seed: seed of the random initialisation.
        attn_implementation: attention kernel (``"eager"`` by default, ``"sdpa"`` also works).
        **overrides: config fields replacing the tiny defaults (e.g. ``num_hidden_layers=2``).

    Returns:
        The model, in eval mode. Its parameters keep ``requires_grad=True`` (it is a plain model, not a
        backbone from :func:`lightning_split.backbone.load_backbone`).
    """
    config = _config(arch, overrides)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()
