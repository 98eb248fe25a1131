"""Estimate the GPU memory of the shipped GPU configs from width-exact slices measured on this CPU.

The target models cannot be downloaded here, but their shapes are public. For each config in
``scripts/make_configs.py``'s ``GPU_RUNS`` this script builds the target architecture with its real hidden
size, MLP width, attention heads and vocabulary but only ``k = 1`` and ``k = 2`` decoder blocks (random
weights, saved as a bf16 model folder with SmolLM2's tokenizer), and runs ``scripts/bench_precision.py``'s
measurement on each: SPLIT with ``LoRAOptions(rank=4)`` at block 0, 4-bit NF4 with double quantization,
one training step on a batch made of the configured number of copies of the dataset's longest training pair
(the worst step of an epoch). The slices compute in float32, not in the configs' bf16: a bf16 step is 40 to 95
times slower than fp32 on this CPU (``docs/benchmarks.md``), and float32 activations are an upper bound of
bf16 ones (on SmolLM2 a bf16 step keeps 0.72 times the bytes per token of an fp32 step). Depth is then extrapolated
linearly:

- weights: ``w(1) + (N - 1)·(w(2) - w(1))`` (quantized blocks; embeddings/LM head upcast to float32 by peft's
  k-bit preparation are in ``w(1)``);
- activations kept for backward: ``s(1) + (N - L - 1)·(s(2) - s(1))``: the blocks from the steered block ``L``
  to the last one keep activations, the frozen blocks below run without gradients;
- lower-block state cache: one float32 ``[tokens, d]`` row per training pair of the rank (mean packed length);
- transient working set: the measured peak above the saved activations of the 2-block step (largest
  temporaries, gradient buffers), kept as is;
- CUDA context and cuBLAS workspaces: a fixed 0.8 GiB.

Token counts come from SmolLM2's tokenizer and chat template; the target tokenizers differ, so the total gets
a 20 % margin. ``--write`` replaces the memory section of ``docs/scaling.md``.

Usage:
    python scripts/estimate_gpu_memory.py [--write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from make_configs import GPU_RUNS  # noqa: E402

GiB = 2**30
CONTEXT_BYTES = int(0.8 * GiB)
MARGIN = 1.2

# Public shapes of the target models (config.json of the hub repositories).
SHAPES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-7B-Instruct": {
        "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": 32768,
    },
    "google/gemma-2-9b-it": {
        "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
        "tie_word_embeddings": True, "sliding_window": 4096, "query_pre_attn_scalar": 256,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "max_position_embeddings": 8192,
    },
}  # fmt: skip
MARKER = "## 6. Memory on GPUs"


def build_slice(backbone: str, blocks: int, folder: Path) -> None:
    """Saves a randomly initialised ``blocks``-block model of ``backbone``'s shape (bf16) with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lightning_split.backbone import load_tokenizer

    shape = dict(SHAPES[backbone])
    config = AutoConfig.for_model(shape.pop("model_type"), **{**shape, "num_hidden_layers": blocks})
    config.layer_types = config.layer_types[:blocks] if getattr(config, "layer_types", None) else None
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    load_tokenizer("smollm2-135m-instruct").save_pretrained(folder)


def longest_pair_file(dataset: str, copies: int, path: Path) -> tuple[int, float, int]:
    """Writes ``copies`` copies of the dataset's longest training pair; returns (its tokens, mean tokens, pairs)."""
    from lightning_split.data.datamodule import PolarityDataModule

    data = PolarityDataModule(dataset=dataset, tokenizer="smollm2-135m-instruct")
    data.setup("fit")
    pairs, tokens = data.pairs("train"), data.tokenized("train")
    sizes = [len(t.prompt_ids) + len(t.pos_ids) + len(t.neg_ids) for t in tokens]
    longest = max(range(len(sizes)), key=sizes.__getitem__)
    pair = pairs[longest]
    row = {"question": pair.question, "matching": pair.matching, "not_matching": pair.not_matching}
    path.write_text("".join(json.dumps(row) + "\n" for _ in range(copies + 4)))
    return sizes[longest], sum(sizes) / len(sizes), len(sizes)


