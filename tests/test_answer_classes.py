"""Answer classes: balanced seeded subsets, metrics split by the matching answer, and what the report shows.

A control that learned to answer "Yes" to everything has accuracy 0.50 and preference ~0 on a balanced Yes/No
set; split by the matching answer it shows accuracy 1.0 on the "Yes" pairs and 0.0 on the "No" pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning_split.callbacks import TradeoffCurveCallback

from lightning_split import SteeringModule
from lightning_split.analysis import TradeoffCurve, write_report
from lightning_split.data.answers import NO_CLASS, answer_classes, balanced_subset
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.data.pairs import PolarityPair
from lightning_split.interventions import VectorOptions
from lightning_split.metrics import AnswerClassSplit

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- classes and subsets
def test_answer_classes_are_the_few_shared_answers() -> None:
    yes_no = [PolarityPair("q", "Yes", "No"), PolarityPair("q", "No", "Yes")]
    assert answer_classes(yes_no) == ["No", "Yes"]
    free = [PolarityPair("q", "A nice day.", "A bad day."), PolarityPair("q", "Fine food.", "Cold food.")]
    assert answer_classes(free) == []
    assert answer_classes(yes_no[:1]) == []  # one answer each way: "Yes" is not among the not-matching ones


def test_balanced_subset_is_seeded_balanced_and_order_free() -> None:
    # file order puts 20 "Yes" (1) among the first 50 of 100 pairs, like the 50-pair sweep that flipped a sign
    classes = [1] * 20 + [0] * 30 + [1] * 30 + [0] * 20
    index = list(range(100))
    assert sum(classes[:50]) == 20  # what first-N (main's max_pairs) swept: 20 Yes, 30 No
    subset = balanced_subset(index, classes, 50, seed=0)
    assert len(subset) == 50 and sum(classes[i] for i in subset) == 25
    assert subset == sorted(subset) and subset != index[:50]
    assert balanced_subset(index[::-1], classes[::-1], 50, seed=0) == subset  # order of arrival is irrelevant
    assert balanced_subset(index, classes, 50, seed=1) != subset
    # a class too small to give its share gives all it has; the others fill the rest
    small = balanced_subset(list(range(12)), [0] * 10 + [1] * 2, 8, seed=0)
    assert len(small) == 8 and {10, 11} <= set(small)
    assert len(balanced_subset(index, [NO_CLASS] * 100, 30, seed=0)) == 30  # free text: a seeded sample
    assert balanced_subset(index, classes, 500, seed=0) == index
    with pytest.raises(ValueError, match="size >= 1"):
        balanced_subset(index, classes, 0, seed=0)


# ----------------------------------------------------------------------------- a control that says "Yes"
def _says_yes(n_per_class: int) -> dict[str, torch.Tensor]:
    """Pairs of classes No (0) then Yes (1) under a control that puts 0.9 on "Yes" and 0.05 on "No"."""
    yes, no = torch.log(torch.tensor(0.9, dtype=torch.float64)), torch.log(torch.tensor(0.05, dtype=torch.float64))
    cls = torch.tensor([0] * n_per_class + [1] * n_per_class)
    return {
        "logp_pos": torch.where(cls == 1, yes, no),
        "logp_neg": torch.where(cls == 1, no, yes),
        "answer_class": cls,
    }


def test_a_control_that_says_yes_is_reported_per_class() -> None:
    pairs = _says_yes(10)
    accuracy, preference = AnswerClassSplit("accuracy"), AnswerClassSplit("preference")
    for metric in (accuracy, preference):
        for lo in range(0, 20, 6):  # batched updates
            metric.update(**{k: v[lo : lo + 6] for k, v in pairs.items()})
    assert accuracy.compute()[:2].tolist() == [0.0, 1.0]
    assert accuracy.balanced().item() == 0.5
    assert torch.isnan(accuracy.compute()[2:]).all()
    gap = float(np.log(0.9 / 0.05))
    assert preference.compute()[:2].tolist() == pytest.approx([-gap, gap])
    with pytest.raises(ValueError, match="answer_class"):
        accuracy.update(pairs["logp_pos"], pairs["logp_neg"])


def _yes_curve(**extra) -> TradeoffCurve:
    """A 3-point sweep of 20 pairs (10 No, 10 Yes); at m = 1 the control answers "Yes" to everything."""
    pref = np.zeros((3, 20))
    gap = np.log(0.9 / 0.05)
    pref[2] = np.r_[[-gap] * 10, [gap] * 10]
    pref[0] = np.r_[[0.2] * 10, [-0.2] * 10]
    pref[1] = np.r_[[0.1] * 10, [-0.1] * 10]
    return TradeoffCurve.from_pairs(
        [-1.0, 0.0, 1.0],
        pref,
        np.full((3, 20), -1.0),
        [0, 0, 0],
        class_names=["No", "Yes"],
        pair_class=[0] * 10 + [1] * 10,
        pair_index=list(range(20)),
        **extra,
    )


def test_report_and_files_show_the_class_split(tmp_path: Path) -> None:
    curve = _yes_curve(sampling={"evaluated": 100, "max_pairs": 20, "seed": 0}, split="test")
    assert curve.accuracy[2] == 0.5 and curve.preference[2] == pytest.approx(0.0)  # pooled: looks like nothing
    split = curve.class_split()
    assert split["Yes"]["accuracy"][2] == 1.0 and split["No"]["accuracy"][2] == 0.0
    assert curve.balanced("accuracy") == [0.5, 0.5, 0.5]
    paths = write_report(curve, tmp_path, max_utility_drop=1.0)
    report = paths["report_md"].read_text()
    assert "| 1 | 0.5000 | 0.0000 | -2.8904 | 1.0000 | 2.8904 |" in report
    assert "| m | balanced accuracy | accuracy [No] | preference [No] | accuracy [Yes] | preference [Yes] |" in report
    assert "20 of the 100 pairs evaluated: a seeded subset (max_pairs 20, seed 0), balanced by answer" in report
    assert "| answer classes | No 10, Yes 10 |" in report
    assert "Indices (rows of the test): 0–19." in report
    assert "- clamped: pairs where" in report and "- anti-steerable: share of pairs whose preference" in report
    assert "Sampling error of this subset" in report
    header = paths["curve_csv"].read_text().splitlines()[0]
    assert header.endswith("balanced_accuracy,accuracy[No],preference[No],accuracy[Yes],preference[Yes]")
    saved = json.loads(paths["curve_json"].read_text())
    assert saved["class_split"]["Yes"]["accuracy"] == [0.0, 0.0, 1.0] and saved["pair_index"] == list(range(20))
    loaded = TradeoffCurve.from_json(paths["curve_json"])
    assert loaded.class_split() == split and loaded.sampling == curve.sampling
    scalars = TradeoffCurveCallback().scalars(curve, "test")  # what every logger (W&B included) gets
    assert scalars["tradeoff/test/accuracy[Yes]@m=1"] == 1.0 and scalars["tradeoff/test/accuracy[No]@m=1"] == 0.0
    assert scalars["tradeoff/test/balanced_accuracy@m=1"] == 0.5
    assert scalars["tradeoff/test/n_pairs"] == 20 and scalars["tradeoff/test/n_pairs_evaluated"] == 100


# ----------------------------------------------------------------------------- through Lightning
@pytest.fixture
def yes_no_jsonl(tmp_path: Path) -> Path:
    """20 training and 16 test Yes/No rows; the test rows come 12 "Yes" first, then 4 "No"."""
    rows = []
    for i in range(36):
        split = "train" if i < 20 else "test"
        yes = i % 2 == 0 if split == "train" else i < 32
        matching, not_matching = ("Yes", "No") if yes else ("No", "Yes")
        rows.append({"question": f"Is statement {i} true of you?", "matching": matching,
                     "not_matching": not_matching, "split": split})  # fmt: skip
    path = tmp_path / "yes_no.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sweep_subset_is_balanced_recorded_and_metrics_split_by_answer(tiny_backbone_dir, yes_no_jsonl, tmp_path):
    L.seed_everything(0, verbose=False)
    model = SteeringModule(backbone=str(tiny_backbone_dir), form=VectorOptions(init_std=0.3), layer=2)
    data = PolarityDataModule(dataset=str(yes_no_jsonl), eval_batch_size=4)
    callback = TradeoffCurveCallback(multipliers=[-1.0, 0.0, 1.0], max_pairs=8, output_dir=str(tmp_path / "c"))
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=str(tmp_path))  # fmt: skip
    (results,) = trainer.test(model, data, verbose=False)

    curve = TradeoffCurve.from_json(tmp_path / "c" / "test" / "curve.json")
    classes = data.answer_classes
    assert classes == ["No", "Yes"]
    # first-N would have swept test rows 0-7, all "Yes"; the seeded subset takes 4 of each answer
    assert sorted(curve.pair_class) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert curve.sampling == {"evaluated": 16, "max_pairs": 8, "seed": 0}
    assert curve.pair_index != list(range(8)) and {12, 13, 14, 15} <= set(curve.pair_index)
    assert "8 of the 16 pairs evaluated" in (tmp_path / "c" / "test" / "report.md").read_text()
    # the module's own test metrics, split by the matching answer over all 16 pairs
    for suffix in ("", "_base"):
        per_class = [results[f"test/pair_accuracy{suffix}/answer={name}"] for name in classes]
        assert results[f"test/balanced_accuracy{suffix}"] == pytest.approx(sum(per_class) / 2, abs=1e-6)
        assert f"test/pref_logodds{suffix}/answer=Yes" in results
    pooled = (12 * results["test/pair_accuracy/answer=Yes"] + 4 * results["test/pair_accuracy/answer=No"]) / 16
    assert results["test/pair_accuracy"] == pytest.approx(pooled, abs=1e-6)
