"""Cached reference errors (``train.ref_cache: K``): the reference's errors on K fixed draws per item, computed once.

Why: a round's reference is frozen, yet a live DPO/KTO step runs it on every micro-batch, at ~0.4 of a training step
(a no-grad forward beside a forward and a backward). TRL computes the LLM version once (``precompute_ref_log_probs``);
there a sample's reference log-probability is one number, while a diffusion model's error depends on the noise and
timestep drawn, so the cache holds K draws per item and the epochs cycle through them: epoch ``e`` trains every item on
its draw ``e mod K``. With it the step runs no reference forward at all.

A draw is the item's noise (its latent's shape), its timestep (the family's density inside ``timestep_window``) and its
caption-dropout flag, all from one generator seeded by (run seed, round, item, k) (:func:`draw`), so a draw is the same
alone or in any batch, in the precomputing pass and in training. A DPO pair's winner and loser share their draw, as
live. The real-video NLL term needs no reference and keeps its live draws.

What K trades away: with a live reference every epoch draws fresh noise and a fresh timestep for every item, so E
epochs see E distinct draws per item; with the cache they see ``min(K, E)``, the rest repeats (docs/performance.md
measures what that costs on the embedded world). The loss on a draw is the live loss on the same draw, up to the float
rounding of a different batch composition in the reference pass (tests/unit/test_refcache.py).

The pass runs without gradients in micro-batches of ``train.batch_size`` items, under the training autocast, and
stores ``round-K/ref_cache.safetensors`` (:data:`FILE`): the errors ``[items, K, 2]`` (DPO: winner, loser) or
``[items, K, 1]``, which entries are done, and the hash of what they depend on (:func:`key`). Writes are atomic; it
saves every :data:`SAVE_EVERY_S` seconds and on SIGTERM, so a killed pass resumes where it stopped; a file under
another hash (another config, seed, round, item list or reference) is computed again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .. import dist, faults, seeds
from ..io import atomic

log = logging.getLogger(__name__)

FILE = "ref_cache.safetensors"
SAVE_EVERY_S = 60.0
#: the train options a cached error depends on: they change a draw or the reference's arithmetic
KEY_FIELDS = ("method", "timestep_window", "caption_dropout", "mixed_precision", "finetune")


@dataclass
class Draw:
    """One item's fixed inputs for draw k: noise shaped like its latent, a timestep [1], caption dropped or not."""

    noise: torch.Tensor
    t: torch.Tensor
    drop: bool


def item_key(item: dict) -> str:
    """An item's identity in the seeds and the hash: its sample ids (a DPO pair's winner and loser)."""
    if "chosen" in item:
        return f"{item['chosen']['id']}|{item['rejected']['id']}"
    return item["sample"]["id"]


def draw(model, cfg, run_seed: int, round_: int, key: str, k: int, shape: tuple[int, ...]) -> Draw:
    """Item ``key``'s draw ``k``: noise, then timestep, then the dropout flag, from the draw's own generator."""
    g = torch.Generator().manual_seed(seeds.stream_seed(run_seed, round_, "ref_cache", key, k))
    noise = torch.randn(shape, generator=g)
    t = model.sample_timesteps(1, g, tuple(cfg.timestep_window))
    drop = cfg.caption_dropout > 0 and bool(torch.rand(1, generator=g) < cfg.caption_dropout)
    return Draw(noise, t, drop)


def draws_used(cfg) -> int:
    """K as training will use it: ``ref_cache``, or fewer where the round has fewer epochs than that."""
    import math

    return min(cfg.ref_cache, math.ceil(cfg.epochs))


def key(cfg, run_seed: int, round_: int, items: list[dict], reference: str, k: int) -> str:
    """Hash of what the cached errors depend on: the options in :data:`KEY_FIELDS`, K, the run seed, the round, the
    items in order, and ``reference`` (a fingerprint of the reference network)."""
    from .state import config_hash

    return config_hash(
        {f: getattr(cfg, f) for f in KEY_FIELDS}, k, run_seed, round_, [item_key(it) for it in items], reference
    )


def _load(path: Path, want: str, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            errors, done = f.get_tensor("errors"), f.get_tensor("done").bool()
    except Exception as e:  # noqa: BLE001  (a torn or foreign file: computed again, never trusted)
        log.warning("%s: unreadable (%s); computing the reference errors again", path, e)
        return None
    if meta.get("key") != want or tuple(errors.shape) != shape:
        log.warning("%s was computed for another config, data or reference; computing it again", path)
        return None
    return errors, done


def _save(path: Path, errors: torch.Tensor, done: torch.Tensor, want: str) -> None:
    with atomic.atomic_path(path) as tmp:
        save_file(
            {"errors": errors.contiguous(), "done": done.to(torch.uint8).contiguous()},
            str(tmp),
            metadata={
                "key": want,
                "format": "pt",
                "info": json.dumps({"items": errors.shape[0], "draws": errors.shape[1]}),
            },
        )


def build(
    path: Path,
    want: str,
    n_items: int,
    k: int,
    width: int,
    reference_errors: Callable[[list[int], list[int]], torch.Tensor],
    batch_size: int,
    progress: bool = True,
) -> torch.Tensor:
    """The cached errors ``[n_items, k, width]`` (float32, CPU): read from ``path`` where its hash is ``want``,
    completed where a killed pass left it, computed otherwise. ``reference_errors(items, draws)`` returns the
    reference's errors ``[len(items), width]`` for item ``items[j]`` on its draw ``draws[j]``."""
    path = Path(path)
    shape = (n_items, k, width)
    got = dist.from_main(lambda: _load(path, want, shape))  # (the main rank reads; every rank gets it)
    errors, done = got if got is not None else (torch.zeros(shape), torch.zeros(n_items, k, dtype=torch.bool))
    todo = [(i, j) for j in range(k) for i in range(n_items) if not done[i, j]]
    if not todo:
        return errors
    log.info(
        "reference errors: %d item draws to compute (%d items x %d draws, %d cached) into %s",
        len(todo),
        n_items,
        k,
        n_items * k - len(todo),
        path,
    )
    # chunks of batch_size draws, the one-process batches: under a launcher chunk c goes to rank c % N, so each error
    # is computed in the batch it would be in with one process; a rank without a chunk in the last round repeats the
    # round's first one (FSDP needs every rank in every forward) and its result is dropped
    chunks = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
    bar = tqdm(total=len(todo), disable=not progress or not dist.is_main(), desc="reference errors", unit="draw")
    last = time.monotonic()
    for first in range(0, len(chunks), dist.world()):
        at = first + dist.rank()
        mine = chunks[at] if at < len(chunks) else chunks[first]

        def work() -> tuple[list[tuple[int, int]], torch.Tensor | None]:
            with torch.no_grad():
                r = reference_errors([i for i, _ in mine], [j for _, j in mine]).detach().float().cpu()
            faults.point("train.ref_cache")
            return (mine, r) if at < len(chunks) else ([], None)

        def commit(results: list) -> None:
            nonlocal last
            for chunk, r in results:
                if chunk:
                    idx, ks = [i for i, _ in chunk], [j for _, j in chunk]
                    errors[idx, ks] = r
                    done[idx, ks] = True
                    bar.update(len(chunk))
            if time.monotonic() - last > SAVE_EVERY_S:
                _save(path, errors, done, want)
                last = time.monotonic()

        _, stop = dist.step(work, commit, term=faults.term_requested)
        if stop:
            if dist.is_main():
                _save(path, errors, done, want)
            raise faults.Terminated("the reference-error pass")
    bar.close()
    if dist.is_main():
        _save(path, errors, done, want)
    return dist.broadcast(errors)
