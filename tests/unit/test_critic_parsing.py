"""The verdict-line parser on realistic answers (table-driven), its properties (hypothesis), and the retries."""

import numpy as np
import pytest

from vipo.config import JudgeConfig
from vipo.critics.base import LABELS, PAIR_VERDICTS, CriticParseError, Video
from vipo.critics.llm import LLMCritic, letterbox, sample_frames
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


# -- properties ----------------------------------------------------------------------------------------------------
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


# -- retries, shared by the LLM critics ------------------------------------------------------------------------------
class Scripted(LLMCritic):
    """Answers from a function of the question, recording every question asked."""

    name = "scripted"

    def __init__(self, answer, **cfg):
        super().__init__(JudgeConfig(frames=4, frame_size=32, **cfg))
        self.answer, self.asked = answer, []

    def complete(self, queries):
        self.asked += queries
        return [self.answer(q, len(self.asked)) for q in queries]


def _clip(value):
    return Video("a red circle moving left", np.full((9, 16, 24, 3), value, dtype=np.uint8))


def _first_image(q):
    return next(p for p in q.parts if not isinstance(p, str))


def test_unparseable_pointwise_answers_are_retried_then_recorded():
    # the first answer to every question rambles; the retry (with the reminder appended) answers properly
    def answer(q, n):
        return "Verdict: Good" if "previous answer" in q.parts[-1] else "Hmm, hard to say."

    c = Scripted(answer, retries=1)
    out = c.pointwise_many([_clip(10), _clip(20)])
    assert all(p.labels == {"semantic": "Good", "fidelity": "Good", "motion": "Good"} for p in out)
    assert len(c.asked) == 12  # 2 videos x 3 dimensions, each asked twice
    never = Scripted(lambda q, n: "I can't help with that.", retries=2).pointwise_many([_clip(10)])[0]
    assert isinstance(never, CriticParseError) and never.raw.count("I can't help") == 9  # 3 dims x 3 attempts


def test_a_pairwise_retry_keeps_the_order_it_retries():
    """The judge asks (a, b) and (b, a) and keeps only verdicts that agree; a retry asked in its partner's order would
    let a critic stuck on one position pass that check, so a retry shows the videos in the order it retries."""
    a, b = _clip(10), _clip(200)

    def answer(q, n):  # an unparseable first answer, then a critic stuck on "A"
        return "Verdict: A" if "previous answer" in q.parts[-1] else "Both look fine. Verdict: maybe"

    c = Scripted(answer, retries=1)
    ab, ba = c.pairwise_many([(a, b), (b, a)])
    assert all(_first_image(q).max() < 100 for q in c.asked[:3])  # (a, b) first tries show a first
    retries = [q for q in c.asked if "previous answer" in q.parts[-1]]
    assert len(retries) == 6
    assert [_first_image(q).max() < 100 for q in retries] == [True] * 3 + [False] * 3  # (a, b) retried as (a, b)
    # the stuck critic says "A" in both orders: verdicts that disagree, which the pairs stage counts as inconsistent
    assert ab.verdicts["semantic"] == "A" and ba.verdicts["semantic"] == "A"


def test_frames_are_sampled_uniformly_and_letterboxed():
    idx = sample_frames(np.arange(49)[:, None], 16)[:, 0]
    assert idx[0] == 0 and idx[-1] == 48 and len(idx) == 16
    assert len(sample_frames(np.arange(9)[:, None], 16)) == 9
    wide = np.full((30, 60, 3), 255, np.uint8)
    lb = letterbox(wide, 40)
    assert lb.shape == (40, 40, 3) and lb[0].max() == 0 and lb[20].min() == 255  # padded top/bottom, not cropped
