"""Every shipped config is what scripts/make_configs.py writes, parses, and builds its model and data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lightning_split.cli import SteeringCLI
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.models import SteeringModule

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
    assert len(shipped) == 3 * (4 * 5 + 1) + 1


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_parses_and_builds(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cli = SteeringCLI(
        SteeringModule,
        PolarityDataModule,
        subclass_mode_model=True,
        run=False,
        args=["--config", str(config)],
        save_config_kwargs={"overwrite": True},
    )
    assert isinstance(cli.model, SteeringModule)
    assert cli.model.hparams.backbone == "smollm2-135m-instruct"
    if config.parent.name != "configs":
        assert config.stem.endswith(cli.model.form), f"{config.name} builds form {cli.model.form}"
    assert cli.trainer.max_epochs >= 1
    assert cli.model.backbone is None, "building a config must not load the backbone"
