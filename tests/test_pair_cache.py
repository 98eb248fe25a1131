"""The per-pair caches are keyed by content: a changed pair is recomputed, an identical one is reused.

The regression: caches keyed by (split, row index) gave dataset A's test numbers when the same module was
then tested on dataset B (same token counts) and raised a shape error when B's pairs were longer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning_split.callbacks import TradeoffCurveCallback

from lightning_split import SteeringModule
from lightning_split.data.batch import PairBatch
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.engine import PairLogProbs, plain_pair_logprobs
from lightning_split.interventions import VectorOptions
from lightning_split.models.pair_cache import LowerStateCache, ReferenceCache, row_digests
from lightning_split.packing import PackedPairs, pack_pairs
from tests.conftest import count_calls
from tests.pair_batches import random_pair_batch
from tests.tiny_models import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

METRICS = ("test/pref_logodds", "test/pref_logodds_base", "test/util_logodds", "test/util_logodds_base")


def _module(backbone_dir: Path) -> SteeringModule:
    return SteeringModule(backbone=str(backbone_dir), form=VectorOptions(init_std=0.3), layer=2)


def _fresh_copy(module: SteeringModule) -> SteeringModule:
    """A new module with the same control and no cached rows."""
    fresh = _module(Path(module.hparams.backbone))
    fresh.configure_model()
    fresh.control.load_state_dict(module.control.state_dict())
    return fresh


def _test(module: SteeringModule, data_file: Path, root: Path, callbacks: list[Any] | None = None) -> dict[str, float]:
    data = PolarityDataModule(dataset=str(data_file), batch_size=4, eval_batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(root), callbacks=callbacks or [],
    )  # fmt: skip
    (metrics,) = trainer.test(module, data, verbose=False)
    return {name: float(metrics[name]) for name in METRICS}


def _edited(source: Path, target: Path, old: str, new: str) -> Path:
    """``source`` with ``old`` replaced by ``new`` in the question of every test pair."""
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    for row in rows:
        if row["split"] == "test":
            assert old in row["question"]
            row["question"] = row["question"].replace(old, new)
    target.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return target


def _test_lengths(data_file: Path, tokenizer: Any) -> list[int]:
    data = PolarityDataModule(dataset=str(data_file))
    data.set_tokenizer(tokenizer)
    return [len(pair.prompt_ids) for pair in data.tokenized("test")]


@pytest.mark.parametrize(("new_word", "same_length"), [("line", True), ("long and careful sentence", False)])
def test_testing_dataset_b_after_a_gives_b_numbers(
    new_word: str, same_length: bool, tiny_backbone_dir, sentiment_like_jsonl, smollm2_tokenizer, tmp_path
) -> None:
    data_b = _edited(sentiment_like_jsonl, tmp_path / "b.jsonl", "sentence", new_word)
    lengths_a = _test_lengths(sentiment_like_jsonl, smollm2_tokenizer)
    assert (lengths_a == _test_lengths(data_b, smollm2_tokenizer)) is same_length

    module = _module(tiny_backbone_dir)
    first_a = _test(module, sentiment_like_jsonl, tmp_path / "a")
    on_b = _test(module, data_b, tmp_path / "b")
    fresh_on_b = _test(_fresh_copy(module), data_b, tmp_path / "fresh")
    assert on_b == fresh_on_b
    assert on_b["test/pref_logodds_base"] != first_a["test/pref_logodds_base"], "B must differ from A"
    assert on_b["test/pref_logodds"] != first_a["test/pref_logodds"]
    assert len(module._lower_cache) == len(lengths_a), "the caches hold only the pairs of the last run"


def _with_prompt_token(batch: PairBatch, row: int, token: int) -> PairBatch:
    prompt_ids = batch.prompt_ids.clone()
    prompt_ids[row, 0] = token
    return PairBatch(prompt_ids, batch.prompt_mask, batch.pos_ids, batch.pos_mask, batch.neg_ids, batch.neg_mask,
                     batch.index)  # fmt: skip


def _assert_equal(a: PairLogProbs, b: PairLogProbs) -> None:
    assert torch.equal(a.pos, b.pos) and torch.equal(a.neg, b.neg)


def test_module_recomputes_a_changed_pair_and_reuses_an_identical_one(tiny_backbone_dir, monkeypatch) -> None:
    module = _module(tiny_backbone_dir)
    module.configure_model()
    lower_calls = count_calls(monkeypatch, module.scorer, "lower_states")
    m = torch.full((3,), 1.5)
    a = random_pair_batch(rows=3, seed=1)
    b = _with_prompt_token(a, row=1, token=int(a.prompt_ids[1, 0]) + 1)  # same indices, one token different

    with torch.no_grad():
        steered_a = module.score(a, m)
        module.reference(a, steered_a)
        steered_b = module.score(b, m)
        reference_b = module.reference(b, steered_b)
    assert lower_calls == [2], "B's changed row must be recomputed"
    fresh = _fresh_copy(module)
    with torch.no_grad():
        _assert_equal(steered_b, fresh.score(b, m))
        _assert_equal(reference_b, fresh.reference(b, steered_b))
        plain_b = plain_pair_logprobs(module.backbone, module.layout, b)
    torch.testing.assert_close(reference_b.logp_pos, plain_b.logp_pos, rtol=1e-5, atol=1e-5)
    assert not torch.equal(steered_a.pos[1], steered_b.pos[1])

    moved = PairBatch(a.prompt_ids, a.prompt_mask, a.pos_ids, a.pos_mask, a.neg_ids, a.neg_mask, a.index + 100)
    with torch.no_grad():
        _assert_equal(module.score(moved, m), steered_a)
        module.reference(moved, steered_a)
    assert lower_calls == [2], "identical content under other indices is a cache hit"


def _packed_pair(prompt: list[int], pos: list[int], neg: list[int]) -> PackedPairs:
    def row(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)

    return pack_pairs(PairBatch(*row(prompt), *row(pos), *row(neg), torch.tensor([0])))


def test_caches_key_rows_by_content_start_layer_and_backbone() -> None:
    batch = random_pair_batch(rows=3, seed=2)
    packed = pack_pairs(batch)
    calls: list[int] = []

    def compute(p, start):
        calls.append(start)
        return torch.randn(p.input_ids.shape[0], p.input_ids.shape[1], 4)

    model, other = make_tiny_model("llama", num_hidden_layers=2), make_tiny_model("llama", num_hidden_layers=2)
    cache = LowerStateCache()
    first = cache.states(model, packed, 1, compute)
    again = cache.states(model, pack_pairs(batch, pad_id=7), 1, compute)  # padding is not content
    assert calls == [1] and len(cache) == 3
    lengths = packed.lengths.tolist()
    for i, n in enumerate(lengths):
        assert torch.equal(again[i, :n], first[i, :n]) and not again[i, n:].any()
    cache.states(model, packed, 2, compute)
    assert calls == [1, 2] and len(cache) == 6
    cache.states(other, packed, 1, compute)
    assert calls == [1, 2, 1] and len(cache) == 3, "another backbone empties the cache"

    # The same packed tokens [5, 6, 7, 8, 9, 10] with the prompt/completion boundary elsewhere: other rows.
    assert row_digests(_packed_pair([5, 6, 7], [8], [9, 10])) != row_digests(_packed_pair([5, 6], [7, 8], [9, 10]))

    references = ReferenceCache()
    like = PairLogProbs(torch.randn(3, 6), torch.randn(3, 6), packed.pos_mask, packed.neg_mask)
    references.logprobs(model, packed, like, lambda: like)
    references.logprobs(other, packed, like, lambda: like)
    assert len(references) == 3


def test_tradeoff_sweep_takes_lower_states_from_the_test_steps(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch
) -> None:
    module = _module(tiny_backbone_dir)
    module.configure_model()
    lower_calls = count_calls(monkeypatch, module.scorer, "lower_states")
    callback = TradeoffCurveCallback(multipliers=[-1.0, 0.0, 1.0], output_dir=str(tmp_path / "curves"))
    _test(module, sentiment_like_jsonl, tmp_path, [callback])
    assert lower_calls == [3], "5 test pairs in batches of 2: three lower passes, none in the sweep"
    assert callback.last_curve is not None and callback.last_curve.n_pairs == [5] * 3
