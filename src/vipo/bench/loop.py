"""The rest of a round: generation batched against one video at a time, judging both orders batched against one
question at a time, and a whole round's wall time by stage.

- Generation runs the family's own sampler and decoder (``model.sample`` then ``model.decode``, what the generate stage
  calls per batch) on N seeds at once against N calls of one seed each, interleaved.
- Judging asks a served critic stand-in: vipo's ``openai`` critic against a local chat-completions server that
  answers every request after a fixed latency whatever the load (a served model with spare batch capacity, as vLLM
  or SGLang with continuous batching is below its limit). "Batched" is what the judge stage does: every ordered pair of
  a prompt's samples in one ``pairwise_many`` call, ``judge.concurrency`` requests in flight; "sequential" asks one
  pair, one dimension at a time. The ratio is the client machinery's (threads, encoding frames, parsing): a real
  server's latency and capacity scale both sides.
- A round: the driver's stages (generate, judge, pairs, train, eval) of round 1 of a recipe, each timed.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from .timing import Ratio, interleave

PROMPT = "a red ball rolls across a wooden table"


def generation(model, n: int, steps: int, guidance: float, repeats: int, device="cpu") -> dict:
    """Seconds per video for ``n`` seeds sampled and decoded in one batch, and one at a time."""
    with torch.no_grad():
        cond = model.encode_prompts([PROMPT] * n)
        uncond = model.encode_prompts([""])
    seeds = list(range(1, n + 1))

    def batched():
        with torch.no_grad():
            model.decode(model.sample(cond, uncond, seeds, steps, guidance))

    def one_at_a_time():
        with torch.no_grad():
            for i, s in enumerate(seeds):
                one = {k: v[i : i + 1] for k, v in cond.items()}
                model.decode(model.sample(one, uncond, [s], steps, guidance))

    t = interleave({"batched": batched, "sequential": one_at_a_time}, repeats, warmup=1, device=device)
    return {
        "speedup": Ratio.of(t["sequential"], t["batched"]),
        "n": n,
        "steps": steps,
        "batched_s_per_video": [x / n for x in t["batched"]],
        "sequential_s_per_video": [x / n for x in t["sequential"]],
    }


class StandInServer:
    """A chat-completions endpoint on 127.0.0.1 that answers ``Verdict: A`` (or ``Good``) after ``latency`` s."""

    def __init__(self, latency: float):
        self.latency, self.requests = latency, 0
        lock, outer = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests += 1
                time.sleep(outer.latency)
                text = json.dumps(body)
                verdict = "A" if "Video A" in text else "Good"
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": f"Looks fine.\nVerdict: {verdict}"}}]}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "StandInServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def judging(
    samples: int, repeats: int, latency: float = 0.2, concurrency: int = 4, frames: int = 8, frame_size: int = 224
) -> dict:
    """Seconds per pairwise judgment (3 dimensions) for a prompt's ``samples`` videos in both orders."""
    import random

    from ..config import JudgeConfig
    from ..critics.base import Video
    from ..critics.openai import OpenAICritic
    from ..world import grammar, render

    rng = random.Random(0)
    attrs = grammar.INDIST[0]
    videos = [Video(attrs.prompt(), render.random_clip(attrs, rng), f"v{i}") for i in range(samples)]
    pairs = list(itertools.permutations(videos, 2))
    with StandInServer(latency) as server:

        def critic(c):
            return OpenAICritic(
                JudgeConfig(
                    critic="openai",
                    base_url=server.url,
                    model="stand-in",
                    frames=frames,
                    frame_size=frame_size,
                    concurrency=c,
                    retries=0,
                )
            )

        batched_critic, one_critic = critic(concurrency), critic(1)

        def batched():
            out = batched_critic.pairwise_many(pairs)
            assert not any(isinstance(o, Exception) for o in out), out

        def sequential():
            for a, b in pairs:
                one_critic.pairwise(a, b)

        t = interleave({"batched": batched, "sequential": sequential}, repeats, warmup=1)
    return {
        "speedup": Ratio.of(t["sequential"], t["batched"]),
        "pairs": len(pairs),
        "latency": latency,
        "concurrency": concurrency,
        "frames": frames,
        "frame_size": frame_size,
        "batched_s_per_pair": [x / len(pairs) for x in t["batched"]],
        "sequential_s_per_pair": [x / len(pairs) for x in t["sequential"]],
    }


STAGES = ("generate", "judge", "pairs", "train", "evaluate")


def round_stages(
    config: str | Path | None, overrides: dict | None = None, device: str = "cpu", folder: str | Path | None = None
) -> dict:
    """Wall seconds of each stage of round 1 of the recipe ``config`` (the driver's own stages, in a scratch run)."""
    from ..config import RunConfig, load
    from ..data.ledger import Ledger
    from ..run.driver import Round, evaluate_base

    cfg = load(RunConfig, config, overrides)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        times = {}
        with Ledger(run_dir / "ledger.sqlite") as ledger:
            # round 0 first, as a run does: its clips are what round 1's win rate is measured against (once per run,
            # so not a share of a round)
            t0 = time.perf_counter()
            evaluate_base(cfg, run_dir, ledger, device, progress=False)
            base_eval = time.perf_counter() - t0
            r = Round(cfg, run_dir, 1, ledger, device=device, progress=False)
            for stage in STAGES:
                t0 = time.perf_counter()
                getattr(r, stage)()
                times[stage] = time.perf_counter() - t0
            pairs = len(ledger.rows("pairs", 1))
            examples = len(ledger.rows("examples", 1))
            samples = len(ledger.rows("samples", 1))
            train = ledger.stage_info(1, "train") or {}
            ev = ledger.stage_info(1, "eval") or {}
    return {
        "seconds": times,
        "base_eval_s": base_eval,
        "samples": samples,
        "pairs": pairs,
        "examples": examples,
        "config": str(config),
        "overrides": overrides or {},
        "method": cfg.train.method,
        "ref_cache": cfg.train.ref_cache,
        "train_steps": train.get("steps"),
        "eval": {k: ev[k] for k in ("indist", "heldout") if k in ev},
    }
