"""train.trainer: no wasted work in a training step (no value read back from the device inside a micro-batch, no
reference forward where the loss has no reference, the reference toggle and the denoiser's attributes resolved once
per round), and the memory options (full fine-tune with a frozen reference, bf16 autocast, gradient checkpointing,
8-bit AdamW) on tiny real-family pipelines."""

import sys

import numpy as np
import pytest
import tiny_families
import torch
from family_helpers import BF16, _bf16_batch, _cond, _diffusers_video, _low_precision
from safetensors import safe_open
from tiny_families import (  # tests/ is on sys.path (rootdir conftest)  # tests/ is on sys.path (rootdir conftest)
    FAMILIES,
    dpo_batch,
    dpo_loss,
)

from vipo.config import RunConfig, TrainConfig
from vipo.errors import UserError
from vipo.models import load_model
from vipo.models import policy as policies
from vipo.models.world import WorldModel
from vipo.run import driver
from vipo.train import lora, trainer
from vipo.world import grammar

META = torch.device("meta")


def _batch(method, prompts):
    if method == "dpo":
        return [
            {
                "chosen": {"id": f"s{2 * i}", "prompt": p},
                "rejected": {"id": f"s{2 * i + 1}", "prompt": p},
                "weight": 1.0,
            }
            for i, p in enumerate(prompts)
        ]
    return [
        {"sample": {"id": f"s{i}", "prompt": prompts[i // 2]}, "desirable": i % 2 == 0, "score": 0.5}
        for i in range(2 * len(prompts))
    ]


@pytest.mark.parametrize("method,cached", [("dpo", False), ("kto", False), ("rwr", False), ("dpo", True)])
def test_a_micro_batch_never_reads_a_value_back(method, cached):
    """On the meta device every read-back (.item(), bool(), .tolist(), .cpu()) raises: the forward, losses,
    metrics and backward of a micro-batch run without one; the step reads everything back once (read_back)."""
    model = WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)
    prompts = [a.prompt() for a in grammar.INDIST[:2]]
    with torch.no_grad():
        enc = model.encode_prompts(prompts + [""])
    cache = {p: {k: v[i : i + 1].to(META) for k, v in enc.items()} for i, p in enumerate(prompts + [""])}
    model.unet.to(META)
    model._grid, model.device = model._grid.to(META), META
    params = lora.attach(model, 4, 4, seed=0)
    g = torch.Generator().manual_seed(0)
    latents = {f"s{i}": torch.randn(model.frames, 3, model.side, model.side, generator=g) for i in range(4)}
    cfg = TrainConfig(method=method, caption_dropout=0.5, lambda_real=0)
    ctx = trainer.StepContext(model, cfg, None, META)
    batch = _batch(method, prompts)
    draws = ref = None
    if cached:
        from vipo.train import refcache

        draws = [
            refcache.draw(model, cfg, 0, 1, refcache.item_key(b), 0, (model.frames, 3, model.side, model.side))
            for b in batch
        ]
        ref = torch.rand(2 * len(batch))
    terms = trainer.micro_loss(
        ctx,
        batch,
        cache,
        lambda s: latents[s["id"]],
        torch.Generator().manual_seed(1),
        None,
        0,
        0.0 if method == "kto" else None,
        draws,
        ref,
    )
    terms.total.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    assert terms.total.device == META
    assert all(torch.is_tensor(v) and v.device == META for _, v in terms.metrics.items())


def test_read_back_gives_the_step_s_numbers_in_one_transfer():
    metrics = [
        trainer.Metrics(loss=torch.tensor(1.5), acc=torch.tensor(0.25)),
        trainer.Metrics(loss=torch.tensor(0.5), acc=torch.tensor(0.75), grad_norm_preference=2.0),
    ]
    rows, norm, rewards = trainer.read_back(metrics, torch.tensor(3.0), [torch.tensor([1.0, -1.0]), torch.zeros(0)])
    assert rows == [{"loss": 1.5, "acc": 0.25}, {"loss": 0.5, "acc": 0.75, "grad_norm_preference": 2.0}]
    assert norm == 3.0 and rewards == [1.0, -1.0]
    assert metrics[0]["loss"] == 1.5  # indexing a metric gives its number


def test_rwr_runs_no_reference_forward(monkeypatch):
    model = WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)
    lora.attach(model, 4, 4, seed=0)
    prompts = [a.prompt() for a in grammar.INDIST[:2]]
    with torch.no_grad():
        enc = model.encode_prompts(prompts + [""])
    cache = {p: {k: v[i : i + 1] for k, v in enc.items()} for i, p in enumerate(prompts + [""])}
    latents = {f"s{i}": torch.randn(model.frames, 3, model.side, model.side) for i in range(4)}
    entered = []
    original = trainer.StepContext.reference
    monkeypatch.setattr(trainer.StepContext, "reference", lambda self: (entered.append(1), original(self))[1])
    for method in ("rwr", "kto"):
        ctx = trainer.StepContext(model, TrainConfig(method=method, lambda_real=0), None, torch.device("cpu"))
        trainer.micro_loss(
            ctx, _batch(method, prompts), cache, lambda s: latents[s["id"]], torch.Generator().manual_seed(1), None, 0
        )
        assert len(entered) == (0 if method == "rwr" else 1)


@pytest.mark.parametrize("chain", [False, True])
def test_the_reference_switch_equals_disabling_the_adapter_and_restores_every_flag(tiny_family_dir, chain):
    dtype = "bfloat16" if chain else "float32"  # a low-precision policy keeps its earlier rounds as a frozen adapter
    model = load_model(str(tiny_family_dir("cogvideox")), dtype=dtype)
    if chain:
        lora.attach(model, 4, 4, seed=1, name=policies.CHAIN)
        for n, p in model.denoiser.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05)
        policies.activate(model.denoiser, [policies.CHAIN])
    params = lora.attach(model, 4, 4, seed=0)
    for p in params:
        torch.nn.init.normal_(p, std=0.05)
    batch = tiny_families.dpo_batch(model, ["a cat", "a dog"])
    ctx = trainer.StepContext(model, TrainConfig(), None, torch.device("cpu"))
    flags = {n: p.requires_grad for n, p in model.denoiser.named_parameters()}
    with torch.no_grad():
        with lora.without(model):
            want = ctx.errors(*batch)
        for _ in range(2):  # resolved once, used again
            with ctx.reference():
                got = ctx.errors(*batch)
            assert torch.equal(got, want)
            assert {n: p.requires_grad for n, p in model.denoiser.named_parameters()} == flags
            assert model.denoiser.active_adapters() == (
                [policies.CHAIN, lora.TRAINED_ADAPTER] if chain else [lora.TRAINED_ADAPTER]
            )
        policy = ctx.errors(*batch)
    assert not torch.equal(policy, want)


