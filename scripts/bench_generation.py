"""Benchmark: steered generation against plain ``model.generate``, and several multipliers in one batch.

Two measurements on the same prompts (AxBench Concept10 test instructions when the data directory is found, else
a fixed list), greedy decoding, on SmolLM2-135M-Instruct by default:

1. **Steering overhead**: :func:`lightning_split.generation.generate_steered` with a vector control at
   ``m = 1`` against ``model.generate`` on the same left-padded prompts, stop tokens and length (target: steered
   tokens/s >= 0.85 x unsteered).
2. **Multiplier batching**: all prompts at 7 multipliers in one batch against the same 7 multipliers one call at
   a time (target: >= 3 x faster).

The control is a zero vector at the middle block: its hook does all of its arithmetic, but every row's reply
equals the unsteered one, so all runs decode the same tokens and the times compare equal work (the script
checks that the replies are identical). Tokens/s counts the generated tokens up to each row's stop. Each
measurement is the median of ``--repeats`` runs after one warm-up run.

Usage:
    python scripts/bench_generation.py                        # 16 prompts, 48 new tokens, 3 repeats (minutes on 2 CPUs)
    python scripts/bench_generation.py --prompts 4 --max-new-tokens 8 --repeats 1   # a quick check
    python scripts/bench_generation.py --json bench.json --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_split.backbone import load_backbone  # noqa: E402
from lightning_split.data.tokenize import PairTokenizer  # noqa: E402
from lightning_split.generation import generate_steered, left_pad, stop_token_ids  # noqa: E402
from lightning_split.interventions import VectorOptions, build_control  # noqa: E402
from lightning_split.layout import discover_layout, middle_layer  # noqa: E402

GRID = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
"""The 7 multipliers of the batching measurement."""

FALLBACK_PROMPTS = [
    "Describe your favourite season.",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain how a bicycle works.",
    "Give me three tips for learning to cook.",
    "Why is the sky blue?",
    "Summarise the plot of a fairy tale you like.",
    "What should I pack for a weekend trip?",
]


def bench_prompts(count: int, data_dir: str | None) -> tuple[list[str], str]:
    """``count`` prompts: AxBench Concept10 test instructions (8 per concept) when found, else the fixed list."""
    try:
        from lightning_split.data.axbench import axbench_eval_items

        items = [i["instruction"] for c in range(10) for i in axbench_eval_items(c, data_dir=data_dir)]
        source = "AxBench Concept10 test instructions"
    except (ValueError, OSError) as err:
        print(f"AxBench data not found ({err}); using the fixed prompt list", file=sys.stderr)
        items, source = FALLBACK_PROMPTS, "fixed prompt list"
    return [items[i % len(items)] for i in range(count)], source


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` (synchronised on CUDA) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def median_time(fn: Callable[[], Any], repeats: int, device: torch.device, label: str) -> tuple[float, Any]:
    """One warm-up run, then the median wall time of ``repeats`` runs, and the last result; a progress line on
    stderr after every run (flushed, so it shows when output is not a terminal)."""
    runs = []
    for i in range(repeats + 1):
        seconds, out = timed(fn, device)
        kind = "warm-up" if i == 0 else f"run {i}/{repeats}"
        print(f"[bench_generation] {label}: {kind} {seconds:.1f} s", file=sys.stderr, flush=True)
        if i:
            runs.append((seconds, out))
    return statistics.median(t for t, _ in runs), runs[-1][1]


def count_tokens(tokenizer: Any, texts: list[str]) -> int:
    """Generated tokens: the replies re-encoded (they were cut at the stop token)."""
    return sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)


def main() -> None:
    """Runs both measurements and prints (and optionally saves) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=16, help="number of prompts")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", default=None, help="data directory holding axbench/ (default: as the project)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--append", default=None, help="append a markdown section to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    model, tokenizer = load_backbone(args.backbone, device_map={"": str(device)})
    layout = discover_layout(model)
    control = build_control(VectorOptions(init_std=0.0), layout, [middle_layer(layout)]).to(device)
    prompts, source = bench_prompts(args.prompts, args.data_dir)
    encoder = PairTokenizer(tokenizer)
    ids = [encoder.prompt_ids(p) for p in prompts]
    new = args.max_new_tokens

    def steered(rows: list[list[int]], m: list[float]) -> list[str]:
        return generate_steered(model, tokenizer, layout, control, rows, torch.tensor(m), "all", max_new_tokens=new)

    def plain() -> list[str]:
        input_ids, attention = left_pad(ids, encoder.pad_id, device)
        stops = stop_token_ids(tokenizer, model)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=new, do_sample=False,
                                 pad_token_id=encoder.pad_id, eos_token_id=stops)  # fmt: skip
        rows = out[:, input_ids.shape[1] :].tolist()
        cut = [next((r[:i] for i, t in enumerate(r) if t in stops), r) for r in rows]
        return [tokenizer.decode(r, skip_special_tokens=True) for r in cut]

    t_plain, plain_texts = median_time(plain, args.repeats, device, "plain generate")
    t_steered, steered_texts = median_time(lambda: steered(ids, [1.0] * len(ids)), args.repeats, device,
                                           "steered, m = 1")  # fmt: skip
    if steered_texts != plain_texts:
        raise SystemExit("the zero-vector steered replies differ from plain generate: the comparison is not fair")
    tokens = count_tokens(tokenizer, plain_texts)
    batch_rows = [row for row in ids for _ in GRID]
    t_batch, batch_texts = median_time(lambda: steered(batch_rows, GRID * len(ids)), args.repeats, device,
                                       "7 multipliers, one batch")  # fmt: skip
    t_each, _ = median_time(lambda: [steered(ids, [m] * len(ids)) for m in GRID], args.repeats, device,
                            "7 multipliers, one at a time")  # fmt: skip
    batch_tokens = count_tokens(tokenizer, batch_texts)

    results = {
        "backbone": args.backbone,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "prompts": len(prompts),
        "prompt_source": source,
        "max_new_tokens": new,
        "repeats": args.repeats,
        "generated_tokens": tokens,
        "plain_tokens_per_s": tokens / t_plain,
        "steered_tokens_per_s": tokens / t_steered,
        "steered_over_plain": t_plain / t_steered,
        "multipliers": GRID,
        "one_batch_tokens_per_s": batch_tokens / t_batch,
        "one_m_at_a_time_tokens_per_s": batch_tokens / t_each,
        "batch_speedup": t_each / t_batch,
        "seconds": {"plain": t_plain, "steered": t_steered, "one_batch": t_batch, "one_m_at_a_time": t_each},
    }
    command = "python scripts/bench_generation.py " + shlex.join(sys.argv[1:])
    lines = [
        f"## Generation: steered vs plain, multipliers in one batch (`scripts/bench_generation.py`) — "
        f"{dt.date.today().isoformat()}",
        "",
        f"Command: `{command.strip()}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, device {device}, torch {torch.__version__}, "
        f"{results['threads']} threads; load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"{len(prompts)} prompts ({source}), greedy, up to {new} new tokens, median of {args.repeats} runs.",
        "",
        "| measurement | tokens/s | ratio | target |",
        "|---|---|---|---|",
        f"| plain `model.generate` | {results['plain_tokens_per_s']:.1f} | | |",
        f"| steered, m = 1 | {results['steered_tokens_per_s']:.1f} | {results['steered_over_plain']:.3f} x plain "
        "| >= 0.85 |",
        f"| 7 multipliers, one at a time | {results['one_m_at_a_time_tokens_per_s']:.1f} | | |",
        f"| 7 multipliers, one batch | {results['one_batch_tokens_per_s']:.1f} | {results['batch_speedup']:.2f} x "
        "one at a time | >= 3 |",
    ]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.append:
        with open(args.append, "a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
