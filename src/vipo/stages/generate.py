"""``generate``: K samples per prompt from the current policy, with recorded seeds, mp4s and final latents.

Each sample's seed derives from (run seed, round, prompt id, sample index), so any sample can be regenerated alone.
The sampler's final latents are kept (safetensors) so training never re-encodes generated videos, and with a
:class:`TextCache` each prompt's conditioning is stored for training (and later rounds) to reuse. Samples already
in the ledger are skipped: re-running after a kill only generates what is missing. A sample whose latent is not
finite is recorded and quarantined in the same transaction (no later stage uses it); each row keeps its frame count so
readers can tell a truncated video.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .. import faults, seeds
from ..config import GenerateConfig
from ..data.cache import TextCache
from ..data.ledger import Ledger
from ..data.prompts import warn_long
from ..io import atomic
from ..io.video import write_mp4
from ..models.base import VideoModel

log = logging.getLogger(__name__)


@dataclass
class PromptItem:
    prompt_id: int
    prompt: str
    split: str = ""


def sample_id(round_: int, prompt_id: int, index: int) -> str:
    return f"r{round_}-p{prompt_id:04d}-s{index}"


def save_latent(path: Path, latent: torch.Tensor) -> None:
    with atomic.atomic_path(path) as tmp:
        save_file({"latent": latent.contiguous()}, str(tmp))


def load_latent(path: Path) -> torch.Tensor:
    return load_file(str(path))["latent"]


def encode(model: VideoModel, prompts: list[str], text_cache: TextCache | None = None) -> dict[str, torch.Tensor]:
    """The prompts' conditioning: from the cache (computing only what it lacks) or straight from the model."""
    if text_cache is None:
        return model.encode_prompts(prompts)
    return text_cache.conditioning(model, prompts, next(model.denoiser.parameters()).device)


def generate(model: VideoModel, prompts: list[PromptItem], out_dir: Path, ledger: Ledger, round_: int,
             cfg: GenerateConfig, run_seed: int, keep_latents: bool = True, progress: bool = True,
             seed_fn=None, text_cache: TextCache | None = None) -> list[dict]:
    """Generate what is missing and return the round's sample rows (ledger order)."""
    out_dir = Path(out_dir)
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    if keep_latents:
        (out_dir / "latents").mkdir(parents=True, exist_ok=True)
    atomic.clean_temp(out_dir / "samples")
    atomic.clean_temp(out_dir / "latents")
    seed_fn = seed_fn or (lambda pid, k: seeds.sample_seed(run_seed, round_, pid, k))
    done = ledger.keys("samples", round_)
    todo = [(p, k) for p in prompts for k in range(cfg.samples_per_prompt)
            if sample_id(round_, p.prompt_id, k) not in done]
    if todo:
        warn_long(model, [p.prompt for p, _ in todo])
        log.info("round %d: generating %d of %d samples", round_, len(todo), len(prompts) * cfg.samples_per_prompt)
    uncond = encode(model, [""], text_cache)
    bar = tqdm(total=len(todo), disable=not progress, desc=f"generate r{round_}", unit="video")
    for i in range(0, len(todo), cfg.batch_size):
        chunk = todo[i:i + cfg.batch_size]
        sd = [seed_fn(p.prompt_id, k) for p, k in chunk]
        with torch.no_grad():
            cond = encode(model, [p.prompt for p, _ in chunk], text_cache)
            latents = faults.value("generate.latents", model.sample(cond, uncond, sd, cfg.num_steps, cfg.guidance))
            frames = model.decode(latents)
        rows = []
        for (p, k), seed, lat, fr in zip(chunk, sd, latents, frames):
            sid = sample_id(round_, p.prompt_id, k)
            video = f"samples/{sid}.mp4"
            write_mp4(out_dir / video, fr, fps=cfg.fps)
            row = {"id": sid, "round": round_, "prompt_id": p.prompt_id, "sample_index": k, "prompt": p.prompt,
                   "seed": seed, "split": p.split, "file_name": video, "num_steps": cfg.num_steps,
                   "guidance": cfg.guidance, "frames": int(fr.shape[0])}
            if keep_latents:
                row["latent"] = f"latents/{sid}.safetensors"
                save_latent(out_dir / row["latent"], lat)
            rows.append(row)
        with ledger.transaction():
            for row, lat in zip(rows, latents):
                ledger.add_sample(row)
                if not torch.isfinite(lat).all():
                    log.warning("round %d: %s has a non-finite latent; quarantined", round_, row["id"])
                    ledger.quarantine(round_, row["id"], "non-finite latent")
        for _ in rows:
            faults.point("generate.after_commit")
        bar.update(len(chunk))
        faults.check_term(f"round {round_} generate")
    bar.close()
    rows = ledger.rows("samples", round_)
    _write_metadata(out_dir, rows)
    return rows


def _write_metadata(out_dir: Path, rows: list[dict]) -> None:
    """``metadata.jsonl`` beside the videos (file_name relative to the folder holding it, as datasets expects)."""
    import json

    lines = []
    for r in rows:
        meta = {"file_name": Path(r["file_name"]).name, "prompt": r["prompt"], "seed": r["seed"],
                "prompt_id": r["prompt_id"], "sample_index": r["sample_index"], "id": r["id"]}
        if r.get("split"):
            meta["split"] = r["split"]
        lines.append(json.dumps(meta) + "\n")
    atomic.write_text(out_dir / "samples" / "metadata.jsonl", "".join(lines))
