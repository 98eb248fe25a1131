"""``lightning-split generate``: steered replies of a trained control, every prompt at every multiplier.

    lightning-split generate runs/smollm2/sentiment/split-vector --prompt "Describe your day." \\
        --prompt "Write about the sea." --multipliers -2 0 2 4 --max_new_tokens 48

The folder is a saved control (holding ``control.json``) or a run folder holding one in ``control/``. Prompts
come from ``--prompt`` (repeatable) and/or ``--prompts FILE``: a ``.txt`` file with one prompt per non-blank
line, or a ``.jsonl`` file whose lines are objects with a ``prompt`` field (or plain JSON strings). All prompts
at all multipliers decode together in one batch (:meth:`~lightning_split.artifacts.SteeredModel.generate`;
``--batch_size`` splits them by prompt), with the chat template, steered positions and end-of-turn stop the
control was trained with. The replies go to a JSONL file (one ``{"prompt", "m", "text"}`` per line, prompt by
prompt, multipliers in the order given), written only when every reply is done, and are printed as a table.
Every option is checked, and the prompts read, before the backbone loads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lightning_split.artifacts import CONFIG_FILE, CONTROL_DIRNAME, ControlFileError
from lightning_split.data.pairs import DataFileError
from lightning_split.errors import OptionError
from lightning_split.files import write_text_atomic

HELP = "steered replies of a saved control: prompts x multipliers in one batch, to JSONL and a table"

DEFAULT_MULTIPLIERS = (0.0, 1.0)


def control_folder(path: str | Path) -> Path:
    """The saved control of ``path``: the folder itself when it holds ``control.json``, else its ``control/``.

    Raises:
        ControlFileError: neither is there.
    """
    folder = Path(path).expanduser()
    for candidate in (folder, folder / CONTROL_DIRNAME):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ControlFileError(
        f"{folder} is neither a saved control (no {CONFIG_FILE}) nor a run folder with "
        f"{CONTROL_DIRNAME}/{CONFIG_FILE}; pass the run folder a `fit` wrote, or its control/ folder"
    )


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` file (one per non-blank line) or a ``.jsonl`` file (``{"prompt": ...}`` or a string).

    Raises:
        DataFileError: missing file, unknown extension, a line that is not a prompt (naming the line), no prompts.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileError(f"prompts file not found: {path} (option --prompts)")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise DataFileError(f"{path}: prompts come from a .txt (one per line) or .jsonl file, not {suffix!r}")
    prompts: list[str] = []
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not text.strip():
            continue
        if suffix == ".txt":
            prompts.append(text.strip())
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}, line {line}: malformed JSON ({err.msg}); write one object per line") from None
        prompt = value.get("prompt") if isinstance(value, dict) else value
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataFileError(f'{path}, line {line}: no prompt; write {{"prompt": "..."}} or a JSON string')
        prompts.append(prompt)
    if not prompts:
        raise DataFileError(f"{path} holds no prompts")
    return prompts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightning-split generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a run folder (with control/) or a saved control folder")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several)")
    parser.add_argument("--prompts", help="a .txt (one prompt per line) or .jsonl ({'prompt': ...}) file")
    parser.add_argument(
        "--multipliers", type=float, nargs="+", default=list(DEFAULT_MULTIPLIERS), help="m values (default: 0 1)"
    )
    parser.add_argument("--max_new_tokens", type=int, default=64, help="most tokens per reply (default: 64)")
    parser.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --do_sample)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampling")
    parser.add_argument("--batch_size", type=int, default=None, help="prompts per batch (default: all at once)")
    parser.add_argument("--output", help="the JSONL file (default: <folder>/generations-<time>.jsonl)")
    parser.add_argument("--backbone", help="load the control onto this backbone instead of the recorded one")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    return parser


def _check(args: argparse.Namespace) -> None:
    bad = [
        ("--max_new_tokens", args.max_new_tokens, args.max_new_tokens < 1, ">= 1"),
        ("--batch_size", args.batch_size, args.batch_size is not None and args.batch_size < 1, ">= 1"),
        ("--temperature", args.temperature, args.do_sample and not args.temperature > 0, "> 0 with --do_sample"),
    ]
    for name, value, wrong, rule in bad:
        if wrong:
            raise OptionError(f"option {name} is {value}; it must be {rule}")


def format_table(rows: list[dict[str, Any]], width: int = 100) -> str:
    """The replies as a plain-text table: prompt (shortened), m and the reply on one line (shortened)."""

    def cut(text: str, n: int) -> str:
        flat = " ".join(text.split())
        return flat if len(flat) <= n else flat[: n - 1] + "…"

    prompt_width = min(30, max(len("prompt"), *(len(cut(r["prompt"], 30)) for r in rows)))
    lines = [f"{'prompt':<{prompt_width}}  {'m':>6}  text"]
    for row in rows:
        lines.append(f"{cut(row['prompt'], prompt_width):<{prompt_width}}  {row['m']:>6g}  {cut(row['text'], width)}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Runs ``lightning-split generate`` (see the module docstring)."""
    args = _parser().parse_args(argv)
    _check(args)
    folder = control_folder(args.folder)
    prompts = list(args.prompt) + (read_prompts(args.prompts) if args.prompts else [])
    if not prompts:
        raise OptionError("no prompts: give --prompt TEXT (repeatable) or --prompts FILE")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    given = Path(args.folder).expanduser()
    output = Path(args.output).expanduser() if args.output else given / f"generations-{stamp}.jsonl"

    import torch

    from lightning_split.artifacts import load_steered

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    steered = load_steered(folder, backbone=args.backbone, device_map={"": device})
    size = args.batch_size or len(prompts)
    print(f"generating {len(prompts)} prompts x {len(args.multipliers)} multipliers on {device}", flush=True)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for first in range(0, len(prompts), size):
        replies = steered.generate(
            prompts[first : first + size],
            args.multipliers,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.do_sample,
            temperature=args.temperature,
            seed=args.seed,
        )
        rows += [{"prompt": r["prompt"], "m": r["multiplier"], "text": r["text"]} for r in replies]
    seconds = time.perf_counter() - start
    write_text_atomic(output, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(format_table(rows))
    print(f"{len(rows)} replies in {seconds:.1f} s; written to {output}")
