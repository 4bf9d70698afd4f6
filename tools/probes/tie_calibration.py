"""Probe (not part of the package): would a tie margin chosen on the training labels lift a learned world critic's
pairwise accuracy? The critic's own pairwise verdict is the argmax of its ordered-logistic link (fit by likelihood);
here, per dimension, the margin t on the score difference (A if d > t, B if d < -t, else Tie) that maximises accuracy
against the voted labels of the train split is applied to the test split and scored against the exact world judge.

usage: python tools/probes/tie_calibration.py DATA.jsonl CRITIC_DIR
"""

import sys

import numpy as np
import torch

from vipo.critics.base import DIMENSIONS, Video
from vipo.critics.learn.data import read_records
from vipo.critics.learned import LearnedWorldCritic
from vipo.critics.options import LearnedOptions
from vipo.critics.world import WorldCritic
from vipo.io.video import read_mp4
from vipo.stats import wilson


def questions(records):
    """(a, b) paths -> {dimension: voted verdict} for the pairwise records."""
    out = {}
    for r in records:
        if r.task == "pairwise":
            out.setdefault(tuple(str(p) for p in r.paths()), {})[r.dimension] = r.verdict
    return out


def decide(d: np.ndarray, t: float) -> np.ndarray:
    return np.where(d > t, "A", np.where(d < -t, "B", "Tie"))


def main(data: str, critic_dir: str) -> None:
    torch.set_num_threads(2)
    critic = LearnedWorldCritic(LearnedOptions(model=critic_dir, device="cpu"))
    splits = {s: questions(read_records(data, split=s)) for s in ("train", "test")}
    prompts = {str(p): r.prompt for s in ("train", "test") for r in read_records(data, split=s) for p in r.paths()}
    paths = sorted({p for qs in splits.values() for pair in qs for p in pair})
    videos = {p: Video(prompts[p], read_mp4(p), p) for p in paths}
    scores = {}
    for i in range(0, len(paths), 64):
        chunk = paths[i : i + 64]
        s = critic.net_scores([videos[p] for p in chunk]).numpy()
        scores.update({p: s[k] for k, p in enumerate(chunk)})
    judge = WorldCritic()
    truth = {pair: judge.pairwise(videos[pair[0]], videos[pair[1]]).verdicts for pair in splits["test"]}
    own = {
        pair: v.verdicts
        for pair, v in zip(splits["test"], critic.pairwise_many([(videos[a], videos[b]) for a, b in splits["test"]]))
    }
    total_own = total_cal = n_all = 0
    for k, dim in enumerate(DIMENSIONS):
        tr = [(scores[a][k] - scores[b][k], v[dim]) for (a, b), v in splits["train"].items() if dim in v]
        d, lab = np.array([x for x, _ in tr]), np.array([y for _, y in tr])
        grid = np.quantile(np.abs(d), np.linspace(0, 0.95, 96))
        acc = [(decide(d, t) == lab).mean() for t in grid]
        t = float(grid[int(np.argmax(acc))])
        te = list(splits["test"])
        dt = np.array([scores[a][k] - scores[b][k] for a, b in te])
        truth_d = np.array([truth[p][dim] for p in te])
        cal = int((decide(dt, t) == truth_d).sum())
        mine = sum(own[p][dim] == truth[p][dim] for p in te)
        n = len(te)
        total_own, total_cal, n_all = total_own + mine, total_cal + cal, n_all + n
        print(
            f"{dim:9s} margin {t:.4f} (train-label acc {max(acc):.3f}); test vs judge: own rule {mine / n:.3f}, "
            f"calibrated {cal / n:.3f} (n {n} unordered pairs)"
        )
    lo, hi = wilson(total_cal, n_all)
    print(f"all: own rule {total_own / n_all:.3f}, calibrated {total_cal / n_all:.3f} [{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
    main(*sys.argv[1:3])
