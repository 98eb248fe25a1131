"""Steered text generation: left-padded prompts, one multiplier per row, stopping at the end of the turn.

:func:`generate_steered` is the one implementation behind ``SteeringModule.generate`` (``predict``) and
:meth:`lightning_split.artifacts.SteeredModel.generate`. Each row of the batch carries its own ``m``, so
several prompts at several multipliers decode together in one ``model.generate`` call; the steered
positions follow the ``positions`` the control was trained with (prompt tokens, generated tokens or both).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from .data.tokenize import PairTokenizer
from .interventions.base import Intervention
from .layout import ModelLayout
from .steering import POSITIONS, Positions, generated_value_for, steer


def stop_token_ids(tokenizer: Any, model: nn.Module) -> list[int]:
    """Ids that end a reply: the tokenizer's EOS, the first token of the end-of-turn text the pairs are trained
    with (``<|im_end|>``, ``<end_of_turn>``) and the EOS ids of the model's generation config."""
    end_of_turn = PairTokenizer(tokenizer).end_of_turn
    stops = set(tokenizer.encode(end_of_turn, add_special_tokens=False)[:1])
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        stops.update(int(i) for i in ([config_eos] if isinstance(config_eos, int) else config_eos))
    return sorted(stops)


def left_pad(
    prompts: Sequence[Sequence[int] | torch.Tensor], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pads token-id prompts into ``[B, T]`` ids and attention mask (1 on real tokens)."""
    lengths = [len(p) for p in prompts]
    if not lengths or min(lengths) == 0:
        raise ValueError(f"generation needs at least one prompt and a token in each (prompt lengths {lengths})")
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros_like(ids)
    for i, (prompt, n) in enumerate(zip(prompts, lengths)):
        ids[i, width - n :] = torch.as_tensor(prompt, dtype=torch.long, device=device)
        attention[i, width - n :] = 1
    return ids, attention


def _prompt_token_mask(attention: torch.Tensor, positions: Positions) -> torch.Tensor | None:
    """Steered prompt positions: all (``None``), the real prompt tokens, or none (steer generated tokens only)."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if positions == "all":
        return None
    return attention.float() if positions == "prompt" else torch.zeros_like(attention, dtype=torch.float32)


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seeds torch's RNG for the body and restores it afterwards (nothing happens for ``seed=None``)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def until_stop(tokens: list[int], stops: Sequence[int]) -> list[int]:
    """``tokens`` up to (not including) the first stop token."""
    return next((tokens[:i] for i, token in enumerate(tokens) if token in stops), tokens)


def generate_steered(
    model: nn.Module,
    tokenizer: Any,
    layout: ModelLayout,
    control: Sequence[Intervention],
    prompts: Sequence[Sequence[int] | torch.Tensor],
    multipliers: torch.Tensor,
    positions: Positions,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int | None = None,
    stopping_criteria: Sequence[StoppingCriteria] = (),
) -> list[str]:
    """Generates a steered reply to each prompt, row ``i`` at multiplier ``multipliers[i]``, in one batch.

    Args:
        model: the causal LM (frozen).
        tokenizer: its tokenizer (pad id, stop ids, decoding).
        layout: the model's :class:`~lightning_split.layout.ModelLayout`.
        control: the interventions.
        prompts: token ids of each prompt (already chat-templated), any lengths.
        multipliers: ``[B]`` the ``m`` of each row (0 gives the unsteered model's reply).
        positions: the steered tokens the control was trained with: ``all``, ``prompt`` or ``completion``.
        max_new_tokens: most generated tokens per row.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (used only with ``do_sample``).
        seed: seeds the sampling (torch's global RNG is restored afterwards); ``None`` leaves it alone.
        stopping_criteria: extra criteria called after every decoding step with the ids so far (a ``[B]`` bool
            result ends rows early, as for ``model.generate``); the end of turn and ``max_new_tokens`` always apply.

    Returns:
        The decoded replies, cut at the first end-of-turn token, special tokens removed.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    device = model.get_input_embeddings().weight.device
    m = torch.as_tensor(multipliers, dtype=torch.float32, device=device).reshape(-1)
    if m.numel() != len(prompts):
        raise ValueError(f"got {m.numel()} multipliers for {len(prompts)} prompts: pass one per row")
    pad_id = PairTokenizer(tokenizer).pad_id
    ids, attention = left_pad(prompts, pad_id, device)
    stops = stop_token_ids(tokenizer, model)
    sampling = {"do_sample": True, "temperature": float(temperature)} if do_sample else {"do_sample": False}
    with (
        torch.no_grad(),
        seeded(seed, device),
        steer(
            layout,
            control,
            m,
            token_mask=_prompt_token_mask(attention, positions),
            generated_value=generated_value_for(positions),
        ),
    ):
        out = model.generate(
            input_ids=ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=stops or None,
            stopping_criteria=StoppingCriteriaList(stopping_criteria),
            **sampling,
        )
    replies = out[:, ids.shape[1] :].tolist()
    return [tokenizer.decode(until_stop(row, stops), skip_special_tokens=True) for row in replies]
