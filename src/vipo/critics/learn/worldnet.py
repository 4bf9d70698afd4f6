"""The learned world critic: a small video network trained on voted labels, answering pointwise and pairwise.

The embedded world's exact judge is never wrong; a critic learned from (simulated) people's votes is, the way IPO's
critic is. This one reads the clip (9 frames of 32x32 RGB, block-averaged from the 4x upscaled mp4s) and the prompt
(the world grammar's colour, shape and direction) and gives one score per dimension:

- a convolutional encoder applied to every frame (with x/y coordinate channels, CoordConv, and soft-argmax keypoints,
  so position and travel are easy to read), then an MLP over the frames, maps the clip to a feature vector ``h``;
- from ``h`` it predicts which colour, shape and direction the clip shows (13 logits) and, per attribute value, a
  grade; the semantic score is a sum over the three attributes of a term read against the asked value alone,
  ``softplus(alpha_k) * log p_k(asked) + grade_k(asked)``, so unseen combinations of known words get a score from
  terms that were trained (the world judge's semantic key has this form: per attribute "passes" plus closeness);
- fidelity and motion scores are linear in ``h`` (the world judge's fidelity and motion read no prompt either).

One score per dimension serves both questions (the world judge's own structure: its labels are thresholds on the
score its pairwise verdicts compare):

- pointwise: an ordered-logit (cumulative link, McCullagh 1980) model, ``P(label <= k) = sigmoid(s_k (c_k - z))``
  with cutpoints ``c_Bad < c_Normal`` per dimension on the standardized score ``z``;
- pairwise: the same link on the difference, ``d = kappa (z_A - z_B)``, ``P(B) = sigmoid(-tau - d)``,
  ``P(B or Tie) = sigmoid(tau - d)`` (Agresti 1992's ordered paired comparisons with a tie band ``tau``), so swapping
  the two videos swaps A and B exactly: the critic is position-consistent by construction.

Training minimizes the cross-entropy of the voted verdicts (every record of a batch: pointwise ones of its clips and
pairwise ones between them). Where the voters' reasons are the world judge's (``vipo.critics.world.read_reason``),
it also learns what they state, the way an LLM critic is tuned on the reasoning before the verdict: each clip's
graded scores (squared error of the standardized score) and the attributes a clip shows ("looks orange", "looks
like a square": cross-entropy on the 13 logits). Two symmetries of the world augment the data: a horizontal mirror
(left <-> right; every world shape is mirror-symmetric) and time reversal (the direction flips; jitter, colour and
shape do not), each used only where the mirrored prompt combination occurs in the training data itself.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ... import faults
from ...errors import UserError
from ...world import grammar
from ..base import PAIR_VERDICTS
from ..llm import sample_frames

log = logging.getLogger(__name__)
COLORS, SHAPES, DIRECTIONS = list(grammar.COLORS), list(grammar.SHAPES), list(grammar.DIRECTIONS)
ORDINAL = {"Bad": 0, "Normal": 1, "Good": 2}  # LABELS in rank order
PAIR_INDEX = {"A": 0, "B": 1, "Tie": 2}  # PAIR_VERDICTS order
MIRROR = {"left": "right", "right": "left", "up": "up", "down": "down"}
REVERSE = grammar.OPPOSITE
WEIGHTS, CONFIG = "model.safetensors", "critic.json"


@dataclass
class NetConfig:
    """The network's shape (saved beside its weights in ``critic.json``)."""

    side: int = 32
    frames: int = 9
    width: int = 16
    keypoints: int = 8
    hidden: int = 128
    #: the layout of the weights; a critic saved by another version does not load
    version: int = 2


@dataclass
class TrainOptions:
    """How the world critic trains (``vipo critic train --arch world``)."""

    epochs: int = 40
    batch_clips: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0
    reasons: bool = True  # also learn what the reasons state (Example.stated, Example.shows)
    reasons_weight: float = 1.0

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_clips < 2 or not self.lr > 0 or self.weight_decay < 0:
            raise UserError("critic train: epochs >= 1, batch_clips >= 2, lr > 0 and weight_decay >= 0 are needed")
        if self.reasons_weight < 0:
            raise UserError("critic train: reasons_weight must be >= 0")


