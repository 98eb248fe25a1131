"""The judged evaluation protocol's parts: seeded disjoint halves, the choice of m on the selection half alone, the
exclusion of unparseable judgments, Spearman's rho, the run's curve, and the resumable generation store."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from lightning_split.analysis import TradeoffCurve
from lightning_split.errors import OptionError
from lightning_split.evaluation import (
    AGGREGATE,
    EvalPrompt,
    EvaluationFolderError,
    Generation,
    GenerationStore,
    JudgedGeneration,
    NoValidJudgmentsError,
    choose_multiplier,
    correlations,
    from_run,
    power_seeking_prompts,
    score_table,
    spearman,
    split_halves,
)
from lightning_split.evaluation.store import GENERATIONS_FILE


def _prompts(groups: dict[str, int]) -> list[EvalPrompt]:
    return [EvalPrompt(f"c{g}-{j}", f"instruction {g}/{j}", g) for g, n in groups.items() for j in range(n)]


def test_halves_are_disjoint_cover_each_group_half_and_half_and_depend_only_on_the_seed() -> None:
    prompts = _prompts({"3": 8, "7": 8, "9": 5})
    halves = split_halves(prompts, seed=0)
    assert list(halves) == [p.id for p in prompts]  # every prompt once, in the given order
    for group, size in (("3", 8), ("7", 8), ("9", 5)):
        chosen = [h for pid, h in halves.items() if pid.startswith(f"c{group}-")]
        assert chosen.count("selection") == (size + 1) // 2 and chosen.count("held-out") == size // 2
    assert split_halves(list(reversed(prompts)), seed=0) == {p.id: halves[p.id] for p in reversed(prompts)}
    assert split_halves(prompts, seed=0) == halves
    others = [split_halves(prompts, seed=s) for s in (1, 2, 3)]
    assert any(o != halves for o in others)
    with pytest.raises(OptionError, match="group '9' has 1 prompt"):
        split_halves(_prompts({"3": 4, "9": 1}), seed=0)
    with pytest.raises(OptionError, match="duplicate prompt ids"):
        split_halves([*_prompts({"3": 2}), *_prompts({"3": 2})], seed=0)


def test_power_seeking_prompts_are_a_seeded_subset_of_the_test_file_with_the_pair_answers(
    shared_data_dir: Path,
) -> None:
    with open(shared_data_dir / "bipo" / "power-seeking-test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    every = power_seeking_prompts(shared_data_dir)
    assert len(every) == len(rows) and every[5].id == "ps0005"
    subset = power_seeking_prompts(shared_data_dir, max_prompts=10, seed=4)
    assert subset == power_seeking_prompts(shared_data_dir, max_prompts=10, seed=4)
    assert subset != power_seeking_prompts(shared_data_dir, max_prompts=10, seed=5)
    assert len(subset) == 10 and [p.id for p in subset] == sorted(p.id for p in subset)
    for p in subset:
        row = rows[int(p.id[2:])]
        assert p.prompt == row["question"].strip()
        assert p.context == {"matching": row["matching"].strip(), "not_matching": row["not_matching"].strip()}
    with pytest.raises(OptionError, match="--max_prompts is 1"):
        power_seeking_prompts(shared_data_dir, max_prompts=1)


def _judged(half: str, m: float, score: float | None, pid: str = "p") -> JudgedGeneration:
    status = "scored" if score is not None else "unparseable"
    return JudgedGeneration(
        pid, half, m, "q", "text", {"behavior": score, AGGREGATE: score}, {"behavior": "r"}, {"behavior": status}, {}
    )  # type: ignore[arg-type]


def _rows(scores: dict[tuple[str, float], list[float | None]]) -> list[JudgedGeneration]:
    return [_judged(h, m, s, f"{h}{i}") for (h, m), values in scores.items() for i, s in enumerate(values)]


def test_the_chosen_m_is_the_argmax_on_the_selection_half_even_when_the_held_out_half_disagrees() -> None:
    judged = _rows(
        {
            ("selection", 0.0): [1, 2],
            ("selection", 2.0): [3, 4],  # best on the selection half: mean 3.5
            ("selection", 4.0): [2, 3],
            ("held-out", 0.0): [1, 1],
            ("held-out", 2.0): [2, 2, 3],  # mean 7/3
            ("held-out", 4.0): [4, 4],  # best on the held-out half, never chosen
        }
    )
    table = score_table(judged, [0.0, 2.0, 4.0])
    choice = choose_multiplier(table)
    assert choice.m == 2.0 and choice.selection_mean == 3.5 and choice.held_out_mean == pytest.approx(7 / 3)
    assert choice.tied == [2.0] and choice.unchoosable == []
    assert table["behavior"]["held-out"][4.0].mean == 4.0 and table[AGGREGATE]["selection"][0.0].n == 2


@pytest.mark.parametrize(("tied", "chosen"), [([-2.0, 2.0, 1.0], 1.0), ([-1.0, 1.0], -1.0), ([3.0, -4.0], 3.0)])
def test_ties_go_to_the_smallest_abs_m_then_the_smaller_m(tied: list[float], chosen: float) -> None:
    grid = [*tied, 0.5]
    judged = _rows({**{("selection", m): [3.0] for m in tied}, ("selection", 0.5): [2.0]})
    judged += _rows({("held-out", m): [1.0] for m in grid})
    choice = choose_multiplier(score_table(judged, grid))
    assert choice.m == chosen and sorted(choice.tied) == sorted(tied)


def test_a_multiplier_with_only_unparseable_judgments_is_never_chosen_and_they_are_excluded_and_counted() -> None:
    judged = _rows(
        {
            ("selection", 0.0): [1, None],
            ("selection", 4.0): [None, None],  # no valid judgment: cannot be chosen (its mean is not 0)
            ("held-out", 0.0): [1, 1],
            ("held-out", 4.0): [4, 4],
        }
    )
    table = score_table(judged, [0.0, 4.0])
    assert table[AGGREGATE]["selection"][0.0].mean == 1.0  # the unparseable one is left out, not read as 0
    assert (table[AGGREGATE]["selection"][0.0].n, table[AGGREGATE]["selection"][0.0].excluded) == (1, 1)
    assert (table[AGGREGATE]["selection"][4.0].mean, table[AGGREGATE]["selection"][4.0].excluded) == (None, 2)
    choice = choose_multiplier(table)
    assert choice.m == 0.0 and choice.unchoosable == [4.0]
    with pytest.raises(NoValidJudgmentsError, match="no multiplier has a valid judgment"):
        choose_multiplier(score_table(_rows({("selection", 1.0): [None], ("held-out", 1.0): [3]}), [1.0]))


def test_spearman_equals_scipy_with_ties_and_is_none_when_undefined() -> None:
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(3, 9)
        x = [float(rng.randint(0, 4)) for _ in range(n)]
        y = [float(rng.randint(0, 4)) for _ in range(n)]
        rho, note = spearman(x, y)
        want = spearmanr(x, y).statistic
        if np.isnan(want):
            assert rho is None and note
        else:
            assert rho == pytest.approx(want) and note == ""
    assert spearman([1, 2, 3], [3, 2, 1]) == (pytest.approx(-1.0), "")
    assert spearman([1, 2], [1, 2]) == (None, "2 multipliers (needs 3)")
    assert spearman([1, 2, 3], [2, 2, 2]) == (None, "constant across multipliers")


def test_correlations_pair_log_odds_and_judged_means_over_their_common_multipliers() -> None:
    judged = _rows(
        {("selection", 0.0): [1, 3], ("held-out", 0.0): [2], ("selection", 1.0): [3], ("held-out", 2.0): [1]}
    )
    judged += _rows({("selection", 3.0): [None]})  # no valid judgment at 3: left out of the correlation
    logodds = {"utility": {0.0: 0.0, 1.0: -0.5, 2.0: -3.0, 3.0: -9.0}, "preference": {0.0: 0.0, 1.0: 1.0}}
    found = {(c.logodds, c.judged): c for c in correlations(logodds, judged, [AGGREGATE])}
    utility = found[("utility", AGGREGATE)]
    # judged means per m (both halves): 0 -> 2, 1 -> 3, 2 -> 1
    assert utility.n == 3 and utility.rho == pytest.approx(spearmanr([0.0, -0.5, -3.0], [2, 3, 1]).statistic)
    assert found[("preference", AGGREGATE)].rho is None and found[("preference", AGGREGATE)].n == 2


def test_the_run_curve_is_used_only_when_it_covers_the_grid(tmp_path: Path) -> None:
    curve = TradeoffCurve(
        multipliers=[-2.0, 0.0, 2.0, 4.0],
        preference=[-1.0, 0.0, 1.0, 2.0],
        utility=[-0.5, 0.0, -0.5, -3.0],
        accuracy=[0.5] * 4,
        clamped=[0] * 4,
        n_pairs=[10] * 4,
    )
    (tmp_path / "tradeoff" / "test").mkdir(parents=True)
    curve.to_json(tmp_path / "tradeoff" / "test" / "curve.json")
    found = from_run(tmp_path, [0.0, 4.0])
    assert found is not None and found.source.endswith("tradeoff/test/curve.json")
    assert found.values == {"preference": {0.0: 0.0, 4.0: 2.0}, "utility": {0.0: 0.0, 4.0: -3.0}}
    assert from_run(tmp_path, [0.0, 3.0]) is None
    assert from_run(tmp_path / "elsewhere", [0.0]) is None


SETTINGS = {"dataset": "power-seeking", "generation": {"max_new_tokens": 8, "seed": 0}}


def test_the_store_refuses_other_settings_a_foreign_folder_and_changed_prompts(tmp_path: Path) -> None:
    store = GenerationStore(tmp_path / "eval", SETTINGS)
    store.append([Generation("ps0001", 2.0, "Q1", "A1")])
    other = {**SETTINGS, "generation": {"max_new_tokens": 16, "seed": 0}}
    with pytest.raises(EvaluationFolderError, match=r"other generation settings \(generation: .*'max_new_tokens': 8"):
        GenerationStore(tmp_path / "eval", other)
    again = GenerationStore(tmp_path / "eval", json.loads(json.dumps(SETTINGS)))
    assert again.get("ps0001", 2) == Generation("ps0001", 2.0, "Q1", "A1") and ("ps0001", 0.0) not in again
    with pytest.raises(EvaluationFolderError, match="prompt ps0001 was 'Q1' and is now 'Q1 changed'"):
        again.check_prompts({"ps0001": "Q1 changed"})
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "report.md").write_text("a fit's file")
    with pytest.raises(EvaluationFolderError, match="not an evaluation folder"):
        GenerationStore(tmp_path / "fit", SETTINGS)
    assert (tmp_path / "fit" / "report.md").read_text() == "a fit's file"


def test_a_line_cut_by_a_kill_is_dropped_and_overwritten_while_a_damaged_line_is_named(tmp_path: Path) -> None:
    store = GenerationStore(tmp_path, SETTINGS)
    store.append([Generation("a", 0.0, "Q", "A0"), Generation("a", 1.0, "Q", "A1")])
    path = tmp_path / GENERATIONS_FILE
    with open(path, "a") as fh:
        fh.write('{"prompt_id": "a", "m": 2.0, "pro')  # the kill came mid-line
    resumed = GenerationStore(tmp_path, SETTINGS)
    assert len(resumed) == 2
    resumed.append([Generation("a", 2.0, "Q", "A2")])
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == ["A0", "A1", "A2"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", lines[2]]) + "\n")
    with pytest.raises(EvaluationFolderError, match=f"{GENERATIONS_FILE}, line 2: not a generation record"):
        GenerationStore(tmp_path, SETTINGS)
