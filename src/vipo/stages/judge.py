"""``judge``: pointwise labels for every sample and pairwise verdicts for every pair of a prompt, in both orders.

The critic sees decoded pixels read back from the mp4 files (what anyone else would see), never seeds or metadata.
Each judgment stores the critic's raw text beside the parsed verdict; an answer that does not parse is stored with
its error and counted, never silently dropped. Judgments already in the ledger are skipped on re-runs.
"""
from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from ..critics.base import Critic, CriticParseError, Video
from ..data.ledger import Ledger
from ..io.video import read_mp4

log = logging.getLogger(__name__)


def make_critic(name: str) -> Critic:
    if name == "world":
        from ..critics.world import WorldCritic

        return WorldCritic()
    if name == "metric":
        from ..critics.metric import MetricCritic

        return MetricCritic()
    raise ValueError(f"unknown critic {name!r}")


def judge(critic: Critic, samples: list[dict], round_dir: Path, ledger: Ledger, round_: int,
          pairwise: bool = True, progress: bool = True) -> dict:
    round_dir = Path(round_dir)
    done = ledger.keys("judgments", round_)
    groups: dict[int, list[dict]] = defaultdict(list)
    for s in samples:
        groups[s["prompt_id"]].append(s)
    frames_cache: dict[str, Video] = {}

    def video(s: dict) -> Video:
        if s["id"] not in frames_cache:
            path = round_dir / s["file_name"]
            frames_cache[s["id"]] = Video(s["prompt"], read_mp4(path), str(path))
        return frames_cache[s["id"]]

    counts = {"pointwise": 0, "pairwise": 0, "parse_errors": 0}
    bar = tqdm(total=len(groups), disable=not progress, desc=f"judge r{round_}", unit="prompt")
    for pid, group in sorted(groups.items()):
        rows = []
        for s in group:
            key = f"pw:{s['id']}"
            if key in done:
                continue
            row = {"key": key, "round": round_, "kind": "pointwise", "prompt_id": pid, "a": s["id"],
                   "critic": critic.name}
            try:
                parsed = critic.pointwise(video(s))
                row.update(raw=parsed.raw, labels=parsed.labels, reasons=parsed.reasons, scores=parsed.scores,
                           overall=parsed.overall)
            except CriticParseError as e:
                row.update(raw=e.raw, error=str(e))
                counts["parse_errors"] += 1
            rows.append(row)
        if pairwise:
            for a, b in itertools.permutations(group, 2):
                key = f"pair:{a['id']}|{b['id']}"
                if key in done:
                    continue
                row = {"key": key, "round": round_, "kind": "pairwise", "prompt_id": pid, "a": a["id"],
                       "b": b["id"], "critic": critic.name}
                try:
                    parsed = critic.pairwise(video(a), video(b))
                    row.update(raw=parsed.raw, verdicts=parsed.verdicts, reasons=parsed.reasons,
                               overall=parsed.overall)
                except CriticParseError as e:
                    row.update(raw=e.raw, error=str(e))
                    counts["parse_errors"] += 1
                rows.append(row)
        with ledger.transaction():
            for row in rows:
                ledger.add_judgment(row)
                counts[row["kind"]] += 1
        for s in group:
            frames_cache.pop(s["id"], None)
        bar.update(1)
    bar.close()
    return counts
