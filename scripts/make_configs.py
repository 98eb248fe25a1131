"""Writes the shipped YAML configs (``configs/``) from one table of settings.

Every form × objective on SmolLM2-135M-Instruct for the embedded sentiment pairs, Psychopathy, PowerSeeking
and AxBench Concept10 (one concept per run: concept 3, online gambling, unless ``--data.concepts '[5]'`` and
``--run_name`` say otherwise), starting from the authors' released settings (``../shared/docs/paper-notes.md`` §4,
the Gemma-2-9B rows) scaled to the model: the middle block (15 of 30) instead of 20 of 42, and the multiplier grid
{0.2, …, 2.0} for every form (for the vector form only ``m·v`` matters, so this is the released {2, …, 20} grid
with a ten times longer vector, and ``m = 1`` sits inside it).

Each config holds only what differs from ``configs/base.yaml`` (the trainer, offline W&B, checkpoints and the
trade-off sweep), which it reads first through its ``base:`` line, and names its run once (``run_name``; the
CLI derives the run folders from it). Run ``python scripts/make_configs.py`` after changing the table;
``tests/test_configs.py`` checks that the committed files are what this script writes and that every one of them
parses and builds, with its run folders.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NamedTuple

import yaml

from lightning_split.interventions import FORMS, FormOptions, VectorOptions, form_class
from lightning_split.objectives import OBJECTIVE_REGISTRY, OBJECTIVES, SPLIT, Objective

MODEL = "smollm2-135m-instruct"
LAYER = 15
DATASETS = ("sentiment", "psychopathy", "power-seeking", "axbench")


class Backbone(NamedTuple):
    """A model the configs are written for: its registered name, config folder, middle block and what it covers."""

    name: str
    folder: str
    title: str
    layer: int
    datasets: tuple[str, ...]
    forms: tuple[str, ...]


SMOLLM2 = Backbone(MODEL, "smollm2", "SmolLM2-135M-Instruct", LAYER, DATASETS, tuple(FORMS))
GEMMA3 = Backbone("gemma3-270m", "gemma3-270m", "Gemma-3-270M", 9, ("psychopathy", "power-seeking"), ("vector", "lora"))
"""Gemma-3-270M (base, 18 blocks, no chat template: plain-text prompts) for the grid's second model: the vector and
LoRA forms on Psychopathy and PowerSeeking, the middle block 9 of 18."""
BACKBONES = (SMOLLM2, GEMMA3)

# Optimiser settings and form options per form (released: vectors lr 0.08, bs 4 × GA 1; LoRA / local weight
# lr 0.01, 4 × 2). Every form of the registry ships configs; a form without a row takes DEFAULT_FORM_SETTINGS
# and its default options.
DEFAULT_FORM_SETTINGS = {"lr": 0.01, "batch_size": 4, "accumulate": 2, "options": {}}
FORM_SETTINGS = {
    "vector": {"lr": 0.08, "batch_size": 4, "accumulate": 1, "options": {"init_std": 0.01}},
    "lora": {"lr": 0.01, "batch_size": 4, "accumulate": 2, "options": {"rank": 4, "alpha": None, "dropout": 0.0}},
    "local_weight": DEFAULT_FORM_SETTINGS,
    "reft": {"lr": 0.01, "batch_size": 4, "accumulate": 2, "options": {"rank": 4}},
    "full": {"lr": 1.0e-4, "batch_size": 4, "accumulate": 2, "options": {}},
}

# SPLIT coefficients (λ_n, γ, θ, bidirectional) per dataset and form, from the released Gemma-2 configs;
# the embedded sentiment pairs are free-form like AxBench and take the AxBench rows. ReFT and full
# fine-tuning were not released; they take the LoRA row.
AXBENCH_SPLIT = {
    "vector": (0.6, 4.0, 0.5, False),
    "lora": (0.5, 5.0, 0.45, False),
    "local_weight": (0.3, 3.5, 0.6, False),
}
SPLIT_SETTINGS = {
    "psychopathy": {
        "vector": (0.5, 8.0, 0.3, True),
        "lora": (0.5, 5.0, 0.4, True),
        "local_weight": (0.5, 5.0, 0.4, False),
    },
    "power-seeking": {
        "vector": (0.5, 5.0, 0.5, False),
        "lora": (0.5, 5.0, 0.4, False),
        "local_weight": (0.5, 5.0, 0.4, False),
    },
    "sentiment": AXBENCH_SPLIT,
    "axbench": AXBENCH_SPLIT,
}
EPOCHS = {"sentiment": 2, "psychopathy": 2, "power-seeking": 2, "axbench": 2}
# Data options beyond the dataset's name: an AxBench run trains one concept (its 64 train / 8 test re-split).
DATA_OPTIONS: dict[str, dict] = {"axbench": {"concepts": [3]}}
# AxBench splits have no validation pairs (the paper's 64/8): no validation loop and no validation sweeps.
NO_VALIDATION = {"limit_val_batches": 0, "num_sanity_val_steps": 0}
TRAINER_OPTIONS: dict[str, dict] = {"axbench": NO_VALIDATION}
TRADEOFF_OPTIONS: dict[str, dict] = {"axbench": {"every_n_val_epochs": 0}}
# 20 multipliers: the report fits curves only with at least 2 distinct multipliers per fitted parameter (18 for
# the 9-parameter preference curve), finely spaced inside the training range and a few points beyond it.
SWEEP = [round(0.25 * k, 2) for k in range(-8, 9)] + [2.5, 3.0, 4.0]
# Pairs per sweep: a seeded subset balanced by answer class (the callback's `max_pairs`). 100 covers every
# Psychopathy validation (50) and test (100) pair, so those reports are the full split's numbers exactly; on
# larger splits (PowerSeeking's 200 test pairs) the report states the subset's sampling error.
SWEEP_PAIRS = 100
# NLL reduction of the log-odds metrics for Yes/No data: summed NLL, under which e^{-L_p} + e^{-L_n} is the
# probability of the two answers and utility is its log-odds. With the per-token mean a 3-token
# "Yes<|im_end|>" answer pushes that sum past 1 and the pair is clamped. Free-text data keep the default.
NLL_REDUCTION = {"psychopathy": "sum"}
DEMO_SWEEP = [-2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0]


BASE = "base.yaml"
"""The settings every shipped config shares; each config reads it first (its ``base:`` line)."""

RUNS = "runs"
"""Where the runs write (``run_name`` ``X`` writes into ``runs/X``: the CLI's ``apply_run_name``)."""


class Flow(dict):
    """A mapping written on one line (``{lr: 0.01}``): the options of an objective, a form or an option group."""


def base_config() -> dict:
    """``configs/base.yaml``: the trainer, offline W&B, last-checkpoint saving and the trade-off sweep.

    The run folders come from each config's ``run_name`` (the default root, the logger's ``save_dir`` and
    ``name``, and the checkpoint folder, fixed so that ``--ckpt_path last`` finds ``last.ckpt`` after a restart).
    """
    return {
        "seed_everything": 42,
        "trainer": {
            "accelerator": "auto",
            "devices": 1,
            "max_epochs": 2,
            "gradient_clip_val": 1.0,
            "log_every_n_steps": 5,
            "logger": {
                "class_path": "lightning.pytorch.loggers.WandbLogger",
                "init_args": Flow(project="lightning_split", offline=True),
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": Flow(save_last=True, every_n_train_steps=20),
                },
            ],
        },
        "tradeoff": tradeoff_section(SWEEP_PAIRS),
    }


