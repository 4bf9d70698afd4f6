"""Every loss branch against values computed by hand."""

import math

import numpy as np
import pytest
import torch
from train_helpers import _batch, _errors

from vipo import losses
from vipo.train import lora


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_dpo_is_log2_when_policy_equals_reference():
    e_w, e_l = t(0.3, 0.1, 0.7), t(0.2, 0.4, 0.9)
    out = losses.dpo(e_w, e_l, e_w.clone(), e_l.clone(), beta=5000.0)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert out.metrics["implicit_acc"] == pytest.approx(0.5)
    assert out.metrics["reward_margin"] == pytest.approx(0.0)


def test_dpo_hand_computed():
    # pair 1: policy improved on the winner: (0.10-0.12) - (0.30-0.30) = -0.02 -> inside = -0.5*100*-0.02 = 1.0
    # pair 2: policy improved on the loser:  (0.20-0.20) - (0.25-0.27) =  0.02 -> inside = -1.0
    out = losses.dpo(t(0.10, 0.20), t(0.30, 0.25), t(0.12, 0.20), t(0.30, 0.27), beta=100.0)
    l1, l2 = -math.log(1 / (1 + math.exp(-1.0))), -math.log(1 / (1 + math.exp(1.0)))
    assert out.loss.item() == pytest.approx((l1 + l2) / 2, rel=1e-5)
    assert out.metrics["implicit_acc"] == pytest.approx(0.5)
    assert out.metrics["reward_chosen"] == pytest.approx((1.0 + 0.0) / 2, rel=1e-5)
    assert out.metrics["reward_rejected"] == pytest.approx((0.0 + 1.0) / 2, rel=1e-5)


def test_dpo_weights_are_a_plain_mean_of_weight_times_loss():
    # VideoDPO: (weight * loss).mean(), not normalised by the micro-batch's weight sum
    out = losses.dpo(t(0.10, 0.20), t(0.30, 0.25), t(0.12, 0.20), t(0.30, 0.27), beta=100.0, weight=t(3.0, 1.0))
    l1, l2 = math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(1.0))
    assert out.loss.item() == pytest.approx((3 * l1 + l2) / 2, rel=1e-5)


def test_a_pair_weight_acts_at_batch_size_one():
    # before: weights 0.25, 1 and 4 gave the same loss for a single pair (the weight divided itself out)
    got = [losses.dpo(t(0.10), t(0.30), t(0.12), t(0.30), beta=100.0, weight=t(w)).loss.item() for w in (0.25, 1, 4)]
    l1 = math.log(1 + math.exp(-1.0))
    assert got == pytest.approx([0.25 * l1, l1, 4 * l1], rel=1e-5)


def test_dpo_gradient_lowers_winner_error():
    e_w = torch.tensor([0.5], requires_grad=True)
    e_l = torch.tensor([0.5], requires_grad=True)
    losses.dpo(e_w, e_l, t(0.5), t(0.5), beta=10.0).loss.backward()
    assert e_w.grad.item() > 0 and e_l.grad.item() < 0  # descent lowers e_w, raises e_l
    assert e_w.grad.item() == pytest.approx(0.5 * 10 * 0.5 / 1)  # sigmoid(-0)=0.5 times beta/2


def test_kto_hand_computed():
    e, r = t(0.10, 0.30, 0.20), t(0.12, 0.28, 0.20)
    des = torch.tensor([True, False, True])
    beta = 50.0
    reward = [-beta * (0.10 - 0.12), -beta * (0.30 - 0.28), 0.0]  # [1, -1, 0]
    z0 = max(0.0, sum(reward) / 3)  # 0
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = ((1 - sig(reward[0] - z0)) * 2.0 + (1 - sig(z0 - reward[1])) * 0.5 + (1 - sig(reward[2] - z0)) * 2.0) / 3
    out = losses.kto(e, r, des, beta, lambda_d=2.0, lambda_u=0.5)
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    assert out.metrics["kto_z0"] == pytest.approx(0.0)


def test_kto_reference_point_is_clamped_mean_and_detached():
    e = torch.tensor([0.0, 0.0], requires_grad=True)
    r = t(0.02, 0.04)  # rewards 1 and 2 at beta 50 -> z0 = 1.5
    out = losses.kto(e, r, torch.tensor([True, False]), 50.0)
    assert out.metrics["kto_z0"] == pytest.approx(1.5)
    out.loss.backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # d/de of (1 - sig(r - z0)) with r = -beta*e and z0 constant: beta * sig' (r - z0) / N
    d0 = 50.0 * sig(-0.5) * (1 - sig(-0.5)) / 2
    d1 = -50.0 * sig(-0.5) * (1 - sig(-0.5)) / 2  # undesirable: 1 - sig(z0 - r), z0 - r = -0.5
    assert e.grad[0].item() == pytest.approx(d0, rel=1e-5)
    assert e.grad[1].item() == pytest.approx(d1, rel=1e-5)


def test_kto_reference_point_never_negative():
    out = losses.kto(t(0.5, 0.5), t(0.1, 0.1), torch.tensor([True, False]), 10.0)  # rewards -4, -4
    assert out.metrics["kto_z0"] == 0.0


def test_nll_and_reward_weighted():
    assert losses.nll(t(0.2, 0.4)).item() == pytest.approx(0.3)
    assert losses.nll(t(0.2, 0.4), weight=t(1.0, 3.0)).item() == pytest.approx((0.2 + 1.2) / 2)
    out = losses.reward_weighted(t(0.2, 0.4), t(1.0, 0.5))
    assert out.loss.item() == pytest.approx((0.2 + 0.2) / 2)


