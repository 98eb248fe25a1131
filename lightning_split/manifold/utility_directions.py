"""The utility-relevant directions of a layer: gradients of each pair's utility log-odds along a shift.

For a pair ``i`` and the residual stream after block ``l``, ``gᵢ = ∂ UtilOddsᵢ / ∂δ`` at ``δ = 0``, where ``δ``
is one vector added to that stream at every position of the pair's packed row, on the unsteered model: the
first-order change of the pair's utility log-odds under a vector intervention ``δ`` at that layer. The
utility-relevant subspace is spanned by the top principal directions of the (uncentred) ``gᵢ`` that explain a
given share of ``Σ‖gᵢ‖²``; the paper's Eq. 16 assumes ``ω_uᵀΔh ≈ 0``, i.e. a steering update with little of its
norm in this subspace. A pair whose utility denominator is clamped contributes a zero gradient there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..data.batch import PairBatch
from ..engine import PairScorer, completion_log_probs
from ..metrics.functional import DEFAULT_EPS, Reduction, utility_log_odds
from ..sweep import model_device
from .capture import StreamFn, stream_hooks
from .reference import dims_for


def utility_gradients(
    scorer: PairScorer,
    batches: Iterable[PairBatch],
    layers: Sequence[int],
    reduction: Reduction,
    eps: float = DEFAULT_EPS,
) -> dict[int, torch.Tensor]:
    """``{layer: [N, d]}`` float64 gradients ``gᵢ`` of every pair's utility log-odds (module docstring).

    One forward and one backward pass per batch serve every layer: each gets its own zero shift, so the forward
    is the unsteered one and each shift's gradient is that layer's ``gᵢ``. With ``s = e^{−L_p} + e^{−L_n}`` and
    ``U = log s − log(1 − s)``: ``∂U/∂L_p = −σ(L_n − L_p)·(1 + e^U)`` and ``∂U/∂L_n = −σ(L_p − L_n)·(1 + e^U)``
    (0 where the denominator is clamped); these float64 coefficients weigh the backward pass through the
    differentiable losses.
    """
    device = model_device(scorer)
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for batch in batches:
        batch = batch.to(device)
        packed = scorer.pack(batch)
        shifts = {
            layer: torch.zeros(len(batch), 1, scorer.layout.hidden_size, device=device, requires_grad=True)
            for layer in layers
        }

        def adder(shift: torch.Tensor) -> StreamFn:
            return lambda hidden: hidden + shift.to(hidden.dtype)

        with torch.enable_grad(), stream_hooks(scorer.layout, {layer: adder(s) for layer, s in shifts.items()}):
            lp = completion_log_probs(scorer.layout, scorer.hidden(packed, None, 0), packed)
            l_pos = _nll(lp.logp_pos.double(), lp.len_pos, reduction)
            l_neg = _nll(lp.logp_neg.double(), lp.len_neg, reduction)
            utility, clamped = utility_log_odds(l_pos, l_neg, eps)
            scale = (1 + utility.exp()) * (~clamped)
            share_pos = torch.sigmoid(l_neg - l_pos).detach()
            surrogate = (-share_pos * scale * l_pos - (1 - share_pos) * scale * l_neg).sum()
            grads = torch.autograd.grad(surrogate, list(shifts.values()))
        for layer, grad in zip(shifts, grads):
            out[layer].append(grad[:, 0].to("cpu", torch.float64))
    if not any(out.values()):
        raise ValueError("no pairs to take utility gradients on")
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def _nll(log_likelihood: torch.Tensor, length: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Differentiable ``L`` (summed or per-token mean NLL) from a summed log-likelihood."""
    nll = -log_likelihood
    return nll / length.to(nll.dtype) if reduction == "mean" else nll


def gradient_subspace(gradients: torch.Tensor, level: float = 0.9) -> torch.Tensor:
    """``[d, r]`` orthonormal top principal directions of the uncentred gradients explaining ``level`` of them."""
    eigenvalues, eigenvectors = torch.linalg.eigh(gradients.T @ gradients)
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)
    return eigenvectors[:, : dims_for(eigenvalues, level)]
