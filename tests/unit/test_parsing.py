"""Tests of vipo.critics.parsing."""

import pytest

from vipo.critics.base import LABELS, PAIR_VERDICTS, CriticParseError
from vipo.critics.parsing import parse_verdict

REASONING = (
    "The video shows a red circle on a black background. Across the frames it moves steadily from the right "
    "edge towards the left, as the prompt asks. The edges stay crisp and there is no flicker.\n\n"
)


POINTWISE = [
    (REASONING + "Verdict: Good", "Good"),
    (REASONING + "verdict: normal", "Normal"),
    (REASONING + "**Verdict:** **Bad**", "Bad"),
    (REASONING + "**Verdict**: Good", "Good"),
    (REASONING + "### Final Verdict: Normal", "Normal"),
    (REASONING + "- Verdict: `Good`", "Good"),
    (REASONING + 'Verdict: "Bad"', "Bad"),
    (REASONING + "Verdict: [Normal]", "Normal"),
    (REASONING + "Verdict: Good.\n\nLet me know if you need anything else!", "Good"),
    (REASONING + "My verdict is: Bad - the circle turns into a square halfway.", "Bad"),
    ("  Verdict:   GOOD  ", "Good"),
    (REASONING + "Verdict: Good (a touch of blur in frame 3, otherwise clean)", "Good"),
]


PAIRWISE = [
    (REASONING + "Verdict: A", "A"),
    (REASONING + "Verdict: **B**", "B"),
    (REASONING + "**Verdict:** **B**", "B"),
    (REASONING + "verdict: tie", "Tie"),
    (REASONING + "Verdict: B, a clearly smoother clip", "B"),
    (REASONING + "Verdict: A is better because B flickers.", "A"),
    ("Video A keeps its colour; video B drifts from red to orange.\nVerdict: A\n", "A"),
]


UNPARSEABLE = [
    ("", LABELS),
    ("   \n ", LABELS),
    ("I'm sorry, but I can't evaluate videos or images of this kind.", LABELS),
    ("I cannot determine this.\nVerdict: N/A", LABELS),
    (REASONING + "Verdict: Good|Normal|Bad", LABELS),
    (REASONING + "Verdict: Good or Normal", LABELS),
    (REASONING + "Verdict: A or B", PAIR_VERDICTS),
    (REASONING + "Verdict: A/B", PAIR_VERDICTS),
    (REASONING + "Verdict: A\nOn reflection, Verdict: B", PAIR_VERDICTS),
    (REASONING + "The answer is Good.", LABELS),  # no verdict line
    (REASONING + "Verdict: Excellent", LABELS),
    (REASONING + "Verdict: A", LABELS),  # a pairwise verdict to a pointwise question
    (REASONING + "Verdict:", PAIR_VERDICTS),
]


@pytest.mark.parametrize("text,expected", POINTWISE)
def test_pointwise_answers(text, expected):
    verdict, reason = parse_verdict(text, LABELS)
    assert verdict == expected
    assert "Verdict" not in reason and len(reason) <= 500


@pytest.mark.parametrize("text,expected", PAIRWISE)
def test_pairwise_answers(text, expected):
    assert parse_verdict(text, PAIR_VERDICTS)[0] == expected


@pytest.mark.parametrize("text,allowed", UNPARSEABLE)
def test_unparseable_answers_keep_their_raw_text(text, allowed):
    with pytest.raises(CriticParseError) as e:
        parse_verdict(text, allowed)
    assert e.value.raw == text


def test_reason_is_the_reasoning_before_the_verdict():
    assert parse_verdict("It moves left.\nVerdict: Good", LABELS)[1] == "It moves left."


hypothesis = pytest.importorskip("hypothesis")


st = hypothesis.strategies


_prose = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200).filter(lambda t: "verdict" not in t.lower())


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    reasoning=_prose,
    label=st.sampled_from(LABELS + PAIR_VERDICTS),
    upper=st.booleans(),
    bold=st.sampled_from(["", "*", "**"]),
    tail=st.sampled_from(["", ".", " - clear", "\n\nThanks!"]),
)
def test_any_reasoning_then_a_decorated_verdict_line_parses(reasoning, label, upper, bold, tail):
    allowed = LABELS if label in LABELS else PAIR_VERDICTS
    word = label.upper() if upper else label
    text = f"{reasoning}\n{bold}Verdict:{bold} {bold}{word}{bold}{tail}"
    assert parse_verdict(text, allowed)[0] == label


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(text=_prose)
def test_text_without_a_verdict_line_is_unparseable(text):
    with pytest.raises(CriticParseError):
        parse_verdict(text, PAIR_VERDICTS)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(text=st.text(max_size=300))
def test_the_parser_only_ever_raises_its_own_error(text):
    try:
        verdict, _ = parse_verdict(text, LABELS)
        assert verdict in LABELS
    except CriticParseError:
        pass
