"""What ``vipo critic train|import|eval`` (on DATA.jsonl or a folder of videos) and ``vipo world annotate`` do once
the CLI has parsed them."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ..errors import UserError
from ..io import atomic

log = logging.getLogger(__name__)


def train_config(config: str | None, sets: list[str], flags: dict):
    """CriticTrainConfig: defaults < ``--config`` < ``--set`` < flags. ``--config`` is a recipe with a
    ``critic_train:`` section (its other sections are other verbs') or a file of bare keys; ``--set`` takes bare keys
    and ``critic_train.``-prefixed ones alike, a prefixed key winning over the same bare one."""
    from ..config import build, load_yaml, merge, parse_overrides, validate_tree
    from ..critics.learn.train import CriticTrainConfig

    data = load_yaml(config) if config else {}
    if isinstance(data.get("critic_train"), dict):
        data = data["critic_train"]
    over = parse_overrides(sets)
    if isinstance(over.get("critic_train"), dict):  # `--set critic_train.lr=...` and `--set lr=...` both count
        over = merge({k: v for k, v in over.items() if k != "critic_train"}, over["critic_train"])
    over.update({k: v for k, v in flags.items() if v is not None})
    cfg = build(CriticTrainConfig, merge(data, over), "critic_train")
    validate_tree(cfg, "critic_train.")
    return cfg


def train(data: str, out: str, cfg, progress: bool = True) -> int:
    from ..critics.learn.train import train_critic

    info = train_critic(data, out, cfg, progress)
    print(
        json.dumps(
            {k: info[k] for k in ("arch", "records", "train_seconds", "final_loss", "eval") if k in info}, indent=2
        )
    )
    how = (
        f"--critic learned --model {out}"
        if info["arch"] == "world"
        else f"--critic vlm --model {info.get('base', cfg.model)} --set adapter={out}"
    )
    print(f"critic: {out} (vipo judge DIR {how}; loss curve {Path(out) / 'loss.png'})")
    return 0


def import_records(kind: str, src: str, out: str, folder: str | None, test_fraction: float) -> int:
    from ..critics.learn import importers

    if not 0 <= test_fraction <= 1:
        raise UserError(f"critic import --test-fraction: {test_fraction} must be in [0, 1]")
    if kind == "judgments":
        if not folder:
            raise UserError("critic import judgments: give --videos DIR (the folder `vipo judge DIR` judged)")
        rows = importers.judgments(src, folder, out, test_fraction)
    else:
        rows = importers.IMPORTERS[kind](src, out, test_fraction)
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    print(f"{len(rows)} records ({splits['train']} train, {splits['test']} test) in {out}")
    return 0


def eval_records(data: str, critic, split: str, against: str, out: str | None) -> int:
    from ..critics.learn.accuracy import table_rows
    from ..critics.learn.data import read_records
    from ..critics.learn.train import evaluate_records

    records = read_records(data, split=None if split == "all" else split)
    if not records:
        raise UserError(f"{data}: no records in the {split} split")
    res = evaluate_records(critic, records, truth=against)
    res.update(critic=critic.name, truth=against, data=str(data), split=split, records=len(records))
    if out:
        atomic.write_json(Path(out), res)
    for name, cell in table_rows(res):
        print(f"{name:32s} {cell}", file=sys.stderr)
    print(json.dumps(res, indent=2))
    return 0


def eval_folder(folder: str, judge, truth_labels: str | None, out: str | None) -> int:
    """``vipo critic eval DIR``: the critic of the judge options ``judge`` (made once the folder has been read, so a
    bad folder is refused before any weights load) against the truth on a folder of videos with metadata.jsonl:
    people's annotations (``truth_labels``, the human critic's JSONL; the pairs they annotated, in both orders) or,
    without them, the embedded world's exact judge (every ordered pair of videos of one prompt; the prompts must be
    the world's)."""
    import itertools

    from ..critics.agreement import agreement
    from ..critics.base import Video
    from ..data.folders import folder_samples, sample_frames
    from ..stages.judge import check_prompts, make_critic

    root = Path(folder)
    samples = folder_samples(root)
    critic = make_critic(judge)
    check_prompts(critic, [(f"{root / 'metadata.jsonl'}:{s['line']}", s["prompt"]) for s in samples])
    if truth_labels:
        from ..critics.human import HumanCritic

        truth = HumanCritic(truth_labels)
        index = {s["file_name"]: i for i, s in enumerate(samples)}
        pairs = [(index[a], index[b]) for a, b in truth.annotated_pairs() if a in index and b in index]
        pairs += [(j, i) for i, j in pairs]
    else:
        from ..critics.world import WorldCritic
        from ..world import grammar

        bad = [s["prompt"] for s in samples if grammar.parse(s["prompt"]) is None]
        if bad:
            raise UserError(
                f"{root}: without --truth the world judge is the ground truth, and {bad[0]!r} is not a "
                "prompt of the world's grammar"
            )
        truth = WorldCritic()
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(s["prompt_id"], []).append(i)
        pairs = [p for g in groups.values() for p in itertools.permutations(g, 2)]
    videos = [Video(s["prompt"], sample_frames(root, s), str(root / s["file_name"])) for s in samples]
    res = agreement(critic, truth, videos, pairs)
    res.update(critic=critic.name, truth=truth.name, videos=len(videos))
    if out:
        atomic.write_json(Path(out), res)
    print(json.dumps(res, indent=2))
    return 0


