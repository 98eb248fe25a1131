"""The manifold analysis callback in real Lightning runs on the tiny Llama: report files, W&B offline run,
agreement with ``lightning-split analyze`` on the same run folder, fresh folders, refusals and the CLI snippet.

One module-scoped run (fit, then test with a ``WandbLogger`` in offline mode) serves the first three tests; the
W&B checks read the run's ``wandb.Table`` JSON files under ``files/media/table`` and its summary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from lightning_split.callbacks import ManifoldAnalysisCallback, TradeoffCurveCallback
from lightning_split.callbacks.manifold import loggable

from lightning_split import SteeringModule
from lightning_split.cli import main
from lightning_split.data.datamodule import PolarityDataModule
from lightning_split.errors import OptionError
from lightning_split.files import fresh_folder
from lightning_split.interventions import VectorOptions
from lightning_split.manifold import AnalysisOptions, analyze_run
from lightning_split.manifold.report import cell

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
DATA = {"dataset": "sentiment", "train_size": 16, "test_size": 6, "batch_size": 4, "eval_batch_size": 3, "seed": 3}
GRID = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
OPTIONS = {"reference_pairs": 12, "k": 3, "batch_size": 4}
HEADINGS = (
    "## Unsteered references",
    "## Layer 1: means over activations",
    "## Layer 2: means over activations",
    "## Layer 3: means over activations",  # the last block (4 blocks)
    "## Distance and utility",
    "## Share of Δh in the utility-relevant directions",
    "## Curve fits: the paper's RQ decay beside baselines",
    "## Reading",
)


@dataclass
class FinishedRun:
    """What the module's run left: its folder, the callback, the W&B run folder and summary."""

    run_dir: Path
    callback: ManifoldAnalysisCallback
    wandb_dir: Path
    summary: dict[str, Any]


def _module(backbone_dir: Path) -> SteeringModule:
    return SteeringModule(backbone=str(backbone_dir), form=VectorOptions(init_std=0.3), layer=1, training={"lr": 0.05})


