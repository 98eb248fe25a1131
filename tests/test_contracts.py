"""The module ↔ callbacks contracts: SteeringModule is a SweepTarget, other modules are refused, one grid check,
and callbacks list their files through ``outputs()``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning_split.callbacks import JsonlPredictionWriter, TradeoffCurveCallback

from lightning_split import SteeringModule
from lightning_split.contracts import HasOutputs, RunDescription, SweepSpec, SweepTarget
from lightning_split.grid import check_grid
from lightning_split.interventions import VectorOptions
from lightning_split.sweep import sweep

REFUSAL = (
    "TradeoffCurveCallback needs a module that satisfies lightning_split.contracts.SweepTarget, but BoringModel has "
    "no sweep_spec() or describe()"
)


def test_steering_module_satisfies_the_sweep_contract(tiny_backbone_dir: Path) -> None:
    module = SteeringModule(
        backbone=str(tiny_backbone_dir),
        form=VectorOptions(),
        layer=2,
        positions="completion",
        training={"multipliers": [0.5, 1.5]},
        evaluation={"nll_reduction": "sum"},
    )
    assert isinstance(module, SweepTarget)
    with pytest.raises(RuntimeError, match="backbone is not loaded"):
        module.sweep_spec()
    module.configure_model()
    spec = module.sweep_spec()
    assert isinstance(spec, SweepSpec)
    assert spec.scorer is module.scorer and spec.control is module.control
    assert (spec.positions, spec.reduction, spec.training_multipliers) == ("completion", "sum", (0.5, 1.5))
    assert spec.answer_classes == () and callable(spec.lower)  # no trainer, no data module: no classes
    assert module.describe() == RunDescription(
        model=str(tiny_backbone_dir), form="vector", objective="split", layers=(2,)
    )


def test_callback_refuses_a_module_without_the_contract(tmp_path: Path) -> None:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[TradeoffCurveCallback(multipliers=[0.0, 1.0])], default_root_dir=str(tmp_path),
    )  # fmt: skip
    with pytest.raises(TypeError) as refused:
        trainer.validate(BoringModel())
    assert str(refused.value).startswith(REFUSAL)
    assert "docs/extending.md" in str(refused.value)


@pytest.mark.parametrize("grid", [[1.0, 2.0], [0.0, 1.0, 1.0], [], [0.0, float("nan")]])
def test_callback_and_sweep_share_one_grid_check(grid: list[float]) -> None:
    with pytest.raises(ValueError) as expected:
        check_grid(grid)
    with pytest.raises(ValueError) as by_callback:
        TradeoffCurveCallback(multipliers=grid)
    with pytest.raises(ValueError) as by_sweep:  # the grid is checked before the scorer is touched
        sweep(None, [], [], grid, progress=False)  # type: ignore[arg-type]
    assert str(by_callback.value) == str(by_sweep.value) == str(expected.value)
    assert check_grid([0, 1], need_zero=True) == [0.0, 1.0]
    assert check_grid([1.0, 2.0], need_zero=False) == [1.0, 2.0]


def test_callbacks_list_their_outputs(tmp_path: Path) -> None:
    tradeoff = TradeoffCurveCallback()
    writer = JsonlPredictionWriter()
    assert isinstance(tradeoff, HasOutputs) and isinstance(writer, HasOutputs)
    assert tradeoff.outputs() == {} and writer.outputs() == {}  # nothing written yet
    tradeoff.last_report = {"dir": tmp_path, "report_md": tmp_path / "report.md"}
    writer.path = tmp_path / "predictions.jsonl"
    assert tradeoff.outputs() == {"trade-off report": tmp_path, "report_md": tmp_path / "report.md"}
    assert writer.outputs() == {"predictions": tmp_path / "predictions.jsonl"}
