"""The openai critic against a real chat-completions server on 127.0.0.1 with scripted answers."""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from tests.critic_helpers import check_round, pixel_verdict, run_one_round, split_videos, video_folder
from vipo.cli import main
from vipo.config import JudgeConfig
from vipo.critics.base import Video
from vipo.critics.openai import OpenAICritic

KEY = "sk-test-0123456789-never-log-me"


class Server:
    """Answers each request with the next scripted behaviour (or ``default`` once the script is used up)."""

    def __init__(self, script=(), default="Verdict: Good"):
        self.script, self.default, self.requests = list(script), default, []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(
                        {"auth": self.headers.get("Authorization"), "path": self.path, "body": body, "t": time.time()}
                    )
                    act = outer.script.pop(0) if outer.script else outer.default
                if callable(act):
                    act = act(body)
                try:
                    self.act(act)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def act(self, act):
                if isinstance(act, int):  # an HTTP error status
                    self.send_response(act)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "scripted"}')
                    return
                if act == "slow":
                    time.sleep(1.0)
                    act = "Verdict: Good"
                payload = (
                    b"this is not json"
                    if act == "malformed"
                    else json.dumps({"choices": [{"message": {"role": "assistant", "content": act}}]}).encode()
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    made = []

    def make(*a, **k):
        made.append(Server(*a, **k))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _cli(folder, url, out, *extra):
    return [
        "judge",
        str(folder),
        "--critic",
        "openai",
        "--base-url",
        url,
        "--model",
        "qwen-vl",
        "--out",
        str(out),
        "--set",
        "frames=4",
        "--set",
        "frame_size=32",
        "--set",
        "backoff_s=0",
        "--quiet",
        *extra,
    ]


def test_judge_a_folder_through_the_endpoint_and_never_leak_the_key(tmp_path, server, monkeypatch, capsys):
    folder = tmp_path / "videos"
    video_folder(folder)
    srv = server(default="The clip looks right.\n**Verdict:** **Good**")
    monkeypatch.setenv("VIPO_TEST_KEY", KEY)
    out = tmp_path / "out" / "judgments.jsonl"
    assert main(["-v"] + _cli(folder, srv.url, out, "--set", "api_key_env=VIPO_TEST_KEY")) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["kind"] == "pointwise" for r in rows) == 4 and not any("error" in r for r in rows)
    assert all(
        r["labels"] == {"semantic": "Good", "fidelity": "Good", "motion": "Good"} and "Verdict" in r["raw"]
        for r in rows
    )
    assert len(srv.requests) == 4 * 3  # one question per video and dimension
    req = srv.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "qwen-vl" and body["messages"][0]["role"] == "system"
    images = [p for p in body["messages"][1]["content"] if p["type"] == "image_url"]
    assert len(images) == 4 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    # the key is in no output, log, record or file
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    # pairwise: each prompt's pair in both orders, video A's frames first
    srv.default = lambda body: "A is steadier.\nVerdict: A" if "Video B:" in json.dumps(body) else "Verdict: Good"
    out2 = tmp_path / "pairs.jsonl"
    assert main(_cli(folder, srv.url, out2, "--pairwise")) == 0
    info = json.loads(capsys.readouterr().out.split("\njudgments:")[0])
    assert info["pairwise"] == 4 and info["consistency_rate"] == 0.0  # always "A": position bias, never consistent
    assert info["labels"]["semantic"] == {"Good": 4}


def test_faults_429_500_slow_malformed_empty_are_retried(server):
    script = [
        429,
        500,
        "slow",
        "malformed",
        "Fine.\nVerdict: Good",  # semantic: 4 transport retries, then good
        "",
        "I'm sorry, I cannot judge this video.",  # fidelity: empty; motion: a refusal
        "Blurry edges.\nVerdict: Bad",
        "Smooth.\n**Verdict:** Normal",
    ]  # the LLM-level retries
    srv = server(script)
    cfg = JudgeConfig(
        critic="openai",
        base_url=srv.url,
        model="m",
        frames=2,
        frame_size=16,
        concurrency=1,
        timeout_s=0.3,
        http_retries=4,
        backoff_s=0,
        retries=1,
    )
    (p,) = OpenAICritic(cfg).pointwise_many([Video("a red circle moving left", np.zeros((9, 16, 16, 3), np.uint8))])
    assert p.labels == {"semantic": "Good", "fidelity": "Bad", "motion": "Normal"}
    assert len(srv.requests) == 9
    last_text = srv.requests[-1]["body"]["messages"][1]["content"][-1]["text"]
    assert "previous answer did not end with a valid verdict line" in last_text


