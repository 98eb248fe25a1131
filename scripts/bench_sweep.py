"""Benchmark: the multiplier-sweep engine against the plain loop on the real SmolLM2-135M-Instruct.

Sweeps an 11-point grid over N Psychopathy pairs (the 100 test pairs, then train pairs to reach N) with a
random vector control at the middle layer, once with :func:`lightning_split.sweep.sweep_losses` (packed
pairs, lower blocks once per batch, several multipliers per pass, logits only at completion positions) and
once with :func:`lightning_split.sweep.plain_sweep_losses` (two full forwards per pair and multiplier,
full-vocabulary logits). Prints pairs×multipliers per second, the ratio, the peak memory of each, the
largest difference between their losses, and appends a markdown section to ``docs/benchmarks.md``.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory held before each batch's run; on
CPU the peak resident set size above the RSS before each batch's run (after handing free heap back to the
OS), from the kernel's ``VmHWM`` high-water mark; the largest over the batches is reported.

Usage:
    python scripts/bench_sweep.py --pairs 200
    python scripts/bench_sweep.py --pairs 200 --plain-pairs 40   # plain loop on a subset, extrapolated
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import os
import platform
import resource
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_split.backbone import load_backbone  # noqa: E402
from lightning_split.data.batch import PairBatch  # noqa: E402
from lightning_split.data.datamodule import PairCollator, PolarityDataModule  # noqa: E402
from lightning_split.engine import PairScorer  # noqa: E402
from lightning_split.interventions import build_control  # noqa: E402
from lightning_split.layout import discover_layout, middle_layer  # noqa: E402
from lightning_split.sweep import SweepLosses, plain_sweep_losses, sweep_losses  # noqa: E402

GRID = [round(0.4 * k, 1) for k in range(-5, 6)]
"""The 11-point grid ``-2.0, -1.6, …, 2.0``."""


class PeakRSS:
    """Peak resident set size of this process during a ``with`` block, above the RSS at its start.

    Free heap is handed back to the OS first (``gc.collect`` + glibc ``malloc_trim``) so that memory the
    block needs shows as growth. The peak is the kernel's high-water mark (``VmHWM``, reset through
    ``/proc/self/clear_refs``) where Linux allows it, else the RSS sampled every 2 ms in a thread.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.start = self.peak = 0
        self.exact = False

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * self.page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @staticmethod
    def _status(field_name: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.exact = self._status("VmHWM") is not None
        except OSError:
            self.exact = False
        self.start = self.peak = self._rss()
        if not self.exact:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.exact:
            self.peak = max(self._status("VmHWM") or 0, self._rss())
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())

    @property
    def delta(self) -> int:
        """Peak RSS above the RSS at the start, in bytes."""
        return self.peak - self.start


@dataclass
class Timing:
    """Accumulated cost of one engine over the batches it ran."""

    wall: float = 0.0
    cpu: float = 0.0
    peak: int = 0
    pairs: int = 0
    parts: list[SweepLosses] = field(default_factory=list)

    def add(self, fn: Callable[[list[PairBatch]], SweepLosses], batch: PairBatch, device: torch.device) -> None:
        """Runs ``fn([batch])`` and adds its wall time, process CPU time and peak extra memory."""
        cpu = time.process_time()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            out = fn([batch])
            torch.cuda.synchronize(device)
            wall, peak = time.perf_counter() - start, torch.cuda.max_memory_allocated(device) - before
        else:
            with PeakRSS() as rss:
                start = time.perf_counter()
                out = fn([batch])
                wall = time.perf_counter() - start
            peak = rss.delta
        self.wall += wall
        self.cpu += time.process_time() - cpu
        self.peak = max(self.peak, peak)
        self.pairs += out.n_pairs
        self.parts.append(out)

    def losses(self, which: str) -> torch.Tensor:
        """``[M, pairs]`` concatenated ``l_pos`` or ``l_neg``."""
        return torch.cat([getattr(part, which) for part in self.parts], dim=1)


