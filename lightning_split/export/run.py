"""Choosing and running an export: which formats a control's form has, checking the options, writing the output."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import load_steered, read_metadata
from ..errors import OptionError
from .gguf_vector import export_control_vector
from .merged import export_merged
from .peft_lora import export_lora_adapter, export_svd_adapter
from .source import atomic_output, check_multiplier, find_control, positions_warning

FORMATS = ("gguf", "peft", "merged")
"""Output formats: a GGUF control vector, a peft LoRA adapter, a merged Hugging Face checkpoint."""

FORMATS_BY_FORM: dict[str, tuple[str, ...]] = {
    "vector": ("gguf",),
    "lora": ("peft", "merged"),
    "local_weight": ("merged", "peft"),
}
"""The formats each form exports to, its default first."""

NOT_EXPORTABLE: dict[str, str] = {
    "reft": (
        "a ReFT control edits the residual stream by an input-dependent low-rank map, m·Rᵀ(W h + b − R h): it is "
        "neither one constant vector (a GGUF control vector) nor an edit of one weight matrix (a LoRA or merged "
        "checkpoint), and no runtime among llama.cpp, vLLM and peft applies it"
    ),
    "full": (
        "a full-block control interpolates the outputs of two blocks, m·(F'(h) − F(h)), which is no weight edit for "
        "m other than 0 and 1, and no runtime among llama.cpp, vLLM and peft applies it"
    ),
}
"""Why a form has no export, by form."""


@dataclass
class ExportResult:
    """What an export wrote and how to use it.

    Attributes:
        output: the file or folder written.
        format: one of :data:`FORMATS`.
        notes: lines for the user: warnings, approximation errors and the runtime commands that apply it.
    """

    output: Path
    format: str
    notes: list[str] = field(default_factory=list)


def choose_format(form: str, requested: str | None, svd_rank: int | None, model_hint: str | None) -> str:
    """The format to write for ``form`` given the options; refuses a combination that does not apply.

    Raises:
        OptionError: the form has no export, or an option does not apply to it (the message names the option).
    """
    if form in NOT_EXPORTABLE:
        raise OptionError(f"cannot export a {form} control: {NOT_EXPORTABLE[form]}; use it through lightning_split")
    formats = FORMATS_BY_FORM.get(form)
    if formats is None:
        raise OptionError(f"no export is defined for the {form} form (exportable: {sorted(FORMATS_BY_FORM)})")
    chosen = requested or ("peft" if svd_rank is not None and "peft" in formats else formats[0])
    if chosen not in formats:
        raise OptionError(f"--format {chosen} does not apply to a {form} control; it exports to {', '.join(formats)}")
    if svd_rank is not None and not (form == "local_weight" and chosen == "peft"):
        raise OptionError(f"--svd-rank applies only to a local_weight control exported as peft (this is {form})")
    if form == "local_weight" and chosen == "peft" and svd_rank is None:
        raise OptionError("a local_weight control exports to peft as a rank-r LoRA approximation: give --svd-rank R")
    if model_hint is not None and chosen != "gguf":
        raise OptionError(f"--model-hint applies only to --format gguf (this export is {chosen})")
    return chosen


def backbone_model_type(backbone: str) -> str:
    """``model_type`` of ``backbone``'s config (read without its weights; a GGUF through transformers' reader).

    Raises:
        OptionError: the config cannot be read (the message says to pass ``--model-hint``).
    """
    from transformers import AutoConfig

    from ..backbone import REGISTERED_MODELS, resolve_registered_model

    expanded = Path(os.path.expanduser(backbone))
    gguf = resolve_registered_model(backbone) if backbone in REGISTERED_MODELS else None
    if gguf is None and expanded.suffix.lower() == ".gguf":
        gguf = expanded
    try:
        if gguf is not None:
            config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        else:
            config = AutoConfig.from_pretrained(str(expanded) if expanded.is_dir() else backbone)
    except (OSError, ValueError, KeyError) as err:
        raise OptionError(
            f"could not read the model type of the backbone {backbone!r} ({err}); pass --model-hint (e.g. llama)"
        ) from err
    return str(config.model_type)


def _gguf_notes(output: Path, multiplier: float | None) -> list[str]:
    scale = "M" if multiplier is None else "1"
    meaning = (
        "the runtime's scale is the framework's multiplier m"
        if multiplier is None
        else f"m = {multiplier:g} is baked into the vectors: keep the runtime's scale at 1"
    )
    return [
        f"  {meaning}",
        "  llama.cpp (verified, docs/interop.md): "
        f"llama-server -m BACKBONE.gguf --control-vector-scaled {output}:{scale}",
        f"  EasySteer / vLLM (not verified offline): a steering request on {output} with scale {scale}",
        f"  repeng (not verified offline): ControlVector.import_gguf({str(output)!r})",
    ]


def _adapter_notes(output: Path, base: str, multiplier: float, rank: int, bias: bool) -> list[str]:
    rescale = (
        f"; another m' at run time: with peft.helpers.rescale_adapter_scale(model, m' / {multiplier:g})"
        if multiplier != 0
        else ""
    )
    notes = [
        f"  m = {multiplier:g} is folded into lora_alpha: runtimes apply it at scale 1",
        f"  peft (verified): PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}), "
        f"{str(output)!r}){rescale}",
        f"  vLLM (not verified offline): vllm serve {base} --enable-lora --max-lora-rank {rank} or more "
        f"--lora-modules steer={output}  (then request model 'steer')",
        f"  llama.cpp (not verified): python convert_lora_to_gguf.py {output} --base {base} --outfile steer-lora.gguf; "
        "llama-server -m BACKBONE.gguf --lora-scaled steer-lora.gguf:1",
    ]
    if bias:
        notes.append("  the adapter carries Δb as peft's lora_bias (peft >= 0.14); a runtime without it drops Δb")
    return notes


def _merged_notes(output: Path, multiplier: float) -> list[str]:
    return [
        f"  m = {multiplier:g} is merged into the weights; every position is steered",
        f"  transformers (verified): AutoModelForCausalLM.from_pretrained({str(output)!r})",
        f"  vLLM (not verified offline): vllm serve {output};  llama.cpp: python convert_hf_to_gguf.py {output}",
    ]


def export_control(
    source: str | Path,
    output: str | Path,
    format: str | None = None,
    multiplier: float | None = None,
    svd_rank: int | None = None,
    model_hint: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Exports the saved control of ``source`` (a run folder or a control folder) for use outside the framework.

    Every option is checked, and the output's absence (or ``overwrite``), before any model loads; the output is
    written beside its target and renamed into place only when complete.

    Args:
        source: a run folder (its ``control/`` is found) or a saved control folder.
        output: the file (``gguf``) or folder (``peft``, ``merged``) to write.
        format: one of :data:`FORMATS`; ``None`` takes the form's default (:data:`FORMATS_BY_FORM`).
        multiplier: ``m``; ``gguf`` bakes it into the vectors (``None``: the runtime's scale is ``m``), ``peft``
            folds it into ``lora_alpha`` and ``merged`` merges at it (``None``: 1).
        svd_rank: rank of the LoRA approximating a local-weight control (``format="peft"``).
        model_hint: ``controlvector.model_hint`` (``None``: the backbone's ``model_type``).
        overwrite: replace an existing ``output``.

    Raises:
        OptionError: an option does not apply, ``m`` is not finite, the form has no export or ``output`` exists.
        ControlFileError: ``source`` holds no control, several, or a damaged one.
    """
    m = check_multiplier(multiplier)
    control_dir = find_control(source)
    metadata = read_metadata(control_dir)
    chosen = choose_format(metadata["form"], format, svd_rank, model_hint)
    output = Path(output).expanduser()
    notes = [w for w in (positions_warning(metadata),) if w]
    with atomic_output(output, overwrite) as staged:
        if chosen == "gguf":
            hint = model_hint or backbone_model_type(str(metadata["backbone"]))
            export_control_vector(control_dir, staged, hint, m)
            return ExportResult(output, chosen, notes + _gguf_notes(output, m))
        m = 1.0 if m is None else m
        steered = load_steered(control_dir)
        if chosen == "merged":
            export_merged(steered, staged, m)
        elif svd_rank is not None:
            errors = export_svd_adapter(steered, staged, svd_rank, m)
            notes += [
                f"  rank-{svd_rank} SVD of ΔW at block {layer}: relative error {e:.4g}" for layer, e in errors.items()
            ]
        else:
            export_lora_adapter(steered, staged, m)
    if chosen == "merged":
        return ExportResult(output, chosen, notes + _merged_notes(output, m))
    base = str(getattr(steered.model.config, "_name_or_path", "") or metadata["backbone"])
    rank = svd_rank if svd_rank is not None else int(steered.control[0].rank)  # type: ignore[arg-type]
    return ExportResult(output, chosen, notes + _adapter_notes(output, base, m, rank, bias=svd_rank is not None))
