"""``lightning-split export``: each format means the framework's Δh at m, and bad input fails before any model loads."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModelForCausalLM

from lightning_split.artifacts import ControlFileError, control_metadata, load_steered, save_control
from lightning_split.cli import main as cli_main
from lightning_split.errors import OptionError
from lightning_split.export import export_control
from lightning_split.export.gguf_vector import read_control_vector
from lightning_split.export.merged import merge_control
from lightning_split.export.peft_lora import svd_lora
from lightning_split.interventions import LocalWeightIntervention, build_control, form_options
from lightning_split.layout import discover_layout
from lightning_split.steering import steer
from tests.tiny_models import make_tiny_model

OPTIONS = {"lora": {"rank": 2, "alpha": 3.0}, "reft": {"rank": 2}, "vector": {"init_std": 0.0}}


def _random_control(form: str, model: nn.Module, layers: list[int], seed: int = 0, scale: float = 0.2) -> nn.ModuleList:
    control = build_control(form_options(form, **OPTIONS.get(form, {})), discover_layout(model), layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return control


def _save(
    directory: Path, form: str, backbone: Path | str, layers: list[int], positions: str = "all", seed: int = 0
) -> Path:
    """Saves a random control of ``form`` for ``backbone`` (the tiny Llama folder unless a string is given)."""
    model = make_tiny_model("llama") if isinstance(backbone, str) else AutoModelForCausalLM.from_pretrained(backbone)
    control = _random_control(form, model, layers, seed)
    hparams = {"backbone": str(backbone), "positions": positions, "training": {"lr": 0.01}, "form": form}
    return save_control(directory, control, control_metadata(control, hparams, "split", [0.0, 1.0, 2.0]))


def _ids(vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 11), generator=torch.Generator().manual_seed(seed))


def _no_backbone_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone was loaded before the options were checked")

    monkeypatch.setattr("lightning_split.backbone.load_backbone", refuse)


# --- GGUF control vector -------------------------------------------------------------------------------------


@pytest.mark.parametrize("multiplier", [None, 2.5, -1.0])
def test_gguf_holds_each_block_vector_and_the_training_settings(
    tiny_backbone_dir: Path, tmp_path: Path, multiplier: float | None
) -> None:
    control_dir = _save(tmp_path / "run" / "logs" / "version_0" / "control", "vector", tiny_backbone_dir, [1, 3])
    out = tmp_path / "steer.gguf"
    result = export_control(tmp_path / "run", out, multiplier=multiplier)  # the run folder: its control is found
    assert result.format == "gguf" and result.output == out and sorted(p.name for p in tmp_path.iterdir()) == [
        "run", "steer.gguf"]  # fmt: skip
    vectors = {iv.layer: iv.vector.detach() for iv in load_steered(control_dir).control}
    file = read_control_vector(out)
    assert file.model_hint == "llama" and sorted(file.directions) == [1, 3]
    for layer, v in vectors.items():
        expected = v.numpy() * (1.0 if multiplier is None else multiplier)
        assert file.directions[layer].dtype == np.float32 and file.directions[layer].shape == (64,)
        np.testing.assert_array_equal(file.directions[layer], expected.astype(np.float32))
    assert file.metadata["form"] == "vector" and file.metadata["positions"] == "all"
    assert file.metadata["multiplier"] == ("runtime scale" if multiplier is None else repr(multiplier))
    assert '"lr": 0.01' in file.metadata["settings"] and file.metadata["multipliers"] == "[0.0, 1.0, 2.0]"


def test_gguf_layer_count_and_architecture_keys(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    import gguf

    _save(tmp_path / "control", "vector", tiny_backbone_dir, [2])
    export_control(tmp_path / "control", tmp_path / "v.gguf", model_hint="mistral")
    fields = gguf.GGUFReader(str(tmp_path / "v.gguf")).fields
    assert fields["general.architecture"].contents() == "controlvector"
    assert fields["controlvector.layer_count"].contents() == 1
    assert fields["controlvector.model_hint"].contents() == "mistral"


def test_gguf_refuses_block_0(tmp_path: Path) -> None:
    _save(tmp_path / "control", "vector", "tiny", [0, 2])
    with pytest.raises(OptionError, match="block 0.*llama.cpp"):
        export_control(tmp_path / "control", tmp_path / "v.gguf", model_hint="llama")
    assert not (tmp_path / "v.gguf").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["control"]


def test_subset_of_positions_is_warned(tmp_path: Path) -> None:
    _save(tmp_path / "control", "vector", "tiny", [2], positions="completion")
    result = export_control(tmp_path / "control", tmp_path / "v.gguf", model_hint="llama")
    assert result.notes[0].startswith("warning:") and "only the completion tokens" in result.notes[0]
    assert read_control_vector(tmp_path / "v.gguf").metadata["positions"] == "completion"


# --- bad input, before any model loads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "kwargs", "message"),
    [
        ("reft", {}, r"cannot export a reft control: .*input-dependent"),
        ("full", {}, r"cannot export a full control: .*no weight edit"),
        ("vector", {"format": "peft"}, r"--format peft does not apply to a vector control; it exports to gguf"),
        ("vector", {"svd_rank": 4}, r"--svd-rank applies only to a local_weight"),
        ("lora", {"svd_rank": 2}, r"--svd-rank applies only to a local_weight"),
        ("lora", {"model_hint": "llama"}, r"--model-hint applies only to --format gguf"),
        ("local_weight", {"format": "peft"}, r"give --svd-rank"),
        ("local_weight", {"format": "peft", "svd_rank": 0}, r"--svd-rank is 0; it must be between 1 and 64"),
        ("lora", {"multiplier": math.nan}, r"--multiplier is nan; it must be a finite number"),
        ("vector", {"multiplier": math.inf}, r"--multiplier is inf"),
    ],
)
def test_bad_options_fail_before_the_backbone_loads(
    tiny_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str, kwargs: dict, message: str
) -> None:
    _save(tmp_path / "control", form, tiny_backbone_dir, [1])
    if "svd_rank" not in kwargs or kwargs["svd_rank"] != 0:
        _no_backbone_load(monkeypatch)  # a bad --svd-rank is known only once ΔW's shape is read
    with pytest.raises(OptionError, match=message):
        export_control(tmp_path / "control", tmp_path / "out", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["control"], "a refused export left files behind"


def test_missing_or_ambiguous_control_is_named(tmp_path: Path) -> None:
    with pytest.raises(ControlFileError, match="does not exist"):
        export_control(tmp_path / "nowhere", tmp_path / "v.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ControlFileError, match="holds no saved control"):
        export_control(tmp_path / "empty", tmp_path / "v.gguf")
    for version in ("version_0", "version_1"):
        _save(tmp_path / "run" / version / "control", "vector", "tiny", [1])
    with pytest.raises(ControlFileError, match=r"holds 2 saved controls; give one of them:\n.*version_0/control"):
        export_control(tmp_path / "run", tmp_path / "v.gguf")


def test_existing_output_needs_overwrite_and_a_failed_export_keeps_it(
    tiny_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save(tmp_path / "control", "local_weight", tiny_backbone_dir, [1])
    out = tmp_path / "merged"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    _no_backbone_load(monkeypatch)
    with pytest.raises(OptionError, match="merged exists; pass --overwrite"):
        export_control(tmp_path / "control", out)
    monkeypatch.undo()

    def fail(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("lightning_split.export.run.export_merged", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_control(tmp_path / "control", out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["control", "merged"]
    assert (out / "mine.txt").read_text() == "keep"


def test_cli_prints_the_runtime_command_and_exits_2_on_bad_input(
    tiny_backbone_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _save(tmp_path / "control", "vector", tiny_backbone_dir, [1])
    out = tmp_path / "v.gguf"
    cli_main(["export", str(tmp_path / "control"), "-o", str(out)])
    printed = capsys.readouterr().out
    assert f"wrote gguf to {out}" in printed and f"--control-vector-scaled {out}:M" in printed
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", str(tmp_path / "control"), "-o", str(out)])
    assert exit_info.value.code == 2
    assert "v.gguf exists; pass --overwrite" in capsys.readouterr().err


# --- merged checkpoint -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["local_weight", "lora"])
@pytest.mark.parametrize("multiplier", [0.0, 1.7, -2.0])
def test_merged_checkpoint_loads_in_plain_transformers_with_the_steered_logits(
    tiny_backbone_dir: Path, tmp_path: Path, form: str, multiplier: float
) -> None:
    _save(tmp_path / "control", form, tiny_backbone_dir, [1, 2])
    result = export_control(tmp_path / "control", tmp_path / "merged", format="merged", multiplier=multiplier)
    assert result.format == "merged"
    steered = load_steered(tmp_path / "control")
    ids = _ids(steered.model.config.vocab_size)
    ours = steered.logits(ids, multiplier)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        theirs = merged(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=0)
    assert (steered.logits(ids, 0.0) - ours).abs().max() > 1e-2 or multiplier == 0.0, "m changed nothing"
    assert merged.config.mlp_bias == (form == "local_weight"), "Δb of a local weight needs the MLP biases"


@pytest.mark.parametrize("arch", ["gpt2", "gemma3"])
def test_merge_in_place_matches_steering(arch: str) -> None:
    """GPT-2's Conv1D stores [in, out]; Gemma-3 normalises after the MLP, so the edit must be inside it."""
    model = make_tiny_model(arch)
    layout = discover_layout(model)
    control = _random_control("local_weight", model, [1])
    if arch == "gemma3":
        with torch.no_grad():
            control[0].bias.zero_()  # no bias on Gemma's down-projection: only ΔW merges
    ids = _ids(128, 1)
    with torch.no_grad(), steer(layout, control, 1.3):
        ours = model(input_ids=ids).logits
    merged = copy.deepcopy(model)
    merge_control(merged, discover_layout(merged), control, 1.3)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, ours, atol=2e-5, rtol=0)


