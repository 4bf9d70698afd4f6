"""``vipo eval DIR``: VBench-style metrics on any folder of videos (mp4 + ``metadata.jsonl`` with file_name, prompt).

Backends:

- ``builtin`` (default): the weight-free temporal flickering, motion smoothness and dynamic degree, always; subject
  consistency (DINO), background consistency (CLIP), aesthetic quality (CLIP ViT-L/14 + the LAION predictor),
  imaging quality (MUSIQ, with pyiqa installed) and the X-CLIP stand-in for overall consistency when the judge options
  (``--dino``, ``--clip``, ``--aesthetic-clip``, ``--aesthetic-head``, ``--musiq``, ``--xclip``, or the same keys in
  ``--config``) give their local paths; the others are skipped and the output says which and why. The omniscore
  critic's own functions measure them (:mod:`vipo.critics.omniscore` and :mod:`vipo.critics.features`, one
  implementation; their docstrings say how each compares with VBench's);
- ``vbench``: the ``vbench`` package when it is installed (it fetches its own model weights), in custom-input mode;
  clips of 5 s or more go to VBench-Long (``vbench2_beta_long``), which VBench's authors require for such clips.

Outputs in ``--out``: ``{name}_eval_results.json`` in VBench's layout (``{dimension: [mean, [{video_path,
video_results}, ...]]}``) and ``{name}_final_score.json`` with VBench's ``total score`` / ``quality score`` /
``semantic score`` (min-max normalized with VBench's constants, dynamic degree weighted 0.5, Total = (4 Quality +
Semantic) / 5; Total is Quality alone while no semantic dimension is measured), every dimension's normalized score,
``measured`` and ``skipped`` (dimension -> why) and, for a stand-in such as ``overall_consistency_xclip``, a note.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np

from .. import faults
from ..critics import omniscore
from ..data.folders import folder_samples, sample_frames
from ..errors import UserError
from ..io import atomic
from ..io.hashing import file_digest
from ..io.lock import folder_lock
from ..io.paths import inside

log = logging.getLogger(__name__)
LONG_SECONDS = 5.0  # VBench-Long from this clip length on


def clip_seconds(path: Path) -> float:
    """The clip's length from its container; a file that is not a readable video is refused with one line."""
    try:
        with av.open(str(path)) as box:
            if not box.streams.video:
                raise UserError(f"{path}: no video stream")
            s = box.streams.video[0]
            if s.duration and s.time_base:
                return float(s.duration * s.time_base)
            return float(s.frames / s.average_rate) if s.frames and s.average_rate else 0.0
    except av.error.FFmpegError as e:  # corrupt, truncated, empty or not a video at all
        raise UserError(f"{path}: unreadable video ({type(e).__name__}: {e})") from None


def vbench_samples(root: Path) -> list[dict]:
    """A folder without metadata.jsonl: its videos named as VBench names them (``{prompt}-{index}.mp4``)."""
    from ..data.prompts import vbench_prompt

    got = [
        {"file_name": inside(root, p.name, f"{root}: {p.name}").name, "prompt": vbench_prompt(p.name)}
        for p in sorted(Path(root).glob("*.mp4"))
    ]
    if not got or any(s["prompt"] is None for s in got):
        raise UserError(
            f"{root}: no metadata.jsonl (file_name, prompt per line) and not every mp4 is named as "
            "VBench names them ('prompt-index.mp4')"
        )
    return got


def final_score(means: dict[str, float]) -> dict:
    """VBench's aggregate of per-dimension means (the keys of ``scripts/cal_final_score.py``)."""
    norm = omniscore.normalized({k: v for k, v in means.items() if k in omniscore.NORMALIZE})
    agg = omniscore.vbench_scores(norm)
    return {
        "total score": agg["total"],
        "quality score": agg["quality"],
        "semantic score": agg["semantic"],
        **{k: norm[k] for k in sorted(norm)},
        "raw": dict(sorted(means.items())),
    }


