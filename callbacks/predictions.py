"""Writes steered generations from ``lightning-split predict`` as JSONL, one row per prompt and multiplier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter


class JsonlPredictionWriter(BasePredictionWriter):
    """Appends each predict batch's rows (``index``, ``multiplier``, ``prompt``, ``completion``) to a JSONL file.

    Args:
        output_path: the file (default ``<log_dir>/predictions.jsonl``); under DDP each rank writes
            ``<stem>.rank<k>.jsonl``. An existing file is replaced at the start of ``predict``.

    Attributes:
        path: the file being written (set when ``predict`` starts), or ``None``.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self.path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(self.output_path or Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl")
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.path = path

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: list[dict[str, Any]],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        assert self.path is not None
        with self.path.open("a") as f:
            for row in prediction:
                f.write(json.dumps(row) + "\n")

    def outputs(self) -> dict[str, Path]:
        """``{"predictions": path}`` once ``predict`` started (:class:`~lightning_split.contracts.HasOutputs`)."""
        return {"predictions": self.path} if self.path is not None else {}

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.path is not None:
            print(f"predictions written to {self.path}")
