"""Running a test case on real process groups: ``world_size`` spawned processes joined in a
gloo group on this machine through a file store (no port to pick). Each spawn pays for
starting its processes, so a test runs all its cases in one. The group's timeout bounds every
wait: a broken case fails instead of hanging. And launching a script or a command as a user
does, under torchrun (:func:`launch`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from amlab.distributed import init_group, leaving_group

TIMEOUT_S = 30.0


def run_ranks(tmp_path, world_size, case, *args):
    """Run ``case(rank, world_size, *args)`` (a module-level function) on ``world_size``
    spawned gloo ranks; an exception in any rank fails the caller with its traceback."""
    store = tmp_path / f"store-{case.__name__}-{world_size}"
    mp.spawn(_rank, args=(world_size, str(store), case, args), nprocs=world_size, join=True)


def _rank(rank, world_size, store, case, args):
    torch.set_num_threads(1)
    init_group(f"file://{store}", rank, world_size, backend="gloo", timeout_s=TIMEOUT_S)
    with leaving_group():  # (a case whose rank left the group on purpose destroyed it already)
        case(rank, world_size, *args)


def launch(args, nproc=2, succeeds=True, timeout=300) -> str:
    """Run ``python [-m torch.distributed.run --standalone --nproc_per_node nproc] ARGS``
    (``nproc`` None: a plain process), one thread a process; check that it succeeds (or,
    ``succeeds=False``, fails) and return its stdout. A run that does not end as expected
    fails the caller with the launcher's and the ranks' own output, so that it says why."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)  # this process's own, if any, is not the launch's
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--standalone"]
    launcher += [] if nproc is None else ["--nproc_per_node", str(nproc)]
    # the launcher leads a session of its own, so that a run past ``timeout`` is ended with
    # its ranks (killing the launcher alone leaves them running, orphaned)
    proc = subprocess.Popen(
        [sys.executable, *launcher, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"ran past {timeout} s\n{stdout[-3000:]}{stderr[-6000:]}") from None
    except BaseException:  # (an interrupted test run leaves no ranks behind either)
        _kill_session(proc)
        proc.wait()
        raise
    assert (proc.returncode == 0) == succeeds, stdout[-3000:] + stderr[-6000:]
    return stdout


def _kill_session(proc: subprocess.Popen) -> None:
    """Kill every process of the session that ``proc`` leads (a launcher and its ranks)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # all of them ended meanwhile
        pass


#: runs ``amlab ARGS`` as one torchrun rank in a directory of its own, BASE/rank<R>, with its
#: stdout and stderr in BASE/rank<R>.stdout and .stderr: relative paths in ARGS (--out) land
#: in that rank's directory, so whatever a rank writes or prints is known to be its own
APART = """
import os, runpy, sys
base, rank = os.path.abspath(sys.argv[1]), os.environ["RANK"]
os.makedirs(os.path.join(base, "rank" + rank))
os.chdir(os.path.join(base, "rank" + rank))
for fd, name in ((1, "stdout"), (2, "stderr")):
    path = os.path.join(base, f"rank{rank}.{name}")
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
sys.argv = ["amlab", *sys.argv[2:]]
runpy.run_module("amlab.cli", run_name="__main__")
"""


def launch_apart(tmp_path, args, nproc=2, succeeds=True) -> list[tuple[Path, str, str]]:
    """Run ``torchrun -m amlab.cli ARGS`` on ``nproc`` ranks, each in a directory of its own
    (:data:`APART`); returns per rank its directory, stdout and stderr. A run that fails
    (``succeeds=False``: that succeeds) fails the caller with every rank's output."""
    base = tmp_path / "ranks"
    base.mkdir()
    script = tmp_path / "apart.py"
    script.write_text(APART)

    def read(rank: int, name: str) -> str:
        file = base / f"rank{rank}.{name}"
        return file.read_text() if file.exists() else ""

    try:
        launch([script, base, *args], nproc=nproc, succeeds=succeeds)
    except AssertionError as failed:
        ranks = "".join(f"\n-- rank {r}:\n{read(r, 'stderr')[-4000:]}" for r in range(nproc))
        raise AssertionError(f"{failed}{ranks}") from None
    return [(base / f"rank{r}", read(r, "stdout"), read(r, "stderr")) for r in range(nproc)]


def close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)
