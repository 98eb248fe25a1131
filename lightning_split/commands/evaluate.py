"""``lightning-split evaluate``: the judged evaluation of a trained control (SPEC §8, ``docs/evaluation.md``).

    lightning-split evaluate runs/smollm2/power-seeking/split-vector --dataset power-seeking --max_prompts 40 \\
        --multipliers 0 2 4 6 --judge openai --judge-model gpt-4.1-mini
    lightning-split evaluate runs/smollm2/axbench/split-vector --dataset axbench --concepts 3 \\
        --multipliers 0 1 2 4 --judge hf:smollm2-135m-instruct

Every prompt is answered at every multiplier (sampled, 128 new tokens, temperature 1 by default; batched steered
generation), each reply is judged with the dataset's rubric (AxBench: concept, instruction, fluency 0–2; BiPO
PowerSeeking: behaviour 1–4), the multiplier with the best mean judged score on a seeded selection half of the
prompts is chosen and reported on the other half, and the run's log-odds curve is set beside the judged scores with
Spearman correlations. Output folder (``--out``, default ``<run>/evaluate-<time>/``): ``generations.jsonl`` (appended
as replies are made), ``judged.jsonl``, ``results.json``, ``report.md``, ``judge-cache.sqlite``. Rerunning with the
same ``--out`` resumes: stored replies are not generated again and cached judgments are not asked again; other
generation settings are refused. Every option is checked, and the prompts read, before the backbone loads.
Options may be written with ``-`` or ``_`` (``--max-new-tokens`` = ``--max_new_tokens``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lightning_split.artifacts import check_weights, control_sha256, read_metadata
from lightning_split.commands.generate import control_folder
from lightning_split.errors import OptionError

HELP = "judged evaluation of a control: generate at each m, judge, choose m on one half, report it on the other"

DATASET_NAMES = {"power-seeking": "power-seeking", "powerseeking": "power-seeking", "axbench": "axbench"}
JUDGE_MAX_TOKENS = {"power-seeking": 10, "axbench": 256}  # BiPO: the score first, at most 10 tokens; AxBench explains
PREFILLED_MAX_TOKENS = 8  # a prefilled reply continues at the score: a few tokens hold it
JUDGE_CACHE_FILE = "judge-cache.sqlite"


def _add(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Adds ``--name`` under both spellings (hyphens and underscores)."""
    spellings = dict.fromkeys(["--" + name.replace("_", "-"), "--" + name.replace("-", "_")])
    parser.add_argument(*spellings, dest=name.replace("-", "_"), **kwargs)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightning-split evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a run folder (with control/) or a saved control folder")
    _add(p, "dataset", required=True, choices=sorted(DATASET_NAMES), help="power-seeking or axbench")
    _add(p, "concepts", type=int, nargs="+", help="AxBench concept ids (their 8 test instructions each)")
    _add(p, "max_prompts", type=int, help="PowerSeeking: a seeded subset of this many test questions (default: all)")
    _add(p, "multipliers", type=float, nargs="+", required=True, help="the grid of m (distinct)")
    _add(p, "seed", type=int, default=0, help="seed of the prompt subset, the halves and the sampling (default 0)")
    _add(p, "data_seed", type=int, default=42, help="AxBench: the data module's split seed (default 42)")
    _add(p, "data_dir", help="the data directory (default: $LIGHTNING_SPLIT_DATA_DIR or ../shared/data)")
    _add(p, "max_new_tokens", type=int, default=128, help="most tokens per reply (default 128)")
    _add(p, "temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    _add(p, "greedy", action="store_true", help="decode greedily instead of sampling")
    _add(p, "rows_per_call", type=int, default=64, help="most prompt x m rows per generate call (default 64)")
    _add(p, "judge", required=True, help="hf:MODEL (in process, e.g. hf:smollm2-135m-instruct) or openai")
    _add(p, "judge-model", help="the model an openai judge asks")
    _add(p, "judge-base-url", help="an OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or api.openai.com)")
    _add(p, "judge-temperature", type=float, default=0.0, help="judge temperature (default 0)")
    _add(p, "judge-seed", type=int, default=0, help="judge seed (default 0)")
    _add(
        p,
        "judge-max-tokens",
        type=int,
        help="judge reply tokens (default: 10 power-seeking, 256 axbench, 8 with --judge-prefill)",
    )
    _add(p, "judge-batch-size", type=int, default=8, help="hf judge: prompts decoded together (default 8)")
    _add(p, "judge-concurrency", type=int, default=8, help="openai judge: requests in flight (default 8)")
    _add(
        p,
        "judge-prefill",
        action="store_true",
        help="start each judge reply at the score ('Rating: [[' / 'Score: '), for small in-process judges that do "
        "not follow the reply format; departs from the protocol (no explanation first) and is recorded",
    )
    _add(
        p,
        "judge-constrained",
        action="store_true",
        help="with --judge-prefill and an hf: judge: no text generated, the reply is the score of the rubric's scale "
        "whose first token the judge ranks highest after the reply start; recorded in the judge settings",
    )
    _add(p, "judge-cache", help=f"the judge reply cache (default: <out>/{JUDGE_CACHE_FILE})")
    _add(p, "unparseable-retries", type=int, default=2, help="times an unparseable reply is asked again (default 2)")
    _add(p, "no_logodds", action="store_true", help="skip the log-odds curve (no sweep) and the correlations")
    _add(p, "out", help="the output folder (default: <run>/evaluate-<time>); an existing one is resumed")
    _add(p, "wandb", action="store_true", help="log a W&B table of the generations (offline unless WANDB_MODE)")
    _add(p, "wandb_project", default="lightning-split", help="W&B project (default lightning-split)")
    _add(p, "backbone", help="load the control onto this backbone instead of the recorded one")
    _add(p, "device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    return p


def _check(args: argparse.Namespace) -> None:
    """Refuses bad option values and combinations (before anything is read or loaded)."""
    grid = args.multipliers
    bad = [
        ("--multipliers", grid, len(set(grid)) != len(grid), "distinct values"),
        ("--max_new_tokens", args.max_new_tokens, args.max_new_tokens < 1, ">= 1"),
        ("--temperature", args.temperature, not args.greedy and not args.temperature > 0, "> 0 when sampling"),
        ("--rows_per_call", args.rows_per_call, args.rows_per_call < 1, ">= 1"),
        ("--judge-temperature", args.judge_temperature, args.judge_temperature < 0, ">= 0"),
        ("--judge-max-tokens", args.judge_max_tokens, (args.judge_max_tokens or 1) < 1, ">= 1"),
        ("--judge-batch-size", args.judge_batch_size, args.judge_batch_size < 1, ">= 1"),
        ("--judge-concurrency", args.judge_concurrency, args.judge_concurrency < 1, ">= 1"),
        ("--unparseable-retries", args.unparseable_retries, args.unparseable_retries < 0, ">= 0"),
    ]
    for name, value, wrong, rule in bad:
        if wrong:
            raise OptionError(f"option {name} is {value}; it must be {rule}")
    dataset = DATASET_NAMES[args.dataset]
    if dataset == "axbench" and args.max_prompts is not None:
        raise OptionError("option --max_prompts is for power-seeking; AxBench uses the 8 test instructions per concept")
    if dataset == "axbench" and not args.concepts:
        raise OptionError("--dataset axbench needs --concepts ID [ID ...]: the concepts the control was trained on")
    if dataset == "power-seeking" and args.concepts:
        raise OptionError("option --concepts is for --dataset axbench")
    if not (args.judge == "openai" or (args.judge.startswith("hf:") and len(args.judge) > 3)):
        raise OptionError(f"option --judge is {args.judge!r}; use hf:MODEL (e.g. hf:smollm2-135m-instruct) or openai")
    if args.judge == "openai" and not args.judge_model:
        raise OptionError("--judge openai needs --judge-model NAME (the model the endpoint serves)")
    if args.judge != "openai" and (args.judge_model or args.judge_base_url):
        raise OptionError("--judge-model and --judge-base-url are for --judge openai; hf:MODEL names its model")
    if args.judge_constrained and not (args.judge_prefill and args.judge.startswith("hf:")):
        raise OptionError(
            "option --judge-constrained needs --judge-prefill and an in-process judge (--judge hf:MODEL): it reads "
            "the score from the judge's next-token logits after the reply start"
        )


def _prompts(args: argparse.Namespace, dataset: str) -> list[Any]:
    from lightning_split.evaluation import axbench_prompts, power_seeking_prompts

    if dataset == "axbench":
        return axbench_prompts(args.concepts, args.data_dir, args.data_seed)
    return power_seeking_prompts(args.data_dir, args.max_prompts, args.seed)


def _judge(args: argparse.Namespace, dataset: str, device: str) -> Any:
    """The judge, without its cache (set once the output folder is known to be usable)."""
    from lightning_split.judges import HFJudge, OpenAIJudge

    max_tokens = args.judge_max_tokens or (PREFILLED_MAX_TOKENS if args.judge_prefill else JUDGE_MAX_TOKENS[dataset])
    if args.judge == "openai":
        return OpenAIJudge(
            args.judge_model,
            base_url=args.judge_base_url,
            temperature=args.judge_temperature,
            seed=args.judge_seed,
            max_tokens=max_tokens,
            concurrency=args.judge_concurrency,
        )
    judge = HFJudge(
        args.judge[3:],
        temperature=args.judge_temperature,
        seed=args.judge_seed,
        max_new_tokens=max_tokens,
        batch_size=args.judge_batch_size,
        device=device,
        choices=_rubric(dataset, args.judge_prefill).scores if args.judge_constrained else None,
    )
    return judge


def _rubric(dataset: str, prefill: bool) -> Any:
    """The dataset's rubric (AxBench or BiPO), prefilled when asked."""
    from lightning_split.judges import axbench_rubric, bipo_rubric

    rubric = axbench_rubric() if dataset == "axbench" else bipo_rubric()
    return rubric.prefilled() if prefill else rubric


def _logodds(args: argparse.Namespace, dataset: str, run_folder: Path, steered: Any, prompts: list[Any]) -> Any:
    """The run's curve if one covers the grid, else a sweep of the prompts' PowerSeeking pairs, else absent."""
    from lightning_split.data.pairs import PolarityPair
    from lightning_split.evaluation import LogOdds, from_run, from_sweep

    if args.no_logodds:
        return LogOdds("absent", note="skipped (--no_logodds)")
    found = from_run(run_folder, args.multipliers)
    if found is not None:
        return found
    if dataset == "axbench":
        return LogOdds("absent", note="no curve of the run covers the grid, and AxBench has no negatives to sweep")
    pairs = [PolarityPair(p.prompt, p.context["matching"], p.context["not_matching"]) for p in prompts]
    return from_sweep(steered, pairs, args.multipliers)


def main(argv: list[str]) -> None:
    """Runs ``lightning-split evaluate`` (see the module docstring)."""
    args = _parser().parse_args(argv)
    _check(args)
    dataset = DATASET_NAMES[args.dataset]
    folder = control_folder(args.folder)
    metadata = read_metadata(folder)
    check_weights(folder)
    given = Path(args.folder).expanduser()
    run_folder = given.parent if given.resolve() == folder.resolve() else given
    out = Path(args.out).expanduser() if args.out else run_folder / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}"
    prompts = _prompts(args, dataset)

    import torch

    from lightning_split.artifacts import load_steered
    from lightning_split.evaluation import (
        NO_VALID,
        GenerationSettings,
        GenerationStore,
        NoValidJudgmentsError,
        evaluate,
        log_wandb,
        split_halves,
        write_outputs,
    )
    from lightning_split.judges import JudgeCache

    halves = split_halves(prompts, args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    judge = _judge(args, dataset, device)
    if args.judge.startswith("hf:"):
        judge.check_tokenizer()  # a judge without a chat template is refused before anything is generated
    generation = GenerationSettings(args.max_new_tokens, not args.greedy, args.temperature, args.seed)
    settings = {
        "dataset": dataset,
        "control_sha256": control_sha256(folder),
        "backbone": args.backbone or metadata["backbone"],
        "positions": metadata.get("positions", "all"),
        "generation": generation.as_dict(),
    }
    store = GenerationStore(out, settings)
    judge.cache = JudgeCache(Path(args.judge_cache).expanduser() if args.judge_cache else out / JUDGE_CACHE_FILE)
    print(
        f"evaluating {len(prompts)} prompts x {len(args.multipliers)} multipliers on {device}; output {out}", flush=True
    )
    steered = load_steered(folder, backbone=args.backbone, device_map={"": device})
    result = evaluate(
        steered,
        prompts,
        halves,
        args.multipliers,
        dataset,
        judge,
        _rubric(dataset, args.judge_prefill),
        store,
        generation,
        rows_per_call=args.rows_per_call,
        unparseable_retries=args.unparseable_retries,
        logodds=_logodds(args, dataset, run_folder, steered, prompts),
    )
    paths = write_outputs(result, out)
    if args.wandb:
        log_wandb(result, out, args.wandb_project)
    print(paths["report"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    if result.choice is None:
        raise NoValidJudgmentsError(f"{NO_VALID} ({paths['judged']}); the other files are written")
