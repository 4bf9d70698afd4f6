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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import dist, faults, seeds
from ..config import GenerateConfig
from ..data.cache import TextCache, save_latent
from ..data.ledger import Ledger
from ..data.prompts import warn_long
from ..errors import UserError
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


def encode(model: VideoModel, prompts: list[str], text_cache: TextCache | None = None) -> dict[str, torch.Tensor]:
    """The prompts' conditioning: from the cache (computing only what it lacks) or straight from the model."""
    if text_cache is None:
        return model.encode_prompts(prompts)
    return text_cache.conditioning(model, prompts, next(model.denoiser.parameters()).device)


def prepare_text(model: VideoModel, prompts: list[str], text_cache: TextCache | None) -> None:
    """Put every prompt a stage will read (and the empty prompt) into the text cache before sampling starts, on the
    main rank: the cache's bytes then do not depend on how ranks split the work, and no two ranks write one file."""
    if text_cache is not None:
        if dist.is_main():
            text_cache.ensure(model, sorted(set(prompts) | {""}))
        dist.barrier()


def batches(items: list, size: int) -> list[list]:
    """The one-process run's sampler batches over ``items``: ranks take whole batches of this grid, so every video
    is sampled in the same batch (hence with the same bytes) whatever the number of processes."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def generate(
    model: VideoModel,
    prompts: list[PromptItem],
    out_dir: Path,
    ledger: Ledger,
    round_: int,
    cfg: GenerateConfig,
    run_seed: int,
    keep_latents: bool = True,
    progress: bool = True,
    seed_fn=None,
    text_cache: TextCache | None = None,
    videos: str = "samples",
    background=None,
) -> list[dict]:
    """Generate what is missing and return the round's sample rows (ledger order). The mp4s and metadata.jsonl go
    to ``out_dir/videos`` (a round's ``samples/``), or straight into ``out_dir`` when ``videos`` is empty.

    Under a launcher the batches still to do are sharded across ranks (batch ``j`` to rank ``j % N``); each rank
    writes its videos and latents, and the main rank commits each round of batches to the ledger in batch order.
    ``background`` (a :class:`~vipo.stages.judge.BackgroundJudge`) judges each prompt once its samples are
    committed, beside the sampling; its results are committed with the next round of batches."""
    out_dir = Path(out_dir)
    video_dir = out_dir / videos if videos else out_dir
    if dist.is_main():
        video_dir.mkdir(parents=True, exist_ok=True)
        if keep_latents:
            (out_dir / "latents").mkdir(parents=True, exist_ok=True)
        atomic.clean_temp(video_dir)
        atomic.clean_temp(out_dir / "latents")
    seed_fn = seed_fn or (lambda pid, k: seeds.sample_seed(run_seed, round_, pid, k))
    done = dist.from_main(lambda: ledger.keys("samples", round_))  # (also: no rank writes before the cleaning)
    grid = batches([(p, k) for p in prompts for k in range(cfg.samples_per_prompt)], cfg.batch_size)
    todo = [b for b in grid if any(sample_id(round_, p.prompt_id, k) not in done for p, k in b)]
    missing = sum(sample_id(round_, p.prompt_id, k) not in done for b in todo for p, k in b)
    if todo:
        warn_long(model, sorted({p.prompt for b in todo for p, _ in b}))
        log.info(
            "round %d: generating %d of %d samples%s",
            round_,
            missing,
            len(prompts) * cfg.samples_per_prompt,
            f" on {dist.world()} processes" if dist.world() > 1 else "",
        )
        prepare_text(model, [p.prompt for b in todo for p, _ in b], text_cache)
    uncond = encode(model, [""], text_cache) if todo else None
    bar = tqdm(total=missing, disable=not progress or not dist.is_main(), desc=f"generate r{round_}", unit="video")

    def work(chunk) -> tuple[list, list]:
        rows = sample(chunk)
        return rows, background.take() if background is not None else []

    def sample(chunk) -> list:
        if chunk is None:  # this rank has no batch in the last round
            return []
        sd = [seed_fn(p.prompt_id, k) for p, k in chunk]
        with torch.no_grad():
            cond = encode(model, [p.prompt for p, _ in chunk], text_cache)
            latents = faults.value("generate.latents", model.sample(cond, uncond, sd, cfg.num_steps, cfg.guidance))
            frames = model.decode(latents)
        rows = []
        for (p, k), seed, lat, fr in zip(chunk, sd, latents, frames):
            sid = sample_id(round_, p.prompt_id, k)
            if sid in done:  # (a batch committed in part, e.g. under another batch_size: only its missing videos)
                continue
            video = f"{videos}/{sid}.mp4" if videos else f"{sid}.mp4"
            write_mp4(out_dir / video, fr, fps=cfg.fps)
            row = {
                "id": sid,
                "round": round_,
                "prompt_id": p.prompt_id,
                "sample_index": k,
                "prompt": p.prompt,
                "seed": seed,
                "split": p.split,
                "file_name": video,
                "num_steps": cfg.num_steps,
                "guidance": cfg.guidance,
                "frames": int(fr.shape[0]),
            }
            if keep_latents:
                row["latent"] = f"latents/{sid}.safetensors"
                save_latent(out_dir / row["latent"], lat)
            rows.append((row, bool(torch.isfinite(lat).all())))
        faults.point("generate.after_batch")
        return rows

    def commit(results: list[tuple]) -> list[dict]:
        rows = [r for got, _ in results for r in got]  # rank order = batch order = the one-process order
        with ledger.transaction():
            for row, finite in rows:
                ledger.add_sample(row)
                if not finite:
                    log.warning("round %d: %s has a non-finite latent; quarantined", round_, row["id"])
                    ledger.quarantine(round_, row["id"], "non-finite latent")
        for _ in rows:
            faults.point("generate.after_commit")
        if background is not None:
            background.commit([judged for _, judged in results])
        return [row for row, _ in rows]

    try:
        for s in range(dist.steps(len(todo))):
            mine = dist.shard(todo[s * dist.world() : (s + 1) * dist.world()])
            new, stop = dist.step(lambda: work(mine[0] if mine else None), commit, faults.term_requested)
            bar.update(len(new))
            if background is not None:
                background.committed(new)
            if stop:
                raise faults.Terminated(f"round {round_} generate")
        if background is not None:
            background.finish()
    finally:
        if background is not None:
            background.close()
    bar.close()
    rows = dist.from_main(lambda: ledger.rows("samples", round_))
    if dist.is_main():
        _write_metadata(video_dir, rows)
    return rows


def _write_metadata(video_dir: Path, rows: list[dict]) -> None:
    """``metadata.jsonl`` beside the videos (file_name relative to the folder holding it, as datasets expects)."""
    import json

    lines = []
    for r in rows:
        meta = {
            "file_name": Path(r["file_name"]).name,
            "prompt": r["prompt"],
            "seed": r["seed"],
            "prompt_id": r["prompt_id"],
            "sample_index": r["sample_index"],
            "id": r["id"],
        }
        if r.get("split"):
            meta["split"] = r["split"]
        lines.append(json.dumps(meta) + "\n")
    atomic.write_text(video_dir / "metadata.jsonl", "".join(lines))


PROVENANCE = "provenance.json"
LEDGER = "ledger.sqlite"


def standalone(
    model_spec: str,
    lora: str | None,
    prompts: list[str],
    out: Path,
    cfg: GenerateConfig,
    seed: int,
    device: str,
    dtype: str = "float32",
    progress: bool = True,
    force: bool = False,
) -> list[dict]:
    """``vipo generate --out DIR``: mp4s and ``metadata.jsonl`` straight into ``DIR`` (Hugging Face's videofolder
    layout), resumable through ``DIR/ledger.sqlite``.

    ``DIR/provenance.json`` records what made the videos (the model's and adapter's content hashes, prompts, seed,
    sampler options); run again with other ones, it refuses naming the changed fields, and ``force`` deletes the
    videos it made (nothing else in the folder) and starts over. The inputs are checked before anything is written,
    and the folder is locked while it is written.
    """
    from ..config import to_dict
    from ..io import provenance
    from ..io.lock import folder_lock
    from ..models import check_model
    from ..models.policy import load_sampler, policy_hash

    path, _ = check_model(model_spec, dtype=dtype)
    if lora is not None and not Path(lora).is_dir():
        raise UserError(f"--lora {lora}: not a folder (a vipo round checkpoint or a diffusers LoRA folder)")
    # the model, its adapter and the clip size load and check (on every rank) before anything is written: a typo in
    # --frames must not leave a record that refuses the corrected command
    policy = load_sampler(model_spec, lora, cfg, device=device, dtype=dtype)
    out = Path(out)

    def take() -> None:  # the main rank (under a launcher): the lock, the checks, the record
        held.enter_context(folder_lock(out))
        record = {
            "model_sha256": policy_hash(path)[:16],
            "lora_sha256": policy_hash(lora)[:16] if lora else None,
            "model_dtype": dtype,
            "seed": seed,
            "prompts": list(prompts),
            "generate": {k: v for k, v in to_dict(cfg).items() if k != "max_quarantined"},
        }
        if not (out / PROVENANCE).is_file() and any((out / f).exists() for f in ("metadata.jsonl", LEDGER)):
            if not force:
                raise UserError(
                    f"--out {out}: holds a metadata.jsonl or {LEDGER} with no {PROVENANCE} (from "
                    "another tool or an older vipo); choose another --out, or pass --force to replace "
                    "them"
                )
            _start_over(out)
        provenance.check(
            out / PROVENANCE,
            record,
            force,
            start_over=lambda: _start_over(out),
            refusal=f"{out} holds videos made with other inputs ({{changes}}); choose another --out, "
            "or pass --force to delete them and start over",
            forced=f"--force: deleting the videos in {out} and starting over ({{changes}})",
        )

    with ExitStack() as held:
        dist.from_main(take)
        items = [PromptItem(i, p) for i, p in enumerate(prompts)]
        with dist.on_main(Ledger, out / LEDGER) as ledger:  # only the main rank opens it (vipo.dist says why)
            return generate(policy, items, out, ledger, 0, cfg, seed, keep_latents=False, progress=progress, videos="")


def _start_over(out: Path) -> None:
    """Delete what an earlier ``vipo generate`` wrote into ``out`` (the videos its ledger lists, metadata.jsonl,
    the ledger): never another file of the folder."""
    ledger = out / LEDGER
    if ledger.is_file():
        from ..io.paths import inside

        with Ledger(ledger) as led:
            names = [r["file_name"] for r in led.rows("samples")]
        for name in names:
            inside(out, name, f"{ledger}: file_name").unlink(missing_ok=True)
        for sub in {Path(n).parent for n in names if Path(n).parent != Path(".")}:  # an older layout's samples/
            (out / sub / "metadata.jsonl").unlink(missing_ok=True)
            if (out / sub).is_dir() and not any((out / sub).iterdir()):
                (out / sub).rmdir()
    for name in ("metadata.jsonl", LEDGER, LEDGER + "-wal", LEDGER + "-shm", PROVENANCE):
        (out / name).unlink(missing_ok=True)
