"""critics.base: the critic text format (the verdict lines an LLM writes), swapping a pairwise answer, and the kinds of
critic (text-first, batch-first, one at a time)."""

import numpy as np
import pytest

from vipo.critics import CRITICS, base, critic_class


def test_parser_accepts_common_llm_formatting_and_rejects_missing_dimensions():
    text = "**Semantic consistency**: Good - matches\n- fidelity: normal, slight blur\nMotion: BAD — jumps\n"
    p = base.parse_pointwise(text)
    assert p.labels == {"semantic": "Good", "fidelity": "Normal", "motion": "Bad"}
    assert p.reasons["motion"] == "jumps"
    with pytest.raises(base.CriticParseError) as e:
        base.parse_pointwise("semantic: Good\nfidelity: Good")
    assert "motion" in str(e.value) and e.value.raw
    q = base.parse_pairwise("semantic: A - better\nfidelity: tie\nmotion: B")
    assert q.overall == "A" and base.swap(q).verdicts == {"semantic": "B", "fidelity": "Tie", "motion": "A"}


# -- the contract: a critic answers structured verdicts; text-first and batch-first critics derive from their kind --


class _Text(base.TextCritic):
    """Writes its answer as text; the parser reads it."""

    def answer_pointwise(self, video):
        return "semantic: Good - ok\nfidelity: Bad - smear\nmotion: Normal - slow\n"

    def answer_pairwise(self, a, b):
        return "semantic: Tie - same\nfidelity: A - cleaner\nmotion: B - steadier\n"

    def graded_scores(self, video):
        return {"semantic": 0.9, "fidelity": 0.1, "motion": 0.5}


class _Batch(base.BatchCritic):
    """Answers a batch; a video whose prompt is 'bad' gets an unparseable answer."""

    def __init__(self):
        self.batches = []

    def pointwise_many(self, videos):
        self.batches.append(len(videos))
        good = base.Pointwise({d: "Good" for d in base.DIMENSIONS}, {d: "" for d in base.DIMENSIONS}, "raw", {})
        return [base.CriticParseError("no answer", "junk") if v.prompt == "bad" else good for v in videos]

    def pairwise_many(self, pairs):
        self.batches.append(len(pairs))
        return [base.Pairwise({d: "A" for d in base.DIMENSIONS}, {d: "" for d in base.DIMENSIONS}, "raw", "A")] * len(
            pairs
        )


def _video(prompt="a red circle moving left"):
    return base.Video(prompt, np.zeros((2, 4, 4, 3), np.uint8))


def test_a_text_critic_is_its_parsed_text_with_its_graded_scores():
    critic = _Text()
    p = critic.pointwise(_video())
    assert p.labels == {"semantic": "Good", "fidelity": "Bad", "motion": "Normal"} and p.reasons["fidelity"] == "smear"
    assert p.raw == critic.answer_pointwise(None) and p.scores["fidelity"] == 0.1
    assert p.overall == pytest.approx(0.5)  # the graded scores, not the labels' 1 / 0 / 0.5
    q = critic.pairwise(_video(), _video())
    assert q.verdicts == {"semantic": "Tie", "fidelity": "A", "motion": "B"} and q.overall == "A"
    (r,) = critic.pointwise_many([_video()])
    assert r.labels == p.labels


def test_a_batch_critic_answers_one_as_a_batch_of_one_and_raises_what_did_not_parse():
    critic = _Batch()
    assert critic.pointwise(_video()).labels["motion"] == "Good" and critic.pairwise(_video(), _video()).overall == "A"
    assert critic.batches == [1, 1]
    out = critic.pointwise_many([_video(), _video("bad"), _video()])
    assert critic.batches[-1] == 3 and isinstance(out[1], base.CriticParseError) and out[0].labels["semantic"] == "Good"
    with pytest.raises(base.CriticParseError) as e:
        critic.pointwise(_video("bad"))
    assert e.value.raw == "junk"


def test_a_critic_without_its_kinds_methods_cannot_be_made():
    class NoText(base.TextCritic):
        def answer_pointwise(self, video):
            return ""

    class NoBatch(base.BatchCritic):
        def pointwise_many(self, videos):
            return []

    for cls in (NoText, NoBatch, base.Critic):
        with pytest.raises(TypeError, match="abstract"):
            cls()


@pytest.mark.parametrize("name", list(CRITICS))
def test_each_registered_critic_is_one_kind(name):
    """No critic inverts its kind's contract: a batch critic writes no text first, a text critic's answers are its
    text parsed (it may add to the parsed answer, as omniscore adds its total, but through the parser)."""
    cls = critic_class(name)
    text, batch = issubclass(cls, base.TextCritic), issubclass(cls, base.BatchCritic)
    assert not (text and batch)
    if batch:
        assert not hasattr(cls, "answer_pointwise") and not hasattr(cls, "answer_pairwise")
        assert cls.pointwise is base.BatchCritic.pointwise and cls.pairwise is base.BatchCritic.pairwise
    elif not text:  # answers one at a time itself (human labels)
        assert cls.pointwise is not base.Critic.pointwise and not hasattr(cls, "answer_pointwise")
    assert not getattr(cls, "__abstractmethods__", None)


def test_a_dimension_score_is_graded_where_the_critic_grades_else_its_labels():
    labels = {"semantic": "Good", "fidelity": "Normal", "motion": "Bad"}
    assert [base.dimension_score({}, labels, d) for d in base.DIMENSIONS] == [1.0, 0.5, 0.0]
    assert base.dimension_score({"fidelity": 0.62}, labels, "fidelity") == 0.62
    assert base.dimension_score({"fidelity": 0.62}, labels, "motion") == 0.0
    assert base.Pointwise(labels, {}, "", {"motion": 0.3}).overall == pytest.approx((1.0 + 0.5 + 0.3) / 3)
