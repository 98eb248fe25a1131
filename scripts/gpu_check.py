"""The project's GPU check: the CUDA paths of every control form, bf16, NF4, 7B-scale memory and throughput.

Run it through ``scripts/gpu_check.sh`` (that file's header says how, on the lent GPU machine and here). Steps,
each guarded (a failure is recorded with its traceback and the next step runs) and each followed by a rewrite
of ``gpu_check.json`` and ``gpu_check.md`` in the output folder, so a run stopped by its time limit still
leaves every finished step:

1. ``forms``: for every registered control form, a few SPLIT training steps through ``lightning.Trainer`` and
   :class:`~lightning_split.SteeringModule` on ``tests/tiny_models.py``'s tiny Llama, once on the CPU and once on
   the device from the same initial control; then, with the CPU-trained control loaded on both, a multiplier
   sweep (:func:`~lightning_split.sweep.sweep_losses`) and steered greedy generation
   (:func:`~lightning_split.generation.generate_steered`). Recorded: largest |Δ| of the step losses, of the
   trained controls and of the sweep losses, and how many greedy replies are equal.
2. ``bf16``: the same on the device with ``precision="bf16-true"`` (bf16 backbone), against the device's fp32.
3. ``nf4``: the same with ``backbone_options.quantization="nf4-dq"`` and bf16 compute (the GPU configs'
   setting), if bitsandbytes imports and quantizes on the device; against the device's bf16.
4. ``memory_7b``: one SPLIT LoRA (rank 4, middle block) training step on a randomly initialised 7B-shaped Llama
   built on the device in bf16, on the batch of ``docs/scaling.md``'s Qwen-7B config (4 pairs, add + sub
   passes: 8 packed rows of 74 tokens). Peak CUDA memory measured, against the prediction of
   ``scripts/estimate_gpu_memory.py``'s method (1- and 2-block slices measured the same way, extrapolated).
5. ``throughput_smollm2`` and ``throughput_7b``: sweep pairs × multipliers per second and steered generation
   tokens/s, the 7 multipliers of ``scripts/bench_generation.py`` in one batch against one at a time, on
   SmolLM2-135M-Instruct when it loads (else a randomly initialised model of its shape) and on the 7B shape.

``--smoke`` runs every step on the CPU with the tiny shape in place of the SmolLM2 and 7B shapes (under a
minute); ``tests/test_gpu_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]
START = time.monotonic()  # before the heavy imports: the budget counts them

import lightning as L  # noqa: E402
import torch  # noqa: E402
from bench_generation import GRID, count_tokens, median_time  # noqa: E402
from bench_precision import SavedBytes, tensor_bytes  # noqa: E402
from estimate_gpu_memory import CONTEXT_BYTES, extrapolate  # noqa: E402
from gpu_check_models import (  # noqa: E402
    LLAMA_7B,
    SMOLLM2_135M,
    TINY_SHAPE,
    random_llama,
    tiny_backbone_folder,
    toy_tokenizer,
    words,
)
from gpu_check_report import markdown  # noqa: E402
from make_configs import GPU_RUNS  # noqa: E402

from lightning_split import SteeringModule  # noqa: E402
from lightning_split.data.datamodule import PolarityDataModule  # noqa: E402
from lightning_split.data.tokenize import PairTokenizer  # noqa: E402
from lightning_split.engine import PairScorer  # noqa: E402
from lightning_split.generation import generate_steered  # noqa: E402
from lightning_split.interventions import FORMS, LoRAOptions, VectorOptions, build_control, form_options  # noqa: E402
from lightning_split.layout import discover_layout, middle_layer  # noqa: E402
from lightning_split.models import steering_module  # noqa: E402
from lightning_split.objectives import SPLIT  # noqa: E402
from lightning_split.quantization import is_quantized  # noqa: E402
from lightning_split.sweep import sweep_losses  # noqa: E402
from tests.pair_batches import random_pair_batch  # noqa: E402

QWEN_CONFIG = "gpu/qwen2.5-7b-instruct/psychopathy-split-lora-nf4.yaml"
"""The GPU config whose batch the 7B step uses (docs/scaling.md: 8 rows × 74 tokens, its worst step)."""
PROMPT_TOKENS, COMPLETION_TOKENS = 68, 3
"""Its longest Psychopathy pair: 68 prompt tokens and 3-token completions, 74 tokens packed."""
NEW_TOKENS = 8
"""Greedy tokens generated per reply in the comparison steps."""


def progress(message: str) -> None:
    """One timestamped progress line on stdout (flushed)."""
    print(f"[gpu_check {time.strftime('%H:%M:%S')} +{time.monotonic() - START:6.1f}s] {message}", flush=True)


@dataclass
class Settings:
    """What one run does: ``device`` (``cuda`` or ``cpu``), ``smoke`` (tiny shapes, few steps), the folder; the
    time budget counts from ``started`` (the script passes its own start, so the imports count; a caller that
    imports the module long before running it gets the time of the call)."""

    device: torch.device
    smoke: bool
    out: Path
    budget_s: float
    work: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def accelerator(self) -> str:
        """Lightning's name of the device."""
        return "gpu" if self.device.type == "cuda" else "cpu"

    @property
    def train_steps(self) -> int:
        """SPLIT steps per fit."""
        return 2 if self.smoke else 4

    @property
    def half(self) -> torch.dtype:
        """The dtype of the large random models (bf16 on the GPU; fp32 on the CPU, where bf16 is slow)."""
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32


