"""amlab.nn under DistributedDataParallel: 2 spawned gloo ranks, each training a MemoryLayer
(learnable memories, values and beta) on its half of a batch, get the gradients and weights of
one process training on the whole batch (float64, to 1e-12)."""

from __future__ import annotations

import copy

import torch
from ranks import close, run_ranks
from torch.nn.parallel import DistributedDataParallel

from amlab.nn import MemoryLayer

F64 = torch.float64
PER_RANK = 6


def loss_of(result, target):
    """A loss of both outputs: the read-out's squared error and the mean energy per step."""
    return ((result.output - target) ** 2).mean() + 0.1 * result.energies.mean()


def ddp_equals_one_process(rank, world_size):
    for energy, beta, value_dim in (("lse", 2.0, None), ("lsr", 0.3, 3)):
        # two steps: LSR's damped centroid step, then the read-out (of the memories, or values)
        layer = MemoryLayer(
            5,
            16,
            value_dim=value_dim,
            energy=energy,
            beta=beta,
            learn_beta=True,
            eps=0.1,
            steps=2,
            init_scale=0.8,
            dtype=F64,
        )
        whole = copy.deepcopy(layer)  # one process, the whole batch
        ddp = DistributedDataParallel(layer)
        gen = torch.Generator().manual_seed(1)
        x = 0.8 * torch.randn(world_size * PER_RANK, 5, generator=gen, dtype=F64)
        target = torch.randn(world_size * PER_RANK, value_dim or 5, generator=gen, dtype=F64)
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (layer, whole)]
        for _ in range(3):
            for opt in optimizers:
                opt.zero_grad()
            loss_of(ddp(x[mine]), target[mine]).backward()  # DDP averages over the ranks
            loss_of(whole(x), target).backward()
            for (name, p), q in zip(layer.named_parameters(), whole.parameters(), strict=True):
                assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
                close(p.grad, q.grad)
            for opt in optimizers:
                opt.step()
        for p, q in zip(layer.parameters(), whole.parameters(), strict=True):
            close(p.detach(), q.detach())


def test_ddp_of_a_memory_layer_equals_one_process_on_the_whole_batch(tmp_path):
    run_ranks(tmp_path, 2, ddp_equals_one_process)