def test_dead_endpoint_aborts_the_stage_above_the_unparseable_threshold(tmp_path, server, capsys):
    folder = tmp_path / "videos"
    video_folder(folder)
    srv = server(default=500)
    rc = main(_cli(folder, srv.url, tmp_path / "j.jsonl", "--set", "http_retries=1", "--set", "retries=0"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "unparseable" in err[-1] and "max_unparseable=0.2" in err[-1]
    srv401 = server(default=401)
    assert main(_cli(folder, srv401.url, tmp_path / "k.jsonl")) == 2
    assert "HTTP 401" in capsys.readouterr().err


def test_garbage_answers_are_recorded_unparseable_and_counted(tmp_path, server, capsys):
    folder = tmp_path / "videos"
    video_folder(folder)
    srv = server(default="Verdict: Normal")
    out = tmp_path / "j.jsonl"
    # the first question gets the template echoed back, and again on its 2 retries (asked after the first group's
    # other 5 questions; concurrency 1 keeps the order)
    srv.script = ["Verdict: Good|Normal|Bad"] + ["Verdict: Normal"] * 5 + ["Verdict: Good|Normal|Bad"] * 2
    assert main(_cli(folder, srv.url, out, "--set", "concurrency=1", "--set", "max_unparseable=0.5")) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    bad = [r for r in rows if "error" in r]
    assert len(bad) == 1 and bad[0]["raw"].count("Good|Normal|Bad") == 3 and "labels" not in bad[0]
    info = json.loads(capsys.readouterr().out.split("\njudgments:")[0])
    assert info["parse_errors"] == 1 and info["unparseable_rate"] == 0.25


def _pixels(body):
    """The answer :func:`pixel_verdict` gives to a chat-completions request, from the images it carries."""
    parts = [
        p["text"]
        if p["type"] == "text"
        else np.asarray(Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))))
        for p in body["messages"][1]["content"]
    ]
    return pixel_verdict(split_videos(parts))


def test_openai_critic_through_vipo_run(tmp_path, server, monkeypatch, tiny_model_dir):
    srv = server(default=_pixels)
    monkeypatch.setenv("VIPO_TEST_KEY", KEY)
    out = tmp_path / "run"
    assert (
        main(
            ["-v"]
            + run_one_round(
                tiny_model_dir,
                out,
                "judge.critic=openai",
                f"judge.base_url={srv.url}",
                "judge.model=qwen-vl",
                "judge.api_key_env=VIPO_TEST_KEY",
                "judge.frames=2",
                "judge.frame_size=32",
                "judge.backoff_s=0",
                "generate.batch_size=3",
            )
        )
        == 0
    )
    judgments, pairs, info = check_round(out, "openai")
    # a served critic judges beside generation: the first prompt's questions went out before the last batch's videos
    # were written (one prompt per batch here), and the judge stage asked nothing again (counts below)
    last_video = max(p.stat().st_mtime for p in (out / "round-1" / "samples").glob("*.mp4"))
    assert min(r["t"] for r in srv.requests if "Video B:" in json.dumps(r["body"])) < last_video
    # every judgment is the server's answers, parsed: 3 questions (dimensions) each, all answered and consistent
    assert info["unparseable_rate"] == 0.0 and info["consistency_rate"] == 1.0 and len(pairs) == 3
    for j in judgments.values():
        assert j["raw"].count("brightness") == 3 and "error" not in j
        if j["kind"] == "pairwise":
            assert j["raw"].count("Video A has mean brightness") == 3 and j["overall"] in ("A", "B")
    asked = [r for r in srv.requests if r["path"] == "/v1/chat/completions" and r["auth"] == f"Bearer {KEY}"]
    pairwise = [r for r in asked if "Video B:" in json.dumps(r["body"])]
    evals = 2 * 2 * 3  # rounds 0 and 1, one clip per split, 3 dimensions
    assert len(asked) == len(srv.requests) == 3 * len(judgments) + evals and len(pairwise) == 3 * info["pairwise"]
    # the chosen sample is the brighter one: the one the server said won in both orders
    for p in pairs:
        ab, ba = judgments[f"pair:{p['chosen']}|{p['rejected']}"], judgments[f"pair:{p['rejected']}|{p['chosen']}"]
        assert (ab["overall"], ba["overall"]) == ("A", "B")
    results = [json.loads(x) for x in (out / "round-1" / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 2 and all("brightness" in r["raw"] and "labels" in r for r in results)
    # the key is in no file of the run (config snapshot, ledger, log, exports, report): only its variable's name
    assert "api_key_env: VIPO_TEST_KEY" in (out / "config.yaml").read_text()
    for f in out.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
