"""The evaluation folder's generations: appended to a JSONL file as they are made, keyed by prompt id x multiplier
under one set of generation settings, so a killed evaluation resumes without generating anything again.

``settings.json`` holds the settings that decide a reply (the control's hash, backbone, positions, token limit,
sampling, seed); each line of ``generations.jsonl`` carries their hash. Opening a folder whose settings differ is
refused with the differing keys named: replies made under other settings are never mixed in. A last line cut short
by a kill is dropped (and rewritten on the next append); any other damaged line is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..files import write_text_atomic

SETTINGS_FILE = "settings.json"
GENERATIONS_FILE = "generations.jsonl"


class EvaluationFolderError(OptionError):
    """The output folder cannot take this evaluation (other settings, another tool's files, a damaged file)."""


def settings_hash(settings: dict[str, Any]) -> str:
    """sha256 of the settings as canonical JSON (first 16 hex digits)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Generation:
    """One steered reply.

    Attributes:
        prompt_id: the :class:`~lightning_split.evaluation.prompts.EvalPrompt` id.
        m: the multiplier.
        prompt: the prompt text (checked against the current prompt of that id on resume).
        text: the reply (continuation only).
    """

    prompt_id: str
    m: float
    prompt: str
    text: str


class GenerationStore:
    """Generations of one evaluation folder (see the module docstring).

    Args:
        folder: the evaluation's output folder (created if missing).
        settings: the generation settings (JSON-serialisable).

    Raises:
        EvaluationFolderError: the folder holds other settings, files of something else, or a damaged line.
    """

    def __init__(self, folder: str | Path, settings: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # as read back from settings.json (lists, not tuples)
        self.key = settings_hash(self.settings)
        self.path = self.folder / GENERATIONS_FILE
        self._check_folder()
        self.rows: dict[tuple[str, float], Generation] = {}
        self._valid_bytes = 0
        self._load()

    def _check_folder(self) -> None:
        settings_path = self.folder / SETTINGS_FILE
        if settings_path.is_file():
            recorded = json.loads(settings_path.read_text())
            if recorded != self.settings:
                keys = sorted(k for k in {*recorded, *self.settings} if recorded.get(k) != self.settings.get(k))
                changes = "; ".join(f"{k}: {recorded.get(k)!r} there, {self.settings.get(k)!r} now" for k in keys)
                raise EvaluationFolderError(
                    f"{self.folder} holds an evaluation made with other generation settings ({changes}); "
                    "resume it with the same settings or choose another --out"
                )
            return
        if self.folder.exists() and any(self.folder.iterdir()):
            raise EvaluationFolderError(
                f"{self.folder} is not empty and holds no {SETTINGS_FILE}: it is not an evaluation folder; "
                "choose a new or empty --out (an evaluation never writes among other files)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(settings_path, json.dumps(self.settings, indent=2, sort_keys=True))

    def _load(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        offset = 0
        for number, line in enumerate(lines, start=1):
            last = number == len(lines)
            if last and not line:
                break
            try:
                row = json.loads(line)
                generation = Generation(row["prompt_id"], float(row["m"]), row["prompt"], row["text"])
                key = row["settings"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
                if last:  # a line cut short by a kill: dropped, and overwritten by the next append
                    break
                raise EvaluationFolderError(
                    f"{self.path}, line {number}: not a generation record; delete the line (it will be generated "
                    "again) or choose another --out"
                ) from None
            if key != self.key:
                raise EvaluationFolderError(
                    f"{self.path}, line {number}: made under settings {key}, not {self.key} ({SETTINGS_FILE}); "
                    "choose another --out"
                )
            self.rows[(generation.prompt_id, generation.m)] = generation
            offset += len(line) + 1
        self._valid_bytes = offset

    def __contains__(self, key: tuple[str, float]) -> bool:
        return (key[0], float(key[1])) in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, prompt_id: str, m: float) -> Generation:
        """The stored reply of ``prompt_id`` at ``m`` (``KeyError`` if there is none)."""
        return self.rows[(prompt_id, float(m))]

    def check_prompts(self, prompts: dict[str, str]) -> None:
        """Refuses stored replies whose prompt id now names another text (the data changed under the folder).

        Raises:
            EvaluationFolderError: naming the first such id.
        """
        for (pid, _), row in self.rows.items():
            if pid in prompts and prompts[pid] != row.prompt:
                raise EvaluationFolderError(
                    f"{self.path}: prompt {pid} was {row.prompt!r:.80} and is now {prompts[pid]!r:.80}; the data "
                    "changed since this folder was made: choose another --out"
                )

    def append(self, generations: Iterable[Generation]) -> None:
        """Appends replies (flushed and synced, so a kill after this call keeps them)."""
        new = list(generations)
        with open(self.path, "r+b" if self.path.exists() else "wb") as fh:
            fh.seek(self._valid_bytes)
            fh.truncate()
            for g in new:
                record = {"prompt_id": g.prompt_id, "m": g.m, "prompt": g.prompt, "text": g.text, "settings": self.key}
                fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
            self._valid_bytes = fh.tell()
        self.rows.update({(g.prompt_id, float(g.m)): g for g in new})