def test_merge_refuses_a_bias_with_nowhere_to_go() -> None:
    model = make_tiny_model("qwen2")
    with pytest.raises(OptionError, match=r"Δb is nonzero but the qwen2 down-projection has no bias.*--svd-rank"):
        merge_control(model, discover_layout(model), _random_control("local_weight", model, [1]), 1.0)


# --- SVD LoRA of a local weight --------------------------------------------------------------------------------


def test_svd_error_decreases_with_rank_and_is_exact_at_full_rank() -> None:
    model = make_tiny_model("llama")
    local = _random_control("local_weight", model, [1])[0]
    assert isinstance(local, LocalWeightIntervention)
    errors = [svd_lora(local, rank).relative_error for rank in (1, 4, 16, 32, 63, 64)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.5 and errors[-1] < 1e-6  # a random 64×96 ΔW has no dominant direction
    full = svd_lora(local, 64).lora
    torch.testing.assert_close(full.lora_B.weight @ full.lora_A.weight * full.scaling, local.weight, atol=1e-5, rtol=0)


@pytest.mark.parametrize("multiplier", [1.0, -0.8])
def test_svd_adapter_in_peft_gives_the_steered_logits_at_full_rank(
    tiny_backbone_dir: Path, tmp_path: Path, multiplier: float
) -> None:
    _save(tmp_path / "control", "local_weight", tiny_backbone_dir, [2])
    result = export_control(tmp_path / "control", tmp_path / "lora", multiplier=multiplier, svd_rank=64)
    assert result.format == "peft" and any("rank-64 SVD of ΔW at block 2: relative error" in n for n in result.notes)
    steered = load_steered(tmp_path / "control")
    ids = _ids(steered.model.config.vocab_size, 2)
    ours = steered.logits(ids, multiplier)
    base = AutoModelForCausalLM.from_pretrained(tiny_backbone_dir)
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(base, str(tmp_path / "lora")).eval()(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=0)


def test_command_lists_the_package_formats() -> None:
    from lightning_split.commands import export as command
    from lightning_split.export import FORMATS

    assert command._FORMATS == FORMATS  # the command keeps its own copy so that --help imports no torch