def _trainer(root: Path, *callbacks: Any, logger: Any = False) -> L.Trainer:
    return L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu",
        logger=logger, callbacks=list(callbacks), enable_checkpointing=False, enable_progress_bar=False,
        default_root_dir=str(root),
    )  # fmt: skip


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> FinishedRun:
    """``fit`` then ``test`` with the trade-off and manifold callbacks and an offline ``WandbLogger``; the folder
    also gets the ``config.yaml`` that ``lightning-split fit`` would write, for ``analyze_run``."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    run_dir = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()  # one thread, as the `one_thread` fixture gives each test
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        env.setenv("WANDB_DIR", str(run_dir))
        L.seed_everything(0, verbose=False)
        callback = ManifoldAnalysisCallback(**OPTIONS)
        logger = WandbLogger(offline=True, save_dir=str(run_dir), project="manifold-test")
        trainer = _trainer(run_dir, TradeoffCurveCallback(multipliers=GRID), callback, logger=logger)
        model, data = _module(tiny_backbone_dir), PolarityDataModule(**DATA)
        try:
            trainer.fit(model, data)
            trainer.test(model, data)
            summary = {key: logger.experiment.summary[key] for key in logger.experiment.summary.keys()}
            wandb_dir = Path(logger.experiment.dir).parent
        finally:
            wandb.finish()
            torch.set_num_threads(threads)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"data": DATA}))
    return FinishedRun(run_dir, callback, wandb_dir, summary)


def _markdown_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading`` (cells stripped)."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[2:]  # after the header and the alignment row


def _report_cells(columns: list[str], row: list[Any]) -> list[str]:
    """A logged row (its last column: ``notes``) as the report prints it: a number as :func:`cell` writes it, an empty
    value as the sentence its ``notes`` give for that column, or ``—``."""
    notes = dict(note.split(": ", 1) for note in row[-1].split("; ") if note)
    return [notes.get(name, "—") if value is None else cell(value) for name, value in zip(columns, row[:-1])]


def _wandb_table(run: FinishedRun, name: str) -> dict[str, Any]:
    (path,) = (run.wandb_dir / "files" / "media" / "table" / "manifold").glob(f"{name}_*.table.json")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- the report
def test_the_report_and_figures_are_written_into_the_run_folder(tested_run: FinishedRun) -> None:
    out = tested_run.run_dir / "manifold"
    assert tested_run.callback.last_report == out / "manifold.md"
    assert tested_run.callback.outputs() == {"manifold report": out / "manifold.md"}
    text = (out / "manifold.md").read_text()
    for heading in HEADINGS:
        assert heading in text, heading
    assert "nan" not in text.lower()
    assert f"| run folder | {tested_run.run_dir} |" in text
    assert "| evaluated | 6 test pairs of tradeoff/test/curve.json |" in text
    assert "| grid | -1, -0.5, 0, 0.5, 1, 1.5, 2 |" in text
    gap = float(text.split("by at most ")[1].split(" ")[0])
    assert gap < 1e-4  # the measuring pass reproduces the trade-off callback's test curve
    for layer in (1, 2, 3):
        for name in (f"plane-layer{layer}.png", f"distance-layer{layer}.png"):
            assert (out / name).stat().st_size > 10_000
            assert f"]({name})" in text


def test_wandb_tables_images_and_scalars_hold_the_report_numbers(tested_run: FinishedRun) -> None:
    summary = tested_run.summary
    for name in ("distances", "relations", "fits"):
        assert summary[f"manifold/{name}"]["_type"] == "table-file", name
    for layer in (1, 2, 3):
        for figure in ("plane", "distance"):
            assert summary[f"manifold/{figure}-layer{layer}"]["_type"] == "image-file"
    text = (tested_run.run_dir / "manifold" / "manifold.md").read_text()

    distances = _wandb_table(tested_run, "distances")
    assert distances["columns"][:3] == ["layer", "m", "utility"] and distances["columns"][-1] == "notes"
    assert [row[0] for row in distances["data"]] == [1] * 7 + [2] * 7 + [3] * 7
    for layer in (1, 2, 3):
        markdown = _markdown_rows(text, f"## Layer {layer}: means over activations")
        logged = [row for row in distances["data"] if row[0] == layer]
        assert [float(row[0]) for row in markdown] == [row[1] for row in logged] == GRID
        assert [row[1:] for row in markdown] == [_report_cells(distances["columns"], row)[2:] for row in logged]
    share = distances["columns"].index("Δh in utility@0.9")
    assert [row[share] for row in distances["data"] if row[1] == 0.0] == [None] * 3  # undefined at m = 0

    relations = _wandb_table(tested_run, "relations")
    markdown = _markdown_rows(text, "## Distance and utility")
    assert len(markdown) == 3 * 5  # residual@0.9, residual@0.99, knn, mahalanobis, projection per layer
    assert markdown == [_report_cells(relations["columns"], row) for row in relations["data"]]
    rho = relations["columns"].index("Spearman ρ (measure, utility drop)")
    for row in relations["data"]:
        if row[rho] is not None:
            assert summary[f"manifold/layer{row[0]}/spearman_{row[1]}"] == pytest.approx(row[rho], abs=1e-12)
    assert sum(f"manifold/layer{layer}/spearman_knn" in summary for layer in (1, 2, 3)) == 3

    fits = _wandb_table(tested_run, "fits")
    assert fits["columns"][:4] == ["curve", "model", "k", "R² (train fit)"]
    for kind in ("preference", "utility"):
        markdown = {row[0]: row for row in _markdown_rows(text, f"**{kind.capitalize()} log-odds**")}
        for row in (r for r in fits["data"] if r[0] == kind):
            assert markdown[row[1]][1] == str(row[2])
            for column in (3, 6, 7):  # R² train fit, test fit, train → test
                if row[column] is not None:
                    assert markdown[row[1]][column - 1] == f"{row[column]:.4f}"
                else:
                    assert fits["columns"][column] in row[-1], "a fit not made has its reason in notes"


def test_analyze_run_on_the_same_folder_writes_the_same_report(tested_run: FinishedRun, tmp_path: Path) -> None:
    """``lightning-split analyze`` on the run folder (saved control, config.yaml, test curve) with the same settings
    gives the callback's report, number for number."""
    path = analyze_run(tested_run.run_dir, AnalysisOptions(out=tmp_path, **OPTIONS))
    ours = (tested_run.run_dir / "manifold" / "manifold.md").read_text()
    assert path.read_text() == ours


