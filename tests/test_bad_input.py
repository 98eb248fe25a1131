"""Bad model options and unreachable backbones are refused when the module is built, before any model loads.

Every backbone here is a folder holding only a ``config.json`` (4 blocks): nothing could be loaded from it,
so each error below is raised from the options and the config alone.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from lightning_split.backbone import BackboneLoadError, backbone_num_layers
from lightning_split.interventions import LoRAOptions, ReFTOptions, VectorOptions
from lightning_split.models import SteeringModule
from lightning_split.models.options import BackboneOptions, OptionError
from tests.tiny_models import TINY_LAYERS, make_tiny_model


@pytest.fixture(scope="module")
def config_only_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the config of a 4-block Llama and no weights."""
    path = tmp_path_factory.mktemp("config-only")
    make_tiny_model("llama").config.save_pretrained(path)
    return path


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"training": {"lr": -0.1}},
     r"option lr \(model\.init_args\.training\.lr\) has the value -0\.1; it must be a number > 0"),
    ({"training": {"lr": 0.0}}, r"option lr .*must be a number > 0"),
    ({"training": {"weight_decay": -1.0}}, r"option weight_decay \(model\.init_args\.training\.weight_decay\).*>= 0"),
    ({"training": {"multipliers": [1.0, -2.0]}}, r"option multipliers .*-2\.0.*sign comes from"),
    ({"training": {"multipliers": []}}, r"option multipliers .*empty"),
    ({"training": {"learning_rate": 0.1}}, r"model option training .*no option 'learning_rate'; TrainingOptions takes"),
    ({"evaluation": {"multiplier": math.inf}},
     r"option multiplier \(model\.init_args\.evaluation\.multiplier\).*finite"),
    ({"evaluation": {"nll_reduction": "median"}}, r"option nll_reduction \(model\.init_args\.evaluation\..*'sum'"),
    ({"generation": {"max_new_tokens": 0}}, r"option max_new_tokens .*integer >= 1"),
    ({"generation": {"temperature": 0.0}}, r"option temperature .*> 0"),
    ({"generation": {"multipliers": [0.0, math.inf]}}, r"option multipliers \(model\.init_args\.generation\..*inf"),
    ({"generation": "greedy"}, r"option generation .*'greedy'; give a GenerationOptions or a mapping"),
    ({"backbone_options": {"dtype": "fp33"}},
     r"option dtype \(model\.init_args\.backbone_options\.dtype\).*'fp33'.*'bfloat16'"),
    ({"backbone_options": {"quantization": "nf5"}}, r"option quantization .*'nf5'.*'nf4'"),
    ({"backbone_options": {"attn_implementation": "flash_attention_2"}}, r"option attn_implementation .*'sdpa'"),
    ({"form": "vector"}, r"option form .*'vector'; give a form's options"),
    ({"objective": "split"}, r"option objective .*'split'; give an Objective"),
    ({"positions": "everything"}, r"option positions .*'completion'"),
    ({"layer": TINY_LAYERS}, rf"option layer .*is {TINY_LAYERS}: .* has {TINY_LAYERS} blocks.*0\.\.{TINY_LAYERS - 1}"),
    ({"layer": -1}, r"option layer .*is -1"),
    ({"layers": [1, 9]}, r"option layers .*is 9"),
    ({"layers": [2, 2]}, r"option layers .*each block may appear once"),
]  # fmt: skip
"""Bad options; each group is given as a mapping, as a config or a checkpoint gives it."""


@pytest.mark.parametrize(
    ("options", "message"),
    BAD_OPTIONS,
    ids=[f"{next(iter(o))}={next(iter(o.values()))!r}" for o, _ in BAD_OPTIONS],
)
def test_bad_option_is_named_when_the_module_is_built(
    config_only_backbone: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(OptionError, match=message):
        SteeringModule(backbone=str(config_only_backbone), **options)


BAD_FORM_OPTIONS: list[tuple[type, dict[str, Any], str]] = [
    (VectorOptions, {"init_std": math.nan}, r"form option init_std .*form.init_args.init_std.* nan; it must be >= 0"),
    (VectorOptions, {"init_std": -0.1}, r"init_std .*-0\.1; it must be >= 0"),
    (LoRAOptions, {"rank": 0}, r"form option rank .*LoRAOptions is 0; it must be >= 1"),
    (LoRAOptions, {"alpha": 0.0}, r"form option alpha .*must be > 0"),
    (LoRAOptions, {"dropout": 1.0}, r"form option dropout .*must be >= 0\.0, < 1\.0"),
    (ReFTOptions, {"rank": -1}, r"form option rank .*ReFTOptions is -1"),
]


@pytest.mark.parametrize(("options_class", "options", "message"), BAD_FORM_OPTIONS)
def test_bad_form_option_is_named_when_the_options_are_built(
    options_class: type, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        options_class(**options)


def test_good_options_pass(config_only_backbone: Path) -> None:
    module = SteeringModule(
        backbone=str(config_only_backbone), layer=TINY_LAYERS - 1, backbone_options={"quantization": "nf4-dq"}
    )
    assert module.backbone is None, "building the module must not load the backbone"
    SteeringModule(
        backbone=str(config_only_backbone),
        layers=[0, 3],
        backbone_options=BackboneOptions(attn_implementation="eager", dtype="auto"),
    )


CUSTOM_BLOCKS = BackboneOptions(blocks_path="model.layers")


def test_custom_layout_skips_the_config_count(config_only_backbone: Path) -> None:
    """With ``blocks_path`` the blocks may not be the config's layers: only the sign is checked up front."""
    SteeringModule(backbone=str(config_only_backbone), layer=TINY_LAYERS + 5, backbone_options=CUSTOM_BLOCKS)
    with pytest.raises(OptionError, match="layer .*-2"):
        SteeringModule(backbone=str(config_only_backbone), layer=-2, backbone_options=CUSTOM_BLOCKS)


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SteeringModule(backbone=str(tmp_path))


def test_uncached_hub_id_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(
        BackboneLoadError, match=r"'nobody/nothing' is not in the local Hugging Face cache.*HF_HUB_OFFLINE"
    ):
        SteeringModule(backbone="nobody/nothing")
    assert time.perf_counter() - start < 5


def test_unreachable_hub_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online mode with no hub (a closed local port here): one refused connection, no retries."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(BackboneLoadError, match=r"hub cannot be reached \(http://127\.0\.0\.1:9.*not in the local"):
        SteeringModule(backbone="some-org/some-model")
    assert time.perf_counter() - start < 10


def test_unreachable_hub_uses_a_cached_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A model already in the Hugging Face cache is read from it at once (no retries) when the hub is down."""
    snapshot = tmp_path / "models--some-org--cached-model" / "snapshots" / "0123abc"
    make_tiny_model("llama").config.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    assert backbone_num_layers("some-org/cached-model", cache_dir=str(tmp_path)) == TINY_LAYERS
    with pytest.raises(OptionError, match=f"cached-model has {TINY_LAYERS} blocks"):
        SteeringModule(
            backbone="some-org/cached-model", backbone_options={"cache_dir": str(tmp_path)}, layer=TINY_LAYERS
        )
    assert time.perf_counter() - start < 10
