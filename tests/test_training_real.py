"""Trained controls on the real SmolLM2 and the real Psychopathy pairs beat the untrained model (slow).

Each form is trained with SPLIT for a few steps on held-in pairs and evaluated at ``m = 1`` on held-out
pairs against the unsteered model on the same pairs (``*_base`` metrics of the same run).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from lightning_split import SteeringModule
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.interventions import form_options
from lightning_split.objectives import SPLIT

SETTINGS = {
    "vector": {"training": {"lr": 0.1}, "form": form_options("vector")},
    "lora": {"training": {"lr": 0.05}, "form": form_options("lora", rank=4)},
    "local_weight": {"training": {"lr": 0.05}, "form": form_options("local_weight")},
}


def _fit_and_test(form: str, backbone: Path, data_dir: Path, root: Path) -> dict[str, float]:
    L.seed_everything(0, verbose=False)
    model = SteeringModule(
        backbone=str(backbone), layer=15, objective=SPLIT(lambda_n=0.5, gamma=8.0, theta=0.3, bidirectional=False),
        **SETTINGS[form],
    )  # fmt: skip
    data = PolarityDataModule(
        dataset="psychopathy", data_dir=str(data_dir), train_size=48, val_size=10, test_size=30,
        batch_size=8, eval_batch_size=20,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=1.0, default_root_dir=str(root),
    )  # fmt: skip
    trainer.fit(model, data)
    return trainer.test(model, data, verbose=False)[0]


@pytest.mark.slow
@pytest.mark.parametrize("form", list(SETTINGS))
def test_split_training_lifts_heldout_preference_and_accuracy(form, smollm2_dir, shared_data_dir, tmp_path):
    result = _fit_and_test(form, smollm2_dir, shared_data_dir, tmp_path)
    print(form, {k: round(v, 4) for k, v in result.items()})
    assert result["test/pref_logodds"] > result["test/pref_logodds_base"] + 0.05
    assert result["test/pair_accuracy"] > result["test/pair_accuracy_base"]
