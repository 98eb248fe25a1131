"""Pair tokenisation with the real SmolLM2 tokenizer and Gemma/Qwen-style chat templates."""

from __future__ import annotations

import copy

import pytest

from lightning_split.data.pairs import BadRowError, PolarityPair
from lightning_split.data.tokenize import PairTokenizer, end_of_turn_text

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n' }}{%- endif %}{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
QUESTION = 'Is the following statement something you would say?\n"I have to look out for myself, first and foremost"'
PAIR = PolarityPair(QUESTION, "Yes", "No", source="psy.jsonl", line=7)


def with_template(tokenizer, template: str | None, add_bos: bool = False):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    if add_bos:
        tok.add_bos_token = True
    return tok


def test_smollm2_prompt_and_completions(smollm2_tokenizer) -> None:
    tok = PairTokenizer(smollm2_tokenizer)
    assert tok.end_of_turn == "<|im_end|>\n"
    out = tok(PAIR)
    rendered = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    assert smollm2_tokenizer.decode(out.prompt_ids) == rendered
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert rendered.endswith("<|im_start|>assistant\n")
    im_start = smollm2_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert out.prompt_ids[0] == im_start and out.prompt_ids[1] != im_start
    assert out.prompt_ids.count(im_start) == 3  # system, user, assistant turns
    assert smollm2_tokenizer.decode(out.pos_ids) == "Yes<|im_end|>\n"
    assert smollm2_tokenizer.decode(out.neg_ids) == "No<|im_end|>\n"
    assert out.pos_ids[-2] == smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    # prompt + completion tokens are exactly the tokens of the whole templated conversation
    full = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Yes"}], tokenize=False
    )
    assert smollm2_tokenizer.encode(full, add_special_tokens=False) == out.prompt_ids + out.pos_ids
    assert out.length == len(out.prompt_ids) + 3


def test_no_second_bos_when_tokenizer_adds_one(smollm2_tokenizer) -> None:
    bos_adding = with_template(smollm2_tokenizer, smollm2_tokenizer.chat_template, add_bos=True)
    im_start = bos_adding.convert_tokens_to_ids("<|im_start|>")
    assert bos_adding.encode("<|im_start|>user")[:2] == [im_start, im_start]  # the trap PairTokenizer avoids
    ids = PairTokenizer(bos_adding)(PAIR).prompt_ids
    assert ids[0] == im_start and ids[1] != im_start


def test_gemma_style_template(smollm2_tokenizer) -> None:
    gemma = with_template(smollm2_tokenizer, GEMMA_TEMPLATE, add_bos=True)
    tok = PairTokenizer(gemma)
    assert tok.end_of_turn == "<end_of_turn>\n"
    bos = gemma.bos_token  # "<|im_start|>" plays Gemma's <bos> here
    assert tok.prompt_text("Hi") == f"{bos}<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    out = tok(PAIR)
    assert out.prompt_ids[0] == gemma.bos_token_id and out.prompt_ids.count(gemma.bos_token_id) == 1
    assert gemma.decode(out.pos_ids) == "Yes<end_of_turn>\n"
    with pytest.raises(Exception, match="System role not supported"):
        PairTokenizer(gemma, system_prompt="Be brief.")(PAIR)


def test_qwen_style_template_and_system_prompt(smollm2_tokenizer) -> None:
    qwen = with_template(smollm2_tokenizer, QWEN_TEMPLATE)
    tok = PairTokenizer(qwen)
    assert tok.end_of_turn == "<|im_end|>\n"
    assert tok.prompt_text("Hi").startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    custom = PairTokenizer(qwen, system_prompt="Be brief.")
    assert custom.prompt_text("Hi") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert qwen.decode(custom(PAIR).neg_ids) == "No<|im_end|>\n"


def test_without_chat_template(smollm2_tokenizer) -> None:
    plain = with_template(smollm2_tokenizer, None, add_bos=True)
    assert end_of_turn_text(plain) == "<|im_end|>"  # the EOS token
    tok = PairTokenizer(plain)
    out = tok(PAIR)
    assert out.prompt_ids[0] == plain.bos_token_id  # the tokenizer's usual BOS, once
    assert plain.decode(out.prompt_ids[1:]) == QUESTION
    assert plain.decode(out.pos_ids) == " Yes<|im_end|>"
    forced = PairTokenizer(smollm2_tokenizer, use_chat_template=False)
    assert smollm2_tokenizer.decode(forced(PAIR).prompt_ids) == QUESTION
    with pytest.raises(ValueError, match="no chat template"):
        PairTokenizer(plain, use_chat_template=True)


def test_over_length_is_a_bad_row(smollm2_tokenizer) -> None:
    length = PairTokenizer(smollm2_tokenizer)(PAIR).length
    assert PairTokenizer(smollm2_tokenizer, max_length=length)(PAIR).length == length
    with pytest.raises(BadRowError) as info:
        PairTokenizer(smollm2_tokenizer, max_length=length - 1)(PAIR)
    message = str(info.value)
    assert message.startswith(f"psy.jsonl, line 7: too long: {length - 3} prompt + 3 completion tokens")
    assert f"over max_length {length - 1}" in message and "skip_bad_rows" in message
