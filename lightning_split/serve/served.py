"""The served backbone and its named controls: finding saved controls, loading them, rendering chat prompts.

One backbone is loaded once; every control is loaded onto it with :func:`~lightning_split.artifacts.load_control`
and keeps the steered positions it was trained with. Prompts are rendered with the tokenizer's chat template
exactly as the framework renders its own (:class:`~lightning_split.data.tokenize.PairTokenizer`): one user turn
gives the same token ids as :meth:`lightning_split.artifacts.SteeredModel.generate`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from torch import nn

from ..artifacts import CONFIG_FILE, CONTROL_DIRNAME, load_control, load_steered, read_metadata, trained_positions
from ..data.tokenize import PairTokenizer
from ..errors import OptionError
from ..generation import stop_token_ids
from ..layout import ModelLayout
from .schemas import ApiError, ChatMessage


def control_folders(spec: str) -> dict[str, Path]:
    """The saved controls named by one ``--control`` value, by name.

    ``spec`` is ``NAME=PATH`` or ``PATH``. ``PATH`` is a control folder (holding ``control.json``), a run folder
    (holding ``control/``) or a folder of runs (``*/control/``, e.g. ``lightning_logs``). Without ``NAME=``, a
    control is named after its run folder (or its own folder when that is not called ``control``).

    Raises:
        OptionError: ``PATH`` holds no saved control, or ``NAME=`` names a folder of several runs.
    """
    name, sep, path_text = spec.rpartition("=")
    if sep and not name:
        raise OptionError(f"--control {spec!r}: the name before '=' is empty; write NAME=PATH or PATH")
    path = Path(path_text).expanduser()
    if (path / CONFIG_FILE).is_file():
        found = {path.parent.name if path.name == CONTROL_DIRNAME else path.name: path}
    elif (path / CONTROL_DIRNAME / CONFIG_FILE).is_file():
        found = {path.name: path / CONTROL_DIRNAME}
    else:
        found = {run.parent.parent.name: run.parent for run in sorted(path.glob(f"*/{CONTROL_DIRNAME}/{CONFIG_FILE}"))}
    if not found:
        raise OptionError(
            f"--control {spec!r}: {path} holds no saved control (no {CONFIG_FILE}, {CONTROL_DIRNAME}/{CONFIG_FILE} "
            f"or */{CONTROL_DIRNAME}/{CONFIG_FILE}); pass a folder written by lightning-split fit"
        )
    if name and len(found) > 1:
        raise OptionError(
            f"--control {spec!r}: {path} holds {len(found)} runs ({', '.join(found)}); "
            "drop 'NAME=' to serve each under its run's name, or point at one run"
        )
    return {name: next(iter(found.values()))} if name else found


def named_controls(specs: list[str]) -> dict[str, Path]:
    """Every ``--control`` value's controls, by name, in the order given.

    Raises:
        OptionError: no control, a name given twice, or a path without a control.
    """
    if not specs:
        raise OptionError("no control to serve: pass --control NAME=PATH (a control, run or folder of runs)")
    named: dict[str, Path] = {}
    for spec in specs:
        for name, path in control_folders(spec).items():
            if name in named:
                raise OptionError(
                    f"--control: two controls are named {name!r} ({named[name]} and {path}); name them with NAME=PATH"
                )
            named[name] = path
    return named


@dataclass(frozen=True)
class ServedControl:
    """One loaded control: its name in requests, its folder, its modules and its saved description."""

    name: str
    path: Path
    modules: nn.ModuleList
    metadata: dict[str, Any]

    def card(self, backbone: str, created: int) -> dict[str, Any]:
        """The control's entry in ``GET /v1/models``."""
        layers = [iv.get("layer") for iv in self.metadata.get("interventions", [])]
        return {
            "id": self.name, "object": "model", "created": created, "owned_by": "lightning-split", "parent": backbone,
            "control": {"path": str(self.path), "form": self.metadata.get("form"), "layers": layers,
                        "positions": trained_positions(self.metadata), "objective": self.metadata.get("objective"),
                        "trained_multipliers": self.metadata.get("multipliers")},
        }  # fmt: skip


