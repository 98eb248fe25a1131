"""Per-pair caches of what does not depend on the control: lower-block states and unsteered log-likelihoods.

Both caches are content-addressed: a packed row is keyed by a digest of its real token ids and segment ids
(:func:`row_digests`; the segments fix the positions and the attention mask), and the lower cache adds the
block whose input it stores. A row is reused only when the frozen backbone would see exactly the same
input, whichever split, row index or dataset it comes from; a changed pair is recomputed. A cache belongs
to one backbone: asked about another model object it empties itself first.

Memory: the lower cache holds ``tokens × hidden size`` values per distinct row (about 0.2 MB for a
100-token SmolLM2-135M pair in float32, 0.8 MB for a 7B model in bfloat16), on the device it was computed
on; the reference cache holds two completions' token log-probabilities per row. Neither is bounded by
itself: :class:`~lightning_split.models.steering_module.SteeringModule` empties both when a Trainer run
(fit, validate, test, predict) starts, so they hold at most the distinct pairs of one run.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Hashable

import torch
from torch import nn

from ..engine import PairLogProbs
from ..packing import PackedPairs


def row_digests(packed: PackedPairs) -> list[bytes]:
    """A 16-byte BLAKE2b digest per packed row of its real token ids and segment ids (what fixes its content).

    Hashes the int64 bytes on the CPU (one copy of the two ``[B, S]`` id tensors per batch).
    """
    ids = packed.input_ids.detach().to("cpu", torch.int64).numpy()
    segments = packed.segments.detach().to("cpu", torch.int64).numpy()
    digests = []
    for row_ids, row_segments, n in zip(ids, segments, packed.lengths.tolist()):
        digest = hashlib.blake2b(row_ids[:n].tobytes(), digest_size=16)
        digest.update(row_segments[:n].tobytes())
        digests.append(digest.digest())
    return digests


class _RowCache:
    """Rows keyed by content for one backbone; handing it another backbone empties it."""

    def __init__(self) -> None:
        self._rows: dict[Hashable, tuple[torch.Tensor, ...]] = {}
        self._backbone: weakref.ref[nn.Module] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        """Drops every cached row."""
        self._rows.clear()

    def _bind(self, backbone: nn.Module) -> None:
        if self._backbone is None or self._backbone() is not backbone:
            self.clear()
            self._backbone = weakref.ref(backbone)


class LowerStateCache(_RowCache):
    """Keeps each pair's lower-block hidden states (unpadded) so later passes skip the lower blocks.

    Args:
        device: where cached states live (``None``: where they were computed).
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.device = device

    def states(
        self,
        backbone: nn.Module,
        packed: PackedPairs,
        start: int,
        compute: Callable[[PackedPairs, int], torch.Tensor],
    ) -> torch.Tensor:
        """Returns the ``[B, S, d]`` input of block ``start`` for ``packed``, computing and storing missing rows.

        Args:
            backbone: the frozen model ``compute`` runs (the cache's identity check).
            packed: the packed pairs.
            start: the block whose input is wanted.
            compute: ``compute(packed, start)`` gives the states of every row (e.g. ``PairScorer.lower_states``).
        """
        self._bind(backbone)
        keys = [(start, digest) for digest in row_digests(packed)]
        lengths = packed.lengths.tolist()
        if not all(key in self._rows for key in keys):
            fresh = compute(packed, start)
            for key, row, n in zip(keys, fresh, lengths):
                stored = row[:n].detach()
                self._rows[key] = (stored.to(self.device) if self.device is not None else stored,)
            return fresh
        (first,) = self._rows[keys[0]]
        out = first.new_zeros(len(keys), packed.input_ids.shape[1], first.shape[-1])
        for i, (key, n) in enumerate(zip(keys, lengths)):
            out[i, :n] = self._rows[key][0]
        return out.to(packed.input_ids.device)


class ReferenceCache(_RowCache):
    """Keeps each pair's unsteered per-token log-likelihoods (the reference of RePS, DPO, SPLIT's λ_r)."""

    def logprobs(
        self, backbone: nn.Module, packed: PackedPairs, like: PairLogProbs, compute: Callable[[], PairLogProbs]
    ) -> PairLogProbs:
        """Returns the reference log-probabilities of the pairs ``packed``, shaped like ``like``.

        Args:
            backbone: the frozen model ``compute`` runs (the cache's identity check).
            packed: the packed pairs (their rows are the keys).
            like: log-probabilities of the same pairs whose shapes and masks the result takes.
            compute: gives the unsteered log-probabilities of every pair when one is missing.
        """
        self._bind(backbone)
        keys = row_digests(packed)
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
