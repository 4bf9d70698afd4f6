"""``judge``: pointwise labels for every sample and pairwise verdicts for every pair of a prompt, in both orders.

The critic sees decoded pixels read back from the mp4 files (what anyone else would see), never seeds or metadata.
Each judgment stores the critic's raw text beside the parsed verdict; an answer that does not parse (after the
critic's own retries) is stored with its error and raw text, left out of pairs and examples, and counted. Judgments
already in the ledger are skipped on re-runs, except unparseable ones, which are asked again.

:func:`summarize` reports, from the ledger, the round's unparseable rate, position-swap consistency rate (the share
of pairs judged in both orders whose two overall verdicts agree) and label counts per dimension; the stage stops
with :class:`StageAborted` when the unparseable rate passes ``judge.max_unparseable``.

A video that does not decode, has no frames or not the frame count its sample row recorded is quarantined (its id
and reason in the ledger's ``quarantine`` table), never shown to the critic; past ``max_quarantined`` of the round's
samples the stage stops. Each prompt's judgments commit in one transaction, so a kill loses at most the group in
flight, and no committed judgment is asked again.
"""
from __future__ import annotations

import itertools
import logging
from collections import Counter, defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from .. import faults
from ..config import JudgeConfig
from ..critics.base import DIMENSIONS, Critic, CriticParseError, Video
from ..data.ledger import Ledger
from ..data.pairs import consistent_verdict
from ..errors import StageAborted
from ..io.video import read_mp4

log = logging.getLogger(__name__)
MIN_FOR_EARLY_ABORT = 50  # judgments before the unparseable rate is trusted mid-stage


def make_critic(cfg: JudgeConfig | str) -> Critic:
    cfg = JudgeConfig(critic=cfg) if isinstance(cfg, str) else cfg
    name = cfg.critic
    if name == "world":
        from ..critics.world import WorldCritic

        return WorldCritic()
    if name == "metric":
        from ..critics.metric import MetricCritic

        return MetricCritic()
    if name == "openai":
        from ..critics.openai import OpenAICritic

        return OpenAICritic(cfg)
    if name == "vlm":
        from ..critics.vlm import VLMCritic

        return VLMCritic(cfg)
    if name == "human":
        from ..critics.human import HumanCritic

        return HumanCritic(cfg.labels)
    if name == "ensemble":
        from ..config import member
        from ..critics.ensemble import EnsembleCritic

        return EnsembleCritic([make_critic(member(cfg, m)) for m in cfg.members], cfg.combine)
    if name == "omniscore":
        from ..critics.omniscore import OmniScoreCritic

        return OmniScoreCritic(cfg)
    raise ValueError(f"unknown critic {name!r}")


def _row(row: dict, parsed, kind: str) -> dict:
    if isinstance(parsed, CriticParseError):
        return dict(row, raw=parsed.raw, error=str(parsed))
    if kind == "pointwise":
        return dict(row, raw=parsed.raw, labels=parsed.labels, reasons=parsed.reasons, scores=parsed.scores,
                    overall=parsed.overall)
    return dict(row, raw=parsed.raw, verdicts=parsed.verdicts, reasons=parsed.reasons, overall=parsed.overall)


def read_checked(path: Path, frames: int | None = None):
    """Decoded frames, or the reason the video is unusable (unreadable, no frames, wrong frame count)."""
    try:
        out = read_mp4(path)
    except Exception as e:  # noqa: BLE001  (PyAV raises many types for a corrupt or truncated file)
        return f"unreadable video ({type(e).__name__}: {e})"
    if frames is not None and len(out) != frames:
        return f"{len(out)} frames, {frames} expected"
    return out


def check_quarantine(ledger: Ledger, round_: int, n_samples: int, limit: float, stage: str) -> None:
    bad = ledger.rows("quarantine", round_)
    if n_samples and len(bad) / n_samples > limit:
        raise StageAborted(f"round {round_} {stage}: {len(bad)} of {n_samples} samples quarantined (first: "
                           f"{bad[0]['id']}: {bad[0]['reason']}), above generate.max_quarantined={limit}")


