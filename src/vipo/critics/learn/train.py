"""``vipo critic train DATA --out DIR``: a critic learned from critic-training records (voted labels).

Two kinds of critic come out of the same records (:mod:`vipo.critics.learn.data`):

- ``vlm`` (any data; ``model`` names the base): instruction tuning of a transformers image-text-to-text model, LoRA by
  default, through TRL's ``SFTTrainer`` (:mod:`vipo.critics.learn.sft`). ``DIR`` is a PEFT adapter:
  ``vipo judge --critic vlm --model BASE --set adapter=DIR``;
- ``world`` (every prompt in the embedded world's grammar): the small video network of
  :mod:`vipo.critics.learn.worldnet`, which trains in minutes on a CPU. ``DIR`` loads as
  ``judge.critic: learned``, ``judge.model: DIR``.

``arch: auto`` picks ``world`` when every prompt is a world prompt and no base ``model`` is given, else ``vlm``.
Training uses the ``train`` split (``split: all`` adds ``test``); ``fraction`` keeps a share of the training items
(a weaker critic from fewer labels). ``DIR`` gets ``critic.json`` (what was trained on what, and how long it took),
``loss.jsonl`` and ``loss.png`` (the loss curve) and, unless ``eval: false``, ``eval.json``: the critic's Table 6
on the ``test`` split against the voted labels and, for world data, against the exact world judge.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ...config import Section
from ...errors import UserError
from ...io import atomic
from ...world import grammar
from .data import Record, read_records, summary

log = logging.getLogger(__name__)
ARCHS = ("auto", "world", "vlm")


@dataclass
class CriticTrainConfig(Section):
    """Critic training (``vipo critic train``): defaults < ``--config`` < ``--set key=value`` < flags."""

    arch: str = "auto"
    """'world' (the learned world critic), 'vlm' (LoRA instruction tuning of ``model``) or 'auto' (world when every
    prompt is a world prompt and no ``model`` is given)"""
    model: str = ""
    """vlm: the base image-text-to-text model (a local folder or a hub id in the local cache)"""
    split: str = "train"
    """records to train on: 'train' or 'all' (train and test)"""
    fraction: float = 1.0
    """share of the training items kept, drawn with ``seed`` (all dimensions of an item go together): fewer labels,
    a weaker critic"""
    epochs: float = 0.0
    """passes over the training records (0 = the arch's default: world 40, vlm 3)"""
    lr: float = 0.0
    """peak learning rate (0 = the arch's default: world 2e-3, vlm 1e-4)"""
    batch_size: int = 0
    """world: clips per step (default 32); vlm: questions per device step (default 1)"""
    grad_accum: int = 8
    """vlm: micro-batches per optimizer step"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    seed: int = 0
    """seed of the weights, the item subsample and the data order"""
    augment: bool = True
    """world, components false: mirror and time-reverse clips (asking the mirrored direction) where the mirrored
    prompt occurs in the training data (the components net reads each clip's measurements once, unaugmented: its
    terms are per attribute already)"""
    reasons: bool = True
    """world: also learn what the voters' reasons state where they are the world judge's (each clip's graded
    scores, the colour, shape and direction it shows), as an LLM critic learns the reasoning before the verdict;
    false: the verdicts alone"""
    reasons_weight: float = 1.0
    """world: weight of what the reasons state (the squared error of the stated scores in units of their spread, and
    the cross-entropy of the attributes shown) against the verdicts' cross-entropy"""
    foreground: float = 0.0
    """world, components: the tracker's foreground level (0-255); 0 = chosen from the data among fractions of Otsu's
    threshold by the share of held-out explained pairwise votes a short fit answers at each (critic.json records the
    choice and each level's held-out accuracy and stated error as foreground_search)"""
    search_steps: int = 400
    """world, components: Adam steps of each level's short fit in that search (fewer: faster, a noisier choice)"""
    components: bool = True
    """world: read the clip with a connected-component tracker (the largest blob's path, size, clutter, colour and
    silhouette, every frame at 64 px) against prototypes of the prompt's words learned from the labels (net version
    4, critics.learn.componentnet; no convolutions, trains in minutes); false: the convolutional network (versions 2
    and 3; ``width`` and ``object_tracker`` apply)"""
    width: int = 32
    """world, components false: channels of the first convolutions"""
    object_tracker: bool = True
    """world, components false: also read the clip with a soft object tracker (a soft foreground mask's path, area,
    shape moments and colour per frame at 64 px; worldnet.track); false: the convolutions alone at 32 px (the network
    of version-2 critics)"""
    lora: bool = True
    """vlm: train a LoRA adapter (false: every weight of the language model)"""
    lora_rank: int = 16
    """vlm: LoRA rank"""
    lora_alpha: float = 32.0
    """vlm: LoRA alpha"""
    lora_targets: str = "all-linear"
    """vlm: PEFT target modules ('all-linear', or comma-separated module names such as q_proj,v_proj)"""
    max_steps: int = -1
    """vlm: stop after this many optimizer steps (-1 = ``epochs``)"""
    frames: int = 16
    """vlm: frames per video, as judge.frames (the critic is shown what it was trained on)"""
    frame_size: int = 448
    """vlm: letterboxed frame side, as judge.frame_size"""
    prompts_dir: str = ""
    """vlm: question templates overriding the critic's, as judge.prompts_dir"""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'"""
    dtype: str = "auto"
    """vlm: 'auto' (bf16 on CUDA, else float32), 'bfloat16' or 'float32'"""
    gradient_checkpointing: bool = False
    """vlm: recompute activations in the backward pass"""
    merge: bool = False
    """vlm: also write DIR/merged, the base with the adapter merged in (a full model folder)"""
    eval: bool = True
    """score the trained critic on the test split (eval.json); vlm generation is slow: turn off for big test sets"""

    def validate(self) -> None:
        def check(ok, msg):
            if not ok:
                raise UserError(msg)

        check(self.arch in ARCHS, f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        check(self.split in ("train", "all"), f"split must be train or all, got {self.split!r}")
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(
            self.epochs >= 0 and self.lr >= 0 and self.batch_size >= 0 and self.grad_accum >= 1,
            "epochs, lr and batch_size must be >= 0 (0 = default) and grad_accum >= 1",
        )
        check(
            self.weight_decay >= 0 and self.width >= 4 and self.lora_rank >= 1 and self.lora_alpha > 0,
            "weight_decay >= 0, width >= 4, lora_rank >= 1 and lora_alpha > 0 are needed",
        )
        check(self.frames >= 1 and self.frame_size >= 16, "frames >= 1 and frame_size >= 16 are needed")
        check(self.reasons_weight >= 0, f"reasons_weight must be >= 0, got {self.reasons_weight}")
        check(
            0 <= self.foreground <= 255, f"foreground must be a level in [0, 255] (0 = chosen), got {self.foreground}"
        )
        check(self.search_steps >= 1, f"search_steps must be >= 1, got {self.search_steps}")
        check(
            not self.components or self.object_tracker,
            "object_tracker=false is an option of the convolutional network: add --set components=false",
        )
        check(
            self.dtype in ("auto", "bfloat16", "float32"),
            f"dtype must be auto, bfloat16 or float32, got {self.dtype!r}",
        )
        check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"device must be auto, cpu or cuda, got {self.device!r}",
        )


def choose_arch(records: list[Record], cfg: CriticTrainConfig) -> str:
    if cfg.arch != "auto":
        arch = cfg.arch
    else:
        arch = "world" if not cfg.model and all(grammar.parse(r.prompt) for r in records) else "vlm"
    if arch == "vlm" and not cfg.model:
        raise UserError("critic train: the vlm arch needs model (the base image-text-to-text model to tune)")
    if arch == "world":
        bad = next((r for r in records if grammar.parse(r.prompt) is None), None)
        if bad is not None:
            raise UserError(
                f"critic train: the world arch reads world prompts only; record {bad.id} asks "
                f"{bad.prompt!r} (use --arch vlm --model BASE)"
            )
    return arch


def subsample(records: list[Record], fraction: float, seed: int) -> list[Record]:
    """Keep ``fraction`` of the items (an item = a task and its videos; its dimensions stay together)."""
    if fraction >= 1:
        return records
    items = sorted({(r.task, tuple(r.videos)) for r in records})
    keep = set(random.Random(seed).sample(items, max(1, round(fraction * len(items)))))
    return [r for r in records if (r.task, tuple(r.videos)) in keep]


def plot_loss(curve: list[dict], path: Path, x: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = [k for k in ("loss", "pointwise_loss", "pairwise_loss", "eval_loss") if any(k in r for r in curve)]
    for k in keys:
        pts = [(r[x], r[k]) for r in curve if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="." if len(pts) < 40 else None)
    ax.set_xlabel(x)
    ax.set_ylabel("cross-entropy")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def train_critic(data: str | Path, out: str | Path, cfg: CriticTrainConfig, progress: bool = True) -> dict:
    """Train a critic on the records of ``data`` into the folder ``out``; returns what ``critic.json`` holds."""
    cfg.validate()
    data, out = Path(data), Path(out)
    records = read_records(data)
    train = [r for r in records if cfg.split == "all" or r.split == "train"]
    test = [r for r in records if r.split == "test"]
    train = subsample(train, cfg.fraction, cfg.seed)
    if not train:
        raise UserError(f"{data}: no records in the {cfg.split} split to train on")
    arch = choose_arch(records, cfg)
    log.info(
        "critic train (%s): %d training records, %d test records; %s",
        arch,
        len(train),
        len(test),
        json.dumps(summary(train)),
    )
    info = {
        "arch": arch,
        "data": str(data.resolve()),
        "records": {"train": len(train), "test": len(test)},
        "labels": summary(train),
        "options": asdict(cfg),
    }
    if arch == "world":
        return _train_world(train, test, out, cfg, info, progress)
    from .sft import train_vlm

    return train_vlm(train, test, out, cfg, info, progress)


# -- the world critic ------------------------------------------------------------------------------------------------


def load_clips(records: list[Record], side: int = 32, frames: int = 9):
    """Unique videos of ``records`` as clips, their attribute indices, and each record's video indices."""
    import numpy as np

    from ...io.video import read_mp4
    from .worldnet import attr_index, attributes, to_clip

    index: dict[Path, int] = {}
    clips, attrs = [], []
    for r in records:
        for p in r.paths():
            if p not in index:
                try:
                    clips.append(to_clip(read_mp4(p), side, frames))
                except Exception as e:  # noqa: BLE001  (PyAV raises many types for a bad file)
                    raise UserError(f"{p}: not a usable video ({type(e).__name__}: {e})") from None
                attrs.append(attr_index(attributes(r.prompt)))
                index[p] = len(index)
    shape = (0, frames, side, side, 3)
    return (
        (np.stack(clips) if clips else np.zeros(shape, np.uint8)),
        np.array(attrs, dtype=np.int64).reshape(-1, 3),
        [tuple(index[p] for p in r.paths()) for r in records],
    )


def world_example(records: list[Record], side: int = 32, frames: int = 9):
    """The records as a :class:`~vipo.critics.learn.worldnet.Example`: the voted verdicts, and what the voters'
    reasons state where they are the world judge's (:func:`vipo.critics.world.read_reason`): each clip's graded
    scores and the attributes it shows. Reasons in other words (a person's, or a flipped annotator's "looked Good to
    me") state nothing and are skipped."""
    from ..base import DIMENSIONS
    from ..world import read_reason
    from .worldnet import COLORS, DIRECTIONS, ORDINAL, PAIR_INDEX, SHAPES, Example

    clips, attrs, where = load_clips(records, side, frames)
    point, pair = [], []
    ex = Example(clips, attrs, point, pair)
    values = ("color", "shape", "direction")
    pools = (COLORS, SHAPES, DIRECTIONS)
    for r, idx in zip(records, where):
        d = DIMENSIONS.index(r.dimension)
        said = next((x for x in (read_reason(r.task, r.dimension, t, r.prompt) for t in r.reasons) if x), {})
        if r.task == "pointwise":
            point.append((idx[0], d, ORDINAL[r.verdict]))
            ex.point_explained.append(bool(said))
        else:
            pair.append((idx[0], idx[1], d, PAIR_INDEX[r.verdict]))
            ex.pair_explained.append(bool(said))
        for i, v in zip(idx, said.get("scores", ())):
            ex.stated[i, d] = v
        for k, (name, pool) in enumerate(zip(values, pools)):
            if name in said.get("shows", {}):
                ex.shows[idx[0], k] = pool.index(said["shows"][name])
            if name in said.get("passes", {}):
                ex.passes[idx[0], k] = int(said["passes"][name])
    return ex


def _train_world(
    train: list[Record], test: list[Record], out: Path, cfg: CriticTrainConfig, info: dict, progress: bool
) -> dict:
    from ..base import DIMENSIONS
    from . import worldnet

    net_cfg = worldnet.NetConfig(width=cfg.width, tracker=cfg.object_tracker, components=cfg.components)
    t0 = time.time()
    ex = world_example(train, net_cfg.input_side, net_cfg.frames)
    opts = worldnet.TrainOptions(
        epochs=int(cfg.epochs or 40),
        batch_clips=cfg.batch_size or 32,
        lr=cfg.lr or 2e-3,
        weight_decay=cfg.weight_decay,
        augment=cfg.augment,
        seed=cfg.seed,
        reasons=cfg.reasons,
        reasons_weight=cfg.reasons_weight,
        foreground=cfg.foreground,
        search_steps=cfg.search_steps,
    )
    curve_rows: list[dict] = []
    net, curve = worldnet.train(ex, opts, net_cfg, progress, on_epoch=lambda _n, row: curve_rows.append(row))
    info.update(
        train_seconds=round(time.time() - t0, 1), clips=len(ex.clips), device="cpu", final_loss=curve[-1]["loss"]
    )
    if net_cfg.components:
        info.update(
            foreground_level=round(float(net.threshold), 2),
            foreground_search={  # NaN (no held-out pairs) as null: critic.json stays strict JSON
                str(k): {m: round(v, 5) if math.isfinite(v) else None for m, v in r.items()}
                for k, r in getattr(net, "threshold_search", {}).items()
            },
            tie_accuracy_on_explained_train_votes={
                DIMENSIONS[k]: {"before": v[0], "after": v[1]} for k, v in getattr(net, "tie_accuracy", {}).items()
            },
        )
    with atomic.atomic_dir(out) as tmp:
        worldnet.save(net, tmp, info)
        (tmp / "loss.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
        plot_loss(curve, tmp / "loss.png", "epoch")
        if cfg.eval and test:
            from ...config import JudgeConfig
            from ..learned import LearnedWorldCritic

            critic = LearnedWorldCritic(JudgeConfig(critic="learned", model=str(tmp)), net=net)
            res = evaluate_records(critic, test, truth="labels")
            res_world = evaluate_records(critic, test, truth="world")
            atomic.write_json(tmp / "eval.json", {"split": "test", "labels": res, "world": res_world})
            info["eval"] = {"labels": _headline(res), "world": _headline(res_world)}
            worldnet.save(net, tmp, info)
    return info


def _headline(res: dict) -> dict:
    out = {}
    if "pointwise" in res and res["pointwise"].get("all"):
        out["pointwise"] = res["pointwise"]["all"]["rate"]
    if "pairwise" in res and res["pairwise"].get("overall_rate"):
        out["pairwise_overall"] = res["pairwise"]["overall_rate"]["rate"]
    return out


# -- scoring against records -------------------------------------------------------------------------------------


def evaluate_records(critic, records: list[Record], truth: str = "labels") -> dict:
    """Table 6 of ``critic`` on ``records``: against their voted verdicts (``truth='labels'``) or the embedded world's
    exact judge on the same videos and pairs (``truth='world'``)."""
    from ...io.video import read_mp4
    from ..base import DIMENSIONS, Video
    from .accuracy import Question, table6

    videos, index = [], {}
    for r in records:
        for p in r.paths():
            if p not in index:
                index[p] = len(videos)
                try:
                    frames = read_mp4(p)
                except Exception as e:  # noqa: BLE001
                    raise UserError(f"{p}: not a usable video ({type(e).__name__}: {e})") from None
                videos.append(Video(r.prompt, frames, str(p)))
    items: dict[tuple, dict] = {}
    for r in records:
        key = (r.task, tuple(index[p] for p in r.paths()))
        items.setdefault(key, {})[r.dimension] = r.verdict
    if truth == "world":
        from ..world import WorldCritic

        bad = next((r for r in records if grammar.parse(r.prompt) is None), None)
        if bad is not None:
            raise UserError(f"critic eval --truth world: record {bad.id} is not a world prompt ({bad.prompt!r})")
        judge = WorldCritic()
        for (task, idx), got in items.items():
            ans = (
                judge.pointwise(videos[idx[0]]).labels
                if task == "pointwise"
                else judge.pairwise(videos[idx[0]], videos[idx[1]]).verdicts
            )
            items[(task, idx)] = {d: ans[d] for d in DIMENSIONS}
    elif truth != "labels":
        raise UserError(f"critic eval --truth: {truth!r} is not labels or world")
    return table6(critic, videos, [Question(task, idx, got) for (task, idx), got in items.items()])
