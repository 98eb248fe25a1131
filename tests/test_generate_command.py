"""``lightning-split generate``: every prompt at every multiplier from a run or control folder, to JSONL and a table,
equal to the Python API; bad input is refused with its option or file before the backbone loads."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

import lightning_split.artifacts as artifacts
from lightning_split.artifacts import control_metadata, load_steered, save_control
from lightning_split.backbone import load_backbone
from lightning_split.cli import main
from lightning_split.interventions import VectorOptions, build_control
from lightning_split.layout import discover_layout
from tests.conftest import count_calls

pytestmark = pytest.mark.usefixtures("one_thread")

NEW = 5


@pytest.fixture(scope="module")
def run_folder(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose ``control/`` holds a random vector on block 1 of the tiny backbone."""
    model, _ = load_backbone(str(tiny_backbone_dir))
    control = build_control(VectorOptions(init_std=0.0), discover_layout(model), [1])
    with torch.no_grad():
        control[0].vector.copy_(torch.randn(control[0].vector.shape, generator=torch.Generator().manual_seed(0)))
    run = tmp_path_factory.mktemp("run")
    hparams = {"backbone": str(tiny_backbone_dir), "positions": "all"}
    save_control(run / "control", control, control_metadata(control, hparams, "split", [1.0]))
    return run


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_prompt_at_every_multiplier_to_jsonl_and_a_table(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text(
        json.dumps({"prompt": "Write about the sea."}) + "\n\n" + json.dumps("Name a fruit.") + "\n"
    )
    out = tmp_path / "out" / "gen.jsonl"
    args = ["generate", str(run_folder), "--prompt", "Hi", "--prompts", str(prompts_file)]
    main([*args, "--multipliers", "-4", "0", "4", "--max_new_tokens", str(NEW), "--output", str(out)])
    rows = _rows(out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask and not list(out.parent.glob(".*"))
    prompts = ["Hi", "Write about the sea.", "Name a fruit."]
    assert [(r["prompt"], r["m"]) for r in rows] == [(p, m) for p in prompts for m in (-4.0, 0.0, 4.0)]
    want = load_steered(run_folder / "control").generate(prompts, [-4.0, 0.0, 4.0], max_new_tokens=NEW)
    assert [r["text"] for r in rows] == [w["text"] for w in want]
    assert len({r["text"] for r in rows if r["prompt"] == "Hi"}) > 1, "the multipliers must change the replies"
    printed = capsys.readouterr().out
    assert "generating 3 prompts x 3 multipliers" in printed and "9 replies in" in printed and str(out) in printed
    table = printed[printed.index("prompt  ") :].splitlines()
    assert table[0].split() == ["prompt", "m", "text"] and len(table) == 1 + 9 + 1
    assert table[1].split()[:2] == ["Hi", "-4"]


def test_a_control_folder_txt_prompts_sampling_seed_and_batches(run_folder: Path, tmp_path: Path) -> None:
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("Hi\n\nName a fruit.\nWrite about the sea.\n")
    common = [str(run_folder / "control"), "--prompts", str(prompts_file), "--multipliers", "0", "2"]
    sampled = [*common, "--max_new_tokens", str(NEW), "--do_sample", "--temperature", "1.5", "--seed", "3"]
    for name, extra in (("a", []), ("b", ["--batch_size", "2"]), ("c", ["--seed", "4"])):
        main(["generate", *sampled, *extra, "--output", str(tmp_path / f"{name}.jsonl")])
    a, b, c = (_rows(tmp_path / f"{n}.jsonl") for n in "abc")
    assert len(a) == 6 and a[0] == {**a[0], "prompt": "Hi", "m": 0.0}
    assert [r["prompt"] for r in a] == [r["prompt"] for r in b]
    assert a != c  # another seed samples other replies
    main(["generate", *common, "--max_new_tokens", str(NEW), "--output", str(tmp_path / "default-name-check.jsonl")])
    main(["generate", *common, "--max_new_tokens", "2"])
    assert len(list((run_folder / "control").glob("generations-*.jsonl"))) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "--prompt", "Hi"], "is neither a saved control"),
        (["{run}"], "no prompts: give --prompt TEXT"),
        (["{run}", "--prompts", "{tmp}/none.txt"], "prompts file not found: .*none.txt \\(option --prompts\\)"),
        (["{run}", "--prompts", "{tmp}/bad.jsonl"], "bad.jsonl, line 2: no prompt"),
        (["{run}", "--prompt", "Hi", "--max_new_tokens", "0"], "option --max_new_tokens is 0; it must be >= 1"),
        (["{run}", "--prompt", "Hi", "--do_sample", "--temperature", "0"], "--temperature is 0.0; it must be > 0"),
    ],
)
def test_bad_input_exits_2_with_its_message_before_the_backbone_loads(
    args: list[str],
    message: str,
    run_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\n{"text": "no prompt field"}\n')
    loads = count_calls(monkeypatch, artifacts, "load_steered")
    before = set(run_folder.rglob("*"))
    filled = [a.format(run=run_folder, missing=tmp_path / "nothing", tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *filled])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-split: error: ") and re.search(message, err), err
    assert loads[0] == 0
    assert set(run_folder.rglob("*")) == before
