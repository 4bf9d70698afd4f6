"""The annotation app in a real headless browser (Debian's chromium + chromedriver, driven by selenium).

Two annotators with their own tokens label pairs and single videos by mouse and by keyboard, reload and resume,
go back and change an answer, skip; data with ``<script>`` / ``<img onerror>`` shows as text; the server is killed
(SIGKILL) right after a submit and restarted without losing it; the export's votes and agreement equal the values
worked out by hand below. One server, one browser session. ``VIPO_SCREENSHOTS=docs/img`` also writes the two
screenshots shown in docs/annotation.md there.
"""

import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("selenium")
pytest.importorskip("fastapi")

from vipo.cli import main  # noqa: E402
from vipo.io.video import write_mp4  # noqa: E402
from vipo.world import grammar, render  # noqa: E402

XSS_PROMPT = 'a red circle moving left <script>window.__xss=1</script><img src=x onerror="window.__xss=1">'
XSS_REASON = '<img src=x onerror="window.__xss=2"> looks fine'
CLIPS = [
    ("a red circle moving left", XSS_PROMPT),
    ("a red circle moving left", XSS_PROMPT),
    ("a blue square moving up", "a blue square moving up"),
    ("a blue square moving up", "a blue square moving up"),
]
DIMS = ("semantic", "fidelity", "motion")
P0, P1 = "pairwise:clip-0.mp4|clip-1.mp4", "pairwise:clip-2.mp4|clip-3.mp4"
S = [f"pointwise:clip-{i}.mp4" for i in range(4)]
# what each annotator answers (item -> semantic, fidelity, motion); ann first says Tie on P0's motion, then goes
# back and changes it to A; ann skips S3
ANN = {
    P0: ("A", "A", "A"),
    P1: ("B", "Tie", "B"),
    S[0]: ("Good", "Normal", "Bad"),
    S[1]: ("Bad", "Bad", "Normal"),
    S[2]: ("Good", "Good", "Good"),
}
BOB = {
    P0: ("A", "B", "A"),
    P1: ("B", "Tie", "B"),
    S[0]: ("Good", "Bad", "Bad"),
    S[1]: ("Bad", "Normal", "Normal"),
    S[2]: ("Good", "Good", "Good"),
    S[3]: ("Normal", "Normal", "Normal"),
}


