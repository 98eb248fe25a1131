"""The tensor form of a batch of polarity pairs, shared by the data, the forward engine and the metrics."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class PairBatch:
    """A batch of tokenised polarity pairs.

    Prompts and completions are kept apart so that the forward engine can compute a pair's shared prompt
    once and put both completions through the same pass. Every tensor is right-padded.

    Attributes:
        prompt_ids: ``[B, P]`` chat-templated prompt tokens (with the generation prompt).
        prompt_mask: ``[B, P]`` 1 for real prompt tokens, 0 for padding.
        pos_ids: ``[B, Cp]`` tokens of the matching completion ``A_p`` (end-of-turn text included).
        pos_mask: ``[B, Cp]`` 1 for real completion tokens: the completion-only loss mask of ``A_p``.
        neg_ids: ``[B, Cn]`` tokens of the not-matching completion ``A_n``.
        neg_mask: ``[B, Cn]`` the completion-only loss mask of ``A_n``.
        index: ``[B]`` row index of each pair inside its split (stable across epochs; seeds the multiplier draws).
        answer_class: ``[B]`` class id of each pair's matching answer
            (:mod:`~lightning_split.data.answers`; ``-1`` for free-text answers), or ``None`` when unknown.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    pos_ids: torch.Tensor
    pos_mask: torch.Tensor
    neg_ids: torch.Tensor
    neg_mask: torch.Tensor
    index: torch.Tensor
    answer_class: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> PairBatch:
        """Moves every tensor to ``device``."""
        return PairBatch(**{name: value.to(device) for name, value in _tensors(self).items()})

    def select(self, rows: torch.Tensor | slice) -> PairBatch:
        """Returns the pairs at ``rows`` (padding is kept)."""
        return PairBatch(**{name: value[rows] for name, value in _tensors(self).items()})

    def swapped(self) -> PairBatch:
        """Returns the batch with matching and not-matching completions exchanged ("sub" pairs)."""
        return PairBatch(
            prompt_ids=self.prompt_ids,
            prompt_mask=self.prompt_mask,
            pos_ids=self.neg_ids,
            pos_mask=self.neg_mask,
            neg_ids=self.pos_ids,
            neg_mask=self.pos_mask,
            index=self.index,
            answer_class=self.answer_class,
        )


def repeat_batch(batch: PairBatch, times: int) -> PairBatch:
    """Stacks ``times`` copies of ``batch`` (rows ``k·B .. (k+1)·B`` are copy ``k``)."""
    if times == 1:
        return batch
    return PairBatch(**{name: torch.cat([value] * times) for name, value in _tensors(batch).items()})


def _tensors(batch: PairBatch) -> dict[str, torch.Tensor]:
    """The batch's tensors by field name (an unknown ``answer_class`` is left out)."""
    return {f.name: getattr(batch, f.name) for f in fields(batch) if getattr(batch, f.name) is not None}
