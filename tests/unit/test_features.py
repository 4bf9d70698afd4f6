"""Tests of vipo.critics.features."""

import json
import logging
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny_families import tokenizer  # tests/ is on sys.path (rootdir conftest)

from vipo.cli import main
from vipo.config import JudgeConfig
from vipo.critics import omniscore
from vipo.critics.base import Video
from vipo.critics.features import FeatureModels, aesthetic_layers, middle_indices
from vipo.errors import UserError
from vipo.io.video import write_mp4
from vipo.models import set_allow_pickle

PROJ = 8  # the tiny CLIP's embedding width (VBench's ViT-L/14: 768)


O_MEAN, O_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]  # CLIP's statistics


RNG = np.random.default_rng(0)


STATIC = np.repeat(RNG.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 5, axis=0)


CHANGING = RNG.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random DINO-like ViT, CLIP and X-CLIP folders (save_pretrained, no downloads) and a linear head."""
    import transformers

    root = tmp_path_factory.mktemp("features")
    torch.manual_seed(0)
    small = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24)
    transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=8, **small)).save_pretrained(root / "dino")
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    ).save_pretrained(root / "dino")
    text = dict(vocab_size=50, max_position_embeddings=77, **small)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.CLIPModel(
        transformers.CLIPConfig(
            text_config=text, vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=PROJ
        )
    ).save_pretrained(root / "clip")
    processor.save_pretrained(root / "clip")
    vision = dict(
        image_size=32,
        patch_size=8,
        num_frames=4,
        mit_hidden_size=PROJ,
        mit_intermediate_size=16,
        mit_num_hidden_layers=1,
        mit_num_attention_heads=2,
        **small,
    )
    transformers.XCLIPModel(
        transformers.XCLIPConfig(
            text_config=text, vision_config=vision, projection_dim=PROJ, prompt_layers=1, prompt_num_attention_heads=2
        )
    ).save_pretrained(root / "xclip")
    processor.save_pretrained(root / "xclip")
    tokenizer(77).save_pretrained(root / "xclip")
    w, b = torch.linspace(-1, 1, PROJ)[None], torch.tensor([5.0])
    save_file({"weight": w, "bias": b}, str(root / "head.safetensors"))
    return {
        "dino": str(root / "dino"),
        "clip": str(root / "clip"),
        "xclip": str(root / "xclip"),
        "aesthetic_head": str(root / "head.safetensors"),
        "root": root,
        "w": w,
        "b": b,
    }


def judge(models, **over):
    keys = ("dino", "clip", "aesthetic_head", "xclip")
    return JudgeConfig(critic="omniscore", device="cpu", **{k: models[k] for k in keys}, **over)


def test_consistency_formula_by_hand():
    assert omniscore.feature_consistency(np.ones((4, 3))) == pytest.approx(1.0, abs=1e-12)
    # f1 at 45 degrees to f0; f2 opposite to f0 (negative cosines clip at 0)
    f = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    i1 = (np.sqrt(0.5) + np.sqrt(0.5)) / 2
    i2 = (0.0 + 0.0) / 2  # cos(f2, f1) = -0.707 -> 0, cos(f2, f0) = -1 -> 0
    assert omniscore.feature_consistency(f) == pytest.approx((i1 + i2) / 2)
    assert omniscore.feature_consistency(f[:1]) == 1.0
    assert middle_indices(16, 8) == [0, 2, 4, 6, 8, 10, 12, 14] and middle_indices(3, 8) == [0, 1, 2] + [2] * 5


def test_static_clip_is_consistent_and_changing_one_less(models):
    fm = FeatureModels(judge(models))
    assert set(fm.measures) == {
        "subject_consistency",
        "background_consistency",
        "aesthetic_quality",
        "overall_consistency_xclip",
    }
    assert set(fm.skipped) == {"imaging_quality", "overall_consistency"}
    static, changing = fm.measure(STATIC, "a red circle"), fm.measure(CHANGING, "a red circle")
    for k in ("subject_consistency", "background_consistency"):
        assert static[k] == pytest.approx(1.0, abs=1e-5)
        assert changing[k] < static[k] - 1e-4
    assert -1.0 <= changing["overall_consistency_xclip"] <= 1.0
    wide = fm.measure(RNG.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8), "x")  # not square: resized, cropped
    assert all(np.isfinite(v) for v in wide.values())


def test_aesthetic_head_known_value(models):
    import transformers

    fm = FeatureModels(judge(models, feature_batch=2))  # batches of 2 frames: the result must not depend on it
    got = fm.measure(CHANGING, "x", only={"aesthetic_quality"})["aesthetic_quality"]
    # by hand: 32x32 frames need no resize or crop for a 32-pixel CLIP, only CLIP's mean and std
    clip = transformers.CLIPModel.from_pretrained(models["clip"])
    mean, std = torch.tensor(O_MEAN).view(1, 3, 1, 1), torch.tensor(O_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(CHANGING).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        e = clip.get_image_features(pixel_values=x)
    e = e if isinstance(e, torch.Tensor) else e.pooler_output
    e = e / e.norm(dim=-1, keepdim=True)
    expected = float(((e @ models["w"].T + models["b"])[:, 0] / 10).mean())
    assert got == pytest.approx(expected, abs=1e-5)
    # LAION's layers.N naming (the improved predictor): its linear layers chained in order
    a, b = torch.randn(3, PROJ), torch.randn(1, 3)
    layers = aesthetic_layers(
        {"layers.0.weight": a, "layers.0.bias": torch.zeros(3), "layers.2.weight": b, "layers.2.bias": torch.ones(1)},
        "head",
    )
    v = torch.randn(2, PROJ)
    from vipo.critics.features import aesthetic_scores

    assert torch.allclose(aesthetic_scores(v, layers), (v @ a.T @ b.T + 1)[:, 0], atol=1e-5)
    with pytest.raises(UserError, match="unexpected key"):
        aesthetic_layers({"fc.weight": a}, "head")


def test_pickle_head_needs_allow_pickle(models):
    pth = models["root"] / "head.pth"
    torch.save({"weight": torch.zeros(1, PROJ), "bias": torch.tensor([7.0])}, pth)
    with pytest.raises(UserError, match="--allow-pickle"):
        FeatureModels(JudgeConfig(device="cpu", clip=models["clip"], aesthetic_head=str(pth)))
    set_allow_pickle(True)
    try:
        fm = FeatureModels(JudgeConfig(device="cpu", clip=models["clip"], aesthetic_head=str(pth)))
        assert fm.measure(STATIC, "x")["aesthetic_quality"] == pytest.approx(0.7)
    finally:
        set_allow_pickle(False)


def test_missing_or_wrong_paths_are_one_line_errors(models, tmp_path):
    with pytest.raises(UserError, match=r"judge\.dino \(--dino\): /no/such/dino: not found"):
        FeatureModels(JudgeConfig(dino="/no/such/dino"))
    with pytest.raises(UserError, match=r"judge\.clip .*cannot load"):
        FeatureModels(JudgeConfig(device="cpu", clip=str(tmp_path)))  # a folder, but no model in it
    with pytest.raises(UserError, match="aesthetic_head.*neither"):
        FeatureModels(JudgeConfig(aesthetic_head=models["aesthetic_head"]))
    save_file({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, str(tmp_path / "big.safetensors"))
    with pytest.raises(UserError, match="768-d"):
        FeatureModels(JudgeConfig(device="cpu", clip=models["clip"], aesthetic_head=str(tmp_path / "big.safetensors")))


def test_imaging_quality_needs_pyiqa(models, monkeypatch):
    weights = models["root"] / "musiq.safetensors"
    save_file({"scale": torch.tensor([1.0])}, str(weights))
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # as if pyiqa were not installed
    fm = FeatureModels(JudgeConfig(device="cpu", musiq=str(weights)))
    assert "imaging_quality" not in fm.measures and "pyiqa" in fm.skipped["imaging_quality"]

    seen = []

    class MUSIQ(torch.nn.Module):  # pyiqa's interface: frames in [0, 1] -> a 0-100 score each
        def __init__(self, pretrained=True):
            super().__init__()
            assert pretrained is False  # never fetch weights
            self.scale = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append(tuple(x.shape))
            return 100 * self.scale * x.mean(dim=(1, 2, 3))[:, None]

    arch = types.ModuleType("pyiqa.archs.musiq_arch")
    arch.MUSIQ = MUSIQ
    for name, mod in (
        ("pyiqa", types.ModuleType("pyiqa")),
        ("pyiqa.archs", types.ModuleType("pyiqa.archs")),
        ("pyiqa.archs.musiq_arch", arch),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    fm = FeatureModels(JudgeConfig(device="cpu", musiq=str(weights)))
    frames = np.full((2, 40, 1024, 3), 51, np.uint8)
    assert fm.measure(frames, "x")["imaging_quality"] == pytest.approx(0.2, abs=1e-4)  # 51/255, / 100 * 100
    assert seen[-1] == (2, 3, 20, 512)  # the long side brought down to 512


def test_critic_with_and_without_model_paths(models, caplog):
    with caplog.at_level(logging.WARNING):
        bare = omniscore.OmniScoreCritic()
    for k in omniscore.NEEDS_WEIGHTS:
        assert k in caplog.text  # each skipped dimension is named
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        c = omniscore.OmniScoreCritic(judge(models))
    skipped = caplog.text.split("skipping", 1)[1]
    assert "imaging_quality" in skipped and "overall_consistency (needs ViCLIP" in skipped
    assert "subject_consistency" not in skipped and "stand-in" in caplog.text
    video = Video("a red circle", CHANGING)
    m = c.measure(video)
    assert {"subject_consistency", "background_consistency", "aesthetic_quality", "overall_consistency_xclip"} <= set(
        m["raw"]
    )
    assert m["total"] == pytest.approx(omniscore.omniscore(omniscore.normalized(m["raw"])))
    assert m["dims"]["semantic"] is not None and "subject_consistency=" in c.pointwise(video).raw
    assert bare.measure(video)["dims"]["semantic"] is None
    assert c.pairwise(Video("a red circle", STATIC), video).overall in ("A", "B", "Tie")


def folder(tmp_path, clips):
    root = tmp_path / "videos"
    rows = []
    for i, c in enumerate(clips):
        write_mp4(root / f"clip-{i}.mp4", c)
        rows.append(json.dumps({"file_name": f"clip-{i}.mp4", "prompt": "a red circle"}) + "\n")
    (root / "metadata.jsonl").write_text("".join(rows))
    return root


def test_vipo_eval_measures_given_models_and_names_the_skipped(models, tmp_path, capsys):
    root = folder(tmp_path, [STATIC, CHANGING[:3]])
    assert main(["eval", str(root), "--out", str(tmp_path / "bare")]) == 0
    bare = json.loads((tmp_path / "bare" / "vipo_final_score.json").read_text())
    assert bare["measured"] == list(omniscore.MEASURES) and set(bare["skipped"]) == set(omniscore.NEEDS_WEIGHTS)
    assert "skipping subject_consistency" in capsys.readouterr().err
    (tmp_path / "judge.yaml").write_text(f"judge:\n  critic: omniscore\n  clip: {models['clip']}\n")
    argv = [
        "eval",
        str(root),
        "--out",
        str(tmp_path / "full"),
        "--device",
        "cpu",
        "--config",
        str(tmp_path / "judge.yaml"),
        "--dino",
        models["dino"],
        "--aesthetic-head",
        models["aesthetic_head"],
        "--xclip",
        models["xclip"],
    ]
    assert main(argv) == 0
    out = capsys.readouterr()
    score = json.loads((tmp_path / "full" / "vipo_final_score.json").read_text())
    assert json.loads(out.out[: out.out.rindex("}") + 1])["skipped"] == score["skipped"]  # printed as well
    assert {"subject_consistency", "background_consistency", "aesthetic_quality", "overall_consistency_xclip"} <= set(
        score["measured"]
    )
    assert set(score["skipped"]) == {"imaging_quality", "overall_consistency"}
    assert "ViCLIP" in score["stand_ins"]["overall_consistency_xclip"]
    res = json.loads((tmp_path / "full" / "vipo_eval_results.json").read_text())
    rows = res["subject_consistency"][1]
    assert rows[0]["video_results"] == pytest.approx(1.0, abs=1e-4) and rows[1]["video_results"] < 1.0
    # VBench's folder mean for the consistency dimensions is over frame pairs (4 of the static clip, 2 of the other)
    assert res["subject_consistency"][0] == pytest.approx(
        (4 * rows[0]["video_results"] + 2 * rows[1]["video_results"]) / 6
    )
    assert score["raw"]["background_consistency"] == pytest.approx(res["background_consistency"][0])
    norm = omniscore.normalized({k: v for k, v in score["raw"].items()})
    assert score["quality score"] == pytest.approx(omniscore.vbench_scores(norm)["quality"])
    assert score["total score"] == pytest.approx((4 * score["quality score"] + score["semantic score"]) / 5)
    # a dimension asked for without its model, and a missing path: one line each
    assert main(["eval", str(root), "--dimension", "subject_consistency"]) == 2
    assert "--dino" in capsys.readouterr().err
    assert main(["eval", str(root), "--clip", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "judge.clip" in err and "nowhere" in err
