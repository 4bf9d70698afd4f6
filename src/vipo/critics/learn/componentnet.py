"""The learned world critic, version 4: a connected-component tracker read against learned prototypes of the words.

Version 3 (:class:`vipo.critics.learn.worldnet.WorldCriticNet`) read the clip with convolutions and a soft tracker
and missed the exact judge's pairwise verdicts where they turn on fine differences (78% on held-out prompts; its
errors were as large on its own training clips). This network reads what an object tracker measures
(:mod:`vipo.critics.learn.components`: the largest blob's path, size, clutter, colour and silhouette, at 64 px and
every frame) and learns what the prompt's words mean from the labels:

- a prototype per word: an RGB colour per colour word, a silhouette template per shape word (GRID x GRID logits,
  compared with the clip's silhouette frame by frame by soft IoU, Jaccard's index on [0, 1] masks), a unit vector
  per direction word (the travel along it and across it). Each starts at the mean of the training clips the reasons say show that
  value, and trains on;
- per attribute, a small MLP reads only that attribute's comparisons (colour: distance to the asked prototype and
  the margin to the nearest other one; shape: IoU with the asked template, the margin to the best other, box aspect,
  size and fill; direction: travel along the asked vector and across it; each also the share of frames with an
  object) and answers a pass logit and a graded term. The semantic score is ``sum(passes) + sum(grades)``: the
  number of attributes shown plus how well (the world judge's semantic key has this form). A term never sees the
  other attributes, so unseen combinations of known words are scored by terms that were trained on each word;
- fidelity and motion are MLPs of all the tracker's measurements (fidelity also of the IoU with each template), which
  read no prompt.

A pass counts whole in the score, as the judge counts attributes shown; in training its gradient is its
probability's (straight-through), so the verdict losses reach it. Verdicts come from the shared links
(:class:`~vipo.critics.learn.worldnet.VerdictLinks`), so the two orders of a pair always agree; training fits
unexplained votes through a learned symmetric label-noise layer (:meth:`ComponentCriticNet.observed`), so that the
critic's own verdicts are not bent towards the voters' slips, and afterwards sets each dimension's tie band on the
explained training votes (:func:`vipo.critics.learn.worldnet.calibrate_ties`).

The tracker's foreground level is chosen by the data (:func:`choose_threshold`): among fractions of Otsu's
threshold of the training clips, the one at which a short fit on most of the training clips answers the most
explained pairwise votes among the others.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import faults
from . import components
from .worldnet import (
    COLORS,
    DIRECTIONS,
    SHAPES,
    NetConfig,
    VerdictLinks,
    _components,
    brightness_histogram,
    calibrate_ties,
    otsu_threshold,
    pair_accuracy,
    set_scale,
)

log = logging.getLogger(__name__)
#: the fractions of Otsu's threshold :func:`choose_threshold` tries, and how many clips (at most) it reads
THRESHOLD_FRACTIONS = (0.7, 0.8, 0.9, 1.0)
SEARCH_CLIPS = 960
_I = components.INDEX
_N = len(components.FEATURES)
_CELLS = components.GRID * components.GRID


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, n_out)
    )


class ComponentCriticNet(VerdictLinks):
    def __init__(self, cfg: NetConfig = NetConfig()):
        super().__init__()
        self.cfg = cfg
        self.sizes = [len(COLORS), len(SHAPES), len(DIRECTIONS)]
        self.register_buffer("threshold", torch.tensor(128.0))  # the foreground level, 0-255
        self.register_buffer("feature_mean", torch.zeros(_N))
        self.register_buffer("feature_std", torch.ones(_N))
        self.colours = nn.Parameter(torch.full((len(COLORS), 3), 0.5))  # RGB in [0, 1]
        self.templates = nn.Parameter(torch.zeros(len(SHAPES), _CELLS))  # silhouette logits
        # unit vectors once a clip shows the word (fit_prototypes); a word never shown stays 0: no travel along it
        self.directions = nn.Parameter(torch.zeros(len(DIRECTIONS), 2))
        self.shows_scale = nn.Parameter(torch.zeros(3))
        small = max(16, cfg.hidden // 2)
        self.colour_term = _mlp(4, 2, small)
        self.shape_term = _mlp(6, 2, small)
        self.direction_term = _mlp(3, 2, small)
        self.fidelity = _mlp(_N + len(SHAPES), 1, cfg.hidden)
        self.motion = _mlp(_N, 1, cfg.hidden)
        # the voters' error rate per dimension and question kind (pointwise, pairwise), learned: see observed()
        self.label_noise = nn.Parameter(torch.full((2, 3), -3.0))

    def observed(self, logp: torch.Tensor, task: str, explained: torch.Tensor | None = None) -> torch.Tensor:
        """log P of the *voted* label [B, dims, 3] from the critic's own ``logp``: for a vote without a reason that
        states what was measured, with probability ``eta`` (learned per dimension and kind,
        ``2/3 sigmoid(label_noise)``) the vote is one of the other two labels, each equally likely (a noise
        adaptation layer, as in Goldberger & Ben-Reuven 2017, with the symmetric noise of the simulated annotators);
        an explained vote (``explained`` [B] true: a voter's reason states the measurement, as a careful person's
        does) is taken as it is. Training fits the votes through it, so the critic's own verdicts are the clean
        ones. Measured on the labels: 33 of the 60 voted Bad fidelity ratings of the training clips were two
        annotators' unexplained slips ("looked Bad to me") on Good clips."""
        # at most 2/3: beyond it symmetric noise would turn the labels round (and not be identifiable)
        eta = 2 / 3 * torch.sigmoid(self.label_noise[0 if task == "pointwise" else 1])[:, None]  # dims, 1
        p = logp.exp()
        noisy = ((1 - eta) * p + eta * (1 - p) / 2).clamp_min(1e-7).log()
        if explained is None:
            return noisy
        return torch.where(explained.bool().view(-1, *([1] * (logp.dim() - 1))), logp, noisy)

    # -- reading clips --------------------------------------------------------------------------------------------

    def read(self, clips: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 clips [N, F, S, S, 3] (S = ``cfg.input_side``) -> the tracker's (features, silhouettes) tensors."""
        clips = np.asarray(clips)
        if clips.ndim != 5 or clips.shape[2] != self.cfg.input_side:
            raise ValueError(
                f"the critic net reads {self.cfg.input_side}x{self.cfg.input_side} frames, got shape {clips.shape}"
            )
        feats, sil = components.measure_many(clips, float(self.threshold))
        return torch.from_numpy(feats), torch.from_numpy(sil).flatten(2)

    @torch.no_grad()
    def fit_prototypes(self, feats: torch.Tensor, sil: torch.Tensor, shows: np.ndarray) -> None:
        """Standardize the measurements by ``feats``' statistics and start each word's prototype at the mean of the
        clips that show it (``shows`` [N, 3]: colour, shape, direction indices, -1 unknown: :func:`shown_values`); a
        word no clip shows keeps its start (grey, an even template, no direction)."""
        if len(feats) == 0:
            return
        self.feature_mean.copy_(feats.mean(dim=0))
        self.feature_std.copy_(feats.std(dim=0).clamp_min(1e-6) if len(feats) > 1 else torch.ones(_N))
        shows = torch.as_tensor(shows)
        colour = feats[:, _I["colour_r"] : _I["colour_b"] + 1]
        travel = feats[:, [_I["travel_x"], _I["travel_y"]]]
        for k in range(len(COLORS)):
            if (shows[:, 0] == k).any():
                self.colours[k] = colour[shows[:, 0] == k].mean(dim=0)
        for k in range(len(SHAPES)):
            if (shows[:, 1] == k).any():
                frames = sil[shows[:, 1] == k].flatten(0, 1)
                frames = frames[frames.sum(dim=1) > 0]  # the frames with an object
                if len(frames):
                    self.templates[k] = torch.logit(frames.mean(dim=0).clamp(0.02, 0.98))
        for k in range(len(DIRECTIONS)):
            if (shows[:, 2] == k).any():
                v = travel[shows[:, 2] == k].mean(dim=0)
                if v.norm() > 1e-6:
                    self.directions[k] = v / v.norm()

    # -- scoring ---------------------------------------------------------------------------------------------------

    def heads_from(
        self, feats: torch.Tensor, sil: torch.Tensor, attrs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Measurements [B, features], silhouettes [B, F, cells] and the asked attributes [B, 3] -> (scores [B, 3]:
        semantic, fidelity, motion; ``shows`` logits [B, 13]; ``{"passes": [B, 3] logits, "grade": [B]}``)."""
        det = feats[:, _I["detected"]].unsqueeze(1)
        z = (feats - self.feature_mean) / self.feature_std
        scale = F.softplus(self.shows_scale) * 10
        # colour: distances to the colour words' prototypes, in units of 100 RGB levels
        dist = torch.cdist(feats[:, _I["colour_r"] : _I["colour_b"] + 1], self.colours) * 2.55
        d_asked = dist.gather(1, attrs[:, 0:1])
        d_other = dist.masked_fill(F.one_hot(attrs[:, 0], len(COLORS)).bool(), math.inf).amin(dim=1, keepdim=True)
        colour = self.colour_term(torch.cat([d_asked, d_asked - d_other, det, z[:, _I["colour_variation"], None]], 1))
        # shape: soft IoU of the silhouette with each shape word's template
        tmpl = torch.sigmoid(self.templates)
        # soft IoU (Jaccard) per frame with an object, averaged over those frames: [B, shapes]
        inter = torch.minimum(sil[:, :, None], tmpl[None, None]).sum(-1)
        union = torch.maximum(sil[:, :, None], tmpl[None, None]).sum(-1).clamp_min(1e-6)
        seen = (sil.sum(-1) > 0).to(sil.dtype)[..., None]  # B, F, 1
        iou = (inter / union * seen).sum(dim=1) / seen.sum(dim=1).clamp_min(1.0)
        i_asked = iou.gather(1, attrs[:, 1:2])
        i_other = iou.masked_fill(F.one_hot(attrs[:, 1], len(SHAPES)).bool(), -math.inf).amax(dim=1, keepdim=True)
        box = feats[:, [_I["box_log_aspect"], _I["box_side"], _I["box_fill"]]]
        shape = self.shape_term(torch.cat([i_asked, i_asked - i_other, box, det], 1))
        # direction: travel along each direction word's vector and across it
        unit = self.directions / self.directions.norm(dim=1, keepdim=True).clamp_min(1e-6)
        travel = feats[:, [_I["travel_x"], _I["travel_y"]]]
        along_all = travel @ unit.T  # B, 4
        u = unit[attrs[:, 2]]
        along = along_all.gather(1, attrs[:, 2:3])
        across = (travel[:, 0:1] * u[:, 1:2] - travel[:, 1:2] * u[:, 0:1]).abs()
        direction = self.direction_term(torch.cat([along, across, det], 1))
        passes = torch.stack([colour[:, 0], shape[:, 0], direction[:, 0]], dim=1)
        grade = colour[:, 1] + shape[:, 1] + direction[:, 1]
        # a pass counts whole (the judge counts attributes shown); while training its gradient is its probability's
        # (a straight-through estimator, Bengio et al. 2013), so the verdict losses reach the pass logits
        soft = torch.sigmoid(passes)
        shown = (passes > 0).float()
        if self.training:
            shown = shown + soft - soft.detach()
        semantic = shown.sum(dim=1) + grade
        fidelity = self.fidelity(torch.cat([z, iou], 1))[:, 0]
        motion = self.motion(z)[:, 0]
        quality = torch.stack([fidelity, motion], dim=1) * self.spread[1:] + self.center[1:]
        scores = torch.cat([semantic[:, None], quality], dim=1)
        shows = torch.cat([-dist * scale[0], iou * scale[1] * 10, along_all * scale[2] * 10], dim=1)
        return scores, shows, {"passes": passes, "grade": grade}

    def heads(self, clips: torch.Tensor, attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        feats, sil = self.read(clips.numpy() if isinstance(clips, torch.Tensor) else clips)
        return self.heads_from(feats.to(self.center.device), sil.to(self.center.device), attrs)

    def forward(self, clips: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        """scores [B, 3] (semantic, fidelity, motion): the values the verdict links read."""
        return self.heads(clips, attrs)[0]

    # -- what the reasons state --------------------------------------------------------------------------------------

    def reason_loss(
        self, scores: torch.Tensor, aux: dict, stated: torch.Tensor, passes: torch.Tensor
    ) -> tuple[torch.Tensor, float, int]:
        """Squared error of the stated scores (fidelity and motion as stated; the semantic key split into the number
        of attributes shown, whose passes learn by cross-entropy, and the graded rest) in units of the scores'
        spread, summed; with the summed squared error and the count of stated scores for the loss curve."""
        loss = scores.new_zeros(())
        known = ~torch.isnan(stated)
        sq, n = 0.0, 0
        for k in (1, 2):
            m = known[:, k]
            if m.any():
                err = scores[m, k] - stated[m, k]
                loss = loss + (err / self.spread[k]).pow(2).sum()
                sq, n = sq + float(err.detach().pow(2).sum()), n + int(m.sum())
        m = known[:, 0]
        if m.any():
            err = aux["grade"][m] - (stated[m, 0] - torch.floor(stated[m, 0]))
            loss = loss + (err / self.spread[0]).pow(2).sum()
            sq, n = sq + float(err.detach().pow(2).sum()), n + int(m.sum())
        has = passes >= 0
        if has.any():
            loss = loss + F.binary_cross_entropy_with_logits(aux["passes"][has], passes[has].float(), reduction="sum")
        return loss, sq, n


def shown_values(ex) -> np.ndarray:
    """What each clip of an :class:`~vipo.critics.learn.worldnet.Example` shows [N, 3] (colour, shape, direction
    indices; -1 unknown), for the prototypes' start: what the reasons say it shows; else the asked value, unless the
    reasons say that attribute failed (a "loose circle" is no example of a circle)."""
    return np.where(ex.shows >= 0, ex.shows, np.where(ex.passes == 0, -1, ex.attrs))


def fit_reasons(
    net: ComponentCriticNet,
    feats: torch.Tensor,
    sil: torch.Tensor,
    attrs: torch.Tensor,
    stated: torch.Tensor,
    passes: torch.Tensor,
    steps: int,
    lr: float,
    seed: int,
) -> None:
    """Fit ``net`` to what the reasons state alone (full batch, Adam): the short fit of :func:`choose_threshold`."""
    torch.manual_seed(seed)
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        faults.check_term("critic train")  # SIGTERM: stop between steps, here as in training
        scores, _, aux = net.heads_from(feats, sil, attrs)
        loss, _, n = net.reason_loss(scores, aux, stated, passes)
        optim.zero_grad(set_to_none=True)
        (loss / max(1, n)).backward()
        optim.step()


def stated_error(net: ComponentCriticNet, scores: torch.Tensor, stated: torch.Tensor) -> float:
    """Mean squared error, in units of each score's spread, of ``net``'s evaluation-mode ``scores`` against the
    stated ones (the semantic key whole: number shown plus grade)."""
    known = ~torch.isnan(stated)
    err = ((scores - torch.nan_to_num(stated)) / net.spread)[known]
    return float(err.pow(2).mean()) if len(err) else math.inf


def scores_in_chunks(net: ComponentCriticNet, feats, sil, attrs, chunk: int = 256) -> torch.Tensor:
    """Evaluation-mode scores [N, 3] of measured clips, ``chunk`` at a time (per-frame silhouettes against every
    template are large)."""
    net.eval()
    with torch.no_grad():
        out = [
            net.heads_from(feats[i : i + chunk], sil[i : i + chunk], attrs[i : i + chunk])[0]
            for i in range(0, len(attrs), chunk)
        ]
    return torch.cat(out) if out else torch.zeros(0, 3)


def choose_threshold(
    clips: np.ndarray,
    attrs: np.ndarray,
    stated: np.ndarray,
    shows: np.ndarray,
    passes: np.ndarray,
    cfg: NetConfig,
    seed: int = 0,
    steps: int = 400,
    pairs: list | tuple = (),
) -> tuple[float, dict]:
    """The tracker's foreground level (0-255) for ``clips``, among Otsu's threshold times ``THRESHOLD_FRACTIONS``.

    The clips with stated scores are grouped by ``pairs`` (clips linked by a pair, directly or not, are one group)
    and whole groups, in a seeded random order, are taken until about ``SEARCH_CLIPS`` clips (the last group whole);
    of those, a fifth (whole groups again) is held out. At each level the same network start is fitted briefly (full
    batch) to the stated scores of the rest, its tie bands are set on the explained pairwise votes among the rest
    (:func:`~vipo.critics.learn.worldnet.calibrate_ties`), and it answers the explained pairwise votes among the
    held-out clips. The level whose verdicts agree with the most of them wins (ties: the smaller error on the
    held-out stated scores). ``pairs``: the explained pairwise votes, (clip a, clip b, dimension, verdict index).
    The pairwise verdicts are the criterion because they turn on the finest differences between clips: the stated
    scores' squared error can rank the levels otherwise (on the world's labels, seed 1, it ranked 1.0 x Otsu first,
    the pairs 0.9). With fewer than five groups to split (one chain of pairs, or groups larger than
    ``SEARCH_CLIPS``), clips are held out one by one and a pair counts only where both its clips fall on one side;
    without held-out pairs the stated error alone decides; without stated scores (``reasons: false``), Otsu's
    threshold.

    Returns the level and ``{fraction: {"pairwise_accuracy": ..., "stated_error": ...}}`` (held-out; accuracy NaN
    without held-out pairs)."""
    otsu = otsu_threshold(brightness_histogram(clips)) * 255
    has = ~np.isnan(stated).all(axis=1)
    if has.sum() < 10:
        return otsu, {}
    rng = np.random.default_rng(seed)
    # whole groups, so that a held-out pair has both its clips held out; a clip with nothing stated stays out
    groups = [[i for i in g if has[i]] for g in _components(len(clips), list(pairs))]
    groups = [g for g in groups if g]
    chosen: list[list[int]] = []
    for k in rng.permutation(len(groups)):
        if sum(map(len, chosen)) >= SEARCH_CLIPS:  # a full batch stays affordable
            break
        chosen.append(groups[k])
    if len(chosen) < 5:  # too few groups to hold whole ones out: clip by clip
        chosen = [[int(i)] for i in rng.permutation(np.flatnonzero(has))[:SEARCH_CLIPS]]
    held_groups, total, n_held = [], sum(map(len, chosen)), 0
    while len(chosen) > 1 and n_held < total // 5:  # never every group: something must be left to fit
        held_groups.append(chosen.pop())
        n_held += len(held_groups[-1])
    held = np.array(sorted(i for g in held_groups for i in g), dtype=np.int64)
    fit = np.array(sorted(i for g in chosen for i in g), dtype=np.int64)
    idx = np.concatenate([held, fit])
    at = {int(i): k for k, i in enumerate(idx)}
    held_set = set(held.tolist())

    def local(inside: bool) -> list:  # the pairs with both clips on one side (split clip by clip, some straddle)
        return [
            (at[a], at[b], d, t)
            for a, b, d, t in pairs
            if a in at and b in at and (a in held_set) == inside and (b in held_set) == inside
        ]

    held_pairs, fit_pairs = local(True), local(False)
    a = torch.from_numpy(attrs[idx]).long()
    st = torch.from_numpy(stated[idx]).float()
    ps = torch.from_numpy(passes[idx]).long()
    ph, pf = torch.arange(len(held)), torch.arange(len(held), len(idx))
    results, sub = {}, clips[idx]
    for frac in THRESHOLD_FRACTIONS:
        torch.manual_seed(seed)  # the same start for every level: only the measurements differ
        net = ComponentCriticNet(cfg)
        net.threshold.fill_(otsu * frac)
        feats, sil = net.read(sub)
        net.fit_prototypes(feats[pf], sil[pf], shows[fit])
        set_scale(net, stated[fit])
        fit_reasons(net, feats[pf], sil[pf], a[pf], st[pf], ps[pf], steps, 3e-3, seed)
        scores = scores_in_chunks(net, feats, sil, a)
        calibrate_ties(net, scores, fit_pairs)
        results[frac] = {
            "pairwise_accuracy": pair_accuracy(net, scores, held_pairs),
            "stated_error": stated_error(net, scores[ph], st[ph]),
        }
        log.info(
            "critic train: foreground at %.2f x Otsu (%.1f): held-out pairwise accuracy %.4f (%d explained votes), "
            "stated error %.4f",
            frac,
            otsu * frac,
            results[frac]["pairwise_accuracy"],
            len(held_pairs),
            results[frac]["stated_error"],
        )

    def rank(frac: float) -> tuple:
        acc = results[frac]["pairwise_accuracy"]
        return (-(0.0 if math.isnan(acc) else acc), results[frac]["stated_error"])

    best = min(results, key=rank)
    return otsu * best, results