def test_a_round_resolves_the_denoiser_s_dtype_and_rotary_tables_once(tiny_family_dir, monkeypatch):
    model = load_model(str(tiny_family_dir("cogvideox")))
    net = model.denoiser
    reads, rotary = [], []
    cls = type(net)
    monkeypatch.setattr(cls, "dtype", property(lambda self: (reads.append(1), torch.float32)[1]), raising=False)
    make = model.pipe._prepare_rotary_positional_embeddings
    monkeypatch.setattr(
        model.pipe, "_prepare_rotary_positional_embeddings", lambda *a, **k: (rotary.append(1), make(*a, **k))[1]
    )
    x = torch.randn(2, 3, 4, 4, 4)
    cond = {"prompt_embeds": torch.randn(2, 32, tiny_families.TEXT_WIDTH)}
    t = torch.tensor([10, 500])
    with model.pinned():
        for _ in range(3):
            model.predict_and_target(x, cond, torch.randn_like(x), t)
    assert len(reads) == 1 and len(rotary) == 1
    reads.clear()
    model.predict_and_target(x, cond, torch.randn_like(x), t)  # outside a round: resolved every time, as before
    assert len(reads) == 1


PROMPTS = ["a red circle moving left", "a blue square moving up"]


def _pair_batch(model, seed=0):
    return dpo_batch(model, PROMPTS, seed)


_dpo = dpo_loss


def test_full_fine_tune_lowers_the_loss_and_leaves_the_reference_unchanged(wan):
    cfg = TrainConfig(finetune="full", ref_offload=True, lr=1e-3)
    net = wan.denoiser
    params, frozen = trainer.trainable(wan, cfg)
    assert len(params) == len(list(net.parameters())) and all(p.requires_grad for p in params)
    assert frozen is not net and not any(p.requires_grad for p in frozen.parameters())
    ref_before = {k: v.clone() for k, v in frozen.state_dict().items()}
    ctx, opt, batch = (
        trainer.StepContext(wan, cfg, frozen, torch.device("cpu")),
        trainer.make_optimizer(cfg, params),
        _pair_batch(wan),
    )
    first = _dpo(ctx, batch)
    assert first.item() == pytest.approx(np.log(2), abs=1e-6)  # policy = reference at the start
    for _ in range(6):
        opt.zero_grad()
        _dpo(ctx, batch).backward()
        opt.step()
    assert _dpo(ctx, batch).item() < first.item() - 1e-3
    assert wan.denoiser is net  # the reference was swapped in and out again
    assert all(torch.equal(v, ref_before[k]) for k, v in frozen.state_dict().items())
    assert any(not torch.equal(v, ref_before[k]) for k, v in net.state_dict().items())


