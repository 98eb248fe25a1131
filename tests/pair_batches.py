"""Random tokenised polarity-pair batches for engine tests (ragged lengths, right padding)."""

from __future__ import annotations

import torch

from lightning_split.data.batch import PairBatch


def random_pair_batch(
    rows: int = 3, vocab: int = 128, seed: int = 0, prompt=(3, 9), completion=(1, 7), pad_id: int = 0
) -> PairBatch:
    """Pairs with random tokens in ``[3, vocab)`` and random lengths in the given ranges."""
    g = torch.Generator().manual_seed(seed)

    def ragged(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.randint(lo, hi + 1, (rows,), generator=g)
        ids = torch.full((rows, int(lengths.max())), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, n in enumerate(lengths.tolist()):
            ids[i, :n] = torch.randint(3, vocab, (n,), generator=g)
            mask[i, :n] = 1
        return ids, mask

    prompt_ids, prompt_mask = ragged(*prompt)
    pos_ids, pos_mask = ragged(*completion)
    neg_ids, neg_mask = ragged(*completion)
    return PairBatch(prompt_ids, prompt_mask, pos_ids, pos_mask, neg_ids, neg_mask, torch.arange(rows))
