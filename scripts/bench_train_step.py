"""Times one SPLIT training step of each control form: the optimised engine against the plain way.

Plain: two teacher-forced passes per pair (prompt+A_p, prompt+A_n), full-vocabulary logits at every
position, every block recomputed. Optimised: ``[prompt | A_p | A_n]`` packed into one pass, logits only
where completion tokens are predicted, and the frozen blocks below the control taken from the per-pair
cache (the steady state from the second epoch on; ``--no-cache`` times the first epoch, where they are
computed once without gradients).

Each (form, mode) runs in a fresh subprocess so that its peak memory (max RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU) is its own. Results go to stdout and, with ``--write``, to
``docs/benchmarks.md``.

    python scripts/bench_train_step.py --write
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(form: str, mode: str, pairs: int, steps: int, layer: int, dataset: str, device: str) -> dict:
    """Times ``steps`` training steps in this process (after one warm-up step)."""
    import torch

    from lightning_split.backbone import load_backbone
    from lightning_split.data.datamodule import PolarityDataModule
    from lightning_split.engine import PairScorer, plain_pair_logprobs
    from lightning_split.interventions import build_control, form_options
    from lightning_split.layout import discover_layout
    from lightning_split.models.pair_cache import LowerStateCache
    from lightning_split.objectives.split import SPLIT

    torch.manual_seed(0)
    model, tokenizer = load_backbone("smollm2-135m-instruct", attn_implementation="sdpa")
    model.to(device)
    layout = discover_layout(model)
    dm = PolarityDataModule(dataset=dataset, batch_size=pairs, train_size=pairs * (steps + 1), data_dir=None)
    dm.set_tokenizer(tokenizer)
    dm.setup("fit")
    batches = [b.to(device) for b in dm.train_dataloader()][: steps + 1]
    control = build_control(form_options(form), layout, [layer]).to(device)
    with torch.no_grad():
        for p in control.parameters():
            p.normal_(0, 0.01)
    optimizer = torch.optim.AdamW(control.parameters(), lr=1e-3)
    objective = SPLIT(lambda_n=0.5, gamma=5.0, theta=0.5, bidirectional=False)
    scorer = PairScorer(model, layout, pad_id=tokenizer.pad_token_id)
    cache = LowerStateCache()
    start = scorer.start_layer(control)
    if mode == "optimised-cached":
        for batch in batches:
            cache.states("train", batch.index, scorer.pack(batch), start, scorer.lower_states)

    def step(batch) -> None:
        m = torch.ones(len(batch), device=device)
        if mode == "plain":
            lp = plain_pair_logprobs(model, layout, batch, control, m, pad_id=scorer.pad_id)
        else:
            packed = scorer.pack(batch)
            if mode == "optimised-cached":
                lower = cache.states("train", batch.index, packed, start, scorer.lower_states)
            else:
                lower = scorer.lower_states(packed, start)
            lp = scorer.score_packed(packed, control, m, lower=lower)
        loss, _ = objective([lp], None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step(batches[0])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sync()
    t0 = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    sync()
    seconds = (time.perf_counter() - t0) / steps
    tokens = sum(int(b.prompt_mask.sum() + b.pos_mask.sum() + b.neg_mask.sum()) for b in batches[1:]) / steps
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "form": form,
        "mode": mode,
        "step_s": seconds,
        "pair_tokens_per_s": tokens / seconds,
        "peak_mib": peak,
        "peak_kind": "cuda max allocated" if device.startswith("cuda") else "process max RSS",
        "rss_before_mib": rss_before / 1024,
    }


def main() -> None:
    from lightning_split.interventions import FORMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    parser.add_argument("--pairs", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--dataset", default="sentiment")
    parser.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu")
    parser.add_argument("--write", action="store_true", help="append the results to docs/benchmarks.md")
    parser.add_argument("--one", nargs=2, metavar=("FORM", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(
            json.dumps(run_one(args.one[0], args.one[1], args.pairs, args.steps, args.layer, args.dataset, args.device))
        )
        return

    results = []
    for form in args.forms:
        for mode in ("plain", "optimised", "optimised-cached"):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                form,
                mode,
                "--pairs",
                str(args.pairs),
                "--steps",
                str(args.steps),
                "--layer",
                str(args.layer),
                "--dataset",
                args.dataset,
                "--device",
                args.device,
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(results[-1], flush=True)

    lines = [
        "",
        "## Training step: optimised engine vs the plain way (`scripts/bench_train_step.py`)",
        "",
        f"Command: `python scripts/bench_train_step.py --pairs {args.pairs} --steps {args.steps} --write` "
        f"on {args.device} ({os.cpu_count()} cores), SmolLM2-135M-Instruct fp32, SPLIT loss, layer "
        f"{args.layer} of 30, {args.pairs} {args.dataset} pairs per step, mean of {args.steps} steps after a "
        f"warm-up step. Load average at the end: {os.getloadavg()[0]:.1f}.",
        "",
        "| form | plain s/step | optimised s/step | cached-lower s/step | speed-up (first epoch) "
        "| speed-up (cached) | pair tokens/s (cached) | peak MiB plain / opt / cached |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for form in args.forms:
        row = {r["mode"]: r for r in results if r["form"] == form}
        plain, opt, cached = row["plain"], row["optimised"], row["optimised-cached"]
        lines.append(
            f"| {form} | {plain['step_s']:.2f} | {opt['step_s']:.2f} | {cached['step_s']:.2f} "
            f"| {plain['step_s'] / opt['step_s']:.2f}× | {plain['step_s'] / cached['step_s']:.2f}× "
            f"| {cached['pair_tokens_per_s']:.0f} | {plain['peak_mib']:.0f} / {opt['peak_mib']:.0f} / "
            f"{cached['peak_mib']:.0f} |"
        )
    lines.append("")
    lines.append(f"Peak memory is the {results[0]['peak_kind']} of a process that did only that run.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        path = ROOT / "docs" / "benchmarks.md"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            path.write_text("# Benchmarks\n\nMeasured numbers, each with the command that reproduces it.\n")
        with path.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