def test_bf16_autocast_step_runs_on_cpu_with_float32_errors(wan):
    batch = _pair_batch(wan)
    plain = trainer.StepContext(wan, TrainConfig(), None, torch.device("cpu"))
    cfg = TrainConfig(mixed_precision="bf16")
    params, _ = trainer.trainable(wan, cfg)
    ctx = trainer.StepContext(wan, cfg, None, torch.device("cpu"))
    e = ctx.errors(*batch)
    with torch.no_grad():
        e32 = plain.errors(*batch)
    assert e.dtype == torch.float32 and not torch.equal(e.detach(), e32)  # bf16 matmuls, float32 errors
    assert torch.allclose(e.detach(), e32, rtol=5e-2)
    _dpo(ctx, batch).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_family_dir):
    grads = []
    for checkpointing in (False, True):
        model = load_model(str(tiny_family_dir("cogvideox")))
        torch.manual_seed(0)  # the same LoRA init
        params, _ = trainer.trainable(model, TrainConfig(gradient_checkpointing=checkpointing, lora_rank=4))
        for p in params:
            torch.nn.init.normal_(p, std=0.05)
        assert model.denoiser.gradient_checkpointing is checkpointing
        model.denoiser.train()
        ctx = trainer.StepContext(model, TrainConfig(), None, torch.device("cpu"))
        ctx.errors(*_pair_batch(model)).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_adamw8bit_needs_bitsandbytes(monkeypatch, wan):
    cfg = TrainConfig(optimizer="adamw8bit")
    params = [torch.nn.Parameter(torch.zeros(4))]
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(UserError, match="pip install bitsandbytes"):
        trainer.make_optimizer(cfg, params)
    with pytest.raises(UserError, match="pip install bitsandbytes"):  # `vipo run` says so before generating
        driver.check(RunConfig(model="x", train=cfg))
    monkeypatch.undo()
    pytest.importorskip("bitsandbytes")
    params, _ = trainer.trainable(wan, cfg)
    opt = trainer.make_optimizer(cfg, params)
    ctx = trainer.StepContext(wan, cfg, None, torch.device("cpu"))
    _dpo(ctx, _pair_batch(wan)).backward()
    opt.step()


_dpo = dpo_loss


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_on_bf16_weights_trains_float32_and_lowers_the_dpo_loss(family, tiny_family_dir):
    model = load_model(str(tiny_family_dir(family)), dtype="bfloat16")
    batch = _bf16_batch(model)
    cfg = TrainConfig(lr=1e-2, lora_rank=4, lora_alpha=4)  # mixed_precision "no": bf16 weights autocast anyway
    params, frozen = trainer.trainable(model, cfg, seed=0)
    net = model.denoiser
    assert frozen is None and params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert {id(p) for p in params} == {id(p) for n, p in net.named_parameters() if p.requires_grad}
    assert _low_precision(net) == [n for n, p in net.named_parameters() if "lora_" in n]  # the base stays bf16
    ctx = trainer.StepContext(model, cfg, None, torch.device("cpu"))
    with ctx.autocast():  # bf16 base and float32 adapter meet in bf16 matmuls
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == BF16
    e = ctx.errors(*batch)
    assert e.dtype == torch.float32 and torch.isfinite(e).all()
    opt = trainer.make_optimizer(cfg, params)
    first = _dpo(ctx, batch)
    assert first.item() == pytest.approx(np.log(2), abs=1e-6)  # B = 0: the policy is the reference
    for _ in range(6):
        opt.zero_grad()
        _dpo(ctx, batch).backward()
        opt.step()
    assert _dpo(ctx, batch).item() < first.item() - 1e-3
    assert all(p.dtype == torch.float32 for p in params)


