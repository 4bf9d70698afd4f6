"""``vipo eval DIR``: VBench-style metrics on any folder of videos (mp4 + ``metadata.jsonl`` with file_name, prompt).

Backends:

- ``builtin`` (default, no weights): temporal flickering, motion smoothness and dynamic degree, measured by the
  omniscore critic's functions (:mod:`vipo.critics.omniscore`, one implementation; its docstring says how each
  differs from VBench's);
- ``vbench``: the ``vbench`` package when it is installed (it fetches its own model weights), in custom-input mode;
  clips of 5 s or more go to VBench-Long (``vbench2_beta_long``), which VBench's authors require for such clips.

Outputs in ``--out``: ``{name}_eval_results.json`` in VBench's layout (``{dimension: [mean, [{video_path,
video_results}, ...]]}``) and ``{name}_final_score.json`` with VBench's ``total score`` / ``quality score`` /
``semantic score`` (min-max normalized with VBench's constants, dynamic degree weighted 0.5, Total = (4 Quality +
Semantic) / 5; Total is Quality alone while no semantic dimension is measured) and every dimension's normalized score.
"""
from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np

from ..critics import omniscore as O
from ..errors import UserError
from ..io import atomic
from .judge import folder_samples, read_checked

log = logging.getLogger(__name__)
LONG_SECONDS = 5.0  # VBench-Long from this clip length on


def clip_seconds(path: Path) -> float:
    with av.open(str(path)) as box:
        s = box.streams.video[0]
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        return float(s.frames / s.average_rate) if s.frames and s.average_rate else 0.0


def vbench_samples(root: Path) -> list[dict]:
    """A folder without metadata.jsonl: its videos named as VBench names them (``{prompt}-{index}.mp4``)."""
    from ..data.prompts import vbench_prompt

    got = [{"file_name": p.name, "prompt": vbench_prompt(p.name)} for p in sorted(Path(root).glob("*.mp4"))]
    if not got or any(s["prompt"] is None for s in got):
        raise UserError(f"{root}: no metadata.jsonl (file_name, prompt per line) and not every mp4 is named as "
                        "VBench names them ('prompt-index.mp4')")
    return got


def final_score(means: dict[str, float]) -> dict:
    """VBench's aggregate of per-dimension means (the keys of ``scripts/cal_final_score.py``)."""
    norm = O.normalized({k: v for k, v in means.items() if k in O.NORMALIZE})
    agg = O.vbench_scores(norm)
    return {"total score": agg["total"], "quality score": agg["quality"], "semantic score": agg["semantic"],
            **{k: norm[k] for k in sorted(norm)}, "raw": dict(sorted(means.items()))}


def builtin(root: Path, samples: list[dict]) -> dict[str, list[dict]]:
    per_dim: dict[str, list[dict]] = {k: [] for k in O.MEASURES}
    for s in samples:
        frames = read_checked(root / s["file_name"])
        if isinstance(frames, str):
            raise UserError(f"{root / s['file_name']}: {frames}")
        for k, fn in O.MEASURES.items():
            per_dim[k].append({"video_path": s["file_name"], "video_results": fn(frames)})
    return per_dim


def vbench(root: Path, out: Path, name: str, dimensions: list[str], device: str, long: bool) -> dict:
    try:
        import vbench as package

        if long:
            from vbench2_beta_long import VBenchLong as Bench
        else:
            from vbench import VBench as Bench
    except ImportError:
        raise UserError(f"--backend vbench: the {'vbench2_beta_long (VBench-Long)' if long else 'vbench'} package is "
                        "not installed (pip install vbench); --backend builtin needs no weights") from None
    bench = Bench(device, str(Path(package.__file__).parent / "VBench_full_info.json"), str(out))
    bench.evaluate(videos_path=str(root), name=name, dimension_list=dimensions, mode="custom_input")
    return atomic.read_json(out / f"{name}_eval_results.json")


def evaluate_folder(root: Path, out: Path, backend: str = "builtin", name: str = "vipo",
                    dimensions: list[str] | None = None, device: str = "cuda") -> dict:
    root, out = Path(root), Path(out)
    samples = folder_samples(root) if (root / "metadata.jsonl").is_file() else vbench_samples(root)
    seconds = [clip_seconds(root / s["file_name"]) for s in samples]
    long = sum(t >= LONG_SECONDS for t in seconds)
    if long:
        log.warning("%d of %d clips last %.0f s or more: VBench's numbers need VBench-Long for them%s", long,
                    len(samples), LONG_SECONDS, " (used)" if backend == "vbench" else "")
    dimensions = dimensions or list(O.MEASURES)
    if backend == "builtin":
        unknown = sorted(set(dimensions) - set(O.MEASURES))
        if unknown:
            raise UserError(f"--dimension {unknown[0]}: the builtin backend measures {', '.join(O.MEASURES)} "
                            "(the others need model weights: --backend vbench)")
        per_dim = {k: v for k, v in builtin(root, samples).items() if k in dimensions}
        results = {k: [float(np.mean([r["video_results"] for r in v])), v] for k, v in per_dim.items()}
        atomic.write_json(out / f"{name}_eval_results.json", results)
    elif backend == "vbench":
        results = vbench(root, out, name, dimensions, device, long > 0)
    else:
        raise UserError(f"--backend {backend!r}: builtin or vbench")
    score = final_score({k: float(v[0]) for k, v in results.items()})
    score.update(backend=backend, videos=len(samples), long_clips=long, max_seconds=max(seconds))
    atomic.write_json(out / f"{name}_final_score.json", score)
    return score
