"""lightning-split compare: equal-cost read-out, chosen m, checks of what is compared, grid alignment, outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from lightning_split.analysis.compare import (
    COST,
    GAIN,
    CompareError,
    compare,
    equal_cost_point,
    find_curve,
    load_run,
    method_label,
)
from lightning_split.analysis.compare_report import table_rows, to_markdown, write_comparison
from lightning_split.analysis.curve import TradeoffCurve
from lightning_split.cli import main as cli_main

GRID = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]


def curve(
    slope_pref: float,
    slope_util: float,
    grid: list[float] = GRID,
    objective: str = "split",
    form: str = "vector",
    pair_index: list[int] | None = None,
) -> TradeoffCurve:
    """A curve with preference ``0.1 + slope_pref·m`` and utility ``-2 - slope_util·m`` (linear, so the
    interpolation is exact), two pairs per multiplier spread ±0.5 around the means."""
    pref = np.array([[0.1 + slope_pref * m - 0.5, 0.1 + slope_pref * m + 0.5] for m in grid])
    util = np.array([[-2.0 - slope_util * m - 0.5, -2.0 - slope_util * m + 0.5] for m in grid])
    made = TradeoffCurve.from_pairs(
        grid, pref, util, [0] * len(grid), split="test", form=form, objective=objective, model="tiny", reduction="sum"
    )
    made.pair_index = pair_index if pair_index is not None else [3, 7]
    return made


def run_folder(
    root: Path,
    name: str,
    made: TradeoffCurve,
    objective_class: str = "lightning_split.objectives.split.SPLIT",
    dataset: str = "psychopathy",
    seed: int = 42,
    data_seed: int = 42,
    report_budget: float = 1.0,
) -> Path:
    """A run folder as ``fit --test_after_fit`` leaves it: ``config.yaml`` and ``tradeoff/test/curve.json``."""
    run = root / name
    (run / "tradeoff" / "test").mkdir(parents=True)
    made.to_json(run / "tradeoff" / "test" / "curve.json")
    config = {
        "seed_everything": seed,
        "tradeoff": {"max_utility_drop": report_budget},
        "model": {
            "class_path": "lightning_split.SteeringModule",
            "init_args": {"objective": {"class_path": objective_class}},
        },
        "data": {"dataset": dataset, "seed": data_seed, "test_size": None},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_equal_cost_point_is_exact_on_a_line() -> None:
    # cost 0.8·m: the budget 1 is reached at m = 1.25, between the grid points 1.0 and 1.5
    point = equal_cost_point(GRID, [0.8 * m for m in GRID], 1.0)
    assert point.reached
    assert point.multiplier == pytest.approx(1.25)
    assert point.value([3.0 * m + 1 for m in GRID]) == pytest.approx(3.0 * 1.25 + 1)


def test_equal_cost_point_stops_at_the_first_crossing_and_flags_an_unreached_budget() -> None:
    grid = [0.0, 1.0, 2.0, 3.0]
    # over the budget at m = 1, back within it at m = 3: the stretch from 0 ends between 0 and 1
    assert equal_cost_point(grid, [0.0, 2.0, 3.0, 0.5], 1.0).multiplier == pytest.approx(0.5)
    never = equal_cost_point(grid, [0.0, 0.1, 0.2, 0.3], 1.0)
    assert (never.multiplier, never.reached) == (3.0, False)
    assert equal_cost_point(grid, [0.0, 0.5, math.nan, 0.0], 1.0).multiplier == 1.0
    with pytest.raises(CompareError, match="max-utility-drop"):
        equal_cost_point(grid, [0.0] * 4, -1.0)


def test_compare_picks_the_known_winner_at_equal_cost(tmp_path: Path) -> None:
    # SPLIT gains 0.5 per unit of m at cost 0.5 per unit (m* = 2, gain 1.0); SFT gains more per m (0.8) but
    # costs 2 per unit (m* = 0.5, gain 0.4): at equal cost SPLIT wins
    split = load_run(run_folder(tmp_path, "split", curve(0.5, 0.5)))
    sft = load_run(run_folder(tmp_path, "sft", curve(0.8, 2.0, objective="sft"), "lightning_split.objectives.sft.SFT"))
    result = compare([sft, split], budget=1.0)
    assert [m.label for m in result.methods] == ["SFT · vector", "SPLIT · vector"]
    assert result.winner("equal_cost") == "SPLIT · vector"
    at = {m.label: m.at_equal_cost for m in result.methods}
    assert at["SPLIT · vector"]["m"].mean == pytest.approx(2.0)
    assert at["SPLIT · vector"][GAIN].mean == pytest.approx(1.0)
    assert at["SPLIT · vector"][COST].mean == pytest.approx(1.0)
    assert at["SFT · vector"]["m"].mean == pytest.approx(0.5)
    assert at["SFT · vector"][GAIN].mean == pytest.approx(0.4)
    # the chosen m is the report's selection: SFT's only m > 0 within the budget is 0.5; SPLIT's best is 2
    chosen = {m.label: m.at_chosen["m"].mean for m in result.methods}
    assert chosen == {"SFT · vector": 0.5, "SPLIT · vector": 2.0}
    assert result.baseline["preference"] == pytest.approx(0.1)


def test_seeds_of_one_label_are_averaged_with_their_spread(tmp_path: Path) -> None:
    runs = [load_run(run_folder(tmp_path, f"s{seed}", curve(0.5, c), seed=seed)) for seed, c in ((1, 0.5), (2, 1.0))]
    (method,) = compare(runs, budget=1.0).methods
    # m* = 2 and 1: gains 1.0 and 0.5
    assert method.at_equal_cost[GAIN].mean == pytest.approx(0.75)
    assert method.at_equal_cost[GAIN].sd == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert method.at_equal_cost[GAIN].text() == "0.750 ± 0.354"


def test_different_datasets_are_refused(tmp_path: Path) -> None:
    a = load_run(run_folder(tmp_path, "a", curve(0.5, 0.5)))
    b = load_run(run_folder(tmp_path, "b", curve(0.5, 0.5), dataset="power-seeking"))
    with pytest.raises(CompareError, match="different dataset .*'psychopathy'.*'power-seeking'"):
        compare([a, b])


def test_different_test_pairs_are_refused(tmp_path: Path) -> None:
    a = load_run(run_folder(tmp_path, "a", curve(0.5, 0.5)))
    b = load_run(run_folder(tmp_path, "b", curve(0.5, 0.5, pair_index=[3, 8])))
    with pytest.raises(CompareError, match=r"different pairs swept \(pair_index\)"):
        compare([a, b])
    c = load_run(run_folder(tmp_path, "c", curve(0.5, 0.5), data_seed=7))
    with pytest.raises(CompareError, match="different data settings"):
        compare([a, c])


def test_different_grids_are_cut_to_the_common_range_with_a_note(tmp_path: Path) -> None:
    wide = load_run(run_folder(tmp_path, "wide", curve(0.5, 0.5)), label="wide")
    narrow_grid = [-0.5, 0.0, 0.25, 0.75, 1.25, 2.0]
    narrow = load_run(run_folder(tmp_path, "narrow", curve(0.5, 0.5, narrow_grid)), label="narrow")
    result = compare([wide, narrow], budget=1.0)
    assert result.grid_range == (-0.5, 2.0)
    assert any("different grids" in note and "[-0.5, 2]" in note for note in result.notes)
    wide_method = result.methods[0]
    assert wide_method.multipliers == (-0.5, 0.0, 0.5, 1.0, 1.5, 2.0)  # 3.0 and -1.0 dropped
    # both reach the budget at m = 2 on the same line, whatever their grid points
    for method in result.methods:
        assert method.at_equal_cost["m"].mean == pytest.approx(2.0)
        assert method.at_equal_cost[GAIN].mean == pytest.approx(1.0)


def test_a_report_selected_under_another_budget_is_noted(tmp_path: Path) -> None:
    a = load_run(run_folder(tmp_path, "a", curve(0.5, 0.5), report_budget=2.0))
    (note,) = compare([a], budget=1.0).notes
    assert note.startswith(f"the reports of {a.source} selected their m under another utility budget")


def test_seeds_on_different_grids_are_refused(tmp_path: Path) -> None:
    a = load_run(run_folder(tmp_path, "a", curve(0.5, 0.5)))
    b = load_run(run_folder(tmp_path, "b", curve(0.5, 0.5, [-1.0, 0.0, 1.0, 2.0, 3.0])))
    with pytest.raises(CompareError, match="different grids; runs sharing a label"):
        compare([a, b])


def test_find_curve_names_what_is_missing_or_ambiguous(tmp_path: Path) -> None:
    run = run_folder(tmp_path, "r", curve(0.5, 0.5))
    assert find_curve(run) == run / "tradeoff" / "test" / "curve.json"
    staged = run / "test-20261130-101010" / "tradeoff" / "test"
    staged.mkdir(parents=True)
    curve(0.5, 0.5).to_json(staged / "curve.json")
    with pytest.raises(CompareError, match="several test curves"):
        find_curve(run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="no test curve"):
        find_curve(tmp_path / "empty")
    csv = curve(0.5, 0.5).to_csv(tmp_path / "curve.csv")
    with pytest.raises(CompareError, match="not a trade-off curve.json"):
        load_run(csv)


def test_labels_come_from_the_config() -> None:
    made = curve(0.5, 0.5)
    assert method_label(made, {"model": {"class_path": "lightning_split.DiffMeanSteering"}}) == "DiffMean · vector"
    assert method_label(made, {}) == "split · vector"


def test_markdown_and_frontier_png_are_written(tmp_path: Path) -> None:
    runs = [
        load_run(run_folder(tmp_path, "split", curve(0.5, 0.5))),
        load_run(run_folder(tmp_path, "sft", curve(0.8, 0.2, objective="sft")), label="SFT · vector"),
    ]
    result = compare(runs, budget=1.0)
    paths = write_comparison(result, tmp_path / "out")
    assert paths["frontier_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert "| SPLIT · vector | 1 | 2.000 | 1.000 | 1.000 |" in text
    assert "| SFT · vector | 1 | ≥ 3.000 | 0.600 | 2.400 |" in text  # cost 0.2·3 stays within the budget
    assert "![preference–utility frontier](frontier.png)" in text
    assert to_markdown(result, None).count("## ") == 4  # two read-outs, how to read it, runs (no notes)


def test_command_writes_outputs_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = run_folder(tmp_path, "a", curve(0.5, 0.5))
    b = run_folder(tmp_path, "b", curve(0.8, 2.0, objective="sft"), "lightning_split.objectives.sft.SFT")
    cli_main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    out = capsys.readouterr().out
    assert "highest preference gain at equal utility cost: SPLIT · vector" in out
    assert (tmp_path / "cmp" / "compare.md").is_file() and (tmp_path / "cmp" / "frontier.png").is_file()
    c = run_folder(tmp_path, "c", curve(0.5, 0.5), dataset="sentiment")
    with pytest.raises(SystemExit) as exited:
        cli_main(["compare", str(a), str(c), "--out", str(tmp_path / "bad")])
    assert exited.value.code == 2
    assert "different dataset" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        cli_main(["compare", str(a), str(b), "--labels", "one"])
    assert "--labels: 1 labels for 2 runs" in capsys.readouterr().err


def test_wandb_logs_offline_into_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    a = run_folder(tmp_path, "a", curve(0.5, 0.5))
    cli_main(["compare", str(a), "--out", str(tmp_path / "cmp"), "--wandb"])
    (offline,) = (tmp_path / "cmp" / "wandb").glob("offline-run-*")
    assert f"W&B run: {offline}" in capsys.readouterr().out
    assert list(offline.glob("*.wandb"))


def _evaluation(run: Path, name: str, digest: str, means: dict[float, tuple[float, float]]) -> None:
    """An ``evaluate-*/results.json`` in ``run`` (only the fields compare reads): per m, the selection and
    held-out halves' mean judged scores with 4 prompts each."""
    halves = {
        half: {str(m): {"mean": pair[i], "n": 4, "excluded": 0} for m, pair in means.items()}
        for i, half in enumerate(("selection", "held-out"))
    }
    (run / name).mkdir()
    results = {"settings": {"control_sha256": digest}, "table": {"aggregate": halves}}
    (run / name / "results.json").write_text(json.dumps(results))


