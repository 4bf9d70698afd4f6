"""The ``learned`` critic: a world critic that ``vipo critic train`` fitted to (simulated) people's voted labels.

``judge.model`` names the folder it wrote (``critic.json`` + ``model.safetensors``; never pickle). It answers both
kinds of question in the critic text format, with its probabilities as the reasons, so its raw text is as
inspectable as an LLM's::

    semantic: Good - P(Good) 0.93, P(Normal) 0.05, P(Bad) 0.02 (score 2.41)

Pairwise verdicts come from the difference of the two videos' scores (:mod:`vipo.critics.learn.worldnet`), so the
two orders of a pair always agree. The graded score of a dimension (what ``pairs`` breaks ties with and eval reports
as ``*_score``) is the expected label value, ``P(Good) + 0.5 P(Normal)``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..device import resolve_device
from .base import DIMENSIONS, BatchCritic, Pairwise, Pointwise, Video, format_answer, parse_pairwise, parse_pointwise
from .learn import worldnet
from .options import LearnedOptions


class LearnedWorldCritic(BatchCritic):
    name = "learned"
    Options = LearnedOptions

    def __init__(self, cfg: LearnedOptions, net: worldnet.VerdictLinks | None = None):
        self.device = resolve_device(cfg.device)
        self.net = net.to(self.device).eval() if net is not None else worldnet.load(cfg.model, self.device)
        self._cache: dict[str, torch.Tensor] = {}

    def _key(self, v: Video) -> str:
        return hashlib.sha1(v.frames.tobytes() + v.prompt.encode()).hexdigest()

    @torch.no_grad()
    def net_scores(self, videos: list[Video]) -> torch.Tensor:
        """[N, 3] scores (semantic, fidelity, motion), cached per (frames, prompt)."""
        todo = [v for v in dict.fromkeys(self._key(v) for v in videos) if v not in self._cache]
        by_key = {self._key(v): v for v in videos}
        if todo:
            if len(self._cache) > 8192:
                self._cache.clear()
            cfg = self.net.cfg
            clips = np.stack([worldnet.to_clip(by_key[k].frames, cfg.input_side, cfg.frames) for k in todo])
            attrs = np.array([worldnet.attr_index(worldnet.attributes(by_key[k].prompt)) for k in todo])
            out = worldnet.scores(self.net, clips, attrs).cpu()
            self._cache.update(zip(todo, out))
        return torch.stack([self._cache[self._key(v)] for v in videos])

    @torch.no_grad()
    def pointwise_many(self, videos: list[Video]) -> list[Pointwise]:
        if not videos:
            return []
        s = self.net_scores(videos)
        lp = self.net.pointwise_logp(s.to(self.device)).exp().cpu()  # N, 3 dims, (Bad, Normal, Good)
        out = []
        for i in range(len(videos)):
            labels = {d: worldnet.label_of(lp[i, k]) for k, d in enumerate(DIMENSIONS)}
            reasons = {
                d: f"P(Good) {lp[i, k, 2]:.2f}, P(Normal) {lp[i, k, 1]:.2f}, P(Bad) {lp[i, k, 0]:.2f} "
                f"(score {s[i, k]:.2f})"
                for k, d in enumerate(DIMENSIONS)
            }
            p = parse_pointwise(format_answer(labels, reasons))
            p.scores = {d: float(lp[i, k, 2] + 0.5 * lp[i, k, 1]) for k, d in enumerate(DIMENSIONS)}
            out.append(p)
        return out

    @torch.no_grad()
    def pairwise_many(self, pairs: list[tuple[Video, Video]]) -> list[Pairwise]:
        if not pairs:
            return []
        s = self.net_scores([v for pair in pairs for v in pair]).to(self.device)
        lp = self.net.pairwise_logp(s[0::2], s[1::2]).exp().cpu()  # N, 3 dims, (A, B, Tie)
        out = []
        for i in range(len(pairs)):
            verdicts = {d: worldnet.verdict_of(lp[i, k]) for k, d in enumerate(DIMENSIONS)}
            reasons = {
                d: f"P(A) {lp[i, k, 0]:.2f}, P(B) {lp[i, k, 1]:.2f}, P(Tie) {lp[i, k, 2]:.2f}"
                for k, d in enumerate(DIMENSIONS)
            }
            out.append(parse_pairwise(format_answer(verdicts, reasons)))
        return out