def measure(folder: Path, data_file: Path, batch: int, one_way: bool) -> dict[str, Any]:
    """One ``bench_precision.py`` child run (NF4-dq, float32 compute, LoRA at block 0, one step)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, str(REPO / "scripts" / "bench_precision.py"), "--child", str(folder), "nf4-dq",
               "--out", out.name, "--warmup", "0", "--steps", "1", "--layer", "0", "--dataset", str(data_file),
               "--batch-size", str(batch)] + (["--one-way"] if one_way else [])  # fmt: skip
        subprocess.run(cmd, check=True, cwd=REPO)
        return json.loads(Path(out.name).read_text())


def extrapolate(one: dict[str, int], two: dict[str, int], depth: int, layer: int) -> dict[str, int]:
    """The full model's figures from the 1- and 2-block slices' ``weights``, ``saved`` and ``train_peak`` bytes.

    Weights grow by one block's bytes per block; saved activations by one block's per block from the steered
    block ``layer`` to the last of ``depth``; the transient working set is the 2-block step's peak above its
    saved activations (see the module docstring).
    """
    w1, s1, w2, s2 = one["weights"], one["saved"], two["weights"], two["saved"]
    return {
        "block_weights": w2 - w1,
        "block_saved": s2 - s1,
        "weights": w1 + (depth - 1) * (w2 - w1),
        "saved": s1 + (depth - layer - 1) * (s2 - s1),
        "transient": max(two["train_peak"] - s2, 0),
    }


def estimate(path: str) -> dict[str, Any]:
    """Measures the two slices of one GPU config and extrapolates to the full model."""
    spec = GPU_RUNS[path]
    backbone, layer, batch = spec["backbone"], spec["layer"], spec["batch_size"]
    depth, width = SHAPES[backbone]["num_hidden_layers"], SHAPES[backbone]["hidden_size"]
    one_way = not spec["split"]["bidirectional"]
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "longest.jsonl"
        longest, mean_tokens, train_pairs = longest_pair_file(spec["dataset"], batch, data_file)
        runs = []
        for blocks in (1, 2):
            folder = Path(tmp) / f"slice{blocks}"
            build_slice(backbone, blocks, folder)
            runs.append(measure(folder, data_file, batch, one_way))
    full = extrapolate(runs[0], runs[1], depth, layer)
    weights, saved, transient = full["weights"], full["saved"], full["transient"]
    pairs_per_rank = -(-train_pairs // spec["devices"])
    cache = int(pairs_per_rank * mean_tokens * width * 4)
    total = weights + saved + transient + cache + CONTEXT_BYTES
    return {
        "path": path, "backbone": backbone, "layer": layer, "depth": depth, "devices": spec["devices"],
        "batch": batch, "rows": runs[0]["tokens_per_step"] // longest, "longest": longest,
        "block_weights": full["block_weights"], "block_saved": full["block_saved"], "weights": weights, "saved": saved,
        "transient": transient, "cache": cache, "total": total, "with_margin": int(total * MARGIN),
    }  # fmt: skip


def section(results: list[dict[str, Any]]) -> str:
    """The markdown memory section of docs/scaling.md."""
    rows = [
        "| config | GPUs | steered block | worst step | weights (NF4-dq) | activations | transient | pair cache "
        "| context | total | with 20 % margin |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| `configs/{r['path']}` | {r['devices']} | {r['layer']}/{r['depth']} "
            f"| {r['rows']} rows × {r['longest']} tokens | {r['weights'] / GiB:.1f} GiB | {r['saved'] / GiB:.2f} GiB "
            f"| {r['transient'] / GiB:.2f} GiB | {r['cache'] / GiB:.2f} GiB | {CONTEXT_BYTES / GiB:.1f} GiB "
            f"| {r['total'] / GiB:.1f} GiB | **{r['with_margin'] / GiB:.1f} GiB** per GPU |"
        )
    per_block = "; ".join(
        f"{r['backbone']}: {r['block_weights'] / 2**20:.0f} MiB of 4-bit weights and "
        f"{r['block_saved'] / 2**20:.0f} MiB of saved activations per block"
        for r in results
    )
    return (
        f"{MARKER}\n\n"
        "Estimated by `python scripts/estimate_gpu_memory.py --write` (method in its docstring): each target "
        "model is built with its real widths, heads and vocabulary but only 1 and 2 decoder blocks, loaded "
        "through the same code path (NF4 with double quantization, QLoRA preparation, LoRA r4), and trained "
        "for one step on the configured number of copies of the dataset's longest training pair; weights and "
        "saved activations are extrapolated linearly in depth. The slices compute in float32 (bf16 is 40–95 times "
        "slower on this CPU), so the activation figures are upper bounds for the configs' `bf16-true`. "
        "Measured per block: "
        f"{per_block}.\n\n" + "\n".join(rows) + "\n\n"
        "Not on a GPU: no GPU was available to this project when this was measured, so the figures are "
        "estimates; the allocator's fragmentation is covered only by the margin. Ways to need less: "
        "`model.prepare_kbit: false` keeps the embeddings and LM head in bf16 (peft's k-bit preparation "
        "upcasts them to float32, the largest single item for these vocabularies); a smaller "
        "`data.batch_size` with `trainer.accumulate_grad_batches` keeps the global batch; "
        "`data.max_length` caps the longest pair.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the memory section of docs/scaling.md")
    args = parser.parse_args()
    results = [estimate(path) for path in GPU_RUNS]
    for r in results:
        print(json.dumps(r))
    text = section(results)
    print(text)
    if args.write:
        doc = REPO / "docs" / "scaling.md"
        before = doc.read_text().split(MARKER)[0]
        doc.write_text(before + text)


if __name__ == "__main__":
    main()
