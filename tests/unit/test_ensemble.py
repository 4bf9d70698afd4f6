"""vipo.critics.ensemble: the vote and the mean of known member answers per dimension, the tie rules, members that
do not parse left out, and members built from the ensemble's judge options."""

import pytest
from unit_helpers import ScriptedCritic, answer, video

from vipo import config
from vipo.critics.base import CriticParseError
from vipo.critics.ensemble import EnsembleCritic
from vipo.errors import UserError

V = video("v")
W = video("w")


def members(*texts, scores=None):
    return [ScriptedCritic(f"m{i}", point={"v": t}, pair={("v", "w"): t}, scores=scores) for i, t in enumerate(texts)]


def point(combine, *texts, scores=None):
    (p,) = EnsembleCritic(members(*texts, scores=scores), combine).pointwise_many([V])
    return p


def pair(combine, *texts):
    (p,) = EnsembleCritic(members(*texts), combine).pairwise_many([(V, W)])
    return p


def test_vote_takes_the_majority_label_per_dimension():
    p = point("vote", answer("Good", "Bad", "Normal"), answer("Good", "Normal", "Normal"), answer("Bad", "Bad", "Good"))
    assert p.labels == {"semantic": "Good", "fidelity": "Bad", "motion": "Normal"}
    # the mean scores ride along: semantic (1 + 1 + 0) / 3, fidelity (0 + 0.5 + 0) / 3, motion (0.5 + 0.5 + 1) / 3
    assert p.scores == pytest.approx({"semantic": 2 / 3, "fidelity": 1 / 6, "motion": 2 / 3})
    assert p.reasons == {d: "vote of 3 critics" for d in ("semantic", "fidelity", "motion")}


def test_vote_tie_goes_to_the_mean_scores_label():
    # Good vs Bad: mean 0.5 -> Normal; Good vs Normal: mean 0.75 -> Good; Normal vs Bad: mean 0.25 -> Bad
    p = point("vote", answer("Good", "Good", "Normal"), answer("Bad", "Normal", "Bad"))
    assert p.labels == {"semantic": "Normal", "fidelity": "Good", "motion": "Bad"}
    # a three-way tie: (1 + 0.5 + 0) / 3 = 0.5 -> Normal
    assert point("vote", answer("Good"), answer("Normal"), answer("Bad")).labels["semantic"] == "Normal"


def test_mean_labels_the_mean_score_even_against_a_majority():
    # two Bad and one Good: the vote says Bad, the mean 1/3 < 0.4 says Bad too; two Normal and one Good: the vote
    # says Normal, the mean (0.5 + 0.5 + 1) / 3 = 2/3 says Normal; two Good one Normal: 5/6 >= 0.75 Good
    p = point(
        "mean", answer("Bad", "Normal", "Good"), answer("Bad", "Normal", "Good"), answer("Good", "Good", "Normal")
    )
    assert p.labels == {"semantic": "Bad", "fidelity": "Normal", "motion": "Good"}
    # Good + Good + Bad: the vote says Good, the mean 2/3 says Normal
    assert point("mean", answer("Good"), answer("Good"), answer("Bad")).labels["semantic"] == "Normal"
    assert point("vote", answer("Good"), answer("Good"), answer("Bad")).labels["semantic"] == "Good"


def test_mean_uses_the_members_graded_scores_where_they_have_them():
    # both members say Normal, but their graded scores 0.7 and 0.9 average 0.8 >= 0.75: Good
    graded = {"v": {"semantic": 0.7, "fidelity": 0.1, "motion": 0.38}}
    m = members(answer("Normal"), answer("Normal"), scores=graded)
    m[1].scores = {"v": {"semantic": 0.9, "fidelity": 0.1, "motion": 0.44}}
    (p,) = EnsembleCritic(m, "mean").pointwise_many([V])
    assert p.scores == pytest.approx({"semantic": 0.8, "fidelity": 0.1, "motion": 0.41})
    assert p.labels == {"semantic": "Good", "fidelity": "Bad", "motion": "Normal"}


def test_pairwise_vote_majority_else_tie():
    assert pair("vote", answer("A", "B", "A"), answer("A", "B", "B"), answer("B", "Tie", "Tie")).verdicts == {
        "semantic": "A",
        "fidelity": "B",
        "motion": "Tie",  # A, B, Tie: one each, no majority
    }
    assert pair("vote", answer("A"), answer("B")).verdicts["semantic"] == "Tie"
    assert pair("vote", answer("Tie"), answer("Tie"), answer("A")).verdicts["semantic"] == "Tie"  # Tie by majority


