"""What every export shares: finding the saved control, checking the multiplier, writing the output atomically."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..artifacts import (
    CONFIG_FILE,
    CONTROL_DIRNAME,
    ControlFileError,
    check_weights,
    read_metadata,
    trained_positions,
)
from ..errors import OptionError
from ..files import staged_output


def find_control(path: str | Path) -> Path:
    """The saved control folder of ``path``: the folder itself, its ``control/`` or the one ``control/`` below it.

    A run folder (``lightning-split fit``'s output) holds the control in ``control/``, possibly some levels down
    (``lightning_logs/version_0/control``). Both files of the control are checked here, before any model loads.

    Raises:
        ControlFileError: ``path`` does not exist, holds no saved control, several (the message lists them), or a
            damaged one.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ControlFileError(f"{path} does not exist: give a run folder or a saved control folder")
    if (path / CONFIG_FILE).is_file():
        found = [path]
    elif (path / CONTROL_DIRNAME / CONFIG_FILE).is_file():
        found = [path / CONTROL_DIRNAME]
    else:
        found = sorted(p.parent for p in path.rglob(f"{CONTROL_DIRNAME}/{CONFIG_FILE}"))
    if not found:
        raise ControlFileError(
            f"{path} holds no saved control ({CONTROL_DIRNAME}/{CONFIG_FILE}): give the folder of a finished "
            "`lightning-split fit` run or its control folder"
        )
    if len(found) > 1:
        listed = "\n  ".join(str(p) for p in found)
        raise ControlFileError(f"{path} holds {len(found)} saved controls; give one of them:\n  {listed}")
    read_metadata(found[0])
    check_weights(found[0])
    return found[0]


def check_multiplier(value: float | None, option: str = "--multiplier") -> float | None:
    """``value`` as a float, refused when it is not finite (``None`` passes through)."""
    if value is None:
        return None
    m = float(value)
    if not math.isfinite(m):
        raise OptionError(f"{option} is {value!r}; it must be a finite number (the strength m of the control)")
    return m


def positions_warning(metadata: dict[str, Any]) -> str | None:
    """The warning to show when the control was trained on a subset of positions, which runtimes cannot do."""
    positions = trained_positions(metadata)
    if positions == "all":
        return None
    return (
        f"warning: this control was trained steering only the {positions} tokens (positions={positions}); "
        "the exported file is applied at every position, prompt and generated, so its effect there differs "
        "from the framework's (EasySteer can restrict the positions per request)"
    )


@contextmanager
def atomic_output(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside ``target``; when the body succeeds it takes ``target``'s place.

    The body writes a file or a folder at the yielded path. Nothing is left behind when it fails, and an
    existing ``target`` is replaced only with ``overwrite`` (after the new output is complete; see
    :func:`~lightning_split.files.staged_output`).

    Raises:
        OptionError: ``target`` exists and ``overwrite`` is false (checked before the body runs).
    """
    target = Path(target).expanduser()
    if target.exists() and not overwrite:
        raise OptionError(f"{target} exists; pass --overwrite to replace it, or choose another --output")
    with staged_output(target) as staged:
        yield staged