def tradeoff_section(sweep_pairs: int | None, multipliers: list[float] = SWEEP) -> dict:
    """The trade-off curve callback's settings (the CLI's ``tradeoff`` group: ``--tradeoff.max_pairs 20``)."""
    return {"multipliers": multipliers, "every_n_val_epochs": 1, "max_pairs": sweep_pairs}


def class_spec(value: FormOptions | Objective, init_args: dict) -> dict:
    """``{class_path, init_args}`` of a form's options or an objective (no ``init_args`` when empty)."""
    cls = type(value)
    spec: dict = {"class_path": f"{cls.__module__}.{cls.__qualname__}"}
    return {**spec, "init_args": Flow(init_args)} if init_args else spec


def form_spec(form: str) -> dict:
    """The ``form`` argument of ``form`` with its settings' options (checked against the form's options)."""
    settings = FORM_SETTINGS.get(form, DEFAULT_FORM_SETTINGS)["options"]
    return class_spec(form_class(form).options(**settings), settings)


def objective_spec(dataset: str, objective: str, form: str) -> dict:
    """The ``objective`` argument: the released SPLIT coefficients, the other objectives' defaults."""
    arguments: dict = {}
    if objective == "split":
        lambda_n, gamma, theta, bidirectional = SPLIT_SETTINGS[dataset].get(form, SPLIT_SETTINGS[dataset]["lora"])
        arguments = {"lambda_n": lambda_n, "gamma": gamma, "theta": theta, "bidirectional": bidirectional}
    return class_spec(OBJECTIVE_REGISTRY[objective](**arguments), arguments)


