"""Running a test case on real process groups: ``world_size`` spawned processes joined in a
gloo group on this machine through a file store (no port to pick). Each spawn pays for
starting its processes, so a test runs all its cases in one. The group's timeout bounds every
wait: a broken case fails instead of hanging."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from amlab.distributed import init_group

TIMEOUT_S = 30.0


def run_ranks(tmp_path, world_size, case, *args):
    """Run ``case(rank, world_size, *args)`` (a module-level function) on ``world_size``
    spawned gloo ranks; an exception in any rank fails the caller with its traceback."""
    store = tmp_path / f"store-{case.__name__}-{world_size}"
    mp.spawn(_rank, args=(world_size, str(store), case, args), nprocs=world_size, join=True)


def _rank(rank, world_size, store, case, args):
    torch.set_num_threads(1)
    init_group(f"file://{store}", rank, world_size, backend="gloo", timeout_s=TIMEOUT_S)
    try:
        case(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)
