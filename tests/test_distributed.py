"""ShardedDenseAM over real process groups: 2 and 3 gloo ranks on this machine, each a
spawned process, compared with one DenseAM holding every memory (float64 to 1e-12).

Each spawn runs every case in its ranks (starting processes is the slow part); a failing
assertion in any rank fails the test with that rank's traceback. The group's timeout bounds
every wait, so a broken case fails instead of hanging.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ranks import TIMEOUT_S, close, launch, run_ranks

from amlab import dynamics
from amlab.distributed import ShardedDenseAM, init_group, shard_range
from amlab.distributed.group import all_gather, all_reduce_, broadcast_
from amlab.errors import AmlabError
from amlab.models import DenseAM


def same_trajectory(got, want, tol=1e-12):
    close(got.states, want.states, tol)
    assert torch.equal(got.steps, want.steps) and torch.equal(got.converged, want.converged)
    for name in ("energies", "path"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            close(a, b, tol)


def problem(energy, num_memories):
    """Memories (M, 6) in the unit cube, states near some of them, the energy's options."""
    gen = torch.Generator().manual_seed(7)
    mem = torch.rand(num_memories, 6, generator=gen, dtype=torch.float64)
    x = mem[[0, 3, num_memories - 1, 5, 2]] + 0.15 * torch.randn(
        5, 6, generator=gen, dtype=torch.float64
    )
    beta = 6.0 if energy == "lsr" else 4.0
    return mem, x, dict(energy=energy, beta=beta, eps=1e-3 if energy == "lsr" else 0.0)


