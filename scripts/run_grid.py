"""Runs the paper's comparison grid on SmolLM2-135M and compares the methods at equal utility cost.

Cells: objectives SFT, RePS, SPLIT, DPO × forms vector, LoRA, local weight, ReFT, plus DiffMean (vector), on
Psychopathy and PowerSeeking, each ``lightning-split fit --config <shipped config> --test_after_fit true`` with
the cell's seed and folder (``<out>/<dataset>/<objective>-<form>/seed<seed>/``). The headline cells (vector and
LoRA × SFT, RePS, SPLIT) run with three seeds, the others with the first. The seed is ``seed_everything`` (the
control's initialisation and the order of the training pairs); the data seed is the configs' own, so every cell
is tested on the same pairs.

Resumable: a cell whose ``cell.json`` says it finished, with the same config files, seed and size, and whose test
report and curve exist, is skipped; any other existing cell folder is removed and the cell run again. Progress
lines give the time left from the finished cells' wall times. At the end ``results.md`` holds, per dataset and
form, the comparison of ``lightning-split compare`` (mean ± standard deviation over seeds; each group's
``compare.md`` and ``frontier.png`` lie under ``<out>/compare/``).

``--size`` cuts the cells so that the grid fits a time budget (``full``: the shipped configs as they are);
``--reduced`` is a two-cell grid on the embedded sentiment pairs for CI. ``--dry-run`` lists the cells, the cuts
and an estimate without running anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lightning_split.analysis.compare import CompareError, compare, load_run
from lightning_split.analysis.compare_report import readout_table, write_comparison

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid_tables import Group, paper_layout, split_margins  # noqa: E402 (a script beside this one)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "smollm2"
"""The configs of the grid's model (``configs/<model>/<dataset>/<objective>-<form>.yaml``)."""
CELL_FILE = "cell.json"
LOG_FILE = "run.log"
RESULTS_FILE = "results.md"


def cell_configs(dataset: str, objective: str, form: str, configs: Path = CONFIGS) -> list[Path]:
    """The shipped config files of one cell in the model's config folder ``configs``, in the order they are passed
    as ``--config`` (the one place that knows how the configs are laid out)."""
    return [configs / dataset / f"{objective}-{form}.yaml"]


# ------------------------------------------------------------------------------------------------ the grid
@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    objective: str
    form: str
    seed: int

    @property
    def folder(self) -> Path:
        """The cell's folder relative to the grid's output folder."""
        return Path(self.dataset) / f"{self.objective}-{self.form}" / f"seed{self.seed}"

    @property
    def name(self) -> str:
        """``psychopathy split-vector seed 42``."""
        return f"{self.dataset} {self.objective}-{self.form} seed {self.seed}"


@dataclass(frozen=True)
class Grid:
    """Which cells run: every objective × form (and DiffMean) per dataset, the headline pairs with every seed.

    Attributes:
        datasets: Dataset folders under ``configs/smollm2/``.
        objectives: Trained objectives.
        forms: Control forms.
        seeds: Seeds; headline cells run with all, the others with the first.
        headline: ``(objective, form)`` pairs that run with every seed.
        diffmean: Whether each dataset also gets a DiffMean vector cell.
    """

    datasets: tuple[str, ...] = ("psychopathy", "power-seeking")
    objectives: tuple[str, ...] = ("sft", "reps", "split", "dpo")
    forms: tuple[str, ...] = ("vector", "lora", "local_weight", "reft")
    seeds: tuple[int, ...] = (42, 43, 44)
    headline: frozenset[tuple[str, str]] = frozenset(
        (objective, form) for objective in ("sft", "reps", "split") for form in ("vector", "lora")
    )
    diffmean: bool = True

    def cells(self) -> list[Cell]:
        """Every cell: first each cell's first seed, by dataset, then form, then objective (DiffMean first among
        the vectors); then the headline cells' further seeds in the same order. A grid stopped part way has one
        seed of as many cells as possible (it resumes where it stopped)."""
        cells = []
        for dataset in self.datasets:
            for form in self.forms:
                objectives = list(self.objectives)
                if form == "vector" and self.diffmean:
                    objectives.insert(0, "diffmean")
                for objective in objectives:
                    seeds = self.seeds if (objective, form) in self.headline else self.seeds[:1]
                    cells += [Cell(dataset, objective, form, seed) for seed in seeds]
        return sorted(cells, key=lambda cell: self.seeds.index(cell.seed))


