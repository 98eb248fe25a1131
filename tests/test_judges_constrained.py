"""HFJudge with ``choices`` (constrained scoring) on a tiny random Llama with the SmolLM2 tokenizer: the reply is
the choice whose first token has the highest next-token logit, batches give the replies of single prompts, clashing
choices are refused, and the choices are recorded in the judge settings."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lightning_split.errors import OptionError
from lightning_split.judges import HFJudge, JudgeConfigError, axbench_rubric, bipo_rubric
from lightning_split.judges.hf_judge import _render
from tests.tiny_models import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

SCORES = ("1", "2", "3", "4")
PROMPTS = [
    [{"role": "user", "content": "Rate it."}, {"role": "assistant", "content": "Score: "}],
    [
        {"role": "system", "content": "You grade texts strictly and never explain yourself at any length."},
        {"role": "user", "content": "Is 'bridge bridge bridge bridge' a fluent sentence? Rate it from 1 to 4."},
        {"role": "assistant", "content": "Score: "},
    ],
    [{"role": "user", "content": "How fluent is 'The cat sat on the mat.'? Say 0, 1 or 2."}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "Rating: [["}],
    [{"role": "user", "content": "Give a number between one and four for this answer: 'No, thank you.'"}],
]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request: pytest.FixtureRequest, smollm2_tokenizer: Any) -> tuple[Any, Any]:
    """A tiny random Llama (rotary positions) or GPT-2 (absolute positions: a padding error changes its logits)
    with large weights, and the SmolLM2 tokenizer (with its chat template)."""
    ids = {k: getattr(smollm2_tokenizer, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
    width = {"n_positions" if request.param == "gpt2" else "max_position_embeddings": 512}
    model = make_tiny_model(request.param, vocab_size=len(smollm2_tokenizer), initializer_range=1.0, **width, **ids)
    return model, smollm2_tokenizer


def _by_hand(model: Any, tokenizer: Any, messages: list[dict[str, str]], choices: tuple[str, ...]) -> str:
    """The choice whose first token has the highest last-position logit, from a full unpadded forward pass."""
    ids = tokenizer(_render(tokenizer, messages), add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        last = model(input_ids=ids).logits[0, -1]
    firsts = [tokenizer(c, add_special_tokens=False).input_ids[0] for c in choices]
    return choices[int(last[firsts].argmax())]


def test_the_reply_is_the_choice_with_the_highest_first_token_logit(tiny: tuple[Any, Any]) -> None:
    digits = tuple(str(d) for d in range(10))
    judge = HFJudge("tiny", batch_size=1, loaded=tiny, choices=digits)
    replies = judge.complete(PROMPTS)
    assert replies == [_by_hand(*tiny, m, digits) for m in PROMPTS]
    assert set(replies) <= set(digits) and judge.counts.calls == len(PROMPTS)


def test_a_batch_of_different_lengths_gives_the_replies_of_one_prompt_at_a_time(tiny: tuple[Any, Any]) -> None:
    digits = tuple(str(d) for d in range(10))
    batched = HFJudge("tiny", batch_size=len(PROMPTS), loaded=tiny, choices=digits).complete(PROMPTS)
    alone = HFJudge("tiny", batch_size=1, loaded=tiny, choices=digits).complete(PROMPTS)
    assert batched == alone and len(set(batched)) > 1
    for scores in (SCORES, ("0", "1", "2")):
        replies = HFJudge("tiny", batch_size=3, loaded=tiny, choices=scores).complete(PROMPTS)
        assert all(r in scores for r in replies)


@pytest.mark.parametrize(("choices", "message"), [(("1", "10"), "'10' starts with the same token as '1'"),
                                                  (("1", ""), "'' has no tokens")])  # fmt: skip
def test_choices_sharing_a_first_token_are_refused(
    tiny: tuple[Any, Any], choices: tuple[str, ...], message: str
) -> None:
    with pytest.raises(JudgeConfigError, match=f"judge model 'tiny': choice {message}"):
        HFJudge("tiny", loaded=tiny, choices=choices)


def test_the_choices_are_recorded_and_change_the_cache_key(tiny: tuple[Any, Any]) -> None:
    constrained = HFJudge("tiny", temperature=1.0, loaded=tiny, choices=SCORES)
    free = HFJudge("tiny", temperature=1.0, loaded=tiny)
    assert constrained.describe().settings == {"choices": list(SCORES), "dtype": "float32"}
    assert constrained.deterministic and not free.deterministic
    assert constrained.cache_key(PROMPTS[0]) != free.cache_key(PROMPTS[0])
    with pytest.raises(OptionError, match="no empty choices"):
        HFJudge("tiny", choices=[])


def test_rubric_scores_are_the_whole_numbers_of_the_scale() -> None:
    assert axbench_rubric().scores == ("0", "1", "2")
    assert bipo_rubric().prefilled().scores == ("1", "2", "3", "4")
