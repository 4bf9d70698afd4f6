"""How the bench measures: interleaved timing, ratios with their spread, peak tensor memory, encoder calls, machine
facts.

A ratio is measured in one run with its contenders interleaved (round r runs each contender once, odd rounds in
reverse order: A B C, C B A, ...), so a load change on a shared machine hits every contender alike; each round gives
one ratio and the bench reports their median and range, beside each contender's median time. On CUDA every timed call
ends with a synchronisation, so it measures the work and not the launch.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def sync(device: torch.device | str = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleave(
    contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device: torch.device | str = "cpu"
) -> dict[str, list[float]]:
    """Seconds of each call of each contender: ``warmup`` untimed rounds, then ``repeats`` timed ones."""
    names = list(contenders)
    for _ in range(warmup):
        for n in names:
            contenders[n]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            contenders[n]()
            sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


@dataclass
class Ratio:
    """``a / b`` per interleaved round: its median and range, and the two medians (seconds)."""

    median: float
    low: float
    high: float
    a: float
    b: float
    rounds: int

    @classmethod
    def of(cls, a: list[float], b: list[float], scale: float = 1.0) -> "Ratio":
        per = [scale * x / y for x, y in zip(a, b)]
        return cls(statistics.median(per), min(per), max(per), statistics.median(a), statistics.median(b), len(per))

    def fmt(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def median_range(xs: list[float], scale: float = 1.0, digits: int = 1) -> str:
    return f"{scale * statistics.median(xs):.{digits}f} [{scale * min(xs):.{digits}f}, {scale * max(xs):.{digits}f}]"


class _LiveTensors(TorchDispatchMode):
    """Bytes of the tensor storages created inside the mode and still alive: current and peak. A storage is counted
    once (views share it) and uncounted when it is freed (a finalizer on its Python object, which torch keeps alive
    exactly as long as the storage)."""

    def __init__(self):
        super().__init__()
        self.seen: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.is_sparse:
                st = t.untyped_storage()
                key = id(st)
                if key not in self.seen:
                    self.seen[key] = st.nbytes()
                    self.current += st.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(st, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.current -= self.seen.pop(key, 0)


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu", held: float = 0.0) -> dict[str, float]:
    """Peak tensor memory (bytes) while ``fn`` runs: ``step``, the most that the call's own tensors (activations,
    gradients, temporaries) held at once, and ``peak``, that plus ``held`` (weights and optimizer state, live
    throughout). CUDA: the caching allocator's ``max_memory_allocated`` (``step``: its rise above what was allocated
    before; ``peak`` the whole); CPU: every storage the call creates, followed by a dispatch mode
    (:class:`_LiveTensors`; tracemalloc does not see torch's allocator)."""
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak": float(peak), "step": float(peak - before)}
    gc.collect()
    with _LiveTensors() as live:
        fn()
    return {"peak": float(held + live.peak), "step": float(live.peak)}


def held_bytes(*modules, optimizer=None) -> float:
    """Bytes of the modules' parameters and buffers (each storage once) and the optimizer's state tensors."""
    seen, total = set(), 0
    tensors = [t for m in modules for t in list(m.parameters()) + list(m.buffers())]
    if optimizer is not None:
        tensors += [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return float(total)


class Calls:
    """Counts what goes through modules or methods: ``calls[name]`` calls, ``rows[name]`` batch rows (the leading
    dimension of the first tensor argument). ``Calls(text_encoder=module, vae=(vae, "encode"))``: a module's forward
    passes, or an object's method (the CogVideoX VAE's encoder module runs once per chunk of frames; ``encode`` once
    per batch of videos)."""

    def __init__(self, **targets):
        self.calls: Counter = Counter()
        self.rows: Counter = Counter()
        self._undo = []
        for name, target in targets.items():
            if isinstance(target, torch.nn.Module):
                handle = target.register_forward_pre_hook(
                    lambda m, args, kwargs, name=name: self._count(name, args, kwargs), with_kwargs=True
                )
                self._undo.append(handle.remove)
            else:
                obj, attr = target
                original = getattr(obj, attr)

                def wrapped(*args, _name=name, _original=original, **kwargs):
                    self._count(_name, args, kwargs)
                    return _original(*args, **kwargs)

                setattr(obj, attr, wrapped)  # an instance attribute over the class's method
                self._undo.append(lambda obj=obj, attr=attr: delattr(obj, attr))

    def _count(self, name: str, args, kwargs) -> None:
        self.calls[name] += 1
        first = next((a for a in list(args) + list(kwargs.values()) if torch.is_tensor(a)), None)
        self.rows[name] += int(first.shape[0]) if first is not None and first.dim() else 1

    def reset(self) -> None:
        self.calls.clear()
        self.rows.clear()

    def close(self) -> None:
        for undo in self._undo:
            undo()
        self._undo = []

    @contextmanager
    def counting(self):
        self.reset()
        yield self


@dataclass
class Machine:
    """The facts a reader needs to weigh the numbers."""

    facts: dict = field(default_factory=dict)

    @classmethod
    def here(cls, device: torch.device | str = "cpu") -> "Machine":
        import diffusers
        import peft
        import transformers

        device = torch.device(device)
        facts = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "platform": platform.platform(),
            "cpu": _cpu_name(),
            "cpu cores": os.cpu_count(),
            "torch threads": torch.get_num_threads(),
        }
        if device.type == "cuda":
            facts["gpu"] = torch.cuda.get_device_name(device)
            facts["gpu memory GiB"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        try:
            facts["load average at start"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        except OSError:
            pass
        return cls(facts)

    def note_end(self) -> None:
        try:
            self.facts["load average at end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        except OSError:
            pass


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or sys.platform