def model_section(backbone: str, objective: dict | None, form: dict, layer: int, **groups: dict) -> dict:
    """The model block: one :class:`~lightning_split.SteeringModule` with its objective, form and the option groups
    that differ from the defaults (``training={"lr": 0.08}``)."""
    init = {"backbone": backbone, "objective": objective, "form": form, "layer": layer}
    init.update({name: Flow(values) for name, values in groups.items() if values})
    return {
        "class_path": "lightning_split.SteeringModule",
        "init_args": {k: v for k, v in init.items() if v is not None},
    }


def evaluation(dataset: str) -> dict:
    """The dataset's evaluation options (empty: the defaults)."""
    return {"nll_reduction": NLL_REDUCTION[dataset]} if dataset in NLL_REDUCTION else {}


def run_config(run: str, trainer: dict, model: dict, data: dict, **extra: object) -> dict:
    """One shipped config: the base (its path is set by :func:`all_configs`), the run's name (its folders follow)
    and what differs from the base; a dataset's own data, trainer and sweep options are added here."""
    dataset = data.get("dataset")
    base = base_config()["trainer"]
    trainer = {k: v for k, v in {**trainer, **TRAINER_OPTIONS.get(dataset, {})}.items() if base.get(k, ...) != v}
    data = {**data, **DATA_OPTIONS.get(dataset, {})}
    if dataset in TRADEOFF_OPTIONS:
        extra = {"tradeoff": Flow(TRADEOFF_OPTIONS[dataset]), **extra}
    return {"base": None, "run_name": run, "trainer": trainer, "model": model, "data": data, **extra}


def method_config(dataset: str, objective: str, form: str, backbone: Backbone = SMOLLM2) -> dict:
    """One shipped config."""
    fs = FORM_SETTINGS.get(form, DEFAULT_FORM_SETTINGS)
    spec = objective_spec(dataset, objective, form)
    model = model_section(
        backbone.name, spec, form_spec(form), backbone.layer, training={"lr": fs["lr"]}, evaluation=evaluation(dataset)
    )
    return run_config(
        f"{backbone.folder}/{dataset}/{objective}-{form}",
        {"max_epochs": EPOCHS[dataset], "accumulate_grad_batches": fs["accumulate"]},
        model,
        {"dataset": dataset, "batch_size": fs["batch_size"]},
    )


def diffmean_config(dataset: str, backbone: Backbone = SMOLLM2) -> dict:
    """DiffMean: one pass over the training pairs fits the vector, no optimiser (so no gradient clipping)."""
    zero = VectorOptions(init_std=0.0)  # DiffMean writes the vector; it starts at zero
    vector = class_spec(zero, {"init_std": 0.0})
    model = model_section(backbone.name, None, vector, backbone.layer, evaluation=evaluation(dataset))
    model["class_path"] = "lightning_split.DiffMeanSteering"
    return run_config(
        f"{backbone.folder}/{dataset}/diffmean-vector",
        {"max_epochs": 1, "gradient_clip_val": None},
        model,
        {"dataset": dataset, "batch_size": 8},
    )


