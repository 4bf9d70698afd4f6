"""The real path rehearsed on CPU, through `vipo run`: one round of a tiny CogVideoX (DPO) and of a tiny Wan (KTO),
both saved by plain diffusers (no vipo.json) and run at a chosen small clip size; a real prompt file whose held-out
part, with VBench's prompts, is the evaluation; an OpenAI-compatible critic server started here that reads the
prompt from each request and answers by a rule, as a served VLM would, with some malformed answers on the way.
eval.json and the report carry the critic's Good rates, VBench-style dimensions and the win rate against the base,
never a world attribute."""

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import tiny_families
import torch

from tests.conftest import TINY_RUN
from tests.critic_helpers import split_videos
from tests.integration.test_openai_critic import Server
from vipo.cli import main
from vipo.io.video import read_mp4

REPO = Path(__file__).resolve().parents[2]
SUITE, VBENCH = REPO / "configs" / "prompts" / "t2v-sample.txt", REPO / "configs" / "prompts" / "vbench-subset.txt"
DARK = ("night", "dark", "dusk", "moonlit", "shadow")


class RuleCritic:
    """Answers a chat-completions body like a critic that reads the prompt: a prompt about the dark wants a dark
    video, any other a bright one (semantic); fidelity prefers contrast, motion small frame-to-frame change. Every
    ninth answer is malformed in one of three ways (not JSON, a refusal, an echoed template)."""

    BROKEN = ("malformed", "I'd rather not judge this one.", "Verdict: A|B|Tie")

    def __init__(self):
        self.n, self.broken, self.prompts = 0, 0, []
        self.lock = threading.Lock()

    def __call__(self, body):
        import base64
        import io

        from PIL import Image

        with self.lock:
            self.n += 1
            if self.n % 9 == 0:
                self.broken += 1
                return self.BROKEN[self.broken % 3]
        parts = [
            p["text"]
            if p["type"] == "text"
            else np.asarray(Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))))
            for p in body["messages"][1]["content"]
        ]
        text = next(p for p in parts if isinstance(p, str) and "Question:" in p)
        prompt = re.search(r'"(.*)"', text).group(1)
        with self.lock:
            self.prompts.append(prompt)
        dim = re.search(r"Question: ([a-z ]+)", text).group(1)
        dark = any(w in prompt.lower() for w in DARK)

        def value(frames):
            x = np.stack(frames).astype(float) / 255
            if dim.startswith("semantic"):
                return -x.mean() if dark else x.mean()
            if dim.startswith("fidelity"):
                return x.std()
            return -np.abs(np.diff(x, axis=0)).mean()

        values = [value(v) for v in split_videos(parts)]
        if len(values) == 2:
            v = "A" if values[0] > values[1] else "B" if values[1] > values[0] else "Tie"
            return f"Comparing {dim} for '{prompt}': {values[0]:.4f} against {values[1]:.4f}.\nVerdict: {v}"
        label = ("Bad", "Normal", "Good")[int(abs(values[0]) * 1000) % 3]
        return f"For '{prompt}' the {dim} reads {values[0]:.4f}.\n**Verdict:** {label}"


@pytest.fixture
def critic_server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    rule = RuleCritic()
    srv = Server(default=rule)
    yield srv, rule
    srv.close()


def _lines(path):
    return [x.strip() for x in Path(path).read_text().splitlines() if x.strip() and not x.startswith("#")]


@pytest.mark.parametrize("family,method", [("cogvideox", "dpo"), ("wan", "kto")])
def test_a_real_family_round_on_a_suite_judged_by_a_served_critic(tmp_path, critic_server, family, method):
    srv, rule = critic_server
    torch.manual_seed(0)
    tiny_families.build(family).save_pretrained(tmp_path / "model")  # plain diffusers: the family's default size
    out = tmp_path / "run"
    sets = {
        "prompts.source": SUITE,
        "prompts.per_round": 3,
        "eval.heldout_fraction": 0.25,
        "eval.vbench": VBENCH,
        "eval.clips_per_split": 2,
        "generate.frames": 9,
        "generate.height": 32,
        "generate.width": 32,
        "judge.critic": "openai",
        "judge.base_url": srv.url,
        "judge.model": "scripted-vlm",
        "judge.frames": 3,
        "judge.frame_size": 32,
        "judge.backoff_s": 0,
        "judge.concurrency": 2,
    }
    args = ["run", "--model", str(tmp_path / "model"), "--out", str(out), "--rounds", "1", "--method", method]
    assert main(args + TINY_RUN + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]) == 0
    assert rule.broken > 0  # malformed answers were sent, and retried past

    evals = {k: json.loads((out / f"round-{k}" / "eval" / "eval.json").read_text()) for k in (0, 1)}
    assert evals[1]["config"]["size"] == [9, 32, 32] and evals[1]["config"]["critic"] == "openai"
    for k, ev in evals.items():
        assert set(ev) == {"config", "heldout", "vbench"}
        for split in ("heldout", "vbench"):
            e = ev[split]
            assert not {"color", "shape", "direction", "semantic_pass"} & set(e)  # no world attribute
            assert {
                "semantic_good",
                "fidelity_good",
                "motion_good",
                "score",
                "vbench_quality",
                "vbench_temporal_flickering",
                "vbench_dynamic_degree",
            } <= set(e)
            if k == 0:
                assert "win_rate" not in e
                continue
            c = e["versus_base"]
            assert c["wins"] + c["losses"] + c["ties"] + c["inconsistent"] + c["unjudged"] == 2
            assert set(e["ci95"]) >= {"win_rate", "tie_rate", "loss_rate"}
    # the evaluation's prompts: the suite's held-out part and VBench's first two; training never saw them
    meta = [json.loads(x) for x in (out / "round-1" / "eval" / "metadata.jsonl").read_text().splitlines()]
    held = {m["prompt"] for m in meta if m["split"] == "heldout"}
    assert held <= set(_lines(SUITE)) and [m["prompt"] for m in meta if m["split"] == "vbench"] == _lines(VBENCH)[:2]
    trained = {s["prompt"] for s in map(json.loads, (out / "round-1" / "samples.jsonl").read_text().splitlines())}
    assert trained <= set(_lines(SUITE)) and not trained & held
    assert held <= set(rule.prompts) and trained <= set(rule.prompts)  # the critic read every prompt
    assert read_mp4(out / "round-1" / "eval" / meta[0]["file_name"]).shape[0] == 9
    versus = [json.loads(x) for x in (out / "round-1" / "eval" / "versus_base.jsonl").read_text().splitlines()]
    assert len(versus) == 4 and all("Verdict" in r["raw_ab"] + r.get("error_ab", "") for r in versus)
    assert (out / "round-1" / "eval" / "vbench" / "heldout_final_score.json").is_file()
    # the loop's records, as test_families_cli checks them for LTX: latents to train from, the text cache, a
    # diffusers LoRA of the family
    samples = [json.loads(x) for x in (out / "round-1" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 9 and all((out / "round-1" / s["latent"]).is_file() for s in samples)
    assert len(list((out / "cache" / "text").glob("*/*.safetensors"))) >= 4
    ckpt = out / "round-1" / "checkpoint"
    assert json.loads((ckpt / "policy.json").read_text())["family"] == family
    assert (ckpt / "pytorch_lora_weights.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "heldout_score"
    report = (out / "report.md").read_text()
    assert "## heldout" in report and "## vbench" in report and "win vs base" in report
    assert "color" not in report and "semantic pass" not in report
