"""AxBench: the real Concept10 parquet read by concept, the paper's seeded 64/8 re-split, the judged items, a file in
the Concept500 layout, and bad input refused before any model is loaded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lightning_split.data.axbench import axbench_eval_items, pending_splits, read_axbench, split_concept
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.data.pairs import BadRowError, DataFileError
from lightning_split.data.registry import resolve_dataset
from lightning_split.errors import OptionError

CONCEPT10 = "axbench/concept10-train.parquet"
#: The columns of AxBench's concept10/concept500 ``generate/train_data.parquet`` (checked on the shipped file).
AXBENCH_COLUMNS = ["input", "output", "output_concept", "concept_genre", "category", "dataset_category", "concept_id"]


def test_shipped_file_has_the_axbench_train_columns(shared_data_dir: Path) -> None:
    assert pq.read_schema(shared_data_dir / CONCEPT10).names == AXBENCH_COLUMNS


def test_concept10_has_72_positive_rows_per_concept_split_64_8_seeded_and_disjoint(shared_data_dir: Path) -> None:
    data = read_axbench(shared_data_dir / CONCEPT10)
    assert sorted(data.rows) == list(range(10))
    assert {c: len(rows) for c, rows in data.rows.items()} == dict.fromkeys(range(10), 72)
    assert data.concepts[3] == "terms related to online gambling and casinos"
    for concept, rows in data.rows.items():
        parts = split_concept(rows, (None, None, None), seed=42)
        assert (len(parts["train"]), len(parts["validation"]), len(parts["test"])) == (64, 0, 8)
        train_rows, test_rows = {r.row for r in parts["train"]}, {r.row for r in parts["test"]}
        assert not train_rows & test_rows and len(train_rows | test_rows) == 72
        assert not {r.instruction for r in parts["train"]} & {r.instruction for r in parts["test"]}, concept
        assert split_concept(rows, (None, None, None), seed=42) == parts
        assert split_concept(rows, (None, None, None), seed=7)["test"] != parts["test"]
    # concept 4 asks one instruction twice: both rows stay in train
    twice = [i for i, n in Counter(r.instruction for r in data.rows[4]).items() if n == 2]
    assert len(twice) == 1
    assert sum(r.instruction == twice[0] for r in split_concept(data.rows[4], (None, 0, 8), 42)["train"]) == 2


def test_a_concept_splits_the_same_whatever_else_is_selected(shared_data_dir: Path) -> None:
    everything = PolarityDataModule(dataset="axbench", data_dir=str(shared_data_dir))
    two = PolarityDataModule(dataset="axbench", data_dir=str(shared_data_dir), concepts=[3, 0])
    assert everything.splits.sizes() == {"train": 640, "validation": 0, "test": 80}
    assert two.splits.sizes() == {"train": 128, "validation": 0, "test": 16}
    for split in ("train", "test"):
        assert [p.line for p in two.splits[split]] == [p.line for p in everything.splits[split] if p.group in "03"]
    assert {p.metadata["negative"] for p in two.splits.train} == {"pending"}
    assert all(p.not_matching == "" for p in two.splits.train)


def test_per_concept_sizes_and_validation_drawn_from_the_train_rows(shared_data_dir: Path) -> None:
    dm = PolarityDataModule(
        dataset="axbench", data_dir=str(shared_data_dir), concepts=[1], train_size=10, val_size=4, test_size=8
    )
    assert dm.splits.sizes() == {"train": 10, "validation": 4, "test": 8}
    default = PolarityDataModule(dataset="axbench", data_dir=str(shared_data_dir), concepts=[1])
    assert [p.line for p in dm.splits.test] == [p.line for p in default.splits.test]


def test_eval_items_are_the_test_instructions_with_the_concept(shared_data_dir: Path) -> None:
    items = axbench_eval_items(3, data_dir=shared_data_dir)
    dm = PolarityDataModule(dataset="axbench", data_dir=str(shared_data_dir), concepts=[3])
    assert [i["instruction"] for i in items] == [p.question for p in dm.splits.test]
    assert len(items) == 8
    assert {i["concept"] for i in items} == {"terms related to online gambling and casinos"}
    other_seed = axbench_eval_items(3, data_dir=shared_data_dir, seed=1)
    assert [i["instruction"] for i in other_seed] != [i["instruction"] for i in items]


def _concept500_like(path: Path, concepts: int = 3, per_concept: int = 12, extra_column: bool = True) -> Path:
    """A small parquet in the Concept500 layout: positives per concept plus shared negatives (concept_id -1)."""
    rows = [
        {
            "input": f"Question {k} about topic {c}?",
            "output": f"An answer {k} full of concept {c}.",
            "output_concept": f"concept number {c}",
            "concept_genre": "text",
            "category": "positive",
            "dataset_category": "instruction",
            "concept_id": c,
        }
        for c in range(concepts)
        for k in range(per_concept)
    ]
    rows += [{**rows[0], "output": "plain", "output_concept": "EEEEE", "category": "negative", "concept_id": -1}] * 5
    table = pa.Table.from_pylist(rows)
    if extra_column:
        table = table.append_column("sae_id", pa.array(list(range(len(rows)))))
    pq.write_table(table, path)
    return path


def test_a_file_in_the_concept500_layout_reads_as_axbench(tmp_path: Path) -> None:
    path = _concept500_like(tmp_path / "train_data.parquet")
    assert resolve_dataset(str(path)).spec.kind == "axbench"
    dm = PolarityDataModule(dataset=str(path), concepts=[0, 2], train_size=6, test_size=4)
    assert dm.splits.sizes() == {"train": 12, "validation": 0, "test": 8}
    assert {p.group for p in dm.splits.train} == {"0", "2"}
    items = axbench_eval_items(2, dataset=str(path), test_size=4)
    assert [i["instruction"] for i in items] == [p.question for p in dm.splits.test if p.group == "2"]
    assert items[0]["concept"] == "concept number 2"  # from output_concept: no metadata.jsonl beside the file
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"concept_id": 2, "concept": "from the metadata"}) + "\n")
    assert axbench_eval_items(2, dataset=str(path), test_size=4)[0]["concept"] == "from the metadata"


def test_bad_input_is_refused_with_the_option_or_file(shared_data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"concepts \(data.concepts\) has \[10\].*\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]"):
        PolarityDataModule(dataset="axbench", data_dir=str(shared_data_dir), concepts=[3, 10])
    with pytest.raises(DataFileError, match=r"file not found: .*concept10-train.parquet.*data_dir"):
        PolarityDataModule(dataset="axbench", data_dir=str(tmp_path))
    with pytest.raises(OptionError, match="dataset 'sentiment' is not AxBench; unset concepts"):
        PolarityDataModule(dataset="sentiment", concepts=[0])
    with pytest.raises(OptionError, match="test_size is 73 per concept but concept 0 has 72 rows with a unique"):
        PolarityDataModule(dataset="axbench", data_dir=str(shared_data_dir), concepts=[0], test_size=73)
    with pytest.raises(OptionError, match="train_size 65 \\+ val_size 0 per concept exceed the 64 rows"):
        PolarityDataModule(dataset="axbench", data_dir=str(shared_data_dir), concepts=[0], train_size=65)
    with pytest.raises(OptionError, match="concept ids of"):
        axbench_eval_items(12, data_dir=shared_data_dir)
    path = _concept500_like(tmp_path / "bad.parquet", concepts=1)
    table = pq.read_table(path)
    outputs = table.column("output").to_pylist()
    outputs[3] = "  "
    pq.write_table(table.set_column(1, "output", pa.array(outputs)), path)
    with pytest.raises(BadRowError, match=r"bad.parquet, row 4: field 'output' of a positive row is empty"):
        read_axbench(path)


def test_pending_splits_keep_the_rows_and_their_columns(shared_data_dir: Path) -> None:
    data = read_axbench(shared_data_dir / CONCEPT10, concepts=[9])
    pair = pending_splits(data, (None, None, None), 42).test[0]
    assert pair.metadata["output_concept"] == "references to nighttime or nocturnal themes"
    assert pair.metadata["concept_id"] == 9 and pair.group == "9"
    assert pair.where.startswith(str(shared_data_dir / CONCEPT10)) and ", row " in pair.where
