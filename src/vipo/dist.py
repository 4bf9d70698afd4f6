"""Ranks, sharding and gathering: the only module that knows about processes.

Under ``torchrun`` or ``accelerate launch`` (the environment carries ``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``...) :func:`setup` joins the process group through accelerate's ``PartialState``, which reads both
launchers' environments (NCCL on GPUs, gloo on the CPU), and pins each rank to its device. With one process and no
launcher nothing is initialised: every function here returns at once with the one-process answer, so a plain
``vipo run`` behaves and costs exactly as before.

The rules every stage follows (docs/scale.md):

- **Work is sharded by a fixed rule** that does not depend on the number of processes' timing: item ``j`` of a list
  goes to rank ``j % N`` (:func:`shard`). Generation shards whole sampler batches of the one-process run, so each
  video is sampled in exactly the batch it would be in with one process (a batch's size changes the float result:
  measured 1e-5 between a batch of one and of two on this CPU) and its bytes are the same for any N.
- **Only the main process (rank 0) touches the SQLite ledger.** A run folder on a shared file system is read by
  every node, but SQLite's WAL needs shared memory, which does not work across hosts; so the other ranks never open
  it. They send their rows to rank 0 in :func:`step`, which commits them in the one-process order, and they learn
  what is done from rank 0 (:func:`from_main`). Files (mp4s, latents) are written atomically by the rank that made
  them, each under its own name.
- **Collectives are symmetric**: an error on any rank (a bad answer from a critic, a threshold passed on rank 0's
  commit) is raised on every rank by :func:`step` / :func:`from_main`, so all exit with the same code; a SIGTERM on
  any rank stops every rank at the same step.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

_state = None  # accelerate's PartialState once setup() joined a process group
_left = False  # teardown() left it: this process joins no other
#: how long a rank waits in a collective: rank 0 alone may take minutes between two exchanges (checking every latent
#: of a large round before training, hashing a full fine-tune's checkpoint), beyond NCCL's 10-minute default
TIMEOUT_S = 7200


_alone = False  # alone(): a launched process that does its command by itself


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return not _alone and int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """The launcher's ``RANK`` for this process (0 without a launcher), readable before any process group exists."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def alone() -> None:
    """Run this process's command by itself, as if no launcher had started it (for commands that do not split:
    the main rank runs them, the other ranks exit at once)."""
    global _alone
    _alone = True


def setup(device: str) -> str:
    """Join the launcher's process group (once) and return this rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK``.

    Without a launcher ``device`` comes back unchanged and nothing is initialised."""
    global _state
    if not launched():
        return device
    if _left:
        # measured: a second gloo group in one process finds the first one's addresses in the launcher's store
        # and fails to connect (or hangs) some of the time
        raise RuntimeError("this process already left its process group; start a new launch to join another")
    if _state is None:
        from datetime import timedelta

        from accelerate import PartialState

        _state = PartialState(cpu=not device.startswith("cuda"), timeout=timedelta(seconds=TIMEOUT_S))
        import atexit

        atexit.register(teardown, False)  # before interpreter shutdown, if nothing left the group earlier
        if _state.num_processes != int(os.environ["WORLD_SIZE"]):
            raise RuntimeError(
                f"the launcher asked for {os.environ['WORLD_SIZE']} processes, the process group has "
                f"{_state.num_processes}"
            )
    return str(_state.device) if device.startswith("cuda") else device


#: how long a rank that finished waits at teardown's barrier for the others
TEARDOWN_BARRIER_S = 60


def teardown(finished: bool) -> None:
    """Leave the process group when this rank's command ends, however it ends.

    Without it gloo's worker threads outlive ``main`` and the interpreter's finalization can abort a rank that
    finished its work (SIGABRT, "terminate called without an active exception"; the abandoned pytorch/pytorch PR
    #179291 describes it): seen in CI, rank 1 of a finished 2-process ``vipo run``, so torchrun reported the whole
    launch failed. ``finished`` (this rank's command succeeded, as every rank's does when the run goes well): the
    ranks meet at a barrier first, so none closes its connections while another still reads from them; a rank that
    finds no partner there within ``TEARDOWN_BARRIER_S`` (another rank failed after the last collective) warns and
    leaves. Otherwise the rank leaves at once: one that stops on an error must not wait for the others. The
    process-wide fallback is the ``atexit`` hook :func:`setup` registers (library code that joined the group
    without ``vipo.cli.main``)."""
    global _state, _left
    if _state is None:
        return
    state, _state = _state, None
    if finished and state.num_processes > 1:
        from datetime import timedelta

        import torch.distributed as td

        try:
            td.barrier(async_op=True).wait(timeout=timedelta(seconds=TEARDOWN_BARRIER_S))
        except Exception as e:  # a peer gone or late: leave anyway, the command's own result stands
            first = (str(e).splitlines() or [type(e).__name__])[0]
            log.warning("leaving the process group without the other ranks (%s)", first[:200])
    state.destroy_process_group()
    _left = True


