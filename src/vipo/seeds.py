"""Deterministic seeds. Training samples and evaluation clips draw from disjoint ranges, so no eval seed is ever a
training seed: training seeds are in [0, 2**31), evaluation seeds in [2**31, 2**32)."""

from __future__ import annotations

import hashlib

SPAN = 2**31


def _digest(*parts: object) -> int:
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def sample_seed(run_seed: int, round_: int, prompt_id: int, sample_index: int) -> int:
    return _digest("sample", run_seed, round_, prompt_id, sample_index) % SPAN


def eval_seed(eval_seed_family: int, split: str, index: int) -> int:
    return SPAN + _digest("eval", eval_seed_family, split, index) % SPAN


def stream_seed(*parts: object) -> int:
    """Seed for an internal random stream (training noise, real-video draws), named by its parts."""
    return _digest("stream", *parts) % SPAN
