"""docs/extending.md stays true: its examples run, its config snippets parse, the files it names exist.

The form and objective examples run through the contract suites (tests/test_form_contract.py,
tests/test_objective_contract.py); this file runs the reader example and checks the page itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from docs.examples.hinge_objective import Hinge
from docs.examples.scale_form import ScaleOptions
from docs.examples.tsv_pairs import tsv_to_jsonl
from lightning_split import SteeringModule
from lightning_split.data.readers import read_pairs

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "extending.md").read_text()


def test_every_file_the_page_names_exists() -> None:
    named = set(re.findall(r"`((?:docs|lightning_split|tests|scripts)/[\w/.]*)`", PAGE))
    assert len(named) >= 10, named
    assert [path for path in sorted(named) if not (ROOT / path).exists()] == []


def test_config_snippets_parse_and_build_the_examples() -> None:
    snippets = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", PAGE, flags=re.S)]
    assert len(snippets) == 2
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(SteeringModule, "model", fail_untyped=False)
    built = [parser.instantiate(parser.parse_object(snippet)).model for snippet in snippets]
    assert built[0].form == "scale" and built[0].form_options == ScaleOptions(init_std=0.0)
    assert isinstance(built[1].objective, Hinge) and built[1].objective.margin == 1.0
    assert built[1].objective_name == "hinge"


def test_tsv_example_feeds_the_readers(tmp_path: Path) -> None:
    source = tmp_path / "pairs.tsv"
    source.write_text("prompt\tgood\tbad\nHow was the film?\tWonderful.\tDreadful.\nAnd the food?\tTasty.\tBland.\n")
    target = tmp_path / "pairs.jsonl"
    assert tsv_to_jsonl(source, target, question="prompt", good="good", bad="bad") == 2
    pairs = read_pairs(target).pairs
    assert [(p.question, p.matching, p.not_matching) for p in pairs] == [
        ("How was the film?", "Wonderful.", "Dreadful."),
        ("And the food?", "Tasty.", "Bland."),
    ]
    with pytest.raises(ValueError, match=r"pairs.tsv: no column \['answer'\]"):
        tsv_to_jsonl(source, target, question="prompt", good="answer", bad="bad")
