"""Named datasets and the data directory setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_split.data import registry
from lightning_split.data.pairs import DataFileError
from lightning_split.data.registry import DATA_DIR_ENV, resolve_data_dir, resolve_dataset


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "proj"
    work.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_dir() == (tmp_path / "shared" / "data").resolve()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    assert resolve_data_dir() is None


def test_named_datasets_resolve(shared_data_dir: Path) -> None:
    psy = resolve_dataset("psychopathy", shared_data_dir)
    assert psy.paths == {"all": shared_data_dir / "anthropic-evals" / "psychopathy.jsonl"}
    assert psy.spec.sizes == (500, 50, 100) and psy.spec.stratify == "answer"
    power = resolve_dataset("power-seeking", str(shared_data_dir))
    assert power.paths["train"].name == "power-seeking-train.csv"
    assert power.paths["test"].name == "power-seeking-test.csv"


def test_missing_file_error_names_path_dataset_and_setting(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataFileError) as info:
        resolve_dataset("psychopathy", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "anthropic-evals" / "psychopathy.jsonl") in message
    assert "'psychopathy'" in message and DATA_DIR_ENV in message and "data_dir" in message
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataFileError, match="needs a data directory"):
        resolve_dataset("power-seeking")


def test_file_path_and_unknown_names(tmp_path: Path, sentiment_like_jsonl: Path) -> None:
    resolved = resolve_dataset(str(sentiment_like_jsonl))
    assert resolved.paths == {"all": sentiment_like_jsonl} and resolved.spec.name == "sentiment"
    with pytest.raises(DataFileError, match="data file not found"):
        resolve_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(DataFileError, match="unknown dataset 'nope'.*power-seeking"):
        resolve_dataset("nope")


def test_embedded_dataset(monkeypatch, tmp_path: Path, sentiment_like_jsonl: Path) -> None:
    real = registry.builtin_path("builtin/sentiment.jsonl")
    assert real.parent.parent == Path(registry.__file__).parent  # shipped inside lightning_split/data
    monkeypatch.setattr(registry, "builtin_path", lambda rel: sentiment_like_jsonl)
    resolved = resolve_dataset("sentiment", data_dir=tmp_path / "ignored")
    assert resolved.paths == {"all": sentiment_like_jsonl} and resolved.spec.split_field == "split"
    monkeypatch.setattr(registry, "builtin_path", lambda rel: tmp_path / "missing.jsonl")
    with pytest.raises(DataFileError, match="embedded dataset 'sentiment' is missing"):
        resolve_dataset("sentiment")