def every_method_matches(rank, world_size, sizes):
    lo = sum(sizes[:rank])
    for energy in ("lse", "lse_dot", "lsr"):
        mem, x, options = problem(energy, sum(sizes))
        full = DenseAM(mem, dtype=torch.float64, index="none", **options)
        shard = ShardedDenseAM(
            mem[lo : lo + sizes[rank]], dtype=torch.float64, index="none", **options
        )
        assert (shard.num_memories, shard.total_memories, shard.offset) == (
            sizes[rank],
            sum(sizes),
            lo,
        )
        close(shard.energy(x), full.energy(x))
        close(shard.grad(x), full.grad(x))
        for got, want in zip(shard.energy_and_grad(x), full.energy_and_grad(x), strict=True):
            close(got, want)
        close(shard.energy(x[1]), full.energy(x[1]))  # one state (D,)
        close(shard.update(x), full.update(x))
        for got, want in zip(shard.nearest(x), full.nearest(x), strict=True):
            close(got, want)
        # autograd through the energy gives the analytic gradient, on every rank
        leaf = x.clone().requires_grad_(True)
        (3 * shard.energy(leaf).sum()).backward()
        close(leaf.grad, 3 * full.grad(x))
        clamp = torch.zeros(5, 6, dtype=torch.bool)
        clamp[:, :2] = True
        for method in shard.METHODS:
            if method == ("attention" if energy == "lsr" else "fixed_point"):
                continue
            for kwargs in (
                dict(steps=20),  # attention: every query converges, each at its own step
                dict(steps=8, clamp=clamp, record_states=True),
                dict(steps=8, step_size=lambda t: 0.5 / (1 + t), tol=0.0),
                dict(steps=30, step_size=0.5, record_energies=False),
            ):
                same_trajectory(
                    shard.retrieve(x, method=method, **kwargs),
                    full.retrieve(x, method=method, **kwargs),
                )
    # LSR through each shard's ball index: the dense pass's results, to rounding
    mem, x, options = problem("lsr", sum(sizes))
    full = DenseAM(mem, dtype=torch.float64, index="none", **options)
    indexed = ShardedDenseAM(
        mem[lo : lo + sizes[rank]], dtype=torch.float64, index="clusters", **options
    )
    close(indexed.energy(x), full.energy(x), 1e-10)
    same_trajectory(
        indexed.retrieve(x, method="fixed_point"), full.retrieve(x, method="fixed_point"), 1e-10
    )
    # float32: to float32 rounding
    mem, x, options = problem("lse", sum(sizes))
    full32 = DenseAM(mem, dtype=torch.float32, **options)
    shard32 = ShardedDenseAM(mem[lo : lo + sizes[rank]], dtype=torch.float32, **options)
    close(shard32.energy(x.float()), full32.energy(x.float()), 1e-5)
    same_trajectory(
        shard32.retrieve(x.float(), method="attention", tol=0.0, steps=10),
        full32.retrieve(x.float(), method="attention", tol=0.0, steps=10),
        1e-5,
    )
    # the even split of from_all, and add (collective: each rank its own patterns)
    even = ShardedDenseAM.from_all(mem, dtype=torch.float64, **options)
    assert even.num_memories == len(range(*shard_range(sum(sizes), rank, world_size)))
    close(even.energy(x), DenseAM(mem, dtype=torch.float64, **options).energy(x))
    extra = torch.rand(3, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    even.add(extra[rank : rank + 1] if rank < 3 else extra[:0])
    grown = DenseAM(torch.cat([mem, extra[:world_size]]), dtype=torch.float64, **options)
    assert even.total_memories == sum(sizes) + min(world_size, 3)
    close(even.grad(x), grown.grad(x))


@pytest.mark.parametrize("sizes", [[7, 10], [5, 0, 12]], ids=["2 ranks", "3 ranks, one empty"])
def test_sharded_dense_am_returns_what_one_process_returns(tmp_path, sizes):
    run_ranks(tmp_path, len(sizes), every_method_matches, sizes)


def misuse_is_refused(rank, world_size):
    mem, x, options = problem("lse", 8)
    with pytest.raises(AmlabError, match="joined a process group already"):
        init_group("tcp://127.0.0.1:1", rank, world_size)
    with pytest.raises(AmlabError, match="disagree on the memory's beta"):
        ShardedDenseAM(mem, dtype=torch.float64, **{**options, "beta": 1.0 + rank})
    with pytest.raises(AmlabError, match="every shard is empty"):
        ShardedDenseAM(mem[:0], dtype=torch.float64, **options)
    shard = ShardedDenseAM.from_all(mem, dtype=torch.float64, **options)
    with pytest.raises(AmlabError, match="rank 1 passed other states"):
        shard.energy(x + rank)
    with pytest.raises(AmlabError, match="rank 1 passed other states"):
        shard.retrieve(x[: 5 - rank])
    # lockstep: ranks that learn at different steps which queries stopped (a GPU's copies
    # arriving at different times; here rank 1 never sees one arrive) still drop them
    # together, so their collectives keep matching shapes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamics._HostCopy, "arrived", lambda self: rank == 0)
        same_trajectory(
            shard.retrieve(x, method="attention"),
            DenseAM(mem, dtype=torch.float64, **options).retrieve(x, method="attention"),
        )
    # a rank that leaves: the other's next collective fails with a clear error, in time
    if rank == 1:
        dist.destroy_process_group()
        return
    start = time.monotonic()
    with pytest.raises(AmlabError, match="collective over the process group failed"):
        shard.energy(x)
    assert time.monotonic() - start < TIMEOUT_S + 10
    dist.destroy_process_group()  # the group is broken: leave it too


def test_misuse_and_a_lost_rank_are_refused(tmp_path):
    run_ranks(tmp_path, 2, misuse_is_refused)


def collectives_let_go_before_returning(rank, world_size):
    """gloo runs a collective on a worker thread that lets go of its tensors a moment after
    the caller sees it complete, taking the interpreter's lock to do so; one still letting
    go when the process ends aborts it. amlab's collectives return only once it has: the
    worker's hold shows in the tensor's reference count (torch.distributed's own returned
    with it held in about 1 call of 6 here)."""
    for _ in range(100):
        t = torch.ones(8)
        own = sys.getrefcount(t)
        all_reduce_(t, "sum", None)
        assert sys.getrefcount(t) == own
        broadcast_(t, 0, None)
        assert sys.getrefcount(t) == own
        all_gather(t, None)
        assert sys.getrefcount(t) == own
    assert torch.equal(t, torch.full((8,), float(world_size)))


def test_collectives_return_once_gloo_has_let_go_of_their_tensors(tmp_path):
    run_ranks(tmp_path, 2, collectives_let_go_before_returning)


def test_a_rank_that_never_joins_is_a_clear_error_in_bounded_time(tmp_path):
    start = time.monotonic()
    with pytest.raises(AmlabError, match=r"rank 0 of 2 could not join .* within 2 s"):
        init_group(f"file://{tmp_path / 'store'}", 0, 2, backend="gloo", timeout_s=2.0)
    assert time.monotonic() - start < 30
    assert not dist.is_initialized()


def test_without_a_group_a_clear_error():
    with pytest.raises(AmlabError, match="no torch.distributed process group"):
        ShardedDenseAM(torch.zeros(2, 3))


def test_a_command_leaves_the_process_group_it_ran_in(tmp_path):
    """An amlab command run in a process group (as under torchrun) leaves it when it ends,
    whether it succeeded (after a barrier) or failed; leave_group outside a group does
    nothing."""
    from typer.testing import CliRunner

    from amlab.cli import app
    from amlab.distributed import leave_group

    leave_group()  # no group: nothing to leave
    missing = ["--data", "mnist", "--data-dir", str(tmp_path / "no-mnist")]
    for name, data, code in (("good", [], 0), ("bad", missing, 2)):
        init_group(f"file://{tmp_path / name}-group", 0, 1, backend="gloo")
        assert dist.is_initialized()
        args = ["--memories", "6", "--shards", "2", "--out", str(tmp_path / name), *data]
        result = CliRunner().invoke(app, ["store", "write", *args, "--json"])
        assert result.exit_code == code, result.output
        assert not dist.is_initialized(), name


#: a "launcher" that starts a "rank" (a process of its own that writes its pid and sleeps),
#: then sleeps itself: what a launch that hangs leaves
HANGS = """
import subprocess, sys, time
rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(rank.pid))
time.sleep(120)
"""


def test_a_launch_past_its_timeout_ends_its_ranks_too(tmp_path):
    """``ranks.launch`` ends a run past its timeout with every process the launcher
    started, not the launcher alone (whose ranks would go on running, orphaned)."""
    script, pid_file = tmp_path / "hangs.py", tmp_path / "rank.pid"
    script.write_text(HANGS)
    with pytest.raises(AssertionError, match="ran past"):
        launch([script, pid_file], nproc=None, timeout=5)
    pid = int(pid_file.read_text())

    def alive() -> bool:  # (a killed process not yet reaped is a zombie: state Z)
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive()
