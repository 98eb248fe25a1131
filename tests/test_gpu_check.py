"""``scripts/gpu_check.sh --smoke``: the GPU check's code paths on the CPU with tiny models, so the script the
lent GPU machine will run cannot rot; plus its pieces that the CPU run cannot reach (the CUDA-only prediction
row, the SmolLM2 fallback)."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_split.interventions import FORMS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
gpu_check = importlib.import_module("gpu_check")
gpu_check_report = importlib.import_module("gpu_check_report")

STEPS = ["forms", "bf16", "nf4", "memory_7b", "throughput_smollm2", "throughput_7b"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    """One smoke run: its JSON results, markdown summary and log."""
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--smoke"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (
        json.loads((out / "gpu_check.json").read_text()),
        (out / "gpu_check.md").read_text(),
        (out / "gpu_check.log").read_text(),
    )


def test_every_step_runs_and_the_cpu_comparison_is_exact(smoke) -> None:
    results, summary, log = smoke
    assert list(results["steps"]) == STEPS
    failed = {k: v.get("error") or v.get("reason") for k, v in results["steps"].items() if v["status"] != "ok"}
    assert not failed, failed
    assert results["environment"]["torch"] == torch.__version__
    forms = results["steps"]["forms"]["result"]
    assert sorted(forms) == sorted(FORMS)
    for form, r in forms.items():  # smoke: both sides run on the CPU, so they must agree exactly
        assert len(r["losses"]) == 2 and all(map(math.isfinite, r["losses"])), form
        assert r["loss_max_abs_diff"] <= 1e-6 and r["sweep_max_abs_diff"] <= 1e-6, (form, r)
        assert r["control_max_abs_diff"] <= 1e-6, (form, r)
        assert r["replies_equal"] == r["replies"] == 4 * len(gpu_check.GRID), (form, r)
    for form, r in results["steps"]["bf16"]["result"].items():  # a bf16 model: close, but not the fp32 numbers
        assert r["embedding_dtype"] == "bfloat16" and not r["quantized"], form
        assert 0 < r["sweep_max_abs_diff"] < 0.1, (form, r)
    nf4 = results["steps"]["nf4"]["result"]
    assert nf4.pop("check")["nf4_round_trip_relative_error"] < 0.2
    assert sorted(nf4) == sorted(FORMS) and all(r["quantized"] and r["losses_finite"] for r in nf4.values())
    for line in ("## 1. Every control form", "## 2. bf16", "## 3. NF4-dq", "## 4. Memory", "## 5a.", "## 5b."):
        assert line in summary
    assert "[gpu_check " in log and "throughput_7b: ok" in log


def test_memory_and_throughput_steps_measure_the_tiny_stand_in(smoke) -> None:
    results, _, _ = smoke
    memory = results["steps"]["memory_7b"]["result"]
    measured = memory["measured"]
    tiny = gpu_check.random_llama(gpu_check.TINY_SHAPE, torch.device("cpu"), torch.float32)
    assert measured["weights"] == sum(p.numel() * 4 for p in tiny.parameters()) + sum(
        b.numel() * b.element_size() for b in tiny.buffers()
    )
    assert (measured["layers"], measured["layer"], measured["rows"], measured["row_tokens"]) == (4, 2, 8, 74)
    slices = memory["slices"]
    assert 0 < slices[0]["saved"] < slices[1]["saved"], "a second block keeps more activations"
    assert measured["train_peak"] is None and memory["predicted"] is None  # no CUDA allocator on the CPU
    for name in ("throughput_smollm2", "throughput_7b"):
        r = results["steps"][name]["result"]
        assert r["replies_equal"] is True, name  # zero-vector control: every multiplier decodes the same
        assert r["generated_tokens"] > 0 and r["sweep_pairs_x_multipliers_per_s"] > 0, name


def test_prediction_extrapolates_the_slices_and_renders() -> None:
    slices = [
        {"weights": 10, "saved": 100, "train_peak": 150},
        {"weights": 15, "saved": 130, "train_peak": 200},
    ]
    predicted = gpu_check.predict(slices, depth=4, layer=2)
    # weights 10 + 3·5, saved 100 + (4 - 2 - 1)·30, transient 200 - 130
    assert predicted == {"block_weights": 5, "block_saved": 30, "weights": 25, "saved": 130, "transient": 70,
                         "peak_allocated": 225}  # fmt: skip
    measured = {"layer": 2, "layers": 4, "rows": 8, "row_tokens": 74, "build_s": 1.0, "step_s": 0.5, "loss": 9.0,
                "weights": 25, "saved": 128, "train_peak": 190, "peak_allocated": 250}  # fmt: skip
    result = {"shape": "7B Llama", "dtype": "bfloat16", "measured": measured, "predicted": predicted,
              "outside_allocator": 2**30, "reserved": 2**31, "doc_context_bytes": 2**29}  # fmt: skip
    text = "\n".join(gpu_check_report.memory_section(result))
    assert "Measured / predicted peak: **1.111**" in text
    assert "1.00 GiB" in text and "2.00 GiB" in text


def test_smollm2_falls_back_to_a_random_model_of_its_shape(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise FileNotFoundError("no converted cache")

    monkeypatch.setattr("lightning_split.backbone.load_backbone", refuse)
    model, tokenizer, which = gpu_check.smollm2_or_stand_in(
        torch.device("cpu"), torch.float32, gpu_check.TINY_SHAPE, real=True
    )
    assert "FileNotFoundError: no converted cache" in which and which.startswith("random Llama of shape 64×4")
    assert model.config.hidden_size == 64 and len(tokenizer) == model.config.vocab_size


def test_a_failed_step_is_recorded_and_the_steps_needing_it_are_skipped(tmp_path, monkeypatch) -> None:
    def broken(settings, ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(gpu_check.STEPS, "forms", broken)
    # imported long before this run (as in a long test session): the budget counts from the run, not the import
    monkeypatch.setattr(gpu_check, "START", time.monotonic() - 10_000)
    settings = gpu_check.Settings(device=torch.device("cpu"), smoke=True, out=tmp_path, budget_s=300, work=tmp_path)
    gpu_check.run(settings, ["forms", "bf16", "nf4"])
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert steps["forms"]["status"] == "failed" and steps["forms"]["error"] == "RuntimeError: boom"
    assert "broken" in steps["forms"]["traceback"]
    assert steps["bf16"] == {"status": "skipped", "reason": "needs the results of forms, which did not finish"}
    assert steps["nf4"]["reason"] == "needs the results of forms, bf16, which did not finish"
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "| forms | failed |" in summary and "| nf4 | skipped | – | needs the results of forms, bf16" in summary


def test_a_failed_form_keeps_its_row() -> None:
    rows = gpu_check_report.forms_section({"lora": {"error": "RuntimeError: boom", "traceback": "…"}})
    assert rows[-1] == "| lora | failed: RuntimeError: boom | | | | |"


def test_a_form_that_raises_is_recorded_and_the_next_form_runs() -> None:
    results = gpu_check.guarded_forms("forms", ["lora", "reft"], lambda form: {"lora": {}}[form] or {"done": form})
    assert results["lora"] == {"done": "lora"}
    assert results["reft"]["error"] == "KeyError: 'reft'" and "Traceback" in results["reft"]["traceback"]
