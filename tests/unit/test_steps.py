"""vipo.bench.steps' own functions (the whole bench is in test_bench.py): the pairs and examples every contender
trains on, the steps' train configs, and, on the bench's TEST size with 2 pairs, which encoders each contender runs
per training sample (vipo's read cached latents and prompt embeddings; the diffusers examples re-encode) and that
every contender is an optimizer step of the LoRA."""

import pytest
import torch

from vipo.bench import steps, tiny
from vipo.config import TrainConfig
from vipo.errors import UserError


def test_pairs_put_ids_2i_and_2i_plus_1_on_prompt_i():
    pairs, _ = steps.items(["a", "b", "c", "d"], ["p", "q"])
    assert pairs == [
        {"chosen": {"id": "a", "prompt": "p"}, "rejected": {"id": "b", "prompt": "p"}, "weight": 1.0},
        {"chosen": {"id": "c", "prompt": "q"}, "rejected": {"id": "d", "prompt": "q"}, "weight": 1.0},
    ]


def test_examples_are_the_same_videos_winners_desirable():
    _, examples = steps.items(["a", "b", "c", "d"], ["p", "q"])
    assert [(e["sample"]["id"], e["sample"]["prompt"], e["desirable"], e["score"]) for e in examples] == [
        ("a", "p", True, 0.9),
        ("b", "p", False, 0.05),
        ("c", "q", True, 0.9),
        ("d", "q", False, 0.05),
    ]


def test_a_step_config_is_micro_batch_4_without_the_real_video_term():
    cfg = steps._cfg("kto", ref_cache=2)
    assert (cfg.method, cfg.batch_size, cfg.grad_accum, cfg.lambda_real, cfg.real_batch_size, cfg.ref_cache) == (
        "kto", 4, 1, 0.0, 0, 2,
    )  # fmt: skip
    base = TrainConfig(beta=7.0, batch_size=2)
    got = steps._cfg("dpo", base)
    assert (got.method, got.beta, got.batch_size) == ("dpo", 7.0, 2) and base.method == TrainConfig().method


@pytest.mark.parametrize(
    "method, over, message",
    [
        ("nope", {}, r"^method must be dpo, kto or rwr, got 'nope'$"),
        ("dpo", {"ref_cache": -1}, r"^ref_cache must be >= 0"),
    ],
)
def test_a_bad_step_config_is_refused(method, over, message):
    with pytest.raises(UserError, match=message):
        steps._cfg(method, **over)


def test_every_ratio_compares_two_training_steps():
    assert {n for _, a, b in steps.RATIOS for n in (a, b)} <= set(steps.STEPS)


@pytest.fixture(scope="module")
def bench():
    torch.manual_seed(0)
    return steps.build(tiny.TEST, pairs=2, ref_cache=2, rank=4)


def test_the_bench_holds_two_pairs_of_the_test_size(bench):
    assert len(bench.pairs) == 2 and len(bench.examples) == 4 and tuple(bench.pixels.shape) == (4, 5, 32, 32, 3)
    # 5 frames of 32 x 32: (5 - 1) / 4 + 1 = 2 latent frames of 16 channels at 32 / 8 = 4 px
    assert {tuple(v.shape) for v in bench.latents.values()} == {(2, 16, 4, 4)} and sorted(bench.latents) == [
        "v0", "v1", "v2", "v3",
    ]  # fmt: skip
    assert set(bench.cache) == {tiny.PROMPTS[0], tiny.PROMPTS[1], ""}
    assert set(bench.contenders) == set(steps.STEPS) | {"ref_cache_pass", "forward_nograd", "vae_encode", "text_encode"}


def test_which_encoders_each_step_runs_per_training_sample(bench):
    calls = steps.encoder_calls(bench)
    for name in ("sft", "dpo", "dpo_cached", "kto", "kto_cached", "rwr"):
        assert calls[name] == {"text_encoder": 0.0, "vae": 0.0}, name  # cached latents and prompt embeddings
    # the LoRA example: the 4 videos' prompts through the text encoder each step; the VAE once before training
    assert calls["diffusers_lora"] == {"text_encoder": 1.0, "vae": 0.0}
    # the DPO example: each pair's prompt once (2 rows for 4 videos), every video VAE-encoded each step
    assert calls["diffusers_dpo"] == {"text_encoder": 0.5, "vae": 1.0}


@pytest.mark.parametrize("name", steps.STEPS)
def test_every_step_moves_the_lora_and_only_it(bench, name):
    lora = [p.detach().clone() for p in bench.params]
    base = {k: v.detach().clone() for k, v in bench.model.pipe.transformer.named_parameters() if "lora" not in k}
    bench.contenders[name]()
    assert any(not torch.equal(a, p) for a, p in zip(lora, bench.params))
    assert all(torch.isfinite(p).all() for p in bench.params)
    after = dict(bench.model.pipe.transformer.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in base.items())
