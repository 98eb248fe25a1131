"""Every objective steers the real SmolLM2 the way it was trained, in both forms, on held-out pairs (slow).

Each objective (SFT, RePS, SPLIT, DPO; DiffMean) is trained briefly with the vector and the LoRA form on the
embedded sentiment pairs, then swept at m = -1, 0, 1 on held-out test pairs. Preference at m = +1 must be above
m = 0, and, since every objective here trains the "sub" direction too (bidirectional; DiffMean's vector is a
difference of means, so -v points the other way), preference at m = -1 must be below m = 0.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from lightning_split import DiffMeanSteering, SteeringModule
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.interventions import LoRAOptions, VectorOptions
from lightning_split.objectives import DPO, SFT, SPLIT, RePS
from lightning_split.sweep import sweep

METHODS = {"sft": SFT, "reps": RePS, "split": SPLIT, "dpo": DPO}
FORMS = {"vector": (VectorOptions(), 0.1), "lora": (LoRAOptions(rank=4), 0.05)}
CASES = [(name, form) for name in METHODS for form in FORMS] + [("diffmean", "vector")]


def _steered_preference(method: str, form: str, backbone: Path, root: Path) -> list[float]:
    """Mean preference log-odds on 8 held-out pairs at m = -1, 0, 1 after 4 training steps (16 pairs, 2 epochs)."""
    L.seed_everything(0, verbose=False)
    if method == "diffmean":
        model = DiffMeanSteering(backbone=str(backbone), layer=15)
    else:
        options, lr = FORMS[form]
        model = SteeringModule(
            backbone=str(backbone), objective=METHODS[method](), form=options, layer=15, training={"lr": lr}
        )
    data = PolarityDataModule(dataset="sentiment", train_size=16, val_size=0, test_size=8, batch_size=8,
                              eval_batch_size=8)  # fmt: skip
    trainer = L.Trainer(
        max_epochs=1 if method == "diffmean" else 2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        default_root_dir=str(root),
    )  # fmt: skip
    trainer.fit(model, data)
    curve = sweep(model.scorer, model.control, data.test_dataloader(), [-1.0, 0.0, 1.0], positions=model.positions,
                  progress=False)  # fmt: skip
    return curve.preference


@pytest.mark.slow
def test_every_objective_and_form_steers_held_out_pairs_both_ways(smollm2_dir, tmp_path) -> None:
    failures = []
    for method, form in CASES:
        down, base, up = _steered_preference(method, form, smollm2_dir, tmp_path / f"{method}-{form}")
        print(f"{method}-{form}: m=-1 {down:.3f}  m=0 {base:.3f}  m=+1 {up:.3f}")
        if not up > base:
            failures.append(f"{method}-{form}: preference at m=+1 ({up:.3f}) is not above m=0 ({base:.3f})")
        if not down < base:
            failures.append(f"{method}-{form}: preference at m=-1 ({down:.3f}) is not below m=0 ({base:.3f})")
    assert not failures, "\n".join(failures)
