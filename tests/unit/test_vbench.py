"""`vipo eval DIR`: VBench-style metrics on folders of rendered clips whose answers are known."""

import json

import pytest
from cli_helpers import _clips, one_line

from vipo.cli import main
from vipo.critics import omniscore
from vipo.io.video import write_mp4
from vipo.stages.vbench import final_score
from vipo.world import grammar, render

A = grammar.Attributes("red", "circle", "right")


def clip(travel, frames=9):
    return render.render(A, render.ClipGeometry(0.25, 0.5, 0.4, travel), side=64, frames=frames)


def folder(tmp_path, name, clips, meta=True):
    root = tmp_path / name
    for i, c in enumerate(clips):
        write_mp4(root / f"a red circle moving right-{i}.mp4", c)
    if meta:
        (root / "metadata.jsonl").write_text(
            "".join(
                json.dumps({"file_name": f"a red circle moving right-{i}.mp4", "prompt": "x"}) + "\n"
                for i in range(len(clips))
            )
        )
    return root


def scores(tmp_path, name, clips, capsys, meta=True):
    root = folder(tmp_path, name, clips, meta)
    assert main(["eval", str(root), "--out", str(tmp_path / (name + "-out"))]) == 0
    capsys.readouterr()
    res = json.loads((tmp_path / (name + "-out") / "vipo_eval_results.json").read_text())
    assert len(res["temporal_flickering"][1]) == len(clips)  # VBench's layout: [mean, per-video results]
    return json.loads((tmp_path / (name + "-out") / "vipo_final_score.json").read_text())


def test_known_answers_through_the_cli(tmp_path, capsys):
    static, slow, fast = clip(0.0), clip(0.05), clip(0.5)
    flicker = static.copy()
    flicker[1::2] = 0
    jittery = fast[[0, 2, 1, 4, 3, 6, 5, 8, 7]]
    s = {
        n: scores(tmp_path, n, [c], capsys)
        for n, c in (("static", static), ("flicker", flicker), ("slow", slow), ("fast", fast), ("jittery", jittery))
    }
    raw = {n: v["raw"] for n, v in s.items()}
    assert raw["static"] == {"temporal_flickering": 1.0, "motion_smoothness": 1.0, "dynamic_degree": 0.0}
    assert raw["flicker"]["temporal_flickering"] < raw["fast"]["temporal_flickering"] < 1.0
    assert raw["jittery"]["motion_smoothness"] < raw["fast"]["motion_smoothness"] < raw["slow"]["motion_smoothness"]
    assert raw["slow"]["dynamic_degree"] == 0.0 and raw["fast"]["dynamic_degree"] == 1.0
    # VBench's aggregate from the one implementation in omniscore: Total = Quality without a semantic dimension
    assert s["fast"]["total score"] == pytest.approx(omniscore.omniscore(omniscore.normalized(raw["fast"])))
    assert s["fast"]["semantic score"] is None and s["fast"]["videos"] == 1 and s["fast"]["long_clips"] == 0
    # dimension means over a folder; VBench's prompt-index.mp4 names stand in for metadata.jsonl
    both = scores(tmp_path, "both", [static, fast], capsys, meta=False)
    assert both["raw"]["dynamic_degree"] == 0.5


def test_total_quality_semantic_weights():
    got = final_score(
        {"temporal_flickering": 1.0, "motion_smoothness": 0.706, "dynamic_degree": 1.0, "overall_consistency": 0.364}
    )
    assert got["quality score"] == pytest.approx(1.5 / 2.5) and got["semantic score"] == 1.0
    assert got["total score"] == pytest.approx((4 * 0.6 + 1) / 5)


def test_long_clips_noted_and_vbench_backend_one_line(tmp_path, capsys):
    root = folder(tmp_path, "long", [clip(0.3, frames=41)])  # 41 frames at 8 fps: 5.1 s
    assert main(["eval", str(root)]) == 0
    assert json.loads((root / "vbench" / "vipo_final_score.json").read_text())["long_clips"] == 1
    assert "VBench-Long" in capsys.readouterr().err
    try:
        import vbench  # noqa: F401
    except ImportError:
        assert main(["eval", str(root), "--backend", "vbench"]) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and "not installed" in err.splitlines()[-1]
    assert main(["eval", str(root), "--dimension", "aesthetic_quality"]) == 2
    assert main(["eval", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("content, said", [(b"", "unreadable video"), (b"\x00" * 300, "unreadable video")])
def test_eval_dir_with_a_zero_byte_or_corrupt_mp4_is_one_line(tmp_path, capsys, content, said):
    root = _clips(tmp_path / "v")
    (root / "b.mp4").write_bytes(content)
    assert main(["eval", str(root), "--quiet"]) == 2
    err = one_line(capsys)
    assert str(root / "b.mp4") in err and said in err


def test_vbench_constants_in_the_aggregate():
    from vipo.stages.vbench import final_score

    means = {
        "subject_consistency": 0.1462 + 0.8538 / 2,
        "background_consistency": 0.2615,
        "temporal_flickering": 1.0,
        "motion_smoothness": 0.9975,
        "dynamic_degree": 0.0,
        "aesthetic_quality": 0.6,
        "imaging_quality": 0.4,
        "overall_consistency_xclip": 0.182,
    }
    got = final_score(means)
    assert got["background_consistency"] == pytest.approx(0.0) and got["subject_consistency"] == pytest.approx(0.5)
    quality = (0.5 + 0 + 1 + 1 + 0.6 + 0.4 + 0.5 * 0) / 6.5
    assert got["quality score"] == pytest.approx(quality) and got["semantic score"] == pytest.approx(0.5)
    assert got["total score"] == pytest.approx((4 * quality + 0.5) / 5)
