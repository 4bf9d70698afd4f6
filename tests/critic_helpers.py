"""Shared by the critic tests: a folder of rendered world clips with metadata.jsonl, as `vipo judge DIR` reads it."""
import json
import random

from vipo.io.video import write_mp4
from vipo.world import grammar, render

PROMPTS = ("a red circle moving left", "a blue square moving up")


def video_folder(root, per_prompt=2, wrong_every=2):
    """Clips of PROMPTS; every ``wrong_every``-th clip moves the opposite way (semantically wrong)."""
    root.mkdir(parents=True, exist_ok=True)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    rows, k = [], 0
    for p in PROMPTS:
        a = grammar.parse(p)
        for i in range(per_prompt):
            shown = a if k % wrong_every else grammar.Attributes(a.color, a.shape, opposite[a.direction])
            name = f"clip-{k:02d}.mp4"
            write_mp4(root / name, render.random_clip(shown, random.Random(k), 32, 9))
            rows.append({"file_name": name, "prompt": p})
            k += 1
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows
