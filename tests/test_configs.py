"""Every shipped config is what scripts/make_configs.py writes, parses, and builds its model and data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from lightning_split.cli import SteeringCLI
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.data.registry import DATA_DIR_ENV
from lightning_split.interventions import FORMS
from lightning_split.models import SteeringModule, options
from lightning_split.objectives import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def _generator():
    spec = importlib.util.spec_from_file_location("make_configs", ROOT / "scripts" / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_configs_match_the_generator() -> None:
    gen = _generator()
    expected = {path: gen.render(path, title, cfg) for path, (title, cfg) in gen.all_configs().items()}
    shipped = {str(p.relative_to(ROOT / "configs")): p.read_text() for p in CONFIGS}
    assert shipped == expected, "configs/ is out of date: run python scripts/make_configs.py"
    # every objective x form and DiffMean per dataset (66 files with 4 objectives and 5 forms)
    assert len(shipped) == 3 * (len(OBJECTIVES) * len(FORMS) + 1) + 1 + len(gen.GPU_RUNS)
    gpu = {path: cfg for path, (_, cfg) in gen.all_configs().items() if path.startswith("gpu/")}
    assert any(cfg["trainer"]["devices"] == 1 for cfg in gpu.values()), "no single-GPU config"
    assert any(cfg["trainer"].get("strategy") == "ddp" and cfg["trainer"]["devices"] > 1 for cfg in gpu.values())


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_parses_and_builds(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    gpu = config.relative_to(ROOT / "configs").parts[0] == "gpu"
    if yaml.safe_load(config.read_text())["data"].get("dataset", "sentiment") != "sentiment":
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
        trainer = yaml.safe_load(config.read_text())["trainer"]
        assert trainer["accelerator"] == "gpu" and trainer["precision"] == "bf16-true"
        assert cli.model.hparams.quantization == "nf4-dq" and cli.model.form == "lora"
        assert "Memory: about" in config.read_text()
    else:
        assert cli.model.hparams.backbone == "smollm2-135m-instruct"
    if config.parent.name != "configs" and not gpu:
        assert config.stem.endswith(cli.model.form), f"{config.name} builds form {cli.model.form}"
        assert config.stem.startswith(cli.model.objective_name), f"{config.name} builds {cli.model.objective_name}"
    assert cli.trainer.max_epochs >= 1
    assert cli.model.backbone is None, "building a config must not load the backbone"


def test_shipped_sweeps_can_be_fitted_and_cover_the_psychopathy_split() -> None:
    """Every shipped grid has the 18 distinct multipliers the report's 9-parameter fit needs; Yes/No configs score
    with summed NLL (utility is then a probability's log-odds) and sweep every Psychopathy test pair."""
    for path, (_, cfg) in _generator().all_configs().items():
        args = cfg["tradeoff"]  # the CLI's `tradeoff` group (the callback's settings)
        assert len(set(args["multipliers"])) >= 18, path
        if cfg["data"]["dataset"] == "psychopathy":
            assert cfg["model"]["init_args"]["nll_reduction"] == "sum", path
            assert args["max_pairs"] >= 100, path