def test_targets_per_parameterization():
    x0, noise = t(1.0, -1.0).view(2, 1), t(0.5, 0.25).view(2, 1)
    assert torch.equal(losses.target("epsilon", x0, noise), noise)
    assert torch.allclose(losses.target("flow", x0, noise), t(-0.5, 1.25).view(2, 1))
    a, s = t(0.6, 0.8).view(2, 1), t(0.8, 0.6).view(2, 1)
    assert torch.allclose(
        losses.target("v_prediction", x0, noise, a, s), t(0.6 * 0.5 - 0.8, 0.8 * 0.25 + 0.6).view(2, 1)
    )
    assert torch.equal(losses.target("sample", x0, noise), x0)
    with pytest.raises(ValueError):
        losses.target("x1", x0, noise)


def test_per_sample_error_is_float32_mean_per_item():
    pred = torch.ones(2, 3, 4, dtype=torch.bfloat16)
    tgt = torch.zeros(2, 3, 4)
    tgt[1] = 2
    err = losses.per_sample_error(pred, tgt)
    assert err.dtype == torch.float32
    assert err.tolist() == [1.0, 1.0]


def test_kto_with_a_given_reference_point():
    # z0 from a pool (here 0.7) replaces the batch mean; the gradient treats it as a constant
    e = torch.tensor([0.10], requires_grad=True)
    out = losses.kto(e, t(0.12), torch.tensor([True]), 50.0, z0=0.7)  # reward 1.0
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert out.loss.item() == pytest.approx(1 - sig(0.3), rel=1e-6)
    out.loss.backward()
    assert e.grad.item() == pytest.approx(50.0 * sig(0.3) * (1 - sig(0.3)), rel=1e-5)


def test_reward_pool_mean_clamp_window_and_state():
    pool = losses.RewardPool(4)
    assert pool.z0() == 0.0 and pool.state() == [0.0] * 4  # policy = reference at step 0: every reward is 0
    pool.push(t(1.0, 2.0, 3.0))
    assert pool.z0() == pytest.approx(6.0 / 4)
    pool.push([5.0, 7.0])  # the two oldest (0 and 1) drop out
    assert pool.state() == [2.0, 3.0, 5.0, 7.0] and pool.z0() == pytest.approx(17.0 / 4)
    pool.push([-20.0, -20.0, -20.0, -20.0])
    assert pool.z0() == 0.0  # clamped at 0
    again = losses.RewardPool(4, pool.state())
    assert again.state() == pool.state()
    with pytest.raises(ValueError):
        losses.RewardPool(1)


def test_kto_batch_one_with_a_pool_has_the_gradient_of_batch_128():
    """Fixed inputs: 128 items. A batch of 128 with z0 = its clamped mean reward against 128 micro-batches of one
    item, each with z0 from a pool holding those 128 rewards, accumulated as the trainer does (loss / 128)."""
    g = torch.Generator().manual_seed(0)
    e0, r = torch.rand(128, generator=g) * 0.1, torch.rand(128, generator=g) * 0.1
    des = torch.rand(128, generator=g) < 0.7
    beta = 50.0
    e = e0.clone().requires_grad_(True)
    losses.kto(e, r, des, beta).loss.backward()  # z0 over the batch itself
    big = e.grad.clone()
    pool = losses.RewardPool(128)
    pool.push(losses.kto_rewards(e0, r, beta))
    z0 = pool.z0()
    assert z0 == pytest.approx(max(0.0, (-beta * (e0 - r)).mean().item()), rel=1e-6)
    e1 = e0.clone().requires_grad_(True)
    for i in range(128):
        (losses.kto(e1[i : i + 1], r[i : i + 1], des[i : i + 1], beta, z0=z0).loss / 128).backward()
    assert torch.allclose(e1.grad, big, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    "n_d, n_u, want",
    [
        (50, 50, (1.0, 1.0)),  # ratio 1: inside [1, 4/3]
        (40, 30, (1.0, 1.0)),  # 4/3: the upper edge, inside
        (70, 30, (4 / 3 * 30 / 70, 1.0)),  # 7/3 -> lambda_d = (4/3) / (7/3) = 4/7: weighted ratio 4/3
        (30, 70, (1.0, 30 / 70)),  # 3/7 -> lambda_u = 3/7: weighted ratio 1
        (10, 0, (1.0, 1.0)),  # one class absent: nothing to balance
    ],
)
def test_kto_class_weights_follow_the_kto_rule(n_d, n_u, want):
    lam_d, lam_u = losses.kto_class_weights(n_d, n_u)
    assert (lam_d, lam_u) == pytest.approx(want)
    if n_u:
        assert 1 - 1e-9 <= lam_d * n_d / (lam_u * n_u) <= 4 / 3 + 1e-9
    assert max(lam_d, lam_u) == 1.0


def test_nll_scale_and_lift_rewards():
    assert losses.nll_scale("likelihood", 1000) == 1000.0 and losses.nll_scale("mse", 1000) == 1.0
    with pytest.raises(ValueError):
        losses.nll_scale("nats", 1000)
    labels = {"semantic": "Good", "fidelity": "Normal", "motion": "Bad"}
    assert losses.label_reward(labels, losses.LIFT_SCORES) == pytest.approx((0.9 + 0.2 + 0.05) / 3)


def test_kto_pool_is_saved_in_the_resumable_state():
    pool = losses.RewardPool(8)
    pool.push([1.0, 2.0])
    assert losses.RewardPool(8, pool.state()).z0() == pytest.approx(3.0 / 8)


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
