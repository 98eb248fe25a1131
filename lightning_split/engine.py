"""The forward engine: completion log-likelihoods of polarity pairs under a control, computed once.

Three savings over the plain way (two teacher-forced passes per pair, full-vocabulary logits everywhere,
everything recomputed):

1. both completions of a pair share one packed pass and their prompt is computed once
   (:mod:`lightning_split.packing`);
2. the vocabulary projection runs only at the positions that predict completion tokens;
3. the frozen blocks below the first intervention do not depend on the control: their output is computed
   once without gradients (:meth:`PairScorer.lower_states`) and fed back to the upper blocks, across
   multipliers and, through :class:`LowerStateCache`, across epochs, on every model where an exactness
   probe finds this gives the plain result (:mod:`lightning_split.lower_reuse`).

:func:`plain_pair_logprobs` is the plain way, kept as the reference for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .data.batch import PairBatch
from .interventions.base import Intervention
from .layout import ModelLayout
from .lower_reuse import block_io, upper_blocks_only
from .packing import PackedPairs, allowed_attention, pack_pairs
from .steering import Positions, generated_value_for, steer, token_mask_for


@dataclass
class PairLogProbs:
    """Per-token log-probabilities of both completions of each pair.

    Attributes:
        pos: ``[B, Cp]`` log P of each matching token (0 at padding).
        neg: ``[B, Cn]`` log P of each not-matching token (0 at padding).
        pos_mask: ``[B, Cp]`` completion mask of ``A_p``.
        neg_mask: ``[B, Cn]`` completion mask of ``A_n``.
    """

    pos: torch.Tensor
    neg: torch.Tensor
    pos_mask: torch.Tensor
    neg_mask: torch.Tensor

    @property
    def logp_pos(self) -> torch.Tensor:
        """Summed log-likelihood of ``A_p`` per pair."""
        return self.pos.sum(1)

    @property
    def logp_neg(self) -> torch.Tensor:
        """Summed log-likelihood of ``A_n`` per pair."""
        return self.neg.sum(1)

    @property
    def len_pos(self) -> torch.Tensor:
        """Token count of ``A_p`` per pair."""
        return self.pos_mask.sum(1)

    @property
    def len_neg(self) -> torch.Tensor:
        """Token count of ``A_n`` per pair."""
        return self.neg_mask.sum(1)

    def swapped(self) -> PairLogProbs:
        """Exchanges the roles of the two completions ("sub" pairs: ``A_n`` is the target)."""
        return PairLogProbs(self.neg, self.pos, self.neg_mask, self.pos_mask)

    def select(self, rows: slice | torch.Tensor) -> PairLogProbs:
        """Returns the pairs at ``rows``."""
        return PairLogProbs(self.pos[rows], self.neg[rows], self.pos_mask[rows], self.neg_mask[rows])


def attention_mask_for(model: nn.Module, packed: PackedPairs) -> torch.Tensor | dict[str, torch.Tensor]:
    """Returns the 4-D attention mask(s) the model's attention implementation expects for ``packed``.

    Models with several layer types (Gemma-2/3 sliding and full attention) get one mask per type.
    """
    config = model.config
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if "flash" in impl:
        raise ValueError(
            f"attention implementation {impl!r} cannot take the packed pair mask; load the backbone with "
            "attn_implementation='sdpa' or 'eager'"
        )
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:
        dtype = torch.float32

    def to_impl(allowed: torch.Tensor) -> torch.Tensor:
        if impl == "eager":
            mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            return mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)
        return allowed.unsqueeze(1)

    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types and len(set(layer_types)) > 1:
        return {
            kind: to_impl(allowed_attention(packed, window if kind == "sliding_attention" else None))
            for kind in set(layer_types)
        }
    uses_window = window is not None and (
        (layer_types and layer_types[0] == "sliding_attention")
        or (not layer_types and getattr(config, "use_sliding_window", True))
    )
    return to_impl(allowed_attention(packed, window if uses_window else None))


def completion_log_probs(layout: ModelLayout, hidden: torch.Tensor, packed: PackedPairs) -> PairLogProbs:
    """Projects ``hidden`` to the vocabulary only at the completion-predicting positions."""
    index = packed.logit_index
    gathered = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logits = layout.lm_head(gathered).float()
    if layout.final_logit_softcapping:
        cap = layout.final_logit_softcapping
        logits = torch.tanh(logits / cap) * cap
    lse = logits.logsumexp(-1)

    def read(targets: torch.Tensor, mask: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        lg = logits[:, cols]
        tok = lg.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (tok - lse[:, cols]) * mask.to(tok.dtype)

    return PairLogProbs(
        pos=read(packed.pos_targets, packed.pos_mask, packed.pos_columns),
        neg=read(packed.neg_targets, packed.neg_mask, packed.neg_columns),
        pos_mask=packed.pos_mask,
        neg_mask=packed.neg_mask,
    )


class PairScorer:
    """Scores polarity pairs under a control with the packed, lower-reusing forward.

    Args:
        model: the causal LM (frozen).
        layout: its :class:`~lightning_split.layout.ModelLayout`.
        pad_id: token id used to pad packed rows.
        reuse_lower: compute the blocks below the first intervention once, without gradients, when this
            is exact for the model (``layout.lower_layers_reusable``, probed on the model).
    """

    def __init__(self, model: nn.Module, layout: ModelLayout, pad_id: int = 0, reuse_lower: bool = True):
        self.model = model
        self.layout = layout
        self.pad_id = pad_id
        self.reuse_lower = bool(reuse_lower and layout.lower_layers_reusable)

    def pack(self, batch: PairBatch) -> PackedPairs:
        """Packs ``batch`` (see :func:`~lightning_split.packing.pack_pairs`)."""
        return pack_pairs(batch, self.pad_id)

    def start_layer(self, interventions: Sequence[Intervention]) -> int:
        """The first block the control can change (0 when lower reuse is off)."""
        if not self.reuse_lower or not interventions:
            return 0
        return min(iv.layer for iv in interventions)

    @torch.no_grad()
    def lower_states(self, packed: PackedPairs, start: int) -> torch.Tensor:
        """Returns the input of block ``start`` for every packed position (no gradients)."""
        if start == 0:
            return self.layout.decoder.get_input_embeddings()(packed.input_ids)
        return block_io(self.layout, start, "input", **self._decoder_kwargs(packed))

    @torch.no_grad()
    def block_outputs(self, packed: PackedPairs, layer: int) -> torch.Tensor:
        """Returns the residual stream after block ``layer`` (unsteered) for every packed position."""
        return block_io(self.layout, layer, "output", **self._decoder_kwargs(packed))

    def _decoder_kwargs(self, packed: PackedPairs) -> dict[str, object]:
        return {
            "input_ids": packed.input_ids,
            "attention_mask": attention_mask_for(self.model, packed),
            "position_ids": packed.position_ids,
            "use_cache": False,
        }

    def hidden(self, packed: PackedPairs, lower: torch.Tensor | None, start: int) -> torch.Tensor:
        """Runs the blocks from ``start`` on ``lower`` (all blocks, the plain way, if ``lower`` is None).

        Returns the final hidden states.
        """
        if lower is None:
            return self.layout.decoder(**self._decoder_kwargs(packed)).last_hidden_state
        with upper_blocks_only(self.layout, start, lower):
            return self.layout.decoder(**self._decoder_kwargs(packed)).last_hidden_state

    def score(
        self,
        batch: PairBatch,
        interventions: Sequence[Intervention] = (),
        multiplier: torch.Tensor | float = 0.0,
        positions: Positions = "all",
        lower: torch.Tensor | None = None,
        ablate: torch.Tensor | None = None,
    ) -> PairLogProbs:
        """Completion log-probabilities of every pair of ``batch`` with the control at ``multiplier``.

        Args:
            batch: the pairs.
            interventions: the control (empty: the base model).
            multiplier: ``[B]`` per-example ``m`` or one float.
            positions: which tokens are steered.
            lower: precomputed :meth:`lower_states` of ``batch`` packed (computed here if needed).
            ablate: ``[B]`` rows that get the projection-out update (RePS vector "sub" pairs).
        """
        return self.score_packed(self.pack(batch), interventions, multiplier, positions, lower, ablate)

    def score_packed(
        self,
        packed: PackedPairs,
        interventions: Sequence[Intervention] = (),
        multiplier: torch.Tensor | float = 0.0,
        positions: Positions = "all",
        lower: torch.Tensor | None = None,
        ablate: torch.Tensor | None = None,
    ) -> PairLogProbs:
        """:meth:`score` for pairs that are already packed."""
        start = self.start_layer(interventions)
        if start > 0 and lower is None:
            lower = self.lower_states(packed, start)
        with steer(
            self.layout,
            interventions,
            multiplier,
            token_mask=token_mask_for(packed.segments, positions),
            generated_value=generated_value_for(positions),
            ablate=ablate,
        ):
            hidden = self.hidden(packed, lower if start > 0 else None, start)
        return completion_log_probs(self.layout, hidden, packed)


def plain_pair_logprobs(
    model: nn.Module,
    layout: ModelLayout,
    batch: PairBatch,
    interventions: Sequence[Intervention] = (),
    multiplier: torch.Tensor | float = 0.0,
    positions: Positions = "all",
    pad_id: int = 0,
) -> PairLogProbs:
    """The plain way: a separate full forward per completion, full-vocabulary logits, nothing reused."""

    def one(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows = len(batch)
        p_len, c_len = batch.prompt_mask.sum(1), mask.sum(1)
        seq = int((p_len + c_len).max())
        input_ids = torch.full((rows, seq), pad_id, dtype=torch.long, device=ids.device)
        attn = torch.zeros((rows, seq), dtype=torch.long, device=ids.device)
        segments = torch.full((rows, seq), -1, dtype=torch.long, device=ids.device)
        for i in range(rows):
            p, c = int(p_len[i]), int(c_len[i])
            input_ids[i, :p] = batch.prompt_ids[i, :p]
            input_ids[i, p : p + c] = ids[i, :c]
            attn[i, : p + c] = 1
            segments[i, :p] = 0
            segments[i, p : p + c] = 1
        with steer(
            layout,
            interventions,
            multiplier,
            token_mask=token_mask_for(segments, positions),
            generated_value=generated_value_for(positions),
        ):
            logits = model(input_ids=input_ids, attention_mask=attn, use_cache=False).logits.float()
        logp = torch.log_softmax(logits, -1)
        out = torch.zeros(ids.shape, dtype=logp.dtype, device=ids.device)
        for i in range(rows):
            p, c = int(p_len[i]), int(c_len[i])
            out[i, :c] = logp[i, p - 1 : p + c - 1].gather(-1, ids[i, :c].unsqueeze(-1)).squeeze(-1)
        return out

    return PairLogProbs(
        pos=one(batch.pos_ids, batch.pos_mask),
        neg=one(batch.neg_ids, batch.neg_mask),
        pos_mask=batch.pos_mask,
        neg_mask=batch.neg_mask,
    )
