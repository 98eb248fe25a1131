"""The pair metrics give the single-process values under Lightning DDP with 2 CPU processes (gloo).

The test launches this same file as a script (``python -m tests.test_metrics_ddp OUT.json``); Lightning's
``strategy="ddp"`` re-launches it for rank 1. A tiny LightningModule updates the metrics in ``test_step``
from fixed per-pair values indexed by the batch, logs them, and rank 0 writes the values to JSON. Rank 0
and rank 1 get uneven, interleaved shares of the pairs (16 and 7, with a partial last batch on each).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_split.metrics import (
    AnswerClassSplit,
    ClampedPairCount,
    PairAccuracy,
    PairMetric,
    PreferenceLogOdds,
    UtilityLogOdds,
)

N_PAIRS = 23
BATCH_SIZE = 4
REPO_ROOT = Path(__file__).resolve().parents[1]


def make_pairs(n: int = N_PAIRS) -> dict[str, torch.Tensor]:
    """Fixed per-pair log-likelihoods; pairs 0-4 have mean-mode mass > 1 (clamped)."""
    gen = torch.Generator().manual_seed(1234)
    len_pos = torch.randint(1, 30, (n,), generator=gen)
    len_neg = torch.randint(1, 30, (n,), generator=gen)
    per_token_pos = torch.rand(n, generator=gen, dtype=torch.float64) * 3.0 + 0.05
    per_token_neg = torch.rand(n, generator=gen, dtype=torch.float64) * 3.0 + 0.05
    per_token_pos[:5] = torch.tensor([0.01, 0.05, 0.1, 0.02, 0.2], dtype=torch.float64)
    per_token_neg[:5] = torch.tensor([0.3, 0.05, 0.2, 0.4, 0.1], dtype=torch.float64)
    return {
        "logp_pos": -per_token_pos * len_pos,
        "logp_neg": -per_token_neg * len_neg,
        "len_pos": len_pos,
        "len_neg": len_neg,
    }


def answer_classes(n: int = N_PAIRS) -> torch.Tensor:
    """Class ids 0, 1, 2 and -1 (no class) in turn, so each rank holds pairs of every class."""
    return torch.arange(n) % 4 - 1


def build_class_metrics() -> dict[str, AnswerClassSplit]:
    """Accuracy and preference split by answer class, in both reductions."""
    return {
        f"class_{value}_{red}": AnswerClassSplit(value, reduction=red)
        for value in ("accuracy", "preference")
        for red in ("sum", "mean")
    }


def collect_classes(metrics: dict[str, AnswerClassSplit]) -> dict[str, dict]:
    """Per-class means (NaN as None) and the balanced mean (a collective call under DDP)."""
    return {
        name: {
            "per_class": [None if v != v else v for v in metric.compute().tolist()],
            "balanced": metric.balanced().item(),
        }
        for name, metric in metrics.items()
    }


def rank_indices(rank: int, world_size: int) -> list[int]:
    """Uneven, interleaved split: rank 1 gets every third pair (7 of 23), rank 0 the rest (16)."""
    if world_size == 1:
        return list(range(N_PAIRS))
    return [i for i in range(N_PAIRS) if (i % 3 == 2) == (rank == 1)]


def build_metrics() -> dict[str, PairMetric]:
    """Every metric in both reductions; PrefOdds and UtilOdds also keep per-pair values."""
    metrics: dict[str, PairMetric] = {}
    for red in ("sum", "mean"):
        metrics[f"pref_{red}"] = PreferenceLogOdds(red, keep_per_pair=True)
        metrics[f"util_{red}"] = UtilityLogOdds(red, keep_per_pair=True)
        metrics[f"acc_{red}"] = PairAccuracy(red)
        metrics[f"clamped_{red}"] = ClampedPairCount(red)
    return metrics


def collect(metrics: dict[str, PairMetric]) -> dict[str, dict]:
    """Reads every value the metrics expose (a collective call under DDP: every rank must run it)."""
    out: dict[str, dict] = {}
    for name, metric in metrics.items():
        entry: dict = {"compute": metric.compute().item(), "summary": metric.summary()}
        if isinstance(metric, UtilityLogOdds):
            entry["clamped_count"] = metric.clamped_count()
            entry["per_pair_clamped"] = metric.per_pair_clamped().tolist()
        if metric.keep_per_pair:
            per_pair = metric.per_pair()
            entry["per_pair"] = per_pair.values.tolist()
            entry["per_pair_index"] = per_pair.index.tolist()
        out[name] = entry
    return out


def single_process_values() -> dict[str, dict]:
    """The reference: one process, all pairs in one update."""
    pairs = make_pairs()
    metrics = build_metrics()
    for metric in metrics.values():
        metric.update(**pairs, index=torch.arange(N_PAIRS))
    class_metrics = build_class_metrics()
    for metric in class_metrics.values():
        metric.update(**pairs, answer_class=answer_classes())
    return {**collect(metrics), **collect_classes(class_metrics)}


def run_ddp(out_path: str) -> None:
    """Script body: 2-process CPU DDP test loop; rank 0 writes the values to ``out_path``."""
    import lightning as L
    from torch.utils.data import DataLoader

    class PairMetricsModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))
            self.pairs = make_pairs()
            self.metrics = torch.nn.ModuleDict(build_metrics())
            self.class_metrics = torch.nn.ModuleDict(build_class_metrics())
            self.direct: dict[str, dict] = {}
            self.local_pairs: list[int] = []

        def test_dataloader(self) -> DataLoader:
            indices = rank_indices(self.trainer.global_rank, self.trainer.world_size)
            return DataLoader(indices, batch_size=BATCH_SIZE, shuffle=False)

        def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
            rows = {k: v[batch] for k, v in self.pairs.items()}
            for name, metric in self.metrics.items():
                metric.update(**rows, index=batch)
                self.log(name, metric, on_step=False, on_epoch=True)
            for metric in self.class_metrics.values():
                metric.update(**rows, answer_class=answer_classes()[batch])

        def on_test_epoch_end(self) -> None:
            local = torch.tensor([float(self.metrics["pref_sum"].pair_total)])
            self.local_pairs = [int(x) for x in self.all_gather(local).reshape(-1).tolist()]
            self.direct = {**collect(dict(self.metrics.items())), **collect_classes(dict(self.class_metrics.items()))}

    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = PairMetricsModule()
    trainer.test(module, verbose=False)
    if trainer.is_global_zero:
        record = {
            "world_size": trainer.world_size,
            "local_pairs": module.local_pairs,
            "logged": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "direct": module.direct,
        }
        Path(out_path).write_text(json.dumps(record))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_metrics_under_ddp_equal_single_process(tmp_path: Path) -> None:
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "ddp_metrics.json"
    env = {k: v for k, v in os.environ.items() if k not in {"LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"}}
    env.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_metrics_ddp", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["world_size"] == 2
    assert record["local_pairs"] == [16, 7]

    expected = single_process_values()
    assert expected["util_mean"]["clamped_count"] >= 5  # the clamp count is exercised
    for name, ref in expected.items():
        got = record["direct"][name]
        if name.startswith("class_"):  # split by answer class: float64 sums, exact up to summation order
            assert [v is None for v in got["per_class"]] == [v is None for v in ref["per_class"]], name
            present = [(g, r) for g, r in zip(got["per_class"], ref["per_class"]) if r is not None]
            assert len(present) == 3, name  # classes 0, 1, 2 (class -1 pairs are left out)
            assert [g for g, _ in present] == pytest.approx([r for _, r in present], rel=1e-12, abs=1e-12), name
            assert got["balanced"] == pytest.approx(ref["balanced"], rel=1e-12, abs=1e-12), name
            continue
        assert record["logged"][name] == pytest.approx(ref["compute"], rel=1e-12, abs=1e-12), name
        assert got["compute"] == pytest.approx(ref["compute"], rel=1e-12, abs=1e-12), name
        assert got["summary"]["pairs"] == N_PAIRS
        assert got["summary"]["reduction"] == ref["summary"]["reduction"]
        for key in ("clamped_count", "per_pair_clamped", "per_pair", "per_pair_index"):
            assert got.get(key) == ref.get(key), f"{name}.{key}"
        if "clamped" in ref["summary"]:
            assert got["summary"]["clamped"] == ref["summary"]["clamped"]


if __name__ == "__main__":
    run_ddp(sys.argv[1])
