"""Every loss branch against values computed by hand."""
import math

import pytest
import torch

from vipo import losses


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


def test_dpo_weights_reweight_pairs():
    out = losses.dpo(t(0.10, 0.20), t(0.30, 0.25), t(0.12, 0.20), t(0.30, 0.27), beta=100.0, weight=t(3.0, 1.0))
    l1, l2 = math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(1.0))
    assert out.loss.item() == pytest.approx((3 * l1 + l2) / 4, rel=1e-5)


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
    assert losses.nll(t(0.2, 0.4), weight=t(1.0, 3.0)).item() == pytest.approx(0.35)
    out = losses.reward_weighted(t(0.2, 0.4), t(1.0, 0.5))
    assert out.loss.item() == pytest.approx((0.2 + 0.2) / 2)


def test_targets_per_parameterization():
    x0, noise = t(1.0, -1.0).view(2, 1), t(0.5, 0.25).view(2, 1)
    assert torch.equal(losses.target("epsilon", x0, noise), noise)
    assert torch.allclose(losses.target("flow", x0, noise), t(-0.5, 1.25).view(2, 1))
    a, s = t(0.6, 0.8).view(2, 1), t(0.8, 0.6).view(2, 1)
    assert torch.allclose(losses.target("v_prediction", x0, noise, a, s), t(0.6 * 0.5 - 0.8, 0.8 * 0.25 + 0.6).view(2, 1))
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
