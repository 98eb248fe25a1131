"""The backbone's own unsteered replies to AxBench instructions, generated once and cached on disk.

AxBench ships no matched negative for a concept-laden ``output``; the paper pairs each one with the steered
model's own answer to the same instruction, generated without the concept. :func:`unsteered_replies` makes
those answers in batches (greedy, so the same inputs give the same replies) through the same generation path
as steered text (:func:`~lightning_split.generation.generate_steered` with no control), and keeps them in a
JSON file whose name is a hash of everything the replies depend on:

- the backbone's identity (:func:`backbone_identity`: class, dtype, quantization, and where its weights came
  from: a local folder with the modification times of its files, a hub id with its commit, or a hash of the
  weights of a model built in memory);
- the generation settings (:class:`NegativeSettings`, batch size included: padding can change the last bits);
- the exact prompt token ids (chat template, system prompt and tokenizer included).

A cache file that does not match is never read, so a change of any of these generates the replies again.
Files are written to a temporary name and moved into place, so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import write_text_atomic

CACHE_FORMAT = 1
"""Bumped when the cache file's layout or the way replies are made changes; part of the key."""

NEGATIVES_DIRNAME = "axbench-negatives"


@dataclass(frozen=True)
class NegativeSettings:
    """How the unsteered replies are generated (greedy decoding, so no seed is needed).

    Attributes:
        max_new_tokens: most tokens per reply (AxBench generates up to 128).
        batch_size: prompts decoded together (left-padded).
    """

    max_new_tokens: int = 128
    batch_size: int = 24

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"NegativeSettings.{name} must be >= 1, got {getattr(self, name)}")


def negatives_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where reply files live: ``<cache root>/axbench-negatives`` (the converted-model cache root, see
    :func:`~lightning_split.backbone.cache_root`: ``cache_dir`` > ``$LIGHTNING_SPLIT_CACHE`` > home cache)."""
    from lightning_split.backbone import cache_root

    return cache_root(cache_dir) / NEGATIVES_DIRNAME


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _folder_stamp(folder: Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of the files a model loads from a folder (weights, config, tokenizer)."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())


def backbone_identity(model: nn.Module) -> dict[str, Any]:
    """What identifies a backbone's replies: class, dtype, quantization and the source of its weights.

    A model loaded from a local folder (a converted GGUF cache's folder name already holds the GGUF's hash) is
    identified by the folder and its files' sizes and modification times; one from the hub by its id and commit;
    any other (built in memory) by a hash of its weights.

    Args:
        model: the causal LM.

    Returns:
        A JSON-able description.
    """
    config = getattr(model, "config", None)
    source = str(getattr(config, "_name_or_path", "") or "")
    first = next(model.parameters())
    quantization = getattr(config, "quantization_config", None)
    identity: dict[str, Any] = {
        "class": type(model).__name__,
        "dtype": str(first.dtype),
        "quantization": quantization.to_dict() if hasattr(quantization, "to_dict") else quantization,
    }
    folder = Path(source).expanduser()
    if source and folder.is_dir():
        identity["folder"] = str(folder.resolve())
        identity["files"] = _folder_stamp(folder)
    elif source and getattr(config, "_commit_hash", None):
        identity["hub"] = {"id": source, "commit": config._commit_hash}
    else:
        identity["weights_sha256"] = _weights_digest(model)
    return identity


def cache_key(identity: dict[str, Any], settings: NegativeSettings, prompts: Sequence[Sequence[int]]) -> str:
    """The hash naming a reply file: backbone identity, settings and the exact prompt token ids."""
    material = {
        "format": CACHE_FORMAT,
        "backbone": identity,
        "settings": asdict(settings),
        "prompts": [list(map(int, p)) for p in prompts],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read_cached(path: Path, prompts: Sequence[Sequence[int]]) -> list[str] | None:
    """The replies stored at ``path`` if it is a whole file for exactly these prompts, else None."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    replies = stored.get("replies") if isinstance(stored, dict) else None
    same = isinstance(replies, list) and stored.get("prompts") == [list(map(int, p)) for p in prompts]
    return replies if same and all(isinstance(r, str) for r in replies) else None


@dataclass
class ReplyCache:
    """Unsteered replies of one backbone, cached per group of prompts (one AxBench concept).

    Args:
        model: the causal LM (frozen, eval mode).
        tokenizer: its tokenizer.
        settings: the generation settings.
        cache_dir: the cache root (see :func:`negatives_cache_dir`).

    Attributes:
        generated: replies generated by this object so far (cache misses, counted per prompt).
        reused: replies read from the cache so far.
    """

    model: nn.Module
    tokenizer: Any
    settings: NegativeSettings = NegativeSettings()
    cache_dir: str | os.PathLike[str] | None = None
    generated: int = 0
    reused: int = 0

    def __post_init__(self) -> None:
        self.identity = backbone_identity(self.model)

    def describe(self) -> dict[str, Any]:
        """What made the replies, for recording with results: backbone identity, settings, counts, cache folder."""
        return {
            "backbone": self.identity,
            "settings": asdict(self.settings),
            "generated": self.generated,
            "reused": self.reused,
            "cache_dir": str(negatives_cache_dir(self.cache_dir)),
        }

    def path(self, prompts: Sequence[Sequence[int]]) -> Path:
        """The cache file for ``prompts``."""
        return negatives_cache_dir(self.cache_dir) / f"{cache_key(self.identity, self.settings, prompts)}.json"

    def cached(self, prompts: Sequence[Sequence[int]]) -> list[str] | None:
        """The stored replies to ``prompts`` (None when they must be generated)."""
        return _read_cached(self.path(prompts), prompts)

    def replies(self, prompts: Sequence[Sequence[int]], progress: Any = None) -> list[str]:
        """The backbone's unsteered greedy reply to each prompt, from the cache or generated (then stored).

        Args:
            prompts: token ids of each prompt, chat-templated as in training.
            progress: called with the number of replies generated after each batch (e.g.
                :meth:`~lightning_split.progress.ProgressLog.advance`), or None.

        Returns:
            The replies, stripped, in prompt order.
        """
        from lightning_split.generation import generate_steered
        from lightning_split.layout import discover_layout

        found = self.cached(prompts)
        if found is not None:
            self.reused += len(found)
            return found
        layout = discover_layout(self.model)
        out: list[str] = []
        size = self.settings.batch_size
        for start in range(0, len(prompts), size):
            batch = prompts[start : start + size]
            texts = generate_steered(
                self.model,
                self.tokenizer,
                layout,
                [],
                batch,
                torch.zeros(len(batch)),
                "all",
                max_new_tokens=self.settings.max_new_tokens,
            )
            out += [t.strip() for t in texts]
            self.generated += len(batch)
            if progress is not None:
                progress(len(batch))
        content = {
            "backbone": self.identity,
            "settings": asdict(self.settings),
            "prompts": [list(map(int, p)) for p in prompts],
            "replies": out,
        }
        write_text_atomic(self.path(prompts), json.dumps(content))
        return out