def test_a_judged_evaluation_of_the_runs_control_adds_an_interpolated_column(tmp_path: Path) -> None:
    from lightning_split.artifacts import control_sha256

    run = run_folder(tmp_path, "split", curve(0.5, 0.5))
    (run / "control").mkdir()
    (run / "control" / "control.json").write_text("{}")
    (run / "control" / "control.safetensors").write_bytes(b"weights")
    digest = control_sha256(run / "control")
    # an older evaluation of another control is ignored; the matching one judged m = 0, 1, 2 (halves averaged)
    _evaluation(run, "evaluate-20260101-000000", "another control", {0.0: (9.0, 9.0)})
    _evaluation(run, "evaluate-20250101-000000", digest, {0.0: (1.0, 1.0), 1.0: (1.5, 2.5), 2.0: (3.0, 3.0)})
    loaded = load_run(run)
    assert loaded.judged == ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0))
    assert loaded.judged_source == run / "evaluate-20250101-000000" / "results.json"
    other = load_run(
        run_folder(tmp_path, "sft", curve(0.8, 2.0, objective="sft"), "lightning_split.objectives.sft.SFT")
    )
    result = compare([other, loaded], budget=1.0)
    assert "judged" in result.metrics
    methods = {m.label: m for m in result.methods}
    # SPLIT's m* is 2 (judged 3.0); at m = 1.5, between the evaluated 1 and 2, the score is interpolated
    assert methods["SPLIT · vector"].at_equal_cost["judged"].mean == pytest.approx(3.0)
    split_values = next(v for v in methods["SPLIT · vector"].runs)
    assert split_values.series["judged"][GRID.index(1.5)] == pytest.approx(2.5)
    assert math.isnan(split_values.series["judged"][GRID.index(3.0)])  # outside the evaluated grid
    header, rows = table_rows(result, "equal_cost")
    assert rows[0][header.index("judged")] == "—" and rows[1][header.index("judged")] == "3.000"  # SFT not judged
    assert any("evaluate-20250101-000000" in note for note in result.notes)
    # a control changed after the evaluation: its judged scores no longer belong to the run
    (run / "control" / "control.safetensors").write_bytes(b"retrained")
    assert load_run(run).judged == ()
