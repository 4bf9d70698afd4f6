"""Win rate against the base: outcomes from both orders, tallies with Wilson intervals (hand-computed), and the
judging of a round's clips against the base's on real mp4 files."""

import json

import numpy as np
import pytest

from vipo.critics.base import CriticParseError, Pairwise
from vipo.errors import UserError
from vipo.io.video import write_mp4
from vipo.stages import winrate


def test_outcome_needs_both_orders_to_agree():
    assert winrate.outcome("A", "B") == "win"  # round K first: A; base first: B (round K) -> agreed
    assert winrate.outcome("B", "A") == "loss"
    assert winrate.outcome("Tie", "Tie") == "tie"
    assert winrate.outcome("A", "A") == "inconsistent"  # position bias: always the first shown
    assert winrate.outcome("Tie", "B") == "inconsistent"
    assert winrate.outcome(None, "B") == "unjudged"


def test_tally_by_hand():
    t = winrate.tally(["win"] * 6 + ["loss"] * 2 + ["tie"] * 2 + ["inconsistent", "unjudged"])
    assert (t["wins"], t["losses"], t["ties"], t["inconsistent"], t["unjudged"], t["n"]) == (6, 2, 2, 1, 1, 10)
    assert (t["win_rate"], t["tie_rate"], t["loss_rate"]) == (0.6, 0.2, 0.2)
    # Wilson 95% for 6/10: centre (0.6 + 1.96^2/20) / (1 + 1.96^2/10) = 0.5722, half-width 0.2596
    assert t["ci95"]["win_rate"] == pytest.approx([0.3127, 0.8318], abs=1e-4)
    # 2/10: [0.0567, 0.5098]
    assert t["ci95"]["loss_rate"] == pytest.approx([0.0567, 0.5098], abs=1e-4)
    empty = winrate.tally(["unjudged"])
    # nothing to rate: null in eval.json (JSON has no NaN), '-' in the report
    assert empty["n"] == 0 and empty["win_rate"] is None and empty["ci95"]["win_rate"] is None


class Brighter:
    """Pairwise by mean brightness, with one clip never answered and a position-biased answer on another."""

    name = "brighter"

    def pairwise_many(self, pairs):
        out = []
        for a, b in pairs:
            if "never" in a.prompt:
                out.append(CriticParseError("no verdict", "garbled"))
                continue
            ma, mb = a.frames.mean(), b.frames.mean()
            v = "A" if "biased" in a.prompt or ma > mb else "B" if mb > ma else "Tie"
            out.append(Pairwise({"semantic": v, "fidelity": "Tie", "motion": v}, {}, f"means {ma:.1f} {mb:.1f}"))
        return out


def test_versus_base_on_mp4s(tmp_path):
    base, mine = tmp_path / "round-0" / "eval", tmp_path / "round-1" / "eval"
    rows = [
        {"file_name": f"heldout-{i:03d}.mp4", "prompt": p, "seed": 100 + i, "split": "heldout"}
        for i, p in enumerate(["a", "b", "c", "never", "biased"])
    ]
    level = {"a": (40, 200), "b": (200, 40), "c": (90, 90), "never": (10, 20), "biased": (10, 200)}  # (base, mine)
    for folder, k in ((base, 0), (mine, 1)):
        folder.mkdir(parents=True)
        for r in rows:
            write_mp4(folder / r["file_name"], np.full((3, 16, 16, 3), level[r["prompt"]][k], np.uint8))
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = winrate.versus_base(Brighter(), mine, base, rows, progress=False)["heldout"]
    c = got["versus_base"]
    assert (c["wins"], c["losses"], c["ties"], c["inconsistent"], c["unjudged"], c["n"]) == (1, 1, 1, 1, 1, 3)
    assert got["win_rate"] == pytest.approx(1 / 3) and got["ci95"]["win_rate"][0] > 0
    assert c["dimensions"]["fidelity"]["ties"] == 4 and c["dimensions"]["motion"]["wins"] == 1
    recs = [json.loads(x) for x in (mine / "versus_base.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in recs] == ["win", "loss", "tie", "unjudged", "inconsistent"]
    assert recs[0]["raw_ab"].startswith("means 200") and recs[3]["error_ab"] == "no verdict"
    # a base clip of another seed is not the same comparison
    rows[1]["seed"] = 7
    with pytest.raises(UserError, match="heldout-001.mp4 is of another prompt or seed"):
        winrate.versus_base(Brighter(), mine, base, rows, progress=False)
