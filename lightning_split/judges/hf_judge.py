"""A judge run in this process on a Hugging Face causal LM the project can load (:func:`load_backbone`).

Prompts are rendered with the model's chat template and decoded in left-padded batches, greedily by default (then
the judge is :attr:`~lightning_split.judges.base.Judge.deterministic`: batching does not change a reply, and an
unparseable reply is not asked again). With ``temperature > 0`` each batch is sampled under ``seed + attempt``, so
a sampled reply depends on which prompts shared its batch. The model loads on the first call that misses the cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import OptionError
from .base import Judge, JudgeConfigError, JudgeRecord, Messages
from .cache import JudgeCache


def _render(tokenizer: Any, messages: Messages) -> str:
    """The chat-templated prompt; a final assistant message is a reply start the model continues (prefill)."""
    if messages and messages[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(messages, continue_final_message=True, tokenize=False)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class HFJudge(Judge):
    """An in-process judge.

    Args:
        model: a registered short name (``"smollm2-135m-instruct"``), a ``.gguf`` file, a local folder or a hub id
            of an instruct (chat-template) model.
        temperature: 0 for greedy decoding, else the sampling temperature.
        seed: the sampling seed (unused when greedy).
        max_new_tokens: most tokens per reply.
        batch_size: prompts decoded together.
        dtype: the model's dtype (as in :func:`~lightning_split.backbone.load_backbone`).
        device: where the model runs (``"cpu"``, ``"cuda"``).
        model_cache_dir: the converted-model cache of :func:`~lightning_split.backbone.load_backbone`.
        cache: the reply cache (a :class:`JudgeCache` or its path), or ``None``.
        loaded: ``(model, tokenizer)`` already in memory for ``model`` (e.g. the backbone being evaluated), used
            instead of loading it again; ``model`` still names it in the record and the cache key.
    """

    def __init__(
        self,
        model: str,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        dtype: str = "float32",
        device: str = "cpu",
        model_cache_dir: str | None = None,
        cache: JudgeCache | str | Path | None = None,
        loaded: tuple[Any, Any] | None = None,
    ) -> None:
        if not model or temperature < 0 or max_new_tokens < 1 or batch_size < 1:
            raise OptionError(
                f"HFJudge: need a model name, temperature >= 0, max_new_tokens >= 1 and batch_size >= 1, got "
                f"model={model!r}, temperature={temperature}, max_new_tokens={max_new_tokens}, batch_size={batch_size}"
            )
        super().__init__(cache)
        self.model_name, self.temperature, self.seed = model, temperature, seed
        self.max_new_tokens, self.batch_size, self.dtype, self.device = max_new_tokens, batch_size, dtype, device
        self.model_cache_dir = model_cache_dir
        self.deterministic = temperature == 0
        self._loaded = None if loaded is None else self._checked(*loaded)

    def describe(self) -> JudgeRecord:
        """Model name, greedy or sampling settings, dtype; batch size and device as options."""
        sampling = (
            {"temperature": self.temperature}
            if self.deterministic
            else {"temperature": self.temperature, "seed": self.seed}
        )
        return JudgeRecord(
            kind="hf-in-process",
            model=self.model_name,
            endpoint="in-process",
            settings={**sampling, "max_new_tokens": self.max_new_tokens, "dtype": self.dtype},
            options={"batch_size": self.batch_size, "device": self.device},
        )

    @property
    def is_loaded(self) -> bool:
        """Whether the model is in memory (it loads on the first prompt that misses the cache)."""
        return self._loaded is not None

    def _checked(self, model: Any, tokenizer: Any) -> tuple[Any, Any]:
        if not getattr(tokenizer, "chat_template", None):
            raise JudgeConfigError(
                f"judge model {self.model_name!r} has no chat template: an in-process judge needs an instruct "
                "(chat) model such as 'smollm2-135m-instruct'"
            )
        return model.to(self.device), tokenizer

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from ..backbone import load_backbone

            self._loaded = self._checked(
                *load_backbone(self.model_name, dtype=self.dtype, cache_dir=self.model_cache_dir)
            )
        return self._loaded

    def _generate(self, conversations: Sequence[Messages], seed: int) -> list[str]:
        import torch

        from ..data.tokenize import PairTokenizer
        from ..generation import left_pad, seeded, stop_token_ids, until_stop

        model, tokenizer = self._model()
        prompts = [tokenizer(_render(tokenizer, m), add_special_tokens=False).input_ids for m in conversations]
        pad_id = PairTokenizer(tokenizer).pad_id
        ids, attention = left_pad(prompts, pad_id, self.device)
        stops = stop_token_ids(tokenizer, model)
        sampling = (
            {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        )
        with torch.no_grad(), seeded(seed if self.temperature > 0 else None, torch.device(self.device)):
            out = model.generate(
                input_ids=ids,
                attention_mask=attention,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=stops or None,
                **sampling,
            )
        rows = out[:, ids.shape[1] :].tolist()
        return [tokenizer.decode(until_stop(row, stops), skip_special_tokens=True) for row in rows]

    def _send(self, conversations: Sequence[Messages], attempt: int) -> Iterator[tuple[int, str | None]]:
        for start in range(0, len(conversations), self.batch_size):
            batch = conversations[start : start + self.batch_size]
            replies = self._generate(batch, self.seed + attempt)
            self.counts.calls += len(batch)
            yield from enumerate(replies, start)
