"""Tests of vipo.io.video: mp4 writing (integer upscaling, even sides, atomic) and reading back."""

import numpy as np
import pytest

from vipo.io.video import read_mp4, upscale, write_mp4


def _clip(frames=4, h=32, w=32):
    """Flat colour blocks that H.264 keeps almost exactly: left half red, right half blue, a frame-indexed green."""
    clip = np.zeros((frames, h, w, 3), np.uint8)
    clip[:, :, : w // 2, 0] = 200
    clip[:, :, w // 2 :, 2] = 200
    clip[..., 1] = (np.arange(frames) * 40)[:, None, None]
    return clip


def test_upscale_repeats_each_pixel_factor_times_each_way():
    x = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    up = upscale(x, 3)
    assert up.shape == (2, 6, 6, 3) and (up[:, ::3, ::3] == x).all() and (up[:, 2::3, 2::3] == x).all()
    assert upscale(x, 1) is x


def test_a_small_clip_is_written_upscaled_and_reads_back_close(tmp_path):
    clip = _clip()
    path = tmp_path / "a.mp4"
    write_mp4(path, clip, upscale_to=128)  # 32 px -> factor 4 -> 128 px
    back = read_mp4(path)
    assert back.shape == (4, 128, 128, 3)
    down = back.reshape(4, 32, 4, 32, 4, 3).mean(axis=(2, 4))  # block-average back, as readers do
    assert np.abs(down - clip).mean() < 4  # near-lossless at crf 12 on flat blocks
    assert read_mp4(path, max_frames=2).shape[0] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # written atomically: no temporary left


def test_odd_sides_are_padded_to_even(tmp_path):
    write_mp4(tmp_path / "odd.mp4", _clip(2, 33, 35), upscale_to=1)
    assert read_mp4(tmp_path / "odd.mp4").shape == (2, 34, 36, 3)


def test_wrong_frames_and_empty_files_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"expected uint8 frames \[F, H, W, 3\], got float32 \(2, 8, 8, 3\)"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="got uint8 \\(8, 8, 3\\)"):
        write_mp4(tmp_path / "x.mp4", np.zeros((8, 8, 3), np.uint8))
    assert not (tmp_path / "x.mp4").exists()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4"):  # PyAV's InvalidDataError is a ValueError naming the file
        read_mp4(empty)
