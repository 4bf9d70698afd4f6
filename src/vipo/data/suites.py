"""Which prompts a run trains on and which it is evaluated on, never the same ones.

``eval.prompts`` names the evaluation set: ``world`` (the embedded world's grammar, split into its in-distribution
and held-out combinations), a prompt file (one prompt per line, e.g. written by ``vipo prompts build|import``), or
``auto`` (= ``prompts.source``). ``eval.vbench`` adds a ``vbench`` split (VBench's per-dimension prompt lists through
``vipo prompts import --format vbench``). The rules:

- training and evaluation from **one file**: its distinct prompts are shuffled with ``eval.seed`` and
  ``eval.heldout_fraction`` of them (at least one) become the ``heldout`` split; training draws from the rest only.
  The split depends on the file's prompts and the seed alone, so every round and every re-run sees the same one;
- **two files**: an evaluation prompt that is also a training prompt (case, spacing and punctuation ignored) stops
  the run at start with one line naming both lines; the same for every ``vbench`` prompt;
- world training prompts (any phrasing of the in-distribution combinations) against an evaluation file: an
  evaluation prompt that reads as an in-distribution combination is refused likewise.

Each split's clips cycle over its prompts, with seeds from ``vipo.seeds.eval_seed`` (a range training never draws
from), file names ``{split}-{i:03d}.mp4``: the same for every round, so round K's clip and the base's clip of a file
name share prompt and seed (what the win rate against the base compares).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .. import seeds
from ..errors import UserError
from ..world import grammar
from .prompts import prompt_key, read_prompts

WORLD = "world"


@dataclass
class Prompts:
    """A run's prompt sets: ``train`` the (line, prompt) rows training draws from (None: the world's grammar);
    ``splits`` each evaluation split's prompts (None: the world grammar's splits); ``heldout_of`` the file
    ``heldout`` was split from, where it was."""

    train: list[tuple[int, str]] | None
    splits: dict[str, list[str]] | None
    extra: dict[str, list[str]]
    heldout_of: str = ""


def eval_source(cfg) -> str:
    """``eval.prompts`` with 'auto' resolved to ``prompts.source``."""
    return cfg.prompts.source if cfg.eval.prompts == "auto" else cfg.eval.prompts


def split_heldout(
    numbered: list[tuple[int, str]], fraction: float, seed: int, where: str = "prompts"
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(train, held out): the distinct prompts (first occurrence kept, in file order) shuffled with ``seed``;
    ``round(fraction * n)`` of them, at least one, are held out; at least one stays for training."""
    seen, distinct = set(), []
    for n, t in numbered:
        if prompt_key(t) not in seen:
            seen.add(prompt_key(t))
            distinct.append((n, t))
    if len(distinct) < 2:
        raise UserError(
            f"{where}: {len(distinct)} distinct prompt(s); training and evaluation from one file need "
            "at least 2 (some to train on, some held out)"
        )
    order = list(range(len(distinct)))
    random.Random(seeds.stream_seed(seed, "eval-heldout")).shuffle(order)
    k = min(len(distinct) - 1, max(1, round(fraction * len(distinct))))
    held = set(order[:k])
    return ([r for i, r in enumerate(distinct) if i not in held], [r for i, r in enumerate(distinct) if i in held])


def _refuse_overlap(
    name: str, numbered: list[tuple[int, str]], train: list[tuple[int, str]] | None, train_name: str
) -> None:
    if train is None:  # the world's grammar trains on every phrasing of its in-distribution combinations
        for n, text in numbered:
            a = grammar.parse(text)
            if a is not None and a not in grammar.HELDOUT:
                raise UserError(
                    f"{name}:{n}: evaluation prompt {text!r} is an in-distribution combination of the "
                    "world, which prompts.source=world trains on; evaluation prompts must be held out"
                )
        return
    seen = {prompt_key(t): n for n, t in train}
    for n, text in numbered:
        if prompt_key(text) in seen:
            raise UserError(
                f"{name}:{n}: evaluation prompt {text!r} is also a training prompt ({train_name}:"
                f"{seen[prompt_key(text)]}); evaluation prompts must be held out (remove it, or use one "
                "file for both and let eval.heldout_fraction split it)"
            )


def resolve(cfg) -> Prompts:
    """The run's training prompts and evaluation splits (``cfg``: a RunConfig), checked as the module says."""
    source, target = cfg.prompts.source, eval_source(cfg)
    train = None if source == WORLD else read_prompts(source, "prompts.source:")
    splits, heldout_of = None, ""
    if target != WORLD:
        if source != WORLD and Path(source).resolve() == Path(target).resolve():
            train, held = split_heldout(train, cfg.eval.heldout_fraction, cfg.eval.seed, source)
            heldout_of = source
        else:
            held = read_prompts(target, "eval.prompts:")
            _refuse_overlap(target, held, train, source)
        splits = {"heldout": [t for _, t in held]}
    extra = {}
    if cfg.eval.vbench:
        bench = read_prompts(cfg.eval.vbench, "eval.vbench:")
        _refuse_overlap(cfg.eval.vbench, bench, train, source)
        extra["vbench"] = [t for _, t in bench]
    return Prompts(train, splits, extra, heldout_of)


def rows(splits: dict[str, list[str]], clips_per_split: int, seed: int) -> list[dict]:
    """``clips_per_split`` evaluation clips per split, cycling over its prompts, each with its fixed eval seed."""
    return [
        {
            "file_name": f"{split}-{i:03d}.mp4",
            "prompt": prompts[i % len(prompts)],
            "split": split,
            "seed": seeds.eval_seed(seed, split, i),
        }
        for split, prompts in splits.items()
        for i in range(clips_per_split)
    ]