@pytest.mark.parametrize("family", FAMILIES)
def test_full_fine_tune_of_bf16_weights_trains_float32_master_weights(tmp_path, tiny_family_dir, family):
    base = tiny_family_dir(family)
    model = load_model(str(base), dtype="bfloat16")
    batch = _bf16_batch(model)
    loaded = model.denoiser
    cfg = TrainConfig(finetune="full", lr=1e-3, ref_offload=True)
    params, frozen = trainer.trainable(model, cfg)
    net = model.denoiser
    # the policy is a float32 copy read from the base's folder, and the reference a float32 copy of it; the text
    # encoder and VAE stay bf16
    assert net is not loaded and frozen is not net and len(params) == len(list(net.parameters()))
    assert all(p.dtype == torch.float32 and p.requires_grad for p in net.parameters())
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in frozen.parameters())
    assert _low_precision(model.pipe.text_encoder) == _low_precision(model.pipe.vae) == []
    ctx, opt = trainer.StepContext(model, cfg, frozen, torch.device("cpu")), trainer.make_optimizer(cfg, params)
    first = _dpo(ctx, batch)
    assert first.item() == pytest.approx(np.log(2), abs=1e-6)  # policy = reference at the start
    for _ in range(6):
        opt.zero_grad()
        _dpo(ctx, batch).backward()
        opt.step()
    assert _dpo(ctx, batch).item() < first.item() - 1e-3 and model.denoiser is net
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    ckpt = tmp_path / "round-1" / "checkpoint"
    lora.write_checkpoint(model, ckpt, str(base), None, 1, full=True)
    with safe_open(str(next((ckpt / "transformer").glob("*.safetensors"))), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # the checkpoint holds the master weights
    # the next round samples with it in bf16, as diffusers loads it, and trains from the float32 weights unrounded
    policy = policies.load_policy(str(base), ckpt, dtype="bfloat16")
    assert _low_precision(policy.denoiser) == [] and policy.denoiser_source == ckpt / "transformer"
    master = lora.master_denoiser(policy).state_dict()
    assert all(torch.equal(master[k], v) for k, v in trained.items())
    ours = policy.decode(policy.sample(_cond(policy, PROMPTS[:1]), _cond(policy, [""]), [7], 3, 3.0))
    assert np.array_equal(ours, _diffusers_video(base, PROMPTS[0], 7, transformer=ckpt / "transformer"))


@pytest.fixture()
def tiny():
    return WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)


def _setup(model, cfg, prompts):
    """A DPO micro-batch of the tiny model: items, a conditioning cache with '' whose tensors require grad."""
    g = torch.Generator().manual_seed(0)
    latents = {
        f"s{i}": torch.randn(model.frames, 3, model.side, model.side, generator=g) for i in range(2 * len(prompts))
    }
    with torch.no_grad():
        enc = model.encode_prompts(prompts + [""])
    cache = {p: {k: v[i : i + 1].clone() for k, v in enc.items()} for i, p in enumerate(prompts + [""])}
    for v in cache[""].values():
        if v.is_floating_point():
            v.requires_grad_(True)
    batch = [
        {"chosen": {"id": f"s{2 * i}", "prompt": p}, "rejected": {"id": f"s{2 * i + 1}", "prompt": p}, "weight": 1.0}
        for i, p in enumerate(prompts)
    ]
    ctx = trainer.StepContext(model, cfg, None, torch.device("cpu"))
    return ctx, batch, cache, (lambda s: latents[s["id"]])


@pytest.mark.parametrize("dropout", [0.0, 0.9])
def test_caption_dropout_sends_a_gradient_to_the_unconditional_branch(tiny, dropout):
    cfg = TrainConfig(caption_dropout=dropout, lambda_real=0)
    model = tiny
    lora.attach(model, 4, 4, seed=0)
    prompts = [a.prompt() for a in grammar.INDIST[:6]]
    ctx, batch, cache, latent = _setup(model, cfg, prompts)
    terms = trainer._micro_loss(ctx, batch, cache, latent, torch.Generator().manual_seed(3), None, 0)
    terms.total.backward()
    grad = cache[""]["pooled"].grad
    if dropout == 0:
        assert grad is None  # the empty prompt never reaches the loss: its branch drifts untrained
    else:
        assert grad is not None and grad.abs().sum() > 0


def test_caption_dropout_shares_the_draw_within_a_pair(tiny):
    cfg = TrainConfig(caption_dropout=0.5)
    ctx = trainer.StepContext(tiny, cfg, None, torch.device("cpu"))
    cache = {"": "EMPTY"}
    conds = [f"w{i}" for i in range(8)] + [f"l{i}" for i in range(8)]
    got = trainer._dropout(ctx, conds, cache, torch.Generator().manual_seed(1), 8)
    dropped = [i for i in range(8) if got[i] == "EMPTY"]
    assert 0 < len(dropped) < 8
    assert [i for i in range(8) if got[8 + i] == "EMPTY"] == dropped  # winner and loser dropped together
    assert all(got[i] == conds[i] for i in range(16) if i % 8 not in dropped)
    off = trainer.StepContext(tiny, TrainConfig(caption_dropout=0.0), None, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    assert trainer._dropout(off, conds, cache, g, 8) is conds
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(1).get_state())  # off draws nothing


