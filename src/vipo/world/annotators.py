"""Simulated annotators on the embedded world: the exact judge's verdicts, each flipped with a known error rate.

The world's judge is never wrong; people are. To study a critic learned from people on the CPU, each of
``annotators`` simulated people answers every item (a video, or a pair of videos of one prompt) on the three
dimensions: with probability ``1 - error`` the world judge's own verdict and reason, otherwise a uniformly drawn
other verdict (with a reason saying only what it picked). Draws are seeded per (seed, item, annotator), so the same
folder gives the same answers in any order.

The answers then go through exactly the export people's answers go through (:func:`vipo.annotate.export.
write_export`): the same plurality vote (a tie is no label), the same ``critic_train.jsonl`` records, the same
agreement report (percent agreement, Krippendorff's alpha). One difference: the split. The annotation export puts a
hashed share of prompts in ``test``; here ``test`` is the world's held-out combinations (:data:`~vipo.world.grammar.
HELDOUT`), so a critic's accuracy "on held-out prompts" means prompts whose colour-shape-direction combination it
never saw, and the in-distribution combinations (the loop's training prompts) are all for training.

Default error rate: 0.15 per annotator and dimension. With three annotators and three choices a vote then matches the
exact verdict on ~97% of the decided questions (``(1-e)^3 + 3(1-e)^2 e`` right, ~3% tied and dropped), and two
annotators agree with each other on ``(1-e)^2 + e^2/2`` = 73% of their ratings.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .. import faults, seeds
from ..critics.base import DIMENSIONS, LABELS, PAIR_VERDICTS, Video
from ..critics.world import WorldCritic
from ..errors import UserError
from ..io import atomic
from ..io.video import read_mp4
from . import grammar

DEFAULT_ERROR = 0.15
CHOICES = {"pointwise": LABELS, "pairwise": PAIR_VERDICTS}


def truth_of(critic: WorldCritic, item, videos: dict[str, Video]) -> tuple[dict, dict]:
    """The exact judge's verdicts and reasons on an item (pairwise: A = the item's first video)."""
    if item.task == "pointwise":
        p = critic.pointwise(videos[item.videos[0]])
        return p.labels, p.reasons
    p = critic.pairwise(videos[item.videos[0]], videos[item.videos[1]])
    return p.verdicts, p.reasons


def simulate(
    items, truths: dict[str, tuple[dict, dict]], annotators: int = 3, error: float = DEFAULT_ERROR, seed: int = 0
) -> list:
    """Every simulated annotator's :class:`~vipo.annotate.votes.Answer` to every item."""
    from ..annotate.votes import Answer

    if not 0 <= error < 1:
        raise UserError(f"world annotate --error: {error} must be in [0, 1)")
    if annotators < 1:
        raise UserError(f"world annotate --annotators: {annotators} must be >= 1")
    out = []
    for it in items:
        verdicts, reasons = truths[it.id]
        for k in range(annotators):
            rng = random.Random(seeds.stream_seed("annotator", seed, it.id, k))
            got, why = {}, {}
            for d in DIMENSIONS:
                if rng.random() < error:
                    got[d] = rng.choice([c for c in CHOICES[it.task] if c != verdicts[d]])
                    why[d] = f"looked {got[d]} to me"
                else:
                    got[d], why[d] = verdicts[d], reasons[d]
            out.append(Answer(it.id, f"sim-{k + 1}", it.task, got, why))
    return out


def annotate(
    root: str | Path,
    out: str | Path,
    annotators: int = 3,
    error: float = DEFAULT_ERROR,
    seed: int = 0,
    pairs_per_prompt: int | None = None,
    frames: int = 16,
    progress: bool = True,
) -> dict:
    """Simulated annotators label the world videos of ``root`` (a folder with ``metadata.jsonl``); the export goes
    to ``out`` (``critic_train.jsonl``, ``labels.jsonl``, ``votes.jsonl``, ``agreement.json``, ``videos/``)."""
    from tqdm.auto import tqdm

    from ..annotate.export import ExportOptions, write_export
    from ..annotate.items import folder_items

    root, out = Path(root), Path(out)
    items = folder_items(root, "both", pairs_per_prompt, seed)
    bad = next((it for it in items if grammar.parse(it.prompt) is None), None)
    if bad is not None:
        raise UserError(f"{root}: {bad.videos[0]}: {bad.prompt!r} is not a prompt of the world's grammar")
    critic = WorldCritic()
    names = sorted({v for it in items for v in it.videos})
    prompt_of = {v: it.prompt for it in items for v in it.videos}
    videos = {}
    for name in tqdm(names, disable=not progress, desc="world judge", unit="video"):
        faults.check_term("world annotate")  # SIGTERM: stop between clips (the export is not written: exit 143)
        try:
            videos[name] = Video(prompt_of[name], read_mp4(root / name), str(root / name))
        except Exception as e:  # noqa: BLE001  (PyAV raises many types for a bad file)
            raise UserError(f"{root / name}: not a usable video ({type(e).__name__}: {e})") from None
        critic.scores(videos[name])
    truths = {it.id: truth_of(critic, it, videos) for it in items}
    answers = simulate(items, truths, annotators, error, seed)
    summary = write_export(
        out, root, items, answers, ExportOptions(min_annotators=annotators, test_fraction=0.0, question_frames=frames)
    )
    # the world's held-out combinations are the test split (the export hashed every prompt into train)
    path = out / "critic_train.jsonl"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    for r in rows:
        r["split"] = "test" if grammar.parse(r["prompt"]) in grammar.HELDOUT else "train"
    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    truth_rows = [
        {"id": it.id, "task": it.task, "videos": list(it.videos), "verdicts": truths[it.id][0]} for it in items
    ]
    atomic.write_text(out / "truth.jsonl", "".join(json.dumps(r) + "\n" for r in truth_rows))
    vote_right = sum(r["verdict"] == truths[r["id"].rsplit("#", 1)[0]][0][r["dimension"]] for r in rows)
    summary.update(
        simulated={
            "annotators": annotators,
            "error": error,
            "seed": seed,
            "vote_matches_truth": vote_right / len(rows) if rows else None,
            "splits": {s: sum(r["split"] == s for r in rows) for s in ("train", "test")},
        }
    )
    atomic.write_json(out / "simulated.json", summary["simulated"])
    return summary
