"""Preference losses for diffusion models, as pure functions of per-sample denoising errors.

Every family trains in its own parameterization (epsilon, v-prediction, flow matching); :func:`target` gives the
regression target for each, and :func:`per_sample_error` turns (prediction, target) into one float32 error per item.
The losses below see only those errors, so one implementation serves every parameterization and is testable by hand.

Notation: ``e_w``/``e_l`` are the policy's errors on the chosen/rejected sample, ``r_w``/``r_l`` the reference's on
the same noisy input. An error below the reference's means the policy assigns the sample a higher likelihood.

The likelihood surrogate (Diffusion-DPO, Wallace et al. 2024, Eq. 9-14): a sample's log-likelihood is replaced by the
one-sample ELBO estimate ``l(x) = -T * w(t) * e(x, t)`` (T discrete timesteps, ``w`` the weighting, taken constant = 1
as Diffusion-DPO does), so the DPO argument ``beta_paper * (l_w - l_w^ref - l_l + l_l^ref)`` becomes
``-beta_paper * T * ((e_w - r_w) - (e_l - r_l))``. vipo folds ``2 * beta_paper * T`` into one ``beta``.

- :func:`dpo` — Diffusion-DPO (IPO Eq. 3): ``inside = -beta/2 * ((e_w - r_w) - (e_l - r_l))``,
  ``loss = -log sigmoid(inside)``; ``log 2`` at policy = reference. Pair weights (VideoDPO's alpha re-weighting) enter
  as VideoDPO uses them: the plain mean of ``weight * loss`` (the pairs stage keeps the round's mean weight at 1).
- :func:`kto` — Diffusion-KTO (Li et al. 2024, Eq. 8; IPO Eq. 4). Implicit reward ``r = -beta * (e - e_ref)``;
  desirable items pay ``lambda_d * (1 - sigmoid(r - z0))``, undesirable ``lambda_u * (1 - sigmoid(z0 - r))``. The
  reference point ``z0 = max(0, mean(reward)).detach()`` is Diffusion-KTO's (its ``kl`` term: the mean over the whole
  batch, reduced across processes); the trainer estimates it over a pool of at least ``train.kto_kl_pool`` rewards
  (:class:`RewardPool`) and passes it in, so it never rests on one micro-batch.
- :func:`kto_class_weights` — the KTO paper's class-imbalance rule (Ethayarajh et al. 2024, Sec. 4.2; TRL's
  KTOTrainer warns outside it): ``lambda_d * n_d / (lambda_u * n_u)`` within ``[1, 4/3]``.
- :func:`nll` — the denoising loss (the NLL surrogate) used as IPO's regularizers (Eq. 5 and 6), and
  :func:`nll_scale`, which puts it in the preference term's units.
- :func:`reward_weighted` — LiFT's reward-weighted denoising loss: ``mean(w * e)``; :data:`LIFT_SCORES` LiFT's map
  from labels to rewards.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

PARAMETERIZATIONS = ("epsilon", "v_prediction", "flow", "sample")


def target(
    parameterization: str,
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
) -> torch.Tensor:
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
    """The loss and its metrics. Metrics are detached 0-d float32 tensors on the loss's device, never Python floats:
    reading a value back waits for the accelerator, so the trainer reads all of a step's metrics in one transfer
    after the backward pass (``float(m)`` gives the number)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def _mean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Plain mean of ``weight * x`` (VideoDPO's ``(weight * loss).mean()``): a weight scales its item's gradient
    whatever its neighbours in the micro-batch; the caller keeps the mean weight at 1 over the round."""
    if weight is None:
        return x.mean()
    return (x * weight.float()).mean()


def dpo(
    e_w: torch.Tensor,
    e_l: torch.Tensor,
    r_w: torch.Tensor,
    r_l: torch.Tensor,
    beta: float,
    weight: torch.Tensor | None = None,
) -> LossOutput:
    """Diffusion-DPO over a batch of pairs (all inputs shape [P]); ``weight`` re-weights pairs (VideoDPO's alpha)."""
    inside = -0.5 * beta * ((e_w - r_w) - (e_l - r_l))
    losses = -F.logsigmoid(inside)
    loss = _mean(losses, weight)
    with torch.no_grad():
        reward_w = -0.5 * beta * (e_w - r_w)
        reward_l = -0.5 * beta * (e_l - r_l)
        metrics = {
            "dpo_loss": loss.detach(),
            "implicit_acc": ((inside > 0).float() + 0.5 * (inside == 0).float()).mean(),
            "reward_margin": (reward_w - reward_l).mean(),
            "reward_chosen": reward_w.mean(),
            "reward_rejected": reward_l.mean(),
            "err_policy_chosen": e_w.mean(),
            "err_policy_rejected": e_l.mean(),
            "err_ref_chosen": r_w.mean(),
            "err_ref_rejected": r_l.mean(),
        }
    return LossOutput(loss, metrics)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, torch.zeros_like(x)).sum() / mask.sum().clamp(min=1)


def kto_rewards(e: torch.Tensor, r: torch.Tensor, beta: float) -> torch.Tensor:
    """Diffusion-KTO's implicit reward ``-beta * (e - e_ref)`` (Diffusion-KTO Eq. 8 with the timestep factor folded
    into beta)."""
    return -beta * (e - r)


def kto(
    e: torch.Tensor,
    r: torch.Tensor,
    desirable: torch.Tensor,
    beta: float,
    lambda_d: float = 1.0,
    lambda_u: float = 1.0,
    z0: float | torch.Tensor | None = None,
) -> LossOutput:
    """Diffusion-KTO over single labelled samples (shape [N]); ``desirable`` is a bool tensor.

    ``z0`` is the reference point, estimated by the caller over a pool (:class:`RewardPool`); ``None`` takes the
    clamped mean reward of this batch itself (the definition at batch scale, used by tests and by
    ``train.kto_kl_pool: 0``)."""
    reward = kto_rewards(e, r, beta)
    if z0 is None:
        z0 = reward.mean().clamp(min=0)
    z0 = torch.as_tensor(z0, dtype=reward.dtype, device=reward.device).detach()
    des = desirable.bool()
    value = torch.where(des, torch.sigmoid(reward - z0), torch.sigmoid(z0 - reward))
    lam = torch.where(des, torch.full_like(reward, lambda_d), torch.full_like(reward, lambda_u))
    loss = (lam * (1 - value)).mean()
    with torch.no_grad():
        metrics = {
            "kto_loss": loss.detach(),
            "kto_z0": z0.float(),
            # masked means (0 for an absent class), not reward[des]: boolean indexing waits for the accelerator
            "reward_desirable": _masked_mean(reward, des),
            "reward_undesirable": _masked_mean(reward, ~des),
            "implicit_acc": ((reward > z0) == des).float().mean(),
            "err_policy": e.mean(),
            "err_ref": r.mean(),
        }
    return LossOutput(loss, metrics)


class RewardPool:
    """The KTO reference point estimated over the last ``size`` implicit rewards seen in training.

    ``z0 = max(0, mean(pool))`` (Diffusion-KTO's clamped mean). The trainer reads :meth:`z0` once before an optimizer
    step, uses it for every micro-batch of the step (so gradient accumulation gives the gradient of one large batch
    with that reference point) and then :meth:`push`-es the step's rewards (detached), dropping the oldest. The pool
    starts full of zeros, which is exact, not a guess: at step 0 the policy equals its reference (a LoRA starts with
    B = 0, a full fine-tune from a copy), so every reward is 0. Each reward in the pool was computed by a policy at most
    ``size / effective batch`` steps old. The pool is part of the resumable training state (:meth:`state`).
    """

    def __init__(self, size: int, values: list[float] | None = None):
        if size < 2:
            raise ValueError(f"a KTO reference point needs a pool of at least 2 rewards, got {size}")
        self.values: deque[float] = deque([0.0] * size if values is None else values, maxlen=size)

    def z0(self) -> float:
        return max(0.0, sum(self.values) / len(self.values))

    def push(self, rewards: torch.Tensor | list[float]) -> None:
        self.values.extend(float(x) for x in (rewards.tolist() if torch.is_tensor(rewards) else rewards))

    def state(self) -> list[float]:
        return list(self.values)


def kto_class_weights(
    n_desirable: int, n_undesirable: int, low: float = 1.0, high: float = 4 / 3
) -> tuple[float, float]:
    """``(lambda_d, lambda_u)`` by the KTO paper's rule (Ethayarajh et al. 2024, Sec. 4.2): the weighted class ratio
    ``lambda_d * n_d / (lambda_u * n_u)`` must lie in ``[low, high] = [1, 4/3]``.

    Inside the range both weights stay 1. Above it (more desirable examples) ``lambda_d`` shrinks so that the ratio is
    ``high``; below it ``lambda_u`` shrinks so that the ratio is ``low``: the nearest edge of the range, and neither
    weight above 1 (the step size does not grow). With one class absent there is nothing to balance: (1, 1).
    """
    if n_desirable <= 0 or n_undesirable <= 0:
        return 1.0, 1.0
    ratio = n_desirable / n_undesirable
    if ratio > high:
        return high / ratio, 1.0
    if ratio < low:
        return 1.0, ratio / low
    return 1.0, 1.0


def nll(e: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Denoising loss (the diffusion NLL bound up to constants and the factor :func:`nll_scale`) averaged over
    items."""
    return _mean(e, weight)


NLL_UNITS = ("likelihood", "mse")


def nll_scale(units: str, train_timesteps: int) -> float:
    """The factor that puts :func:`nll` in the preference term's units.

    ``likelihood``: ``T`` (the family's number of training timesteps). The DPO and KTO terms compare likelihood
    surrogates ``l(x) = -T * e(x)`` (module docstring); IPO's Eq. 5/6 add ``lambda * (-log p(x))`` beside them, RPO's
    way (Pang et al. 2024: the NLL a sibling of the log-ratio, not of the error), so the NLL in the same units is
    ``T * e``. At beta 5000 and T = 1000 the DPO gradient on ``e_w`` starts at ``beta / 4 = 1250`` against ``T *
    lambda_winner = 200`` for the winner NLL, the ~6:1 balance RPO has with beta 0.1 beside a per-token NLL.
    ``mse``: 1, the plain mean squared error vipo used before (at beta 5000 the NLL terms then weigh ~1e-4 of the
    preference term: measured, docs/results.md).
    """
    if units == "likelihood":
        return float(train_timesteps)
    if units == "mse":
        return 1.0
    raise ValueError(f"unknown NLL units {units!r} (known: {', '.join(NLL_UNITS)})")


#: LiFT's map from a label to the reward of its reward-weighted loss (LiFT ``CogVideo/process_reward_score.py``); a
#: sample's reward is the mean over the three dimensions
LIFT_SCORES = {"Good": 0.9, "Normal": 0.2, "Bad": 0.05}


def label_reward(labels: dict[str, str], scores: dict[str, float]) -> float:
    """LiFT's sample reward: the mean of ``scores[label]`` over the sample's per-dimension labels."""
    return sum(scores[v] for v in labels.values()) / len(labels)


def reward_weighted(e: torch.Tensor, reward: torch.Tensor) -> LossOutput:
    """LiFT's reward-weighted denoising loss: each sample's error times its critic score (no normalisation)."""
    loss = (reward.float() * e).mean()
    return LossOutput(
        loss, {"rw_loss": loss.detach(), "reward_mean": reward.float().mean().detach(), "err_policy": e.detach().mean()}
    )
