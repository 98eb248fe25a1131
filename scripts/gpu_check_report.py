"""The markdown summary of ``scripts/gpu_check.py``'s results (``gpu_check.md``): one table per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GiB = 2**30


def _gib(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value / GiB:.2f} GiB" if abs(value) >= GiB else f"{value / 2**20:.1f} MiB"


def _sci(value: Any) -> str:
    return "–" if value is None else f"{value:.1e}"


def _losses(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def _replies(result: dict[str, Any]) -> str:
    return f"{result['replies_equal']}/{result['replies']}"


def _per_form(result: dict[str, Any], columns: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The forms that were measured, and a row for each form that failed (its error across the columns)."""
    forms = {form: r for form, r in result.items() if form != "check"}
    failed = [f"| {form} | failed: {r['error']} |" + " |" * (columns - 2) for form, r in forms.items() if "error" in r]
    return {form: r for form, r in forms.items() if "error" not in r}, failed


def forms_section(result: dict[str, Any]) -> list[str]:
    """Step 1: CPU fp32 against device fp32 for every form."""
    rows = [
        "Same initial control on both; sweep and replies with the CPU-trained control loaded on both "
        "(fp32 expectation: |Δ| around 1e-6, replies equal).",
        "",
        "| form | step losses (device) | max abs Δ loss | max abs Δ trained control | max abs Δ sweep L | "
        "greedy replies equal |",
        "|---|---|---:|---:|---:|---:|",
    ]
    measured, failed = _per_form(result, 6)
    for form, r in measured.items():
        rows.append(
            f"| {form} | {_losses(r['losses'])} | {_sci(r['loss_max_abs_diff'])} | "
            f"{_sci(r['control_max_abs_diff'])} | {_sci(r['sweep_max_abs_diff'])} | {_replies(r)} |"
        )
    return rows + failed


