"""``pairs``: DPO pairs and KTO examples from the round's judgments (recomputed from the ledger on every run).

Quarantined samples (and so every pair touching one) are left out."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..config import PairsConfig
from ..data.ledger import Ledger
from ..data.pairs import build_pairs, kto_examples


def build(ledger: Ledger, round_: int, round_dir: Path, cfg: PairsConfig) -> dict:
    bad = ledger.quarantined(round_)
    samples = [s for s in ledger.rows("samples", round_) if s["id"] not in bad]
    judgments = [j for j in ledger.rows("judgments", round_) if j["a"] not in bad and j.get("b") not in bad]
    pointwise = {j["a"]: j for j in judgments if j["kind"] == "pointwise" and "labels" in j}
    # a sample whose pointwise judgment did not parse is left out of ranking (a score of 0 would make it the loser)
    unparseable = [s["id"] for s in samples if s["id"] not in pointwise]
    groups: dict[int, list[str]] = defaultdict(list)
    for s in samples:
        if s["id"] in pointwise:
            groups[s["prompt_id"]].append(s["id"])
    scores = {sid: j["overall"] for sid, j in pointwise.items()}
    verdicts = {(j["a"], j["b"]): j["overall"] for j in judgments if j["kind"] == "pairwise" and "overall" in j}
    pairs, stats = build_pairs(groups, verdicts, scores, alpha=cfg.alpha, filter_ratio=cfg.filter_ratio)
    examples, label_counts = kto_examples(samples, pointwise)
    ledger.replace_rows("pairs", round_, pairs)
    ledger.replace_rows("examples", round_, examples)
    round_dir = Path(round_dir)
    for table in ("samples", "judgments", "pairs", "examples"):
        ledger.export(table, round_, round_dir / f"{table}.jsonl")
    if bad:
        ledger.export("quarantine", round_, round_dir / "quarantine.jsonl")
    info = stats.as_dict()
    info["kto_labels"] = label_counts
    info["quarantined"] = len(bad)
    info["unparseable_samples"] = len(unparseable)
    info["desirable"] = sum(e["desirable"] for e in examples)
    info["undesirable"] = sum(not e["desirable"] for e in examples)
    return info