def builtin(root: Path, samples: list[dict], features=None, dimensions=None) -> dict[str, list[dict]]:
    """Per-video results of the weight-free dimensions and of those ``features`` (a loaded
    :class:`vipo.critics.features.FeatureModels`) measures, limited to ``dimensions`` when given."""
    names = [
        k for k in [*omniscore.MEASURES, *(features.measures if features else ())] if not dimensions or k in dimensions
    ]
    per_dim: dict[str, list[dict]] = {k: [] for k in names}
    for s in samples:
        faults.check_term("vipo eval")  # SIGTERM: stop between clips
        frames = sample_frames(root, s)
        got = {k: fn(frames) for k, fn in omniscore.MEASURES.items() if k in per_dim}
        if features:
            got.update(features.measure(frames, s["prompt"], only=per_dim))
        for k, v in got.items():
            row = {"video_path": s["file_name"], "video_results": v}
            if k in omniscore.PER_FRAME_PAIR:
                row["cnt_per_video"] = max(0, len(frames) - 1)
            per_dim[k].append(row)
    return per_dim


def dimension_mean(rows: list[dict]) -> float:
    """A folder's score: the mean over videos, or over frame pairs where rows count them (VBench's consistency)."""
    if rows and all("cnt_per_video" in r for r in rows):
        n = sum(r["cnt_per_video"] for r in rows)
        return float(sum(r["video_results"] * r["cnt_per_video"] for r in rows) / n) if n else 1.0
    return float(np.mean([r["video_results"] for r in rows]))


