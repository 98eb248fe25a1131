"""``lightning-split fit|validate|test|predict``: the LightningCLI over the method family and the pair data.

The other subcommands (``lightning-split export``, …) are modules of :mod:`lightning_split.commands`;
:func:`main` hands them their arguments.

Any :class:`~lightning_split.models.SteeringModule` subclass is chosen by ``model.class_path`` (for example
``lightning_split.SteeringModule``); the data module is :class:`~lightning_split.data.PolarityDataModule`.
On top of LightningCLI:

- ``base``: a config file may name the config it extends (``base: ../../base.yaml``, relative to the file);
  it is read first, as an earlier ``--config`` (:func:`with_bases`), so the file holds only what differs.
- ``run_name``: the run's folders, stated once: ``runs/<run_name>`` becomes ``trainer.default_root_dir``, each
  logger's ``save_dir`` (and its ``name``, with ``-`` for ``/``) and each ``ModelCheckpoint``'s folder
  (``runs/<run_name>/checkpoints``), wherever the config leaves them at their defaults (:func:`apply_run_name`).
  ``--print_config`` shows the folders it gives.
- ``--help`` lists the main options and each section's option names; ``--help full`` every option
  (:mod:`lightning_split.cli_help`).
- ``--test_after_fit`` (or ``--test_after_fit true``) runs ``test`` on the fitted control in the same process
  (the README's main command uses it to finish with the trade-off report).
- ``tradeoff``: the settings of the :class:`~lightning_split.callbacks.TradeoffCurveCallback` every run has
  (``--tradeoff.max_pairs 20``, ``--tradeoff.multipliers '[-1, 0, 1]'``, ``--tradeoff.on_test false``).
- ``--ckpt_path`` is checked against the config before anything is written
  (:mod:`lightning_split.cli_checkpoint`): a checkpoint of another model, form or layer, or an unreadable or
  foreign file, is refused with a message naming it.
- ``validate``, ``test`` and ``predict`` write their config, logs and reports into ``<run>/<stage>-<time>/``
  (``<run>``: ``trainer.default_root_dir`` and each logger's ``save_dir``), never over the fit's; a resumed
  ``fit`` saves its config as ``config-resume-<time>.yaml`` beside the first one.
- Progress: a rich bar in a terminal, otherwise a log line every ``--progress_interval`` seconds
  (:mod:`lightning_split.progress`); the sweep's own progress is on by default when stdout is not a terminal.
- SIGTERM stops the run at the next optimizer step with a ``last.ckpt`` to resume from and exit status 143
  (:class:`~lightning_split.callbacks.StopOnSigterm`).
- The last lines name what the run wrote: config, control, checkpoint, trade-off report, predictions and
  the W&B run folder.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from jsonargparse._actions import _ActionPrintConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

from .artifacts import CONTROL_DIRNAME, WEIGHTS_FILE, ControlFileError
from .backbone import BackboneLoadError
from .callbacks import StopOnSigterm, TradeoffCurveCallback
from .cli_checkpoint import CheckpointError, check_checkpoint, import_class, resolve_checkpoint
from .cli_help import HelpFormatter, SteeringArgumentParser, cli_description
from .commands import command_names, commands
from .contracts import HasOutputs
from .data.datamodule import PolarityDataModule
from .data.pairs import BadRowError, DataFileError
from .errors import OptionError
from .layout import UnsupportedArchitectureError
from .models import SteeringModule
from .progress import DEFAULT_INTERVAL, progress_bar_for

RUNS_DIR = Path("runs")
"""Where a run named by ``run_name`` writes: ``runs/<run_name>``."""

STAMP_ENV = "LIGHTNING_SPLIT_RUN_STAMP"
"""Environment variable holding this command's time stamp, so that DDP ranks started from it use the same
``<stage>-<time>`` folder."""


def run_stamp(taken: Any = None) -> str:
    """This command's ``YYYYmmdd-HHMMSS`` stamp (inherited by DDP ranks through :data:`STAMP_ENV`).

    Args:
        taken: for a new stamp, a predicate on candidate stamps; ``-2``, ``-3``, … is added while it holds.
    """
    stamp = os.environ.get(STAMP_ENV)
    if stamp is None:
        base = stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 2
        while taken is not None and taken(stamp):
            stamp, n = f"{base}-{n}", n + 1
        os.environ[STAMP_ENV] = stamp
    return stamp


def _listed(value: Any) -> list[Any]:
    """A config entry that may be one item, a list of them, or empty, as a list."""
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _callback_classes(trainer_config: Any) -> list[type]:
    return [import_class(str(c.class_path)) for c in _listed(trainer_config.get("callbacks")) if c.get("class_path")]


def base_configs(path: Path, seen: tuple[Path, ...] = ()) -> list[str]:
    """``--config`` arguments for the configs that the config file ``path`` extends through its ``base`` key, the
    furthest first (a base may have its own base).

    Raises:
        OptionError: a base that is not a file, or a cycle of bases.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []  # the parser reports the file itself
    base = data.get("base") if isinstance(data, dict) else None
    if not base:
        return []
    resolved = (path.parent / str(base)).resolve()
    if not resolved.is_file():
        raise OptionError(
            f"{path}: its base {base!r} is not a file ({resolved}); fix the path (it is relative to {path})"
        )
    if resolved in seen or resolved == path.resolve():
        raise OptionError(f"{path}: its bases form a cycle through {resolved}")
    return [*base_configs(resolved, (*seen, path.resolve())), "--config", str(resolved)]


