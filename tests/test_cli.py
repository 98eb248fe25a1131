"""``lightning-split fit`` then ``predict`` from the checkpoint, end to end on a tiny backbone."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lightning_split.cli import main


def _common(backbone: Path, data: Path, root: Path) -> list[str]:
    return [
        "--model", "lightning_split.SteeringModule",
        "--model.init_args.backbone", str(backbone),
        "--model.init_args.objective", "lightning_split.objectives.SPLIT",
        "--model.init_args.form", "lightning_split.interventions.VectorOptions",
        "--model.init_args.layer", "2",
        "--model.init_args.lr", "0.05",
        "--data.dataset", str(data),
        "--data.batch_size", "4",
        "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(root),
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false",
        "--seed_everything", "3",
    ]  # fmt: skip


def test_fit_then_predict_writes_steered_generations(tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *_common(tiny_backbone_dir, sentiment_like_jsonl, tmp_path), "--trainer.max_epochs", "1",
          "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"])  # fmt: skip
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    state = torch.load(ckpts[-1], weights_only=True)
    assert set(state["state_dict"]) == {"control.0.vector"}, "the checkpoint must hold only the control"
    assert (tmp_path / "control" / "control.safetensors").is_file()

    out = tmp_path / "predictions.jsonl"
    main(["predict", *_common(tiny_backbone_dir, sentiment_like_jsonl, tmp_path), "--ckpt_path", str(ckpts[-1]),
          "--model.init_args.predict_multipliers", "[0.0, 4.0]", "--model.init_args.max_new_tokens", "5",
          "--trainer.callbacks+=lightning_split.callbacks.JsonlPredictionWriter",
          "--trainer.callbacks.output_path", str(out)])  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    test_pairs = 5
    assert len(rows) == 2 * test_pairs
    assert sorted({r["multiplier"] for r in rows}) == [0.0, 4.0]
    assert all(r["prompt"].startswith("<|im_start|>") and isinstance(r["completion"], str) for r in rows)
    by_m = {m: [r["completion"] for r in rows if r["multiplier"] == m] for m in (0.0, 4.0)}
    assert by_m[0.0] != by_m[4.0], "steering at m=4 changed no generation"