def judge(critic: Critic, samples: list[dict], round_dir: Path, ledger: Ledger, round_: int,
          pairwise: bool = True, progress: bool = True, max_unparseable: float = 1.0,
          max_quarantined: float = 1.0) -> dict:
    round_dir = Path(round_dir)
    done = {j["key"] for j in ledger.rows("judgments", round_) if "error" not in j}
    quarantined = ledger.quarantined(round_)
    groups: dict[int, list[dict]] = defaultdict(list)
    for s in samples:
        groups[s["prompt_id"]].append(s)
    frames_cache: dict[str, Video] = {}

    def video(s: dict) -> Video:
        if s["id"] not in frames_cache:
            path = round_dir / s["file_name"]
            frames_cache[s["id"]] = Video(s["prompt"], read_mp4(path), str(path))
        return frames_cache[s["id"]]

    bar = tqdm(total=len(groups), disable=not progress, desc=f"judge r{round_}", unit="prompt")
    for pid, group in sorted(groups.items()):
        bad = {}
        for s in group:
            if s["id"] in quarantined:
                continue
            got = read_checked(round_dir / s["file_name"], s.get("frames"))
            if isinstance(got, str):
                log.warning("round %d: %s: %s; quarantined", round_, s["id"], got)
                bad[s["id"]] = got
            else:
                frames_cache[s["id"]] = Video(s["prompt"], got, str(round_dir / s["file_name"]))
        if bad:
            with ledger.transaction():
                for sid, reason in bad.items():
                    ledger.quarantine(round_, sid, reason)
            quarantined |= set(bad)
            check_quarantine(ledger, round_, len(samples), max_quarantined, "judge")
        group = [s for s in group if s["id"] not in quarantined]
        rows = []
        todo = [s for s in group if f"pw:{s['id']}" not in done]
        for s, parsed in zip(todo, critic.pointwise_many([video(s) for s in todo])):
            rows.append(_row({"key": f"pw:{s['id']}", "round": round_, "kind": "pointwise", "prompt_id": pid,
                              "a": s["id"], "critic": critic.name}, parsed, "pointwise"))
        if pairwise:
            todo = [(a, b) for a, b in itertools.permutations(group, 2) if f"pair:{a['id']}|{b['id']}" not in done]
            for (a, b), parsed in zip(todo, critic.pairwise_many([(video(a), video(b)) for a, b in todo])):
                rows.append(_row({"key": f"pair:{a['id']}|{b['id']}", "round": round_, "kind": "pairwise",
                                  "prompt_id": pid, "a": a["id"], "b": b["id"], "critic": critic.name},
                                 parsed, "pairwise"))
        with ledger.transaction():
            for row in rows:
                ledger.add_judgment(row, replace=True)
            faults.point("judge.mid_record")
        faults.point("judge.after_commit")
        for s in group:
            frames_cache.pop(s["id"], None)
        bar.update(1)
        faults.check_term(f"round {round_} judge")
        if any("error" in r for r in rows):
            info = summarize(ledger.rows("judgments", round_))
            if info["judgments"] >= MIN_FOR_EARLY_ABORT:
                _check_rate(info, max_unparseable, round_)
    bar.close()
    info = summarize(ledger.rows("judgments", round_))
    _check_rate(info, max_unparseable, round_)
    log.info("round %d judged: %d judgments, %.1f%% unparseable, consistency %s; labels %s", round_,
             info["judgments"], 100 * info["unparseable_rate"],
             "n/a" if info["consistency_rate"] is None else f"{100 * info['consistency_rate']:.1f}%", info["labels"])
    return info


def _check_rate(info: dict, limit: float, round_: int) -> None:
    if info["unparseable_rate"] > limit:
        raise StageAborted(f"round {round_} judge: {info['parse_errors']} of {info['judgments']} judgments "
                           f"({100 * info['unparseable_rate']:.1f}%) unparseable, above judge.max_unparseable="
                           f"{limit}; see the 'raw' text of the rows with an 'error' in the ledger or export")


def summarize(judgments: list[dict]) -> dict:
    """Counts, unparseable rate, position-swap consistency and label counts per dimension of a set of judgments."""
    kinds = Counter(j["kind"] for j in judgments)
    errors = sum("error" in j for j in judgments)
    labels = {d: dict(Counter(j["labels"][d] for j in judgments if "labels" in j)) for d in DIMENSIONS}
    verdicts = {d: dict(Counter(j["verdicts"][d] for j in judgments if "verdicts" in j)) for d in DIMENSIONS}
    overall = {(j["a"], j["b"]): j["overall"] for j in judgments if j["kind"] == "pairwise" and "overall" in j}
    both = [(x, y) for x, y in overall if x < y and (y, x) in overall]
    consistent = sum(consistent_verdict(overall[(x, y)], overall[(y, x)]) is not None for x, y in both)
    return {"pointwise": kinds["pointwise"], "pairwise": kinds["pairwise"], "judgments": len(judgments),
            "parse_errors": errors, "unparseable_rate": errors / len(judgments) if judgments else 0.0,
            "pairs_both_orders": len(both), "consistency_rate": consistent / len(both) if both else None,
            "labels": labels, "pairwise_verdicts": verdicts}


def folder_samples(root: Path) -> list[dict]:
    """Samples of any folder of videos: ``metadata.jsonl`` rows with ``file_name`` and ``prompt`` (the layout of
    Hugging Face video datasets and of ``vipo generate``); samples of one prompt form one group for pairs."""
    import json

    from ..errors import UserError

    meta = Path(root) / "metadata.jsonl"
    if not meta.is_file():
        raise UserError(f"{root}: no metadata.jsonl (one JSON object per line with file_name and prompt)")
    samples, prompt_ids = [], {}
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, prompt = str(row["file_name"]), str(row["prompt"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{meta}:{n}: expected a JSON object with file_name and prompt") from None
        if not (Path(root) / name).is_file():
            raise UserError(f"{meta}:{n}: {name}: file not found")
        pid = prompt_ids.setdefault(prompt, len(prompt_ids))
        samples.append({"id": name, "prompt_id": pid, "prompt": prompt, "file_name": name})
    if not samples:
        raise UserError(f"{meta}: no videos listed")
    return samples