def with_bases(argv: list[str]) -> list[str]:
    """``argv`` with every config file's bases (:func:`base_configs`) given as ``--config`` files before it."""
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg in ("-c", "--config"):
            path = next(rest, None)
            out += [*base_configs(Path(path)), arg, path] if path is not None else [arg]
        elif arg.startswith("--config="):
            out += [*base_configs(Path(arg.partition("=")[2])), arg]
        else:
            out.append(arg)
    return out


def _defaults(class_path: str) -> dict[str, Any]:
    """The default value of each ``__init__`` argument of the class a config's ``class_path`` names."""
    parameters = inspect.signature(import_class(class_path).__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def apply_run_name(config: Any) -> Path | None:
    """Gives the run's folders from ``run_name``, where the config leaves them at their defaults; returns the run
    folder (``None`` without a ``run_name``).

    ``runs/<run_name>`` becomes ``trainer.default_root_dir`` (when unset), each logger's ``save_dir`` and, with
    ``/`` written ``-``, its ``name`` (when at the logger's default), and ``runs/<run_name>/checkpoints`` each
    ``ModelCheckpoint``'s ``dirpath`` (when unset: a fixed folder, so that ``--ckpt_path last`` finds
    ``last.ckpt`` after a restart). A value the config or the command line gives is kept.
    """
    name = config.get("run_name")
    if not name:
        return None
    root = RUNS_DIR / name
    trainer = config.trainer
    if trainer.get("default_root_dir") is None:
        trainer.default_root_dir = str(root)
    for logger in _listed(trainer.get("logger")):
        init = logger.get("init_args")
        if init is None:
            continue
        defaults = _defaults(str(logger.class_path))
        for key, value in (("save_dir", str(root)), ("name", name.replace("/", "-"))):
            if key in init and key in defaults and init[key] == defaults[key]:
                init[key] = value
    for callback in _listed(trainer.get("callbacks")):
        init = callback.get("init_args")
        is_checkpoint = issubclass(import_class(str(callback.class_path)), ModelCheckpoint)
        if is_checkpoint and init is not None and init.get("dirpath") is None:
            init.dirpath = str(root / "checkpoints")
    return root


def redirect_stage_outputs(config: Any, stage: str) -> Path:
    """Points a ``validate``/``test``/``predict`` run's outputs into ``<run>/<stage>-<time>/``; returns it.

    ``trainer.default_root_dir`` (where the config is saved without a logger), every logger's ``save_dir``
    (and a W&B logger's ``dir``) and an explicit ``tradeoff.output_dir`` each get the subfolder, so the
    stage never writes over the fit's ``config.yaml``, metrics or W&B run.
    """
    trainer = config.trainer
    base = Path(trainer.get("default_root_dir") or os.getcwd())
    name = f"{stage}-{run_stamp(lambda s: (base / f'{stage}-{s}').exists())}"
    trainer.default_root_dir = str(base / name)
    for logger in _listed(trainer.get("logger")):
        init = logger.get("init_args")
        if init is None:
            continue
        if "save_dir" in init:
            init.save_dir = str(Path(init.save_dir or base) / name)
        if init.get("dir") is not None:
            init.dir = str(Path(init.dir) / name)
    tradeoff = config.get("tradeoff")
    if tradeoff is not None and tradeoff.get("output_dir"):
        tradeoff.output_dir = str(Path(tradeoff.output_dir) / name)
    return base / name


class SteeringCLI(LightningCLI):
    """LightningCLI with checked checkpoints, a folder per stage, progress, SIGTERM handling and the
    ``test_after_fit`` switch (see the module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:  # noqa: D102
        parser.add_argument(
            "--base",
            type=str | None,
            default=None,
            help="in a config file: the config it extends, read before it (a path relative to the file)",
        )
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="the run's name: the run writes into runs/<run_name> (trainer.default_root_dir, the loggers' "
            "save_dir and name, the checkpoint folder runs/<run_name>/checkpoints) where the config sets none",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            nargs="?",
            const=True,
            default=False,
            help="after fit, run test on the test split with the trained control (and its trade-off sweep)",
        )
        parser.add_argument(
            "--progress_interval",
            type=float,
            default=DEFAULT_INTERVAL,
            help="seconds between two progress lines when stdout is not a terminal",
        )
        parser.add_lightning_class_args(TradeoffCurveCallback, "tradeoff")
        # in a terminal the sweep's rich bar would garble Lightning's live bar; as log lines it is on by default
        parser.set_defaults({"tradeoff.progress": not sys.stdout.isatty()})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses, gives the run's folders from ``run_name`` (before ``--print_config`` prints them), then checks
        ``--ckpt_path`` against the config (LightningCLI merges the checkpoint's hyper-parameters over the config
        right after this; nothing has been written yet)."""
        with _ActionPrintConfig.skip_print_config():
            if isinstance(args, dict):
                super().parse_arguments(parser, args)
            else:
                self.config = parser.parse_args(with_bases(sys.argv[1:] if args is None else list(args)))
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config  # no subcommand: SteeringCLI(run=False)
        apply_run_name(config)
        _ActionPrintConfig.print_config_if_requested(parser, self.config)  # exits when --print_config was given
        config.base = None  # read already: the run's saved config.yaml is whole
        if subcommand is None:
            return
        if TradeoffCurveCallback in _callback_classes(config.trainer):
            sys.exit(
                f"lightning-split {subcommand}: error: TradeoffCurveCallback is listed in trainer.callbacks, but "
                "every run has one: give its settings under `tradeoff:` in the config (or --tradeoff.max_pairs …)"
            )
        if config.get("ckpt_path"):
            self._check_ckpt_path(subcommand, config)

    def _check_ckpt_path(self, subcommand: str, config: Any) -> None:
        try:
            path = resolve_checkpoint(str(config.ckpt_path), config.trainer.as_dict())
            notes = [] if path is None else check_checkpoint(path, config.model.as_dict())
        except CheckpointError as err:
            sys.exit(f"lightning-split {subcommand}: error: {err}")
        if path is not None:
            config.ckpt_path = str(path)
        for note in notes:
            print(f"lightning-split {subcommand}: note: {note}", file=sys.stderr)

    def before_instantiate_classes(self) -> None:
        """Gives a non-fit stage its own folder and adds the progress bar and the SIGTERM handler."""
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        if self.subcommand != "fit":
            redirect_stage_outputs(config, self.subcommand)
        elif config.get("ckpt_path"):
            self.save_config_kwargs["config_filename"] = f"config-resume-{run_stamp()}.yaml"
        callbacks: list[Any] = []
        trainer = config.trainer
        wants_bar = trainer.get("enable_progress_bar") is not False
        if wants_bar and not any(issubclass(c, ProgressBar) for c in _callback_classes(trainer)):
            callbacks.append(progress_bar_for(sys.stdout.isatty(), config.progress_interval))
        # after the bar, so that the bar shows the batch a SIGTERM stop ends on
        self.trainer_defaults["callbacks"] = [*callbacks, StopOnSigterm()]

    def after_fit(self) -> None:
        """Runs ``test`` when ``--test_after_fit`` is set, then prints where the results are."""
        if self.config.fit.get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule)
        self._print_outputs()

    def after_validate(self) -> None:  # noqa: D102
        self._print_outputs()

    def after_test(self) -> None:  # noqa: D102
        self._print_outputs()

    def after_predict(self) -> None:  # noqa: D102
        self._print_outputs()

    def _print_outputs(self) -> None:
        """Prints the run's folder and what it wrote there (rank 0)."""
        trainer = self.trainer
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast: every rank asks
        if not trainer.is_global_zero:
            return
        lines = [f"  run folder: {run_dir}"]
        config_file = run_dir / self.save_config_kwargs.get("config_filename", "config.yaml")
        if config_file.is_file():
            lines.append(f"  config: {config_file}")
        control = run_dir / CONTROL_DIRNAME / WEIGHTS_FILE
        if self.subcommand == "fit" and control.is_file():
            lines.append(f"  saved control: {control}")
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "")
        if self.subcommand == "fit" and checkpoint:
            lines.append(f"  last checkpoint: {checkpoint}")
        for callback in trainer.callbacks:  # any callback that lists its files (lightning_split.contracts.HasOutputs)
            if isinstance(callback, HasOutputs):
                lines += [f"  {name}: {path}" for name, path in callback.outputs().items()]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                wandb_dir = Path(logger.experiment.dir).parent
                offline = getattr(logger.experiment.settings, "mode", "") == "offline"
                hint = f"  (offline; upload with: wandb sync {wandb_dir})" if offline else ""
                lines.append(f"  W&B run: {wandb_dir}{hint}")
        print(f"lightning-split {self.subcommand}: outputs", *lines, sep="\n", flush=True)


