"""Helpers shared by unit tests of several modules (annotation stores and exports)."""

import json

import numpy as np

from vipo.io.video import write_mp4

PROMPTS = ["a red circle moving left"] * 3 + ["a blue square moving up"] * 2


def make_folder(root, prompts=PROMPTS):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, p in enumerate(prompts):
        frames = np.full((4, 16, 16, 3), 40 * i, dtype=np.uint8)
        write_mp4(root / f"clip-{i}.mp4", frames, fps=4, upscale_to=32)
        rows.append(json.dumps({"file_name": f"clip-{i}.mp4", "prompt": p}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root
