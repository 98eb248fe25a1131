"""Every shipped config is what scripts/make_configs.py writes, parses with its base, and builds its model, data and
run folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.loggers import WandbLogger

from lightning_split.cli import SteeringCLI
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.data.registry import DATA_DIR_ENV
from lightning_split.interventions import FORMS
from lightning_split.models import SteeringModule, options
from lightning_split.objectives import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "base.yaml"
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p != BASE)


def _generator():
    spec = importlib.util.spec_from_file_location("make_configs", ROOT / "scripts" / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_configs_match_the_generator() -> None:
    gen = _generator()
    expected = {path: gen.render(path, title, cfg) for path, (title, cfg) in gen.all_configs().items()}
    shipped = {str(p.relative_to(ROOT / "configs")): p.read_text() for p in [BASE, *CONFIGS]}
    assert shipped == expected, "configs/ is out of date: run python scripts/make_configs.py"
    # every objective x form and DiffMean per dataset (87 files with 4 datasets, 4 objectives and 5 forms), the demo;
    # Gemma-3-270M's vector and LoRA on Psychopathy and PowerSeeking
    smollm2 = 4 * (len(OBJECTIVES) * len(FORMS) + 1)
    gemma = 2 * (len(OBJECTIVES) * 2 + 1)
    assert len(CONFIGS) == smollm2 + 1 + len(gen.GPU_RUNS) + gemma
    gpu = {path: cfg for path, (_, cfg) in gen.all_configs().items() if path.startswith("gpu/")}
    assert any(cfg["trainer"].get("devices", 1) == 1 for cfg in gpu.values()), "no single-GPU config"
    assert any(cfg["trainer"].get("strategy") == "ddp" and cfg["trainer"]["devices"] > 1 for cfg in gpu.values())


def test_every_config_extends_the_base_and_names_its_run_once() -> None:
    """Each file holds what differs from the base: its run name appears once, no folder is written out."""
    for config in CONFIGS:
        text = config.read_text()
        data = yaml.safe_load(text)
        assert (config.parent / data["base"]).resolve() == BASE, config
        run = data["run_name"]
        assert text.count(run) == 1 + text.count(f"configs/{run}.yaml"), f"{config}: the run name appears again"
        assert "runs/" not in text.replace("runs/...", "") and "callbacks" not in text, config


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_parses_and_builds(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    own = yaml.safe_load(config.read_text())
    gpu = config.relative_to(ROOT / "configs").parts[0] == "gpu"
    if own["data"].get("dataset", "sentiment") != "sentiment":
        # the data module reads its data when it is built: named datasets need the data directory
        monkeypatch.setenv(DATA_DIR_ENV, str(request.getfixturevalue("shared_data_dir")))
    if gpu:  # the module checks its layer against the backbone's config; no hub here, so give the count
        monkeypatch.setattr(options, "backbone_num_layers", lambda backbone, cache_dir: 28)
    # GPU configs are built here with a CPU trainer (their own trainer settings are checked below)
    overrides = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"] if gpu else []
    cli = SteeringCLI(
        SteeringModule,
        PolarityDataModule,
        subclass_mode_model=True,
        run=False,
        args=["--config", str(config), *overrides],
        save_config_kwargs={"overwrite": True},
    )
    assert isinstance(cli.model, SteeringModule)
    if gpu:
        assert own["trainer"]["accelerator"] == "gpu" and own["trainer"]["precision"] == "bf16-true"
        assert cli.model.backbone_options.quantization == "nf4-dq" and cli.model.form == "lora"
        assert "Memory: about" in config.read_text()
    else:  # configs/<model>/… names its backbone by the folder
        model = config.relative_to(ROOT / "configs").parts[0]
        expected = {"gemma3-270m": "gemma3-270m"}.get(model, "smollm2-135m-instruct")
        assert cli.model.hparams.backbone == expected
    if config.parent.name != "configs" and not gpu:
        assert config.stem.endswith(cli.model.form), f"{config.name} builds form {cli.model.form}"
        assert config.stem.startswith(cli.model.objective_name), f"{config.name} builds {cli.model.objective_name}"
    # the base's settings, changed where the file changes them
    trainer = cli.trainer
    assert trainer.max_epochs == own["trainer"].get("max_epochs", 2)
    assert trainer.accumulate_grad_batches == own["trainer"].get("accumulate_grad_batches", 1)
    assert trainer.gradient_clip_val == (None if "diffmean" in config.stem else 1.0)
    # the run's folders, from its name
    run = Path("runs") / own["run_name"]
    assert trainer.default_root_dir == str(run)
    (logger,) = trainer.loggers
    assert isinstance(logger, WandbLogger) and logger.save_dir == str(run)
    assert cli.config.trainer.logger.init_args.name == own["run_name"].replace("/", "-")  # the W&B run's name
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / run / "checkpoints")
    # the trade-off sweep: at least the 18 distinct multipliers the report's 9-parameter fit needs; Yes/No data
    # scored with summed NLL (utility is then a probability's log-odds), every Psychopathy test pair swept
    tradeoff = cli.config.tradeoff
    assert len(set(tradeoff.multipliers)) >= 18
    if own["data"]["dataset"] == "psychopathy":
        assert cli.model.evaluation_options.nll_reduction == "sum"
        assert tradeoff.max_pairs >= 100
    assert cli.model.backbone is None, "building a config must not load the backbone"
