"""Saved controls reload in a fresh process with bit-identical logits; wrong backbones and folders fail clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lightning_split.artifacts import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    control_metadata,
    load_control,
    save_control,
    trained_nll_reduction,
)
from lightning_split.backbone import load_backbone
from lightning_split.interventions import FORMS, build_control, form_options
from lightning_split.layout import discover_layout
from lightning_split.steering import steer
from tests.tiny_models import make_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYER = 1
M = 1.3


def _save_random_control(form: str, model: nn.Module, backbone: str, directory: Path, seed: int) -> nn.ModuleList:
    """Builds a control of ``form``, randomises every parameter and saves it with its metadata."""
    options = {"lora": {"rank": 2, "alpha": 3.0}, "reft": {"rank": 2}, "vector": {"init_std": 0.0}}.get(form, {})
    control = build_control(form_options(form, **options), discover_layout(model), [LAYER])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    hparams = {"backbone": backbone, "positions": "all", "training": {"lr": 0.01}}
    save_control(directory, control, control_metadata(control, hparams, "split", [0.5, 1.0, 1.5]))
    return control


_CHILD = """
import sys
import torch
from safetensors.torch import load_file, save_file
from lightning_split.artifacts import load_control, load_steered
from lightning_split.layout import discover_layout
from lightning_split.steering import steer