def to_clip(frames: np.ndarray, side: int = 32, n_frames: int = 9) -> np.ndarray:
    """uint8 [n_frames, side, side, 3]: square frames block-averaged (or resized) to ``side``, frames resampled in
    time as the LLM critics sample them."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [F, H, W, 3], got {frames.shape}")
    if len(frames) < n_frames:
        raise ValueError(f"the world critic needs {n_frames} frames, got {len(frames)}")
    frames = sample_frames(frames, n_frames)
    h, w = frames.shape[1:3]
    if h == w == side:
        return frames.astype(np.uint8)
    if h == w and h % side == 0:
        k = h // side
        return frames.reshape(n_frames, side, k, side, k, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(f).resize((side, side), Image.BOX)) for f in frames])


def attributes(prompt: str) -> grammar.Attributes:
    a = grammar.parse(prompt)
    if a is None:
        raise ValueError(f"the learned world critic only reads prompts of the world's grammar, got {prompt!r}")
    return a


def attr_index(a: grammar.Attributes) -> tuple[int, int, int]:
    return COLORS.index(a.color), SHAPES.index(a.shape), DIRECTIONS.index(a.direction)


class WorldCriticNet(nn.Module):
    def __init__(self, cfg: NetConfig = NetConfig()):
        super().__init__()
        self.cfg = cfg
        w, k = cfg.width, cfg.keypoints
        # per frame (shared over time): three convolutions, two of them stride 2, to an 8x8 map (CoordConv inputs)
        self.frame = nn.Sequential(
            nn.Conv2d(5, w, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.GELU(),
        )
        # spatial soft-argmax keypoints (Levine et al. 2016): where things are, differentiably, per frame
        self.heat = nn.Conv2d(2 * w, k, 1)
        per_frame = 2 * k + 2 * (2 * w)  # keypoint x/y + mean- and max-pooled features
        self.clip = nn.Sequential(
            nn.Linear(cfg.frames * per_frame, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden), nn.GELU()
        )
        self.sizes = [len(COLORS), len(SHAPES), len(DIRECTIONS)]  # the 13 values, attribute by attribute
        n_values = sum(self.sizes)
        self.shows = nn.Linear(cfg.hidden, n_values)  # which colour, shape and direction the clip shows (logits)
        self.match = nn.Linear(cfg.hidden, n_values)  # how well the clip shows each value (the semantic terms)
        self.quality = nn.Linear(cfg.hidden, 2)  # fidelity, motion
        self.alpha = nn.Parameter(torch.zeros(3))
        # where the scores live (set from the stated scores before training): the network's outputs are standardized
        # scores, score = center + spread * output, and the links below read them standardized again, so that
        # outputs, cutpoints and tie band start at the scale of the data whatever scale the reasons state it on
        self.register_buffer("center", torch.zeros(3))
        self.register_buffer("spread", torch.ones(3))
        self.cut_low = nn.Parameter(torch.zeros(3))
        self.cut_gap = nn.Parameter(torch.zeros(3))
        self.point_scale = nn.Parameter(torch.zeros(3))
        self.pair_scale = nn.Parameter(torch.zeros(3))
        self.pair_tie = nn.Parameter(torch.full((3,), -1.0))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, cfg.side), torch.linspace(-1, 1, cfg.side), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys]), persistent=False)
        m = cfg.side // 4
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, m), torch.linspace(-1, 1, m), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=1), persistent=False)
        offsets = np.cumsum([0, *self.sizes[:-1]])
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.long), persistent=False)

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 [B, F, S, S, 3] -> [B, hidden]."""
        b, f, s = clips.shape[:3]
        x = clips.float().div(255.0).permute(0, 1, 4, 2, 3).reshape(b * f, 3, s, s)
        x = torch.cat([x, self.coords[None].expand(b * f, 2, s, s)], dim=1)
        fm = self.frame(x)  # B*F, C, m, m
        heat = F.softmax(self.heat(fm).flatten(2), dim=-1)  # B*F, K, m*m
        keypoints = (heat @ self.grid).flatten(1)  # B*F, 2K
        pooled = torch.cat([fm.mean(dim=(2, 3)), fm.amax(dim=(2, 3))], dim=1)
        per_frame = torch.cat([keypoints, pooled], dim=1).reshape(b, -1)
        return self.clip(per_frame)

    def heads(self, clips: torch.Tensor, attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``clips`` uint8 [B, F, S, S, 3], ``attrs`` long [B, 3] (asked colour, shape, direction) -> (scores [B, 3]:
        semantic, fidelity, motion; ``shows`` logits [B, 13]: the colour, shape and direction the clip shows)."""
        h = self.features(clips)
        shows = self.shows(h)
        # semantic: a sum over the three attributes of a term read against the asked value alone (the world
        # judge's semantic key is such a sum: "passes" + graded closeness per attribute), so a combination never
        # seen in training is scored from terms that were. Each term: how sure the clip shows the asked value
        # (log-probability, scaled) plus a learned grade of how well
        logp = torch.cat([F.log_softmax(x, dim=1) for x in shows.split(self.sizes, dim=1)], dim=1)
        at = attrs + self.offsets
        terms = F.softplus(self.alpha) * logp.gather(1, at) + self.match(h).gather(1, at)  # B, 3
        q = self.quality(h)
        raw = torch.stack([terms.sum(dim=1), q[:, 0], q[:, 1]], dim=1)  # ~N(0, 1) at the start
        return self.center + self.spread * raw, shows

    def forward(self, clips: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        """scores [B, 3] (semantic, fidelity, motion): the values the verdict links below read."""
        return self.heads(clips, attrs)[0]

    def pointwise_logp(self, scores: torch.Tensor) -> torch.Tensor:
        """log P(Bad, Normal, Good) [B, 3 dims, 3]."""
        scores = (scores - self.center) / self.spread
        low = self.cut_low
        high = low + F.softplus(self.cut_gap) + 1e-3
        k = F.softplus(self.point_scale) * 8
        p_bad = torch.sigmoid(k * (low - scores))
        p_le_normal = torch.sigmoid(k * (high - scores))
        probs = torch.stack([p_bad, p_le_normal - p_bad, 1 - p_le_normal], dim=-1)
        return probs.clamp_min(1e-7).log()

    def pairwise_logp(self, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        """log P(A, B, Tie) [B, 3 dims, 3]; swapping ``sa`` and ``sb`` swaps A and B."""
        d = F.softplus(self.pair_scale) * 5 * (sa - sb) / self.spread
        tau = F.softplus(self.pair_tie)
        p_b = torch.sigmoid(-tau - d)
        p_not_a = torch.sigmoid(tau - d)
        probs = torch.stack([1 - p_not_a, p_b, p_not_a - p_b], dim=-1)
        return probs.clamp_min(1e-7).log()


# -- saving and loading --------------------------------------------------------------------------------------------


def save(net: WorldCriticNet, out: Path, info: dict) -> None:
    from safetensors.torch import save_file

    from ...io import atomic

    with atomic.atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(tmp))
    atomic.write_json(out / CONFIG, {"arch": "world", "net": asdict(net.cfg), **info})


def load(path: str | Path, device: str = "cpu") -> WorldCriticNet:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise UserError(
            f"judge.model: {path}: not a learned world critic (needs {CONFIG} and {WEIGHTS}; "
            "`vipo critic train --arch world` writes them)"
        )
    meta = json.loads((path / CONFIG).read_text())
    if meta.get("arch") != "world":
        raise UserError(f"judge.model: {path}/{CONFIG}: arch {meta.get('arch')!r} is not 'world'")
    if meta["net"].get("version", 1) != NetConfig.version:
        raise UserError(
            f"judge.model: {path}/{CONFIG}: net version {meta['net'].get('version', 1)} was written by another "
            f"vipo (this one reads version {NetConfig.version}); train the critic again with `vipo critic train`"
        )
    net = WorldCriticNet(NetConfig(**meta["net"]))
    net.load_state_dict(load_file(str(path / WEIGHTS)))
    return net.to(device).eval()


# -- training ------------------------------------------------------------------------------------------------------


@dataclass
class Example:
    """The training set in tensors: clips, their attribute indices, and the records as index tuples."""

    clips: np.ndarray  # uint8 [N, F, S, S, 3]
    attrs: np.ndarray  # int [N, 3]
    point: list  # (clip index, dimension index, ordinal target)
    pair: list  # (clip a, clip b, dimension index, pair target)
    #: float [N, 3]: each clip's graded score per dimension as the annotators' reasons state it (NaN: not stated)
    stated: np.ndarray | None = None
    #: int [N, 3]: the colour, shape and direction the clip shows as the reasons say (-1: not said)
    shows: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.clips)
        if self.stated is None:
            self.stated = np.full((n, 3), np.nan, dtype=np.float32)
        if self.shows is None:
            self.shows = np.full((n, 3), -1, dtype=np.int64)


def _components(n: int, pairs: list) -> list[list[int]]:
    """Clips linked by pairwise records, grouped (union-find), so a batch holds both videos of its pairs."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, *_ in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _augment(clips: np.ndarray, attrs: np.ndarray, shows: np.ndarray, known: set, rng: random.Random):
    """Mirror and/or reverse a group of clips (one choice for the whole group: pairs stay comparable), asking the
    mirrored direction (and saying the clip shows it); only into prompt combinations in ``known``. The world judge's
    scores do not change under either (every shape is mirror-symmetric; reversal keeps travel, drift and jitter)."""
    mirror, reverse = rng.random() < 0.5, rng.random() < 0.5

    def turn(d: int) -> int:
        direction = DIRECTIONS[d]
        if mirror:
            direction = MIRROR[direction]
        if reverse:
            direction = REVERSE[direction]
        return DIRECTIONS.index(direction)

    new, seen = attrs.copy(), shows.copy()
    for i, (c, s, d) in enumerate(attrs):
        if (c, s, turn(d)) not in known:
            return clips, attrs, shows
        new[i, 2] = turn(d)
        if seen[i, 2] >= 0:
            seen[i, 2] = turn(seen[i, 2])
    if mirror:
        clips = clips[:, :, :, ::-1]
    if reverse:
        clips = clips[:, ::-1]
    return np.ascontiguousarray(clips), new, seen


def train(
    ex: Example, opts: TrainOptions, net_cfg: NetConfig = NetConfig(), progress: bool = True, on_epoch=None
) -> tuple[WorldCriticNet, list[dict]]:
    """Train on every record of ``ex``; returns the network and the loss curve (one row per epoch)."""
    from tqdm.auto import tqdm

    opts.validate()
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    net = WorldCriticNet(net_cfg)
    if opts.reasons:
        with torch.no_grad():
            stated = torch.from_numpy(ex.stated)
            for k in range(3):
                v = stated[:, k][~torch.isnan(stated[:, k])]
                if len(v) > 1:
                    net.center[k], net.spread[k] = v.mean(), v.std().clamp_min(0.05)
    optim = torch.optim.AdamW(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    point_of: dict[int, list] = {}
    for i, d, t in ex.point:
        point_of.setdefault(i, []).append((d, t))
    pair_of: dict[int, list] = {}
    for a, b, d, t in ex.pair:
        pair_of.setdefault(a, []).append((b, d, t))
    # clips that no record uses do not need a forward pass
    groups = [g for g in _components(len(ex.clips), ex.pair) if any(i in point_of or i in pair_of for i in g)]
    known = {tuple(int(v) for v in a) for a in ex.attrs}
    steps_per_epoch = max(1, math.ceil(sum(len(g) for g in groups) / opts.batch_clips))
    total = opts.epochs * steps_per_epoch
    # a one-cycle schedule warms up for 10% of the steps (at least 2: OneCycleLR divides by the warm-up length - 1)
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=opts.lr, total_steps=total, pct_start=max(0.1, 3 / total))
        if total >= 6
        else torch.optim.lr_scheduler.LambdaLR(optim, lambda _: 1.0)
    )
    curve, t0 = [], time.time()
    bar = tqdm(total=total, disable=not progress, desc="critic train", unit="step")
    for epoch in range(opts.epochs):
        rng.shuffle(groups)
        batches, cur = [], []
        for g in groups:
            cur.append(g)
            if sum(len(x) for x in cur) >= opts.batch_clips:
                batches.append(cur)
                cur = []
        if cur:
            batches.append(cur)
        net.train()
        sums = {"loss": 0.0, "point": 0.0, "pair": 0.0, "n_point": 0, "n_pair": 0, "stated": 0.0, "n_stated": 0}
        for batch in batches:
            faults.check_term("critic train")  # SIGTERM: stop between steps (nothing is written: exit 143)
            idx = [i for g in batch for i in g]
            pos = {i: k for k, i in enumerate(idx)}
            clips, attrs, shows = [], [], []
            for g in batch:
                c, a, w = ex.clips[g], ex.attrs[g], ex.shows[g]
                if opts.augment:
                    c, a, w = _augment(c, a, w, known, rng)
                clips.append(c)
                attrs.append(a)
                shows.append(w)
            scores, shows_logits = net.heads(
                torch.from_numpy(np.concatenate(clips)), torch.from_numpy(np.concatenate(attrs)).long()
            )
            losses = []
            if opts.reasons:
                # what the reasons state: the graded scores (squared error) and the attributes shown (cross-entropy)
                stated = torch.from_numpy(ex.stated[idx])
                known_score = ~torch.isnan(stated)
                if known_score.any():
                    diff = scores - torch.nan_to_num(stated)
                    err = diff[known_score]
                    losses.append(opts.reasons_weight * (diff / net.spread)[known_score].pow(2).sum())
                    sums["stated"] += err.pow(2).sum().item()
                    sums["n_stated"] += int(known_score.sum())
                tgt = torch.from_numpy(np.concatenate(shows))
                for k, lg in enumerate(shows_logits.split(net.sizes, dim=1)):
                    has = tgt[:, k] >= 0
                    if has.any():
                        losses.append(opts.reasons_weight * F.cross_entropy(lg[has], tgt[has, k], reduction="sum"))
            pts = [(pos[i], d, t) for i in idx for d, t in point_of.get(i, [])]
            if pts:
                rows, dims, tgt = (torch.tensor(v) for v in zip(*pts))
                lp = net.pointwise_logp(scores[rows])[torch.arange(len(pts)), dims]
                point_loss = F.nll_loss(lp, tgt, reduction="sum")
                losses.append(point_loss)
                sums["point"] += point_loss.item()
                sums["n_point"] += len(pts)
            prs = [(pos[a], pos[b], d, t) for a in idx for b, d, t in pair_of.get(a, [])]
            if prs:
                ra, rb, dims, tgt = (torch.tensor(v) for v in zip(*prs))
                lp = net.pairwise_logp(scores[ra], scores[rb])[torch.arange(len(prs)), dims]
                pair_loss = F.nll_loss(lp, tgt, reduction="sum")
                losses.append(pair_loss)
                sums["pair"] += pair_loss.item()
                sums["n_pair"] += len(prs)
            n = len(pts) + len(prs)
            if n == 0:
                continue
            loss = sum(losses) / n
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            sums["loss"] += loss.item() * n
            bar.update(1)
        n_all = sums["n_point"] + sums["n_pair"]
        row = {
            "epoch": epoch + 1,
            "loss": sums["loss"] / max(1, n_all),
            "pointwise_loss": sums["point"] / max(1, sums["n_point"]),
            "pairwise_loss": sums["pair"] / max(1, sums["n_pair"]),
            **({"stated_rmse": math.sqrt(sums["stated"] / sums["n_stated"])} if sums["n_stated"] else {}),
            "lr": sched.get_last_lr()[0],
            "elapsed_s": round(time.time() - t0, 1),
        }
        curve.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if on_epoch is not None:
            on_epoch(net, row)
    bar.close()
    return net.eval(), curve


@torch.no_grad()
def scores(net: WorldCriticNet, clips: np.ndarray, attrs: np.ndarray, batch: int = 128) -> torch.Tensor:
    net.eval()
    out = [
        net(torch.from_numpy(np.ascontiguousarray(clips[i : i + batch])), torch.from_numpy(attrs[i : i + batch]).long())
        for i in range(0, len(clips), batch)
    ]
    return torch.cat(out) if out else torch.zeros(0, 3)


def label_of(logp_row: torch.Tensor) -> str:
    return ("Bad", "Normal", "Good")[int(logp_row.argmax())]


def verdict_of(logp_row: torch.Tensor) -> str:
    return PAIR_VERDICTS[int(logp_row.argmax())]
