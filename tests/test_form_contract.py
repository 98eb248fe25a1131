"""The form contract and registry, one suite for every shipped form and the docs' example form.

Each form registers itself with its options dataclass; builds from its options on any layout; rebuilds from
its saved config (saved controls); is the zero update at ``m = 0`` and changes the output otherwise; and has
a direction to project out exactly when it says so. The module's ``form`` argument takes any registered
form's options by class path, and an option the form does not have is refused when the config is parsed.
"""

from __future__ import annotations

from dataclasses import is_dataclass

import pytest
import torch
from jsonargparse import ArgumentParser

from docs.examples.scale_form import ScaleIntervention, ScaleOptions
from lightning_split import DiffMeanSteering, SteeringModule
from lightning_split.interventions import (
    FORM_REGISTRY,
    FORMS,
    FormOptions,
    LoRAOptions,
    VectorOptions,
    build_intervention,
    form_class,
    form_of,
    form_options,
    intervention_from_config,
)
from lightning_split.layout import discover_layout
from lightning_split.steering import steer
from tests.tiny_models import make_tiny_model

ALL_FORMS = [*FORMS, ScaleIntervention.form]
LAYER = 1


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_tiny_model("llama")


def test_registry_lists_the_shipped_forms_and_the_example() -> None:
    assert {"vector", "lora", "local_weight", "reft", "full"} <= set(FORMS)
    assert FORM_REGISTRY["scale"] is ScaleIntervention and "scale" not in FORMS, "FORMS is the package's own"
    for form in ALL_FORMS:
        cls = form_class(form)
        assert cls.form == form and is_dataclass(cls.options) and issubclass(cls.options, FormOptions)
        assert form_of(cls.options()) is cls


@pytest.mark.parametrize("form", ALL_FORMS)
def test_form_builds_reloads_and_steers(form: str, model: torch.nn.Module) -> None:
    layout = discover_layout(model)
    intervention = build_intervention(form_options(form), layout, LAYER)
    with torch.no_grad():
        for p in intervention.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    rebuilt = intervention_from_config(intervention.config(), layout)
    assert type(rebuilt) is type(intervention) and rebuilt.config() == intervention.config()
    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with steer(layout, [intervention], 0.0):
            at_zero = model(input_ids=ids).logits
        with steer(layout, [intervention], 1.0):
            at_one = model(input_ids=ids).logits
    torch.testing.assert_close(at_zero, base, atol=1e-6, rtol=0)
    assert (at_one - base).abs().max() > 1e-4


@pytest.mark.parametrize("form", ALL_FORMS)
def test_direction_exists_exactly_for_forms_that_declare_it(form: str, model: torch.nn.Module) -> None:
    intervention = build_intervention(form_options(form), discover_layout(model), LAYER)
    h = torch.randn(2, 3, model.config.hidden_size)
    if form_class(form).has_direction:
        v = intervention.direction.detach()
        projected = h + intervention.ablate(h)
        assert (projected @ v).max() <= 1e-5, "the positive projection on v must be removed"
    else:
        with pytest.raises(NotImplementedError, match="no direction"):
            intervention.ablate(h)


def test_scale_example_is_the_hand_written_edit(model: torch.nn.Module) -> None:
    layout = discover_layout(model)
    scale = build_intervention(ScaleOptions(init_std=0.5), layout, LAYER)
    s = scale.scale.detach().clone()
    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(1))

    def by_hand(module: torch.nn.Module, args: object, output: object) -> object:
        h = output[0] if isinstance(output, tuple) else output
        new = h * (1 + 0.7 * s)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    with torch.no_grad():
        with steer(layout, [scale], 0.7):
            got = model(input_ids=ids).logits
        handle = layout.blocks[LAYER].register_forward_hook(by_hand)
        try:
            want = model(input_ids=ids).logits
        finally:
            handle.remove()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _parse(form: dict) -> SteeringModule:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SteeringModule, "model")
    return parser.instantiate(parser.parse_object({"model": {"form": form}})).model


def test_form_argument_takes_any_registered_form_and_refuses_foreign_options() -> None:
    module = _parse({"class_path": "lightning_split.interventions.LoRAOptions", "init_args": {"rank": 8}})
    assert module.form == "lora" and module.form_options == LoRAOptions(rank=8)
    assert module.hparams["form"]["init_args"] == {"rank": 8, "alpha": None, "dropout": 0.0}
    example = _parse({"class_path": "docs.examples.scale_form.ScaleOptions", "init_args": {"init_std": 0.2}})
    assert example.form == "scale" and example.form_options == ScaleOptions(init_std=0.2)
    with pytest.raises(Exception, match="rank"):
        _parse({"class_path": "lightning_split.interventions.VectorOptions", "init_args": {"rank": 4}})
    with pytest.raises(ValueError, match="has no option \\['rank'\\]"):
        form_options("vector", rank=4)
    with pytest.raises(ValueError, match="give a form.s options"):
        SteeringModule(form="lora")  # type: ignore[arg-type]


def test_lora_dropout_is_a_config_option(model: torch.nn.Module) -> None:
    lora = build_intervention(LoRAOptions(dropout=0.3), discover_layout(model), LAYER)
    assert isinstance(lora.dropout, torch.nn.Dropout) and lora.dropout.p == 0.3
    assert intervention_from_config(lora.config(), discover_layout(model)).dropout.p == 0.3


def test_diffmean_needs_a_form_with_a_direction_and_no_objective() -> None:
    assert DiffMeanSteering().form_options == VectorOptions(init_std=0.0)
    with pytest.raises(ValueError, match="fits one direction"):
        DiffMeanSteering(form=LoRAOptions())
    with pytest.raises(ValueError, match="not trained"):
        DiffMeanSteering(objective=SteeringModule().objective)


@pytest.mark.parametrize(
    "saved",
    [  # control.json entries as the code before the registry wrote them
        {"form": "vector", "layer": 1, "hidden_size": 64, "init_std": 0.2},
        {"form": "lora", "layer": 1, "in_features": 96, "out_features": 64, "rank": 3, "alpha": 5.0, "dropout": 0.0},
        {"form": "reft", "layer": 1, "hidden_size": 64, "rank": 3},
        {"form": "local_weight", "layer": 1, "in_features": 96, "out_features": 64},
        {"form": "full", "layer": 1},
    ],
)
def test_controls_saved_before_the_registry_still_rebuild(saved: dict, model: torch.nn.Module) -> None:
    assert intervention_from_config(saved, discover_layout(model)).config() == saved
