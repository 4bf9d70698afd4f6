"""Tests of vipo.critics.llm."""

import numpy as np

from vipo.config import JudgeConfig
from vipo.critics.base import CriticParseError, Video
from vipo.critics.llm import LLMCritic, letterbox, sample_frames


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