def demo_config() -> dict:
    """The README's main command: SPLIT vector on the embedded pairs, sized for a 2-core CPU (< 10 min)."""
    config = method_config("sentiment", "split", "vector")
    config["run_name"] = "demo"
    config["trainer"] = {"max_epochs": 1, "accumulate_grad_batches": 1, "num_sanity_val_steps": 0,
                         "limit_val_batches": 0}  # fmt: skip
    config["model"]["init_args"]["objective"]["init_args"]["bidirectional"] = False
    config["data"].update(train_size=96, test_size=40, batch_size=8)
    config["tradeoff"] = tradeoff_section(None, DEMO_SWEEP)
    config["test_after_fit"] = True
    return config


# ----------------------------------------------------------------------------------------- GPU configs
# Released settings on the paper's models (paper-notes §4), 4-bit NF4 with double quantization and a bf16
# compute dtype. Memory figures are the estimates worked out in docs/scaling.md from measurements on
# SmolLM2-135M / Gemma-3-270M.
GPU_RUNS: dict[str, dict] = {
    "gpu/qwen2.5-7b-instruct/psychopathy-split-lora-nf4.yaml": {
        "title": "SPLIT · LoRA · Psychopathy · Qwen2.5-7B-Instruct layer 14 · 4-bit · one 24 GB GPU",
        "memory": "about 13.4 GiB of GPU memory with a 20 % margin (estimate, docs/scaling.md): one 24 GB GPU",
        "backbone": "Qwen/Qwen2.5-7B-Instruct",
        "layer": 14,
        "dataset": "psychopathy",
        # released Qwen/Psychopathy LoRA row: add+sub, 4 x GA 2, lr 0.01, 1 epoch, λ_n 0.5, γ 6, θ 0.4
        "split": SPLIT(lambda_n=0.5, gamma=6.0, theta=0.4, bidirectional=True),
        "lr": 0.01,
        "epochs": 1,
        "batch_size": 4,
        "accumulate": 2,
        "devices": 1,
        "backbone_options": {},
    },
    "gpu/gemma-2-9b-it/power-seeking-split-lora-nf4-ddp2.yaml": {
        "title": "SPLIT · LoRA · PowerSeeking · Gemma-2-9B-it layer 20 · 4-bit · DDP on 2 GPUs",
        "memory": "about 17.9 GiB per GPU with a 20 % margin (estimate, docs/scaling.md): 2 GPUs of 24 GB",
        "backbone": "google/gemma-2-9b-it",
        "layer": 20,
        "dataset": "power-seeking",
        # released Gemma/PowerSeeking LoRA row: add only, 2 x GA 2, lr 0.01, 2 epochs, λ_n 0.5, γ 5, θ 0.4;
        # the global batch of 4 is 2 ranks x 2 pairs, so no accumulation
        "split": SPLIT(lambda_n=0.5, gamma=5.0, theta=0.4, bidirectional=False),
        "lr": 0.01,
        "epochs": 2,
        "batch_size": 2,
        "accumulate": 1,
        "devices": 2,
        # Gemma-2 soft-caps its attention logits, which only the eager kernel implements
        "backbone_options": {"attn_implementation": "eager"},
    },
}


def gpu_config(path: str) -> dict:
    """A GPU config of :data:`GPU_RUNS` (one process per GPU under DDP, each with a full 4-bit copy)."""
    spec = GPU_RUNS[path]
    trainer = {"accelerator": "gpu", "devices": spec["devices"], "precision": "bf16-true", "max_epochs": spec["epochs"],
               "accumulate_grad_batches": spec["accumulate"]}  # fmt: skip
    if spec["devices"] > 1:
        trainer["strategy"] = "ddp"
    split = spec["split"]
    backbone_options = {"quantization": "nf4-dq", "dtype": "bfloat16", **spec["backbone_options"]}
    model = model_section(
        spec["backbone"], class_spec(split, split.init_args()), form_spec("lora"), spec["layer"],
        training={"lr": spec["lr"]}, evaluation=evaluation(spec["dataset"]), backbone_options=backbone_options,
    )  # fmt: skip
    data = {"dataset": spec["dataset"], "batch_size": spec["batch_size"], "eval_batch_size": 8}
    return run_config(path.removesuffix(".yaml"), trainer, model, data)


