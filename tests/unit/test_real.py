"""data.real: the real-video datasets (folder, VidGen-1M JSONL, OpenVid-1M CSV), their one-line errors, and the
latents encoded once per model."""

import json

import numpy as np
import pytest
import torch

from vipo.data.cache import LatentCache
from vipo.data.real import EncodedRealVideos, WorldRealVideos, load_clip, read_dataset
from vipo.errors import UserError
from vipo.io.video import write_mp4
from vipo.world import grammar


def _videos(folder, n=2, frames=12):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    for i in range(n):
        write_mp4(folder / f"v{i}.mp4", rng.integers(0, 256, (frames, 32, 48, 3)).astype(np.uint8), upscale_to=32)
    return folder


def test_dataset_layouts_folder_vidgen_jsonl_and_openvid_csv(tmp_path):
    d = _videos(tmp_path / "d")
    for i in range(2):
        (d / f"v{i}.txt").write_text(f" caption {i}\n")
    assert [(c.video.name, c.caption) for c in read_dataset(d)] == [("v0.mp4", "caption 0"), ("v1.mp4", "caption 1")]
    vidgen = d / "vidgen.jsonl"  # VidGen-1M: {"vid": id, "caption": ...}, videos named id.mp4
    vidgen.write_text(
        json.dumps({"vid": "v1", "caption": "one"}) + "\n\n" + json.dumps({"vid": "v0.mp4", "caption": "zero"}) + "\n"
    )
    assert [(c.video.name, c.caption) for c in read_dataset(vidgen)] == [("v1.mp4", "one"), ("v0.mp4", "zero")]
    openvid = d / "openvid.csv"  # OpenVid-1M: video,caption,aesthetic score,...
    openvid.write_text('video,caption,aesthetic score\nv0.mp4,"a cat, sleeping",5.1\n')
    assert [(c.video.name, c.caption, c.where) for c in read_dataset(openvid)] == [
        ("v0.mp4", "a cat, sleeping", f"{openvid}: line 2")
    ]


@pytest.mark.parametrize(
    "name,text,message",
    [
        (
            "m.jsonl",
            '{"video": "v0.mp4", "caption": "ok"}\n{"video": "v1.mp4"}\n',
            r"m.jsonl: line 2: no caption column",
        ),
        ("m.jsonl", '{"video": "v0.mp4", "caption": "ok"}\n{"video": \n', r"m.jsonl: line 2: invalid JSON"),
        ("m.jsonl", '["v0.mp4", "ok"]\n', r"m.jsonl: line 1: expected a JSON object"),
        ("m.csv", "file,caption\nv0.mp4,ok\n", r"m.csv: line 2: no video column \(one of video, video_path"),
        (
            "m.csv",
            "video,caption\nv0.mp4,ok\nmissing.mp4,gone\n",
            r"m.csv: line 3: video 'missing.mp4': file not found",
        ),
        ("m.txt", "v0.mp4\n", r"m.txt: real videos must be a folder of videos or a .jsonl/.csv manifest"),
    ],
)
def test_manifest_errors_name_file_line_and_field(tmp_path, name, text, message):
    _videos(tmp_path)
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=message):
        read_dataset(tmp_path / name)


def test_dataset_errors_for_missing_files_captions_and_unreadable_videos(tmp_path):
    with pytest.raises(UserError, match="nowhere.jsonl: real videos not found"):
        read_dataset(tmp_path / "nowhere.jsonl")
    d = _videos(tmp_path / "d", n=1)
    with pytest.raises(UserError, match=r"v0.mp4: no caption file v0.txt beside it"):
        read_dataset(d)
    (d / "v0.txt").write_text("fine")
    (d / "v1.mp4").write_bytes(b"not a video")
    (d / "v1.txt").write_text("broken")
    clips = read_dataset(d)
    clip = load_clip(clips[0], 9, 32, 32)
    assert clip.shape == (9, 32, 32, 3) and clip.dtype == np.uint8  # 32x48 centre-cropped to square
    with pytest.raises(UserError, match=r"v1.txt: .*v1.mp4: unreadable video"):
        load_clip(clips[1], 9, 32, 32)
    with pytest.raises(UserError, match=r"v0.mp4: 12 frames, the model needs 13"):
        load_clip(clips[0], 13, 32, 32)


def test_real_videos_are_encoded_once_per_model(tmp_path, wan):
    d = _videos(tmp_path / "d", n=3)
    for i in range(3):
        (d / f"v{i}.txt").write_text(f"caption {i}")
    calls = []
    encode = wan.vae.encode
    wan.vae.encode = lambda *a, **k: (calls.append(1), encode(*a, **k))[1]
    real = EncodedRealVideos(read_dataset(d), LatentCache(tmp_path / "cache", wan.cache_key("vae")))
    draws = [real.indices(2, seed) for seed in range(4)]
    assert real.prepare(wan, [i for d_ in draws for i in d_]) == len(calls) == len({i for d_ in draws for i in d_})
    again = EncodedRealVideos(read_dataset(d), LatentCache(tmp_path / "cache", wan.cache_key("vae")))
    assert again.prepare(wan, [0, 1, 2]) == 3 - len(calls)  # only the clip no draw needed yet
    captions, latents = again.draw_latents(2, 0)
    assert captions == real.captions(draws[0]) and latents.shape[0] == 2
    want = wan.encode_video(load_clip(real.clips[draws[0][0]], wan.frames, wan.height, wan.width)[None])[0]
    assert torch.allclose(latents[0], want, atol=1e-5)


def test_world_real_videos_carry_the_bases_caption_noise():
    old = WorldRealVideos(9, 32).draw(200, 7)
    clean = WorldRealVideos(9, 32, 0.0).draw(200, 7)
    assert old[0] == clean[0] and (old[1] == clean[1]).all()  # 0 is the old stream, exactly
    noisy = WorldRealVideos(9, 32, 0.3).draw(200, 7)
    assert (noisy[1] == clean[1]).all()  # the same clips
    truth = [grammar.parse(p) for p in clean[0]]
    named = [grammar.parse(p) for p in noisy[0]]
    wrong = sum(a != b for a, b in zip(truth, named)) / 200
    assert 0.55 < wrong < 0.75  # 1 - 0.7^3 = 0.657 of captions name some attribute wrongly
    assert not any(a in grammar.HELDOUT for a in named)  # never a held-out combination
