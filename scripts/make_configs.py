"""Writes the shipped YAML configs (``configs/``) from one table of settings.

Every form × objective on SmolLM2-135M-Instruct for the embedded sentiment pairs, Psychopathy and
PowerSeeking, starting from the authors' released settings (``../shared/docs/paper-notes.md`` §4, the
Gemma-2-9B rows) scaled to the model: the middle block (15 of 30) instead of 20 of 42, and the multiplier
grid {0.2, …, 2.0} for every form (for the vector form only ``m·v`` matters, so this is the released
{2, …, 20} grid with a ten times longer vector, and ``m = 1`` sits inside it).

Run ``python scripts/make_configs.py`` after changing the table; ``tests/test_configs.py`` checks that the
committed files are what this script writes and that every one of them parses and builds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from lightning_split.interventions import FORMS, FormOptions, VectorOptions, form_class
from lightning_split.objectives import OBJECTIVE_REGISTRY, OBJECTIVES, SPLIT, Objective

MODEL = "smollm2-135m-instruct"
LAYER = 15
DATASETS = ("sentiment", "psychopathy", "power-seeking")

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
    "sentiment": {
        "vector": (0.6, 4.0, 0.5, False),
        "lora": (0.5, 5.0, 0.45, False),
        "local_weight": (0.3, 3.5, 0.6, False),
    },
}
EPOCHS = {"sentiment": 2, "psychopathy": 2, "power-seeking": 2}
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


def trainer_section(run: str, accumulate: int, epochs: int) -> dict:
    """The trainer block: offline W&B, last-checkpoint saving."""
    return {
        "accelerator": "auto",
        "devices": 1,
        "max_epochs": epochs,
        "gradient_clip_val": 1.0,
        "accumulate_grad_batches": accumulate,
        "log_every_n_steps": 5,
        "default_root_dir": f"runs/{run}",
        "logger": {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {
                "project": "lightning_split",
                "name": run.replace("/", "-"),
                "save_dir": f"runs/{run}",
                "offline": True,
            },
        },
        "callbacks": [
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                # a fixed folder, so that `--ckpt_path last` finds last.ckpt after a restart (the logger's
                # version changes every run)
                "init_args": {"dirpath": f"runs/{run}/checkpoints", "save_last": True, "every_n_train_steps": 20},
            },
        ],
    }


def tradeoff_section(sweep_pairs: int | None, multipliers: list[float] = SWEEP) -> dict:
    """The trade-off curve callback's settings (the CLI's ``tradeoff`` group: ``--tradeoff.max_pairs 20``)."""
    return {"multipliers": multipliers, "every_n_val_epochs": 1, "max_pairs": sweep_pairs}


def class_spec(value: FormOptions | Objective, init_args: dict) -> dict:
    """``{class_path, init_args}`` of a form's options or an objective (no ``init_args`` when empty)."""
    cls = type(value)
    spec: dict = {"class_path": f"{cls.__module__}.{cls.__qualname__}"}
    return {**spec, "init_args": init_args} if init_args else spec


def form_spec(form: str) -> dict:
    """The ``form`` argument of ``form`` with its settings' options (checked against the form's options)."""
    options = form_class(form).options(**FORM_SETTINGS.get(form, DEFAULT_FORM_SETTINGS)["options"])
    return class_spec(options, options.values())


def objective_spec(dataset: str, objective: str, form: str) -> dict:
    """The ``objective`` argument: the released SPLIT coefficients, the other objectives' defaults."""
    arguments: dict = {}
    if objective == "split":
        lambda_n, gamma, theta, bidirectional = SPLIT_SETTINGS[dataset].get(form, SPLIT_SETTINGS[dataset]["lora"])
        arguments = {"lambda_n": lambda_n, "gamma": gamma, "theta": theta, "bidirectional": bidirectional}
    instance = OBJECTIVE_REGISTRY[objective](**arguments)
    return class_spec(instance, instance.init_args())


def model_section(backbone: str, objective: dict, form: str, layer: int, lr: float, **extra: object) -> dict:
    """The model block: one :class:`~lightning_split.SteeringModule` with its objective and form."""
    init = {"backbone": backbone, "objective": objective, "form": form_spec(form), "layer": layer, "lr": lr}
    return {"class_path": "lightning_split.SteeringModule", "init_args": {**init, **extra}}


def reduction(dataset: str) -> dict:
    """The dataset's NLL reduction setting (empty: the default)."""
    return {"nll_reduction": NLL_REDUCTION[dataset]} if dataset in NLL_REDUCTION else {}


def method_config(dataset: str, objective: str, form: str) -> dict:
    """One shipped config."""
    fs = FORM_SETTINGS.get(form, DEFAULT_FORM_SETTINGS)
    run = f"smollm2/{dataset}/{objective}-{form}"
    return {
        "seed_everything": 42,
        "trainer": trainer_section(run, fs["accumulate"], EPOCHS[dataset]),
        "model": model_section(
            MODEL, objective_spec(dataset, objective, form), form, LAYER, fs["lr"], **reduction(dataset)
        ),
        "data": {"dataset": dataset, "batch_size": fs["batch_size"]},
        "tradeoff": tradeoff_section(SWEEP_PAIRS),
    }


