"""Experiment trackers (``train.tracker``): per-step training metrics and per-round eval metrics (with a few eval
clips) sent to TensorBoard, Weights & Biases or trackio as a run goes, beside the run folder's own records.

Why a tracker beside ``train_log.jsonl`` and ``report.html``: it is where diffusers and TRL users watch a run while it
trains. The run folder stays the record; a tracker only mirrors it, so a missing or broken tracker never changes what
is trained, and ``train.tracker`` is left out of the hashes that decide whether a round trains again.

One x-axis for a whole run: the global optimizer step, round K's steps following those of rounds 1..K-1 (read from
their ``train_log.jsonl``), and round K's evaluation logged at the last step of round K (round 0's at step 0). Only
the first process writes (``RANK`` 0, as torchrun and accelerate set it). Offline by default: TensorBoard writes event
files in RUN/tensorboard; wandb runs in ``mode="offline"`` in RUN (unless ``WANDB_MODE`` says otherwise; ``wandb
sync`` uploads later); trackio keeps its SQLite store in RUN/trackio (unless ``TRACKIO_DIR`` is set).
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from .errors import UserError

log = logging.getLogger(__name__)

CLIPS_PER_EVAL = 4
"""eval clips sent per round (the first of each split, in metadata order), as frame strips or videos"""


class Tracker(ABC):
    """The narrow interface every tracker implements; ``package`` is what it imports (checked at start)."""

    package = ""

    def __init__(self, run_dir: Path, config: dict):
        self.run_dir = Path(run_dir)

    @abstractmethod
    def scalars(self, metrics: dict[str, float], step: int) -> None:
        """Scalar metrics at ``step``."""

    def clip(self, tag: str, path: Path, frames: np.ndarray, step: int, fps: int, caption: str = "") -> None:
        """One eval clip: ``frames`` (T, H, W, 3) uint8 as read from ``path`` (the mp4); ``caption`` its prompt."""

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    """Event files in RUN/tensorboard (``tensorboard --logdir RUN/tensorboard``); clips as one image of their frames
    side by side (TensorBoard's own video summary needs moviepy)."""

    package = "tensorboard"

    def __init__(self, run_dir: Path, config: dict):
        super().__init__(run_dir, config)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        self.writer.add_text("config", "```yaml\n" + json.dumps(config, indent=2) + "\n```", 0)

    def scalars(self, metrics, step):
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def clip(self, tag, path, frames, step, fps, caption=""):
        self.writer.add_image(tag, np.concatenate(list(frames), axis=1), step, dataformats="HWC")

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbTracker(Tracker):
    """A Weights & Biases run in RUN/wandb, offline unless ``WANDB_MODE`` is set; clips as ``wandb.Video``."""

    package = "wandb"

    def __init__(self, run_dir: Path, config: dict):
        super().__init__(run_dir, config)
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "vipo"),
            name=self.run_dir.name,
            dir=str(self.run_dir),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=config,
            id=_run_id(self.run_dir),
            resume="allow",
        )

    def scalars(self, metrics, step):
        self.run.log(metrics, step=step)

    def clip(self, tag, path, frames, step, fps, caption=""):
        self.run.log({tag: self.wandb.Video(str(path), caption=caption, format="mp4")}, step=step)

    def close(self):
        self.run.finish()


class TrackioTracker(Tracker):
    """A trackio run (wandb's API, stored locally in SQLite): RUN/trackio unless ``TRACKIO_DIR`` is set."""

    package = "trackio"

    def __init__(self, run_dir: Path, config: dict):
        super().__init__(run_dir, config)
        os.environ.setdefault("TRACKIO_DIR", str(self.run_dir / "trackio"))  # read when trackio is imported
        import trackio

        self.trackio = trackio
        self.run = trackio.init(
            project=os.environ.get("TRACKIO_PROJECT", "vipo"), name=self.run_dir.name, config=config, resume="allow"
        )

    def scalars(self, metrics, step):
        self.trackio.log(metrics, step=step)

    def clip(self, tag, path, frames, step, fps, caption=""):
        if hasattr(self.trackio, "Video"):
            self.trackio.log({tag: self.trackio.Video(str(path), caption=caption)}, step=step)

    def close(self):
        self.trackio.finish()