# --------------------------------------------------------------------------------------------- tiny models
@dataclass
class Fit:
    """One tiny-model fit and what was measured on it."""

    losses: list[float]
    initial: dict[str, torch.Tensor]
    final: dict[str, torch.Tensor]
    sweep: torch.Tensor | None = None
    replies: list[str] | None = None
    embedding_dtype: str = ""
    quantized: bool = False


class _Recorder(L.Callback):
    """Loads a given initial control at the start of training (or keeps the fresh one) and records the losses."""

    def __init__(self, initial: dict[str, torch.Tensor] | None) -> None:
        self.initial = initial
        self.start: dict[str, torch.Tensor] = {}
        self.losses: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.initial is not None:
            pl_module.control.load_state_dict(self.initial)
        self.start = _cpu_state(pl_module.control)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
        self.losses.append(float(outputs["loss"]))


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def fit_and_measure(
    settings: Settings,
    form: str,
    accelerator: str,
    precision: str,
    quantization: str | None = None,
    initial: dict[str, torch.Tensor] | None = None,
    evaluate_with: dict[str, torch.Tensor] | None = None,
) -> Fit:
    """Fits SPLIT with ``form`` on the tiny backbone, then sweeps and generates with ``evaluate_with`` loaded
    (the trained control when None)."""
    model_dir, pairs = settings.work / "tiny-llama", settings.work / "pairs.jsonl"
    L.seed_everything(0, verbose=False)
    module = SteeringModule(
        backbone=str(model_dir),
        form=form_options(form),
        layer=2,
        training={"lr": 0.05},
        objective=SPLIT(),
        backbone_options={"quantization": quantization},
    )
    recorder = _Recorder(initial)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=settings.train_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=settings.work / "runs",
        callbacks=[recorder],
    )
    data = PolarityDataModule(dataset=str(pairs), batch_size=4, eval_batch_size=4)
    trainer.fit(module, datamodule=data)
    fit = Fit(losses=recorder.losses, initial=recorder.start, final=_cpu_state(module.control))
    if evaluate_with is not None:
        module.control.load_state_dict(evaluate_with)
    losses = sweep_losses(
        module.scorer, module.control, list(data.val_dataloader()), GRID, module.positions, progress=False
    )
    fit.sweep = torch.stack([losses.l_pos, losses.l_neg]).double().cpu()
    encoder = PairTokenizer(module.tokenizer)
    prompts = [encoder.prompt_ids(pair.question) for pair in data.pairs("test")]
    rows = [p for p in prompts for _ in GRID]
    fit.replies = generate_steered(
        module.backbone,
        module.tokenizer,
        module.layout,
        module.control,
        rows,
        torch.tensor(GRID * len(prompts)),
        module.positions,
        max_new_tokens=NEW_TOKENS,
    )
    fit.embedding_dtype = str(module.backbone.get_input_embeddings().weight.dtype).removeprefix("torch.")
    fit.quantized = is_quantized(module.backbone)
    return fit