def precision_section(result: dict[str, Any], against: str) -> list[str]:
    """Steps 2 and 3: a lower-precision backbone against ``against`` on the device."""
    rows = []
    if "check" in result:
        check = result["check"]
        rows += [
            f"bitsandbytes {check['bitsandbytes']}; NF4 round trip relative error "
            f"{check['nf4_round_trip_relative_error']:.3f} (a 256×256 bf16 matrix).",
            "",
        ]
    rows += [
        f"Differences from the device's {against} run (same initial control; sweep and replies with the same one).",
        "",
        "| form | embedding dtype | 4-bit layers | step losses | max abs Δ loss | max abs Δ sweep L | "
        "greedy replies equal |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    measured, failed = _per_form(result, 7)
    for form, r in measured.items():
        rows.append(
            f"| {form} | {r['embedding_dtype']} | {'yes' if r['quantized'] else 'no'} | {_losses(r['losses'])} | "
            f"{_sci(r['loss_max_abs_diff'])} | {_sci(r['sweep_max_abs_diff'])} | {_replies(r)} |"
        )
    return rows + failed


def memory_section(result: dict[str, Any]) -> list[str]:
    """Step 4: measured against predicted bytes of the 7B-shaped step."""
    m = result["measured"]
    rows = [
        f"Model: {result['shape']} ({result['dtype']}), built in {m['build_s']:.1f} s; SPLIT LoRA r4 at block "
        f"{m['layer']}/{m['layers']}, {m['rows']} packed rows × {m['row_tokens']} tokens (docs/scaling.md's "
        f"Qwen-7B step), step {m['step_s']:.2f} s, loss {m['loss']:.3f}.",
        "",
        "| | weights | saved activations | transient | peak allocated |",
        "|---|---:|---:|---:|---:|",
    ]
    predicted = result.get("predicted")
    if predicted is not None:
        rows.append(
            f"| predicted (1- and 2-block slices, scripts/estimate_gpu_memory.py's extrapolation) "
            f"| {_gib(predicted['weights'])} | {_gib(predicted['saved'])} | {_gib(predicted['transient'])} "
            f"| {_gib(predicted['peak_allocated'])} |"
        )
    transient = None if m["train_peak"] is None else m["train_peak"] - m["saved"]
    rows.append(
        f"| measured | {_gib(m['weights'])} | {_gib(m['saved'])} | {_gib(transient)} | {_gib(m['peak_allocated'])} |"
    )
    if predicted is not None and m["peak_allocated"]:
        rows += ["", f"Measured / predicted peak: **{m['peak_allocated'] / predicted['peak_allocated']:.3f}**."]
    if "outside_allocator" in result:
        rows += [
            "",
            f"Device memory outside the allocator (CUDA context, libraries): {_gib(result['outside_allocator'])} "
            f"(the estimate adds {_gib(result['doc_context_bytes'])}); reserved by the allocator: "
            f"{_gib(result['reserved'])}. docs/scaling.md's table estimates the NF4 Qwen-7B config with the same "
            "extrapolation from float32 slices on the CPU; this step checks the extrapolation on a GPU in bf16.",
        ]
    return rows


def throughput_section(result: dict[str, Any]) -> list[str]:
    """Step 5: sweep and generation throughput."""
    r = result
    return [
        f"Model: {r['model']}; {r['prompts']} prompts, up to {r['max_new_tokens']} new tokens, greedy, zero-vector "
        f"control; median of {r['repeats']} runs after a warm-up.",
        "",
        "| 7 m in one batch tok/s | 7 m one at a time tok/s | batch speed-up (target ≥ 3) | replies equal | "
        "sweep pairs × multipliers / s |",
        "|---:|---:|---:|---|---:|",
        f"| {r['one_batch_tokens_per_s']:.1f} | {r['one_m_at_a_time_tokens_per_s']:.1f} | "
        f"**{r['batch_speedup']:.2f}×** | {r['replies_equal']} | {r['sweep_pairs_x_multipliers_per_s']:.1f} |",
    ]


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "forms": ("1. Every control form: CPU fp32 vs device fp32", forms_section),
    "bf16": ("2. bf16 backbone vs fp32 (device)", lambda r: precision_section(r, "fp32")),
    "nf4": ("3. NF4-dq backbone, bf16 compute, vs bf16 (device)", lambda r: precision_section(r, "bf16")),
    "memory_7b": ("4. Memory of one SPLIT LoRA step, 7B-shaped Llama", memory_section),
    "throughput_smollm2": ("5a. Throughput, SmolLM2-135M", throughput_section),
    "throughput_7b": ("5b. Throughput, 7B-shaped Llama", throughput_section),
}


def markdown(results: dict[str, Any]) -> str:
    """The whole summary: environment, one status line per step, then each finished step's table."""
    env = results.get("environment", {})
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    lines = [
        f"# GPU check — {results['started']}",
        "",
        f"Mode: {results['mode']}. Command: `{results['command']}`. "
        f"Total: {results.get('total_s', 'unfinished')} s (steps start only within {results['budget_s']:.0f} s).",
        "",
        f"Python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('cuda')}), {packages}; "
        f"{env.get('cpus')} CPUs; float32 matmul precision {env.get('float32_matmul_precision')}.",
    ]
    if "device_name" in env:
        lines.append(
            f"Device: {env['device_name']} (compute capability {env['capability']}, {_gib(env['total_memory'])}), "
            f"cuDNN {env['cudnn']}."
        )
    lines += ["", "| step | status | seconds | note |", "|---|---|---:|---|"]
    for name, record in results["steps"].items():
        note = record.get("error") or record.get("reason") or ""
        lines.append(f"| {name} | {record['status']} | {record.get('seconds', '–')} | {note} |")
    for name, record in results["steps"].items():
        if record["status"] != "ok" or name not in SECTIONS:
            continue
        title, render = SECTIONS[name]
        lines += ["", f"## {title}", "", *render(record["result"])]
    if "nvidia_smi" in env:
        lines += ["", "## nvidia-smi", "", "```text", env["nvidia_smi"].rstrip(), "```"]
    return "\n".join(lines) + "\n"
