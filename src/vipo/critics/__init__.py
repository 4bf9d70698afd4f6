"""Critics: the registry of critic names and the builder that makes one from the judge options.

:data:`CRITICS` maps a name (``judge.critic``) to its class, as ``"module:Class"`` imported on use (the vlm and
reward critics import transformers). Each class carries its options as ``Critic.Options`` (vipo/critics/options.py)
and is made from them by ``Critic.from_config``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import config as _config  # noqa: F401  (config composes JudgeConfig from critics.options: load it first)

if TYPE_CHECKING:
    from .base import Critic

#: critic name -> "module:Class" (imported when the critic is built)
CRITICS: dict[str, str] = {
    "world": "vipo.critics.world:WorldCritic",
    "pixelstats": "vipo.critics.pixelstats:PixelStatsCritic",
    "vlm": "vipo.critics.vlm:VLMCritic",
    "openai": "vipo.critics.openai:OpenAICritic",
    "human": "vipo.critics.human:HumanCritic",
    "ensemble": "vipo.critics.ensemble:EnsembleCritic",
    "omniscore": "vipo.critics.omniscore:OmniScoreCritic",
    "reward": "vipo.critics.reward:RewardCritic",
    "learned": "vipo.critics.learned:LearnedWorldCritic",
}


def critic_class(name: str) -> type[Critic]:
    """The class registered as ``name``; an unknown name is one line listing the known ones."""
    import importlib

    from ..errors import UserError
    from .options import current_name

    name = current_name(name)
    if name not in CRITICS:
        raise UserError(f"judge.critic: unknown critic {name!r} (known: {', '.join(CRITICS)})")
    module, cls = CRITICS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build(cfg: Any) -> Critic:
    """The critic ``cfg.critic`` names, made from its options picked out of the flat judge config ``cfg``."""
    return critic_class(cfg.critic).from_config(cfg)
