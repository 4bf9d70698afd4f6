"""Tests of vipo.stages.pairs."""

from vipo.config import PairsConfig
from vipo.data.ledger import Ledger
from vipo.stages import pairs as pairs_stage


def _judgment(key, sid, labels=None, error=None, **more):
    row = {"key": key, "round": 1, "kind": "pointwise", "prompt_id": 0, "a": sid, "critic": "test", "raw": "x"}
    if error:
        return dict(row, error=error, **more)
    return dict(row, labels=labels, reasons={}, scores={}, overall=more.pop("overall"), **more)


def test_an_unparseable_sample_is_left_out_of_ranking_not_scored_zero(tmp_path):
    good = {"semantic": "Good", "fidelity": "Good", "motion": "Good"}
    mid = {"semantic": "Normal", "fidelity": "Good", "motion": "Good"}
    with Ledger(tmp_path / "l.sqlite") as ledger:
        for i in range(3):
            ledger.add_sample(
                {
                    "id": f"s{i}",
                    "round": 1,
                    "prompt_id": 0,
                    "sample_index": i,
                    "prompt": "p",
                    "seed": i,
                    "file_name": f"s{i}.mp4",
                }
            )
        ledger.add_judgment(_judgment("pw:s0", "s0", good, overall=1.0))
        ledger.add_judgment(_judgment("pw:s1", "s1", mid, overall=0.8))
        ledger.add_judgment(_judgment("pw:s2", "s2", error="no verdict"))
        info = pairs_stage.build(ledger, 1, tmp_path, PairsConfig())
        pairs = ledger.rows("pairs", 1)
    assert info["unparseable_samples"] == 1
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("s0", "s1")]  # not s2 with a "gap" of 1.0
