"""A SmolLM2 vector exported to GGUF steers llama.cpp's ``llama-server`` as it steers the framework's model.

A DiffMean direction is fitted at block 15 on sentiment pairs, saved as a control, exported with
``lightning-split export`` and served with ``--control-vector-scaled FILE:m``. For each chat prompt, the server's
``/completion`` top-10 next-token log-probabilities are compared with the framework's steered model at the same
``m``. The two never agree exactly: the server runs the Q4_1 GGUF with quantized kernels, the framework its
dequantized float32 copy, so the gap at ``m = 0`` is the floor the steered gaps are held to. The same file written
one block later (``direction.16``, llama.cpp's cvector-generator convention) is measured too: its gap must be larger.

Run ``pytest -s tests/test_llama_cpp_interop.py`` to see the table (docs/interop.md quotes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lightning_split.artifacts import SteeredModel, load_steered
from lightning_split.backbone import resolve_registered_model
from lightning_split.data.readers import read_pairs
from lightning_split.data.registry import builtin_path
from lightning_split.data.tokenize import PairTokenizer
from lightning_split.export import export_control
from lightning_split.export.gguf_vector import read_control_vector, write_control_vector
from lightning_split.interventions import VectorOptions
from tests.llama_server import llama_server, llama_server_binary
from tests.smollm2_controls import (
    CHAT_PROMPTS,
    GREEDY,
    LAYER,
    MODEL,
    SCALES,
    greedy_tokens,
    new_control,
    next_log_probs,
    same_prefix,
    save_smollm2_control,
)

pytestmark = pytest.mark.slow

TOP = 10
FIT_PAIRS = 16


@dataclass
class Agreement:
    """The server against the framework at one ``m``, over :data:`CHAT_PROMPTS`."""

    gaps: list[float]  # |Δ log p| on the server's top-10 tokens, all prompts together
    top1: int  # prompts whose most likely next token is the same
    greedy: list[int]  # per prompt, the number of leading greedy tokens that are the same (of GREEDY)
    moved: float  # mean |log p(m) − log p(0)| of the framework on the same tokens: the steering's own size

    @property
    def mean_gap(self) -> float:
        return sum(self.gaps) / len(self.gaps)

    def row(self, label: str) -> str:
        greedy = sum(self.greedy) / len(self.greedy)
        return (
            f"{label:<22} mean|Δ| {self.mean_gap:.3f}  max|Δ| {max(self.gaps):.3f}  "
            f"top-1 {self.top1}/{len(CHAT_PROMPTS)}  greedy {greedy:.1f}/{GREEDY} (min {min(self.greedy)})  "
            f"steering moved {self.moved:.3f}"
        )


def _fit_diffmean(steered: SteeredModel) -> torch.Tensor:
    """DiffMean at block ``LAYER``: mean over pairs of (mean answer residual of A_p − that of A_n)."""
    encoder = PairTokenizer(steered.tokenizer)
    pairs = [p for p in read_pairs(builtin_path("builtin/sentiment.jsonl")).pairs if p.metadata.get("split") == "train"]
    diffs = []
    with torch.no_grad():
        for pair in pairs[:FIT_PAIRS]:
            tokens = encoder(pair)
            means = []
            for answer in (tokens.pos_ids, tokens.neg_ids):
                ids = torch.tensor([tokens.prompt_ids + answer])
                hidden = steered.model(input_ids=ids, output_hidden_states=True).hidden_states[LAYER + 1]
                means.append(hidden[0, len(tokens.prompt_ids) :].double().mean(0))
            diffs.append(means[0] - means[1])
    return torch.stack(diffs).mean(0).float()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[SteeredModel, Path, Path]:
    """The steered SmolLM2 with a DiffMean vector at block 15, its GGUF export and the off-by-one file."""
    llama_server_binary()  # fail at once, before the fit, when the binary is missing
    root = tmp_path_factory.mktemp("interop")
    probe = new_control(VectorOptions(init_std=0.0))
    with torch.no_grad():
        probe.control[0].vector.copy_(_fit_diffmean(probe))
    save_smollm2_control(root / "control", probe, "diffmean")
    gguf = root / "steer.gguf"
    export_control(root / "control", gguf)
    shifted = root / "shifted.gguf"
    vector = torch.from_numpy(read_control_vector(gguf).directions[LAYER])
    write_control_vector(shifted, {LAYER + 1: vector}, "llama", {})
    return load_steered(root / "control"), gguf, shifted


def _log_probs(steered: SteeredModel, ids: list[int], m: float) -> torch.Tensor:
    return next_log_probs(steered.logits(torch.tensor([ids]), m))


def _agreement(steered: SteeredModel, vector_file: Path, m: float) -> Agreement:
    encoder = PairTokenizer(steered.tokenizer)
    gaps, top1, greedy, moved = [], 0, [], []
    with llama_server(resolve_registered_model(MODEL), control_vectors=[(vector_file, m)]) as server:
        for prompt in CHAT_PROMPTS:
            ids = encoder.prompt_ids(prompt)
            reply = server.post(
                "/completion",
                {"prompt": ids, "n_predict": 1, "n_probs": TOP, "temperature": 0, "cache_prompt": False},
            )
            top = reply["completion_probabilities"][0]["top_logprobs"]
            ours, unsteered = _log_probs(steered, ids, m), _log_probs(steered, ids, 0.0)
            gaps += [abs(t["logprob"] - float(ours[t["id"]])) for t in top]
            moved += [abs(float(ours[t["id"]] - unsteered[t["id"]])) for t in top]
            top1 += int(top[0]["id"] == int(ours.argmax()))
            theirs = server.post(
                "/completion",
                {"prompt": ids, "n_predict": GREEDY, "temperature": 0, "ignore_eos": True, "return_tokens": True,
                 "cache_prompt": False},
            )["tokens"]  # fmt: skip
            greedy.append(same_prefix(theirs, greedy_tokens(lambda t: steered.logits(t, m), ids)))
    return Agreement(gaps, top1, greedy, sum(moved) / len(moved))


def test_gguf_vector_steers_llama_server_like_the_framework(exported: tuple[SteeredModel, Path, Path]) -> None:
    steered, gguf, shifted = exported
    results = {m: _agreement(steered, gguf, m) for m in SCALES}
    off_by_one = _agreement(steered, shifted, SCALES[-1])
    print()
    for m, result in results.items():
        print(result.row(f"direction.{LAYER} m={m:g}"))
    print(off_by_one.row(f"direction.{LAYER + 1} m={SCALES[-1]:g}"))

    floor, unsteered = results[0.0].mean_gap, results[0.0]
    assert floor < 0.2, f"the unsteered server and model differ by {floor:.3f} nats: not the same model?"
    for m in SCALES:
        result = results[m]
        assert result.mean_gap <= max(2 * floor, floor + 0.05), result.row(f"m={m}")
        assert result.top1 == len(CHAT_PROMPTS), result.row(f"m={m}")
        # quantized kernels make greedy paths part even unsteered; steering must not make them part sooner
        assert sum(result.greedy) >= sum(unsteered.greedy) - 1.5 * len(CHAT_PROMPTS), result.row(f"m={m}")
    assert results[SCALES[-1]].moved > 4 * results[SCALES[-1]].mean_gap, "the steering is too weak to tell"
    assert off_by_one.mean_gap > 2 * results[SCALES[-1]].mean_gap, "one block later should not fit as well"
