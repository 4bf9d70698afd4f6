"""vipo.stages.generate: sample ids, the batch grid, and the stage with a stand-in model (flat grey clips whose level
is their seed): seeds, rows, files, resuming only what is missing, and a non-finite latent quarantined."""

import json

from safetensors.torch import load_file
from unit_helpers import FakeModel

from vipo import seeds
from vipo.config import GenerateConfig
from vipo.data.ledger import Ledger
from vipo.io.video import read_mp4
from vipo.stages.generate import PromptItem, batches, generate, sample_id

PROMPTS = [PromptItem(3, "a red circle moving left", "indist"), PromptItem(8, "a blue square moving up")]


def cfg(**kw):
    return GenerateConfig(**{"samples_per_prompt": 2, "batch_size": 3, "num_steps": 2, "fps": 4, **kw})


def test_sample_id_and_batches():
    assert sample_id(2, 7, 1) == "r2-p0007-s1" and sample_id(10, 12345, 0) == "r10-p12345-s0"
    assert batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batches([], 3) == [] and batches([1], 5) == [[1]]


def test_generate_samples_every_prompt_k_times_with_recorded_seeds(tmp_path):
    model = FakeModel()
    with Ledger(tmp_path / "ledger.sqlite") as led:
        rows = generate(model, PROMPTS, tmp_path, led, 1, cfg(), run_seed=5, progress=False)
    want = [seeds.sample_seed(5, 1, p.prompt_id, k) for p in PROMPTS for k in range(2)]
    assert [r["seed"] for r in rows] == want
    assert model.calls == [want[:3], want[3:]]  # the (prompt, index) grid in batches of 3
    assert [r["id"] for r in rows] == ["r1-p0003-s0", "r1-p0003-s1", "r1-p0008-s0", "r1-p0008-s1"]
    r = rows[0]
    assert (r["round"], r["prompt_id"], r["sample_index"], r["prompt"], r["split"]) == (
        1,
        3,
        0,
        PROMPTS[0].prompt,
        "indist",
    )
    assert (r["file_name"], r["latent"], r["num_steps"], r["guidance"], r["frames"]) == (
        "samples/r1-p0003-s0.mp4",
        "latents/r1-p0003-s0.safetensors",
        2,
        2.0,
        4,
    )
    # the clip's pixels are the model's (its level is the seed mod 200; written upscaled 8x to 128 px); the latent is
    # kept as sampled
    frames = read_mp4(tmp_path / r["file_name"])
    assert frames.shape == (4, 128, 128, 3) and abs(float(frames.mean()) - want[0] % 200) < 3
    (lat,) = load_file(tmp_path / r["latent"]).values()
    assert lat.shape == (4, 16, 16, 3) and float(lat[0, 0, 0, 0]) == want[0] % 200
    meta = [json.loads(x) for x in (tmp_path / "samples" / "metadata.jsonl").read_text().splitlines()]
    assert meta[0] == {
        "file_name": "r1-p0003-s0.mp4",
        "prompt": PROMPTS[0].prompt,
        "seed": want[0],
        "prompt_id": 3,
        "sample_index": 0,
        "id": "r1-p0003-s0",
        "split": "indist",
    }
    assert "split" not in meta[2]  # no split: not written


def test_generate_resumes_only_the_batches_with_missing_samples(tmp_path):
    two = cfg(batch_size=2)  # the grid: [(p3, 0), (p3, 1)], [(p8, 0), (p8, 1)]
    with Ledger(tmp_path / "ledger.sqlite") as led:
        generate(FakeModel(), PROMPTS[:1], tmp_path, led, 1, two, run_seed=5, progress=False)
        before = (tmp_path / "samples" / "r1-p0003-s0.mp4").stat().st_mtime_ns
        again = FakeModel()
        rows = generate(again, PROMPTS, tmp_path, led, 1, two, run_seed=5, progress=False)
        assert again.calls == [[seeds.sample_seed(5, 1, 8, k) for k in (0, 1)]]  # the second batch alone
        assert [r["id"] for r in rows] == ["r1-p0003-s0", "r1-p0003-s1", "r1-p0008-s0", "r1-p0008-s1"]
        assert (tmp_path / "samples" / "r1-p0003-s0.mp4").stat().st_mtime_ns == before
        meta = (tmp_path / "samples" / "metadata.jsonl").read_text().splitlines()
        assert len(meta) == 4  # rewritten with every sample of the round
        # nothing missing: nothing sampled, not even the empty prompt encoded
        done = FakeModel()
        generate(done, PROMPTS, tmp_path, led, 1, two, run_seed=5, progress=False)
        assert done.calls == [] and done.encoded == []


def test_a_batch_committed_in_part_writes_only_its_missing_samples(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as led:
        generate(FakeModel(), PROMPTS[:1], tmp_path, led, 1, cfg(batch_size=3), run_seed=5, progress=False)
        # the grid of batches of 3: [(p3, 0), (p3, 1), (p8, 0)], [(p8, 1)]: the first batch is sampled again whole
        # (a sample's bytes depend on its batch), but only (p8, 0) is new
        again = FakeModel()
        rows = generate(again, PROMPTS, tmp_path, led, 1, cfg(batch_size=3), run_seed=5, progress=False)
        assert [len(c) for c in again.calls] == [3, 1]
        assert len(rows) == 4 and len(led.rows("samples", 1)) == 4


def test_a_non_finite_latent_is_recorded_and_quarantined(tmp_path):
    model = FakeModel()
    model.nan_seeds = (101,)
    with Ledger(tmp_path / "ledger.sqlite") as led:
        rows = generate(
            model, PROMPTS[:1], tmp_path, led, 2, cfg(), run_seed=0, progress=False, seed_fn=lambda pid, k: 100 + k
        )
        assert [r["seed"] for r in rows] == [100, 101]
        assert led.quarantined(2) == {"r2-p0003-s1"}


def test_standalone_layout_without_latents(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as led:
        rows = generate(
            FakeModel(),
            PROMPTS[1:],
            tmp_path,
            led,
            0,
            cfg(samples_per_prompt=1),
            0,
            keep_latents=False,
            progress=False,
            videos="",
        )
    assert rows[0]["file_name"] == "r0-p0008-s0.mp4" and "latent" not in rows[0]
    assert (tmp_path / "r0-p0008-s0.mp4").is_file() and (tmp_path / "metadata.jsonl").is_file()
    assert not (tmp_path / "latents").exists() and not (tmp_path / "samples").exists()
    assert read_mp4(tmp_path / "r0-p0008-s0.mp4").shape == (4, 128, 128, 3)