def max_abs(a: Any, b: Any) -> float:
    """Largest |a − b| of two equal-shaped lists or tensors (``nan`` if a value is not finite)."""
    diff = (torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs()
    return float(diff.max()) if diff.numel() else 0.0


def compare(reference: Fit, other: Fit) -> dict[str, Any]:
    """Differences of ``other``'s measurements from ``reference``'s."""
    assert reference.sweep is not None and other.sweep is not None
    assert reference.replies is not None and other.replies is not None
    return {
        "losses": other.losses,
        "reference_losses": reference.losses,
        "loss_max_abs_diff": max_abs(reference.losses, other.losses),
        "sweep_max_abs_diff": max_abs(reference.sweep, other.sweep),
        "replies_equal": sum(a == b for a, b in zip(reference.replies, other.replies)),
        "replies": len(reference.replies),
        "embedding_dtype": other.embedding_dtype,
        "quantized": other.quantized,
    }


def guarded_forms(step: str, forms: list[str], measure: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """``measure(form)`` for each form; a form that raises is recorded as ``{"error": …}`` and the next one runs."""
    results: dict[str, Any] = {}
    for form in forms:
        try:
            results[form] = measure(form)
        except Exception as err:  # noqa: BLE001 - a failed form is a result; the other forms still run
            results[form] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
            progress(f"{step}: {form}: failed: {results[form]['error']}")
    return results


def step_forms(settings: Settings, ctx: dict[str, Any]) -> dict[str, Any]:
    """Every form: CPU fp32 against device fp32 (same initial control; sweep and replies with the same one)."""
    tiny_backbone_folder(settings.work)
    ctx["cpu"], ctx["fp32"] = {}, {}

    def measure(form: str) -> dict[str, Any]:
        progress(f"forms: {form}: fit on cpu")
        cpu = fit_and_measure(settings, form, "cpu", "32-true")
        progress(f"forms: {form}: fit on {settings.device.type}")
        dev = fit_and_measure(
            settings, form, settings.accelerator, "32-true", initial=cpu.initial, evaluate_with=cpu.final
        )
        ctx["cpu"][form], ctx["fp32"][form] = cpu, dev
        return {**compare(cpu, dev), "control_max_abs_diff": max_abs_state(cpu.final, dev.final)}

    return guarded_forms("forms", list(FORMS), measure)


def max_abs_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |Δ| over the tensors of two state dicts with the same keys."""
    return max(max_abs(a[k], b[k]) for k in a)


def step_bf16(settings: Settings, ctx: dict[str, Any]) -> dict[str, Any]:
    """Every form that passed ``forms`` with a bf16 backbone on the device, against the device's fp32 run."""
    ctx["bf16"] = {}

    def measure(form: str) -> dict[str, Any]:
        progress(f"bf16: {form}: fit on {settings.device.type}")
        cpu = ctx["cpu"][form]
        fit = fit_and_measure(
            settings, form, settings.accelerator, "bf16-true", initial=cpu.initial, evaluate_with=cpu.final
        )
        ctx["bf16"][form] = fit
        return compare(ctx["fp32"][form], fit)

    return guarded_forms("bf16", list(ctx["fp32"]), measure)


def bitsandbytes_check(device: torch.device) -> dict[str, Any]:
    """bitsandbytes' version and an NF4 round trip on ``device`` (raises if it does not work there)."""
    import bitsandbytes
    import bitsandbytes.functional as bnb_f

    x = torch.randn(256, 256, device=device, dtype=torch.bfloat16)
    packed, state = bnb_f.quantize_4bit(x, quant_type="nf4")
    error = (bnb_f.dequantize_4bit(packed, state) - x).abs().mean() / x.abs().mean()
    return {"bitsandbytes": bitsandbytes.__version__, "nf4_round_trip_relative_error": float(error)}


def step_nf4(settings: Settings, ctx: dict[str, Any]) -> dict[str, Any]:
    """Every form that passed ``bf16`` on an NF4-dq backbone with bf16 compute, against the device's bf16 run."""
    check = bitsandbytes_check(settings.device)

    def measure(form: str) -> dict[str, Any]:
        progress(f"nf4: {form}: fit on {settings.device.type}")
        cpu = ctx["cpu"][form]
        fit = fit_and_measure(
            settings,
            form,
            settings.accelerator,
            "bf16-true",
            quantization="nf4-dq",
            initial=cpu.initial,
            evaluate_with=cpu.final,
        )
        return {**compare(ctx["bf16"][form], fit), "losses_finite": all(map(math.isfinite, fit.losses))}

    return {"check": check, **guarded_forms("nf4", list(ctx["bf16"]), measure)}


# --------------------------------------------------------------------------------------------- 7B memory
@contextmanager
def preloaded_backbone(model: torch.nn.Module, tokenizer: Any) -> Iterator[None]:
    """Makes ``SteeringModule.configure_model`` take ``model`` instead of loading its folder (the 7B stand-in
    is built on the device; writing and reading 13 GB would cost minutes). Everything else it does is kept."""
    original = steering_module.load_backbone
    steering_module.load_backbone = lambda *args, **kwargs: (model, tokenizer)
    try:
        yield
    finally:
        steering_module.load_backbone = original


def allocated(device: torch.device) -> int | None:
    """Bytes the CUDA caching allocator holds for tensors now (None on the CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device)


def step_memory(
    settings: Settings, shape: dict[str, Any], tokenizer: Any, layers: int, layer: int
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Builds a random ``layers``-block Llama of ``shape`` and measures one ``SteeringModule.training_step``
    (SPLIT LoRA r4 at ``layer``, the Qwen-7B config's objective and batch) with its backward and AdamW step.

    Returns the record and the model. Bytes: ``weights`` (backbone tensors), ``saved`` (tensors autograd keeps
    for backward), ``train_peak`` (peak CUDA allocation during the step above the allocation before it) and
    ``peak_allocated`` (peak above the allocation before the model was built); both None on the CPU.
    """
    device, spec = settings.device, GPU_RUNS[QWEN_CONFIG]
    free({})  # what earlier steps left is not this step's
    baseline = allocated(device)
    started = time.perf_counter()
    model = random_llama(shape, device, settings.half, num_hidden_layers=layers)
    build_s = time.perf_counter() - started
    folder = settings.work / f"config-{layers}"
    model.config.save_pretrained(folder)  # the module checks its layer against the config
    module = SteeringModule(
        backbone=str(folder),
        form=LoRAOptions(rank=4),
        layer=layer,
        training={"lr": spec["lr"]},
        objective=spec["split"],
    )
    with preloaded_backbone(model, tokenizer):
        module.configure_model()
    module.to(device)
    optimizer = torch.optim.AdamW(module.control.parameters(), lr=spec["lr"])
    batch = random_pair_batch(
        rows=spec["batch_size"],
        vocab=shape["vocab_size"],
        prompt=(PROMPT_TOKENS, PROMPT_TOKENS),
        completion=(COMPLETION_TOKENS, COMPLETION_TOKENS),
    ).to(device)
    weights = [*module.parameters(), *model.parameters(), *model.buffers()]
    before = allocated(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with SavedBytes({w.untyped_storage().data_ptr() for w in weights}) as saved:
        loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    peak = None if allocated(device) is None else torch.cuda.max_memory_allocated(device)  # synchronised
    record = {
        "layers": layers,
        "layer": layer,
        "build_s": build_s,
        "step_s": time.perf_counter() - started,
        "loss": float(loss.detach()),
        "rows": 2 * spec["batch_size"],
        "row_tokens": PROMPT_TOKENS + 2 * COMPLETION_TOKENS,
        "weights": tensor_bytes(model),
        "saved": saved.total,
        "train_peak": None if peak is None or before is None else peak - before,
        "peak_allocated": None if peak is None or baseline is None else peak - baseline,
    }
    return record, model


def predict(slices: list[dict[str, Any]], depth: int, layer: int) -> dict[str, int] | None:
    """``scripts/estimate_gpu_memory.py``'s extrapolation of the 1- and 2-block slices to ``depth`` blocks, and
    the peak allocation it implies (weights + saved activations + transient); None without CUDA peaks."""
    if any(s["train_peak"] is None for s in slices):
        return None
    predicted = extrapolate(slices[0], slices[1], depth, layer)
    return {**predicted, "peak_allocated": predicted["weights"] + predicted["saved"] + predicted["transient"]}


def step_memory_7b(settings: Settings, ctx: dict[str, Any]) -> dict[str, Any]:
    """The 7B-shaped step against the slices' extrapolation (``scripts/estimate_gpu_memory.py``'s method)."""
    shape = TINY_SHAPE if settings.smoke else LLAMA_7B
    tokenizer = toy_tokenizer(shape["vocab_size"])
    depth = shape["num_hidden_layers"]
    slices = []
    for blocks in (1, 2):
        progress(f"memory_7b: {blocks}-block slice")
        slices.append(step_memory(settings, shape, tokenizer, blocks, 0)[0])
        free(ctx)
    progress(f"memory_7b: the {depth}-block model on {settings.device.type}: build and one training step")
    measured, model = step_memory(settings, shape, tokenizer, depth, depth // 2)
    progress(f"memory_7b: built in {measured['build_s']:.1f} s, step {measured['step_s']:.1f} s")
    ctx["large"] = (model, tokenizer)
    result: dict[str, Any] = {
        "shape": "tiny (smoke)" if settings.smoke else "7B Llama",
        "config": shape,
        "dtype": str(settings.half).removeprefix("torch."),
        "slices": slices,
        "measured": measured,
        "predicted": predict(slices, depth, depth // 2),
        "doc_context_bytes": CONTEXT_BYTES,
    }
    if settings.device.type == "cuda":
        free_bytes, total_bytes = torch.cuda.mem_get_info()
        reserved = torch.cuda.memory_reserved()
        result.update(outside_allocator=total_bytes - free_bytes - reserved, reserved=reserved)
    return result


def free(ctx: dict[str, Any], *names: str) -> None:
    """Drops ``ctx``'s entries ``names``, collects garbage and hands cached CUDA memory back."""
    for name in names:
        ctx.pop(name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------- throughput
def throughput(settings: Settings, model: torch.nn.Module, tokenizer: Any, prompts: list[list[int]]) -> dict[str, Any]:
    """Sweep pairs×multipliers/s and generation tokens/s (7 multipliers in one batch vs one at a time).

    The control is a zero vector at the middle block (as in ``scripts/bench_generation.py``): its hook does all
    of its arithmetic but every multiplier decodes the same tokens, so the timed runs do equal work.
    """
    device, repeats = settings.device, 1 if settings.smoke else 2
    new_tokens, pairs = (4, 4) if settings.smoke else (32, 64)
    layout = discover_layout(model)
    control = build_control(VectorOptions(init_std=0.0), layout, [middle_layer(layout)]).to(device)
    pad_id = PairTokenizer(tokenizer).pad_id
    scorer = PairScorer(model, layout, pad_id=pad_id)
    vocab = model.config.vocab_size
    batches = [
        random_pair_batch(rows=8, vocab=vocab, seed=k, prompt=(40, 60), completion=(2, 8), pad_id=pad_id)
        for k in range(max(pairs // 8, 1))
    ]

    def steered(rows: list[list[int]], m: list[float]) -> list[str]:
        return generate_steered(
            model, tokenizer, layout, control, rows, torch.tensor(m), "all", max_new_tokens=new_tokens
        )

    rows = [row for row in prompts for _ in GRID]
    t_batch, texts = median_time(lambda: steered(rows, GRID * len(prompts)), repeats, device, "7 m in one batch")
    t_each, each = median_time(
        lambda: [steered(prompts, [m] * len(prompts)) for m in GRID], repeats, device, "7 m one at a time"
    )
    t_sweep, _ = median_time(
        lambda: sweep_losses(scorer, control, batches, GRID, progress=False), repeats, device, "sweep"
    )
    tokens = count_tokens(tokenizer, texts)
    one_at_a_time = [text for k in range(len(prompts)) for text in (batch[k] for batch in each)]
    return {
        "prompts": len(prompts),
        "max_new_tokens": new_tokens,
        "generated_tokens": tokens,
        "one_batch_tokens_per_s": tokens / t_batch,
        "one_m_at_a_time_tokens_per_s": tokens / t_each,
        "batch_speedup": t_each / t_batch,
        "replies_equal": texts == one_at_a_time,
        "sweep_pairs": sum(len(b) for b in batches),
        "sweep_multipliers": len(GRID),
        "sweep_pairs_x_multipliers_per_s": sum(len(b) for b in batches) * len(GRID) / t_sweep,
        "repeats": repeats,
    }


def random_prompts(tokenizer: Any, count: int, length: int) -> list[list[int]]:
    """``count`` chat-templated prompts of ``length`` random words (the toy tokenizer's vocabulary)."""
    rng = random.Random(0)
    encoder = PairTokenizer(tokenizer)
    return [encoder.prompt_ids(words(rng, length, len(tokenizer))) for _ in range(count)]


def smollm2_or_stand_in(
    device: torch.device, dtype: torch.dtype, stand_in: dict[str, Any], real: bool
) -> tuple[Any, Any, str]:
    """SmolLM2-135M-Instruct from ``load_backbone`` when ``real`` and it loads, else a random Llama of ``stand_in``
    (with :func:`toy_tokenizer`; on the GPU machine the package and converted cache are absent).

    Returns ``(model, tokenizer, which)``; ``which`` says which model it is and why.
    """
    reason = "not tried (smoke)"
    if real:
        try:
            from lightning_split.backbone import load_backbone

            model, tokenizer = load_backbone(
                "smollm2-135m-instruct", dtype=str(dtype).removeprefix("torch."), device_map={"": str(device)}
            )
            return model, tokenizer, "SmolLM2-135M-Instruct (real weights)"
        except Exception as err:  # noqa: BLE001 - any failure to load means: measure the stand-in
            reason = f"{type(err).__name__}: {str(err)[:200]}"
    model = random_llama(stand_in, device, dtype)
    return (
        model,
        toy_tokenizer(stand_in["vocab_size"]),
        f"random Llama of shape {stand_in['hidden_size']}×"
        f"{stand_in['num_hidden_layers']} (SmolLM2-135M-Instruct not loaded: {reason})",
    )


def step_throughput_smollm2(settings: Settings, ctx: dict[str, Any]) -> dict[str, Any]:
    """SmolLM2-135M-Instruct if it loads here (a random model of its shape if not; the tiny one in smoke)."""
    from bench_generation import FALLBACK_PROMPTS

    count = 2 if settings.smoke else 16
    shape = TINY_SHAPE if settings.smoke else SMOLLM2_135M
    model, tokenizer, which = smollm2_or_stand_in(settings.device, settings.half, shape, real=not settings.smoke)
    progress(f"throughput_smollm2: {which}")
    if which.startswith("SmolLM2"):
        encoder = PairTokenizer(tokenizer)
        prompts = [encoder.prompt_ids(FALLBACK_PROMPTS[i % len(FALLBACK_PROMPTS)]) for i in range(count)]
    else:
        prompts = random_prompts(tokenizer, count, 50)
    return {"model": which, **throughput(settings, model, tokenizer, prompts)}


def step_throughput_7b(settings: Settings, ctx: dict[str, Any]) -> dict[str, Any]:
    """The model of ``memory_7b`` (7B shape; tiny in smoke)."""
    if "large" not in ctx:
        raise RuntimeError("memory_7b did not build the model")
    model, tokenizer = ctx["large"]
    result = throughput(settings, model, tokenizer, random_prompts(tokenizer, 2 if settings.smoke else 16, 50))
    free(ctx, "large")
    return {"model": "tiny (smoke)" if settings.smoke else "random 7B-shaped Llama", **result}


REQUIRES: dict[str, tuple[str, ...]] = {"bf16": ("forms",), "nf4": ("forms", "bf16"), "throughput_7b": ("memory_7b",)}
"""The steps whose results a step compares against or whose model it reuses."""

STEPS: dict[str, Callable[[Settings, dict[str, Any]], dict[str, Any]]] = {
    "forms": step_forms,
    "bf16": step_bf16,
    "nf4": step_nf4,
    "memory_7b": step_memory_7b,
    "throughput_smollm2": step_throughput_smollm2,
    "throughput_7b": step_throughput_7b,
}


# --------------------------------------------------------------------------------------------- running
def environment(settings: Settings) -> dict[str, Any]:
    """Versions, the device and ``nvidia-smi``'s output."""
    packages = {}
    for name in ("transformers", "lightning", "peft", "torchmetrics", "bitsandbytes", "accelerate", "tokenizers"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "packages": packages,
    }
    if settings.device.type == "cuda":
        props = torch.cuda.get_device_properties(settings.device)
        env.update(
            device_name=props.name,
            capability=f"{props.major}.{props.minor}",
            total_memory=props.total_memory,
            cudnn=torch.backends.cudnn.version(),
        )
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        env["nvidia_smi"] = smi.stdout or smi.stderr
    except (OSError, subprocess.SubprocessError) as err:
        env["nvidia_smi"] = f"not available: {err}"
    return env


def write_reports(results: dict[str, Any], out: Path) -> None:
    """Writes ``gpu_check.json`` and ``gpu_check.md`` (each through a temporary file, so never half-written)."""
    for name, text in (
        ("gpu_check.json", json.dumps(results, indent=2, default=str)),
        ("gpu_check.md", markdown(results)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def run(settings: Settings, steps: list[str]) -> dict[str, Any]:
    """Runs ``steps`` in order, each guarded, writing the reports after each; returns the results."""
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": "smoke (CPU, tiny shapes)" if settings.smoke else f"device {settings.device}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "budget_s": settings.budget_s,
        "steps": {},
    }
    progress(f"environment ({results['mode']})")
    results["environment"] = environment(settings)
    write_reports(results, settings.out)
    ctx: dict[str, Any] = {}
    for name in steps:
        record: dict[str, Any] = {"status": "skipped"}
        results["steps"][name] = record
        elapsed = time.monotonic() - settings.started
        missing = [r for r in REQUIRES.get(name, ()) if results["steps"].get(r, {}).get("status") != "ok"]
        if missing:
            record["reason"] = f"needs the results of {', '.join(missing)}, which did not finish"
        elif elapsed > settings.budget_s:
            record["reason"] = f"time budget of {settings.budget_s:.0f} s spent ({elapsed:.0f} s elapsed)"
        if "reason" in record:
            progress(f"{name}: skipped ({record['reason']})")
            continue
        progress(f"{name}: start")
        if settings.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.monotonic()
        try:
            record.update(status="ok", result=STEPS[name](settings, ctx))
        except Exception as err:  # noqa: BLE001 - a failed step is a result; the next step still runs
            record.update(
                status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:]
            )
        record["seconds"] = round(time.monotonic() - started, 2)
        if settings.device.type == "cuda":
            record["peak_allocated"] = torch.cuda.max_memory_allocated()  # this step's (the 7B one resets it)
        progress(
            f"{name}: {record['status']} in {record['seconds']:.1f} s"
            + (f": {record['error']}" if "error" in record else "")
        )
        write_reports(results, settings.out)
    results["total_s"] = round(time.monotonic() - settings.started, 1)
    write_reports(results, settings.out)
    progress(f"done in {results['total_s']:.0f} s: {settings.out / 'gpu_check.json'}, {settings.out / 'gpu_check.md'}")
    return results


def quiet() -> None:
    """Keeps the log to the progress lines (Lightning's banners, transformers' bars and known warnings off)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_split"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*(does not have many workers|in eval mode|self.log).*")


def main(argv: list[str] | None = None) -> int:
    """Parses the options, runs the steps; exit status 0 (failed steps are results, not errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes everywhere, a few steps (< 1 min)")
    parser.add_argument("--device", default=None, help="cuda (default) or cpu (default with --smoke)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="output folder ($OUT)")
    parser.add_argument("--budget-s", type=float, default=400.0, help="start no step after this many seconds")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS), help="steps to run")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("torch.cuda.is_available() is False: there is no GPU here; use --smoke for the CPU smoke mode")
    for step in args.steps:
        missing = [r for r in REQUIRES.get(step, ()) if r not in args.steps]
        if missing:
            parser.error(f"step {step} needs the results of {missing}: add them to --steps")
    args.steps = [s for s in STEPS if s in args.steps]  # in their order
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        settings = Settings(
            device=device, smoke=args.smoke, out=out, budget_s=args.budget_s, work=Path(work), started=START
        )
        run(settings, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
