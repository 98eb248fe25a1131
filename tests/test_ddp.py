"""DDP on CPU (gloo): sharding of the data, and a 2-process ``lightning-split fit`` equal to a 1-process one.

The end-to-end test runs the real CLI twice on the tiny backbone: one process with batch 4, and
``trainer.strategy=ddp, devices=2`` with batch 2 per rank (the same global batch). The data module gives
rank ``r`` the interleaved shard ``r, r+2, …`` of the same ``(seed, epoch)`` permutation, so each global step
sees the same pairs; DDP averages the two half-batch gradients, which equals the full-batch mean. The trained
control must agree to float32 rounding (documented tolerance: ``atol=1e-5``; measured about 1.5e-7), and every
validation/test metric must agree: the evaluation shards are unpadded (3 validation pairs -> 2 + 1, 5 test
pairs -> 3 + 2, batch 1 so the ranks even run different numbers of steps), so no pair is counted twice.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.data.samplers import ResumableDataLoader
from tests.cli_runs import control, metrics, run_cli, tiny_config, write_config

CONTROL_ATOL = 1e-5
"""Tolerance between the 1-process and the 2-process trained control (float32 reduction order)."""
METRIC_RTOL = 1e-5
"""Relative tolerance of the steered metrics (they see the control, hence its rounding)."""


def _datamodule(jsonl: Path, tokenizer, world: int, rank: int, **kwargs) -> PolarityDataModule:
    dm = PolarityDataModule(dataset=str(jsonl), **kwargs)
    dm.set_tokenizer(tokenizer)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)
    return dm


def _epoch(loader: ResumableDataLoader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [b.index.tolist() for b in loader]


def test_train_shards_are_disjoint_and_rebuild_the_single_process_batches(smollm2_tokenizer, sentiment_like_jsonl):
    single = _datamodule(sentiment_like_jsonl, smollm2_tokenizer, 1, 0, batch_size=4).train_dataloader()
    ranks = [
        _datamodule(sentiment_like_jsonl, smollm2_tokenizer, 2, r, batch_size=2).train_dataloader() for r in (0, 1)
    ]
    for epoch in (0, 1, 2):
        whole = _epoch(single, epoch)
        shards = [_epoch(loader, epoch) for loader in ranks]
        flat = [sorted(sum(s, [])) for s in shards]
        assert not set(flat[0]) & set(flat[1]), "the two ranks share pairs"
        assert sorted(flat[0] + flat[1]) == list(range(10))
        assert len(shards[0]) == len(shards[1]) == len(whole) == 3
        for k, batch in enumerate(whole):  # global step k sees the pairs of the single-process batch k
            assert sorted(shards[0][k] + shards[1][k]) == sorted(batch)
        assert _epoch(ranks[0], epoch) == shards[0], "not deterministic in (seed, epoch)"
    assert _epoch(single, 0) != _epoch(single, 1), "the order does not change with the epoch"


def test_uneven_train_set_pads_so_ranks_step_together(smollm2_tokenizer, sentiment_like_jsonl):
    ranks = [
        _datamodule(sentiment_like_jsonl, smollm2_tokenizer, 3, r, batch_size=2).train_dataloader() for r in range(3)
    ]
    shards = [_epoch(loader, 0) for loader in ranks]
    assert [len(s) for s in shards] == [2, 2, 2]  # ceil(10 / 3) = 4 pairs each
    assert sorted(set(sum(sum(shards, []), []))) == list(range(10))


def test_eval_shards_are_unpadded(smollm2_tokenizer, sentiment_like_jsonl):
    for split, size in (("val", 3), ("test", 5)):
        seen = []
        for rank in (0, 1):
            dm = _datamodule(sentiment_like_jsonl, smollm2_tokenizer, 2, rank, eval_batch_size=1)
            loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
            seen.append([i for b in loader for i in b.index.tolist()])
        assert [len(s) for s in seen] == [math.ceil(size / 2), size // 2]
        assert sorted(seen[0] + seen[1]) == list(range(size)), f"{split}: a pair is missing or counted twice"


def _with_tradeoff(config: dict) -> dict:
    config["tradeoff"] = {"multipliers": [-1.0, 0.0, 1.0], "every_n_val_epochs": 1}
    return config


@pytest.mark.slow
def test_two_process_ddp_fit_equals_one_process(tiny_backbone_dir, sentiment_like_jsonl, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    write_config(one, _with_tradeoff(tiny_config(tiny_backbone_dir, sentiment_like_jsonl, data_batch_size=4)))
    write_config(
        two,
        _with_tradeoff(
            tiny_config(
                tiny_backbone_dir, sentiment_like_jsonl, data_batch_size=2, trainer_strategy="ddp", trainer_devices=2
            )
        ),
    )
    run_cli(one, "--test_after_fit", "true")
    done = run_cli(two, "--test_after_fit", "true")
    assert "Starting with 2 processes" in done.stdout + done.stderr

    ctrl_one, ctrl_two = control(one), control(two)
    assert ctrl_one.keys() == ctrl_two.keys() == {"0.lora_A.weight", "0.lora_B.weight"}
    assert ctrl_one["0.lora_B.weight"].abs().max() > 1e-3, "the control did not train"
    for key in ctrl_one:
        torch.testing.assert_close(ctrl_two[key], ctrl_one[key], atol=CONTROL_ATOL, rtol=0)

    m_one, m_two = metrics(one), metrics(two)
    assert m_one.keys() == m_two.keys()
    assert {"val/pref_logodds", "val/util_logodds", "test/pref_logodds", "test/pref_logodds_base"} <= m_one.keys()
    for key, value in m_one.items():
        # base metrics do not depend on the control: any duplicated or missing pair would show at 1e-9
        rtol = 1e-9 if key.endswith("_base") else METRIC_RTOL
        assert m_two[key] == pytest.approx(value, rel=rtol, abs=1e-9), key

    for run in (one, two):  # rank 0 alone writes the trade-off reports and the checkpoints
        reports = run / "logs" / "version_0" / "tradeoff"
        assert sorted(p.name for p in reports.iterdir()) == ["test", "val-epoch000", "val-epoch001"]
        assert (run / "ckpt" / "last.ckpt").is_file()
