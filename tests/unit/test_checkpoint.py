"""The committed embedded base model: present, small, diffusers layout, loads and samples offline."""

import json

from vipo.models import WORLD_CHECKPOINT, load_model
from vipo.world import grammar


def test_committed_world_checkpoint_is_small_and_in_diffusers_layout():
    index = json.loads((WORLD_CHECKPOINT / "model_index.json").read_text())
    assert index["family"] == "world"
    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        assert (WORLD_CHECKPOINT / sub).is_dir()
    weights = list(WORLD_CHECKPOINT.rglob("*.safetensors"))
    assert weights and not list(WORLD_CHECKPOINT.rglob("*.bin"))
    total = sum(p.stat().st_size for p in WORLD_CHECKPOINT.rglob("*") if p.is_file())
    assert total <= 30 * 2**20


def test_committed_world_model_generates():
    model = load_model("world")
    cond = model.encode_prompts([grammar.INDIST[0].prompt()])
    frames = model.decode(model.sample(cond, model.encode_prompts([""]), [0], num_steps=2, guidance=3.0))
    assert frames.shape == (1, 9, 32, 32, 3)