def _active() -> bool:
    return _state is not None and _state.num_processes > 1


def world() -> int:
    """Number of processes (1 without a launcher)."""
    return _state.num_processes if _active() else 1


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return _state.process_index if _active() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if _active():
        import torch.distributed as td

        td.barrier()


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable, small: rows, flags, metrics), in rank order, on every rank."""
    if not _active():
        return [obj]
    import torch.distributed as td

    out: list = [None] * world()
    td.all_gather_object(out, obj)
    return out


def broadcast(obj: T) -> T:
    """The main rank's ``obj`` on every rank."""
    if not _active():
        return obj
    import torch.distributed as td

    box = [obj if is_main() else None]
    td.broadcast_object_list(box, src=0)
    return box[0]


def any_true(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (e.g. a SIGTERM seen by one of them)."""
    return any(all_gather(bool(flag))) if _active() else bool(flag)


def shard(items: Sequence[T], r: int | None = None, n: int | None = None) -> list[T]:
    """Rank ``r``'s share of ``items``: item ``j`` goes to rank ``j % n`` (defaults: this rank, the world)."""
    r = rank() if r is None else r
    n = world() if n is None else n
    return list(items[r::n])


def shard_range(start: int, count: int) -> list[int]:
    """This rank's positions among ``count`` consecutive units numbered from ``start``: unit ``j`` to rank
    ``j % N`` (the trainer numbers a step's items across its micro-batches, so a micro-batch of one item per rank
    and accumulation steps divided among ranks are the same rule)."""
    n, r = world(), rank()
    return [i for i in range(count) if (start + i) % n == r]


def sum_tensor(t):
    """``t`` summed over ranks (a new tensor; ``t`` itself with one process)."""
    if not _active():
        return t
    import torch.distributed as td

    t = t.clone()
    td.all_reduce(t)
    return t


BUCKET = 1 << 25  # elements per all-reduce of gradients (128 MB in float32)


def sum_gradients(params) -> None:
    """Replace each parameter's gradient by its sum over ranks (a missing one counts as zeros): data parallelism as
    DDP does it with ``no_sync`` across the accumulation steps, one all-reduce per optimizer step, except that ranks
    sum, since each rank's loss is already its share of the step's mean (``trainer._micro_loss``)."""
    if not _active():
        return
    import torch
    import torch.distributed as td

    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    i = 0
    while i < len(params):
        group, size = [], 0
        while i < len(params) and (not group or size + params[i].numel() <= BUCKET):
            group.append(params[i])
            size += params[i].numel()
            i += 1
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        td.all_reduce(flat)
        at = 0
        for p in group:
            p.grad.copy_(flat[at : at + p.numel()].view_as(p.grad))
            at += p.numel()


#: DeepSpeed is refused (docs/scale.md): FSDP2 shards what ZeRO-3 shards, and its engine cannot run on a machine
#: without CUDA, so vipo would ship it untested
DEEPSPEED_REFUSED = (
    "accelerate's DeepSpeed config: vipo shards a full fine-tune with FSDP2 (launch with "
    "configs/accelerate/fsdp.yaml: weights, gradients and optimizer state sharded, as ZeRO-3 does); "
    "a LoRA trains data-parallel (torchrun or configs/accelerate/ddp.yaml)"
)


# -- FSDP2: a full fine-tune sharded over the ranks (accelerate launch --config_file configs/accelerate/fsdp.yaml) ----
def engine() -> str:
    """How a launch trains: 'fsdp' when accelerate's launcher set up FSDP (``ACCELERATE_USE_FSDP``), 'deepspeed' when
    it set up DeepSpeed, else 'ddp' (also with one process)."""
    if not _active():
        return "ddp"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    return "ddp"


def fsdp_shard(module, device) -> None:
    """Shard ``module`` in place with FSDP2 (torch's ``fully_shard``): one unit per block named in the model's
    ``_no_split_modules`` (diffusers declares its transformer blocks there), inner ones first, then the root. The options come from the
    accelerate config (``FSDP_RESHARD_AFTER_FORWARD``). vipo applies ``fully_shard`` itself rather than through
    ``Accelerator.prepare``, whose FSDP path refuses the CPU (gloo), where this is tested."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if os.environ.get("FSDP_VERSION", "2") != "2":
        raise RuntimeError("FSDP: vipo shards with FSDP2 (fully_shard); set fsdp_version: 2 in the accelerate config")
    mesh = init_device_mesh(getattr(device, "type", str(device).split(":")[0]), (world(),))
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() not in ("false", "no_shard", "0")
    names = set(getattr(module, "_no_split_modules", None) or [])
    for sub in reversed(list(module.modules())[1:]):  # inner blocks first: a block may hold others (UpBlock2D)
        if type(sub).__name__ in names:
            fully_shard(sub, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(module, mesh=mesh, reshard_after_forward=reshard)


def fsdp_state(module, optimizer=None) -> tuple[dict, dict | None]:
    """The whole (unsharded) weights and optimizer state of an FSDP-sharded module, on the main rank's CPU (empty
    elsewhere); every rank must call it. The optimizer state is keyed by parameter name."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(module, options=options)
    opt = get_optimizer_state_dict(module, optimizer, options=options) if optimizer is not None else None
    return weights, opt


