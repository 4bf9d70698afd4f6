"""models.pipeline: the real families' VAE memory options (tiling, slicing) decode what the plain VAE decodes."""

import numpy as np
import torch

from vipo.models import load_model

PROMPTS = ["a red circle moving left", "a blue square moving up"]


def test_vae_tiling_and_slicing_decode(tiny_family_dir):
    for family in ("cogvideox", "wan", "ltx"):
        model = load_model(str(tiny_family_dir(family)))
        with torch.no_grad():
            lat = model.sample(model.encode_prompts(PROMPTS), model.encode_prompts([""]), [1, 2], 2, 3.0)
        want = model.decode(lat)
        model.vae_memory(tiling=True, slicing=True)
        assert model.vae.use_tiling and model.vae.use_slicing
        if family != "cogvideox":  # its tiles scale with the VAE's sample size: at 32 pixels they overlap wrongly
            assert np.abs(model.decode(lat).astype(int) - want.astype(int)).max() <= 1, family  # under a tile
