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

from lightning_split.artifacts import CONFIG_FILE, WEIGHTS_FILE, control_metadata, load_control, save_control
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
    hparams = {"backbone": backbone, "positions": "all", "lr": 0.01}
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
