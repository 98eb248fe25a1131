"""Per-pair caches of what does not depend on the control: lower-block states and unsteered log-likelihoods.

Both are keyed by the pair's ``index`` inside its split and are exact: the frozen blocks below the first
intervention and the unsteered model give the same values every epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..engine import PairLogProbs
from ..packing import PackedPairs


class LowerStateCache:
    """Keeps each pair's lower-block hidden states (unpadded) so later epochs skip the lower blocks.

    Args:
        device: where cached states live (``None``: where they were computed).
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self._rows: dict[tuple[str, int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        """Drops every cached state."""
        self._rows.clear()

    def states(
        self,
        split: str,
        index: torch.Tensor,
        packed: PackedPairs,
        start: int,
        compute: Callable[[PackedPairs, int], torch.Tensor],
    ) -> torch.Tensor:
        """Returns the ``[B, S, d]`` lower states of ``packed``, computing and storing missing rows."""
        keys = [(split, int(i), start) for i in index.tolist()]
        lengths = packed.lengths.tolist()
        if not all(key in self._rows for key in keys):
            fresh = compute(packed, start)
            for key, row, n in zip(keys, fresh, lengths):
                stored = row[:n].detach()
                self._rows[key] = stored.to(self.device) if self.device is not None else stored
            return fresh
        first = self._rows[keys[0]]
        out = first.new_zeros(len(keys), packed.input_ids.shape[1], first.shape[-1])
        for i, (key, n) in enumerate(zip(keys, lengths)):
            out[i, :n] = self._rows[key]
        return out.to(packed.input_ids.device)


class ReferenceCache:
    """Keeps each pair's unsteered per-token log-likelihoods (the reference of RePS, DPO, SPLIT's λ_r)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def logprobs(
        self, split: str, index: torch.Tensor, like: PairLogProbs, compute: Callable[[], PairLogProbs]
    ) -> PairLogProbs:
        """Returns the reference log-probabilities of the pairs ``index``, shaped like ``like``."""
        keys = [(split, int(i)) for i in index.tolist()]
        if not all(key in self._rows for key in keys):
            fresh = compute()
            rows = zip(keys, fresh.pos.detach(), fresh.neg.detach(), fresh.len_pos.tolist(), fresh.len_neg.tolist())
            for key, pos, neg, n_pos, n_neg in rows:
                self._rows[key] = (pos[:n_pos], neg[:n_neg])
            return PairLogProbs(fresh.pos.detach(), fresh.neg.detach(), fresh.pos_mask, fresh.neg_mask)
        pos, neg = torch.zeros_like(like.pos), torch.zeros_like(like.neg)
        for i, key in enumerate(keys):
            cached_pos, cached_neg = self._rows[key]
            pos[i, : len(cached_pos)] = cached_pos
            neg[i, : len(cached_neg)] = cached_neg
        return PairLogProbs(pos.detach(), neg.detach(), like.pos_mask, like.neg_mask)