def test_nll_terms_are_in_likelihood_units(tiny):
    """winner NLL = lambda_winner * T * mean(e_w): T = 1000 for the world's schedule, 1 with nll_units: mse."""
    model = tiny
    lora.attach(model, 4, 4, seed=0)
    prompts = [a.prompt() for a in grammar.INDIST[:3]]
    got = {}
    for units in ("likelihood", "mse"):
        cfg = TrainConfig(caption_dropout=0.0, lambda_winner=0.2, nll_units=units)
        ctx, batch, cache, latent = _setup(model, cfg, prompts)
        terms = trainer._micro_loss(ctx, batch, cache, latent, torch.Generator().manual_seed(3), None, 0)
        got[units] = terms.winner_nll.item()
        assert terms.winner_nll.item() == pytest.approx(0.2 * ctx.nll_scale * terms.metrics["nll_winner"], rel=1e-5)
        assert terms.total.item() == pytest.approx(terms.preference.item() + terms.winner_nll.item(), rel=1e-6)
    assert model.train_timesteps == 1000 and got["likelihood"] == pytest.approx(1000 * got["mse"], rel=1e-5)


def test_grad_norms_measure_each_term_apart():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    terms = trainer.Terms(preference=(3 * w).sum(), winner_nll=(w**2).sum(), real_nll=None)
    out = trainer.grad_norms(terms, [w])
    assert out["grad_norm_preference"] == pytest.approx((9 + 9) ** 0.5)  # d/dw 3w = [3, 3]
    assert out["grad_norm_winner_nll"] == pytest.approx((4 + 16) ** 0.5)  # 2w = [2, 4]
    assert "grad_norm_real_nll" not in out
    terms.total.backward()  # the graph is still there for the real backward
    assert w.grad.tolist() == [5.0, 7.0]


def test_kto_weights_auto_and_explicit():
    items = [{"desirable": True}] * 70 + [{"desirable": False}] * 30
    auto = trainer.kto_weights(TrainConfig(method="kto"), items)
    assert auto["lambda_desirable"] == pytest.approx(4 / 7) and auto["lambda_undesirable"] == 1.0
    assert auto["weighted_ratio"] == pytest.approx(4 / 3)
    fixed = trainer.kto_weights(TrainConfig(method="kto", lambda_desirable=1.0, lambda_undesirable=1.0), items)
    assert (fixed["lambda_desirable"], fixed["lambda_undesirable"]) == (1.0, 1.0)


def test_a_killed_kto_round_resumes_with_its_reward_pool(tmp_path, tiny_model_dir, monkeypatch):
    """The pool is part of the resumable state: a KTO round stopped after step 3 (before that step was saved) and run
    again trains exactly the adapter of an uninterrupted run."""
    from safetensors.torch import load_file

    from tests.conftest import TINY_RUN
    from vipo import faults
    from vipo.cli import main

    args = [
        "--model",
        str(tiny_model_dir),
        "--rounds",
        "1",
        "--method",
        "kto",
        *TINY_RUN,
        "--set",
        "train.epochs=6",
        "--set",
        "train.batch_size=1",
        "--set",
        "train.kto_kl_pool=4",
    ]
    assert main(["run", "--out", str(tmp_path / "ref"), *args]) == 0
    monkeypatch.setattr(faults, "_PLAN", faults._parse("train.after_step:3=raise"))
    monkeypatch.setattr(faults, "_hits", faults.Counter())
    with pytest.raises(faults.InjectedFault):
        main(["run", "--out", str(tmp_path / "cut"), *args])
    monkeypatch.setattr(faults, "_PLAN", {})
    assert main(["run", "--out", str(tmp_path / "cut"), *args]) == 0
    name = "round-1/checkpoint/lora-round-1/pytorch_lora_weights.safetensors"
    ref, cut = load_file(str(tmp_path / "ref" / name)), load_file(str(tmp_path / "cut" / name))
    assert ref.keys() == cut.keys() and all(torch.equal(ref[k], cut[k]) for k in ref)
    log = [__import__("json").loads(x) for x in (tmp_path / "cut/round-1/train_log.jsonl").read_text().splitlines()]
    assert any(h["kto_z0"] > 0 for h in log)  # the pool moved during training
