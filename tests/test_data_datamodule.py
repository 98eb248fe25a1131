"""PolarityDataModule end to end: PairBatch shapes and masks, partial last batch, skipping, Lightning fit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_split.data import registry
from lightning_split.data.batch import PairBatch
from lightning_split.data.datamodule import PairCollator, PolarityDataModule, pad_right
from lightning_split.data.pairs import BadRowError, DataFileError
from lightning_split.data.readers import read_pairs
from lightning_split.data.tokenize import TokenizedPair


def masked_text(tokenizer, ids: torch.Tensor, mask: torch.Tensor) -> str:
    return tokenizer.decode(ids[mask.bool()].tolist())


def test_collate_right_pads() -> None:
    items = [(0, TokenizedPair([5, 6, 7], [1], [2, 3])), (1, TokenizedPair([8], [4, 4, 4], [9]))]
    batch = PairCollator(pad_id=0)(items)
    assert batch.prompt_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.prompt_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.pos_ids.tolist() == [[1, 0, 0], [4, 4, 4]]
    assert batch.pos_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch.neg_mask.tolist() == [[1, 1], [1, 0]] and batch.index.tolist() == [0, 1]
    ids, mask = pad_right([], 3)
    assert ids.shape == (0, 0) and mask.dtype == torch.long


def test_end_to_end_batches(smollm2_tokenizer, sentiment_like_jsonl: Path) -> None:
    dm = PolarityDataModule(dataset=str(sentiment_like_jsonl), batch_size=4, eval_batch_size=2)
    dm.set_tokenizer(smollm2_tokenizer)
    dm.setup("fit")
    assert dm.report()["sizes"] == {"train": 10, "validation": 3, "test": 5}
    batches = list(dm.train_dataloader())
    assert [len(b) for b in batches] == [4, 4, 2]  # drop_last=False: the partial last batch is there
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(10))
    pad = smollm2_tokenizer.pad_token_id
    pairs = dm.pairs("train")
    for batch in batches:
        assert isinstance(batch, PairBatch)
        assert batch.prompt_ids.shape == batch.prompt_mask.shape
        assert batch.pos_ids.shape == batch.pos_mask.shape and batch.neg_ids.shape == batch.neg_mask.shape
        assert batch.prompt_ids.dtype == torch.long
        assert (batch.pos_ids[batch.pos_mask == 0] == pad).all()
        for row, i in enumerate(batch.index.tolist()):
            pair = pairs[i]
            assert masked_text(smollm2_tokenizer, batch.pos_ids[row], batch.pos_mask[row]) == (
                pair.matching + "<|im_end|>\n"
            )
            assert masked_text(smollm2_tokenizer, batch.neg_ids[row], batch.neg_mask[row]) == (
                pair.not_matching + "<|im_end|>\n"
            )
            prompt = masked_text(smollm2_tokenizer, batch.prompt_ids[row], batch.prompt_mask[row])
            assert prompt.endswith(f"<|im_start|>user\n{pair.question}<|im_end|>\n<|im_start|>assistant\n")
            assert batch.prompt_mask[row].sum() == len(dm.tokenized("train")[i].prompt_ids)
    # the neg completions have different lengths, so padding is really exercised
    assert any((b.neg_mask == 0).any() for b in batches)
    # seeded shuffle: same order from a new module with the same seed, a different one with another seed
    again = PolarityDataModule(dataset=str(sentiment_like_jsonl), batch_size=4)
    again.tokenizer = smollm2_tokenizer
    assert [b.index.tolist() for b in again.train_dataloader()] == [b.index.tolist() for b in batches]
    other = PolarityDataModule(dataset=str(sentiment_like_jsonl), batch_size=4, seed=1)
    other.set_tokenizer(smollm2_tokenizer)
    assert [b.index.tolist() for b in other.train_dataloader()] != [b.index.tolist() for b in batches]
    val = list(dm.val_dataloader())
    assert [b.index.tolist() for b in val] == [[0, 1], [2]]
    assert [len(b) for b in dm.test_dataloader()] == [2, 2, 1] == [len(b) for b in dm.predict_dataloader()]
    assert [p.metadata["split"] for p in dm.pairs("val")] == ["validation"] * 3


def test_psychopathy_module(smollm2_tokenizer, shared_data_dir: Path) -> None:
    dm = PolarityDataModule(
        dataset="psychopathy", data_dir=str(shared_data_dir), batch_size=8, train_size=20, val_size=4, test_size=6
    )
    dm.set_tokenizer(smollm2_tokenizer)
    dm.setup()
    assert dm.report()["sizes"] == {"train": 20, "validation": 4, "test": 6}
    assert sum(p.matching == "Yes" for p in dm.pairs("train")) == 10
    batch = next(iter(dm.test_dataloader()))
    assert batch.pos_mask.sum(1).tolist() == [3] * 6  # "Yes"/"No" + <|im_end|> + "\n"
    texts = {smollm2_tokenizer.decode(row.tolist()) for row in batch.pos_ids}
    assert texts <= {"Yes<|im_end|>\n", "No<|im_end|>\n"}


def test_skip_bad_rows_reports_count(smollm2_tokenizer, tmp_path: Path, caplog) -> None:
    rows = [{"question": f"q{i}", "matching": "good", "not_matching": "bad", "split": "train"} for i in range(6)]
    rows[1]["matching"] = " "  # empty completion, line 2
    rows[3]["not_matching"] = "good"  # identical, line 4
    rows[4]["question"] = "very long question " * 40  # over max_length, line 5
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadRowError, match=r"rows\.jsonl, line 2: empty completion"):
        PolarityDataModule(dataset=str(path), max_length=60)
    with caplog.at_level(logging.WARNING, logger="lightning_split.data.datamodule"):
        dm = PolarityDataModule(dataset=str(path), max_length=60, skip_bad_rows=True, batch_size=2)
        dm.set_tokenizer(smollm2_tokenizer)
        dm.setup()
        batches = list(dm.train_dataloader())
    assert [line for _, line, _ in dm.report()["skipped_rows"]] == [2, 4, 5]
    assert dm.report()["skipped"] == 3 and "too long" in dm.skipped[2].reason
    assert [p.line for p in dm.pairs("train")] == [1, 3, 6]
    assert [len(b) for b in batches] == [2, 1]
    messages = [r.getMessage() for r in caplog.records]
    assert any("left out 2 unusable row(s)" in m for m in messages)
    assert any("left out 1 unusable row(s)" in m and "too long" in m for m in messages)


def test_over_length_raises_without_skip(smollm2_tokenizer, sentiment_like_jsonl: Path) -> None:
    dm = PolarityDataModule(dataset=str(sentiment_like_jsonl), max_length=30)
    dm.setup()  # no tokenizer yet: reading and splitting only
    assert len(dm.pairs("train")) == 10
    dm.set_tokenizer(smollm2_tokenizer)
    with pytest.raises(BadRowError, match=r"sentiment\.jsonl, line 1: too long"):
        dm.train_dataloader()


def test_missing_tokenizer_is_explained(sentiment_like_jsonl: Path) -> None:
    dm = PolarityDataModule(dataset=str(sentiment_like_jsonl))
    with pytest.raises(RuntimeError, match="set_tokenizer"):
        dm.train_dataloader()


def test_embedded_default_dataset(monkeypatch, smollm2_tokenizer, sentiment_like_jsonl: Path) -> None:
    shipped = registry.builtin_path("builtin/sentiment.jsonl")
    if not shipped.is_file():  # until the embedded file lands, use one of the same shape
        monkeypatch.setattr(registry, "builtin_path", lambda rel: sentiment_like_jsonl)
    dm = PolarityDataModule()
    assert dm.dataset == "sentiment" and dm.hparams.dataset is None  # unset means the embedded set
    dm.set_tokenizer(smollm2_tokenizer)
    dm.setup()
    sizes = dm.report()["sizes"]
    assert sizes["train"] > 0 and sizes["test"] > 0
    assert {p.metadata["split"] for p in dm.pairs("train")} == {"train"}
    assert len(next(iter(dm.train_dataloader()))) == min(4, sizes["train"])


class _TinyModule(L.LightningModule):
    """Sets the data module's tokenizer in its setup hook (which runs after the data module's setup)."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.tok = tokenizer
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[int] = []

    def setup(self, stage: str) -> None:
        self.trainer.datamodule.set_tokenizer(self.tok)

    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        self.seen.append(len(batch))
        return (self.weight - batch.pos_mask.sum().float()) ** 2

    def validation_step(self, batch: PairBatch, batch_idx: int) -> None:
        self.log("val_tokens", batch.neg_mask.sum().float(), batch_size=len(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_fit(smollm2_tokenizer, sentiment_like_jsonl: Path, tmp_path: Path) -> None:
    model = _TinyModule(smollm2_tokenizer)
    dm = PolarityDataModule(dataset=str(sentiment_like_jsonl), batch_size=3)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen == [3, 3, 3, 1]
    assert "val_tokens" in trainer.callback_metrics


# --------------------------------------------------------------------------- one file per split (real BiPO files)
def _lines(pairs) -> list[int]:
    return [p.line for p in pairs]


def test_split_files_take_train_and_test_files(shared_data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    train_file = shared_data_dir / "bipo" / "power-seeking-train.csv"
    test_file = shared_data_dir / "bipo" / "power-seeking-test.csv"
    with caplog.at_level(logging.INFO):
        dm = PolarityDataModule(train_file=str(train_file), test_file=str(test_file))
        dm.setup("fit")
        dm.setup("test")
    assert dm.splits.sizes() == {"train": 578, "validation": 64, "test": 200}  # 642 train rows: 10% validation
    assert _lines(dm.pairs("test")) == _lines(read_pairs(test_file).pairs)  # the whole test file, in file order
    assert {p.source for p in dm.pairs("test")} == {str(test_file)}
    drawn = _lines(dm.pairs("train")) + _lines(dm.pairs("validation"))
    assert sorted(drawn) == sorted(_lines(read_pairs(train_file).pairs))  # disjoint, and every train row used
    printed = [r.getMessage() for r in caplog.records if "578 train / 64 validation / 200 test" in r.getMessage()]
    assert len(printed) == 1, f"split sizes printed {len(printed)} times"
    assert dm.report()["files"] == {"train": str(train_file), "test": str(test_file)}


def test_split_files_match_the_named_dataset(shared_data_dir: Path) -> None:
    named = PolarityDataModule(dataset="power-seeking", data_dir=str(shared_data_dir))
    files = PolarityDataModule(
        train_file=str(shared_data_dir / "bipo" / "power-seeking-train.csv"),
        test_file=str(shared_data_dir / "bipo" / "power-seeking-test.csv"),
        train_size=500,
        val_size=50,
        test_size=200,
    )
    named.setup()
    files.setup()
    for split in ("train", "validation", "test"):
        assert _lines(files.pairs(split)) == _lines(named.pairs(split)), split


def test_validation_file_is_used_whole(shared_data_dir: Path) -> None:
    dm = PolarityDataModule(
        train_file=str(shared_data_dir / "bipo" / "power-seeking-train.csv"),
        val_file=str(shared_data_dir / "bipo" / "power-seeking-test.csv"),
        val_size=20,
    )
    dm.setup()
    assert dm.splits.sizes() == {"train": 642, "validation": 20, "test": 0}
    assert {p.source for p in dm.pairs("validation")} == {str(shared_data_dir / "bipo" / "power-seeking-test.csv")}


def test_dataset_and_split_files_together_are_refused(sentiment_like_jsonl: Path) -> None:
    with pytest.raises(
        DataFileError, match=r"dataset='sentiment' and \['train_file', 'test_file'\].*--data.dataset null"
    ):
        PolarityDataModule(
            dataset="sentiment", train_file=str(sentiment_like_jsonl), test_file=str(sentiment_like_jsonl)
        )


def test_missing_split_file_names_the_option(tmp_path: Path, sentiment_like_jsonl: Path) -> None:
    with pytest.raises(DataFileError, match=r"test file not found: .*gone.csv \(data option test_file"):
        PolarityDataModule(train_file=str(sentiment_like_jsonl), test_file=str(tmp_path / "gone.csv"))


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"matching": "  "}, "empty completion in field 'matching'"),
        ({"not_matching": "Good."}, "identical completions"),
    ],
)
def test_answers_the_metric_cannot_use_are_named(tmp_path: Path, row: dict, problem: str) -> None:
    good = {"question": "Q?", "matching": "Good.", "not_matching": "Bad."}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **row}) + "\n")
    with pytest.raises(BadRowError, match=rf"pairs.jsonl, line 2: {problem}.*skip_bad_rows"):
        PolarityDataModule(dataset=str(path))  # refused when the module is built, before any trainer runs
