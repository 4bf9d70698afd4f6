"""The objectives as their references define them: caption dropout, NLL units, pair-building edge cases, the world's
real videos. (The loss branches themselves: test_losses.py.)"""

import pytest
import torch

from vipo import losses
from vipo.config import PairsConfig, TrainConfig
from vipo.data import pairs as P
from vipo.data.ledger import Ledger
from vipo.data.real import WorldRealVideos
from vipo.errors import UserError
from vipo.models.world import WorldModel
from vipo.stages import pairs as pairs_stage
from vipo.train import lora, trainer
from vipo.world import grammar


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


def test_kto_config_refuses_a_reference_point_on_fewer_than_two_rewards():
    with pytest.raises(UserError, match="kto_kl_pool"):
        TrainConfig(method="kto", kto_kl_pool=1).validate()
    with pytest.raises(UserError, match="fewer than 2"):
        TrainConfig(method="kto", kto_kl_pool=0, batch_size=1).validate()
    TrainConfig(method="kto", kto_kl_pool=0, batch_size=8).validate()  # the old micro-batch mean, on 8 items
    TrainConfig(method="kto", kto_kl_pool=128, batch_size=1).validate()
    TrainConfig(method="dpo", kto_kl_pool=1, batch_size=1).validate()  # not KTO: not asked


def test_kto_weights_auto_and_explicit():
    items = [{"desirable": True}] * 70 + [{"desirable": False}] * 30
    auto = trainer.kto_weights(TrainConfig(method="kto"), items)
    assert auto["lambda_desirable"] == pytest.approx(4 / 7) and auto["lambda_undesirable"] == 1.0
    assert auto["weighted_ratio"] == pytest.approx(4 / 3)
    fixed = trainer.kto_weights(TrainConfig(method="kto", lambda_desirable=1.0, lambda_undesirable=1.0), items)
    assert (fixed["lambda_desirable"], fixed["lambda_undesirable"]) == (1.0, 1.0)


# -- pairs -------------------------------------------------------------------------------------------------------


def test_a_prompt_with_no_consistent_verdict_gets_no_pair():
    v = {}
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):  # a critic that always answers "A"
        v[(x, y)] = v[(y, x)] = "A"
    pairs, stats = P.build_pairs({0: ["a", "b", "c"]}, v, {"a": 1.0, "b": 0.5, "c": 0.0})
    assert pairs == [] and stats.dropped_inconsistent == 1 and stats.inconsistent == 3
    # with no pairwise verdict asked at all (pointwise-only judging) the scores still rank the prompt
    pairs, stats = P.build_pairs({0: ["a", "b", "c"]}, {}, {"a": 1.0, "b": 0.5, "c": 0.0})
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "c")] and stats.dropped_inconsistent == 0


def _judgment(key, sid, labels=None, error=None, **more):
    row = {"key": key, "round": 1, "kind": "pointwise", "prompt_id": 0, "a": sid, "critic": "test", "raw": "x"}
    if error:
        return dict(row, error=error, **more)
    return dict(row, labels=labels, reasons={}, scores={}, overall=more.pop("overall"), **more)


def test_an_unparseable_sample_is_left_out_of_ranking_not_scored_zero(tmp_path):
    good = {"semantic": "Good", "fidelity": "Good", "motion": "Good"}
    mid = {"semantic": "Normal", "fidelity": "Good", "motion": "Good"}
    with Ledger(tmp_path / "l.sqlite") as ledger:
        for i in range(3):
            ledger.add_sample(
                {
                    "id": f"s{i}",
                    "round": 1,
                    "prompt_id": 0,
                    "sample_index": i,
                    "prompt": "p",
                    "seed": i,
                    "file_name": f"s{i}.mp4",
                }
            )
        ledger.add_judgment(_judgment("pw:s0", "s0", good, overall=1.0))
        ledger.add_judgment(_judgment("pw:s1", "s1", mid, overall=0.8))
        ledger.add_judgment(_judgment("pw:s2", "s2", error="no verdict"))
        info = pairs_stage.build(ledger, 1, tmp_path, PairsConfig())
        pairs = ledger.rows("pairs", 1)
    assert info["unparseable_samples"] == 1
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("s0", "s1")]  # not s2 with a "gap" of 1.0


# -- the world's real videos -------------------------------------------------------------------------------------


def test_world_real_videos_carry_the_bases_caption_noise():
    old = WorldRealVideos(9, 32).draw(200, 7)
    clean = WorldRealVideos(9, 32, 0.0).draw(200, 7)
    assert old[0] == clean[0] and (old[1] == clean[1]).all()  # 0 is the old stream, exactly
    noisy = WorldRealVideos(9, 32, 0.3).draw(200, 7)
    assert (noisy[1] == clean[1]).all()  # the same clips
    truth = [grammar.parse(p) for p in clean[0]]
    named = [grammar.parse(p) for p in noisy[0]]
    wrong = sum(a != b for a, b in zip(truth, named)) / 200
    assert 0.55 < wrong < 0.75  # 1 - 0.7^3 = 0.657 of captions name some attribute wrongly
    assert not any(a in grammar.HELDOUT for a in named)  # never a held-out combination


def test_kto_pool_is_saved_in_the_resumable_state():
    pool = losses.RewardPool(8)
    pool.push([1.0, 2.0])
    assert losses.RewardPool(8, pool.state()).z0() == pytest.approx(3.0 / 8)


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
