"""Steered generation: every (prompt, multiplier) row in one batch equals one multiplier at a time, m = 0 is the
unsteered backbone, replies stop at the end of the turn, and the training module shares the same path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_split import SteeringModule
from lightning_split.artifacts import SteeredModel
from lightning_split.backbone import load_backbone
from lightning_split.data.datamodule import PairCollator
from lightning_split.data.pairs import PolarityPair
from lightning_split.data.tokenize import PairTokenizer
from lightning_split.generation import stop_token_ids
from lightning_split.interventions import VectorOptions, build_control
from lightning_split.layout import discover_layout

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["Hi", "Write one sentence about the sea, please, and make it a calm one."]
GRID = [0.0, 6.0, -6.0]
NEW = 8


def _steered(backbone_dir: Path, positions: str) -> SteeredModel:
    model, tokenizer = load_backbone(str(backbone_dir))
    layout = discover_layout(model)
    control = build_control(VectorOptions(init_std=0.0), layout, [1])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return SteeredModel(model, tokenizer, layout, control, {"positions": positions})


@pytest.mark.parametrize("positions", ["all", "prompt", "completion"])
def test_one_batch_of_every_multiplier_equals_one_multiplier_at_a_time(tiny_backbone_dir, positions: str) -> None:
    steered = _steered(tiny_backbone_dir, positions)
    batched = steered.generate(PROMPTS, GRID, max_new_tokens=NEW)
    assert [(r["prompt"], r["multiplier"]) for r in batched] == [(p, m) for p in PROMPTS for m in GRID]
    one_at_a_time = {m: steered.generate(PROMPTS, m, max_new_tokens=NEW) for m in GRID}
    for row in batched:
        (same,) = [r for r in one_at_a_time[row["multiplier"]] if r["prompt"] == row["prompt"]]
        assert row["text"] == same["text"], row
    texts = {(r["prompt"], r["multiplier"]): r["text"] for r in batched}
    assert all(texts[(p, 6.0)] != texts[(p, 0.0)] for p in PROMPTS), "the control must change the replies"


def test_zero_multiplier_is_the_unsteered_backbone(tiny_backbone_dir) -> None:
    steered = _steered(tiny_backbone_dir, "all")
    model, tokenizer = steered.model, steered.tokenizer
    encoder = PairTokenizer(tokenizer)
    want = []
    for prompt in PROMPTS:  # one prompt at a time: no padding at all
        ids = torch.tensor([encoder.prompt_ids(prompt)])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=NEW, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=stop_token_ids(tokenizer, model))  # fmt: skip
        want.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    assert [r["text"] for r in steered.generate(PROMPTS, 0.0, max_new_tokens=NEW)] == want
    assert [r["text"] for r in steered.generate(PROMPTS, [0.0, 6.0], max_new_tokens=NEW)][::2] == want


def _force_tokens(model: Any, tokens: list[int]) -> Any:
    """Makes greedy decoding emit ``tokens`` in order (a huge logit bonus at each step)."""
    step = [0]

    def hook(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        token = tokens[min(step[0], len(tokens) - 1)]
        step[0] += 1
        output = output.clone()
        output[..., token] += 1e4
        return output

    return model.lm_head.register_forward_hook(hook)


def test_replies_stop_at_the_end_of_turn(tiny_backbone_dir, smollm2_tokenizer) -> None:
    steered = _steered(tiny_backbone_dir, "all")
    end_of_turn = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in stop_token_ids(steered.tokenizer, steered.model)
    words = smollm2_tokenizer.encode(" calm sea", add_special_tokens=False)
    handle = _force_tokens(steered.model, [*words, end_of_turn, *words])
    try:
        (row,) = steered.generate("Hi", 0.0, max_new_tokens=NEW)
    finally:
        handle.remove()
    assert row["text"] == " calm sea"


def test_sampling_with_a_seed_repeats_and_leaves_the_global_rng_alone(tiny_backbone_dir) -> None:
    steered = _steered(tiny_backbone_dir, "all")
    state = torch.get_rng_state()
    first = steered.generate(PROMPTS, [1.0, 2.0], max_new_tokens=NEW, do_sample=True, temperature=2.0, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    again = steered.generate(PROMPTS, [1.0, 2.0], max_new_tokens=NEW, do_sample=True, temperature=2.0, seed=3)
    other = steered.generate(PROMPTS, [1.0, 2.0], max_new_tokens=NEW, do_sample=True, temperature=2.0, seed=4)
    assert first == again and first != other
    with pytest.raises(ValueError, match="temperature"):
        steered.generate(PROMPTS, 1.0, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="at least one prompt"):
        steered.generate([], 1.0)


def test_module_generate_equals_steered_model_generate(tiny_backbone_dir) -> None:
    module = SteeringModule(backbone=str(tiny_backbone_dir), form=VectorOptions(), layer=1, positions="prompt",
                           generation={"max_new_tokens": NEW})  # fmt: skip
    module.configure_model()
    steered = _steered(tiny_backbone_dir, "prompt")
    module.control.load_state_dict(steered.control.state_dict())
    encoder = PairTokenizer(module.tokenizer)
    pairs = [encoder(PolarityPair(prompt, "Yes.", "No.")) for prompt in PROMPTS]
    batch = PairCollator(encoder.pad_id)(list(enumerate(pairs)))
    want = [r["text"] for r in steered.generate(PROMPTS, 6.0, max_new_tokens=NEW)]
    assert module.generate(batch, 6.0) == want
