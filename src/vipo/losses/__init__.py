"""Preference losses for diffusion models, as pure functions of per-sample denoising errors.

Every family trains in its own parameterization (epsilon, v-prediction, flow matching); :func:`target` gives the
regression target for each, and :func:`per_sample_error` turns (prediction, target) into one float32 error per item.
The losses below see only those errors, so one implementation serves every parameterization and is testable by hand.

Notation: ``e_w``/``e_l`` are the policy's errors on the chosen/rejected sample, ``r_w``/``r_l`` the reference's on
the same noisy input. An error below the reference's means the policy assigns the sample a higher likelihood.

- :func:`dpo` — Diffusion-DPO (Wallace et al. 2024; IPO Eq. 3). With the timestep factor folded into ``beta``:
  ``inside = -beta/2 * ((e_w - r_w) - (e_l - r_l))``, ``loss = -log sigmoid(inside)``; ``log 2`` at policy = reference.
- :func:`kto` — Diffusion-KTO (Li et al. 2024; IPO Eq. 4). Implicit reward ``r = -beta * (e - e_ref)``; reference
  point ``z0 = max(0, mean(r)).detach()`` over the batch; desirable items pay ``1 - sigmoid(r - z0)``, undesirable
  items ``1 - sigmoid(z0 - r)``, weighted by ``lambda_d``/``lambda_u``.
- :func:`nll` — the denoising loss (the NLL surrogate) used as IPO's regularizers (Eq. 5 and 6).
- :func:`reward_weighted` — LiFT's reward-weighted denoising loss: ``mean(w * e)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

PARAMETERIZATIONS = ("epsilon", "v_prediction", "flow", "sample")


def target(parameterization: str, x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor | None = None,
           sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Regression target for a noisy input built from clean ``x0`` and ``noise``.

    epsilon: ``noise``. v-prediction (DDPM, ``x_t = alpha x0 + sigma noise``): ``alpha * noise - sigma * x0``.
    flow matching (rectified flow, ``x_t = (1 - s) x0 + s noise``): ``noise - x0``. sample (x0-prediction, the
    embedded world's): ``x0``. ``alpha``/``sigma`` broadcast
    against ``x0`` (shape [B, 1, ...]).
    """
    if parameterization == "epsilon":
        return noise
    if parameterization == "v_prediction":
        if alpha is None or sigma is None:
            raise ValueError("v-prediction needs alpha and sigma")
        return alpha * noise - sigma * x0
    if parameterization == "flow":
        return noise - x0
    if parameterization == "sample":
        return x0
    raise ValueError(f"unknown parameterization {parameterization!r} (known: {', '.join(PARAMETERIZATIONS)})")


def per_sample_error(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per batch item in float32 (optionally times a per-item weight, e.g. a flow weighting)."""
    err = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return err if weight is None else err * weight.float()


@dataclass
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def _mean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return x.mean()
    w = weight.float()
    return (x * w).sum() / w.sum().clamp(min=1e-12)


def dpo(e_w: torch.Tensor, e_l: torch.Tensor, r_w: torch.Tensor, r_l: torch.Tensor, beta: float,
        weight: torch.Tensor | None = None) -> LossOutput:
    """Diffusion-DPO over a batch of pairs (all inputs shape [P]); ``weight`` re-weights pairs (VideoDPO's alpha)."""
    inside = -0.5 * beta * ((e_w - r_w) - (e_l - r_l))
    losses = -F.logsigmoid(inside)
    loss = _mean(losses, weight)
    with torch.no_grad():
        reward_w = -0.5 * beta * (e_w - r_w)
        reward_l = -0.5 * beta * (e_l - r_l)
        metrics = {
            "dpo_loss": loss.item(),
            "implicit_acc": ((inside > 0).float() + 0.5 * (inside == 0).float()).mean().item(),
            "reward_margin": (reward_w - reward_l).mean().item(),
            "reward_chosen": reward_w.mean().item(),
            "reward_rejected": reward_l.mean().item(),
            "err_policy_chosen": e_w.mean().item(),
            "err_policy_rejected": e_l.mean().item(),
            "err_ref_chosen": r_w.mean().item(),
            "err_ref_rejected": r_l.mean().item(),
        }
    return LossOutput(loss, metrics)


def kto(e: torch.Tensor, r: torch.Tensor, desirable: torch.Tensor, beta: float, lambda_d: float = 1.0,
        lambda_u: float = 1.0) -> LossOutput:
    """Diffusion-KTO over single labelled samples (shape [N]); ``desirable`` is a bool tensor."""
    reward = -beta * (e - r)
    z0 = reward.mean().clamp(min=0).detach()
    des = desirable.bool()
    value = torch.where(des, torch.sigmoid(reward - z0), torch.sigmoid(z0 - reward))
    lam = torch.where(des, torch.full_like(reward, lambda_d), torch.full_like(reward, lambda_u))
    loss = (lam * (1 - value)).mean()
    with torch.no_grad():
        metrics = {
            "kto_loss": loss.item(),
            "kto_z0": z0.item(),
            "reward_desirable": reward[des].mean().item() if des.any() else 0.0,
            "reward_undesirable": reward[~des].mean().item() if (~des).any() else 0.0,
            "implicit_acc": ((reward > z0) == des).float().mean().item(),
            "err_policy": e.mean().item(),
            "err_ref": r.mean().item(),
        }
    return LossOutput(loss, metrics)


def nll(e: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Denoising loss (the diffusion NLL bound up to constants) averaged over items."""
    return _mean(e, weight)


def reward_weighted(e: torch.Tensor, reward: torch.Tensor) -> LossOutput:
    """LiFT's reward-weighted denoising loss: each sample's error times its critic score (no normalisation)."""
    loss = (reward.float() * e).mean()
    return LossOutput(loss, {"rw_loss": loss.item(), "reward_mean": reward.float().mean().item(),
                             "err_policy": e.mean().item()})