TRACKERS: dict[str, type[Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "trackio": TrackioTracker,
}


def _run_id(run_dir: Path) -> str:
    import hashlib

    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def require(name: str) -> None:
    """Refuse at start, in one line, a tracker whose package is not installed."""
    if name == "none":
        return
    package = TRACKERS[name].package
    try:
        importlib.import_module(package)
    except ImportError:
        raise UserError(
            f"train.tracker={name}: the {package} package is not installed (pip install {package}), "
            "or set train.tracker: none"
        ) from None


_active: Tracker | None = None
_active_key: tuple | None = None


def start(name: str, run_dir: Path, config: dict) -> None:
    """Make ``name`` the process's tracker for ``run_dir`` (a no-op for 'none', on ranks other than 0, and when it is
    already the active one); the previous one is closed. Closed again at exit."""
    global _active, _active_key
    key = (name, str(Path(run_dir).resolve()))
    if name == "none" or _rank() != 0 or key == _active_key:
        return
    finish()
    require(name)
    _active, _active_key = TRACKERS[name](Path(run_dir), config), key
    log.info("tracker: %s (%s)", name, run_dir)


def finish() -> None:
    global _active, _active_key
    if _active is not None:
        _active.close()
    _active = _active_key = None
    _offsets.clear()


atexit.register(finish)


_offsets: dict[tuple, int] = {}


def _offset(run_dir: Path, round_: int) -> int:
    """Optimizer steps of rounds 1..round_-1 (their ``train_log.jsonl`` lines; read once per round while training)."""
    key = (str(run_dir), round_)
    if key not in _offsets:
        _offsets[key] = _count(run_dir, round_)
    return _offsets[key]


def _count(run_dir: Path, round_: int) -> int:
    n = 0
    for k in range(1, round_):
        path = Path(run_dir) / f"round-{k}" / "train_log.jsonl"
        if path.is_file():
            n += sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return n


def train_step(round_: int, metrics: dict) -> None:
    """One optimizer step's metrics (``metrics["step"]`` is the round's step) as ``train/NAME``."""
    if _active is None:
        return
    base = _offset(_active.run_dir, round_)
    values = {
        f"train/{k}": float(v)
        for k, v in metrics.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    values["train/round"] = float(round_)
    _active.scalars(values, base + int(metrics["step"]))


def eval_round(round_: int, ev: dict, eval_dir: Path, fps: int = 8) -> None:
    """A round's eval.json numbers as ``eval/SPLIT/KEY`` (with the 95% interval's bounds) and a few of its clips."""
    if _active is None:
        return
    step = _count(_active.run_dir, round_ + 1) if round_ > 0 else 0
    values: dict[str, float] = {"eval/round": float(round_)}
    for split, d in ev.items():
        if not isinstance(d, dict) or "n" not in d:
            continue
        for k, v in d.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values[f"eval/{split}/{k}"] = float(v)
        for k, (lo, hi) in (d.get("ci95") or {}).items():
            values[f"eval/{split}/{k}_ci95_low"], values[f"eval/{split}/{k}_ci95_high"] = float(lo), float(hi)
    _active.scalars(values, step)
    try:
        _clips(Path(eval_dir), step, fps)
    except Exception as e:  # a clip the tracker cannot take never stops a run: its numbers are what matters
        log.warning("tracker: eval clips of round %d not sent (%s)", round_, e)
    _active.flush()


def _clips(eval_dir: Path, step: int, fps: int) -> None:
    from .io.video import read_mp4

    meta = eval_dir / "metadata.jsonl"
    if not meta.is_file():
        return
    rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    seen: dict[str, int] = {}
    for r in rows:
        split = r.get("split", "")
        if seen.get(split, 0) >= CLIPS_PER_EVAL // 2 or not (eval_dir / r["file_name"]).is_file():
            continue
        seen[split] = seen.get(split, 0) + 1
        path = eval_dir / r["file_name"]
        # the prompt in the tag too (TensorBoard has no captions), as a name any file system takes
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", str(r["prompt"])).strip("_")[:60]
        _active.clip(f"clips/{split}/{seen[split]}_{slug}", path, read_mp4(path), step, fps, str(r["prompt"]))


def flush() -> None:
    if _active is not None:
        _active.flush()
