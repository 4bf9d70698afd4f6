"""Tests of vipo.models.cogvideox."""

import torch
from family_helpers import PROMPTS, _cond
from tiny_families import VIDEO  # tests/ is on sys.path (rootdir conftest)

from vipo import losses
from vipo.models import load_model


def test_cogvideox_velocity_target_with_and_without_rotary_embeddings(tmp_path, tiny_family_dir):
    """The scheduler's velocity is the losses' v target; 2B-style (sincos positions) and 5B-style (rotary)
    transformers both train."""
    import tiny_families

    rotary = load_model(str(tiny_family_dir("cogvideox")))
    assert rotary.pipe.transformer.config.use_rotary_positional_embeddings
    assert type(rotary.pipe.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert rotary.pipe.scheduler.config.timestep_spacing == "trailing"
    sched = rotary.pipe.scheduler
    x0, noise, t = torch.randn(3, 3, 4, 4, 4), torch.randn(3, 3, 4, 4, 4), torch.tensor([0, 400, 999])
    ac = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)  # the scheduler keeps float64
    want = losses.target("v_prediction", x0, noise, ac.sqrt(), (1 - ac).sqrt())
    assert torch.allclose(sched.get_velocity(x0, noise, t), want, atol=1e-6)
    tiny_families.cogvideox(rotary=False).save_pretrained(tmp_path / "plain")
    plain = load_model(str(tmp_path / "plain"))
    assert not plain.pipe.transformer.config.use_rotary_positional_embeddings
    plain.frames, plain.height, plain.width = VIDEO["frames"], VIDEO["height"], VIDEO["width"]
    for model in (rotary, plain):
        cond = _cond(model, PROMPTS + PROMPTS[:1])
        pred, target = model.predict_and_target(x0, cond, noise, t)
        assert pred.shape == target.shape == x0.shape and torch.allclose(target, want, atol=1e-6)
