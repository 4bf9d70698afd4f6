"""Helpers shared by unit tests of several modules (one-line errors, folders of rendered clips)."""

import json


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]  # earlier lines are log lines


def _clips(root, names=("a.mp4", "b.mp4"), prompt="a red circle moving left"):
    """A folder of two rendered world clips with metadata.jsonl naming ``prompt`` (no model)."""
    import random

    from vipo.io.video import write_mp4
    from vipo.world import grammar, render

    root.mkdir(parents=True)
    for i, name in enumerate(names):
        write_mp4(root / name, render.random_clip(grammar.ALL[i], random.Random(i), 32, 9))
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "prompt": prompt}) + "\n" for n in names))
    return root