def psychopathy_batches(tokenizer: Any, pairs: int, batch_size: int, data_dir: str) -> list[PairBatch]:
    """The Psychopathy test pairs, then train pairs, ``pairs`` in all, batched; indices ``0..pairs-1``."""
    dm = PolarityDataModule(dataset="psychopathy", data_dir=data_dir)
    dm.set_tokenizer(tokenizer)
    dm.setup()
    items = list(dm.tokenized("test")) + list(dm.tokenized("train"))
    if len(items) < pairs:
        raise SystemExit(f"only {len(items)} Psychopathy test+train pairs, asked for {pairs}")
    collate = PairCollator(dm.pair_tokenizer.pad_id)
    numbered = list(enumerate(items[:pairs]))
    return [collate(numbered[i : i + batch_size]) for i in range(0, pairs, batch_size)]


def machine(device: torch.device) -> str:
    """One line describing where the benchmark ran."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200, help="pairs swept by the engine (default 200)")
    parser.add_argument(
        "--plain-pairs", type=int, default=None, help="pairs for the plain loop (default: all; fewer: extrapolated)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per batch (default 8)")
    parser.add_argument("--max-rows", type=int, default=64, help="packed rows per sweep pass (default 64)")
    parser.add_argument("--layer", type=int, default=None, help="control layer (default: the middle block)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"), help="markdown to append to")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to --output")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = load_backbone("smollm2-135m-instruct", attn_implementation="sdpa")
    model.to(device)
    layout = discover_layout(model)
    layer = args.layer if args.layer is not None else middle_layer(layout)
    control = build_control("vector", layout, [layer]).to(device)
    with torch.no_grad():  # a random direction with the norm of a typical residual update
        vector = next(control.parameters())
        vector.copy_(torch.randn(vector.shape, generator=torch.Generator().manual_seed(0)))
        vector.mul_(4.0 / vector.norm())
    scorer = PairScorer(model, layout, pad_id=tokenizer.pad_token_id)
    batches = psychopathy_batches(tokenizer, args.pairs, args.batch_size, args.data_dir)
    plain_pairs = min(args.plain_pairs or args.pairs, args.pairs)
    tokens = sum(int(b.prompt_mask.sum() + b.pos_mask.sum() + b.neg_mask.sum()) for b in batches)
    print(f"{args.pairs} pairs ({tokens / args.pairs:.1f} tokens/pair), grid {GRID}, layer {layer}, {device}")

    def run_sweep(pairs: list[PairBatch]) -> SweepLosses:
        return sweep_losses(scorer, control, pairs, GRID, "all", "mean", progress=False, max_rows=args.max_rows)

    def run_plain(pairs: list[PairBatch]) -> SweepLosses:
        return plain_sweep_losses(scorer, control, pairs, GRID, "all", "mean")

    warm = [batches[0].select(slice(0, 2))]  # warm-up (kernels, allocator)
    run_sweep(warm)
    run_plain(warm)
    # Interleaved, batch by batch, so that both engines see the same load on a shared machine.
    plain_batches = -(-plain_pairs // args.batch_size)
    fast, fast_same, plain = Timing(), Timing(), Timing()
    for i, batch in enumerate(batches):
        if i < plain_batches:  # the sweep runs twice on these batches: once right beside the plain loop
            fast_same.add(run_sweep, batch, device)
            plain.add(run_plain, batch, device)
        fast.add(run_sweep, batch, device)
        print(f"batch {i + 1}/{len(batches)}: sweep {fast.wall:.1f} s, plain {plain.wall:.1f} s", flush=True)

    m = len(GRID)
    n = plain.pairs
    diff = max(
        float((fast.losses("l_pos")[:, :n] - plain.losses("l_pos")).abs().max()),
        float((fast.losses("l_neg")[:, :n] - plain.losses("l_neg")).abs().max()),
    )
    wall_ratio = plain.wall / fast_same.wall
    cpu_ratio = plain.cpu / fast_same.cpu
    extrapolated = plain.pairs != fast.pairs
    mem_label = "peak CUDA memory above baseline" if device.type == "cuda" else "peak RSS above baseline"
    MiB = 2**20

    def rate(t: Timing) -> float:
        return t.pairs * m / t.wall

    print(f"sweep, all {fast.pairs} pairs: {fast.wall:.1f} s (CPU {fast.cpu:.1f} s), {rate(fast):.2f} pair-m/s")
    print(f"sweep, first {n} pairs: {fast_same.wall:.1f} s (CPU {fast_same.cpu:.1f} s), {rate(fast_same):.2f} pair-m/s")
    print(f"plain, first {n} pairs: {plain.wall:.1f} s (CPU {plain.cpu:.1f} s), {rate(plain):.2f} pair-m/s")
    print(f"speed-up on the same pairs, interleaved: wall {wall_ratio:.2f}x, CPU time {cpu_ratio:.2f}x")
    print(
        f"max |dL| sweep vs plain: {diff:.2e}; {mem_label}: "
        f"sweep {fast.peak / MiB:.0f} MiB, plain {plain.peak / MiB:.0f} MiB"
    )

    command = "python scripts/bench_sweep.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    first = f"first {n}" if extrapolated else f"all {n}"
    rows = [
        f"| `sweep_losses` (packed, lower blocks once, multipliers batched, completion-only logits) | {first} "
        f"| {fast_same.wall:.1f} s | {fast_same.cpu:.1f} s | {rate(fast_same):.2f} | {fast_same.peak / MiB:.0f} MiB |",
        f"| `plain_sweep_losses` (two full forwards per pair and m, full-vocabulary logits) | {first} "
        f"| {plain.wall:.1f} s | {plain.cpu:.1f} s | {rate(plain):.2f} | {plain.peak / MiB:.0f} MiB |",
    ]
    if extrapolated:
        rows.append(
            f"| `sweep_losses`, every pair | all {fast.pairs} | {fast.wall:.1f} s | {fast.cpu:.1f} s "
            f"| {rate(fast):.2f} | {fast.peak / MiB:.0f} MiB |"
        )
    setup = (
        f"{args.pairs} Psychopathy pairs (100 test + {max(args.pairs - 100, 0)} train; "
        f"{tokens / args.pairs:.1f} tokens per pair: prompt + both completions), 11 multipliers {GRID}, "
        f"random vector control at layer {layer} of {len(layout.blocks)}, steering all positions, per-token "
        f"mean NLL, fp32, sdpa attention, {args.batch_size} pairs per batch; the sweep stacks up to "
        f"{args.max_rows} packed rows (pairs × multipliers) per upper-block pass."
    )
    if extrapolated:
        coverage = (
            f"The plain loop ran on the first {n} pairs only (it is too slow for all {fast.pairs} here): "
            f"**extrapolated** linearly it would take {plain.wall * fast.pairs / n:.0f} s for all "
            f"{fast.pairs}, against {fast.wall:.1f} s measured for the sweep."
        )
    else:
        coverage = f"Both engines ran on all {n} pairs."
    load = os.getloadavg()
    section = f"""
## Multiplier sweep vs plain loop (SmolLM2-135M-Instruct, Psychopathy) — {dt.date.today().isoformat()}

Command: `{command.strip()}`

Machine: {machine(device)}. The machine is shared: load average {load[0]:.1f} / {load[1]:.1f} /
{load[2]:.1f} (1/5/15 min) at the end, so absolute times are noisy. To compare under the same load, the two
engines ran batch by batch in turn on the pairs both measured (first two rows); the speed-up is taken there.

Setup: {setup}

| engine | pairs | wall time | CPU time | pairs×multipliers / s | {mem_label} (max over batches) |
|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Speed-up of the sweep on the same pairs: **{wall_ratio:.2f}× wall time**, {cpu_ratio:.2f}× CPU time (target
≥ 3×). {coverage} Largest |L_sweep − L_plain| over the pairs both measured, all multipliers: {diff:.1e} nats
(per-token mean NLL, fp32).
"""
    if not args.no_write:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        header = "" if out.exists() else "# Benchmarks\n"
        with out.open("a") as handle:
            handle.write(header + section)
        print(f"appended to {out}")


if __name__ == "__main__":
    main()
