"""The learned world critic: simulated annotators voted by the annotation export, training in seconds, answering
through the critic interface, saved in safetensors; and the world-critic network's invariants."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from vipo.annotate.items import Item
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
REPO = Path(__file__).resolve().parents[2]
TEST = [grammar.Attributes("red", "triangle", "up"), grammar.Attributes("blue", "square", "up")]  # held out


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is faster than two fighting over a busy machine
    yield
    torch.set_num_threads(before)


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


def test_simulated_annotators_flip_at_the_error_rate():
    from vipo.world.annotators import simulate

    items = [Item(f"pointwise:{i}", "pointwise", "p", (f"{i}",)) for i in range(400)]
    truth = {it.id: ({d: "Good" for d in DIMENSIONS}, {d: "fine" for d in DIMENSIONS}) for it in items}
    assert all(a.verdicts == truth[a.item][0] for a in simulate(items, truth, 3, 0.0))
    answers = simulate(items, truth, 3, 0.2, seed=1)
    flips = [a.verdicts[d] != "Good" for a in answers for d in DIMENSIONS]
    assert len(answers) == 1200 and abs(np.mean(flips) - 0.2) < 0.02  # 3600 draws: sd 0.007
    assert {a.reasons["semantic"] for a in answers if a.verdicts["semantic"] != "Good"} <= {
        "looked Normal to me",
        "looked Bad to me",
    }
    assert simulate(items, truth, 3, 0.2, seed=1) == answers  # seeded per item and annotator


def test_world_annotate_then_train_a_critic_that_beats_chance(tmp_path, capsys):
    from vipo.cli import main
    from vipo.config import JudgeConfig
    from vipo.critics.learn import data as D
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
    recs = D.read_records(data)
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
                "--quiet",
            ]
        )
        == 0
    )
    info = json.loads((out / "critic.json").read_text())
    assert info["arch"] == "world" and (out / "model.safetensors").is_file() and (out / "loss.png").is_file()
    assert not list(out.glob("*.pt")) and not list(out.glob("*.bin"))  # never pickle
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


def test_worldnet_clip_preparation_and_augmentation():
    from vipo.critics.learn import worldnet as W

    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    assert (W.to_clip(frames.repeat(4, 1).repeat(4, 2)) == frames).all()  # the mp4's 4x upscale, averaged back
    assert W.to_clip(np.concatenate([frames, frames])).shape == (9, 32, 32, 3)
    with pytest.raises(ValueError, match="9 frames"):
        W.to_clip(frames[:5])
    clips = frames[None].copy()
    attrs = np.array([W.attr_index(grammar.Attributes("red", "circle", "left"))])
    known = {(0, 0, d) for d in range(4)}
    shows = attrs.copy()
    rng = random.Random(0)
    seen = set()
    for _ in range(20):
        c, a, w = W._augment(clips, attrs, shows, known, rng)
        assert (w == a).all()  # what the clip shows turns with what is asked
        direction = W.DIRECTIONS[a[0, 2]]
        views = {
            (m, r): (frames[::-1] if r else frames)[:, :, ::-1] if m else (frames[::-1] if r else frames)
            for m in (False, True)
            for r in (False, True)
        }
        ((mirrored, reversed_),) = [k for k, v in views.items() if (c[0] == v).all()]
        # left -> right under a mirror or a reversal, back to left under both
        assert direction == ("right" if mirrored != reversed_ else "left")
        seen.add((mirrored, reversed_))
    assert len(seen) == 4
    # never into a combination the training data does not have
    c, a, w = W._augment(clips, attrs, shows, {(0, 0, 2)}, random.Random(0))
    assert (a == attrs).all() and (c == clips).all() and (w == shows).all()


def test_world_reasons_are_read_back():
    """The learned critic learns from what the world judge's reasons state; read_reason reads exactly the judge's
    formats (pairwise values, pointwise scores, the attributes a clip shows) and nothing else."""
    from vipo.critics.world import WorldCritic, read_reason

    prompt = "a red circle moving left"
    assert read_reason("pairwise", "semantic", "A 2.873 vs B 3.051", prompt) == {"scores": (2.873, 3.051)}
    assert read_reason("pointwise", "motion", "score 0.91: jitter 0.012, area variation 0.05", prompt) == {
        "scores": (0.91,)
    }
    assert read_reason("pointwise", "semantic", "a red circle moving left as asked", prompt) == {
        "shows": {"color": "red", "shape": "circle", "direction": "left"}
    }
    got = read_reason(
        "pointwise",
        "semantic",
        "color is not clearly red: looks blue; direction is not clearly left: moves the opposite way (0.30 of the "
        "frame)",
        prompt,
    )
    assert got == {"shows": {"color": "blue", "direction": "right", "shape": "circle"}}
    # a reason that names a failure but not what was seen leaves that attribute unsaid
    got = read_reason(
        "pointwise", "semantic", "shape is not clearly circle: a loose circle: fit 0.61 (at least 0.72)", prompt
    )
    assert got == {"shows": {"color": "red", "direction": "left"}}
    for other in ("looked Good to me", "the circle wobbles", "a blue circle moving left as asked", ""):
        assert read_reason("pointwise", "semantic", other, prompt) == {}
        assert read_reason("pairwise", "motion", other, prompt) == {}
    assert read_reason("pointwise", "semantic", "as asked", "a purple dog") == {}
    # and the judge's own answers on rendered clips read back to the judge's own numbers
    critic = WorldCritic()
    a = grammar.Attributes("red", "circle", "left")
    right = render.random_clip(a, random.Random(1), 32, 9)
    wrong = render.random_clip(grammar.Attributes("blue", "square", "left"), random.Random(2), 32, 9)
    va, vb = Video(a.prompt(), right), Video(a.prompt(), wrong)
    p = critic.pointwise(vb)
    assert read_reason("pointwise", "semantic", p.reasons["semantic"], a.prompt())["shows"] == {
        "color": "blue",
        "shape": "square",
        "direction": "left",
    }
    s = critic.scores(va)
    assert read_reason("pointwise", "fidelity", critic.pointwise(va).reasons["fidelity"], a.prompt()) == {
        "scores": (round(s.fidelity, 2),)
    }
    pair = critic.pairwise(va, vb)
    got = read_reason("pairwise", "semantic", pair.reasons["semantic"], a.prompt())["scores"]
    assert got[0] == pytest.approx(3 + s.semantic, abs=1e-3) and got[0] > got[1]


def test_world_example_learns_what_the_reasons_state(tmp_path):
    """world_example fills each clip's stated scores and shown attributes from the records' reasons (any voter's
    reason the world judge wrote), and nothing from reasons in other words."""
    from vipo.critics.learn import data as D
    from vipo.critics.learn.train import world_example

    a = grammar.Attributes("red", "circle", "left")
    for name, seed in (("x.mp4", 1), ("y.mp4", 2)):
        write_mp4(tmp_path / name, render.random_clip(a, random.Random(seed), 32, 9))

    def rec(i, task, dim, videos, verdict, reasons):
        return {
            "id": f"r{i}",
            "task": task,
            "dimension": dim,
            "prompt": a.prompt(),
            "videos": videos,
            "question": "?",
            "verdict": verdict,
            "votes": {verdict: 2},
            "reasons": reasons,
            "annotators": 3,
            "split": "train",
        }

    rows = [
        rec(0, "pairwise", "semantic", ["x.mp4", "y.mp4"], "A", ["looked A to me", "A 3.900 vs B 2.500"]),
        rec(1, "pointwise", "motion", ["x.mp4"], "Good", ["score 0.93: jitter 0.004"]),
        rec(2, "pointwise", "semantic", ["y.mp4"], "Bad", ["color is not clearly red: looks blue"]),
        rec(3, "pointwise", "fidelity", ["y.mp4"], "Good", ["crisp edges"]),  # a person's words: nothing stated
    ]
    path = tmp_path / "data.jsonl"
    D.write_records(path, rows)
    ex = world_example(D.read_records(path))
    x, y = 0, 1  # first-seen order
    assert ex.stated[x, 0] == pytest.approx(3.9) and ex.stated[y, 0] == pytest.approx(2.5)
    assert ex.stated[x, 2] == pytest.approx(0.93)
    assert np.isnan(ex.stated[y, 1]) and np.isnan(ex.stated[y, 2]) and np.isnan(ex.stated[x, 1])
    from vipo.critics.learn import worldnet as W

    assert ex.shows[y].tolist() == [W.COLORS.index("blue"), W.SHAPES.index("circle"), W.DIRECTIONS.index("left")]
    assert ex.shows[x].tolist() == [-1, -1, -1]
    assert len(ex.point) == 3 and len(ex.pair) == 1


def test_a_critic_saved_by_another_net_version_is_refused_in_one_line(tmp_path):
    from vipo.critics.learn import worldnet as W
    from vipo.errors import UserError

    W.save(W.WorldCriticNet(W.NetConfig(width=4, keypoints=2, hidden=8)), tmp_path, {})
    meta = json.loads((tmp_path / "critic.json").read_text())
    assert W.load(tmp_path).cfg.version == W.NetConfig.version
    meta["net"].pop("version")  # what the first version wrote
    (tmp_path / "critic.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="net version 1 .*train the critic again"):
        W.load(tmp_path)


def test_a_version_2_critic_loads_without_the_tracker_and_scores_as_before(tmp_path):
    from vipo.critics.learn import worldnet as W
    from vipo.errors import UserError

    # the committed version-2 critic (docs/results/world-learned-critic) scores two fixed renders exactly as the
    # code that trained it did (numbers from 351bb4b, before the tracker)
    net = W.load(REPO / "docs/results/world-learned-critic/critic")
    assert net.cfg.tracker is False and net.cfg.input_side == net.cfg.side == 32
    asked = grammar.Attributes("red", "triangle", "up")
    clips = np.stack(
        [
            render.random_clip(asked, random.Random(7), 32, 9),
            render.random_clip(grammar.Attributes("blue", "square", "left"), random.Random(8), 32, 9),
        ]
    )
    got = W.scores(net, clips, np.array([W.attr_index(asked)] * 2))
    want = torch.tensor([[4.25501, 0.81254, 0.89372], [-7.77419, 0.96794, 0.96870]])
    assert torch.allclose(got, want, atol=1e-4)
    with pytest.raises(ValueError, match="reads 32x32 frames, got 64x64"):
        W.scores(net, np.zeros((1, 9, 64, 64, 3), np.uint8), np.zeros((1, 3), np.int64))
    # weights that do not fit the network critic.json describes: one line, not a state-dict traceback
    W.save(W.WorldCriticNet(W.NetConfig(width=4, keypoints=2, hidden=8)), tmp_path, {})
    meta = json.loads((tmp_path / "critic.json").read_text())
    meta["net"]["tracker"] = False
    (tmp_path / "critic.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="weights do not fit the network critic.json describes"):
        W.load(tmp_path)


def _square_path(offsets: list[tuple[int, int]], side: int = 32, size: int = 6) -> np.ndarray:
    """A pure red ``size`` px square whose top-left corner is at ``offsets[t]`` in frame t: exact pixel values."""
    clip = np.zeros((len(offsets), side, side, 3), dtype=np.uint8)
    for t, (x, y) in enumerate(offsets):
        clip[t, y : y + size, x : x + size, 0] = 255
    return clip


def test_the_tracker_measures_a_path_by_hand():
    from vipo.critics.learn import worldnet as W

    steady = _square_path([(4 + t, 10) for t in range(9)])  # 1 px a frame to the right
    jumpy = _square_path([(4 + t, 10 + t % 2) for t in range(9)])  # the same, bobbing 1 px every other frame
    z = W.track(torch.from_numpy(np.stack([steady, jumpy])).float() / 255, 0.5)
    f = dict(zip(W.TRACK_FEATURES, z.T))
    # travel: 8 px over the clip, in frame sides; no vertical travel (the bobbing's slope is 0: ones at t = 1,3,5,7)
    assert torch.allclose(f["travel_x"], torch.tensor([8 / 32, 8 / 32]), atol=1e-4)
    assert torch.allclose(f["travel_y"], torch.tensor([0.0, 0.0]), atol=1e-4)
    # path RMS: 0 for the steady square; y = 0,1,0,...,0 has mean 4/9 and residuals -4/9 (5x) and 5/9 (4x):
    # sqrt((5 * 16 + 4 * 25) / 81 / 9) = sqrt(20 / 81) px = 0.4969 px
    assert f["path_rms"][0] < 1e-4
    assert abs(float(f["path_rms"][1]) - (20 / 81) ** 0.5 / 32) < 1e-4
    assert torch.allclose(f["area"], torch.tensor([36 / 1024] * 2), atol=1e-4)
    assert f["area_variation"].abs().max() < 1e-4 and f["colour_variation"].abs().max() < 1e-2
    assert torch.allclose(f["colour_r"], torch.ones(2), atol=1e-4) and f["colour_g"].abs().max() < 1e-4
    assert f["faint"].abs().max() < 1e-4 and f["log_aspect"].abs().max() < 1e-4
    # the bounding box: 6 px square, filled; eta20 of n x n unit pixels: n * 2 * (0.5^2 + 1.5^2 + 2.5^2) / n^4 =
    # (n^2 - 1) / (12 n^2) = 35 / 432; odd moments 0
    assert torch.allclose(f["box_width"], torch.tensor([6 / 32] * 2), atol=1e-4)
    assert torch.allclose(f["box_fill"], torch.ones(2), atol=1e-3) and f["box_log_aspect"].abs().max() < 1e-4
    assert torch.allclose(f["eta20"], torch.tensor([35 / 432] * 2), atol=1e-5)
    assert f["eta11"].abs().max() < 1e-5 and f["eta30"].abs().max() < 1e-5 and f["eta21"].abs().max() < 1e-5
    # and the same along y (the feature order is the stack's): spread_yy = 35/12 px^2 in frame sides^2
    assert torch.allclose(f["box_height"], torch.tensor([6 / 32] * 2), atol=1e-4)
    assert torch.allclose(f["eta02"], torch.tensor([35 / 432] * 2), atol=1e-5)
    assert torch.allclose(f["spread_xx"], torch.tensor([35 / 12 / 1024] * 2), atol=1e-6)
    assert torch.allclose(f["spread_yy"], torch.tensor([35 / 12 / 1024] * 2), atol=1e-6)
    assert torch.allclose(f["min_area"], f["area"]) and f["eta03"].abs().max() < 1e-5 and f["eta12"].abs().max() < 1e-5
    # fill: area / sqrt(spread_xx spread_yy) = 36 / (35 / 12) in pixels
    assert torch.allclose(f["fill"], torch.tensor([36 / (35 / 12)] * 2), atol=1e-3)


def test_otsu_threshold_splits_two_levels_in_the_middle_of_the_gap():
    from vipo.critics.learn import worldnet as W

    clips = np.full((2, 9, 8, 8, 3), 20, dtype=np.uint8)
    clips[:, :, :4] = 200
    # every level in the gap 20..199 separates the two equally well: the middle of the plateau, (20 + 199) / 2 + 0.5
    assert W.otsu_threshold(W.brightness_histogram(clips)) == pytest.approx(110 / 255)
    # on a clean render (black background, one pure square) the tracker at Otsu's threshold finds the square
    square = _square_path([(4 + t, 10) for t in range(9)])
    z = W.track(torch.from_numpy(square[None]).float() / 255, W.otsu_threshold(W.brightness_histogram(square)))
    f = dict(zip(W.TRACK_FEATURES, z.T))
    assert float(f["area"][0]) == pytest.approx(36 / 1024, abs=1e-4) and float(f["colour_r"][0]) > 0.999


def test_sigterm_stops_critic_training_between_steps():
    """The CLI's SIGTERM handler only sets a flag: the training loop has to look at it (before, `kill` of a
    `vipo critic train` was ignored until the end)."""
    from vipo import faults
    from vipo.critics.learn import worldnet as W

    clips = np.zeros((4, 9, 64, 64, 3), np.uint8)
    attrs = np.zeros((4, 3), np.int64)
    ex = W.Example(clips, attrs, [(i, 0, 2) for i in range(4)], [])
    epochs = []

    def term_after_first_epoch(_net, row):
        epochs.append(row["epoch"])
        faults._term = True

    try:
        with pytest.raises(faults.Terminated, match="critic train"):
            W.train(
                ex,
                W.TrainOptions(epochs=5, batch_clips=2),
                W.NetConfig(width=4, keypoints=2, hidden=8),
                progress=False,
                on_epoch=term_after_first_epoch,
            )
    finally:
        faults._term = False
    assert epochs == [1]
