"""AxBench negatives: the backbone's own unsteered greedy replies, made in batches and cached by backbone, settings
and exact prompts (a mismatch regenerates, a match generates nothing); a real SmolLM2 run on two concepts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import lightning_split.data.axbench_negatives as negatives_module
from lightning_split.backbone import load_backbone
from lightning_split.data.axbench_negatives import NegativeSettings, ReplyCache, negatives_cache_dir
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.data.tokenize import PairTokenizer
from lightning_split.generation import stop_token_ids
from tests.conftest import count_calls

pytestmark = pytest.mark.usefixtures("one_thread")

NEW = 6


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache root for the test (``$LIGHTNING_SPLIT_CACHE``)."""
    monkeypatch.setenv("LIGHTNING_SPLIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _data(shared_data_dir: Path, **options: object) -> PolarityDataModule:
    """Two concepts, 3 train and 2 test rows each: 10 pairs."""
    sizes = {"train_size": 3, "test_size": 2, "negative_max_new_tokens": NEW}
    return PolarityDataModule(dataset="axbench", data_dir=str(shared_data_dir), concepts=[0, 3], **{**sizes, **options})


def _complete(dm: PolarityDataModule, model: torch.nn.Module, tokenizer: object, batch_size: int = 4) -> None:
    dm.set_tokenizer(tokenizer)
    dm.set_backbone(model)
    dm.negative_settings = NegativeSettings(max_new_tokens=dm.negative_settings.max_new_tokens, batch_size=batch_size)
    dm.tokenized("train")


def test_negatives_are_the_unsteered_greedy_replies_and_are_cached(
    tiny_backbone_dir: Path, shared_data_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = load_backbone(str(tiny_backbone_dir))
    calls = count_calls(monkeypatch, negatives_module, "write_text_atomic")
    dm = _data(shared_data_dir)
    _complete(dm, model, tokenizer, batch_size=1)  # one prompt per batch: no padding, comparable with generate
    assert (dm.negatives.generated, dm.negatives.reused, calls[0]) == (10, 0, 2)  # one file per concept
    recorded = dm.report()["negatives"]
    assert recorded["generated"] == 10 and recorded["settings"] == {"max_new_tokens": NEW, "batch_size": 1}
    assert recorded["backbone"]["folder"] == str(tiny_backbone_dir.resolve())
    pairs = dm.pairs("train") + dm.pairs("test")
    assert len(pairs) == 10 and {p.metadata["negative"] for p in pairs} == {"backbone"}
    encoder = PairTokenizer(tokenizer)
    for pair in pairs[:2] + pairs[-1:]:
        ids = torch.tensor([encoder.prompt_ids(pair.question)])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=NEW, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=stop_token_ids(tokenizer, model))  # fmt: skip
        assert pair.not_matching == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    files = sorted((cache / "axbench-negatives").glob("*.json"))
    assert len(files) == 2
    umask = os.umask(0)
    os.umask(umask)
    assert {f.stat().st_mode & 0o777 for f in files} == {0o666 & ~umask}  # a cache colleagues can read
    stored = {r for f in files for r in json.loads(f.read_text())["replies"]}
    assert {p.not_matching for p in pairs} <= stored

    again = _data(shared_data_dir)
    _complete(again, model, tokenizer, batch_size=1)
    assert (again.negatives.generated, again.negatives.reused, calls[0]) == (0, 10, 2)
    assert [p.not_matching for p in again.pairs("train")] == [p.not_matching for p in dm.pairs("train")]


@pytest.mark.parametrize(
    "change",
    ["max_new_tokens", "batch_size", "system_prompt", "rows", "weights_on_disk"],
)
def test_a_cache_that_does_not_match_is_recomputed(
    change: str, tiny_backbone_dir: Path, shared_data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_backbone_dir, folder)
    model, tokenizer = load_backbone(str(folder))
    _complete(_data(shared_data_dir), model, tokenizer)
    options: dict[str, object] = {
        "max_new_tokens": {"negative_max_new_tokens": NEW + 1},
        "system_prompt": {"system_prompt": "Answer briefly."},
        "rows": {"train_size": 4},
    }.get(change, {})
    if change == "weights_on_disk":  # the same folder, its weights saved again
        model.save_pretrained(folder)
        model, tokenizer = load_backbone(str(folder))
    dm = _data(shared_data_dir, **options)
    _complete(dm, model, tokenizer, batch_size=2 if change == "batch_size" else 4)
    want = {"rows": (12, 0)}.get(change, (10, 0))  # 4 + 2 rows per concept: both concepts' prompts changed
    assert (dm.negatives.generated, dm.negatives.reused) == want


def test_a_model_built_in_memory_is_keyed_by_its_weights(tiny_model, smollm2_tokenizer, cache: Path) -> None:
    def tiny(seed: int) -> torch.nn.Module:
        vocab = {"vocab_size": len(smollm2_tokenizer), "pad_token_id": smollm2_tokenizer.pad_token_id}
        return tiny_model("llama", seed=seed, eos_token_id=smollm2_tokenizer.eos_token_id, **vocab)

    prompts = [PairTokenizer(smollm2_tokenizer).prompt_ids(q) for q in ("Hi", "Name a colour.")]
    settings = NegativeSettings(max_new_tokens=3, batch_size=2)
    first = ReplyCache(tiny(0), smollm2_tokenizer, settings)
    first.replies(prompts)
    same, other = ReplyCache(tiny(0), smollm2_tokenizer, settings), ReplyCache(tiny(1), smollm2_tokenizer, settings)
    same.replies(prompts)
    other.replies(prompts)
    assert (first.generated, same.generated, same.reused, other.generated) == (2, 0, 2, 2)
    assert len(list(negatives_cache_dir().glob("*.json"))) == 2


def test_a_damaged_cache_file_is_generated_again(tiny_backbone_dir: Path, cache: Path) -> None:
    model, tokenizer = load_backbone(str(tiny_backbone_dir))
    prompts = [PairTokenizer(tokenizer).prompt_ids("Hi")]
    replies = ReplyCache(model, tokenizer, NegativeSettings(max_new_tokens=3))
    text = replies.replies(prompts)
    replies.path(prompts).write_text('{"replies": ["cut sh')
    again = ReplyCache(model, tokenizer, NegativeSettings(max_new_tokens=3))
    assert again.replies(prompts) == text and again.generated == 1


def test_without_a_backbone_the_negatives_cannot_be_made(smollm2_tokenizer, shared_data_dir: Path) -> None:
    dm = _data(shared_data_dir)
    dm.set_tokenizer(smollm2_tokenizer)
    with pytest.raises(RuntimeError, match="call set_backbone"):
        dm.tokenized("train")


@pytest.mark.slow  # SmolLM2-135M generating 6 replies of up to 24 tokens (about 10-30 s on a busy CPU)
def test_smollm2_replies_on_two_concepts(smollm2_dir: Path, shared_data_dir: Path, cache: Path) -> None:
    model, tokenizer = load_backbone(str(smollm2_dir))
    dm = PolarityDataModule(
        dataset="axbench", data_dir=str(shared_data_dir), concepts=[0, 3], train_size=2, test_size=1,
        negative_max_new_tokens=24,
    )  # fmt: skip
    _complete(dm, model, tokenizer, batch_size=6)
    pairs = dm.pairs("train") + dm.pairs("test")
    assert dm.negatives.generated == 6 and len(pairs) == 6
    assert all(p.not_matching and p.not_matching != p.matching for p in pairs)
    assert len({p.not_matching for p in pairs}) == 6
    casino = [p for p in pairs if p.group == "3"]
    assert not any("casino" in p.not_matching.lower() for p in casino), [p.not_matching for p in casino]
    batch = next(iter(dm.train_dataloader()))
    assert batch.neg_ids.shape[0] == 4 and int(batch.neg_mask.sum()) > 0
    again = PolarityDataModule(
        dataset="axbench", data_dir=str(shared_data_dir), concepts=[0, 3], train_size=2, test_size=1,
        negative_max_new_tokens=24,
    )  # fmt: skip
    _complete(again, model, tokenizer, batch_size=6)
    assert (again.negatives.generated, again.negatives.reused) == (0, 6)


def test_under_a_trainer_the_modules_backbone_makes_the_negatives(
    tiny_backbone_dir: Path, shared_data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    import lightning as L

    from lightning_split import SteeringModule

    dm = PolarityDataModule(
        dataset="axbench", data_dir=str(shared_data_dir), concepts=[0], train_size=4, test_size=2,
        negative_max_new_tokens=4,
    )  # fmt: skip
    module = SteeringModule(backbone=str(tiny_backbone_dir), layer=1)
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(module, dm)
    assert (dm.negatives.generated, trainer.global_step) == (6, 1)
    assert all(p.not_matching for p in dm.pairs("train") + dm.pairs("test"))
