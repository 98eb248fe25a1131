"""Turn polarity pairs into token ids with a Hugging Face tokenizer.

With a chat template, the prompt is the template's rendering of one user turn (optionally after a system
turn) with the generation prompt, and each completion is followed by the template's end-of-turn text
(``<|im_end|>\\n`` for SmolLM2/Qwen, ``<end_of_turn>\\n`` for Gemma). Texts are rendered as strings and
encoded with ``add_special_tokens=False``: whatever BOS the template writes (Gemma's ``<bos>``) is kept
once, and tokenizers that would add their own BOS (the SmolLM2 GGUF tokenizer uses ``<|im_start|>``) do
not add a second one. ``apply_chat_template(tokenize=True)`` is not used: in transformers 5 it returns a
``BatchEncoding`` rather than a list of ids.

Without a chat template (base models), the prompt is the question with the tokenizer's usual leading
special tokens (its BOS, if it adds one), the completion is ``plain_separator + completion`` and the
end-of-turn text is the EOS token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lightning_split.data.pairs import BadRowError, PolarityPair

log = logging.getLogger(__name__)

_SENTINEL = "LSPLITSENTINEL7Q"


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one pair.

    Attributes:
        prompt_ids: the templated prompt, generation prompt included.
        pos_ids: the matching completion followed by the end-of-turn text.
        neg_ids: the not-matching completion followed by the end-of-turn text.
        answer_class: the class of the matching answer (:mod:`~lightning_split.data.answers`; -1: none).
    """

    prompt_ids: list[int]
    pos_ids: list[int]
    neg_ids: list[int]
    answer_class: int = -1

    @property
    def length(self) -> int:
        """Prompt length plus the longer completion's length (what ``max_length`` limits)."""
        return len(self.prompt_ids) + max(len(self.pos_ids), len(self.neg_ids))


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def _messages(question: str, system_prompt: str | None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return head + [{"role": "user", "content": question}]


def render_prompt(tokenizer: Any, question: str, system_prompt: str | None = None) -> str:
    """The chat template's rendering of a user turn with the generation prompt, as a string.

    Args:
        tokenizer: a tokenizer with a chat template.
        question: the user's message.
        system_prompt: an optional system message (None: no system turn, the template's default applies).

    Returns:
        The rendered prompt text.
    """
    return tokenizer.apply_chat_template(_messages(question, system_prompt), add_generation_prompt=True, tokenize=False)


def end_of_turn_text(tokenizer: Any, system_prompt: str | None = None) -> str:
    """The text a chat template writes after an assistant message (e.g. ``"<|im_end|>\\n"``).

    Found by rendering a user + assistant conversation whose assistant content is a sentinel and taking
    what follows the sentinel. Falls back to the EOS token text (with a warning) when the template cannot
    render that or writes nothing after the assistant content; without a chat template it is the EOS text.

    Args:
        tokenizer: the tokenizer.
        system_prompt: the system message used for prompts, if any.

    Returns:
        The end-of-turn text.
    """
    eos = tokenizer.eos_token or ""
    if not has_chat_template(tokenizer):
        return eos
    messages = _messages("Hello", system_prompt) + [{"role": "assistant", "content": _SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as err:  # templates raise arbitrary jinja errors
        log.warning("chat template cannot render an assistant turn (%s); end of turn = EOS %r", err, eos)
        return eos
    if _SENTINEL not in text or not text.split(_SENTINEL)[-1]:
        log.warning("chat template writes nothing after an assistant message; end of turn = EOS %r", eos)
        return eos
    return text.split(_SENTINEL)[-1]


def _default_prefix_ids(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before text by default (its BOS), possibly none."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


class PairTokenizer:
    """Tokenises polarity pairs for one tokenizer and prompt format.

    Args:
        tokenizer: a Hugging Face tokenizer.
        max_length: the most tokens a pair may take (prompt plus the longer completion); longer pairs are
            bad rows.
        system_prompt: optional system message for the chat template.
        use_chat_template: None uses the template when the tokenizer has one; False forces plain text.
        plain_separator: text put before each completion when no chat template is used.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int = 512,
        system_prompt: str | None = None,
        use_chat_template: bool | None = None,
        plain_separator: str = " ",
    ) -> None:
        if use_chat_template and not has_chat_template(tokenizer):
            raise ValueError("use_chat_template=True but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.chat = has_chat_template(tokenizer) if use_chat_template is None else use_chat_template
        self.separator = "" if self.chat else plain_separator
        eos = tokenizer.eos_token or ""
        self.end_of_turn = end_of_turn_text(tokenizer, system_prompt) if self.chat else eos
        self._prefix = [] if self.chat else _default_prefix_ids(tokenizer)

    @property
    def pad_id(self) -> int:
        """The padding id: the tokenizer's pad token, else its EOS token, else 0."""
        for value in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if value is not None:
                return int(value)
        return 0

    def prompt_text(self, question: str) -> str:
        """The prompt string for ``question`` (chat-templated with generation prompt, or the question)."""
        return render_prompt(self.tokenizer, question, self.system_prompt) if self.chat else question

    def completion_text(self, completion: str) -> str:
        """The completion string that is tokenised: ``completion`` plus the end-of-turn text."""
        return self.separator + completion + self.end_of_turn

    def encode(self, text: str) -> list[int]:
        """Encodes ``text`` without adding special tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the prompt for ``question``."""
        return self._prefix + self.encode(self.prompt_text(question))

    def __call__(self, pair: PolarityPair) -> TokenizedPair:
        """Tokenises ``pair``.

        Args:
            pair: the pair.

        Returns:
            Its token ids.

        Raises:
            BadRowError: the pair is longer than ``max_length`` tokens.
        """
        out = TokenizedPair(
            prompt_ids=self.prompt_ids(pair.question),
            pos_ids=self.encode(self.completion_text(pair.matching)),
            neg_ids=self.encode(self.completion_text(pair.not_matching)),
        )
        if out.length > self.max_length:
            raise BadRowError(
                pair.source,
                pair.line,
                f"too long: {len(out.prompt_ids)} prompt + {max(len(out.pos_ids), len(out.neg_ids))} "
                f"completion tokens = {out.length}, over max_length {self.max_length} "
                "(raising max_length also works)",
            )
        return out