GPU_HEADER = """\
# {title}
# Generated by scripts/make_configs.py (GPU_RUNS) with the authors' released settings for this model.
# Memory: {memory}.
# Run: lightning-split fit --config {path}   (resume after a crash: add --ckpt_path last)
# The backbone is quantized when it is loaded (model.init_args.backbone_options.quantization); do not add a
# bitsandbytes precision plugin. Each DDP process loads its own full copy on its own GPU.
# Reads configs/base.yaml first (`base:`), the settings every config shares, and changes them.
"""

HEADER = """\
# {title}, released settings scaled to {model} (written by scripts/make_configs.py)
# Run: lightning-split fit --config {path}
# Reads configs/base.yaml first (`base:`), the settings every config shares, and changes them.
"""

BASE_HEADER = """\
# The settings every shipped config shares; each one reads this file first (its `base:` line) and changes it.
# Generated by scripts/make_configs.py. A config's `run_name: X` puts the run in runs/X: the trainer's
# default_root_dir, the logger's save_dir and name, and the checkpoints in runs/X/checkpoints (so that
# `--ckpt_path last` finds last.ckpt after a restart).
# W&B logs offline (no account needed); `wandb sync runs/.../wandb/offline-run-*` uploads later, or set
# trainer.logger.init_args.offline=false to log online.
"""


def all_configs() -> dict[str, tuple[str, dict]]:
    """Every shipped config by relative path, with its title (the base first)."""
    out: dict[str, tuple[str, dict]] = {BASE: ("", base_config())}
    for backbone in BACKBONES:
        for dataset in backbone.datasets:
            for objective in OBJECTIVES:
                for form in backbone.forms:
                    path = f"{backbone.folder}/{dataset}/{objective}-{form}.yaml"
                    title = f"{objective.upper()} · {form} · {dataset}"
                    out[path] = (title, method_config(dataset, objective, form, backbone))
            path = f"{backbone.folder}/{dataset}/diffmean-vector.yaml"
            out[path] = (f"DiffMean · vector · {dataset}", diffmean_config(dataset, backbone))
    out["demo.yaml"] = ("Main command: SPLIT · vector · sentiment, CPU-sized", demo_config())
    for path, spec in GPU_RUNS.items():
        out[path] = (spec["title"], gpu_config(path))
    for path, (_, config) in out.items():
        if "base" in config:  # relative to the config's folder
            config["base"] = os.path.relpath(BASE, os.path.dirname(path) or ".")
    return out


def render(path: str, title: str, config: dict) -> str:
    """The text of one config file."""
    if path == BASE:
        header = BASE_HEADER
    elif path in GPU_RUNS:
        header = GPU_HEADER.format(title=title, path=f"configs/{path}", memory=GPU_RUNS[path]["memory"])
    else:
        model = next(b.title for b in BACKBONES if path.startswith(f"{b.folder}/")) if "/" in path else SMOLLM2.title
        header = HEADER.format(title=title, path=f"configs/{path}", model=model)
    return header + yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False, width=120)


class _ConfigDumper(yaml.SafeDumper):
    """Writes lists of numbers on one line (``multipliers: [-2.0, -1.75, ...]``); everything else as block YAML."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = bool(data) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_flow(dumper: yaml.SafeDumper, data: Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", dict(data), flow_style=True)


_ConfigDumper.add_representer(list, _represent_list)
_ConfigDumper.add_representer(Flow, _represent_flow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "configs"))
    args = parser.parse_args()
    for path, (title, config) in all_configs().items():
        target = Path(args.out) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(path, title, config))
    print(f"wrote {len(all_configs())} configs to {args.out}")


if __name__ == "__main__":
    main()
