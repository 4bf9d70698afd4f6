"""The run's report.html: rendered for a tiny run, opened in headless Chromium, its DOM and screenshot checked."""

import subprocess

import numpy as np

from vipo.cli import main


def test_report_html_in_headless_chromium(tiny_run_dir, chromium, tmp_path, capsys):
    assert main(["report", str(tiny_run_dir)]) == 0
    page = tiny_run_dir / "report.html"
    assert str(page) in capsys.readouterr().out
    for name in ("report.md", "report.png", "report-labels.png", "report-gaps.png", "report-train.png"):
        assert (tiny_run_dir / name).is_file()
    text = page.read_text()
    assert "round-1/eval/" in text and "http" not in text.replace("http-equiv", "")  # self-contained
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1800"]
    dom = subprocess.run(browser + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for needed in (
        'id="metrics"',
        'id="labels"',
        'id="gaps"',
        'id="train"',
        'id="gallery"',
        "<td>base</td>",
        "<td>round 1</td>",
    ):
        assert needed in dom, needed
    assert dom.count("data:image/png;base64,") >= 4 + 2 * 4  # 5 plots, 4 prompts x (base, round 1) strips
    shot = tmp_path / "shot.png"
    subprocess.run(browser + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB"))
    assert px.shape[:2] == (1800, 1200)
    assert px.std() > 20 and len(np.unique(px.reshape(-1, 3), axis=0)) > 100  # plots and frames, not a blank page
    assert (px[..., 0].astype(int) - px[..., 1] > 100).any()  # the red shapes of the gallery (or red bars)


def test_report_needs_a_run_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "round-0" in capsys.readouterr().err