def diffmean_config(dataset: str) -> dict:
    """DiffMean: one pass over the training pairs fits the vector, no optimiser."""
    run = f"smollm2/{dataset}/diffmean-vector"
    trainer = trainer_section(run, 1, 1)
    trainer.pop("gradient_clip_val")
    zero = VectorOptions(init_std=0.0)  # DiffMean writes the vector; it starts at zero
    return {
        "seed_everything": 42,
        "trainer": trainer,
        "model": {
            "class_path": "lightning_split.DiffMeanSteering",
            "init_args": {
                "backbone": MODEL,
                "form": class_spec(zero, zero.values()),
                "layer": LAYER,
                **reduction(dataset),
            },
        },
        "data": {"dataset": dataset, "batch_size": 8},
        "tradeoff": tradeoff_section(SWEEP_PAIRS),
    }


def demo_config() -> dict:
    """The README's main command: SPLIT vector on the embedded pairs, sized for a 2-core CPU (< 10 min)."""
    config = method_config("sentiment", "split", "vector")
    run = "demo"
    config["trainer"] = trainer_section(run, 1, 1)
    config["trainer"]["num_sanity_val_steps"] = 0
    config["trainer"]["limit_val_batches"] = 0
    config["tradeoff"] = tradeoff_section(None, DEMO_SWEEP)
    config["model"]["init_args"]["objective"]["init_args"]["bidirectional"] = False
    config["data"].update(train_size=96, test_size=40, batch_size=8)
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
        "model_extra": {},
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
        "model_extra": {"attn_implementation": "eager"},
    },
}


def gpu_config(path: str) -> dict:
    """A GPU config of :data:`GPU_RUNS` (one process per GPU under DDP, each with a full 4-bit copy)."""
    spec = GPU_RUNS[path]
    run = path.removesuffix(".yaml")
    trainer = trainer_section(run, spec["accumulate"], spec["epochs"])
    trainer.update(accelerator="gpu", devices=spec["devices"], precision="bf16-true")
    if spec["devices"] > 1:
        trainer["strategy"] = "ddp"
    split = spec["split"]
    model = model_section(
        spec["backbone"], class_spec(split, split.init_args()), "lora", spec["layer"], spec["lr"],
        quantization="nf4-dq", dtype="bfloat16", **spec["model_extra"], **reduction(spec["dataset"]),
    )  # fmt: skip
    return {
        "seed_everything": 42,
        "trainer": trainer,
        "model": model,
        "data": {"dataset": spec["dataset"], "batch_size": spec["batch_size"], "eval_batch_size": 8},
        "tradeoff": tradeoff_section(SWEEP_PAIRS),
    }


GPU_HEADER = """\
# {title}
# Generated by scripts/make_configs.py (GPU_RUNS) with the authors' released settings for this model.
# Memory: {memory}.
# Run: lightning-split fit --config {path}   (resume after a crash: add --ckpt_path last)
# The backbone is quantized when it is loaded (model.quantization); do not add a bitsandbytes precision
# plugin. Each DDP process loads its own full copy on its own GPU.
"""

HEADER = """\
# {title}
# Generated by scripts/make_configs.py from the released settings scaled to SmolLM2-135M-Instruct
# (layer 15 of 30, multiplier grid 0.2..2.0); edit the table there and re-run it.
# Run: lightning-split fit --config {path}
# W&B logs offline (no account needed); `wandb sync runs/.../wandb/offline-run-*` uploads later, or set
# trainer.logger.init_args.offline=false to log online.
"""


def all_configs() -> dict[str, tuple[str, dict]]:
    """Every shipped config by relative path, with its title."""
    out: dict[str, tuple[str, dict]] = {}
    for dataset in DATASETS:
        for objective in OBJECTIVES:
            for form in FORMS:
                path = f"smollm2/{dataset}/{objective}-{form}.yaml"
                out[path] = (f"{objective.upper()} · {form} · {dataset}", method_config(dataset, objective, form))
        out[f"smollm2/{dataset}/diffmean-vector.yaml"] = (f"DiffMean · vector · {dataset}", diffmean_config(dataset))
    out["demo.yaml"] = ("Main command: SPLIT · vector · embedded sentiment pairs (CPU-sized)", demo_config())
    for path, spec in GPU_RUNS.items():
        out[path] = (spec["title"], gpu_config(path))
    return out


def render(path: str, title: str, config: dict) -> str:
    """The text of one config file."""
    if path in GPU_RUNS:
        header = GPU_HEADER.format(title=title, path=f"configs/{path}", memory=GPU_RUNS[path]["memory"])
    else:
        header = HEADER.format(title=title, path=f"configs/{path}")
    return header + yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False, width=120)


class _ConfigDumper(yaml.SafeDumper):
    """Writes lists of numbers on one line (``multipliers: [-2.0, -1.75, ...]``); everything else as block YAML."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = bool(data) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ConfigDumper.add_representer(list, _represent_list)


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
