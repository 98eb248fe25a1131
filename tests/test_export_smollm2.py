"""Exports of SmolLM2 weight-space controls, loaded by plain transformers and peft, give the framework's logits.

A LoRA (rank 4) and a local-weight control at block 15 with random weights (sized so that ``m = 2`` moves the
next-token log-probabilities by about a nat) are exported at ``m ∈ {0, 1, 2}``: the LoRA as a peft adapter with
``m`` folded into ``lora_alpha``, the local weight as a merged checkpoint and as SVD LoRAs of growing rank. Each
export is compared with the framework's steered model over the whole vocabulary on chat prompts.

Run ``pytest -s tests/test_export_py`` to see the table (docs/interop.md quotes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModelForCausalLM

from lightning_split.artifacts import SteeredModel, load_steered
from lightning_split.data.tokenize import PairTokenizer
from lightning_split.export import export_control
from lightning_split.interventions import form_options
from tests.smollm2_controls import (
    CHAT_PROMPTS,
    GREEDY,
    SCALES,
    greedy_tokens,
    new_control,
    next_log_probs,
    same_prefix,
    save_smollm2_control,
)

pytestmark = pytest.mark.slow

PROMPTS = CHAT_PROMPTS[:3]  # three keep the nine exports quick
WEIGHT_SCALE = {"lora": 0.3, "local_weight": 0.05}


@dataclass
class Gap:
    """One export against the framework at one ``m`` over :data:`PROMPTS` (next-token distributions)."""

    max_abs: float  # max |Δ log p| over the whole vocabulary
    kl: float  # mean KL(framework ‖ export)
    top1: int  # prompts with the same most likely token
    greedy: int  # fewest leading greedy tokens that are the same (of GREEDY)
    moved: float  # mean |log p(m) − log p(0)| of the framework on its top-10: the steering's own size

    def row(self, label: str) -> str:
        return (
            f"{label:<26} max|Δ| {self.max_abs:.2e}  KL {self.kl:.2e}  top-1 {self.top1}/{len(PROMPTS)}  "
            f"greedy {self.greedy}/{GREEDY}  steering moved {self.moved:.3f}"
        )


def _saved(root: Path, form: str, options: dict) -> Path:
    steered = new_control(form_options(form, **options))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in steered.control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * WEIGHT_SCALE[form])
    return save_smollm2_control(root / form, steered, "split")


def _gap(steered: SteeredModel, exported: nn.Module, m: float) -> Gap:
    encoder = PairTokenizer(steered.tokenizer)
    max_abs, kls, top1, greedy, moved = 0.0, [], 0, GREEDY, []

    def ours(ids: torch.Tensor) -> torch.Tensor:
        return steered.logits(ids, m)

    def theirs(ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return exported(input_ids=ids).logits

    for prompt in PROMPTS:
        ids = torch.tensor([encoder.prompt_ids(prompt)])
        a, b, base = next_log_probs(ours(ids)), next_log_probs(theirs(ids)), next_log_probs(steered.logits(ids, 0.0))
        max_abs = max(max_abs, float((a - b).abs().max()))
        kls.append(float((a.exp() * (a - b)).sum()))
        top1 += int(a.argmax() == b.argmax())
        greedy = min(greedy, same_prefix(greedy_tokens(ours, ids[0].tolist()), greedy_tokens(theirs, ids[0].tolist())))
        top = a.topk(10).indices
        moved.append(float((a[top] - base[top]).abs().mean()))
    return Gap(max_abs, sum(kls) / len(kls), top1, greedy, sum(moved) / len(moved))


def _check(gap: Gap, m: float, atol: float) -> None:
    assert gap.max_abs < atol and gap.top1 == len(PROMPTS) and gap.greedy == GREEDY, gap.row(f"m={m}")
    assert m == 0 or gap.moved > 0.1, f"the control barely steers at m={m}: {gap.row('')}"


def test_lora_as_peft_adapter_at_each_m(tmp_path: Path) -> None:
    control_dir = _saved(tmp_path, "lora", {"rank": 4, "alpha": 8.0})
    steered = load_steered(control_dir)
    print()
    for m in SCALES:
        export_control(control_dir, tmp_path / f"peft-{m:g}", multiplier=m)
        base = AutoModelForCausalLM.from_pretrained(steered.model.config._name_or_path)
        adapter = PeftModel.from_pretrained(base, str(tmp_path / f"peft-{m:g}")).eval()
        gap = _gap(steered, adapter, m)
        print(gap.row(f"lora → peft m={m:g}"))
        _check(gap, m, atol=1e-4)


def test_local_weight_as_merged_checkpoint_and_svd_lora(tmp_path: Path) -> None:
    control_dir = _saved(tmp_path, "local_weight", {})
    steered = load_steered(control_dir)
    print()
    for m in SCALES:
        export_control(control_dir, tmp_path / f"merged-{m:g}", multiplier=m)
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / f"merged-{m:g}").eval()
        gap = _gap(steered, merged, m)
        print(gap.row(f"local_weight → merged m={m:g}"))
        _check(gap, m, atol=1e-4)
        del merged
    gaps = []
    for rank in (8, 64, 576):
        result = export_control(control_dir, tmp_path / f"svd-{rank}", multiplier=2.0, svd_rank=rank)
        base = AutoModelForCausalLM.from_pretrained(steered.model.config._name_or_path)
        adapter = PeftModel.from_pretrained(base, str(tmp_path / f"svd-{rank}")).eval()
        gaps.append(_gap(steered, adapter, 2.0))
        error = next(n for n in result.notes if "relative error" in n).split()[-1]
        print(gaps[-1].row(f"local_weight → SVD r={rank} m=2") + f"  ‖ΔW − BA‖/‖ΔW‖ {error}")
    assert gaps[0].max_abs > gaps[1].max_abs > gaps[2].max_abs
    _check(gaps[-1], 2.0, atol=1e-4)
