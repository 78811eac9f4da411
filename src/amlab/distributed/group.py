"""The process group and its collectives, with amlab's errors: joining a group within a
bounded time, and the sums and maxima the sharded models merge their partial results with.

Every collective here is called by every rank of the group in the same order with tensors
of the same shape (the callers make sure of it); a rank that dies or never comes makes the
others fail within the group's timeout with an :class:`~amlab.errors.AmlabError`, not hang.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from amlab.errors import AmlabError, check_positive

#: How long a rank waits for the others to join or to meet it in a collective, by default.
DEFAULT_TIMEOUT_S = 60.0


def init_group(
    init_method: str = "env://",
    rank: int | None = None,
    world_size: int | None = None,
    *,
    backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Join the default process group (``torch.distributed.init_process_group``) at
    ``init_method`` ("tcp://host:port", "file:///path" or, under torchrun, "env://") as
    ``rank`` of ``world_size`` (None: from the environment, as torchrun sets RANK and
    WORLD_SIZE). ``backend`` None picks "nccl" when CUDA is available, else
    "gloo". Every later collective fails after ``timeout_s`` seconds without the others
    (gloo; NCCL where its async error handling is on)."""
    timeout_s = check_positive(timeout_s, "timeout_s")
    if not dist.is_available():
        raise AmlabError("this PyTorch build has no torch.distributed; install one that has.")
    if dist.is_initialized():
        raise AmlabError(
            "this process has joined a process group already; call init_group once per "
            "process (torch.distributed.destroy_process_group leaves it)."
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    try:
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=-1 if rank is None else rank,
            world_size=-1 if world_size is None else world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    except (RuntimeError, ValueError) as err:
        who = "this rank" if rank is None else f"rank {rank} of {world_size}"
        raise AmlabError(
            f"{who} could not join the process group at {init_method!r} "
            f"within {timeout_s:g} s ({type(err).__name__}: {err}). Start every rank with the "
            "same address and world size, and check that none has died."
        ) from err


def leave_group(*, wait: bool = True) -> None:
    """Leave the default process group, if this process is in one. With ``wait`` (a rank
    that finished its work), first wait until every rank has finished
    (:func:`_meet_every_rank`), so that none tears its connections down while another still
    exchanges over them: gloo aborts a
    process whose peer closes mid-exchange ("terminate called without an active
    exception"), and one that exits with its group still open. After a failure, leave
    without waiting: the others learn of it from their next collective."""
    if not dist.is_initialized():
        return
    try:
        if wait:
            _meet_every_rank()
    finally:
        dist.destroy_process_group()


def _meet_every_rank() -> None:
    """Wait until every rank of the default group has got here: a barrier, on gloo an
    all-reduce of one number instead (:func:`all_reduce_`, which returns only once gloo's
    worker has let go of it; a barrier does not say when its worker lets go of the
    collectives it waited for)."""
    if dist.get_backend() != "gloo":
        dist.barrier()
        return
    all_reduce_(torch.zeros(1), "sum", None)


@contextmanager
def leaving_group(succeeded: Callable[[BaseException], bool] = lambda e: False) -> Iterator[None]:
    """Leave the default process group (if any) when the block ends (:func:`leave_group`):
    after every rank has finished when the block succeeded (it ended, or raised SystemExit
    of status 0, or an exception ``succeeded`` calls a success), at once when it failed."""
    try:
        yield
    except BaseException as e:
        ok = (isinstance(e, SystemExit) and e.code in (0, None)) or succeeded(e)
        leave_group(wait=ok)
        raise
    leave_group()


def torchrun_rank() -> tuple[int, int]:
    """(rank, world size) that torchrun gave this process (its RANK and WORLD_SIZE
    environment variables); (0, 1) for a process started without it."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise AmlabError(
            f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
            "are not integers: launch with torchrun, or unset them to run one process."
        ) from None
    if not 0 <= rank < max(world, 1):
        raise AmlabError(
            f"RANK={rank} is not a rank of WORLD_SIZE={world}: launch with torchrun, or unset "
            "them to run one process."
        )
    return rank, max(world, 1)


def is_main_process() -> bool:
    """Whether this process writes a job's outputs and shows its progress and results: any
    process not started by torchrun, and rank 0 of those torchrun started. The other ranks
    work alongside (they train, they hold their shard) and write and print nothing: every
    task that writes files asks this at its write step, and the CLI before it shows
    anything. (torchrun's environment decides, as it decides whether the training loop
    joins a process group, so a rank knows before any group exists.)"""
    return torchrun_rank()[0] == 0


def refuse_torchrun(work: str, reason: str) -> None:
    """An AmlabError, before any of the work starts, when torchrun started this process as
    one rank of several and ``work`` (named as the user typed it) is not spread over ranks:
    every rank would do all of it and write the same files. ``reason`` says why it runs in
    one process."""
    rank, world = torchrun_rank()
    if world > 1:
        raise AmlabError(
            f"{work} runs in one process ({reason}), and torchrun started this one as rank "
            f"{rank} of {world}: launch it without torchrun."
        )


def shard_range(num_memories: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [lo, hi) of ``num_memories`` that rank ``rank`` of ``world_size`` holds in the
    even split: contiguous, sizes differing by at most one (some empty when M < P)."""
    return num_memories * rank // world_size, num_memories * (rank + 1) // world_size


def check_group(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """This process's rank in ``group`` (None: the default group) and the group's size."""
    if not (dist.is_available() and dist.is_initialized()):
        raise AmlabError(
            "no torch.distributed process group: call amlab.distributed.init_group (or "
            "torch.distributed.init_process_group) on every rank first, or launch with "
            "torchrun and init_method='env://'."
        )
    return dist.get_rank(group), dist.get_world_size(group)


def all_reduce_(tensor: torch.Tensor, op: str, group: dist.ProcessGroup | None) -> torch.Tensor:
    """``tensor`` reduced in place over the group by ``op`` ("sum", "max", "min"): on return
    every rank holds the same values. Returns it."""
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    _collective(lambda: dist.all_reduce(tensor, op=reduce_op, group=group), [tensor], group)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int, group: dist.ProcessGroup | None) -> torch.Tensor:
    """``tensor`` overwritten in place with rank ``src``'s over the group. Returns it."""
    _collective(lambda: dist.broadcast(tensor, src=src, group=group), [tensor], group)
    return tensor


def broadcast_json(value: Any, device: torch.device | str = "cpu", src: int = 0) -> Any:
    """Rank ``src``'s ``value`` (anything JSON writes: lists, dicts, numbers, strings) on
    every rank of the default group; every rank calls it, and the others' ``value`` is not
    read. Two broadcasts: the length of the JSON text, then its UTF-8 bytes (nothing is
    pickled, unlike ``broadcast_object_list``; floats come back exactly). ``device``: where
    the tensors travel (CUDA for NCCL)."""
    rank, _ = check_group(None)
    text = json.dumps(value).encode() if rank == src else b""
    size = broadcast_(torch.tensor([len(text)], device=device), src, None)
    if rank == src:
        data = torch.frombuffer(bytearray(text), dtype=torch.uint8).to(device)
    else:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    return json.loads(broadcast_(data, src, None).cpu().numpy().tobytes())


def all_gather(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (each the same shape), in rank order."""
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    _collective(lambda: dist.all_gather(out, tensor, group=group), [tensor, *out], group)
    return out


#: How long :func:`_collective` waits, at most, for gloo's worker to let go of a
#: collective's tensors (microseconds when it gets the CPU; a bound, so it never hangs)
RELEASE_WAIT_S = 10.0


def _collective(run: Callable[[], object], tensors: list[torch.Tensor], group) -> None:
    """Run a collective over ``tensors``; a failure is an AmlabError (:func:`_lost`). On gloo,
    return only once the worker thread that ran it has let go of them.

    gloo runs a collective on a worker thread, which drops its hold on the tensors a moment
    after the caller has seen the collective complete; dropping a hold on a tensor that
    Python also holds takes the interpreter's lock. When the process is already ending by
    then, the interpreter stops that thread mid-drop and the process aborts ("terminate
    called without an active exception": seen at the end of two-rank training runs on a
    loaded machine, the worker in ``~AsyncBarrierWork`` taking the lock in
    ``Py_FinalizeEx``). ``destroy_process_group`` does not wait for the threads: once DDP or
    ``torch._dynamo`` has been imported, torch holds the group past it and never joins them.
    The hold shows in the tensor's Python reference count, so this waits until each count
    is back to what it was (and every amlab collective runs here, so none is left behind)."""
    gloo = dist.get_backend(group) == "gloo"
    own = _reference_counts(tensors) if gloo else None
    try:
        run()
    except RuntimeError as err:
        raise _lost(err) from err
    deadline = time.monotonic() + RELEASE_WAIT_S
    while gloo and _reference_counts(tensors) != own and time.monotonic() < deadline:
        time.sleep(1e-4)  # lets the worker take the interpreter's lock and let go


def _reference_counts(tensors: list[torch.Tensor]) -> list[int]:
    """Each tensor's Python reference count (each measured the same way, so that two
    calls compare: the count includes this function's own reference)."""
    return [sys.getrefcount(t) for t in tensors]


def _lost(err: RuntimeError) -> AmlabError:
    return AmlabError(
        f"a collective over the process group failed ({type(err).__name__}: {err}). Another "
        "rank has died, timed out or called a different operation; every rank must make the "
        "same calls with the same states."
    )


def merge_lse(
    lse: torch.Tensor, mean: torch.Tensor | None, group: dist.ProcessGroup | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The log-sum-exp (B,) and softmax-weighted mean (B, D) over the memories of every
    rank, from each rank's own over its shard (lse -inf and any finite mean for a shard of
    none): with the largest lse m of a row, ``lse = m + log sum_r w_r`` and
    ``mean = sum_r w_r mean_r / sum_r w_r``, ``w_r = exp(lse_r - m)``. Two all-reduces: the
    maxima (B numbers), then the weights with the weighted means (B (D + 1))."""
    top = all_reduce_(lse.clone(), "max", group)
    weight = torch.exp(lse - top)  # 0 for a shard of none (lse -inf)
    if mean is None:
        return top + all_reduce_(weight, "sum", group).log(), None
    packed = all_reduce_(torch.cat([weight[:, None], mean * weight[:, None]], 1), "sum", group)
    return top + packed[:, 0].log(), packed[:, 1:] / packed[:, :1]
