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
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    pos_ids: torch.Tensor
    pos_mask: torch.Tensor
    neg_ids: torch.Tensor
    neg_mask: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> PairBatch:
        """Moves every tensor to ``device``."""
        return PairBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, rows: torch.Tensor | slice) -> PairBatch:
        """Returns the pairs at ``rows`` (padding is kept)."""
        return PairBatch(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

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
        )


def repeat_batch(batch: PairBatch, times: int) -> PairBatch:
    """Stacks ``times`` copies of ``batch`` (rows ``k·B .. (k+1)·B`` are copy ``k``)."""
    if times == 1:
        return batch
    return PairBatch(**{f.name: torch.cat([getattr(batch, f.name)] * times) for f in fields(batch)})