def test_pairwise_mean_thresholds_at_one_third():
    # A A Tie: 2/3 > 1/3 -> A; A Tie Tie: exactly 1/3, not above -> Tie; B B A: -1/3, not below -> Tie
    got = pair("mean", answer("A", "A", "B"), answer("A", "Tie", "B"), answer("Tie", "Tie", "A"))
    assert got.verdicts == {"semantic": "A", "fidelity": "Tie", "motion": "Tie"}
    assert pair("mean", answer("B"), answer("B"), answer("Tie")).verdicts["semantic"] == "B"  # -2/3
    assert pair("mean", answer("A"), answer("B")).verdicts["semantic"] == "Tie"


def test_a_member_that_does_not_parse_is_left_out():
    # without the unparseable member the two Bad outvote the Good; its raw text is still kept
    p = point("vote", answer("Good"), "gibberish", answer("Bad"), answer("Bad"))
    assert p.labels["semantic"] == "Bad" and p.reasons["semantic"] == "vote of 3 critics"
    assert p.raw.split("\n\n")[1] == "[m1]\ngibberish"
    assert p.raw.startswith("[m0]\nsemantic: Good - scripted")


def test_unparseable_only_when_every_member_is():
    (p,) = EnsembleCritic(members("x", "y"), "vote").pointwise_many([V])
    assert isinstance(p, CriticParseError) and p.raw == "[m0]\nx\n\n[m1]\ny"
    (q,) = EnsembleCritic(members("x", "y"), "mean").pairwise_many([(V, W)])
    assert isinstance(q, CriticParseError)
    with pytest.raises(CriticParseError, match="no member's answer parsed"):
        EnsembleCritic(members("x"), "vote").pointwise(V)
    with pytest.raises(CriticParseError):
        EnsembleCritic(members("x"), "vote").pairwise(V, W)


def test_each_member_is_asked_every_question_once_in_a_batch():
    m = members(answer("Good"), answer("Bad"))
    EnsembleCritic(m, "vote").pointwise_many([V, W, V])
    assert [c.asked for c in m] == [[("point", "v"), ("point", "w"), ("point", "v")]] * 2


def test_one_question_is_a_batch_of_one_with_the_members_raw_text():
    e = EnsembleCritic(members(answer("Good", "Bad", "Good"), answer("Good", "Bad", "Bad")), "vote")
    p = e.pointwise(V)
    assert p.labels == {"semantic": "Good", "fidelity": "Bad", "motion": "Normal"}
    assert p.raw.startswith("[m0]\n") and "\n\n[m1]\n" in p.raw
    e = EnsembleCritic(members(answer("A", "B", "Tie"), answer("A", "B", "A")), "vote")
    assert e.pairwise(V, W).verdicts == {"semantic": "A", "fidelity": "B", "motion": "Tie"}


def test_unreadable_names_the_first_member_that_cannot_read_the_prompt():
    class Picky(ScriptedCritic):
        def unreadable(self, prompt):
            return f"cannot read {prompt!r}" if "x" in prompt else None

    e = EnsembleCritic([ScriptedCritic("a"), Picky("b"), Picky("c")])
    assert e.unreadable("fine") is None
    assert e.unreadable("xx") == "ensemble member b: cannot read 'xx'"


def test_members_are_built_over_the_ensembles_own_options():
    cfg = config.JudgeConfig(
        critic="ensemble",
        base_url="http://h/v1",
        model="judge",
        frames=3,
        members=[{"critic": "openai"}, {"critic": "openai", "frames": 5, "model": "other"}],
        combine="mean",
    )
    e = EnsembleCritic.from_config(cfg)
    assert e.combine == "mean"
    assert [(m.cfg.model, m.cfg.frames, m.url) for m in e.members] == [
        ("judge", 3, "http://h/v1/chat/completions"),
        ("other", 5, "http://h/v1/chat/completions"),
    ]


@pytest.mark.parametrize(
    "members_, message",
    [
        ([], "the ensemble critic needs members"),
        ([{"critic": "ensemble"}], "members[0] must be a mapping of judge options with a critic other than ensemble"),
        ([{"critic": "world"}, "world"], "members[1] must be a mapping"),
    ],
)
def test_bad_members_are_refused_in_one_line(members_, message):
    with pytest.raises(UserError) as e:
        EnsembleCritic.from_config(config.JudgeConfig(critic="ensemble", members=members_))
    assert message in str(e.value) and "\n" not in str(e.value)
