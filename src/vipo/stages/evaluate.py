"""``eval``: judge pass rates per dimension on fixed evaluation seeds, per split (the world's in-distribution and
held-out combinations, or a prompt suite's held-out prompts and VBench's, :mod:`vipo.data.suites`).

Evaluation seeds come from a range training never draws from (``vipo.seeds``). Every clip is written as an mp4 to
``eval/`` with a ``metadata.jsonl`` (file_name, prompt, seed, split) so anyone can re-check the numbers with their own
reader; the critic judges the decoded mp4 pixels, exactly what such a reader sees. Per split, ``eval.json`` holds the
critic's Good rate per dimension and mean scores (:func:`summarize`; the world judge's exact attribute checks where it
evaluates), the win rate against the base's clips of the same prompts and seeds (:mod:`vipo.stages.winrate`, from
round 1 on) and VBench-style dimensions (:func:`vipo.stages.vbench.split_scores`, in ``eval/vbench/`` too).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import dist, faults, seeds
from ..config import EvalConfig
from ..critics.base import CriticParseError, Video, dimension_score
from ..io import atomic
from ..io.text import numbered_lines
from ..io.video import read_mp4, write_mp4
from ..models.base import VideoModel
from ..stats import wilson
from ..world import grammar
from .generate import batches, encode, prepare_text
from .vbench import split_scores
from .winrate import versus_base

log = logging.getLogger(__name__)
SPLITS = ("indist", "heldout")
JUDGE_CHUNK = 16  # clips judged per critic call (batched or concurrent critics use the batch)


def eval_prompts(cfg: EvalConfig) -> list[dict]:
    """The fixed evaluation set: ``clips_per_split`` clips per split cycling over its combinations."""
    rows = []
    for split, combos in (("indist", grammar.INDIST), ("heldout", grammar.HELDOUT_LIST)):
        for i in range(cfg.clips_per_split):
            a = combos[i % len(combos)]
            rows.append(
                {
                    "file_name": f"{split}-{i:03d}.mp4",
                    "prompt": a.prompt(),
                    "split": split,
                    "seed": seeds.eval_seed(cfg.seed, split, i),
                }
            )
    return rows


def evaluate(
    model: VideoModel,
    out_dir: Path,
    cfg: EvalConfig,
    critic,
    progress: bool = True,
    fps: int = 8,
    text_cache=None,
    rows: list[dict] | None = None,
    base_dir: Path | None = None,
    features=None,
) -> dict:
    """Generate, judge and summarize the evaluation clips ``rows`` (default: the world's, :func:`eval_prompts`);
    ``base_dir``: the base's evaluation folder, for the win rate; ``features``: the VBench feature models
    (:class:`vipo.critics.features.FeatureModels`; default: the weight-free dimensions only).

    Under a launcher, sampler batches (of the one-process grid: a clip's bytes do not depend on N) and judge chunks
    are sharded across ranks (item ``j`` to rank ``j % N``); the main rank writes the records, in the one-process
    order, and computes the feature dimensions and the win rate against the base alone. The clips on disk are the
    record of what is done."""
    out_dir = Path(out_dir)
    if dist.from_main(lambda: (out_dir / "eval.json").is_file()):
        return read_summary(out_dir)
    rows = eval_prompts(cfg) if rows is None else rows
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic.clean_temp(out_dir)
        atomic.write_text(out_dir / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    dist.barrier()  # (no rank writes a clip before the main rank has cleaned the folder)
    todo = [b for b in batches(rows, cfg.batch_size) if not all((out_dir / r["file_name"]).is_file() for r in b)]
    todo = dist.broadcast(todo)  # one view of what is done for every rank
    if todo:
        prepare_text(model, [r["prompt"] for b in todo for r in b], text_cache)
    uncond = encode(model, [""], text_cache) if todo else None
    missing = sum(len(b) for b in todo)
    bar = tqdm(
        total=len(rows),
        initial=len(rows) - missing,
        disable=not progress or not dist.is_main(),
        desc="eval",
        unit="video",
    )

    def sample(chunk) -> int:
        if chunk is None:
            return 0
        with torch.no_grad():
            cond = encode(model, [r["prompt"] for r in chunk], text_cache)
            frames = model.decode(model.sample(cond, uncond, [r["seed"] for r in chunk], cfg.num_steps, cfg.guidance))
        written = 0
        for r, f in zip(chunk, frames):
            if not (out_dir / r["file_name"]).is_file():  # (a batch killed half-written: only what is missing)
                write_mp4(out_dir / r["file_name"], f, fps=fps)
                written += 1
        return written

    for s in range(dist.steps(len(todo))):
        mine = dist.shard(todo[s * dist.world() : (s + 1) * dist.world()])
        n, stop = dist.step(lambda: sample(mine[0] if mine else None), sum, faults.term_requested)
        bar.update(n)
        if stop:
            raise faults.Terminated("eval")
    bar.close()

    def judge(chunk) -> list[dict]:
        if chunk is None:
            return []
        results = []
        videos = [Video(r["prompt"], read_mp4(out_dir / r["file_name"]), str(out_dir / r["file_name"])) for r in chunk]
        for r, video, pw in zip(chunk, videos, critic.pointwise_many(videos)):
            if isinstance(pw, CriticParseError):  # recorded, left out of the rates
                results.append(dict(r, error=str(pw), raw=pw.raw))
                continue
            res = dict(r, labels=pw.labels, scores=pw.scores, raw=pw.raw)
            if critic.attribute_checks:  # the world critic also reports the exact attribute checks
                s = critic.scores(video)
                res.update(color_ok=s.color_ok, shape_ok=s.shape_ok, direction_ok=s.direction_ok, passed=s.passed)
            results.append(res)
        return results

    chunks = batches(rows, JUDGE_CHUNK)
    results: list[dict] = []
    for s in range(dist.steps(len(chunks))):
        mine = dist.shard(chunks[s * dist.world() : (s + 1) * dist.world()])
        got, stop = dist.step(
            lambda: judge(mine[0] if mine else None), lambda parts: [r for p in parts for r in p], faults.term_requested
        )
        results += got if dist.is_main() else []
        if stop:
            raise faults.Terminated("eval")

    def write() -> dict:
        atomic.write_text(out_dir / "results.jsonl", "".join(json.dumps(r) + "\n" for r in results))
        summary = summarize(results)
        # (the main rank alone: the feature dimensions and the win rate against the base are not sharded yet)
        extra = [split_scores(out_dir, rows, device=model.device, features=features)]
        if base_dir is not None and cfg.versus_base:
            extra.append(versus_base(critic, out_dir, base_dir, rows, progress))
        for blocks in extra:
            for split, block in blocks.items():
                d = summary.setdefault(split, {})
                d.setdefault("ci95", {}).update(block.pop("ci95", {}))
                d.update(block)
        summary["config"] = {
            "clips_per_split": cfg.clips_per_split,
            "num_steps": cfg.num_steps,
            "guidance": cfg.guidance,
            "seed": cfg.seed,
            "critic": critic.name,
            "size": list(model.clip_size()),
        }
        atomic.write_json(out_dir / "eval.json", summary)
        return summary

    return dist.from_main(write)


def summarize(results: list[dict]) -> dict:
    """Per split: the rates (fraction of judged clips), each with its 95% Wilson interval under ``ci95`` (clip count
    ``n``; unparseable clips are counted apart and left out), and the mean scores."""
    out: dict = {}
    for split in dict.fromkeys(r["split"] for r in results):
        rs = [r for r in results if r["split"] == split and "labels" in r]
        if not rs:
            continue
        d: dict = {"n": len(rs)}
        if any(r["split"] == split and "error" in r for r in results):
            d["unparseable"] = sum(r["split"] == split and "error" in r for r in results)
        hits: dict[str, int] = {}
        if "passed" in rs[0]:
            for k in ("color_ok", "shape_ok", "direction_ok", "passed"):
                hits["semantic_pass" if k == "passed" else k.replace("_ok", "")] = sum(bool(r[k]) for r in rs)
        for dim in ("semantic", "fidelity", "motion"):
            hits[f"{dim}_good"] = sum(r["labels"][dim] == "Good" for r in rs)
        for k, v in hits.items():
            d[k] = v / len(rs)
        for dim in ("semantic", "fidelity", "motion"):
            # graded where the critic grades, else the label's score (an LLM critic's clips have labels only)
            d[f"{dim}_score"] = float(np.mean([dimension_score(r.get("scores", {}), r["labels"], dim) for r in rs]))
        d["score"] = float(np.mean([d[f"{dim}_score"] for dim in ("semantic", "fidelity", "motion")]))
        d["ci95"] = {k: list(wilson(v, len(rs))) for k, v in hits.items()}
        out[split] = d
    return out


def read_summary(out_dir: str | Path) -> dict:
    """A finished evaluation's ``eval.json``, with what :func:`summarize` derives from its ``results.jsonl`` (rates,
    mean scores, intervals) recomputed by today's rules, so rounds evaluated before a rule changed never mix with
    later ones (before 2026-12-03 a critic without graded scores, openai, vlm or human, had every ``*_score`` 0); the
    file is rewritten once, by the main process, when it differed. Every reader of a finished evaluation reads here."""
    out_dir = Path(out_dir)
    summary = atomic.read_json(out_dir / "eval.json")
    if not (out_dir / "results.jsonl").is_file():
        return summary
    fresh = summarize([json.loads(line) for _, line in numbered_lines(out_dir / "results.jsonl")])
    merged = json.loads(json.dumps(summary))
    for split, block in fresh.items():
        d = merged.setdefault(split, {})
        d.setdefault("ci95", {}).update(block.pop("ci95"))
        d.update(block)
    if merged != summary and dist.is_main():
        log.info("%s: eval.json's summary recomputed from results.jsonl by the current rules", out_dir)
        atomic.write_json(out_dir / "eval.json", merged)
    return merged
