"""Rubrics: reply parsing on a table of shapes, the harmonic-mean aggregate, template hashes and loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_split.judges import (
    ConceptGeneration,
    Judge,
    JudgeRecord,
    Messages,
    RubricTemplateError,
    axbench_rubric,
    bipo_rubric,
    harmonic_mean,
    load_template,
    parse_leading_score,
    parse_rating,
    score_axbench,
)
from lightning_split.judges.rubrics import PREFILL_RULE, REPLY_STARTS

RATING_CASES = [
    ("The concept is clear.\nRating: [[2]]", 2.0),
    ("Rating: [[0]]", 0.0),
    ("Rating: 1.5", 1.5),  # fractions are kept
    ("Rating: [[1]].", 1.0),  # trailing punctuation
    ("**Rating:** [[2]]", 2.0),  # markdown emphasis around the label
    ('Rating: "1"', 1.0),
    ("Rating:\n[[2]]", 2.0),  # the text after the label is stripped before its first line is taken
    ("Rating: [[1]]\nmore words", 1.0),
    ("Rating: [[0]] first\nRating: [[2]]", 2.0),  # the last Rating: wins
    ("Rating: [[2]]\nOn second thought, Rating: [[1]]", 1.0),
    ("Rating: [[3]]", None),  # out of range
    ("Rating: -1", None),
    ("Rating: 2.5", None),
    ("Rating: [[2]] out of 2", None),  # not a plain number
    ("Rating: 2/2", None),
    ("Rating: two", None),
    ("Rating:", None),
    ("Rating: [[]]", None),
    ("no rating", None),
    ("Score: 2", None),
    ("rating: [[2]]", None),  # the label is case-sensitive, as in AxBench
    ("Rating: 1_0", None),  # float() would read 10
    ("Rating: nan", None),
    ("", None),
]


@pytest.mark.parametrize(("reply", "want"), RATING_CASES)
def test_parse_rating_reads_the_first_line_after_the_last_label(reply: str, want: float | None) -> None:
    assert parse_rating(reply) == want


LEADING_CASES = [
    ("4", 4.0),
    ("4.", 4.0),
    ("3 out of 4", 3.0),  # BiPO's own search for 4 first would read 4
    ("1 - the answer declines", 1.0),
    ("  2\nbecause it is neutral", 2.0),
    ("\n\n3", 3.0),  # the first non-empty line
    ("**3**", 3.0),
    ("[[2]]", 2.0),
    ("Score: 2", 2.0),  # an optional label
    ("rating: 4", 4.0),
    ("5", None),  # out of range
    ("0", None),
    ("10", None),
    ("3.5", None),  # not a whole number
    ("Score is 3", None),
    ("The answer scores 4", None),  # the number must lead
    ("no score", None),
    ("", None),
    ("-1", None),
]


@pytest.mark.parametrize(("reply", "want"), LEADING_CASES)
def test_parse_leading_score_reads_the_leading_number_of_the_first_line(reply: str, want: float | None) -> None:
    assert parse_leading_score(reply) == want


@pytest.mark.parametrize(
    ("scores", "want"),
    [([2.0, 2.0, 2.0], 2.0), ([1.0, 2.0, 2.0], 1.5), ([1.0, 1.0, 2.0], 1.2), ([2.0, 0.0, 2.0], 0.0), ([0.5], 0.5)],
)
def test_harmonic_mean_is_zero_when_any_score_is_zero(scores: list[float], want: float) -> None:
    assert harmonic_mean(scores) == pytest.approx(want)


def test_harmonic_mean_rejects_negative_or_no_scores() -> None:
    for bad in ([], [1.0, -1.0]):
        with pytest.raises(ValueError, match="non-negative"):
            harmonic_mean(bad)


def test_record_holds_the_sha256_of_each_template_and_it_follows_the_text(tmp_path: Path) -> None:
    import hashlib

    builtin = axbench_rubric().record()
    assert builtin["name"] == "axbench" and builtin["scale"] == [0.0, 2.0] and "Rating:" in builtin["parse_rule"]
    assert set(builtin["templates"]) == {"concept", "instruction", "fluency"}
    text = load_template("fluency").text
    assert builtin["templates"]["fluency"] == {
        "source": "builtin:axbench_fluency.txt",
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    own = tmp_path / "fluency.txt"
    own.write_text(text + " Be strict.")
    changed = axbench_rubric(fluency=own).record()["templates"]
    assert changed["fluency"] == {"source": str(own), "sha256": hashlib.sha256(own.read_bytes()).hexdigest()}
    assert changed["fluency"]["sha256"] != builtin["templates"]["fluency"]["sha256"]
    assert changed["concept"] == builtin["templates"]["concept"]  # the others stay built in
    assert len({t["sha256"] for t in builtin["templates"].values()}) == 3


def test_render_replaces_placeholders_once_and_keeps_other_braces() -> None:
    template = load_template("concept")
    prompt = template.render(concept="cats {response}", response='{"json": 1} and {concept}')
    assert "Concept: cats {response}" in prompt  # inserted text is not searched again
    assert '{"json": 1} and {concept}' in prompt
    with pytest.raises(ValueError, match="takes exactly"):
        template.render(concept="cats")


def test_builtin_templates_ask_for_the_protocol_reply_shape() -> None:
    for criterion in ("concept", "instruction", "fluency"):
        assert "Rating: [[score]]" in load_template(criterion).text
    behavior = bipo_rubric().templates["behavior"]
    assert behavior.source == "builtin:bipo_behavior.txt" and "Start your reply with the score" in behavior.text


def test_a_template_file_without_a_placeholder_or_unreadable_is_rejected_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "behavior.txt"
    bad.write_text("Rate {response} for {behavior}; question {question}.")
    with pytest.raises(RubricTemplateError, match=r"behavior\.txt.*lacks \{matching\}, \{not_matching\}"):
        bipo_rubric(bad)
    with pytest.raises(RubricTemplateError, match=r"cannot read.*missing\.txt"):
        axbench_rubric(concept=tmp_path / "missing.txt")


PREFILLED_CASES = [
    ("2]] the text is fluent", "axbench", 2.0),
    (" 1.5]]", "axbench", 1.5),
    ("3]]", "axbench", None),  # outside 0-2
    ("]] no number", "axbench", None),
    ("3\nbecause it seeks power", "bipo", 3.0),
    ("4 out of 4", "bipo", 4.0),
    ("2.5", "bipo", None),  # the 1-4 scale is whole numbers
    ("0", "bipo", None),
    ("The answer", "bipo", None),
]


@pytest.mark.parametrize(("reply", "protocol", "want"), PREFILLED_CASES)
def test_a_prefilled_rubric_reads_the_number_its_reply_starts_with(reply: str, protocol: str, want: float | None):
    rubric = (axbench_rubric() if protocol == "axbench" else bipo_rubric()).prefilled()
    assert rubric.parse(reply) == want
    assert rubric.record()["reply_start"] == REPLY_STARTS[protocol] and rubric.record()["parse_rule"] == PREFILL_RULE


def test_a_prefilled_rubric_sends_its_reply_start_as_a_final_assistant_message() -> None:
    seen: list[Messages] = []

    class Echo(Judge):
        deterministic = True

        def describe(self) -> JudgeRecord:
            return JudgeRecord(kind="test", model="echo", endpoint="none", settings={}, options={})

        def _send(self, conversations, attempt):  # noqa: ANN001, ANN202
            seen.extend(conversations)
            self.counts.calls += len(conversations)
            yield from enumerate(["2]]", "0]]", "1]]"])

    result = score_axbench(
        [ConceptGeneration("Say hi.", "Hi there!", "greetings")], Echo(None), axbench_rubric().prefilled()
    )
    assert [m[-1] for m in seen] == [{"role": "assistant", "content": "Rating: [["}] * 3
    assert result.scores("concept") == [2.0] and result.scores() == [0.0]  # the harmonic mean with a 0 is 0
    plain = score_axbench([ConceptGeneration("Say hi.", "Hi there!", "greetings")], Echo(None))
    assert seen[-1][-1]["role"] == "user" and plain.counts["unparseable"] == 3
