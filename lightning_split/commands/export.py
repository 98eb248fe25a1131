"""``lightning-split export``: write a trained control in a format other runtimes read (llama.cpp, vLLM, peft)."""

from __future__ import annotations

import argparse
import sys

HELP = "write a trained control for other runtimes: GGUF control vector, peft LoRA or merged checkpoint"

_FORMATS = ("gguf", "peft", "merged")  # lightning_split.export.FORMATS, kept here so --help imports no torch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-split export",
        description=(
            "Export the control saved by a `lightning-split fit` run. Formats by form: vector (and DiffMean) → gguf "
            "(a llama.cpp/EasySteer control vector); lora → peft (default) or merged; local_weight → merged "
            "(default) or peft with --svd-rank. ReFT and full-block controls have no runtime format."
        ),
    )
    parser.add_argument("source", help="a run folder (its control/ is found) or a saved control folder")
    parser.add_argument("-o", "--output", required=True, help="file (gguf) or folder (peft, merged) to write")
    parser.add_argument("--format", choices=_FORMATS, help="output format (default: the form's first format)")
    parser.add_argument(
        "--multiplier",
        type=float,
        help="strength m: gguf bakes it into the vectors (default: none, the runtime's scale is m); peft folds it "
        "into lora_alpha and merged merges at it (default 1)",
    )
    parser.add_argument("--svd-rank", type=int, help="local_weight → peft: rank of the LoRA approximating ΔW")
    parser.add_argument("--model-hint", help="gguf: controlvector.model_hint (default: the backbone's model_type)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def main(argv: list[str]) -> None:
    """Parses ``argv``, exports the control and prints what was written and how to use it."""
    args = _parser().parse_args(argv)
    from ..export import export_control

    result = export_control(
        args.source,
        args.output,
        format=args.format,
        multiplier=args.multiplier,
        svd_rank=args.svd_rank,
        model_hint=args.model_hint,
        overwrite=args.overwrite,
    )
    print(f"lightning-split export: wrote {result.format} to {result.output}", flush=True)
    for line in result.notes:
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout, flush=True)
