"""Shared by the unit tests: a critic whose answers are a script, keyed by the prompts of the videos it is shown,
and which records what it was asked."""

import numpy as np

from vipo.critics.base import DIMENSIONS, TextCritic, Video, format_answer


def video(prompt: str) -> Video:
    """A one-frame 2x2 black video; the scripted critics tell videos apart by their prompt."""
    return Video(prompt, np.zeros((1, 2, 2, 3), np.uint8))


def answer(*verdicts: str) -> str:
    """A critic's text for one verdict per dimension (semantic, fidelity, motion); one verdict stands for all three."""
    if len(verdicts) == 1:
        verdicts = verdicts * len(DIMENSIONS)
    return format_answer(dict(zip(DIMENSIONS, verdicts)), {d: "scripted" for d in DIMENSIONS})


class ScriptedCritic(TextCritic):
    """``point[prompt]`` and ``pair[(prompt_a, prompt_b)]``: the raw text answered (anything that does not parse
    comes back as a CriticParseError from ``pointwise_many`` / ``pairwise_many``); ``asked`` records the questions
    as ('point', prompt) and ('pair', prompt_a, prompt_b)."""

    def __init__(self, name="scripted", point=None, pair=None, scores=None):
        self.name, self.point, self.pair, self.scores = name, point or {}, pair or {}, scores or {}
        self.asked = []

    def answer_pointwise(self, video):
        self.asked.append(("point", video.prompt))
        return self.point.get(video.prompt, "no verdict")

    def answer_pairwise(self, a, b):
        self.asked.append(("pair", a.prompt, b.prompt))
        return self.pair.get((a.prompt, b.prompt), "no verdict")

    def graded_scores(self, video):
        return dict(self.scores.get(video.prompt, {}))


class FakeModel:
    """A stand-in video model for the stages: each clip is one flat grey whose level is its seed mod 200 (so a clip
    shows which seed made it); ``calls`` records the seeds of each sampler batch and ``encoded`` the prompts."""

    family, device, tokenizer = "fake", "cpu", None
    #: seeds whose latents come out NaN (a sampler that diverged)
    nan_seeds: tuple = ()

    def __init__(self, frames=4, height=16, width=16):
        self.frames, self.height, self.width = frames, height, width
        self.calls, self.encoded = [], []

    def clip_size(self):
        return self.frames, self.height, self.width

    def encode_prompts(self, prompts):
        import torch

        self.encoded.append(list(prompts))
        return {"x": torch.tensor([[float(len(p))] for p in prompts])}

    def sample(self, cond, uncond, seeds, num_steps, guidance):
        import torch

        self.calls.append(list(seeds))
        levels = torch.tensor([float(s % 200) for s in seeds])
        out = levels.view(-1, 1, 1, 1, 1).expand(-1, self.frames, self.height, self.width, 3).clone()
        for i, s in enumerate(seeds):
            if s in self.nan_seeds:
                out[i, 0, 0, 0, 0] = float("nan")
        return out

    def decode(self, latents):
        return np.nan_to_num(latents.numpy()).astype(np.uint8)