torch.set_num_threads(int(sys.argv[1]))
ids = load_file(sys.argv[2])["ids"]
out = {}
for form, directory in zip(sys.argv[4::2], sys.argv[5::2]):
    steered = load_steered(directory)
    out[form + "/load_steered"] = steered.logits(ids, MULTIPLIER)
    control, _ = load_control(directory, discover_layout(steered.model))
    with torch.no_grad(), steer(steered.layout, control, torch.full((ids.shape[0],), MULTIPLIER)):
        out[form + "/load_control"] = steered.model(input_ids=ids, use_cache=False).logits
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[3])
"""


@pytest.mark.slow  # the child process imports torch and transformers again (10-30 s on a busy CPU)
def test_every_form_reloads_in_a_new_process_bit_for_bit(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    model, _ = load_backbone(str(tiny_backbone_dir))
    layout = discover_layout(model)
    ids = torch.randint(3, 500, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(input_ids=ids, use_cache=False).logits
    expected, args = {}, []
    for k, form in enumerate(FORMS):
        directory = tmp_path / form
        control = _save_random_control(form, model, str(tiny_backbone_dir), directory, seed=k)
        assert sorted(os.listdir(directory)) == [CONFIG_FILE, WEIGHTS_FILE]
        meta = json.loads((directory / CONFIG_FILE).read_text())
        assert meta["form"] == form and meta["backbone"] == str(tiny_backbone_dir)
        assert meta["multipliers"] == [0.5, 1.0, 1.5]
        assert [iv["layer"] for iv in meta["interventions"]] == [LAYER]
        assert set(load_file(str(directory / WEIGHTS_FILE))) == set(control.state_dict())
        with torch.no_grad(), steer(layout, control, torch.full((2,), M)):
            expected[form] = model(input_ids=ids, use_cache=False).logits
        assert (expected[form] - base).abs().max() > 1e-3, f"the {form} control changed nothing"
        args += [form, str(directory)]

    save_file({"ids": ids}, str(tmp_path / "ids.safetensors"))
    out = tmp_path / "logits.safetensors"
    command = [sys.executable, "-c", _CHILD.replace("MULTIPLIER", repr(M)), str(torch.get_num_threads()),
               str(tmp_path / "ids.safetensors"), str(out), *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = load_file(str(out))
    for form in FORMS:
        for how in ("load_steered", "load_control"):
            assert torch.equal(got[f"{form}/{how}"], expected[form]), f"{form} via {how} differs after reload"


@pytest.mark.parametrize("form", FORMS)
def test_backbone_of_other_hidden_size_is_refused(form: str, tmp_path: Path) -> None:
    model = make_tiny_model("llama")
    _save_random_control(form, model, "tiny-llama-64", tmp_path / form, seed=1)
    other = make_tiny_model("llama", hidden_size=48)
    with pytest.raises(ValueError, match="does not fit this backbone"):
        load_control(tmp_path / form, discover_layout(other))


def test_folder_without_metadata_is_refused(tmp_path: Path) -> None:
    model = make_tiny_model("llama")
    _save_random_control("vector", model, "tiny", tmp_path / "control", seed=2)
    (tmp_path / "control" / CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="not a saved lightning_split control"):
        load_control(tmp_path / "control", discover_layout(model))
    from lightning_split.artifacts import load_steered

    with pytest.raises(FileNotFoundError, match="control.json"):
        load_steered(tmp_path / "empty-folder")


# --------------------------------------------------------------------------- damaged folders, atomic saves
from lightning_split import artifacts  # noqa: E402
from lightning_split.artifacts import ControlFileError, block_device, load_steered  # noqa: E402


def _no_backbone_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone was loaded before the control files were checked")

    monkeypatch.setattr("lightning_split.backbone.load_backbone", refuse)


@pytest.mark.parametrize("cut", [0, 7, 100, -1])
def test_truncated_weights_are_refused_before_the_backbone_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: int
) -> None:
    _save_random_control("lora", make_tiny_model("llama"), "tiny", tmp_path / "control", seed=3)
    weights = tmp_path / "control" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:cut])
    _no_backbone_load(monkeypatch)
    with pytest.raises(ControlFileError, match=rf"{WEIGHTS_FILE} is damaged .*copy the control folder again"):
        load_steered(tmp_path / "control")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / WEIGHTS_FILE).unlink(), rf"{WEIGHTS_FILE} not found"),
        (lambda d: (d / CONFIG_FILE).write_text('{"format_version": 1, "backbone": '), r"not valid JSON"),
        (lambda d: (d / CONFIG_FILE).write_text("[1, 2]"), r"holds a list"),
        (lambda d: (d / CONFIG_FILE).write_text('{"format_version": 1, "form": "lora"}'), r"lacks \['backbone'"),
        (lambda d: (d / CONFIG_FILE).write_text('{"format_version": 99}'), r"unsupported control format 99"),
    ],
    ids=["no-weights", "cut-json", "json-list", "no-backbone", "format"],
)
def test_damaged_folder_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage, message: str) -> None:
    directory = tmp_path / "control"
    _save_random_control("vector", make_tiny_model("llama"), "tiny", directory, seed=4)
    damage(directory)
    _no_backbone_load(monkeypatch)
    with pytest.raises(ControlFileError, match=message):
        load_steered(directory)


def _saved_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("failing", ["save_file", "replace"])
def test_failed_save_keeps_the_old_control_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    model = make_tiny_model("llama")
    directory = tmp_path / "control"
    _save_random_control("lora", model, "tiny", directory, seed=5)
    before = _saved_bytes(directory)
    if failing == "save_file":
        monkeypatch.setattr(artifacts, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    else:
        real_replace = os.replace

        def replace(src: str | Path, dst: str | Path) -> None:
            if Path(dst) == directory and Path(src).name == directory.name:  # moving the new control into place
                raise OSError("interrupted")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        _save_random_control("lora", model, "tiny", directory, seed=6)
    assert _saved_bytes(directory) == before, "the earlier control was damaged by a failed save"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["control"], "a temporary folder was left behind"


def test_save_replaces_an_old_control_and_leaves_nothing_else(tmp_path: Path) -> None:
    model = make_tiny_model("llama")
    directory = tmp_path / "control"
    _save_random_control("lora", model, "tiny", directory, seed=7)
    first = _saved_bytes(directory)
    _save_random_control("lora", model, "tiny", directory, seed=8)
    assert _saved_bytes(directory) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["control"]


def test_save_refuses_a_folder_that_is_not_a_control(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(ControlFileError, match="is not a saved control"):
        _save_random_control("vector", make_tiny_model("llama"), "tiny", tmp_path / "notes", seed=9)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(("umask", "folder", "files"), [(0o022, 0o755, 0o644), (0o007, 0o770, 0o660)])
def test_saved_control_has_ordinary_permissions(tmp_path: Path, umask: int, folder: int, files: int) -> None:
    old = os.umask(umask)
    try:
        _save_random_control("vector", make_tiny_model("llama"), "tiny", tmp_path / "control", seed=10)
    finally:
        os.umask(old)
    assert (tmp_path / "control").stat().st_mode & 0o777 == folder
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert (tmp_path / "control" / name).stat().st_mode & 0o777 == files


def test_control_goes_to_the_device_of_its_block(tmp_path: Path) -> None:
    """On CPU this checks the choice (each intervention follows its block's parameters); on CUDA, the move."""
    model = make_tiny_model("llama")
    _save_random_control("lora", model, "tiny", tmp_path / "control", seed=11)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        layout = discover_layout(model.to(device))
        assert block_device(layout, LAYER).type == device
        control, _ = load_control(tmp_path / "control", layout)
        assert {p.device.type for p in control.parameters()} == {device}
        assert {p.dtype for p in control.parameters()} == {torch.float32}


def test_control_saved_before_the_options_were_grouped_still_loads(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    """A ``control.json`` of the old layout (a flat ``training`` section: ``lr``, ``eval_multiplier``, ``dtype``…)
    loads with ``load_steered`` and steers as before."""
    from lightning_split.artifacts import load_steered

    model, _ = load_backbone(str(tiny_backbone_dir))
    directory = tmp_path / "control"
    control = _save_random_control("lora", model, str(tiny_backbone_dir), directory, seed=4)
    meta = json.loads((directory / CONFIG_FILE).read_text())
    assert meta["settings"] == {"training": {"lr": 0.01}}
    old = {k: v for k, v in meta.items() if k != "settings"}
    old["training"] = {
        "form": {"class_path": "lightning_split.interventions.lora.LoRAOptions", "init_args": {"rank": 2}},
        "objective": {"class_path": "lightning_split.objectives.split.SPLIT", "init_args": {"gamma": 5.0}},
        "lr": 0.01, "weight_decay": 0.0, "eval_multiplier": 1.0, "nll_reduction": "mean", "dtype": "float32",
        "quantization": None,
    }  # fmt: skip
    (directory / CONFIG_FILE).write_text(json.dumps(old))
    steered = load_steered(directory)
    assert steered.metadata["training"]["lr"] == 0.01
    ids = torch.randint(3, 500, (2, 9), generator=torch.Generator().manual_seed(1))
    layout = discover_layout(model)
    with torch.no_grad(), steer(layout, control, torch.full((2,), M)):
        expected = model(input_ids=ids, use_cache=False).logits
    assert torch.equal(steered.logits(ids, M), expected)


def test_trained_nll_reduction_reads_the_grouped_and_the_old_flat_layout() -> None:
    assert trained_nll_reduction({"settings": {"evaluation": {"nll_reduction": "sum"}}}) == "sum"
    assert trained_nll_reduction({"training": {"nll_reduction": "mean"}}) == "mean"
    assert trained_nll_reduction({"settings": {"training": {"lr": 0.1}}}) is None