def fsdp_load(module, optimizer, weights: dict, opt: dict) -> None:
    """Load whole weights and a name-keyed optimizer state (as :func:`fsdp_state` returns them) into the sharded
    ``module`` and its optimizer; every rank passes them whole."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        module,
        optimizer,
        model_state_dict=weights,
        optim_state_dict=opt,
        options=StateDictOptions(full_state_dict=True),
    )


def steps(count: int) -> int:
    """How many lockstep rounds ``count`` items take when each rank does one item per round."""
    return -(-count // world())


def _portable(e: BaseException) -> BaseException:
    """``e`` itself when it survives pickling (UserError, StageAborted, Terminated do), else a RuntimeError that
    names it."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")


def _first_error(got: list, mine: BaseException | None) -> BaseException | None:
    for r, (err, _) in enumerate(got):
        if err is not None:
            if r == rank() and mine is not None:
                return mine  # this rank's own exception, with its traceback
            return err
    return None


def step(work: Callable[[], T], commit: Callable[[list[T]], Any] | None = None, term: Callable[[], bool] | None = None):
    """One lockstep round: every rank runs ``work()``; the main rank runs ``commit(results in rank order)`` (the
    ledger writes); its return value comes back on every rank.

    An exception in any rank's ``work`` or in ``commit`` is raised on every rank (the first by rank order; other ranks
    raise a copy). ``term`` (the SIGTERM flag) is polled after the commit: if it holds on any rank, every rank gets
    ``True`` back as the second value, so all stop at the same round. With one process this is
    ``commit([work()])`` and the flag, with nothing exchanged.
    """
    mine: BaseException | None = None
    try:
        value = work()
        payload: tuple = (None, value)
    except Exception as e:  # noqa: BLE001  (re-raised below, on every rank)
        mine, value = e, None
        payload = (_portable(e), None)
    if not _active():
        if mine is not None:
            raise mine
        out = commit([value]) if commit is not None else None
        return out, bool(term and term())
    got = all_gather(payload)
    err = _first_error(got, mine)
    if err is not None:
        raise err
    result: tuple = (None, None)
    if is_main():
        try:
            result = (None, commit([v for _, v in got]) if commit is not None else None)
        except Exception as e:  # noqa: BLE001
            result = (_portable(e), None)
            mine = e
    result = broadcast(result)
    if result[0] is not None:
        raise mine if is_main() and mine is not None else result[0]
    return result[1], any_true(bool(term and term()))


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` computed on the main rank (a ledger read) and its value, or its exception, on every rank."""
    if not _active():
        return fn()
    box: tuple = (None, None)
    mine: BaseException | None = None
    if is_main():
        try:
            box = (None, fn())
        except Exception as e:  # noqa: BLE001  (raised below, on every rank)
            mine, box = e, (_portable(e), None)
    box = broadcast(box)
    if box[0] is not None:
        raise mine if mine is not None else box[0]
    return box[1]


class OnMain:
    """What another rank holds in place of an object only the main process may use (the ledger): any use of it
    there is a bug, and says so."""

    def __init__(self, what: str):
        self._what = what

    def __getattr__(self, name: str):
        raise RuntimeError(
            f"{self._what}.{name}: only the main process (rank 0) uses the {self._what}; this is a vipo bug"
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def on_main(factory: Callable[..., T], *args, what: str = "ledger", **kwargs) -> T:
    """``factory(*args)`` on the main rank, an :class:`OnMain` stand-in elsewhere."""
    return factory(*args, **kwargs) if is_main() else OnMain(what)  # type: ignore[return-value]


def quiet_logging() -> None:
    """Other ranks log warnings and errors only, each line naming its rank (rank 0 tells the story). Reads the
    launcher's ``RANK``: logging is set up before the process group is joined."""
    me = launch_rank()
    if me != 0:
        root = logging.getLogger()
        root.setLevel(logging.WARNING)
        for h in root.handlers:
            if h.formatter is not None and "rank" not in (h.formatter._fmt or ""):
                h.setFormatter(
                    logging.Formatter(f"[rank {me}] " + (h.formatter._fmt or "%(message)s"), h.formatter.datefmt)
                )
