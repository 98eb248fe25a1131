"""Controls on the real SmolLM2 for the export and llama.cpp interop tests, and the comparisons both make.

Both tests put a control at block :data:`LAYER` of :data:`MODEL`, save it with the multiplier grid :data:`SCALES`,
and compare another runtime with the framework on :data:`CHAT_PROMPTS`: the next-token log-probabilities and the
first :data:`GREEDY` greedy tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from lightning_split.artifacts import SteeredModel, control_metadata, save_control
from lightning_split.backbone import load_backbone
from lightning_split.interventions import FormOptions, build_control
from lightning_split.layout import discover_layout

MODEL = "smollm2-135m-instruct"
LAYER = 15
SCALES = (0.0, 1.0, 2.0)
GREEDY = 8
CHAT_PROMPTS = (
    "Describe the weather today.",
    "How was the film you watched last night?",
    "How did the exam go?",
    "Write one sentence about your neighbour.",
    "What do you think of the new office?",
    "Tell me about your last holiday.",
)


def new_control(options: FormOptions) -> SteeredModel:
    """SmolLM2 with a freshly built control of ``options`` at block :data:`LAYER`, steering every position."""
    model, tokenizer = load_backbone(MODEL)
    layout = discover_layout(model)
    return SteeredModel(model, tokenizer, layout, build_control(options, layout, [LAYER]), {"positions": "all"})


def save_smollm2_control(directory: Path, steered: SteeredModel, objective: str) -> Path:
    """Saves ``steered``'s control as trained on :data:`MODEL` at every position with ``objective`` over
    :data:`SCALES`; returns ``directory``."""
    control = steered.control
    hparams = {"backbone": MODEL, "positions": "all", "form": control[0].form}
    return save_control(directory, control, control_metadata(control, hparams, objective, list(SCALES)))


def next_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """The float64 log-probabilities of the next token after the last position of the first row of ``logits``."""
    return torch.log_softmax(logits[0, -1].double(), -1)


def greedy_tokens(logits_of: Callable[[torch.Tensor], torch.Tensor], ids: list[int]) -> list[int]:
    """The :data:`GREEDY` tokens greedy decoding appends to ``ids``; ``logits_of`` maps ``[1, T]`` ids to logits."""
    out = list(ids)
    for _ in range(GREEDY):
        out.append(int(logits_of(torch.tensor([out]))[0, -1].argmax()))
    return out[len(ids) :]


def same_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