def builtin_plan(features, dimensions: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """Which dimensions the builtin backend measures, and why each other VBench quality/semantic one is skipped."""
    available = [*omniscore.MEASURES, *features.measures]
    for d in dimensions or ():
        if d not in available:
            if d in features.skipped:
                raise UserError(f"--dimension {d}: {features.skipped[d]}")
            raise UserError(
                f"--dimension {d}: the builtin backend measures {', '.join(omniscore.MEASURES)} without weights, "
                "and subject_consistency, background_consistency, aesthetic_quality, imaging_quality and "
                "overall_consistency_xclip from local model paths (--backend vbench for the rest)"
            )
    chosen = [d for d in available if not dimensions or d in dimensions]
    skipped = {
        d: features.skipped.get(d, "not asked for (--dimension)")
        for d in (*omniscore.QUALITY, "overall_consistency")
        if d not in chosen
    }
    return chosen, skipped


def vbench(root: Path, out: Path, name: str, dimensions: list[str], device: str, long: bool) -> dict:
    try:
        import vbench as package

        if long:
            from vbench2_beta_long import VBenchLong as Bench
        else:
            from vbench import VBench as Bench
    except ImportError:
        raise UserError(
            f"--backend vbench: the {'vbench2_beta_long (VBench-Long)' if long else 'vbench'} package is "
            "not installed (pip install vbench); --backend builtin needs no weights"
        ) from None
    bench = Bench(device, str(Path(package.__file__).parent / "VBench_full_info.json"), str(out))
    bench.evaluate(videos_path=str(root), name=name, dimension_list=dimensions, mode="custom_input")
    return atomic.read_json(out / f"{name}_eval_results.json")


def evaluate_folder(
    root: Path,
    out: Path,
    backend: str = "builtin",
    name: str = "vipo",
    dimensions: list[str] | None = None,
    device: str = "auto",
    judge=None,
) -> dict:
    """``judge``: a :class:`vipo.config.JudgeConfig` whose model paths (``dino``, ``clip``, ``aesthetic_clip``,
    ``aesthetic_head``, ``musiq``, ``xclip``) and ``feature_batch`` the builtin backend uses."""
    from ..config import JudgeConfig

    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder of videos")
    judge = judge if judge is not None else JudgeConfig()
    samples = folder_samples(root) if (root / "metadata.jsonl").is_file() else vbench_samples(root)
    seconds = [clip_seconds(root / s["file_name"]) for s in samples]
    with folder_lock(out):  # the inputs are checked: now the output folder may be written
        return _evaluate(root, out, samples, seconds, backend, name, dimensions, device, judge)


def _evaluate(root, out, samples, seconds, backend, name, dimensions, device, judge) -> dict:
    from ..critics.features import FLAGS, FeatureModels
    from ..device import resolve_device

    long = sum(t >= LONG_SECONDS for t in seconds)
    if long:
        log.warning(
            "%d of %d clips last %.0f s or more: VBench's numbers need VBench-Long for them%s",
            long,
            len(samples),
            LONG_SECONDS,
            " (used)" if backend == "vbench" else "",
        )
    extra: dict = {}
    if backend == "builtin":
        features = FeatureModels(judge, device)
        chosen, skipped = builtin_plan(features, dimensions)
        if skipped:
            log.warning(
                "vipo eval: measuring %s; skipping %s",
                ", ".join(chosen),
                "; ".join(f"{k} ({why})" for k, why in skipped.items()),
            )
        per_dim = builtin(root, samples, features, chosen)
        results = {k: [dimension_mean(v), v] for k, v in per_dim.items()}
        atomic.write_json(out / f"{name}_eval_results.json", results)
        extra = {"measured": chosen, "skipped": skipped}
        notes = {k: v for k, v in features.notes.items() if k in chosen}
        if notes:
            extra["stand_ins"] = notes
    elif backend == "vbench":
        given = [k for k in FLAGS if getattr(judge, k, "")]
        if given:
            log.warning("--backend vbench loads its own models: ignoring %s", ", ".join(given))
        results = vbench(root, out, name, dimensions or list(omniscore.MEASURES), resolve_device(device), long > 0)
    else:
        raise UserError(f"--backend {backend!r}: builtin or vbench")
    score = final_score({k: float(v[0]) for k, v in results.items()})
    score.update(backend=backend, videos=len(samples), long_clips=long, max_seconds=max(seconds), **extra)
    atomic.write_json(out / f"{name}_final_score.json", score)
    # what produced these numbers (recomputed on every run, so never stale): the videos, prompts and options
    atomic.write_json(
        out / "provenance.json",
        {
            "videos": {s["file_name"]: file_digest(root / s["file_name"])[:16] for s in samples},
            "prompts": {s["file_name"]: s["prompt"] for s in samples},
            "backend": backend,
            "name": name,
            "dimensions": dimensions,
            "features": {k: getattr(judge, k) for k in FLAGS},
        },
    )
    return score


def split_scores(root: Path, rows: list[dict], judge=None, device: str = "cpu", features=None) -> dict[str, dict]:
    """VBench-style dimensions of an evaluation folder per split (``rows``: file_name, prompt, split), measured once
    per clip with the builtin backend (the weight-free dimensions; those whose local model paths ``judge`` gives, or
    ``features`` already loaded). Writes ``root/vbench/{split}_eval_results.json`` and ``{split}_final_score.json``
    in ``vipo eval DIR``'s layout and returns, per split, ``vbench_<dimension>`` (the raw means) and
    ``vbench_quality`` / ``vbench_total`` (VBench's normalized aggregates)."""
    from ..config import JudgeConfig
    from ..critics.features import FeatureModels

    root = Path(root)
    features = features or FeatureModels(judge if judge is not None else JudgeConfig(), device)
    chosen, skipped = builtin_plan(features, None)
    per_dim = builtin(root, rows, features, chosen)
    out: dict[str, dict] = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        names = {r["file_name"] for r in rows if r["split"] == split}
        results = {
            k: [dimension_mean(v), v]
            for k, v in ((k, [x for x in v if x["video_path"] in names]) for k, v in per_dim.items())
        }
        score = final_score({k: float(v[0]) for k, v in results.items()})
        score.update(backend="builtin", videos=len(names), measured=chosen, skipped=skipped)
        atomic.write_json(root / "vbench" / f"{split}_eval_results.json", results)
        atomic.write_json(root / "vbench" / f"{split}_final_score.json", score)
        out[split] = {
            **{f"vbench_{k}": float(v[0]) for k, v in results.items()},
            "vbench_quality": score["quality score"],
            "vbench_total": score["total score"],
        }
    return out
