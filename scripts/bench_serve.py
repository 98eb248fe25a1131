"""Benchmark: ``lightning-split serve`` under concurrent clients against ``SteeredModel.generate`` in one process.

Serves one control on SmolLM2-135M-Instruct (a random vector at the middle layer unless ``--control`` names a
trained one) in a ``lightning-split serve`` process, sends ``--requests`` chat completions from ``--clients``
threads with the official ``openai`` client (prompts and multipliers cycled, greedy), then stops the server and
decodes the same (prompt, multiplier) requests in this process with :meth:`SteeredModel.generate`, one request
per call (a plain loop) and ``--max-batch-size`` requests per call (offline batching, the ideal the server's
batching approaches). Reports reply tokens per second (reply texts re-encoded, the same count for every way),
p50/p95 latency per request, and how many server replies equal the one-request-per-call replies.

Usage (the full run; takes minutes on a CPU):
    python scripts/bench_serve.py --clients 8 --requests 64 --max-tokens 64
    python scripts/bench_serve.py --device-map cuda --requests 256        # on a GPU
A smoke run: python scripts/bench_serve.py --clients 2 --requests 4 --max-tokens 4
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_split.artifacts import SteeredModel, control_metadata, load_steered, save_control  # noqa: E402
from lightning_split.backbone import load_backbone  # noqa: E402
from lightning_split.interventions import VectorOptions, build_control  # noqa: E402
from lightning_split.layout import discover_layout, middle_layer  # noqa: E402

PROMPTS = [
    "Describe your ideal weekend.",
    "What do you think of rainy days?",
    "Write one sentence about the sea.",
    "How was your last meal?",
    "Give me your opinion on public transport.",
    "Tell me about a book you like.",
    "What is the best way to learn to cook?",
    "Describe the city you live in.",
]
MULTIPLIERS = [0.0, 2.0, 4.0, -2.0]

Request = tuple[str, float]
Measured = tuple[list[str], list[float], float]
"""Replies, per-request latencies (s) and wall time (s)."""


def random_control(backbone: str, directory: Path) -> Path:
    """A random vector control at the backbone's middle layer (norm about 0.5·√hidden), saved to ``directory``."""
    model, _ = load_backbone(backbone)
    layout = discover_layout(model)
    control = build_control(VectorOptions(init_std=0.0), layout, [middle_layer(layout)])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    metadata = control_metadata(control, {"backbone": backbone, "positions": "all"}, "split", MULTIPLIERS)
    return save_control(directory, control, metadata)


def say(message: str) -> None:
    """A progress line on stderr (flushed: it shows when output is not a terminal)."""
    print(f"[bench_serve {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(control: Path, args: argparse.Namespace, port: int) -> subprocess.Popen[str]:
    """``lightning-split serve`` on ``port``; returns once ``/health`` answers."""
    command = [sys.executable, "-m", "lightning_split.cli", "serve", "--control", f"bench={control}",
               "--port", str(port), "--max-batch-size", str(args.max_batch_size), "--dtype", args.dtype,
               "--max-tokens", str(args.max_tokens), "--log-level", "warning"]  # fmt: skip
    if args.device_map:
        command += ["--device-map", args.device_map]
    server = subprocess.Popen(command, text=True)
    deadline = time.monotonic() + 600
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        if time.monotonic() > deadline:
            server.terminate()
            raise SystemExit("the server did not answer /health within 10 minutes")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)