def make_world_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rows = []
    for i, (world_prompt, shown) in enumerate(CLIPS):
        frames = render.random_clip(grammar.parse(world_prompt), random.Random(i), 32, 24)
        write_mp4(root / f"clip-{i}.mp4", frames, fps=8)
        rows.append(json.dumps({"file_name": f"clip-{i}.mp4", "prompt": shown}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def start_server(root: Path, port: int = 0):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vipo.cli", "annotate", "serve", str(root), "--k", "2", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()}")
    return proc, line.split("serving on ")[1].split()[0].rstrip("/")


def status(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code


def raw_get(base: str, path: str, token: str) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (no client-side normalisation of ``..``)."""
    host, port = base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.putheader("Authorization", f"Bearer {token}")
    conn.endheaders()
    r = conn.getresponse()
    return r.status, r.read()


@pytest.fixture(scope="module")
def browser(chromium, chromedriver):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,960",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        "--disable-gpu",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_two_annotators_label_in_the_browser(browser, tmp_path, capsys):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    wait = WebDriverWait(d, 15)
    root = make_world_folder(tmp_path / "samples")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    os.symlink(tmp_path / "secret.txt", root / "escape.mp4")
    tokens = {}
    for name in ("ann", "bob"):
        assert main(["annotate", "add-user", name, "--dir", str(root)] + (["--admin"] if name == "ann" else [])) == 0
        tokens[name] = capsys.readouterr().out.split("token ")[1].split()[0]
    proc, base = start_server(root)
    shots = tmp_path / "shots"
    shots.mkdir()
    sides: dict[tuple[str, str], str] = {}  # (annotator, pair) -> title of the video shown on the left
    try:
        # -- no token, a wrong token: 401; nothing outside DIR, whatever the path ------------------------------
        assert status(base + "/") == 401 and status(base + "/api/next") == 401
        assert status(base + "/video/clip-0.mp4") == 401
        assert status(base + "/api/me", "vipo_1_" + "x" * 32) == 401 and status(base + "/api/me", tokens["ann"]) == 200
        for path in (
            "/video/../secret.txt",
            "/video/%2e%2e/secret.txt",
            "/video/..%2fsecret.txt",
            f"/video/{tmp_path}/secret.txt",
            f"/video//{tmp_path}/secret.txt",
            "/video/escape.mp4",
            "/video/.vipo-annotate.sqlite",
            "/video/../../../../etc/passwd",
        ):
            code, body = raw_get(base, path, tokens["ann"])
            assert code in (400, 403, 404) and b"TOP SECRET" not in body and b"root:" not in body, path
        assert raw_get(base, "/video/clip-0.mp4", tokens["ann"])[0] == 200

        def current():
            return d.execute_script(
                "return item ? {id: item.id, task: item.task, left: item.videos[0].title, answer: item.answer} : null"
            )

        def wait_item(not_id=None):
            wait.until(
                lambda _: (
                    (c := current()) is not None and c["id"] != not_id and d.find_element(By.ID, "prompt").text != ""
                )
            )
            return current()

        def login(name):
            d.delete_all_cookies()
            d.get(base + "/")
            d.find_element(By.ID, "token").send_keys(tokens[name])
            d.find_element(By.ID, "login").click()
            wait.until(lambda _: d.find_element(By.ID, "who").text == name)

        def by_mouse(who, answers, reason, tags=()):
            cur = current()
            for dim, v in zip(DIMS, answers[cur["id"]]):
                d.find_element(By.CSS_SELECTOR, f'[data-dim="{dim}"] button[data-value="{v}"]').click()
                box = d.find_element(By.CSS_SELECTOR, f'[data-reason="{dim}"]')
                box.clear()
                box.send_keys(f"{who} {dim}: {reason}")
            for title, tag in tags:
                d.find_element(By.CSS_SELECTOR, f'[data-title="{title}"] button[data-tag="{tag}"]').click()
            return cur

        def by_keys(who, answers, reason, shot=None):
            cur = current()
            if cur["task"] == "pairwise":
                sides[(who, cur["id"])] = cur["left"]
                order = [cur["left"], "Tie", "B" if cur["left"] == "A" else "A"]
            else:
                order = ["Good", "Normal", "Bad"]
            keys = [str(3 * r + order.index(v) + 1) for r, v in enumerate(answers[cur["id"]])]
            chain = ActionChains(d).send_keys(*keys)
            for dim in DIMS:
                chain = chain.send_keys(Keys.TAB, f"{who} {dim}: {reason}")
            chain.send_keys(Keys.ESCAPE).perform()
            if shot:
                d.execute_script(
                    "document.getElementById('scrub').value = 400; "
                    "document.getElementById('scrub').dispatchEvent(new Event('input')); "
                    "window.scrollTo(0, 0)"
                )
                wait.until(lambda _: d.execute_script("return videos.every(v => v.readyState >= 2 && !v.seeking)"))
                d.save_screenshot(str(shots / shot))
            ActionChains(d).send_keys(Keys.ENTER).perform()
            return wait_item(cur["id"]) if cur["id"] != S[3] or who != "bob" else None

        def submit_click():
            cur = current()
            d.find_element(By.ID, "submit").click()
            return cur

        # -- ann: the first pair by mouse, with the synced player, a tag and a screenshot -------------------------
        login("ann")
        cur = wait_item()
        assert cur["id"] == P0 and cur["task"] == "pairwise"
        sides[("ann", P0)] = cur["left"]
        # the prompt's <script> and <img onerror> are text on the page, not elements; nothing ran
        prompt = d.find_element(By.ID, "prompt")
        assert prompt.text == XSS_PROMPT
        assert d.execute_script("return document.querySelectorAll('#prompt *').length") == 0
        assert d.execute_script("return window.__xss === undefined")
        wait.until(lambda _: d.execute_script("return videos.every(v => v.readyState >= 2)"))
        d.find_element(By.ID, "play").click()
        wait.until(lambda _: d.execute_script("return videos.every(v => v.currentTime > 0.3)"))
        d.find_element(By.ID, "play").click()  # one button pauses both, in step
        t = d.execute_script("return videos.map(v => [v.paused, v.currentTime])")
        assert all(p for p, _ in t) and abs(t[0][1] - t[1][1]) < 0.01 and t[0][1] > 0.3
        d.execute_script(
            "const s = document.getElementById('scrub'); s.value = 500; s.dispatchEvent(new Event('input'))"
        )  # one scrubber moves both
        t = d.execute_script("return videos.map(v => v.currentTime)")
        assert abs(t[0] - t[1]) < 0.01 and 1.0 < t[0] < 2.0
        by_mouse("ann", {P0: ("A", "A", "Tie")}, "the circle stays round", tags=[("B", "flicker")])
        submit_click()
        cur = wait_item(P0)
        assert cur["id"] == P1

        # -- ann goes back (key ,) to P0: her answer is there; she changes motion to A by mouse -------------------
        ActionChains(d).send_keys(",").perform()
        cur = wait_item(P1)
        assert cur["id"] == P0 and cur["answer"]["verdicts"]["motion"] == "Tie"
        assert (
            d.find_element(By.CSS_SELECTOR, '[data-dim="motion"] button[data-value="Tie"]').get_attribute(
                "aria-pressed"
            )
            == "true"
        )
        assert (
            d.find_element(By.CSS_SELECTOR, '[data-title="B"] button[data-tag="flicker"]').get_attribute("aria-pressed")
            == "true"
        )
        d.find_element(By.CSS_SELECTOR, '[data-dim="motion"] button[data-value="A"]').click()
        submit_click()
        cur = wait_item(P0)
        assert cur["id"] == P1 and cur["answer"] is None

        # -- ann: the second pair by keyboard; then a single video by mouse with a screenshot ---------------------
        by_keys("ann", ANN, "B keeps the square's edges", shot="annotate-pairwise.png")
        assert current()["id"] == S[0] and current()["task"] == "pointwise"
        by_mouse("ann", ANN, "clean edges", tags=[("A", "blurry")])
        # reload before submitting: the same item comes back (nothing half-saved), progress says 2 done
        d.refresh()
        cur = wait_item()
        assert cur["id"] == S[0] and cur["answer"] is None
        assert d.find_element(By.ID, "progress").text.startswith("2 / 6 done")
        by_mouse("ann", ANN, "clean edges")
        submit_click()
        wait_item(S[0])
        by_keys("ann", ANN, "the shape smears")
        by_keys("ann", ANN, "the square moves up, edges sharp, steady pace", shot="annotate-pointwise.png")
        assert current()["id"] == S[3]
        ActionChains(d).send_keys(".").perform()  # skip: S3 goes to someone else
        wait.until(lambda _: d.find_element(By.ID, "done").is_displayed())
        assert d.find_element(By.ID, "progress").text == "5 / 5 done (1 skipped)"
        d.find_element(By.ID, "admin-toggle").click()  # ann is an admin: everyone's progress
        wait.until(lambda _: "bob" in d.find_element(By.ID, "admin-rows").text)

        # -- bob: everything by keyboard, one reason with <img onerror> ----------------------------------------
        login("bob")
        wait_item()
        for _ in range(5):
            by_keys("bob", BOB, "fine")
        assert current()["id"] == S[3]
        by_keys("bob", BOB, XSS_REASON)
        wait.until(lambda _: d.find_element(By.ID, "done").is_displayed())
        # -- killed right after that submit returned: nothing lost -------------------------------------------
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        port = int(base.rsplit(":", 1)[1])
        proc, base2 = start_server(root, port)
        assert base2 == base
        d.refresh()  # bob's cookie still works; he resumes
        wait.until(lambda _: d.find_element(By.ID, "done").is_displayed())
        assert d.find_element(By.ID, "progress").text == "6 / 6 done"
        ActionChains(d).send_keys(",").perform()  # back to S3: the reason is text in its box
        cur = wait_item()
        assert cur["id"] == S[3]
        assert (
            d.find_element(By.CSS_SELECTOR, '[data-reason="motion"]').get_attribute("value")
            == f"bob motion: {XSS_REASON}"
        )
        assert d.execute_script("return document.querySelectorAll('#dims img, #task img').length") == 0
        assert d.execute_script("return window.__xss === undefined")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    con = sqlite3.connect(root / ".vipo-annotate.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    for name in ("annotate-pairwise.png", "annotate-pointwise.png"):
        assert (shots / name).stat().st_size > 10_000
        if os.environ.get("VIPO_SCREENSHOTS"):
            shutil.copy(shots / name, Path(os.environ["VIPO_SCREENSHOTS"]) / name)

    # -- export: votes and agreement against hand-computed values ------------------------------------------------
    out = tmp_path / "export"
    assert main(["annotate", "export", str(root), "--out", str(out)]) == 0
    votes = {json.loads(x)["id"]: json.loads(x) for x in (out / "votes.jsonl").read_text().splitlines()}
    verdict = {(i, dim): v["votes"][dim]["verdict"] for i, v in votes.items() for dim in DIMS}
    # P0: A A | A B (tied) | A A (ann's changed answer); P1: B B | Tie Tie | B B
    assert [verdict[(P0, x)] for x in DIMS] == ["A", None, "A"] and votes[P0]["votes"]["fidelity"]["tied"]
    assert [verdict[(P1, x)] for x in DIMS] == ["B", "Tie", "B"]
    # S0: Good Good | Normal Bad (tied) | Bad Bad; S1: Bad Bad | Bad Normal (tied) | Normal Normal; S2 all Good
    assert [verdict[(S[0], x)] for x in DIMS] == ["Good", None, "Bad"]
    assert [verdict[(S[1], x)] for x in DIMS] == ["Bad", None, "Normal"]
    assert [verdict[(S[2], x)] for x in DIMS] == ["Good"] * 3
    assert not votes[S[3]]["complete"]  # ann skipped it: one answer of k=2
    labels = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    assert [r.get("a") or r.get("video") for r in labels] == ["clip-2.mp4", "clip-2.mp4"]
    assert labels[0]["verdicts"] == {"semantic": "B", "fidelity": "Tie", "motion": "B"}
    summary = json.loads((out / "agreement.json").read_text())
    pw, pt = summary["agreement"]["pairwise"]["dimensions"], summary["agreement"]["pointwise"]["dimensions"]
    # pairwise fidelity: P0 A/B (0), P1 Tie/Tie (1) -> 1/2; alpha: o_AB = o_BA = 1, o_TT = 2; n_A 1, n_B 1, n_T 2;
    # D_o = 2/4, D_e = 2 (1 + 2 + 2) / 12 = 10/12 -> alpha = 1 - 0.6 = 0.4
    assert pw["fidelity"]["percent_agreement"] == pytest.approx(0.5) and pw["fidelity"]["alpha"] == pytest.approx(0.4)
    assert pw["semantic"]["percent_agreement"] == 1.0 and pw["semantic"]["alpha"] == pytest.approx(1.0)
    assert pw["motion"]["alpha"] == pytest.approx(1.0)
    # pointwise fidelity: N/B, B/N, G/G -> 1/3; alpha = 1 - (4/6) / (24/30) = 1/6 (S3's lone rating pairs with none)
    assert pt["fidelity"]["percent_agreement"] == pytest.approx(1 / 3) and pt["fidelity"]["alpha"] == pytest.approx(
        1 / 6
    )
    assert pt["fidelity"]["ratings"] == 7
    ann = summary["agreement"]["pointwise"]["annotators"]["ann"]["fidelity"]
    assert ann["agreement_with_others"]["rate"] == pytest.approx(1 / 3) and ann["answers"] == 3
    # position bias: every final pairwise A/B choice counted by the side it was shown on
    left = right = 0
    for who, answers in (("ann", ANN), ("bob", BOB)):
        for pair in (P0, P1):
            for v in answers[pair]:
                if v != "Tie":
                    left += v == sides[(who, pair)]
                    right += v != sides[(who, pair)]
    pb = summary["position_bias"]["all"]
    assert (pb["left"], pb["right"], pb["tie"]) == (left, right, 2)
    train = [json.loads(x) for x in (out / "critic_train.jsonl").read_text().splitlines()]
    rec = next(r for r in train if r["id"] == f"{P0}#motion")
    assert rec["votes"] == {"A": 2, "B": 0, "Tie": 0} and rec["reasons"] == [
        "ann motion: the circle stays round",
        "bob motion: fine",
    ]
    assert (out / "videos" / "clip-0.mp4").is_file()
