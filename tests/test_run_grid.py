"""scripts/run_grid.py: the cells, resume (skip finished, redo changed or unfinished), progress, results."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from lightning_split.analysis.curve import TradeoffCurve

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_grid", ROOT / "scripts" / "run_grid.py")
assert _spec is not None and _spec.loader is not None
run_grid = importlib.util.module_from_spec(_spec)
sys.modules["run_grid"] = run_grid
_spec.loader.exec_module(run_grid)

OBJECTIVE_CLASSES = {"sft": "lightning_split.objectives.sft.SFT", "split": "lightning_split.objectives.split.SPLIT"}
SLOPES = {"sft": (0.8, 2.0), "split": (0.5, 0.5)}  # preference and utility-cost per unit of m: SPLIT wins


class FakeFit:
    """Stands in for ``lightning-split fit``: writes what a fit leaves (config, test curve, report)."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def __call__(self, command: list[str], log: Path) -> int:
        folder = Path(command[command.index("--trainer.default_root_dir") + 1])
        seed = int(command[command.index("--seed_everything") + 1])
        objective = folder.parent.name.split("-")[0]
        self.ran.append(f"{objective} {seed}")
        grid = [-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
        pref_slope, cost_slope = SLOPES[objective]
        pref = np.array([[0.1 + pref_slope * m] * 2 for m in grid]) + 0.01 * (seed - 42)
        util = np.array([[-2.0 - cost_slope * m] * 2 for m in grid])
        curve = TradeoffCurve.from_pairs(
            grid, pref, util, [0] * len(grid), split="test", form="vector", objective=objective, model="m"
        )
        curve.pair_index = [0, 1]
        report = folder / "tradeoff" / "test"
        report.mkdir(parents=True)
        curve.to_json(report / "curve.json")
        (report / "report.md").write_text("report")
        config = {
            "seed_everything": seed,
            "model": {"init_args": {"objective": {"class_path": OBJECTIVE_CLASSES[objective]}}},
            "data": {"dataset": "sentiment", "seed": 42},
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        log.write_text("ok")
        return 0


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """A model's configs folder (``configs/<model>/``) with the two reduced-grid configs."""
    root = tmp_path / "configs" / "smollm2"
    for objective in ("sft", "split"):
        path = run_grid.cell_configs("sentiment", objective, "vector", root)[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {objective}\nseed_everything: 42\n")
    return root


def test_grid_has_three_seeds_for_the_headline_cells_only() -> None:
    cells = run_grid.Grid().cells()
    seeds: dict[tuple[str, str, str], int] = {}
    for cell in cells:
        seeds[(cell.dataset, cell.objective, cell.form)] = seeds.get((cell.dataset, cell.objective, cell.form), 0) + 1
    assert seeds[("psychopathy", "split", "vector")] == 3
    assert seeds[("power-seeking", "reps", "lora")] == 3
    assert seeds[("psychopathy", "dpo", "vector")] == 1
    assert seeds[("psychopathy", "split", "reft")] == 1
    assert seeds[("power-seeking", "diffmean", "vector")] == 1
    assert ("psychopathy", "diffmean", "lora") not in seeds
    assert len(cells) == 2 * (4 * 4 + 1) + 2 * 6 * 2  # 34 cells, 12 headline cells with two more seeds
    assert {cell.seed for cell in cells[:34]} == {42}  # one seed of every cell first: a stopped grid covers most
    assert len(set(cells)) == len(cells)
    for cell in cells:  # every cell has its shipped config
        assert all(path.is_file() for path in run_grid.cell_configs(cell.dataset, cell.objective, cell.form))
    gemma = run_grid.MODELS["gemma3-270m"].cells()
    assert {cell.form for cell in gemma} == {"vector", "lora"}
    assert len(gemma) == 2 * (4 * 2 + 1) + 2 * 6 * 2  # 18 first-seed cells, the 12 headline cells twice more
    for cell in gemma:
        files = run_grid.cell_configs(cell.dataset, cell.objective, cell.form, ROOT / "configs" / "gemma3-270m")
        assert all(path.is_file() for path in files)


def test_resume_skips_finished_cells_and_redoes_changed_and_unfinished_ones(tmp_path: Path, configs: Path) -> None:
    cells = run_grid.REDUCED_GRID.cells()
    out, fake, said = tmp_path / "grid", FakeFit(), []
    status = run_grid.run_grid(cells, run_grid.TINY, out, fake, configs, said.append)
    assert fake.ran == ["sft 42", "split 42"]
    assert set(status.values()) == {"finished"}
    assert any("about" in line and "to go" in line for line in said)

    fake.ran.clear()
    status = run_grid.run_grid(cells, run_grid.TINY, out, fake, configs, said.append)
    assert fake.ran == [] and set(status.values()) == {"skipped"}

    # a changed config reruns its cell only; an unfinished cell (killed mid-run) is cleaned and rerun
    run_grid.cell_configs("sentiment", "split", "vector", configs)[0].write_text("# split\nseed_everything: 7\n")
    sft = out / "sentiment" / "sft-vector" / "seed42"
    record = run_grid.CellRecord.read(sft)
    assert record is not None
    record.status = "running"
    record.write(sft)
    (sft / "leftover.txt").write_text("half-written")
    status = run_grid.run_grid(cells, run_grid.TINY, out, fake, configs, said.append)
    assert fake.ran == ["sft 42", "split 42"]
    assert not (sft / "leftover.txt").exists()

    # a different size is a different cell
    fake.ran.clear()
    run_grid.run_grid(cells[:1], run_grid.replace(run_grid.TINY, train_pairs=9), out, fake, configs, said.append)
    assert fake.ran == ["sft 42"]


def test_a_changed_base_config_reruns_the_cells_that_extend_it(tmp_path: Path, configs: Path) -> None:
    base = configs.parent / "base.yaml"
    base.write_text("trainer: {max_epochs: 2}\n")
    sft = run_grid.cell_configs("sentiment", "sft", "vector", configs)[0]
    sft.write_text("base: ../../base.yaml\n" + sft.read_text())
    cells, out, fake = run_grid.REDUCED_GRID.cells(), tmp_path / "grid", FakeFit()
    run_grid.run_grid(cells, run_grid.TINY, out, fake, configs, lambda _: None)
    base.write_text("trainer: {max_epochs: 3}\n")
    run_grid.run_grid(cells, run_grid.TINY, out, fake, configs, lambda _: None)
    assert fake.ran == ["sft 42", "split 42", "sft 42"]  # split does not extend the base: it is kept


def test_a_finished_cell_whose_saved_seed_differs_is_redone(tmp_path: Path, configs: Path) -> None:
    cells = run_grid.REDUCED_GRID.cells()[:1]
    out, fake = tmp_path / "grid", FakeFit()
    run_grid.run_grid(cells, run_grid.TINY, out, fake, configs, lambda _: None)
    saved = out / cells[0].folder / "config.yaml"
    saved.write_text(saved.read_text().replace("seed_everything: 42", "seed_everything: 1"))
    run_grid.run_grid(cells, run_grid.TINY, out, fake, configs, lambda _: None)
    assert fake.ran == ["sft 42", "sft 42"]


def test_a_folder_that_is_not_a_cell_is_not_removed(tmp_path: Path, configs: Path) -> None:
    cells = run_grid.REDUCED_GRID.cells()[:1]
    foreign = tmp_path / "grid" / cells[0].folder
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit, match="is not a grid cell"):
        run_grid.run_grid(cells, run_grid.TINY, tmp_path / "grid", FakeFit(), configs, lambda _: None)
    assert (foreign / "mine.txt").read_text() == "keep"


def test_results_compare_the_finished_cells_with_seeds(tmp_path: Path, configs: Path) -> None:
    grid = run_grid.replace(run_grid.REDUCED_GRID, seeds=(42, 43), headline=frozenset({("split", "vector")}))
    cells = grid.cells()
    out = tmp_path / "grid"
    status = run_grid.run_grid(cells, run_grid.TINY, out, FakeFit(), configs, lambda _: None)
    results = run_grid.write_results(cells, status, run_grid.TINY, out).read_text()
    assert "### sentiment · vector" in results
    assert "| SPLIT · vector | 2 | 2.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 |" in results
    assert "Highest preference gain: **SPLIT · vector**." in results
    assert (out / "compare" / "sentiment" / "vector" / "frontier.png").is_file()
    # the paper's layout: a row per method (no paper columns for a dataset the paper has not), and SPLIT's margin
    # over SFT at equal cost (SFT's cost reaches the budget at m = 0.5, gain 0.4; SPLIT's at m = 2, gain 1)
    layout = results.split("## sentiment: the paper's layout")[1].split("\n## ")[0]
    assert "| vector | SPLIT | 2 |" in layout and "| vector | SFT | 1 |" in layout and "paper" not in layout
    margins = results.split("## SPLIT against SFT and RePS at equal utility cost")[1]
    assert "| sentiment | vector | 1.000 ± 0.000 | 0.400 | — | +0.600 (one seed) | — |" in margins


def test_split_margins_read_ahead_behind_or_level_by_the_combined_spread() -> None:
    from grid_tables import margin

    from lightning_split.analysis.compare import Summary

    assert margin(Summary(0.5, 0.1, 3), Summary(0.2, 0.1, 3)) == "+0.300 ± 0.141 (ahead)"
    assert margin(Summary(0.2, 0.1, 3), Summary(0.5, 0.1, 3)) == "-0.300 ± 0.141 (behind)"
    assert margin(Summary(0.3, 0.2, 3), Summary(0.2, 0.2, 2)) == "+0.100 ± 0.283 (level)"


def test_dry_run_estimates_from_the_finished_cells_of_the_folder(tmp_path: Path, configs: Path) -> None:
    cells = run_grid.REDUCED_GRID.cells()
    out = tmp_path / "grid"
    tiny = replace(run_grid.TINY, seconds_per_cell=60.0)
    assert "sentiment: 60.0 s per cell" in run_grid.dry_run_estimate(cells, tiny, out, configs)
    run_grid.run_grid(cells[:1], run_grid.TINY, out, FakeFit(), configs, lambda _: None)
    record = run_grid.CellRecord.read(out / cells[0].folder)
    assert record is not None
    record.seconds = 600.0
    record.write(out / cells[0].folder)
    said = run_grid.dry_run_estimate(cells, run_grid.TINY, out, configs)
    assert said.startswith("estimate: 0:10:00 for the 1 cells not finished") and "its 1 cells finished" in said
    # a cell finished at another size is not finished at this one, and its time is not evidence for this size
    other = replace(run_grid.TINY, train_pairs=9, seconds_per_cell=60.0)
    assert run_grid.dry_run_estimate(cells, other, out, configs).startswith("estimate: 0:02:00 for 2 cells")


def test_a_dataset_can_have_its_own_size() -> None:
    size = replace(run_grid.TINY, per_dataset={"slow": {"train_pairs": 4, "seconds_per_cell": 9.0}})
    assert size.for_dataset("slow").train_pairs == 4 and size.for_dataset("other").train_pairs == 8
    assert size.for_dataset("slow").overrides("split")[:2] == ["--data.train_size", "4"]
    assert "slow: 4 training pairs" in size.cuts()
    # an option given on the command line wins over every dataset's own value
    given = size.overridden(train_pairs=16)
    assert given.for_dataset("slow").train_pairs == 16
    assert given.for_dataset("slow").seconds_per_cell is None  # measured at another size: not reused
    assert size.overridden() is size
    two_hours = run_grid.SIZES["two-hours"]
    assert two_hours.for_dataset("power-seeking").train_pairs < two_hours.for_dataset("psychopathy").train_pairs


def test_finished_cells_are_found_in_the_folder_for_the_results(tmp_path: Path, configs: Path) -> None:
    cells = run_grid.REDUCED_GRID.cells()
    out = tmp_path / "grid"
    run_grid.run_grid(cells[:1], run_grid.TINY, out, FakeFit(), configs, lambda _: None)
    assert run_grid.finished_cells(cells, run_grid.TINY, out, configs) == {cells[0]: "skipped"}
    assert run_grid.finished_cells(cells, replace(run_grid.TINY, train_pairs=9), out, configs) == {}  # other size
    results = run_grid.write_results(cells, {cells[0]: "skipped"}, run_grid.TINY, out).read_text()
    assert "1 of 2 cells finished." in results


def test_progress_estimates_time_left_from_alike_cells() -> None:
    cell = run_grid.Cell
    progress = run_grid.Progress({cell("a", "sft", "vector", 1): 10.0, cell("a", "sft", "lora", 1): 30.0})
    assert progress.left([cell("a", "split", "vector", 1), cell("b", "split", "reft", 1)]) == 10.0 + 20.0
    assert run_grid.Progress().left([cell("a", "sft", "vector", 1)]) is None
    slow = run_grid.Progress({cell("a", "sft", "vector", 1): 10.0, cell("a", "reps", "vector", 1): 50.0})
    assert slow.left([cell("a", "reps", "vector", 2)]) == 50.0  # its own objective, not the form's mean of 30
    assert slow.left([cell("a", "reps", "reft", 1)]) == 50.0  # no reft cell: the same objective on the dataset
    assert run_grid.clock(3723) == "1:02:03"


def test_size_options_and_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    size = run_grid.SIZES["two-hours"]
    assert "--trainer.max_epochs" not in size.overrides("diffmean")
    assert size.overrides("split")[:4] == ["--data.train_size", "96", "--trainer.max_epochs", "1"]
    assert run_grid.main(["--dry-run", "--datasets", "psychopathy", "--forms", "vector", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 epoch(s)" in out and "psychopathy split-vector seed 44" in out


@pytest.mark.slow
def test_reduced_grid_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two-cell CI grid with the real model and the embedded sentiment pairs (about 6 minutes on 2 loaded
    cores, 2 to 3 CPU minutes)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_grid.main(["--reduced", "--out", str(tmp_path / "grid")]) == 0
    results = (tmp_path / "grid" / "results.md").read_text()
    assert (
        "## sentiment · vector" in results and "| SFT · vector | 1 |" in results and "| SPLIT · vector | 1 |" in results
    )
    assert (tmp_path / "grid" / "compare" / "sentiment" / "vector" / "frontier.png").is_file()