def world_annotate(
    out: str,
    videos: str | None,
    model: str,
    lora: str | None,
    repeats: int,
    samples_per_prompt: int,
    annotators: int,
    error: float,
    seed: int,
    pairs_per_prompt: int | None,
    device: str,
    progress: bool = True,
) -> int:
    """Generate world clips (unless ``videos`` names a folder of them), then simulated annotators label them."""
    from ..world.annotators import annotate

    out_dir = Path(out)
    root = (
        Path(videos)
        if videos
        else generate_world_clips(out_dir / "clips", model, lora, repeats, samples_per_prompt, seed, device, progress)
    )
    summary = annotate(root, out_dir / "export", annotators, error, seed, pairs_per_prompt, progress=progress)
    sim = summary["simulated"]
    print(
        json.dumps(
            {
                "questions": summary["questions"],
                "critic_train_records": summary["critic_train_records"],
                "simulated": sim,
            },
            indent=1,
        )
    )
    for task, per in summary["agreement"].items():
        for d, a in per["dimensions"].items():
            pa = a["percent_agreement"]
            print(f"{task} {d}: percent agreement {'n/a' if pa is None else f'{100 * pa:.1f}%'}")
    print(
        f"labels: {out_dir / 'export' / 'critic_train.jsonl'} (vipo critic train "
        f"{out_dir / 'export' / 'critic_train.jsonl'} --out CRITIC)"
    )
    return 0


def generate_world_clips(
    out: Path,
    model: str,
    lora: str | None,
    repeats: int,
    samples_per_prompt: int,
    seed: int,
    device: str,
    progress: bool,
) -> Path:
    """Samples of every world combination (in-distribution and held-out), ``repeats`` random phrasings each,
    ``samples_per_prompt`` videos per phrasing, from ``model`` (+ ``lora``): resumable (a ledger in ``out``)."""
    import random

    from ..config import GenerateConfig
    from ..data.ledger import Ledger
    from ..device import resolve_device
    from ..models.policy import load_policy
    from ..stages.generate import PromptItem, generate
    from ..world import grammar

    if repeats < 1 or samples_per_prompt < 2:
        raise UserError("world annotate: --repeats >= 1 and --samples-per-prompt >= 2 (pairs need two) are needed")
    rng = random.Random(seed)
    items = [
        PromptItem(len(grammar.ALL) * r + i, grammar.random_prompt(a, rng), grammar.split_of(a))
        for r in range(repeats)
        for i, a in enumerate(grammar.ALL)
    ]
    policy = load_policy(model, lora, device=resolve_device(device))
    with Ledger(out / "ledger.sqlite") as ledger:
        generate(
            policy,
            items,
            out,
            ledger,
            0,
            GenerateConfig(samples_per_prompt=samples_per_prompt),
            seed,
            keep_latents=False,
            progress=progress,
        )
    return out / "samples"
