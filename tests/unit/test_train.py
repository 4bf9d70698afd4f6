"""Training mechanics on a tiny model: each objective lowers its loss on a fixed batch; the reference is the
adapter-disabled network; a saved round checkpoint reloads to exactly the trained policy."""

import random

import numpy as np
import pytest
import torch

from vipo import losses
from vipo.models import policy as policies
from vipo.models.world import WorldModel
from vipo.train import lora
from vipo.world import grammar, render


@pytest.fixture()
def tiny():
    return WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)


def _batch(model, n=4, seed=0):
    rng = random.Random(seed)
    attrs = [grammar.INDIST[i * 7] for i in range(n)]
    w = model.encode_video(np.stack([render.random_clip(a, rng) for a in attrs]))
    lclips = np.stack(
        [
            render.random_clip(grammar.Attributes(a.color, a.shape, "up" if a.direction != "up" else "down"), rng)
            for a in attrs
        ]
    )
    l_ = model.encode_video(lclips)
    with torch.no_grad():
        cond = model.encode_prompts([a.prompt() for a in attrs])
    return w, l_, cond


def _errors(model, x, cond, noise, t):
    pred, target = model.predict_and_target(x, cond, noise, t)
    return losses.per_sample_error(pred, target)


@pytest.mark.parametrize("method", ["dpo", "kto", "rwr"])
def test_each_objective_lowers_its_loss_on_a_fixed_batch(tiny, method):
    w, l_, cond = _batch(tiny)
    params = lora.attach(tiny, rank=4, alpha=4)
    opt = torch.optim.AdamW(params, lr=3e-3)
    g = torch.Generator().manual_seed(0)
    n = w.shape[0]
    noise = torch.randn(w.shape, generator=g)
    t = tiny.sample_timesteps(n, g)
    x = torch.cat([w, l_])
    cond2 = {k: torch.cat([v, v]) for k, v in cond.items()}
    noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])
    net = tiny.denoiser

    def loss_now():
        e = _errors(tiny, x, cond2, noise2, t2)
        with torch.no_grad():
            net.disable_adapters()
            r = _errors(tiny, x, cond2, noise2, t2)
            net.enable_adapters()
        if method == "dpo":
            return losses.dpo(e[:n], e[n:], r[:n], r[n:], beta=500.0).loss
        if method == "kto":
            des = torch.tensor([True] * n + [False] * n)
            return losses.kto(e, r, des, beta=500.0).loss
        return losses.reward_weighted(e, torch.tensor([1.0] * n + [0.1] * n)).loss

    first = loss_now()
    if method == "dpo":
        assert first.item() == pytest.approx(np.log(2), abs=1e-6)  # policy = reference at the start
    for _ in range(15):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    assert loss_now().item() < first.item() - 1e-3


def test_reference_is_the_adapter_disabled_network(tiny):
    w, _, cond = _batch(tiny)
    g = torch.Generator().manual_seed(1)
    noise, t = torch.randn(w.shape, generator=g), tiny.sample_timesteps(w.shape[0], g)
    with torch.no_grad():
        before = _errors(tiny, w, cond, noise, t)
    params = lora.attach(tiny, rank=4, alpha=4)
    for p in params:
        torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        policy = _errors(tiny, w, cond, noise, t)
        tiny.denoiser.disable_adapters()
        ref = _errors(tiny, w, cond, noise, t)
        tiny.denoiser.enable_adapters()
    assert torch.allclose(ref, before) and not torch.allclose(policy, before)
    base_params = [n for n, p in tiny.denoiser.named_parameters() if p.requires_grad and "lora_" not in n]
    assert base_params == []  # only the adapter trains


def test_round_checkpoint_reloads_to_the_trained_policy(tmp_path, tiny):
    base = tmp_path / "base"
    tiny.save(base)
    model = policies.load_policy(str(base))
    for rnd in (1, 2):
        params = lora.attach(model, rank=4, alpha=4)
        for p in params:
            torch.nn.init.normal_(p, std=0.05)
        w, _, cond = _batch(model, seed=rnd)
        g = torch.Generator().manual_seed(rnd)
        noise, t = torch.randn(w.shape, generator=g), model.sample_timesteps(w.shape[0], g)
        with torch.no_grad():
            want = _errors(model, w, cond, noise, t)
        prev = tmp_path / f"round-{rnd - 1}" / "checkpoint" if rnd > 1 else None
        lora.write_checkpoint(model, tmp_path / f"round-{rnd}" / "checkpoint", str(base), prev, rnd)
        model = policies.load_policy(str(base), tmp_path / f"round-{rnd}" / "checkpoint")
        with torch.no_grad():
            got = _errors(model, w, cond, noise, t)
        assert torch.allclose(got, want, atol=1e-5), rnd
    assert policies.read_policy(tmp_path / "round-2" / "checkpoint")["adapters"] == ["lora-round-1", "lora-round-2"]


def test_timestep_window_draws_only_from_its_part_of_the_schedule(tiny):
    total = tiny.scheduler.config.num_train_timesteps
    g = torch.Generator().manual_seed(0)
    t = tiny.sample_timesteps(4000, g, (0.8, 1.0))
    assert int(t.min()) >= int(0.8 * total) and int(t.max()) == total - 1
    # roughly uniform inside the window: both halves are drawn
    assert (t < 0.9 * total).float().mean().item() == pytest.approx(0.5, abs=0.05)
    # the full window is the family's own density (30% from the top tenth, the rest uniform)
    full = tiny.sample_timesteps(4000, torch.Generator().manual_seed(0), (0.0, 1.0))
    default = tiny.sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert torch.equal(full, default)
    assert (default >= 0.9 * total).float().mean().item() == pytest.approx(0.37, abs=0.04)


def test_timestep_window_is_validated():
    from vipo.config import TrainConfig
    from vipo.errors import UserError

    for bad in ([0.5, 0.5], [0.9, 0.2], [-0.1, 1.0], [0.0, 1.5], [0.5]):
        with pytest.raises(UserError, match="timestep_window"):
            TrainConfig(timestep_window=bad).validate()
    TrainConfig(timestep_window=[0.8, 1.0]).validate()


def test_lora_init_depends_only_on_its_seed_not_on_the_global_generator():
    inits = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        model = WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)
        torch.manual_seed(global_seed)
        lora.attach(model, rank=4, alpha=4, seed=123)
        inits.append(lora.lora_state(model))
        after = torch.rand(1)
        torch.manual_seed(global_seed)
        assert torch.equal(after, torch.rand(1))  # the global stream is left where it was
    assert inits[0].keys() == inits[1].keys()
    assert all(torch.equal(inits[0][k], inits[1][k]) for k in inits[0])
