"""``eval``: judge pass rates per dimension on fixed evaluation seeds, per split (the world's in-distribution and
held-out combinations, or a prompt suite's held-out prompts and VBench's, :mod:`vipo.data.suites`).

Evaluation seeds come from a range training never draws from (``vipo.seeds``). Every clip is written as an mp4 to
``eval/`` with a ``metadata.jsonl`` (file_name, prompt, seed, split) so anyone can re-check the numbers with their own
reader; the critic judges the decoded mp4 pixels, exactly what such a reader sees. Per split, ``eval.json`` holds the
critic's Good rate per dimension and mean scores (:func:`summarize`; the world judge's exact attribute checks where it
evaluates), the win rate against the base's clips of the same prompts and seeds (:mod:`vipo.stages.winrate`, from
round 1 on) and VBench-style dimensions (:func:`vipo.stages.metrics.split_scores`, in ``eval/vbench/`` too).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import faults, seeds
from ..config import EvalConfig
from ..critics.base import CriticParseError, Video
from ..io import atomic
from ..io.video import read_mp4, write_mp4
from ..models.base import VideoModel
from ..stats import wilson
from ..world import grammar
from .generate import encode
from .metrics import split_scores
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
            rows.append({"file_name": f"{split}-{i:03d}.mp4", "prompt": a.prompt(), "split": split,
                         "seed": seeds.eval_seed(cfg.seed, split, i)})
    return rows


def evaluate(model: VideoModel, out_dir: Path, cfg: EvalConfig, critic, progress: bool = True,
             fps: int = 8, text_cache=None, rows: list[dict] | None = None, base_dir: Path | None = None,
             features=None) -> dict:
    """Generate, judge and summarize the evaluation clips ``rows`` (default: the world's, :func:`eval_prompts`);
    ``base_dir``: the base's evaluation folder, for the win rate; ``features``: the VBench feature models
    (:class:`vipo.critics.features.FeatureModels`; default: the weight-free dimensions only)."""
    out_dir = Path(out_dir)
    if (out_dir / "eval.json").is_file():
        return atomic.read_json(out_dir / "eval.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.clean_temp(out_dir)
    rows = eval_prompts(cfg) if rows is None else rows
    atomic.write_text(out_dir / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    todo = [r for r in rows if not (out_dir / r["file_name"]).is_file()]
    uncond = encode(model, [""], text_cache)
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), disable=not progress, desc="eval", unit="video")
    for i in range(0, len(todo), cfg.batch_size):
        chunk = todo[i:i + cfg.batch_size]
        with torch.no_grad():
            cond = encode(model, [r["prompt"] for r in chunk], text_cache)
            frames = model.decode(model.sample(cond, uncond, [r["seed"] for r in chunk], cfg.num_steps,
                                               cfg.guidance))
        for r, f in zip(chunk, frames):
            write_mp4(out_dir / r["file_name"], f, fps=fps)
        bar.update(len(chunk))
        faults.check_term("eval")  # SIGTERM: stop between batches; a re-run generates only the missing clips
    bar.close()
    results = []
    for i in range(0, len(rows), JUDGE_CHUNK):
        faults.check_term("eval")
        chunk = rows[i:i + JUDGE_CHUNK]
        videos = [Video(r["prompt"], read_mp4(out_dir / r["file_name"]), str(out_dir / r["file_name"])) for r in chunk]
        for r, video, pw in zip(chunk, videos, critic.pointwise_many(videos)):
            if isinstance(pw, CriticParseError):  # recorded, left out of the rates
                results.append(dict(r, error=str(pw), raw=pw.raw))
                continue
            res = dict(r, labels=pw.labels, scores=pw.scores, raw=pw.raw)
            if hasattr(critic, "scores"):  # the world critic also reports the exact attribute checks
                s = critic.scores(video)
                res.update(color_ok=s.color_ok, shape_ok=s.shape_ok, direction_ok=s.direction_ok, passed=s.passed)
            results.append(res)
    atomic.write_text(out_dir / "results.jsonl", "".join(json.dumps(r) + "\n" for r in results))
    summary = summarize(results)
    extra = [split_scores(out_dir, rows, device=model.device, features=features)]
    if base_dir is not None and cfg.versus_base:
        extra.append(versus_base(critic, out_dir, base_dir, rows, progress))
    for blocks in extra:
        for split, block in blocks.items():
            d = summary.setdefault(split, {})
            d.setdefault("ci95", {}).update(block.pop("ci95", {}))
            d.update(block)
    summary["config"] = {"clips_per_split": cfg.clips_per_split, "num_steps": cfg.num_steps,
                         "guidance": cfg.guidance, "seed": cfg.seed, "critic": critic.name,
                         "size": list(model.clip_size())}
    atomic.write_json(out_dir / "eval.json", summary)
    return summary


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
            d[f"{dim}_score"] = float(np.mean([r["scores"].get(dim, 0.0) for r in rs]))
        d["score"] = float(np.mean([d[f"{dim}_score"] for dim in ("semantic", "fidelity", "motion")]))
        d["ci95"] = {k: list(wilson(v, len(rs))) for k, v in hits.items()}
        out[split] = d
    return out
