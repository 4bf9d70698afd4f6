"""Tests of vipo.models."""

import json

from cli_helpers import one_line

from vipo.cli import main
from vipo.models import WORLD_CHECKPOINT


def test_missing_model_folder_and_video_without_frames(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), "--model", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "nope" in one_line(capsys)
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "empty.mp4", "prompt": "a red circle moving left"}))
    assert main(["critic", "eval", str(folder), "--critic", "world"]) == 2
    assert "empty.mp4" in one_line(capsys)


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_model_dir, capsys):
    import shutil

    from vipo.models import check_weights, set_allow_pickle

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for f in (model / "unet").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    assert (
        main(
            [
                "generate",
                "--model",
                str(model),
                "--prompt",
                "a red circle moving left",
                "--out",
                str(tmp_path / "g"),
                "--quiet",
            ]
        )
        == 2
    )
    err = one_line(capsys)
    assert "diffusion_pytorch_model.bin" in err and "--allow-pickle" in err
    set_allow_pickle(True)
    try:
        check_weights(model)  # allowed when asked for
    finally:
        set_allow_pickle(False)


def test_model_folder_with_missing_components_is_one_line(tmp_path, tiny_model_dir, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    shutil.rmtree(model / "text_encoder")
    assert (
        main(
            [
                "generate",
                "--model",
                str(model),
                "--prompt",
                "a red circle moving left",
                "--out",
                str(tmp_path / "g"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "component 'text_encoder' (CLIPTextModel) has no folder" in one_line(capsys)
    assert not (tmp_path / "g").exists()


def test_committed_world_checkpoint_is_small_and_in_diffusers_layout():
    index = json.loads((WORLD_CHECKPOINT / "model_index.json").read_text())
    assert index["family"] == "world"
    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        assert (WORLD_CHECKPOINT / sub).is_dir()
    weights = list(WORLD_CHECKPOINT.rglob("*.safetensors"))
    assert weights and not list(WORLD_CHECKPOINT.rglob("*.bin"))
    total = sum(p.stat().st_size for p in WORLD_CHECKPOINT.rglob("*") if p.is_file())
    assert total <= 30 * 2**20
