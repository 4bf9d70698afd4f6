"""Fault injection for the reliability tests, and the SIGTERM flag the stages poll.

``VIPO_FAULTS="generate.after_commit:3=kill,train.loss:2+=nan"`` makes the 3rd pass through the named point SIGKILL
its own process, and every pass from the 2nd on poison the loss. Actions:

- ``raise``: raise :class:`InjectedFault`;  ``kill``: SIGKILL this process;  ``term``: send it SIGTERM;
- ``hang``: sleep until killed (a live process holding its locks, for the concurrency tests);
- ``enospc``: raise ``OSError(ENOSPC)``, as a full disk would;
- value points only (:func:`value`): ``nan``, ``inf``, ``x<factor>`` (multiply, e.g. ``x1000``).

Under a launcher an action may name the one rank it applies to (``generate.after_batch:2=kill@1``: rank 1's second
batch), read from the launcher's ``RANK``; without ``@`` every rank counts its own passes.

Points: ``generate.after_commit`` (per committed sample, on the main rank), ``generate.after_batch`` (per sampled
batch, its files written, before the main rank commits it), ``judge.after_commit`` (per committed prompt group),
``judge.mid_record`` (inside the ledger transaction, rows added, not committed), ``train.after_step`` (optimizer
step taken, not yet saved), ``train.mid_checkpoint`` (state files written, completion marker not), ``train.loss``,
``generate.latents`` (value), ``driver.after_train_before_record`` (round checkpoint complete, not yet in the ledger), and the writes
``write.video``, ``write.record``, ``write.checkpoint``. Unset, every point is one falsy dict test.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import Counter

ENV = "VIPO_FAULTS"


class InjectedFault(RuntimeError):
    pass


def _parse(spec: str) -> dict[str, tuple[int, bool, str]]:
    plan = {}
    me = os.environ.get("RANK", "0")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        where, _, action = item.partition("=")
        name, _, k = where.partition(":")
        action, _, only = action.partition("@")
        if only and only != me:
            continue
        plan[name] = (int(k.rstrip("+") or 1), k.endswith("+"), action or "raise")
    return plan


_PLAN = _parse(os.environ.get(ENV, ""))
_hits: Counter = Counter()


def _due(name: str) -> str | None:
    k, onward, action = _PLAN[name]
    _hits[name] += 1
    return action if _hits[name] == k or (onward and _hits[name] > k) else None


def point(name: str) -> None:
    if not _PLAN or name not in _PLAN:
        return
    action = _due(name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "hang":
        while True:
            time.sleep(60)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
    elif action is not None:
        raise InjectedFault(f"injected fault at {name}")


def value(name: str, x):
    """``x``, or a poisoned ``x`` when a value fault is due here."""
    if not _PLAN or name not in _PLAN:
        return x
    action = _due(name)
    if action in ("nan", "inf"):
        return x * float(action)
    if action and action.startswith("x"):
        return x * float(action[1:])
    return x


# -- SIGTERM: stages finish or roll back their current item, save what they have and raise Terminated --------------
class Terminated(Exception):
    """SIGTERM arrived; the current item was finished (or rolled back) and the state saved."""


EXIT_TERM = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended
_term = False


def _on_term(signum, frame) -> None:
    global _term
    _term = True


def install_term_handler():
    """Install the flag-setting SIGTERM handler (main thread only); returns the previous handler."""
    global _term
    _term = False
    try:
        return signal.signal(signal.SIGTERM, _on_term)
    except ValueError:  # not the main thread
        return None


def restore_term_handler(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def term_requested() -> bool:
    return _term


def check_term(where: str) -> None:
    if _term:
        raise Terminated(where)
