"""Running a test case on real process groups: ``world_size`` spawned processes joined in a
gloo group on this machine through a file store (no port to pick). Each spawn pays for
starting its processes, so a test runs all its cases in one. The group's timeout bounds every
wait: a broken case fails instead of hanging. And launching a script or a command as a user
does, under torchrun (:func:`launch`)."""

from __future__ import annotations

import os
import subprocess
import sys

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


def launch(args, nproc=2, succeeds=True, timeout=300) -> str:
    """Run ``python [-m torch.distributed.run --standalone --nproc_per_node nproc] ARGS``
    (``nproc`` None: a plain process), one thread a process; check that it succeeds (or,
    ``succeeds=False``, fails) and return its stdout. A run that does not end as expected
    fails the caller with the launcher's and the ranks' own output, so that it says why."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)  # this process's own, if any, is not the launch's
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--standalone"]
    launcher += [] if nproc is None else ["--nproc_per_node", str(nproc)]
    done = subprocess.run(
        [sys.executable, *launcher, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert (done.returncode == 0) == succeeds, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout


def close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)
