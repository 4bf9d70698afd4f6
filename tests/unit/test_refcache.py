"""Cached reference errors (train.ref_cache): the loss on a cached draw is the live loss on the same draw (DPO and
KTO, LoRA and full fine-tune); draws are fixed per (item, k); the pass resumes and is keyed; a round trains with no
reference forward in its steps."""

import dataclasses
import shutil

import pytest
import torch

from vipo.config import RunConfig, TrainConfig, load
from vipo.data.ledger import Ledger
from vipo.errors import UserError
from vipo.models import policy as policies
from vipo.models.world import WorldModel
from vipo.train import refcache, trainer
from vipo.world import grammar


def _round(model, method, n=4):
    """Items of a tiny round: DPO pairs or KTO examples over random latents, and the conditioning cache."""
    g = torch.Generator().manual_seed(0)
    prompts = [a.prompt() for a in grammar.INDIST[:n]]
    latents = {f"s{i}": torch.randn(model.frames, 3, model.side, model.side, generator=g) for i in range(2 * n)}
    with torch.no_grad():
        enc = model.encode_prompts(prompts + [""])
    cache = {p: {k: v[i : i + 1] for k, v in enc.items()} for i, p in enumerate(prompts + [""])}
    if method == "dpo":
        items = [
            {
                "chosen": {"id": f"s{2 * i}", "prompt": p},
                "rejected": {"id": f"s{2 * i + 1}", "prompt": p},
                "weight": 1.0,
            }
            for i, p in enumerate(prompts)
        ]
    else:
        items = [{"sample": {"id": f"s{i}", "prompt": prompts[i // 2]}, "desirable": i % 2 == 0} for i in range(2 * n)]
    return items, cache, (lambda s: latents[s["id"]])


@pytest.mark.parametrize("method,finetune", [("dpo", "lora"), ("kto", "lora"), ("dpo", "full"), ("kto", "full")])
def test_cached_loss_equals_the_live_loss_on_the_same_draws(tmp_path, method, finetune):
    model = WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)
    cfg = TrainConfig(
        method=method,
        finetune=finetune,
        ref_cache=2,
        epochs=3,
        batch_size=2,
        caption_dropout=0.5,
        lambda_real=0,
        kto_kl_pool=0,
    )
    params, frozen = trainer.trainable(model, cfg, seed=0)
    with torch.no_grad():  # a policy away from its reference, so the comparison means something
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ctx = trainer.StepContext(model, cfg, frozen, torch.device("cpu"))
    items, cache, latent = _round(model, method)
    errors, draws_for = trainer.reference_cache(ctx, items, cache, latent, tmp_path, 0, 1, "ref", progress=False)
    assert errors.shape == (len(items), 2, 2 if method == "dpo" else 1)
    assert (tmp_path / refcache.FILE).is_file()
    idx, k = [2, 0], 1
    draws = draws_for(idx, [k] * len(idx))
    got, grads = [], []
    for ref in (errors[idx, k].T.reshape(-1), None):  # cached, then the reference run live on the same draws
        for p in params:
            p.grad = None
        terms = trainer._micro_loss(
            ctx, [items[i] for i in idx], cache, latent, torch.Generator().manual_seed(5), None, 0, None, draws, ref
        )
        terms.total.backward()
        got.append(terms.total.detach())
        grads.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
    torch.testing.assert_close(got[0], got[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    if method == "dpo":
        assert abs(got[0].item() - 0.6931) > 1e-3  # not log 2: the policy is not its reference


def test_a_draw_is_fixed_per_item_and_k_whatever_the_batch():
    model = WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)
    cfg = TrainConfig(ref_cache=3, caption_dropout=0.5, timestep_window=[0.5, 1.0])
    a = refcache.draw(model, cfg, 0, 1, "s0|s1", 2, (9, 3, 32, 32))
    b = refcache.draw(model, cfg, 0, 1, "s0|s1", 2, (9, 3, 32, 32))
    assert torch.equal(a.noise, b.noise) and torch.equal(a.t, b.t) and a.drop == b.drop
    other = [refcache.draw(model, cfg, 0, 1, "s0|s1", k, (9, 3, 32, 32)) for k in range(3)]
    assert not torch.equal(other[0].noise, other[1].noise)
    assert not torch.equal(refcache.draw(model, cfg, 1, 1, "s0|s1", 2, (9, 3, 32, 32)).noise, a.noise)  # run seed
    ts = torch.cat([refcache.draw(model, cfg, 0, 1, f"s{i}", 0, (1,)).t for i in range(200)])
    assert ts.min() >= 500 and ts.max() < 1000  # the timestep window
    drops = [refcache.draw(model, cfg, 0, 1, f"s{i}", 0, (1,)).drop for i in range(200)]
    assert 60 < sum(drops) < 140


def test_the_pass_resumes_after_a_kill_and_is_keyed(tmp_path, monkeypatch):
    monkeypatch.setattr(refcache, "SAVE_EVERY_S", 0.0)  # save after every micro-batch
    calls = []

    def reference_errors(idx, ks, fail_at=None):
        calls.append(len(idx))
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("killed")
        return torch.tensor([[10.0 * i + k, -1.0 * i - k] for i, k in zip(idx, ks)])

    path = tmp_path / refcache.FILE
    with pytest.raises(RuntimeError):
        refcache.build(path, "key-a", 5, 2, 2, lambda i, k: reference_errors(i, k, fail_at=3), 2, progress=False)
    assert path.is_file() and sum(calls[:2]) == 4  # two micro-batches were saved before the kill
    calls.clear()
    got = refcache.build(path, "key-a", 5, 2, 2, reference_errors, 2, progress=False)
    assert sum(calls) == 10 - 4  # only what was missing
    want = torch.tensor([[[10.0 * i + k, -1.0 * i - k] for k in range(2)] for i in range(5)])
    assert torch.equal(got, want)
    calls.clear()
    assert torch.equal(refcache.build(path, "key-a", 5, 2, 2, reference_errors, 2, progress=False), want)
    assert calls == []  # complete: read back
    refcache.build(path, "key-b", 5, 2, 2, reference_errors, 2, progress=False)
    assert sum(calls) == 10  # another key: computed again


def test_the_key_follows_what_the_errors_depend_on():
    items = [{"sample": {"id": "a"}}, {"sample": {"id": "b"}}]
    base = refcache.key(TrainConfig(ref_cache=4), 0, 1, items, "ref", 4)
    assert base == refcache.key(TrainConfig(ref_cache=4, lr=1.0, epochs=9), 0, 1, items, "ref", 4)  # not these
    for other in (
        refcache.key(TrainConfig(ref_cache=4, caption_dropout=0.2), 0, 1, items, "ref", 4),
        refcache.key(TrainConfig(ref_cache=4, timestep_window=[0.5, 1.0]), 0, 1, items, "ref", 4),
        refcache.key(TrainConfig(ref_cache=4), 1, 1, items, "ref", 4),
        refcache.key(TrainConfig(ref_cache=4), 0, 2, items, "ref", 4),
        refcache.key(TrainConfig(ref_cache=4), 0, 1, items[::-1], "ref", 4),
        refcache.key(TrainConfig(ref_cache=4), 0, 1, items, "another reference", 4),
        refcache.key(TrainConfig(ref_cache=4), 0, 1, items, "ref", 2),
    ):
        assert other != base


def test_ref_cache_is_validated():
    with pytest.raises(UserError, match="ref_cache"):
        TrainConfig(ref_cache=-1).validate()
    with pytest.raises(UserError, match="rwr has no reference"):
        TrainConfig(method="rwr", ref_cache=2).validate()
    TrainConfig(method="kto", ref_cache=2).validate()
    assert refcache.draws_used(TrainConfig(ref_cache=4, epochs=2.5)) == 3


def test_a_round_with_a_cache_runs_no_reference_forward_in_its_steps(tmp_path, tiny_run_dir, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    for p in (run / "round-1" / "train_log.jsonl", run / "round-1" / "train_state"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    entered = []
    real_reference = trainer.StepContext.reference
    monkeypatch.setattr(trainer.StepContext, "reference", lambda self: (entered.append(1), real_reference(self))[1])
    cfg = load(RunConfig, run / "config.yaml")
    policy = policies.load_policy(cfg.model)
    train = dataclasses.replace(cfg.train, ref_cache=2, epochs=2.0, real_batch_size=0)
    with Ledger(run / "ledger.sqlite") as ledger:
        summary = trainer.train_round(policy, train, ledger, 1, run / "round-1", run_seed=cfg.seed, progress=False)
        n_items = summary["items"]
    assert summary["ref_cache_draws"] == 2 and (run / "round-1" / refcache.FILE).is_file()
    # the reference ran only in the pass: ceil(items * 2 draws / batch) micro-batches, none in the steps
    assert len(entered) == -(-n_items * 2 // train.batch_size)
    assert summary["first_loss"] == summary["first_loss"]  # finite
