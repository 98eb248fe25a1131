"""Models, tokenizer and data for ``scripts/gpu_check.py``: everything is built here, nothing is downloaded.

- :func:`toy_tokenizer`: a word-level tokenizer of any vocabulary size with a ChatML-like chat template, so
  ``load_backbone``, the data module and steered generation run on random models. Every id decodes to its own
  word, so equal decoded replies mean equal greedy tokens.
- :func:`tiny_backbone_folder`: ``tests/tiny_models.py``'s tiny Llama with that tokenizer, saved as a model
  folder (the way every backbone is loaded), and a pairs file for the data module.
- :data:`LLAMA_7B` and :data:`SMOLLM2_135M`: the shapes of a 7B Llama and of SmolLM2-135M for randomly
  initialised stand-ins built straight on the device (:func:`random_llama`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast

LLAMA_7B: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
}
"""Llama-2-7B's shape (6.74 B parameters)."""

SMOLLM2_135M: dict[str, Any] = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
}
"""SmolLM2-135M-Instruct's shape (its config.json): the same arithmetic per token as the real model."""

TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 256,
}
"""The smoke mode's stand-in for both shapes (``tests/tiny_models.py``'s sizes)."""

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant")
"""The first ids of :func:`toy_tokenizer` (pad 0, BOS 1, EOS 2: the tiny models' ids); words follow."""

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def toy_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of ``vocab_size`` ids: :data:`SPECIALS`, then the words ``w9``, ``w10``, …

    Raises:
        ValueError: ``vocab_size`` leaves no room for words.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    if vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size must exceed {len(SPECIALS)} (the special tokens), got {vocab_size}")
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def words(rng: random.Random, count: int, vocab_size: int) -> str:
    """``count`` random words of :func:`toy_tokenizer`'s vocabulary, space-separated."""
    return " ".join(f"w{rng.randrange(len(SPECIALS), vocab_size)}" for _ in range(count))


def write_pairs(path: Path, vocab_size: int, counts: dict[str, int], seed: int = 0) -> Path:
    """A polarity-pair JSONL of random words with a ``split`` field (``counts``: rows per split)."""
    rng = random.Random(seed)
    rows = [
        {
            "question": words(rng, rng.randint(4, 10), vocab_size),
            "matching": words(rng, rng.randint(1, 4), vocab_size),
            "not_matching": words(rng, rng.randint(1, 4), vocab_size),
            "split": split,
        }
        for split, count in counts.items()
        for _ in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def tiny_backbone_folder(folder: Path) -> tuple[Path, Path]:
    """Saves the tiny Llama of ``tests/tiny_models.py`` with :func:`toy_tokenizer` and writes a pairs file.

    Returns:
        ``(model folder, pairs JSONL)``: 8 train, 4 validation and 4 test pairs.
    """
    from tests.tiny_models import TINY_VOCAB, make_tiny_model

    model_dir = folder / "tiny-llama"
    make_tiny_model("llama", max_position_embeddings=256).save_pretrained(model_dir)
    toy_tokenizer(TINY_VOCAB).save_pretrained(model_dir)
    pairs = write_pairs(folder / "pairs.jsonl", TINY_VOCAB, {"train": 8, "validation": 4, "test": 4})
    return model_dir, pairs


def random_llama(shape: dict[str, Any], device: torch.device, dtype: torch.dtype, **overrides: Any) -> PreTrainedModel:
    """A randomly initialised Llama of ``shape`` (with ``overrides``) built directly on ``device``, frozen."""
    config = LlamaConfig(**{**shape, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, **overrides})
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.requires_grad_(False).eval()