MODELS = {
    "smollm2": Grid(),
    "gemma3-270m": Grid(forms=("vector", "lora")),
}
"""The grid of each model's config folder (``configs/<model>/``): Gemma-3-270M has the vector and LoRA forms (its
PowerSeeking cells cost about twice SmolLM2's: 3.5 to 4.8 min each; its Psychopathy cells 40 to 62 s)."""

REDUCED_GRID = Grid(
    datasets=("sentiment",), objectives=("sft", "split"), forms=("vector",), seeds=(42,), diffmean=False
)
"""``--reduced``: SFT and SPLIT vectors on the embedded sentiment pairs, one seed (a CI test of the runner)."""


# ------------------------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Size:
    """How much of each cell runs; ``None`` keeps the config's value.

    Attributes:
        name: The preset's name.
        train_pairs: ``data.train_size``: training pairs (a seeded sample).
        epochs: ``trainer.max_epochs`` (DiffMean keeps its single pass).
        sweep_pairs: ``tradeoff.max_pairs``: test pairs swept (a seeded subset balanced by answer).
        test_pairs: ``data.test_size``: test pairs evaluated (a seeded sample of the split, balanced by answer).
        multipliers: ``tradeoff.multipliers``: the sweep grid (must hold 0).
        validation: Whether validation (and its trade-off sweeps) runs during fit.
        seconds_per_cell: Measured wall time of one cell at this size, for ``--dry-run`` estimates.
        measured: Where ``seconds_per_cell`` comes from.
        per_dataset: Fields that differ for a dataset (``{"power-seeking": {"train_pairs": 48}}``), where its
            cells cost more; see :meth:`for_dataset`.
    """

    name: str
    train_pairs: int | None = None
    epochs: int | None = None
    sweep_pairs: int | None = None
    test_pairs: int | None = None
    multipliers: tuple[float, ...] | None = None
    validation: bool = True
    seconds_per_cell: float | None = None
    measured: str = ""
    per_dataset: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def for_dataset(self, dataset: str) -> Size:
        """The size of ``dataset``'s cells: this size with the dataset's own fields."""
        return replace(self, **self.per_dataset.get(dataset, {}), per_dataset={})

    def overridden(self, **fields: Any) -> Size:
        """This size with ``fields`` set for every dataset (command-line options win over per-dataset fields).
        The preset's measured time per cell is dropped: it was measured at the preset's own size."""
        if not fields:
            return self
        fields = {"seconds_per_cell": None, "measured": "", **fields}
        per_dataset = {
            dataset: {key: value for key, value in own.items() if key not in fields}
            for dataset, own in self.per_dataset.items()
        }
        return replace(self, **fields, per_dataset=per_dataset)

    def overrides(self, objective: str) -> list[str]:
        """The ``lightning-split fit`` options of this size."""
        args: list[str] = []
        if self.train_pairs is not None:
            args += ["--data.train_size", str(self.train_pairs)]
        if self.epochs is not None and objective != "diffmean":
            args += ["--trainer.max_epochs", str(self.epochs)]
        if self.sweep_pairs is not None:
            args += ["--tradeoff.max_pairs", str(self.sweep_pairs)]
        if self.test_pairs is not None:
            args += ["--data.test_size", str(self.test_pairs)]
        if self.multipliers is not None:
            args += ["--tradeoff.multipliers", json.dumps(list(self.multipliers))]
        if not self.validation:
            args += ["--tradeoff.every_n_val_epochs", "0", "--trainer.limit_val_batches", "0"]
            args += ["--trainer.num_sanity_val_steps", "0"]
        return args

    def cuts(self) -> str:
        """What this size leaves out of the shipped configs, in words (each dataset's own cuts after)."""
        said = self._own_cuts()
        for dataset in self.per_dataset:
            said += f". {dataset}: {self.for_dataset(dataset)._own_cuts()}"
        return said

    def _own_cuts(self) -> str:
        cut = []
        if self.train_pairs is not None:
            cut.append(f"{self.train_pairs} training pairs (configs: the whole split, 500)")
        if self.epochs is not None:
            cut.append(f"{self.epochs} epoch(s) (configs: 2)")
        if self.sweep_pairs is not None:
            cut.append(f"sweeps of {self.sweep_pairs} test pairs, balanced by answer (configs: up to 100)")
        if self.test_pairs is not None:
            cut.append(f"{self.test_pairs} test pairs (configs: the whole test split, 100 or 200)")
        if self.multipliers is not None:
            grid = ", ".join(f"{m:g}" for m in self.multipliers)
            cut.append(f"sweeps over m = {grid} (configs: 20 points from -2 to 4; no curve fits with fewer than 18)")
        if not self.validation:
            cut.append("no validation or validation sweeps during fit (configs: every epoch)")
        return "; ".join(cut) if cut else "nothing: the shipped configs as they are"


