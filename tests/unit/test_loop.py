"""vipo.bench.loop's own functions (the whole bench is in test_bench.py): generation timed batched against one seed at
a time with the stand-in video model (which calls, what arithmetic), the stand-in chat server's answers, and the
judging measurement's arithmetic and requests."""

import json
import urllib.request

import pytest

from tests.unit_helpers import FakeModel
from vipo.bench import loop


def fixed_times(monkeypatch, times):
    """``interleave`` that calls each contender once (in order) and reports ``times[name]``."""
    seen = []

    def interleave(contenders, repeats, warmup=1, device="cpu"):
        seen.append((list(contenders), repeats, warmup, device))
        for fn in contenders.values():
            fn()
        return times

    monkeypatch.setattr(loop, "interleave", interleave)
    return seen


class DecodingModel(FakeModel):
    def __init__(self):
        super().__init__(frames=2, height=4, width=4)
        self.decoded = []

    def decode(self, latents):
        self.decoded.append(latents.shape[0])
        return super().decode(latents)


def test_generation_samples_n_seeds_in_one_batch_and_then_one_at_a_time(monkeypatch):
    model = DecodingModel()
    seen = fixed_times(monkeypatch, {"batched": [2.0, 4.0], "sequential": [6.0, 8.0]})
    out = loop.generation(model, n=3, steps=5, guidance=6.0, repeats=2)
    assert seen == [(["batched", "sequential"], 2, 1, "cpu")]
    assert model.encoded == [[loop.PROMPT] * 3, [""]]  # the prompt thrice, then the unconditional prompt once
    assert model.calls == [[1, 2, 3], [1], [2], [3]]  # seeds 1..n together, then each alone
    assert model.decoded == [3, 1, 1, 1]
    # per video: times / n; speedup per round sequential / batched: 3 and 2 -> median 2.5
    assert out["batched_s_per_video"] == [2 / 3, 4 / 3] and out["sequential_s_per_video"] == [2.0, 8 / 3]
    r = out["speedup"]
    assert (r.median, r.low, r.high, r.a, r.b, r.rounds) == (2.5, 2.0, 3.0, 7.0, 3.0, 2)
    assert (out["n"], out["steps"]) == (3, 5)


def test_generation_gives_each_seed_its_own_prompt_row(monkeypatch):
    model = DecodingModel()
    rows = []
    sample = model.sample
    model.sample = lambda cond, uncond, seeds, steps, g: (
        rows.append(cond["x"].tolist()) or sample(cond, uncond, seeds, steps, g)
    )
    fixed_times(monkeypatch, {"batched": [1.0], "sequential": [1.0]})
    loop.generation(model, n=2, steps=1, guidance=1.0, repeats=1)
    width = float(len(loop.PROMPT))  # the stand-in's encoding of a prompt is its length
    assert rows == [[[width], [width]], [[width]], [[width]]]


def test_generation_with_the_real_interleave_times_every_round(monkeypatch):
    model = DecodingModel()
    out = loop.generation(model, n=2, steps=1, guidance=1.0, repeats=3)
    # one warm-up round, then three timed: (1 batch + 2 single) calls each
    assert len(model.calls) == 4 * 3
    assert len(out["batched_s_per_video"]) == 3 and all(t > 0 for t in out["sequential_s_per_video"])
    assert out["speedup"].rounds == 3


def post(url, body):
    req = urllib.request.Request(
        url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


def test_the_stand_in_server_answers_a_pair_with_a_and_a_video_with_good():
    with loop.StandInServer(latency=0.0) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        assert server.server.server_address[1] > 0
        pair = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Video A:"}]}]}
        assert post(server.url, pair) == "Looks fine.\nVerdict: A"
        assert (
            post(server.url, {"messages": [{"role": "user", "content": "one video"}]}) == "Looks fine.\nVerdict: Good"
        )
        assert server.requests == 2


def test_the_stand_in_server_waits_its_latency():
    import time

    with loop.StandInServer(latency=0.3) as server:
        t0 = time.perf_counter()
        post(server.url, {})
        assert time.perf_counter() - t0 >= 0.3


def test_judging_asks_every_ordered_pair_and_divides_by_their_number(monkeypatch):
    servers = []
    real = loop.StandInServer

    class Recorded(real):
        def __init__(self, latency):
            super().__init__(latency)
            servers.append(self)

    monkeypatch.setattr(loop, "StandInServer", Recorded)
    seen = fixed_times(monkeypatch, {"batched": [1.0, 3.0], "sequential": [6.0, 6.0]})
    out = loop.judging(samples=3, repeats=2, latency=0.0, concurrency=2, frames=1, frame_size=16)
    assert seen == [(["batched", "sequential"], 2, 1, "cpu")]
    # 3 samples: 6 ordered pairs; each contender ran once here, 3 dimensions per pair: 2 x 6 x 3 requests
    assert out["pairs"] == 6 and servers[0].requests == 2 * 6 * 3
    assert out["batched_s_per_pair"] == [1 / 6, 3 / 6] and out["sequential_s_per_pair"] == [1.0, 1.0]
    assert (out["speedup"].median, out["speedup"].low, out["speedup"].high) == (4.0, 2.0, 6.0)
    assert (out["latency"], out["concurrency"], out["frames"], out["frame_size"]) == (0.0, 2, 1, 16)


def unparseable(handler):
    """An answer without a verdict line (as a served model's off-format reply)."""
    handler.rfile.read(int(handler.headers["Content-Length"]))
    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "no idea"}}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def test_judging_fails_loudly_when_the_batched_critic_gets_no_verdict(monkeypatch):
    class OffFormat(loop.StandInServer):
        def __init__(self, latency):
            super().__init__(latency)
            self.server.RequestHandlerClass.do_POST = unparseable

    monkeypatch.setattr(loop, "StandInServer", OffFormat)
    fixed_times(monkeypatch, {"batched": [1.0], "sequential": [1.0]})
    with pytest.raises(AssertionError, match="CriticParseError|Verdict|verdict"):
        loop.judging(samples=2, repeats=1, latency=0.0, concurrency=2, frames=1, frame_size=16)
