"""Taking a trained control out of the framework, into the formats other runtimes read (SPEC §9).

- vector form and DiffMean → a GGUF control-vector file (:mod:`.gguf_vector`: llama.cpp, EasySteer, repeng);
- LoRA → a peft adapter with ``m`` folded into ``lora_alpha`` (:mod:`.peft_lora`: peft, vLLM);
- local weight → a merged Hugging Face checkpoint at ``m`` (:mod:`.merged`), or a rank-``r`` peft LoRA by SVD;
- ReFT and full block have no runtime format (:data:`.run.NOT_EXPORTABLE` says why).

:func:`export_control` (``lightning-split export``) chooses the format, checks the options and writes the output.
"""

from __future__ import annotations

from .run import FORMATS, FORMATS_BY_FORM, NOT_EXPORTABLE, ExportResult, choose_format, export_control

__all__ = ["FORMATS", "FORMATS_BY_FORM", "NOT_EXPORTABLE", "ExportResult", "choose_format", "export_control"]