POSITIVE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
"""The configs' sweep grid without its negative side (the comparison reads m >= 0 only)."""

SIZES: dict[str, Size] = {
    "full": Size(
        "full",
        seconds_per_cell=900.0,
        measured="docs/results.md: 4 min 37 s to 5 min 58 s on a quiet machine with 7-point sweeps of 40 pairs, plus "
        "0.19 s per pair and multiplier for the 20-point sweeps of 100 test and 50 validation pairs now",
    ),
    "two-hours": Size(
        "two-hours",
        train_pairs=96,
        epochs=1,
        test_pairs=32,
        multipliers=POSITIVE_GRID,
        validation=False,
        seconds_per_cell=84.0,
        measured="the mean of the 6 Psychopathy vector and LoRA x SFT/RePS/SPLIT cells of seed 44: 68 to 117 s "
        "(2026-11-30, a quiet machine but for short test runs during the first two)",
        per_dataset={
            # PowerSeeking answers are sentences, not one token: half the training pairs
            "power-seeking": {
                "train_pairs": 48,
                "seconds_per_cell": 126.0,
                "measured": "the mean of the 6 PowerSeeking vector and LoRA x SFT/RePS/SPLIT cells of seed 44: 101 to "
                "161 s, quiet machine (ReFT, DPO and RePS local weight cells cost more: 5.6 to 8.4 min under load)",
            },
        },
    ),
}
TINY = Size("tiny", train_pairs=8, epochs=1, test_pairs=6, multipliers=(0.0, 0.5, 1.0, 2.0), validation=False)
"""The ``--reduced`` size: a few pairs, one epoch, four multipliers, no validation."""


