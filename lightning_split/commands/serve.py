"""``lightning-split serve``: serve a backbone with saved controls behind an OpenAI-compatible HTTP API.

Example::

    lightning-split serve --control sentiment=runs/sentiment --port 8000
    curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d \
      '{"model": "sentiment", "messages": [{"role": "user", "content": "Hi"}], "multiplier": 1.5}'
"""

from __future__ import annotations

import argparse

HELP = "serve a backbone with saved controls over an OpenAI-compatible chat-completions API (per-request multiplier)"


def parser() -> argparse.ArgumentParser:
    """The command's options."""
    p = argparse.ArgumentParser(
        prog="lightning-split serve",
        description=f"{HELP}. Requests choose the control and its strength with the extra body fields "
        "'control' and 'multiplier' (or send a control's name as 'model'); GET /v1/models lists them.",
    )
    p.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        required=True,
        help="a saved control: its folder, a run folder holding control/, or a folder of runs (each "
        "served under its run's name); repeat for several controls on one backbone",
    )
    p.add_argument("--backbone", help="load this backbone instead of the one the controls were trained on")
    p.add_argument("--model-name", help="the backbone's id in requests and /v1/models (default: its name)")
    p.add_argument("--dtype", default="float32", help="backbone dtype: float32, bfloat16, float16 or auto")
    p.add_argument("--quantization", choices=["nf4", "nf4-dq", "int8"], help="bitsandbytes quantization")
    p.add_argument("--device-map", help="where the backbone goes: cpu, cuda, auto... (default: transformers')")
    p.add_argument("--default-control", help="the control of a request without 'control' (default: the first)")
    p.add_argument("--default-multiplier", type=float, default=1.0, help="multiplier of a request without one")
    p.add_argument("--max-multiplier", type=float, default=100.0, help="the largest |multiplier| accepted")
    p.add_argument("--max-tokens", type=int, default=128, help="max_tokens of a request without one")
    p.add_argument("--temperature", type=float, default=0.0, help="temperature of a request without one (0: greedy)")
    p.add_argument("--max-batch-size", type=int, default=8, help="most requests decoded together")
    p.add_argument("--max-queue", type=int, default=64, help="most requests waiting; more are refused with 429")
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="how long the oldest waiting request waits for others to fill its batch",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p  # fmt: skip


def main(argv: list[str]) -> None:
    """Loads the backbone and controls, then serves until interrupted."""
    args = parser().parse_args(argv)
    import uvicorn

    from ..serve import ServeSettings, create_app, load_served, named_controls

    controls = named_controls(args.control)
    settings = ServeSettings(
        default_control=args.default_control,
        default_multiplier=args.default_multiplier,
        max_multiplier=args.max_multiplier,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        batch_wait_s=args.batch_wait_ms / 1000,
    )
    options = {"dtype": args.dtype, "quantization": args.quantization, "device_map": args.device_map}
    served = load_served(controls, args.backbone, args.model_name, **options)
    app = create_app(served, settings)
    print(f"lightning-split serve: {served.name} with controls {', '.join(served.controls)} on "
          f"http://{args.host}:{args.port}/v1", flush=True)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