USER_ERRORS = (
    OptionError,
    DataFileError,
    BadRowError,
    BackboneLoadError,
    ControlFileError,
    CheckpointError,
    UnsupportedArchitectureError,
)
"""Errors that describe bad input (their message names the option, file or row and what to do): the command
prints the message alone, without a traceback or the parser's dump of the whole config."""


def user_error(err: BaseException) -> BaseException | None:
    """The :data:`USER_ERRORS` instance behind ``err`` (jsonargparse wraps errors raised while it builds a class),
    or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, USER_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def main(args: list[str] | None = None) -> None:
    """Console entry point of ``lightning-split``; bad input exits with status 2 and its message alone."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    inherited_stamp = STAMP_ENV in os.environ
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in command_names():
            commands()[argv[0]].main(argv[1:])
            return
        SteeringCLI(
            SteeringModule,
            PolarityDataModule,
            subclass_mode_model=True,
            save_config_kwargs={"overwrite": True},
            parser_class=SteeringArgumentParser,
            parser_kwargs={
                "prog": "lightning-split",  # also under `python -m lightning_split.cli`
                "default_env": True,
                "description": cli_description(),
                "formatter_class": HelpFormatter,
            },
            args=args,
        )
    except Exception as err:
        found = user_error(err)
        if found is None:
            raise
        print(f"lightning-split: error: {found}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if not inherited_stamp:  # the next command in this process gets its own stamp
            os.environ.pop(STAMP_ENV, None)


if __name__ == "__main__":
    main()