def run_clients(port: int, requests: list[Request], clients: int, max_tokens: int) -> Measured:
    """Sends every request from ``clients`` threads after one warm-up request; the replies and each request's
    latency in request order, and the wall time."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=3600)

    def ask(request: Request) -> tuple[str, float]:
        prompt, m = request
        start = time.perf_counter()
        reply = client.chat.completions.create(
            model="bench", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0,
            extra_body={"multiplier": m},
        )  # fmt: skip
        return reply.choices[0].message.content or "", time.perf_counter() - start

    ask(requests[0])  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(ask, requests))
    return [text for text, _ in results], [latency for _, latency in results], time.perf_counter() - start


def in_process(steered: SteeredModel, requests: list[Request], batch: int, max_tokens: int) -> Measured:
    """Replies, per-request latencies and wall time of ``SteeredModel.generate`` (after a warm-up call) on up to
    ``batch`` consecutive requests of one multiplier per call (a call's requests all wait for the whole call)."""
    steered.generate(requests[0][0], requests[0][1], max_new_tokens=max_tokens)  # warm-up
    begin = time.perf_counter()
    texts: list[str] = []
    latencies: list[float] = []
    for m, same_m in itertools.groupby(requests, key=lambda request: request[1]):
        prompts = [prompt for prompt, _ in same_m]
        for i in range(0, len(prompts), batch):
            chunk = prompts[i : i + batch]
            start = time.perf_counter()
            texts += [r["text"] for r in steered.generate(chunk, m, max_new_tokens=max_tokens)]
            latencies += [time.perf_counter() - start] * len(chunk)
    return texts, latencies, time.perf_counter() - begin


def row(label: str, tokens: int, wall: float, latencies: list[float]) -> str:
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20, method="inclusive")[-1]
    return f"| {label} | {tokens} | {wall:.2f} | {tokens / wall:.1f} | {p50:.2f} | {p95:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m-instruct")
    parser.add_argument("--control", type=Path, help="a saved control (default: a random vector at the middle)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device-map", help="e.g. cuda (default: CPU)")
    args = parser.parse_args()
    if args.requests < 2:
        parser.error("--requests must be at least 2 (p95 needs two latencies)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # every prompt at one multiplier, then every prompt at the next
    requests = [
        (PROMPTS[i % len(PROMPTS)], MULTIPLIERS[(i // len(PROMPTS)) % len(MULTIPLIERS)]) for i in range(args.requests)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        control = args.control or random_control(args.backbone, Path(tmp) / "control")
        port = free_port()
        say(f"starting lightning-split serve on port {port}")
        server = start_server(control, args, port)
        try:
            say(f"sending {len(requests)} requests from {args.clients} clients")
            served, latencies, wall = run_clients(port, requests, args.clients, args.max_tokens)
        finally:
            server.terminate()
            server.wait(60)
        say(f"served in {wall:.1f} s; now SteeredModel.generate in this process, one request per call")
        options = {"dtype": args.dtype, "device_map": args.device_map}
        steered = load_steered(control, **{k: v for k, v in options.items() if v})
        loop, loop_latencies, loop_wall = in_process(steered, requests, 1, args.max_tokens)
        say(f"one request per call: {loop_wall:.1f} s; now {args.max_batch_size} requests per call")
        batched, batched_latencies, batched_wall = in_process(steered, requests, args.max_batch_size, args.max_tokens)
        say(f"{args.max_batch_size} requests per call: {batched_wall:.1f} s")

    def tokens(texts: list[str]) -> int:
        return sum(len(steered.tokenizer.encode(t, add_special_tokens=False)) for t in texts)

    device = args.device_map or "cpu"
    print(f"\n{args.requests} requests, {args.clients} clients, max_tokens {args.max_tokens}, {args.backbone} "
          f"({args.dtype}, {device}, {torch.get_num_threads()} threads), multipliers {MULTIPLIERS}\n")  # fmt: skip
    print("| way | reply tokens | wall s | tokens/s | p50 latency s | p95 latency s |")
    print("|---|---|---|---|---|---|")
    print(row(f"serve, {args.clients} concurrent clients, batches ≤ {args.max_batch_size}", tokens(served), wall,
              latencies))  # fmt: skip
    print(row("SteeredModel.generate, one request per call", tokens(loop), loop_wall, loop_latencies))
    print(row(f"SteeredModel.generate, {args.max_batch_size} requests per call", tokens(batched), batched_wall,
              batched_latencies))  # fmt: skip
    same = sum(a == b for a, b in zip(served, loop))
    print(f"\nserver replies equal to one-request-per-call replies: {same}/{len(requests)}")


if __name__ == "__main__":
    main()
