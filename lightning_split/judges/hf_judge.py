"""A judge run in this process on a Hugging Face causal LM the project can load (:func:`load_backbone`).

Prompts are rendered with the model's chat template and decoded in left-padded batches, greedily by default (then
the judge is :attr:`~lightning_split.judges.base.Judge.deterministic`: batching does not change a reply, and an
unparseable reply is not asked again). With ``temperature > 0`` each batch is sampled under ``seed + attempt``, so
a sampled reply depends on which prompts shared its batch. With ``choices`` nothing is generated: one forward pass
per batch, and the reply is the choice whose first token the model ranks highest next (constrained scoring, for small
judges that do not write a score). The model loads on the first call that misses the cache.
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
        choices: when set, the reply is one of these texts instead of generated text: the choice whose first token
            has the highest logit right after the prompt (greedy, no sampling). Choices are compared by their first
            token only, so choices whose first tokens are the same token are refused (:class:`JudgeConfigError`,
            when the tokenizer loads); ``temperature``, ``seed`` and ``max_new_tokens`` are then unused.
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
        choices: Sequence[str] | None = None,
    ) -> None:
        if (
            not model
            or temperature < 0
            or max_new_tokens < 1
            or batch_size < 1
            or (choices is not None and not choices)
        ):
            raise OptionError(
                f"HFJudge: need a model name, temperature >= 0, max_new_tokens >= 1, batch_size >= 1 and no empty "
                f"choices, got model={model!r}, temperature={temperature}, max_new_tokens={max_new_tokens}, "
                f"batch_size={batch_size}, choices={choices!r}"
            )
        super().__init__(cache)
        self.model_name, self.temperature, self.seed = model, temperature, seed
        self.max_new_tokens, self.batch_size, self.dtype, self.device = max_new_tokens, batch_size, dtype, device
        self.model_cache_dir = model_cache_dir
        self.choices = None if choices is None else tuple(choices)
        self.deterministic = temperature == 0 or self.choices is not None
        self._choice_ids: list[int] = []
        self._loaded = None if loaded is None else self._checked(*loaded)

    def describe(self) -> JudgeRecord:
        """Model name, the choices (constrained) or the greedy or sampling settings, dtype; batch size and device as
        options."""
        if self.choices is not None:
            decoding: dict[str, Any] = {"choices": list(self.choices)}
        elif self.deterministic:
            decoding = {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens}
        else:
            decoding = {"temperature": self.temperature, "seed": self.seed, "max_new_tokens": self.max_new_tokens}
        return JudgeRecord(
            kind="hf-in-process",
            model=self.model_name,
            endpoint="in-process",
            settings={**decoding, "dtype": self.dtype},
            options={"batch_size": self.batch_size, "device": self.device},
        )

    @property
    def is_loaded(self) -> bool:
        """Whether the model is in memory (it loads on the first prompt that misses the cache)."""
        return self._loaded is not None

    def check_tokenizer(self) -> None:
        """Loads only the judge's tokenizer and checks it (a chat template; choices with distinct first tokens), so
        that a judge that cannot work is refused before anything is generated for it.

        Raises:
            JudgeConfigError: the tokenizer has no chat template, or two choices share their first token.
        """
        from ..backbone import load_tokenizer

        self._check_tokenizer(load_tokenizer(self.model_name, cache_dir=self.model_cache_dir))

    def _check_tokenizer(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise JudgeConfigError(
                f"judge model {self.model_name!r} has no chat template: an in-process judge needs an instruct "
                "(chat) model such as 'smollm2-135m-instruct'"
            )
        if self.choices is not None:
            self._choice_ids = self._first_tokens(tokenizer, self.choices)

    def _checked(self, model: Any, tokenizer: Any) -> tuple[Any, Any]:
        self._check_tokenizer(tokenizer)
        return model.to(self.device), tokenizer

    def _first_tokens(self, tokenizer: Any, choices: Sequence[str]) -> list[int]:
        """The first token id of each choice; refuses a choice without tokens or sharing its first token."""
        first: dict[int, str] = {}
        for choice in choices:
            ids = tokenizer(choice, add_special_tokens=False).input_ids
            if not ids or ids[0] in first:
                clash = f"starts with the same token as {first[ids[0]]!r}" if ids else "has no tokens"
                raise JudgeConfigError(
                    f"judge model {self.model_name!r}: choice {choice!r} {clash}; constrained choices are compared by "
                    "their first token, so give choices whose first tokens differ"
                )
            first[ids[0]] = choice
        return list(first)

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from ..backbone import load_backbone

            self._loaded = self._checked(
                *load_backbone(self.model_name, dtype=self.dtype, cache_dir=self.model_cache_dir)
            )
        return self._loaded

    def _padded(self, conversations: Sequence[Messages]) -> tuple[Any, Any, Any, Any, int]:
        """The model, tokenizer, left-padded rendered prompts with their attention mask, and the pad id."""
        from ..data.tokenize import PairTokenizer
        from ..generation import left_pad

        model, tokenizer = self._model()
        prompts = [tokenizer(_render(tokenizer, m), add_special_tokens=False).input_ids for m in conversations]
        pad_id = PairTokenizer(tokenizer).pad_id
        ids, attention = left_pad(prompts, pad_id, self.device)
        return model, tokenizer, ids, attention, pad_id

    def _choose(self, conversations: Sequence[Messages]) -> list[str]:
        """Per prompt, the choice whose first token has the highest next-token logit (one forward pass)."""
        import torch

        model, _, ids, attention, _ = self._padded(conversations)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: each prompt's positions start at 0
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=1).logits
        best = logits[:, -1, self._choice_ids].argmax(-1).tolist()
        return [self.choices[i] for i in best]

    def _generate(self, conversations: Sequence[Messages], seed: int) -> list[str]:
        import torch

        from ..generation import seeded, stop_token_ids, until_stop

        model, tokenizer, ids, attention, pad_id = self._padded(conversations)
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
            replies = self._generate(batch, self.seed + attempt) if self.choices is None else self._choose(batch)
            self.counts.calls += len(batch)
            yield from enumerate(replies, start)