# ----------------------------------------------------------------------------- folders and refusals
def test_a_second_test_run_writes_a_fresh_folder(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    callback = ManifoldAnalysisCallback(layers=[1], reference_pairs=8, k=3, batch_size=4, utility_level=None)
    trainer = _trainer(tmp_path, TradeoffCurveCallback(multipliers=[-1.0, 0.0, 1.0]), callback)
    model, data = _module(tiny_backbone_dir), PolarityDataModule(**DATA)
    trainer.test(model, data)
    first = tmp_path / "manifold" / "manifold.md"
    before = first.read_bytes(), first.stat().st_mtime_ns
    trainer.test(model, data)
    assert callback.reports == [first, tmp_path / "manifold-2" / "manifold.md"]
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    assert "## Layer 1: means over activations" in callback.reports[1].read_text()
    assert fresh_folder(tmp_path / "manifold") == tmp_path / "manifold-3"


def test_layers_below_the_control_are_refused_before_testing(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    callback = ManifoldAnalysisCallback(layers=[0], **OPTIONS)
    trainer = _trainer(tmp_path, TradeoffCurveCallback(multipliers=[-1.0, 0.0, 1.0]), callback)
    with pytest.raises(OptionError, match="ManifoldAnalysisCallback layers: layer 0"):
        trainer.test(_module(tiny_backbone_dir), PolarityDataModule(**DATA))
    assert not (tmp_path / "manifold").exists() and not (tmp_path / "tradeoff").exists()


def test_setup_refuses_a_trainer_it_cannot_work_with(tiny_backbone_dir: Path) -> None:
    model, data = _module(tiny_backbone_dir), PolarityDataModule(**DATA)
    callback = ManifoldAnalysisCallback()
    with pytest.raises(OptionError, match="no TradeoffCurveCallback with on_test=True"):
        callback.setup(SimpleNamespace(datamodule=data, callbacks=[TradeoffCurveCallback(on_test=False)]), model, "fit")
    with pytest.raises(OptionError, match="but the trainer has no data module"):
        callback.setup(SimpleNamespace(datamodule=None, callbacks=[TradeoffCurveCallback()]), model, "test")
    with pytest.raises(TypeError, match="SweepTarget"):
        callback.setup(
            SimpleNamespace(datamodule=data, callbacks=[TradeoffCurveCallback()]), L.LightningModule(), "test"
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, r"k \(--k\) must be >= 1, got 0"),
        ({"reference_pairs": -1}, r"reference_pairs \(--reference-pairs\) must be >= 1"),
        ({"levels": [0.9, 1.5]}, r"levels \(--levels\) must be shares in \(0, 1\]"),
        ({"levels": []}, r"levels \(--levels\) must be shares"),
        ({"utility_level": 0.0}, r"utility_level \(--utility-level\) must lie in"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        ManifoldAnalysisCallback(**options)


def test_loggable_moves_sentences_and_nan_out_of_number_columns() -> None:
    from lightning_split.manifold.tables import ReportTable

    table = ReportTable(["name", "value"], [["a", 1.5], ["b", "too few points"], ["c", float("nan")]])
    assert loggable(table) == ReportTable(
        ["name", "value", "notes"], [["a", 1.5, ""], ["b", None, "value: too few points"], ["c", None, ""]]
    )


# ----------------------------------------------------------------------------- the CLI
def test_the_documented_config_snippet_parses_with_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The YAML of docs/manifold.md ("Logging the analysis to W&B during `test`") on top of configs/demo.yaml:
    the CLI builds the callback's settings and keeps the checkpoint callback."""
    page = (ROOT / "docs" / "manifold.md").read_text()
    section = page.split("## Logging the analysis to W&B during `test`", 1)[1]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert snippet is not None
    config = yaml.safe_load(snippet.group(1))
    config["base"] = str(ROOT / "configs" / "demo.yaml")
    (tmp_path / "manifold.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(tmp_path / "manifold.yaml"), "--print_config"])
    assert done.value.code == 0
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    assert [c["class_path"].rsplit(".", 1)[1] for c in callbacks] == ["ModelCheckpoint", "ManifoldAnalysisCallback"]
    assert callbacks[1]["init_args"]["reference_pairs"] == 48
