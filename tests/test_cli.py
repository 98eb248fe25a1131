"""``lightning-split`` end to end on a tiny backbone: fit then predict, ``--ckpt_path`` checks, a folder per
stage, the outputs summary, command-line trade-off settings and progress lines when stdout is a pipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lightning_split.cli import main
from lightning_split.models import steering_module
from tests.cli_runs import run_cli, snapshot, tiny_config, write_config


def _common(backbone: Path, data: Path, root: Path) -> list[str]:
    return [
        "--model", "lightning_split.SteeringModule",
        "--model.init_args.backbone", str(backbone),
        "--model.init_args.objective", "lightning_split.objectives.SPLIT",
        "--model.init_args.form", "lightning_split.interventions.VectorOptions",
        "--model.init_args.layer", "2",
        "--model.init_args.training.lr", "0.05",
        "--data.dataset", str(data),
        "--data.batch_size", "4",
        "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(root),
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false",
        "--seed_everything", "3",
    ]  # fmt: skip


def test_fit_then_predict_writes_steered_generations(tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *_common(tiny_backbone_dir, sentiment_like_jsonl, tmp_path), "--trainer.max_epochs", "1",
          "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"])  # fmt: skip
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    state = torch.load(ckpts[-1], weights_only=True)
    assert set(state["state_dict"]) == {"control.0.vector"}, "the checkpoint must hold only the control"
    assert (tmp_path / "control" / "control.safetensors").is_file()

    out = tmp_path / "predictions.jsonl"
    main(["predict", *_common(tiny_backbone_dir, sentiment_like_jsonl, tmp_path), "--ckpt_path", str(ckpts[-1]),
          "--model.init_args.generation.multipliers", "[0.0, 4.0]", "--model.init_args.generation.max_new_tokens", "5",
          "--trainer.callbacks+=lightning_split.callbacks.JsonlPredictionWriter",
          "--trainer.callbacks.output_path", str(out)])  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    test_pairs = 5
    assert len(rows) == 2 * test_pairs
    assert sorted({r["multiplier"] for r in rows}) == [0.0, 4.0]
    assert all(r["prompt"].startswith("<|im_start|>") and isinstance(r["completion"], str) for r in rows)
    by_m = {m: [r["completion"] for r in rows if r["multiplier"] == m] for m in (0.0, 4.0)}
    assert by_m[0.0] != by_m[4.0], "steering at m=4 changed no generation"


# ----------------------------------------------------------------- --ckpt_path checks


VECTOR = {"class_path": "lightning_split.interventions.VectorOptions"}
OTHER_RUNS = [  # (config changes, model class, what the refusal must say)
    ({"model_form": {"class_path": "lightning_split.interventions.LoRAOptions"}}, "lightning_split.SteeringModule",
     "its form is 'VectorOptions(init_std=0.01)', this config's is 'LoRAOptions("),
    ({"model_layer": 1}, "lightning_split.SteeringModule", "layer is 2, this config's is 1"),
    ({"model_objective": {"class_path": "lightning_split.objectives.SFT"}}, "lightning_split.SteeringModule",
     "its objective is 'SPLIT("),
]  # fmt: skip


def test_ckpt_path_of_another_run_is_refused_before_anything_is_written(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch
):
    vector = tmp_path / "vector"
    write_config(vector, tiny_config(tiny_backbone_dir, sentiment_like_jsonl, model_form=VECTOR, trainer_max_epochs=1))
    monkeypatch.chdir(vector)
    main(["fit", "--config", "config.yaml"])
    ckpt = vector / "ckpt" / "last.ckpt"
    for i, (overrides, class_path, setting) in enumerate(OTHER_RUNS):
        other = tmp_path / f"other{i}"
        config = tiny_config(tiny_backbone_dir, sentiment_like_jsonl, **{"model_form": VECTOR, **overrides})
        config["model"]["class_path"] = class_path
        # `last` is looked up in the config's checkpoint folder: point it at the vector run's
        config["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(vector / "ckpt")
        write_config(other, config)
        monkeypatch.chdir(other)
        for subcommand, ckpt_arg in [("fit", str(ckpt)), ("fit", "last"), ("validate", str(ckpt)),
                                     ("test", str(ckpt)), ("predict", str(ckpt))]:  # fmt: skip
            with pytest.raises(SystemExit) as refused:
                main([subcommand, "--config", "config.yaml", "--ckpt_path", ckpt_arg])
            message = str(refused.value.code)
            assert message.startswith(f"lightning-split {subcommand}: error: --ckpt_path {ckpt} belongs to another run")
            assert setting in message and "use that run's config, or drop --ckpt_path" in message
        assert [p.name for p in other.iterdir()] == ["config.yaml"], "a refused run wrote something"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x04not a checkpoint at all", "cannot read this checkpoint (UnpicklingError): the file is damaged"),
        ({"state_dict": {}, "epoch": 0}, "was not written by lightning_split (no 'lightning_split' control metadata)"),
        (None, "no such file"),
    ],
    ids=["damaged", "foreign", "missing"],
)
def test_unusable_ckpt_file_is_refused_with_its_name(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch, content, message
):
    write_config(tmp_path, tiny_config(tiny_backbone_dir, sentiment_like_jsonl))
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "given.ckpt"
    if isinstance(content, bytes):
        ckpt.write_bytes(content)
    elif content is not None:
        torch.save(content, ckpt)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as refused:
        main(["test", "--config", "config.yaml", "--ckpt_path", str(ckpt)])
    assert str(refused.value.code).startswith(f"lightning-split test: error: --ckpt_path {ckpt}")
    assert message in str(refused.value.code)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_tradeoff_callback_in_trainer_callbacks_is_refused(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch
):
    config = tiny_config(tiny_backbone_dir, sentiment_like_jsonl)
    config["trainer"]["callbacks"].append({"class_path": "lightning_split.callbacks.TradeoffCurveCallback"})
    write_config(tmp_path, config)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="give its settings under `tradeoff:`"):
        main(["fit", "--config", "config.yaml"])


# ----------------------------------------------------------------- a folder per stage, outputs, progress


def test_predict_keeps_the_fits_records_and_writes_its_own_folder(tiny_backbone_dir, sentiment_like_jsonl, tmp_path):
    config = tiny_config(tiny_backbone_dir, sentiment_like_jsonl, model_form=VECTOR, trainer_max_epochs=1)
    # W&B (offline) in the run folder: the fit's config.yaml is saved there, over the input config
    config["trainer"]["logger"] = {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"save_dir": ".", "name": "tiny", "offline": True},
    }
    config["tradeoff"] = {"multipliers": [-1.0, 0.0, 1.0], "every_n_val_epochs": 0}
    write_config(tmp_path, config)
    # a bare --test_after_fit, and a trade-off setting from the command line
    fit = run_cli(tmp_path, "--test_after_fit", "--tradeoff.max_pairs", "2")
    wandb_runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1
    assert f"saved control: {Path('control') / 'control.safetensors'}" in fit.stdout
    assert f"W&B run: {Path('wandb') / wandb_runs[0].name}" in fit.stdout
    assert f"report_md: {Path('tradeoff') / 'test' / 'report.md'}" in fit.stdout
    curve = json.loads((tmp_path / "tradeoff" / "test" / "curve.json").read_text())
    assert curve["n_pairs"] == [2, 2, 2], "--tradeoff.max_pairs 2 was not applied"
    fit_records = snapshot(tmp_path)
    assert "config.yaml" in fit_records and "control/control.safetensors" in fit_records

    predict = run_cli(
        tmp_path, "--ckpt_path", "last", "--model.init_args.generation.max_new_tokens", "3",
        "--trainer.callbacks+=lightning_split.callbacks.JsonlPredictionWriter",
        "--trainer.enable_progress_bar", "true", "--progress_interval", "0", subcommand="predict",
    )  # fmt: skip
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in fit_records} == fit_records, "predict changed the fit's records"
    new = sorted(set(after) - set(fit_records))
    (stage,) = {Path(k).parts[0] for k in new}
    assert stage.startswith("predict-")
    assert {f"{stage}/config.yaml", f"{stage}/predictions.jsonl"} <= set(new)
    assert any(k.startswith(f"{stage}/wandb/offline-run-") for k in new), new
    assert f"predictions: {Path(stage) / 'predictions.jsonl'}" in predict.stdout
    assert f"W&B run: {Path(stage) / 'wandb' / 'offline-run-'}" in predict.stdout
    # stdout is a pipe: progress comes as lines with counts (5 test pairs, eval batch 1)
    lines = [line for line in predict.stdout.splitlines() if line.startswith("[predict] batch")]
    assert [line.split(" · ")[0] for line in lines] == [f"[predict] batch {n}/5 ({20 * n}%)" for n in range(6)]
    assert all(" elapsed · " in line and " left" in line for line in lines)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--model.init_args.training.lr", "-0.1"], "model option lr (model.init_args.training.lr) has the value -0.1"),
        (["--model.init_args.layer", "9"], "model option layer (model.init_args.layer) is 9"),
        (["--model.init_args.form.init_args.rank", "0"], "form option rank (model.init_args.form.init_args.rank)"),
    ],
    ids=["lr", "layer", "form-rank"],
)
def test_bad_option_prints_its_message_alone_and_exits_2(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch, capsys, override, message
):
    write_config(tmp_path, tiny_config(tiny_backbone_dir, sentiment_like_jsonl))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as refused:
        main(["fit", "--config", "config.yaml", *override])
    err = capsys.readouterr().err
    assert refused.value.code == 2
    assert f"lightning-split: error: {message}" in err
    assert "Traceback" not in err and "Namespace(" not in err, "the message must come alone"
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a refused run wrote something"


def test_top_level_help_names_objectives_forms_datasets_and_configs(capsys, monkeypatch):
    from lightning_split.cli_help import CONFIGS_DIR
    from lightning_split.data.registry import DATASETS
    from lightning_split.interventions import FORM_REGISTRY
    from lightning_split.objectives import OBJECTIVE_REGISTRY

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0
    for name, cls in OBJECTIVE_REGISTRY.items():
        assert f"{cls.__name__} ({name})" in text
    for name, cls in FORM_REGISTRY.items():
        assert f"{cls.options.__name__} ({name})" in text
    assert all(f"\n  {name} " in text for name in DATASETS)
    shipped = len(list(CONFIGS_DIR.rglob("*.yaml"))) - 1  # the base is not a run
    assert f"Shipped configs ({shipped}," in text and "configs/smollm2/psychopathy/" in text


def test_bad_choice_is_refused_while_parsing_with_the_option_named(
    tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch, capsys
):
    """A value outside a closed set (a ``Literal``) fails in the parser: no module is built, nothing is loaded."""
    write_config(tmp_path, tiny_config(tiny_backbone_dir, sentiment_like_jsonl))
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the module was built although an option was bad")

    monkeypatch.setattr(steering_module, "check_steering_options", refuse)  # the first step of building it
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as refused:
        main(["fit", "--config", "config.yaml", "--model.init_args.evaluation.nll_reduction", "avg"])
    err = capsys.readouterr().err
    assert refused.value.code == 2
    assert 'Parser key "evaluation.nll_reduction"' in err and "Got value: avg" in err and "'sum', 'mean'" in err
    assert len(err.splitlines()) < 20, "the usage line should be one line, not every option"
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a refused run wrote something"


# ----------------------------------------------------------------- help


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main(["fit", *args])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_fit_help_is_short_and_points_at_the_full_list(capsys):
    """``fit --help`` fits on a screen (it was 828 lines), names every section and the option groups, and says how
    to get every option; ``--help full`` still lists every option with its help."""
    short = _help(capsys, "--help")
    assert len(short.splitlines()) <= 45, short
    assert short.startswith("usage: lightning-split fit [-h [full]] [-c CONFIG]") and short.count("\nusage:") == 0
    assert "lightning-split fit --help full" in short and "--print_config" in short
    for names in ("backbone objective form layer layers positions", "training.{multipliers, lr, weight_decay}",
                  "evaluation.{multiplier, nll_reduction}", "--run_name", "--ckpt_path", "--test_after_fit",
                  "data (--data.<option>):", "max_epochs", "tradeoff (--tradeoff.<option>", "max_pairs"):  # fmt: skip
        assert names in short, names
    full = _help(capsys, "--help", "full")
    assert len(full.splitlines()) > 400
    for option in ("--trainer.gradient_clip_algorithm", "--data.group_field", "--tradeoff.use_lower_cache",
                   "--lr_scheduler", "--ckpt_path CKPT_PATH"):  # fmt: skip
        assert option in full, option
    with pytest.raises(SystemExit) as bad:
        main(["fit", "--help", "everything"])
    assert bad.value.code == 2 and "takes nothing (a short list) or 'full'" in capsys.readouterr().err


# ----------------------------------------------------------------- base configs and run names


def test_base_and_run_name_compose_one_config(tiny_backbone_dir, sentiment_like_jsonl, tmp_path, monkeypatch, capsys):
    """A config names the config it extends (``base``, relative to itself) and its run once; ``--print_config``
    shows the merged settings and the run folders; a folder given explicitly is kept."""
    base = tiny_config(tiny_backbone_dir, sentiment_like_jsonl)
    base["trainer"].update(max_epochs=3, gradient_clip_val=0.5)
    base["trainer"]["callbacks"][0]["init_args"].pop("dirpath")
    base["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "."}}
    write_config(tmp_path, base)
    method = {"base": "../config.yaml", "run_name": "exp/a", "trainer": {"max_epochs": 1}}
    write_config(tmp_path / "methods", method)
    monkeypatch.chdir(tmp_path)
    text = _help(capsys, "--config", "methods/config.yaml", "--print_config")
    printed = yaml.safe_load(text)
    trainer = printed["trainer"]
    assert trainer["max_epochs"] == 1 and trainer["gradient_clip_val"] == 0.5, "the base was not merged"
    assert trainer["default_root_dir"] == str(Path("runs/exp/a"))
    assert trainer["callbacks"][0]["init_args"]["dirpath"] == str(Path("runs/exp/a/checkpoints"))
    assert trainer["logger"]["init_args"]["name"] == "exp-a"
    assert trainer["logger"]["init_args"]["save_dir"] == ".", "a save_dir the config gives is kept"
    assert printed["model"]["init_args"]["training"]["lr"] == 0.05
    kept = yaml.safe_load(_help(capsys, "--config", "methods/config.yaml", "--trainer.default_root_dir", "mine",
                                "--print_config"))  # fmt: skip
    assert kept["trainer"]["default_root_dir"] == "mine"

    write_config(tmp_path / "broken", {**method, "base": "missing.yaml"})
    with pytest.raises(SystemExit) as refused:
        main(["fit", "--config", "broken/config.yaml"])
    assert refused.value.code == 2
    assert "broken/config.yaml: its base 'missing.yaml' is not a file" in capsys.readouterr().err


def test_ckpt_settings_are_compared_option_by_option_and_old_layouts_refused(tiny_backbone_dir, tmp_path):
    """A checkpoint's option replacing the config's is noted by its group and name; a checkpoint written before the
    options were grouped (flat ``lr``, ``eval_multiplier``, …) is refused with what to do, not a parser dump."""
    from lightning_split.cli_checkpoint import CheckpointError, check_checkpoint
    from lightning_split.models import SteeringModule
    from lightning_split.models.steering_module import CHECKPOINT_KEY

    hparams = dict(SteeringModule(backbone=str(tiny_backbone_dir), layer=2, training={"lr": 0.05}).hparams)
    init = {k: v for k, v in hparams.items() if not k.startswith("_")}
    config = {"class_path": "lightning_split.SteeringModule", "init_args": {**init, "training": {**init["training"]}}}
    config["init_args"]["training"]["lr"] = 0.1
    path = tmp_path / "grouped.ckpt"
    torch.save({"state_dict": {}, CHECKPOINT_KEY: {}, "hyper_parameters": hparams}, path)
    assert check_checkpoint(path, config) == [f"--ckpt_path {path}: the checkpoint's training.lr=0.05 replaces the "
                                              "config's 0.1"]  # fmt: skip

    flat = {k: v for k, v in hparams.items() if k not in ("training", "evaluation", "backbone_options")}
    torch.save({"state_dict": {}, CHECKPOINT_KEY: {}, "hyper_parameters": {**flat, "lr": 0.05, "dtype": "float32"}},
               path)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"does not take \(dtype, lr; it was written before .* cannot be resumed"):
        check_checkpoint(path, config)
