"""Win rate against the base: each round's evaluation clip judged against the base model's clip of the same prompt
and seed, in both orders, by the evaluating critic.

Diffusion-DPO (Wallace et al., 2024) measures alignment as people's win rate of the tuned model against its base on
the same prompts; here the evaluating critic is the judge. Each clip is asked twice, as (round K, base) and
as (base, round K), and a verdict counts only when the two orders agree (the position-swap rule of IPO and of the
pairs stage, :func:`vipo.data.pairs.consistent_verdict`): a **win** for round K, a **loss** or a **tie**. Orders that
disagree are **inconsistent**; a question the critic could not answer leaves the clip **unjudged**. Both are counted
and left out of the rates, which are over the consistent verdicts ``n = wins + losses + ties``, each with its 95%
Wilson interval (:mod:`vipo.stats`):

    win_rate = wins / n,   tie_rate = ties / n,   loss_rate = losses / n

The same counts per dimension (semantic, fidelity, motion) come from the critic's per-dimension verdicts. Every
question's raw text is kept in ``versus_base.jsonl`` beside the clips.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from .. import faults
from ..critics.base import DIMENSIONS, CriticParseError, Pairwise, Video
from ..data.pairs import consistent_verdict
from ..errors import UserError
from ..io import atomic
from ..io.text import jsonl_objects
from ..io.video import read_mp4
from ..stats import wilson

OUTCOME = {"A": "win", "B": "loss", "Tie": "tie"}
CHUNK = 8  # clips per critic call (16 questions)


def outcome(ab: str | None, ba: str | None) -> str:
    """Round K's result from the verdict with it shown first (``ab``) and with the base shown first (``ba``)."""
    if ab is None or ba is None:
        return "unjudged"
    agreed = consistent_verdict(ab, ba)
    return "inconsistent" if agreed is None else OUTCOME[agreed]


def tally(outcomes: list[str]) -> dict:
    """Counts and rates (with Wilson intervals under ``ci95``) of a list of outcomes."""
    counts = {k: outcomes.count(k) for k in ("win", "loss", "tie", "inconsistent", "unjudged")}
    n = counts["win"] + counts["loss"] + counts["tie"]
    out = {
        "wins": counts["win"],
        "losses": counts["loss"],
        "ties": counts["tie"],
        "inconsistent": counts["inconsistent"],
        "unjudged": counts["unjudged"],
        "n": n,
    }
    out["ci95"] = {}
    for key, k in (("win_rate", "win"), ("tie_rate", "tie"), ("loss_rate", "loss")):
        # no consistent verdict at all: no rate (null, not NaN, which JSON does not have)
        out[key] = counts[k] / n if n else None
        out["ci95"][key] = list(wilson(counts[k], n)) if n else None
    return out


def summarize(records: list[dict]) -> dict[str, dict]:
    """Per split: the overall tally (keys ``win_rate`` ... at the top, for eval.metric and the report) and, under
    ``versus_base``, the counts and the per-dimension tallies."""
    out: dict[str, dict] = {}
    for split in dict.fromkeys(r["split"] for r in records):
        rs = [r for r in records if r["split"] == split]
        overall = tally([r["outcome"] for r in rs])
        dims = {d: tally([r.get("dimensions", {}).get(d, "unjudged") for r in rs]) for d in DIMENSIONS}
        block = {k: overall[k] for k in ("win_rate", "tie_rate", "loss_rate")}
        block["ci95"] = overall["ci95"]
        block["versus_base"] = {
            **{k: overall[k] for k in ("wins", "losses", "ties", "inconsistent", "unjudged", "n")},
            "dimensions": dims,
        }
        out[split] = block
    return out


def _verdicts(p) -> tuple[str | None, dict[str, str]]:
    if isinstance(p, CriticParseError):
        return None, {}
    return p.overall, dict(p.verdicts)


def versus_base(critic, out_dir: Path, base_dir: Path, rows: list[dict], progress: bool = True) -> dict[str, dict]:
    """Judge every clip of ``rows`` in ``out_dir`` against the same file in ``base_dir`` (the base's evaluation),
    write ``versus_base.jsonl`` and return :func:`summarize`'s per-split blocks."""
    out_dir, base_dir = Path(out_dir), Path(base_dir)
    base_rows = _metadata(base_dir)
    for r in rows:
        b = base_rows.get(r["file_name"])
        if b is None or (b["prompt"], b["seed"]) != (r["prompt"], r["seed"]):
            raise UserError(
                f"{base_dir / 'metadata.jsonl'}: the base's clip {r['file_name']} is "
                f"{'missing' if b is None else 'of another prompt or seed'}; the win rate compares the "
                "same prompt and seed (was the evaluation's config changed? re-run round 0's eval)"
            )
    records = []
    bar = tqdm(total=len(rows), disable=not progress, desc="versus base", unit="clip")
    for i in range(0, len(rows), CHUNK):
        faults.check_term("eval")  # SIGTERM stops between chunks of questions, as the eval stage does between clips
        chunk = rows[i : i + CHUNK]
        mine = [Video(r["prompt"], read_mp4(out_dir / r["file_name"]), str(out_dir / r["file_name"])) for r in chunk]
        base = [Video(r["prompt"], read_mp4(base_dir / r["file_name"]), str(base_dir / r["file_name"])) for r in chunk]
        answers = critic.pairwise_many([p for m, b in zip(mine, base) for p in ((m, b), (b, m))])
        for j, r in enumerate(chunk):
            ab, ba = answers[2 * j], answers[2 * j + 1]
            (o_ab, d_ab), (o_ba, d_ba) = _verdicts(ab), _verdicts(ba)
            rec = {k: r[k] for k in ("file_name", "prompt", "seed", "split")}
            rec.update(outcome=outcome(o_ab, o_ba), ab=o_ab, ba=o_ba, raw_ab=ab.raw, raw_ba=ba.raw)
            rec["dimensions"] = {d: outcome(d_ab.get(d), d_ba.get(d)) for d in DIMENSIONS}
            for key, p in (("error_ab", ab), ("error_ba", ba)):
                if not isinstance(p, Pairwise):
                    rec[key] = str(p)
            records.append(rec)
        bar.update(len(chunk))
    bar.close()
    atomic.write_text(out_dir / "versus_base.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return summarize(records)


def _metadata(folder: Path) -> dict[str, dict]:
    path = folder / "metadata.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found; the win rate against the base needs round 0's evaluation clips")
    return {r.get("file_name"): r for _, r in jsonl_objects(path)}
