"""data.cache: the text conditioning cache encodes each prompt once and is keyed by the text encoder."""

import torch

from vipo.data.cache import TextCache

PROMPTS = ["a red circle moving left", "a blue square moving up"]


def test_text_cache_encodes_each_prompt_once(tmp_path, wan):
    calls = []
    wan.pipe.text_encoder.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    cache = TextCache(tmp_path, wan.cache_key("text"))
    cond = cache.conditioning(wan, PROMPTS + PROMPTS[:1], torch.device("cpu"))
    assert calls == [2]  # the two distinct prompts, in one batch
    with torch.no_grad():
        want = wan.encode_prompts(PROMPTS)
    assert torch.allclose(cond["prompt_embeds"][:2], want["prompt_embeds"], atol=1e-6)
    calls.clear()
    again = TextCache(tmp_path, wan.cache_key("text")).conditioning(wan, PROMPTS[::-1], torch.device("cpu"))
    assert calls == [] and torch.equal(again["prompt_embeds"][0], cond["prompt_embeds"][1])
    with torch.no_grad():
        wan.pipe.text_encoder.shared.weight.mul_(2)  # a different text encoder: a different cache
    assert wan.cache_key("text") != cache.folder.name