@dataclass
class ServedModel:
    """The backbone every request runs on, with the controls a request can choose by name.

    The tokenizer is used by the request handlers (prompts) and the decoding thread (replies); a lock keeps
    them apart (a fast tokenizer is not safe to share between threads).
    """

    name: str
    model: nn.Module
    tokenizer: Any
    layout: ModelLayout
    controls: dict[str, ServedControl]

    def __post_init__(self) -> None:
        self.encoder = PairTokenizer(self.tokenizer)
        self.stop_ids = stop_token_ids(self.tokenizer, self.model)
        self.context = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        self._tokenizer_lock = threading.Lock()

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens``, special tokens removed (as :func:`~lightning_split.generation.generate_steered`)."""
        with self._tokenizer_lock:
            return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        """Token ids of the chat ``messages`` followed by the assistant's generation prompt.

        With a chat template, the messages are rendered as the framework renders a prompt (one user turn gives
        :meth:`PairTokenizer.prompt_ids`); without one, only a single user message is accepted.

        Raises:
            ApiError: (400) the last message is not the user's, or the template refuses the conversation.
        """
        if messages[-1].role != "user":
            raise ApiError(400, "the last message must be the user's turn (continuing an assistant reply is not "
                           f"supported); got role {messages[-1].role!r}", param="messages")  # fmt: skip
        if not self.encoder.chat and len(messages) != 1:
            raise ApiError(400, f"{self.name} has no chat template: send exactly one user message "
                           f"(got {len(messages)} messages)", param="messages")  # fmt: skip
        turns = [{"role": m.template_role(), "content": m.text()} for m in messages]
        with self._tokenizer_lock:
            if not self.encoder.chat:
                return self.encoder.prompt_ids(messages[0].text())
            try:
                text = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
            except TemplateError as err:
                raise ApiError(400, f"the chat template of {self.name} refuses these messages: {err}",
                               "messages") from err  # fmt: skip
            return self.encoder.encode(text)


def _agreed(values: dict[str, Any], what: str, remedy: str) -> None:
    """Raises :class:`OptionError` unless every control recorded the same ``what``."""
    if len({repr(v) for v in values.values()}) > 1:
        listed = ", ".join(f"{name}: {value!r}" for name, value in values.items())
        raise OptionError(f"--control: the controls were trained with different {what} ({listed}); {remedy}")


def load_served(
    controls: dict[str, Path], backbone: str | None = None, name: str | None = None, **backbone_options: Any
) -> ServedModel:
    """Loads the backbone once and every control onto it.

    Args:
        controls: control folders by name (see :func:`named_controls`).
        backbone: the backbone to load instead of the one the controls were trained on.
        name: the backbone's id in requests and ``/v1/models`` (default: the backbone's name or folder name).
        **backbone_options: passed to :func:`lightning_split.backbone.load_backbone` (dtype, quantization,
            device_map…).

    Raises:
        OptionError: the controls name different backbones (without ``backbone``) or layouts, a control does not
            fit the backbone, or a control's name equals the backbone's.
        ControlFileError: a control folder is damaged (checked before the backbone loads).
    """
    metadata = {n: read_metadata(path) for n, path in controls.items()}
    if backbone is None:
        _agreed({n: m["backbone"] for n, m in metadata.items()}, "backbones", "serve them separately, or pass "
                "--backbone to load one backbone for all")  # fmt: skip
    _agreed({n: m.get("layout_override") for n, m in metadata.items()}, "layout overrides", "serve them separately")
    first, *others = controls
    steered = load_steered(controls[first], backbone, **backbone_options)
    served = {first: ServedControl(first, controls[first], steered.control, steered.metadata)}
    for other in others:
        try:
            modules, saved = load_control(controls[other], steered.layout)
        except ValueError as err:
            raise OptionError(f"--control {other}={controls[other]}: {err}") from err
        served[other] = ServedControl(other, controls[other], modules, saved)
    backbone_name = name or Path(str(backbone or metadata[first]["backbone"])).name
    if backbone_name in served:
        raise OptionError(f"--control: {backbone_name!r} is the backbone's name; give the control another name")
    return ServedModel(backbone_name, steered.model, steered.tokenizer, steered.layout, served)
