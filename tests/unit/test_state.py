"""Tests of vipo.train.state: the resumable training state (safetensors + JSON, no pickle) and the train-config hash."""

import hashlib
import json
import random

import numpy as np
import torch

from vipo.config import TrainConfig
from vipo.io import atomic
from vipo.train import state


def test_config_hash_is_sha256_of_the_sorted_json_of_its_parts():
    parts = ({"b": 2, "a": 1}, 0, 1)
    text = json.dumps(parts, sort_keys=True, default=str)
    assert state.config_hash(*parts) == hashlib.sha256(text.encode()).hexdigest()[:16] == "fec1e806e21284b6"


def test_the_train_config_hash_leaves_out_the_tracker_and_keys_round_seed_and_data():
    cfg = TrainConfig()
    h = state.train_config_hash(cfg, 0, 1, 120)
    assert h == "4606f9cb6b372301"  # pinned: run folders store it, a change would retrain every finished round
    assert state.train_config_hash(TrainConfig(tracker="tensorboard"), 0, 1, 120) == h
    others = {
        state.train_config_hash(TrainConfig(beta=cfg.beta * 2), 0, 1, 120),
        state.train_config_hash(cfg, 1, 1, 120),
        state.train_config_hash(cfg, 0, 2, 120),
        state.train_config_hash(cfg, 0, 1, 121),
        state.train_config_hash(cfg, 0, 1),
    }
    assert h not in others and len(others) == 5


def _trained():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([w], lr=0.1)
    for _ in range(2):
        (w**2).sum().backward()
        opt.step()
        opt.zero_grad()
    return w, opt


def test_a_saved_state_loads_back_exactly_with_its_rngs(tmp_path):
    w, opt = _trained()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    info = {"step": 2, "micro": 0, "position": [3, 1], "config_hash": "abc"}
    state.save(tmp_path / "state", {"w": w}, opt, info)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))  # the draws after the save
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    got = state.load(tmp_path / "state")
    assert got["info"] == info and torch.equal(got["params"]["w"], w.detach())
    sd = opt.state_dict()
    assert got["opt"]["param_groups"] == sd["param_groups"]
    for k in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(got["opt"]["state"][0][k], sd["state"][0][k])
    w2 = torch.nn.Parameter(got["params"]["w"].clone())
    opt2 = torch.optim.AdamW([w2], lr=0.1)
    opt2.load_state_dict(got["opt"])  # loads into a fresh optimizer as torch expects
    state.set_rng_state(got["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        atomic.DONE_MARKER,
        "optimizer_rng.safetensors",
        "state.json",
        "trainable.safetensors",
    ]


def test_tensors_tuples_and_arrays_survive_the_json_side():
    tensors = {}
    obj = {"t": torch.arange(3), "tup": (1, "x"), "arr": np.array([1.5, 2.5], np.float32), "lst": [1, {"k": 2}]}
    back = state._from_json(json.loads(json.dumps(state._to_json(obj, tensors, "o"))), tensors)
    assert list(tensors) == ["o.t"] and torch.equal(back["t"], obj["t"])
    assert back["tup"] == (1, "x") and back["lst"] == [1, {"k": 2}]
    assert back["arr"].dtype == np.float32 and back["arr"].tolist() == [1.5, 2.5]


def test_no_state_an_incomplete_one_or_a_half_written_one_loads_as_none(tmp_path):
    assert state.load(tmp_path / "state") is None
    half = tmp_path / f"{atomic.TMP_PREFIX}state.123"  # a save killed half-way
    half.mkdir()
    (half / "state.json").write_text("{}")
    incomplete = tmp_path / "state"
    incomplete.mkdir()
    (incomplete / "state.json").write_text("{}")  # no completion marker
    assert state.load(incomplete) is None and not half.exists()


def test_a_replacement_killed_midway_puts_the_old_state_back(tmp_path):
    w, opt = _trained()
    state.save(tmp_path / "state", {"w": w}, opt, {"step": 1})
    (tmp_path / "state").rename(tmp_path / f"{atomic.TMP_PREFIX}state.old")  # moved aside, the new one not in place
    assert state.load(tmp_path / "state")["info"] == {"step": 1}