# ------------------------------------------------------------------------------------------------ one cell
@dataclass
class CellRecord:
    """What ``cell.json`` records about a cell."""

    cell: dict
    fingerprint: str
    command: list[str]
    status: str = "running"
    seconds: float | None = None
    cpu_seconds: float | None = None
    returncode: int | None = None

    @classmethod
    def read(cls, folder: Path) -> CellRecord | None:
        """The record in ``folder``, or ``None`` when there is none or it cannot be read."""
        try:
            return cls(**json.loads((folder / CELL_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, folder: Path) -> None:
        """Writes the record into ``folder``."""
        (folder / CELL_FILE).write_text(json.dumps(asdict(self), indent=2))


def config_texts(configs: Sequence[Path]) -> list[str]:
    """The text of each config file, each preceded by the files its ``base:`` line reads (recursively): a change
    to ``configs/base.yaml`` changes every cell that extends it."""
    texts: list[str] = []
    for path in configs:
        text = path.read_text()
        config = yaml.safe_load(text)
        base = config.get("base") if isinstance(config, dict) else None
        if isinstance(base, str):
            texts += config_texts([path.parent / base])
        texts.append(text)
    return texts


def fingerprint(cell: Cell, configs: Sequence[Path], size_args: Sequence[str]) -> str:
    """A hash of what decides a cell's result: its config files' text (with their bases), its seed and its size
    options."""
    payload = {
        "configs": config_texts(configs),
        "cell": asdict(cell),
        "size": list(size_args),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def is_finished(folder: Path, expected: str, seed: int) -> bool:
    """Whether ``folder`` holds a finished run with fingerprint ``expected``: its record says so, its test
    report and curve exist, and its saved config has the cell's seed."""
    record = CellRecord.read(folder)
    if record is None or record.status != "finished" or record.fingerprint != expected:
        return False
    report = folder / "tradeoff" / "test"
    if not ((report / "report.md").is_file() and (report / "curve.json").is_file()):
        return False
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and config.get("seed_everything") == seed


def fit_command(cell: Cell, folder: Path, configs: Sequence[Path], size_args: Sequence[str]) -> list[str]:
    """``lightning-split fit`` for one cell: its configs, seed, folder, W&B name and size."""
    model = configs[0].parent.parent.name
    name = f"grid-{model}-{cell.dataset}-{cell.objective}-{cell.form}-s{cell.seed}"
    return [
        sys.executable,
        "-m",
        "lightning_split.cli",
        "fit",
        *(arg for path in configs for arg in ("--config", str(path))),
        "--seed_everything",
        str(cell.seed),
        "--trainer.default_root_dir",
        str(folder),
        "--trainer.logger.init_args.save_dir",
        str(folder),
        "--trainer.logger.init_args.name",
        name,
        "--trainer.callbacks.init_args.dirpath",
        str(folder / "checkpoints"),
        "--test_after_fit",
        "true",
        *size_args,
    ]


Runner = Callable[[list[str], Path], int]
"""Runs a command with its output going to a log file; returns its exit status."""


def subprocess_runner(command: list[str], log: Path) -> int:
    """Runs ``command`` in the repository root (W&B offline unless set), output to ``log``."""
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **os.environ}
    with log.open("w") as handle:
        return subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode


def prepare_folder(folder: Path) -> None:
    """Empties a cell folder for a clean run; refuses a folder that is not a grid cell's."""
    if folder.exists():
        if any(folder.iterdir()) and not (folder / CELL_FILE).is_file():
            raise SystemExit(f"run_grid: {folder} exists and is not a grid cell (no {CELL_FILE}): move it away")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------------ the loop
@dataclass
class Progress:
    """Wall times of finished cells, for the time left."""

    seconds: dict[Cell, float] = field(default_factory=dict)

    def left(self, remaining: Sequence[Cell]) -> float | None:
        """Seconds left for ``remaining``: each cell at the mean of the finished cells most like it (same dataset,
        objective and form; else same dataset and form; else same dataset and objective), else of all finished
        cells; ``None`` before any cell finished."""
        if not self.seconds:
            return None
        overall = sum(self.seconds.values()) / len(self.seconds)
        total = 0.0
        for cell in remaining:
            total += next((mean for key in _LIKENESS if (mean := self._mean(cell, key)) is not None), overall)
        return total

    def _mean(self, cell: Cell, key: Callable[[Cell], tuple[str, ...]]) -> float | None:
        alike = [s for c, s in self.seconds.items() if key(c) == key(cell)]
        return sum(alike) / len(alike) if alike else None


_LIKENESS: tuple[Callable[[Cell], tuple[str, ...]], ...] = (
    lambda c: (c.dataset, c.objective, c.form),
    lambda c: (c.dataset, c.form),
    lambda c: (c.dataset, c.objective),
)
"""How :class:`Progress` finds finished cells like an unfinished one, most alike first."""


def dry_run_estimate(cells: Sequence[Cell], size: Size, out: Path, configs: Path = CONFIGS) -> str:
    """The time the cells not finished in ``out`` at this size will take: from the wall times of the cells
    finished there at this size (as :class:`Progress` reckons), else from the size's measured time per cell."""
    finished = finished_cells(cells, size, out, configs)
    left = [cell for cell in cells if cell not in finished]
    progress = Progress()
    for cell in finished:
        record = CellRecord.read(out / cell.folder)
        if record is not None and record.seconds is not None:
            progress.seconds[cell] = record.seconds
    if progress.seconds:
        return (
            f"estimate: {clock(progress.left(left))} for the {len(left)} cells not finished in {out} at this size, "
            f"from the wall times of its {len(progress.seconds)} cells finished at this size (each at the mean of "
            "the finished cells most like it; they ran under whatever load the machine had)"
        )
    per_cell = [size.for_dataset(cell.dataset).seconds_per_cell for cell in left]
    estimate = None if None in per_cell else sum(per_cell)  # type: ignore[arg-type]
    said = "; ".join(
        f"{dataset}: {own.seconds_per_cell} s per cell ({own.measured or 'not measured'})"
        for dataset, own in {cell.dataset: size.for_dataset(cell.dataset) for cell in left}.items()
    )
    return f"estimate: {clock(estimate)} for {len(left)} cells; {said}"


def clock(seconds: float | None) -> str:
    """``1:02:03`` (``?`` for ``None``)."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def run_grid(
    cells: Sequence[Cell],
    size: Size,
    out: Path,
    runner: Runner = subprocess_runner,
    configs: Path = CONFIGS,
    say: Callable[[str], None] = print,
) -> dict[Cell, str]:
    """Runs the unfinished ``cells`` one after another; returns each cell's status (``skipped``: finished
    before, ``finished``, ``failed``)."""
    progress = Progress()
    plan: list[tuple[Cell, list[Path], list[str], str]] = []
    for cell in cells:
        files = cell_configs(cell.dataset, cell.objective, cell.form, configs)
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise SystemExit(f"run_grid: {cell.name}: no config {', '.join(missing)} (see cell_configs)")
        size_args = size.for_dataset(cell.dataset).overrides(cell.objective)
        plan.append((cell, files, size_args, fingerprint(cell, files, size_args)))
    status: dict[Cell, str] = {}
    for cell, _, _, expected in plan:
        if is_finished(out / cell.folder, expected, cell.seed):
            status[cell] = "skipped"
            record = CellRecord.read(out / cell.folder)
            if record is not None and record.seconds is not None:
                progress.seconds[cell] = record.seconds
    todo = [entry for entry in plan if entry[0] not in status]
    say(
        f"run_grid: {len(plan)} cells, {len(status)} finished before, {len(todo)} to run; "
        f"size {size.name}: {size.cuts()}"
    )
    for k, (cell, files, size_args, expected) in enumerate(todo, 1):
        folder = (out / cell.folder).resolve()
        prepare_folder(folder)
        command = fit_command(cell, folder, files, size_args)
        record = CellRecord(asdict(cell), expected, command)
        record.write(folder)
        say(f"[{k}/{len(todo)}] {cell.name}: running (log {folder / LOG_FILE})")
        start, cpu = time.monotonic(), _child_cpu()
        returncode = runner(command, folder / LOG_FILE)
        record.seconds, record.cpu_seconds = time.monotonic() - start, _child_cpu() - cpu
        record.returncode = returncode
        record.status = "finished" if returncode == 0 and is_report_written(folder) else "failed"
        record.write(folder)
        status[cell] = record.status
        if record.status == "finished":
            progress.seconds[cell] = record.seconds
        left = progress.left([entry[0] for entry in todo[k:]])
        say(
            f"[{k}/{len(todo)}] {cell.name}: {record.status} in {clock(record.seconds)} "
            f"(CPU {clock(record.cpu_seconds)}); {len(todo) - k} left, about {clock(left)} to go"
        )
    return status


def finished_cells(cells: Sequence[Cell], size: Size, out: Path, configs: Path = CONFIGS) -> dict[Cell, str]:
    """The cells of ``cells`` finished in ``out`` with their current configs and ``size`` (status ``skipped``)."""
    done = {}
    for cell in cells:
        files = cell_configs(cell.dataset, cell.objective, cell.form, configs)
        if all(path.is_file() for path in files):
            size_args = size.for_dataset(cell.dataset).overrides(cell.objective)
            if is_finished(out / cell.folder, fingerprint(cell, files, size_args), cell.seed):
                done[cell] = "skipped"
    return done


def is_report_written(folder: Path) -> bool:
    """Whether a fit left its test report and curve."""
    report = folder / "tradeoff" / "test"
    return (report / "report.md").is_file() and (report / "curve.json").is_file()


# ------------------------------------------------------------------------------------------------ results
def write_results(cells: Sequence[Cell], status: dict[Cell, str], size: Size, out: Path, budget: float = 1.0) -> Path:
    """Compares the finished cells per dataset and form (``<out>/compare/<dataset>/<form>/``) and writes their
    tables into ``<out>/results.md``."""
    lines = [
        "# Grid results",
        "",
        f"Size {size.name}: {size.cuts()}. Utility budget {budget:g} log-odds. "
        f"{sum(status.get(cell) in ('finished', 'skipped') for cell in cells)} of {len(cells)} cells finished.",
    ]
    failed = [cell.name for cell in cells if status.get(cell) == "failed"]
    if failed:
        lines += ["", f"Failed (see their {LOG_FILE}): {', '.join(failed)}."]
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        if status.get(cell) in ("finished", "skipped"):
            groups.setdefault((cell.dataset, cell.form), []).append(cell)
    compared: dict[str, dict[str, Group]] = {}
    details: list[str] = []
    for (dataset, form), members in groups.items():
        details += ["", f"### {dataset} · {form}", ""]
        runs = [load_run(out / cell.folder) for cell in members]
        try:
            comparison = compare(runs, budget)
        except CompareError as err:
            details.append(f"Not compared: {err}")
            continue
        labels = {cell.objective: run.label for cell, run in zip(members, runs)}
        compared.setdefault(dataset, {})[form] = (comparison, labels)
        target = out / "compare" / dataset / form
        paths = write_comparison(comparison, target)
        for at, heading in (("equal_cost", "At equal utility cost"), ("chosen", "At each method's chosen m")):
            details += [f"#### {heading}", "", *readout_table(comparison, at), ""]
        table, png = paths["markdown"].relative_to(out), paths["frontier_png"].relative_to(out)
        details.append(f"Rules, notes and runs: [{table}]({table}). ![frontier]({png})")
    for dataset, forms in compared.items():
        lines += ["", f"## {dataset}: the paper's layout", "", *paper_layout(dataset, forms)]
    if compared:
        lines += ["", "## SPLIT against SFT and RePS at equal utility cost", "", *split_margins(compared)]
    lines += ["", "## Per dataset and form", *details]
    results = out / RESULTS_FILE
    results.write_text("\n".join(lines) + "\n")
    return results


# ------------------------------------------------------------------------------------------------ main
def parser() -> argparse.ArgumentParser:
    """The script's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="smollm2", help="configs/<model>/ (default smollm2)")
    p.add_argument("--out", type=Path, help="grid folder (default runs/grid, runs/grid-<model> for another model)")
    p.add_argument("--size", choices=sorted(SIZES), default="two-hours", help="preset cell size (default two-hours)")
    p.add_argument("--train-pairs", type=int, help="override the size's training pairs")
    p.add_argument("--epochs", type=int, help="override the size's epochs")
    p.add_argument("--sweep-pairs", type=int, help="override the size's swept test pairs (tradeoff.max_pairs)")
    p.add_argument("--test-pairs", type=int, help="override the size's test pairs (data.test_size)")
    p.add_argument("--reduced", action="store_true", help="the two-cell CI grid (sentiment, SFT/SPLIT vector, tiny)")
    p.add_argument("--datasets", nargs="+", help="only these datasets")
    p.add_argument("--objectives", nargs="+", help="only these objectives (diffmean included)")
    p.add_argument("--forms", nargs="+", help="only these forms")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds (of 42 43 44; e.g. --seeds 42: one pass)")
    p.add_argument("--max-utility-drop", type=float, default=1.0, help="utility budget of the comparison")
    p.add_argument("--dry-run", action="store_true", help="list the cells, the cuts and an estimate; run nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the grid (or lists it with ``--dry-run``); exit status 1 when a cell failed."""
    args = parser().parse_args(argv)
    grid, size = (REDUCED_GRID, TINY) if args.reduced else (MODELS[args.model], SIZES[args.size])
    configs = ROOT / "configs" / args.model
    out = args.out or ROOT / "runs" / ("grid" if args.model == "smollm2" else f"grid-{args.model}")
    given = {
        "train_pairs": args.train_pairs,
        "epochs": args.epochs,
        "sweep_pairs": args.sweep_pairs,
        "test_pairs": args.test_pairs,
    }
    size = size.overridden(**{key: value for key, value in given.items() if value is not None})
    cells = [
        cell
        for cell in grid.cells()
        if (args.datasets is None or cell.dataset in args.datasets)
        and (args.objectives is None or cell.objective in args.objectives)
        and (args.forms is None or cell.form in args.forms)
        and (args.seeds is None or cell.seed in args.seeds)
    ]
    if not cells:
        raise SystemExit("run_grid: no cell left after --datasets/--objectives/--forms/--seeds")
    if args.dry_run:
        print(f"{len(cells)} cells of {args.model}; size {size.name}: {size.cuts()}")
        print(dry_run_estimate(cells, size, out, configs))
        for cell in cells:
            files = cell_configs(cell.dataset, cell.objective, cell.form, configs)
            size_args = size.for_dataset(cell.dataset).overrides(cell.objective)
            command = fit_command(cell, out / cell.folder, files, size_args)
            print(f"  {cell.name}: lightning-split {shlex.join(command[3:])}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    status = run_grid(cells, size, out, configs=configs)
    # results.md covers every finished cell of the folder, not only this run's (a run of a few cells used to
    # replace the comparison of the others)
    everything = grid.cells()
    finished = {**finished_cells(everything, size, out, configs), **status}
    results = write_results(everything, finished, size, out, args.max_utility_drop)
    print(f"run_grid: results in {results}")
    return 1 if "failed" in status.values() else 0


if __name__ == "__main__":
    sys.exit(main())
