"""critics.base: the critic text format (the verdict lines an LLM writes) and swapping a pairwise answer."""

import pytest

from vipo.critics import base


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
