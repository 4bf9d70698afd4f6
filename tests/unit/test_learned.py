"""Tests of vipo.critics.learned."""

import json
import random

from learned_helpers import one_thread  # noqa: F401

from vipo.critics.base import DIMENSIONS, Video
from vipo.io.video import write_mp4
from vipo.world import grammar, render

TRAIN = [
    grammar.Attributes(c, s, d)
    for c, s, d in [
        ("red", "circle", "left"),
        ("green", "square", "up"),
        ("blue", "triangle", "down"),
        ("yellow", "circle", "up"),
        ("white", "square", "right"),
        ("magenta", "triangle", "left"),
        ("red", "square", "down"),
        ("green", "circle", "right"),
        ("blue", "circle", "down"),
        ("yellow", "triangle", "left"),
        ("white", "triangle", "down"),
        ("magenta", "circle", "up"),
    ]
]


COLORS = list(grammar.COLORS)


TEST = [grammar.Attributes("red", "triangle", "up"), grammar.Attributes("blue", "square", "up")]  # held out


def rendered_folder(root, combos, per_prompt=4):
    """Clips of each combination's canonical prompt: half right, half in another colour (semantically Bad)."""
    root.mkdir(parents=True, exist_ok=True)
    rows, k = [], 0
    for a in combos:
        for i in range(per_prompt):
            shown = (
                a
                if i % 2 == 0
                else grammar.Attributes(
                    list(grammar.COLORS)[(list(grammar.COLORS).index(a.color) + 1 + i) % 6], a.shape, a.direction
                )
            )
            name = f"{a.key}-{i}.mp4"
            write_mp4(root / name, render.random_clip(shown, random.Random(k), 32, 9))
            rows.append({"file_name": name, "prompt": a.prompt()})
            k += 1
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_world_annotate_then_train_a_critic_that_beats_chance(tmp_path, capsys):
    from vipo.cli import main
    from vipo.config import JudgeConfig
    from vipo.critics.learn import data as learn_data
    from vipo.critics.learned import LearnedWorldCritic

    folder = rendered_folder(tmp_path / "clips", TRAIN + TEST)
    assert (
        main(
            ["world", "annotate", "--videos", str(folder), "--out", str(tmp_path / "lab"), "--error", "0.1", "--quiet"]
        )
        == 0
    )
    assert "percent agreement" in capsys.readouterr().out
    data = tmp_path / "lab" / "export" / "critic_train.jsonl"
    recs = learn_data.read_records(data)
    assert {r.split for r in recs if grammar.parse(r.prompt) in TEST} == {"test"}
    assert {r.split for r in recs if grammar.parse(r.prompt) in TRAIN} == {"train"}
    sim = json.loads((tmp_path / "lab" / "export" / "simulated.json").read_text())
    assert sim["error"] == 0.1 and sim["vote_matches_truth"] > 0.9
    # the same vote code as the people's export: a 1-1-1 split is no label, so some questions have no record
    assert all(sum(r.votes.values()) == 3 and r.votes[r.verdict] >= 2 for r in recs)

    out = tmp_path / "critic"
    assert (
        main(
            [
                "critic",
                "train",
                str(data),
                "--out",
                str(out),
                "--epochs",
                "40",
                "--set",
                "width=16",
                "--set",
                "batch_size=8",
                "--set",
                "lr=0.005",
                "--set",
                "search_steps=100",  # the foreground search, shortened (400 by default: most of this test's time)
                "--quiet",
            ]
        )
        == 0
    )
    info = json.loads((out / "critic.json").read_text())
    assert info["arch"] == "world" and (out / "model.safetensors").is_file() and (out / "loss.png").is_file()
    assert not list(out.glob("*.pt")) and not list(out.glob("*.bin"))  # never pickle
    assert len(info["foreground_search"]) == 4  # the level was searched, each level's short fit recorded
    curve = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    assert curve[-1]["loss"] < curve[0]["loss"]
    # beats chance on the held-out combinations: half the test clips are right, half in the wrong colour
    res = json.loads((out / "eval.json").read_text())["world"]
    assert res["pointwise"]["accuracy"]["semantic"] >= 0.75, res["pointwise"]
    assert res["pairwise"]["position_consistency"]["overall"]["rate"] == 1.0

    critic = LearnedWorldCritic(JudgeConfig(critic="learned", model=str(out)))
    # and on fresh clips of the training prompts (new seeds): right ones Good, wrong-coloured ones not (chance 50%)
    fresh, want = [], []
    for k, a in enumerate(TRAIN):
        for right in (True, False):
            shown = a if right else grammar.Attributes(COLORS[(COLORS.index(a.color) + 2) % 6], a.shape, a.direction)
            clip = render.random_clip(shown, random.Random(1000 + 2 * k + right), 32, 9)
            fresh.append(Video(a.prompt(), clip.repeat(4, 1).repeat(4, 2)))
            want.append(right)
    got = [p.labels["semantic"] == "Good" for p in critic.pointwise_many(fresh)]
    assert sum(g == w for g, w in zip(got, want)) >= 18  # of 24: chance would do this 1% of the time
    a, b = (
        Video(TEST[0].prompt(), render.random_clip(x, random.Random(7), 32, 9).repeat(4, 1).repeat(4, 2))
        for x in (TEST[0], grammar.Attributes("green", "triangle", "up"))
    )
    p = critic.pointwise(a)
    assert set(p.labels) == set(DIMENSIONS) and "P(Good)" in p.raw and 0 <= p.scores["semantic"] <= 1
    ab, ba = critic.pairwise(a, b), critic.pairwise(b, a)
    flip = {"A": "B", "B": "A", "Tie": "Tie"}
    assert all(ab.verdicts[d] == flip[ba.verdicts[d]] for d in DIMENSIONS)
