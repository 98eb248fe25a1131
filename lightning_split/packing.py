"""Packing a polarity pair into one sequence: ``[prompt | A_p | A_n]`` with a mask that keeps them apart.

Both completions attend to the shared prompt and to their own earlier tokens, never to each other, and the
not-matching completion's positions restart where the prompt ends. One forward pass of the packed row gives
exactly the two teacher-forced passes ``prompt+A_p`` and ``prompt+A_n``, with the prompt computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data.batch import PairBatch

PROMPT, POS, NEG, PAD = 0, 1, 2, -1


@dataclass
class PackedPairs:
    """Packed rows and the bookkeeping to read completion log-probabilities out of them.

    Attributes:
        input_ids: ``[B, S]`` packed tokens, right-padded.
        position_ids: ``[B, S]`` positions (the not-matching completion restarts after the prompt).
        segments: ``[B, S]`` 0 prompt, 1 matching, 2 not matching, -1 padding.
        lengths: ``[B]`` real tokens per row.
        logit_index: ``[B, N]`` packed positions whose next-token distribution is needed: the last prompt
            token (shared by both completions), then the matching tokens but the last, then the
            not-matching tokens but the last.
        pos_targets, pos_mask: ``[B, Cp]`` matching tokens and their mask.
        neg_targets, neg_mask: ``[B, Cn]`` not-matching tokens and their mask.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    lengths: torch.Tensor
    logit_index: torch.Tensor
    pos_targets: torch.Tensor
    pos_mask: torch.Tensor
    neg_targets: torch.Tensor
    neg_mask: torch.Tensor

    @property
    def pos_columns(self) -> torch.Tensor:
        """Columns of ``logit_index`` predicting each matching token (``[Cp]``)."""
        cp = self.pos_targets.shape[1]
        return torch.arange(cp, device=self.input_ids.device)

    @property
    def neg_columns(self) -> torch.Tensor:
        """Columns of ``logit_index`` predicting each not-matching token (``[Cn]``)."""
        cp, cn = self.pos_targets.shape[1], self.neg_targets.shape[1]
        cols = torch.arange(cn, device=self.input_ids.device) + (cp - 1)
        cols[0] = 0
        return cols


def pack_pairs(batch: PairBatch, pad_id: int = 0) -> PackedPairs:
    """Packs every pair of ``batch`` into one row ``[prompt | A_p | A_n]``."""
    device = batch.prompt_ids.device
    p_len = batch.prompt_mask.sum(1)
    a_len = batch.pos_mask.sum(1)
    b_len = batch.neg_mask.sum(1)
    if bool((p_len == 0).any()) or bool((a_len == 0).any()) or bool((b_len == 0).any()):
        raise ValueError("every pair needs a non-empty prompt and two non-empty completions")
    lengths = p_len + a_len + b_len
    rows, seq = len(batch), int(lengths.max())
    cp, cn = batch.pos_ids.shape[1], batch.neg_ids.shape[1]

    input_ids = torch.full((rows, seq), pad_id, dtype=torch.long, device=device)
    position_ids = torch.zeros((rows, seq), dtype=torch.long, device=device)
    segments = torch.full((rows, seq), PAD, dtype=torch.long, device=device)
    logit_index = torch.zeros((rows, 1 + (cp - 1) + (cn - 1)), dtype=torch.long, device=device)
    for i in range(rows):
        p, a, b = int(p_len[i]), int(a_len[i]), int(b_len[i])
        input_ids[i, :p] = batch.prompt_ids[i, :p]
        input_ids[i, p : p + a] = batch.pos_ids[i, :a]
        input_ids[i, p + a : p + a + b] = batch.neg_ids[i, :b]
        position_ids[i, : p + a] = torch.arange(p + a, device=device)
        position_ids[i, p + a : p + a + b] = torch.arange(p, p + b, device=device)
        segments[i, :p] = PROMPT
        segments[i, p : p + a] = POS
        segments[i, p + a : p + a + b] = NEG
        logit_index[i, 0] = p - 1
        logit_index[i, 1:a] = torch.arange(p, p + a - 1, device=device)
        logit_index[i, cp : cp + b - 1] = torch.arange(p + a, p + a + b - 1, device=device)
    return PackedPairs(
        input_ids=input_ids,
        position_ids=position_ids,
        segments=segments,
        lengths=lengths,
        logit_index=logit_index,
        pos_targets=batch.pos_ids,
        pos_mask=batch.pos_mask,
        neg_targets=batch.neg_ids,
        neg_mask=batch.neg_mask,
    )


def allowed_attention(packed: PackedPairs, sliding_window: int | None = None) -> torch.Tensor:
    """Returns the ``[B, S, S]`` bool matrix of which packed key each query may attend to.

    Causal within a row; a completion sees the prompt and itself, not the other completion; padding is
    never attended (a padded query attends to itself only, so no row is empty). With ``sliding_window``,
    keys further than the window in position are dropped, as in sliding-window attention layers.
    """
    seg = packed.segments
    seq = seg.shape[1]
    idx = torch.arange(seq, device=seg.device)
    causal = (idx[None, :] <= idx[:, None]).unsqueeze(0)
    seg_q, seg_k = seg.unsqueeze(2), seg.unsqueeze(1)
    allowed = causal & ((seg_k == PROMPT) | (seg_k == seg_q)) & (seg_k != PAD) & (seg_q != PAD)
    if sliding_window is not None:
        pos = packed.position_ids
        allowed = allowed & ((pos.unsqueeze(2) - pos.unsqueeze(1)) < sliding_window)
    return allowed | torch.eye(seq, dtype=torch.bool, device=seg.device).unsqueeze(0)
