"""Seeded splits: paper sizes, balance by answer, determinism, disjointness, size errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lightning_split.data.readers import read_pairs
from lightning_split.data.registry import resolve_dataset
from lightning_split.data.splits import Splits, split_dataset, split_pool


def load_split(name: str, data_dir: Path, seed: int = 42, **sizes) -> Splits:
    resolved = resolve_dataset(name, data_dir)
    pools = {k: read_pairs(p).pairs for k, p in resolved.paths.items()}
    return split_dataset(resolved.spec, pools, seed=seed, **sizes)


def lines(pairs) -> list[int]:
    return [p.line for p in pairs]


def test_psychopathy_paper_split_balanced(shared_data_dir: Path) -> None:
    splits = load_split("psychopathy", shared_data_dir)
    assert splits.sizes() == {"train": 500, "validation": 50, "test": 100}
    assert Counter(p.matching for p in splits.train) == {"Yes": 250, "No": 250}
    assert Counter(p.matching for p in splits.validation) == {"Yes": 25, "No": 25}
    assert Counter(p.matching for p in splits.test) == {"Yes": 50, "No": 50}
    seen = [set(lines(splits[n])) for n in ("train", "validation", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert lines(splits.train) == sorted(lines(splits.train))  # file order inside a split


def test_psychopathy_determinism(shared_data_dir: Path) -> None:
    a, b = load_split("psychopathy", shared_data_dir, 42), load_split("psychopathy", shared_data_dir, 42)
    c = load_split("psychopathy", shared_data_dir, 7)
    for name in ("train", "validation", "test"):
        assert lines(a[name]) == lines(b[name])
        assert lines(a[name]) != lines(c[name])
    # changing train/val sizes does not move the test rows; changing train size does not move validation
    d = load_split("psychopathy", shared_data_dir, 42, train_size=300, val_size=50)
    e = load_split("psychopathy", shared_data_dir, 42, train_size=300, val_size=20)
    assert lines(d.test) == lines(a.test) == lines(e.test)
    assert lines(d.validation) == lines(a.validation)
    assert set(lines(d.train)) < set(range(1, 1001)) - set(lines(a.test)) - set(lines(a.validation))


def test_same_split_in_another_process(shared_data_dir: Path) -> None:
    code = (
        "import json, sys\n"
        "from tests.test_data_splits import load_split\n"
        "from pathlib import Path\n"
        "s = load_split('psychopathy', Path(sys.argv[1]), 3)\n"
        "print(json.dumps([[p.line for p in s[n]] for n in ('train', 'validation', 'test')]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code, str(shared_data_dir)],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout
    here = load_split("psychopathy", shared_data_dir, 3)
    assert json.loads(out) == [lines(here[n]) for n in ("train", "validation", "test")]


def test_power_seeking_split(shared_data_dir: Path) -> None:
    splits = load_split("power-seeking", shared_data_dir)
    assert splits.sizes() == {"train": 500, "validation": 50, "test": 200}
    assert {p.source for p in splits.test} == {str(shared_data_dir / "bipo" / "power-seeking-test.csv")}
    assert lines(splits.test) == lines(read_pairs(shared_data_dir / "bipo" / "power-seeking-test.csv").pairs)
    train_src = {p.source for p in splits.train + splits.validation}
    assert train_src == {str(shared_data_dir / "bipo" / "power-seeking-train.csv")}
    assert not set(lines(splits.train)) & set(lines(splits.validation))
    other = load_split("power-seeking", shared_data_dir, seed=1)
    assert lines(other.train) != lines(splits.train)
    full = load_split("power-seeking", shared_data_dir, val_size=142, train_size=500)
    assert full.sizes()["validation"] == 142


def test_sizes_larger_than_available(shared_data_dir: Path) -> None:
    with pytest.raises(ValueError, match="train needs 600 pairs but only 592 remain"):
        load_split("power-seeking", shared_data_dir, train_size=600)
    with pytest.raises(ValueError, match="test needs 300 pairs but only 200"):
        load_split("power-seeking", shared_data_dir, test_size=300)
    # Psychopathy: 1000 rows - 100 test - 50 validation leave 850 for train
    with pytest.raises(ValueError, match="train needs 900 pairs but only 850 remain"):
        load_split("psychopathy", shared_data_dir, train_size=900)
    pairs = read_pairs(shared_data_dir / "anthropic-evals" / "psychopathy.jsonl").pairs
    yes_heavy = [p for p in pairs if p.matching == "Yes"] + [p for p in pairs if p.matching == "No"][:10]
    with pytest.raises(ValueError, match="needs 20 pairs with matching answer 'No' but only 10 remain"):
        split_pool(yes_heavy, train_size=40, val_size=0, test_size=0, seed=0, stratify="answer")


def test_split_field_of_embedded_shape(sentiment_like_jsonl: Path) -> None:
    resolved = resolve_dataset(str(sentiment_like_jsonl))
    pools = {"all": read_pairs(sentiment_like_jsonl).pairs}
    splits = split_dataset(resolved.spec, pools)
    assert splits.sizes() == {"train": 10, "validation": 3, "test": 5}
    assert {p.metadata["split"] for p in splits.test} == {"test"}
    sub = split_dataset(resolved.spec, pools, train_size=4, seed=1)
    assert len(sub.train) == 4 and set(lines(sub.train)) < set(lines(splits.train))
    with pytest.raises(ValueError, match="only 5 remain"):
        split_dataset(resolved.spec, pools, test_size=6)


def test_generic_pool_defaults_and_group_stratification(tmp_path: Path) -> None:
    rows = [
        {"input": f"q{i}", "winning_output": f"w{i}", "losing_output": f"l{i}", "concept_id": i % 2} for i in range(40)
    ]
    path = tmp_path / "ax.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    resolved = resolve_dataset(str(path))
    splits = split_dataset(resolved.spec, {"all": read_pairs(path).pairs}, seed=5)
    assert splits.sizes() == {"train": 32, "validation": 4, "test": 4}
    assert Counter(p.group for p in splits.test) == {"0": 2, "1": 2}
    assert Counter(p.group for p in splits.train) == {"0": 16, "1": 16}
