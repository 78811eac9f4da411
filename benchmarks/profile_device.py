"""Where the time goes on a GPU in the two workloads `amlab bench` found slower than plain there.

On an NVIDIA H200 (torch 2.11) `amlab bench` measured lse_784 at 0.65x its plain version and the
Energy Transformer's forward at 0.83x. This script times the LSE step three ways (through
``DenseAM.grad`` with its input checks, the bare streaming pass, plain matmul-softmax-matmul)
and prints ``torch.profiler`` tables of the DenseAM step and of one ET forward, sorted by CUDA
and by CPU time. Needs CUDA.

    PYTHONPATH=src python benchmarks/profile_device.py
"""

from __future__ import annotations

import torch
from common import best_time
from torch.profiler import ProfilerActivity, profile

from amlab import DenseAM
from amlab.energy.distances import sq_norms
from amlab.energy.lse import lse_softmax_mean, memory_bias
from amlab.models.energy_transformer import EnergyTransformer

ACTIVITIES = [ProfilerActivity.CPU, ProfilerActivity.CUDA]


def synced_ms(fn, repeats: int = 20) -> float:
    """Best time of fn in ms, the device synchronised after each call."""

    def call() -> None:
        fn()
        torch.cuda.synchronize()

    return best_time(call, repeats) * 1e3


def main() -> None:
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    b, m, d, beta = 256, 60_000, 784, 0.05  # amlab bench's lse_784
    memories = torch.rand(m, d, generator=g).to(dev)
    x = torch.rand(b, d, generator=g).to(dev)
    am = DenseAM(memories, beta=beta)
    mem_sq = sq_norms(memories)
    bias = memory_bias(memories, "distance", mem_sq)

    def plain() -> torch.Tensor:
        return torch.softmax(beta * (x @ memories.T - 0.5 * mem_sq), 1) @ memories

    def bare():
        return lse_softmax_mean(x, memories, beta, bias=bias, mem_sq=mem_sq)

    print(
        f"lse_784: DenseAM.grad {synced_ms(lambda: am.grad(x)):.3f} ms, "
        f"lse_softmax_mean {synced_ms(bare):.3f} ms, plain {synced_ms(plain):.3f} ms"
    )
    with profile(activities=ACTIVITIES) as prof:
        for _ in range(5):
            am.grad(x)
        torch.cuda.synchronize()
    for key in ("cuda_time_total", "cpu_time_total"):
        print(prof.key_averages().table(sort_by=key, row_limit=12))

    et = EnergyTransformer(256, 4, 64, 1024, steps=12, seed=0).to(dev)  # amlab bench's shape
    tokens = torch.randn(8, 64, 256, generator=g).to(dev)
    with torch.no_grad():
        print(f"Energy Transformer forward {synced_ms(lambda: et(tokens), 5):.2f} ms")
        with profile(activities=ACTIVITIES) as prof:
            et(tokens)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
