"""``lightning-split analyze`` end to end on a tiny-model run folder (control, config.yaml, test curve)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from callbacks.tradeoff import default_grid
from lightning_split.artifacts import control_metadata, save_control
from lightning_split.backbone import load_backbone
from lightning_split.commands.analyze import main
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.engine import PairScorer
from lightning_split.interventions import build_control, form_options
from lightning_split.layout import discover_layout
from lightning_split.sweep import sweep

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {"dataset": "sentiment", "train_size": 16, "test_size": 6, "eval_batch_size": 3, "seed": 3}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_backbone_dir: Path) -> Path:
    """What `lightning-split fit` leaves behind, built directly: a vector control at block 1 of the tiny Llama,
    config.yaml with the data section, and the test sweep over the callback's default 21-point grid."""
    run = tmp_path_factory.mktemp("run")
    model, tokenizer = load_backbone(str(tiny_backbone_dir))
    layout = discover_layout(model)
    control = build_control(form_options("vector"), layout, [1])
    with torch.no_grad():
        control[0].vector.copy_(torch.randn(layout.hidden_size, generator=torch.Generator().manual_seed(0)))
    hparams = {"backbone": str(tiny_backbone_dir), "positions": "all"}
    save_control(run / "control", control, control_metadata(control, hparams, "split", [2.0]))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": DATA}))
    data = PolarityDataModule(**DATA)
    data.set_tokenizer(tokenizer)
    data.setup()
    scorer = PairScorer(model, layout, pad_id=tokenizer.pad_token_id)
    curve = sweep(scorer, control, data.test_dataloader(), default_grid([2.0]), progress=False, split="test")
    (run / "tradeoff" / "test").mkdir(parents=True)
    curve.to_json(run / "tradeoff" / "test" / "curve.json")
    return run


def test_analyze_writes_the_report_and_figures(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(run_dir), "--reference-pairs", "12", "--k", "3", "--batch-size", "4"])
    out = run_dir / "manifold"
    assert f"wrote {out / 'manifold.md'}" in capsys.readouterr().out
    text = (out / "manifold.md").read_text()
    for heading in (
        "## Unsteered references",
        "## Layer 1: means over activations",
        "## Layer 3: means over activations",  # the last block (4 blocks)
        "## Distance and utility",
        "## Share of Δh in the utility-relevant directions",
        "## Curve fits: the paper's RQ decay beside baselines",
        "## Reading",
    ):
        assert heading in text
    assert "nan" not in text.lower()
    assert "differ from the saved curve's by at most" in text
    gap = float(text.split("by at most ")[1].split(" ")[0])
    assert gap < 1e-4  # the measuring pass reproduces the saved curve (float32 batches of other sizes)
    assert "| control | vector split, layer 1, steering all tokens |" in text
    assert "| rq | 9 |" in text and "| logistic | 4 |" in text and "R² (train → test)" in text
    for layer in (1, 2, 3):
        for name in (f"plane-layer{layer}.png", f"distance-layer{layer}.png"):
            assert (out / name).stat().st_size > 10_000
            assert f"]({name})" in text


def test_analyze_refuses_a_folder_without_a_control(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "the run saved no control" in capsys.readouterr().err


def test_analyze_refuses_layers_below_the_control(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([str(run_dir), "--layers", "0", "--out", str(run_dir / "bad")])
    assert "--layers: layer 0" in capsys.readouterr().err
    assert not (run_dir / "bad").exists()  # nothing half-written


def test_analyze_names_the_curves_it_found(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([str(run_dir), "--curve", str(run_dir / "tradeoff" / "val-epoch000" / "curve.json")])
    assert "tradeoff/test/curve.json" in capsys.readouterr().err


def test_analyze_measures_a_grid_of_its_own(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--multipliers`` measures another grid on the curve's pairs; the report names both grids and compares the
    recomputed utility with the saved curve's only where the grids meet (0 and 2 here)."""
    out = run_dir / "wider"
    main([str(run_dir), "--multipliers", "0", "2", "3", "4", "--reference-pairs", "8", "--k", "3", "--out", str(out)])
    capsys.readouterr()
    text = (out / "manifold.md").read_text()
    assert "| grid | 0, 2, 3, 4 (the run swept -2, -1.8," in text
    assert "curve on the same pairs at 2 multipliers the saved curve also has" in text
    assert float(text.split("by at most ")[1].split(" ")[0]) < 1e-4
    assert "nan" not in text.lower()


def test_analyze_refuses_a_grid_without_zero_before_loading(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([str(run_dir), "--multipliers", "1", "2", "--out", str(run_dir / "nozero")])
    assert "--multipliers: the multiplier grid must contain 0" in capsys.readouterr().err
    assert not (run_dir / "nozero").exists()


def test_a_second_analysis_keeps_the_first(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--reference-pairs", "8", "--k", "3", "--multipliers", "0", "2"]
    main([str(run_dir), *small])
    first = Path(capsys.readouterr().out.split("wrote ")[1].strip())
    before = first.read_bytes()
    main([str(run_dir), *small])
    second = Path(capsys.readouterr().out.split("wrote ")[1].strip())
    assert second.parent != first.parent and second.parent.name.startswith("manifold-")
    assert first.read_bytes() == before  # the earlier report is not overwritten


def test_analyze_refuses_a_non_empty_out_and_bad_counts(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = run_dir / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("someone else's")
    with pytest.raises(SystemExit):
        main([str(run_dir), "--out", str(taken)])
    assert f"--out {taken} is not empty" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    with pytest.raises(SystemExit):
        main([str(run_dir), "--k", "0"])
    assert "k (--k) must be >= 1, got 0" in capsys.readouterr().err
