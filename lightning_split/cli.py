"""``lightning-split fit|validate|test|predict``: the LightningCLI over the method family and the pair data.

Any :class:`~lightning_split.models.SteeringModule` subclass is chosen by ``model.class_path`` (for example
``lightning_split.SplitSteering``); the data module is :class:`~lightning_split.data.PolarityDataModule`.
``--test_after_fit true`` runs ``test`` on the fitted control in the same process (the README's main
command uses it to finish with the trade-off report).
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.cli import LightningCLI

from .data.datamodule import PolarityDataModule
from .models import SteeringModule


class SteeringCLI(LightningCLI):
    """LightningCLI with the ``test_after_fit`` switch and a pointer to the trade-off report."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="after fit, run test on the test split with the trained control (and its trade-off sweep)",
        )

    def after_fit(self) -> None:
        """Runs ``test`` when ``--test_after_fit`` is set, then prints where the results are."""
        if self.config.fit.get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule)
        _print_outputs(self.trainer)

    def after_test(self) -> None:
        _print_outputs(self.trainer)


def _print_outputs(trainer: Any) -> None:
    if not trainer.is_global_zero:
        return
    for callback in trainer.callbacks:
        report = getattr(callback, "last_report", None)
        if report:
            print("trade-off report:")
            for name, path in report.items():
                print(f"  {name}: {path}")


def main(args: list[str] | None = None) -> None:
    """Console entry point of ``lightning-split``."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    SteeringCLI(
        SteeringModule,
        PolarityDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": True},
        args=args,
    )


if __name__ == "__main__":
    main()
