"""Forward + backward of one amlab.nn.MemoryLayer against plain PyTorch autograd (float32).

One retrieval step of B = 256 queries from M learnable memories (values = the memories),
the loss a random projection of the output; gradients w.r.t. the queries and the memories.
The plain version is what one writes with autograd: scores by one matmul, softmax (LSE) or
the normalised Epanechnikov kernel (LSR), one matmul; autograd keeps its (B, M) blocks.
amlab's layer streams over chunks of memories forward and backward (recomputing each chunk's
weights). Two sizes: M = 60,000, D = 784 (MNIST-sized) and M = 10^6, D = 64, where the plain
version's (B, M) activations are a gigabyte each. Per row: the best time of ``--repeats``
runs after a warm-up, the largest tensor any torch op returns and the peak of the bytes held
at once by the tensors the run creates (gradients included; both by dispatch probes, which
see every tensor torch makes on the CPU), and the largest difference between the two
versions' outputs and gradients.

    OMP_NUM_THREADS=1 python benchmarks/bench_nn.py [--json] [--repeats N]
        [--energies lse,lsr] [--scale 1.0]
"""

from __future__ import annotations

import json
from functools import partial

import torch
from common import add_row, best_time, parse_options

from amlab.nn import MemoryLayer
from amlab.tasks.profiling import LargestTensor, PeakLiveBytes

SIZES = ((60_000, 784), (1_000_000, 64))
BATCH = 256
#: inverse temperatures: ~1/D-scaled for LSE; LSR's support radius sqrt(2/beta) ~ 1.4x the
#: queries' noise, so each query reaches a few memories
BETA = {"lse": 1.0, "lsr": 2.0}


def plain_read(q, memories, beta, energy):
    """The read-out written with autograd: (B, M) scores, weights, weighted sum."""
    if energy == "lse":
        scores = beta * (q @ memories.T - 0.5 * (memories * memories).sum(1))
        return torch.softmax(scores, 1) @ memories
    d2 = (q * q).sum(1, keepdim=True) + (memories * memories).sum(1) - 2 * q @ memories.T
    kernel = torch.relu(1 - beta / 2 * d2)
    return kernel @ memories / kernel.sum(1, keepdim=True).clamp_min(1e-30)


def run(fn, q, memories, target):
    """Forward + backward; the output and the gradients."""
    memories.grad = None
    q = q.detach().requires_grad_()
    out = fn(q)
    (out * target).sum().backward()
    return out.detach(), q.grad, memories.grad


def main() -> None:
    args = parse_options(__doc__, repeats=2, energies="lse,lsr", scale=1.0)
    rows: list[dict] = []
    for full, dim in SIZES:
        num = max(BATCH, int(full * args.scale))  # --scale < 1: a smaller smoke run
        gen = torch.Generator().manual_seed(0)
        memories = torch.randn(num, dim, generator=gen) / dim**0.5
        q = memories[:BATCH] + 0.5 * torch.randn(BATCH, dim, generator=gen) / dim**0.5
        target = torch.randn(BATCH, dim, generator=gen)
        for energy in args.energies.split(","):
            layer = MemoryLayer(dim, num, energy=energy, beta=BETA[energy])
            with torch.no_grad():
                layer.memories.copy_(memories)
            mem = layer.memories
            versions = {
                "amlab": lambda x, layer=layer: layer(x).output,
                "plain": lambda x, e=energy, b=BETA[energy], m=mem: plain_read(x, m, b, e),
            }
            results = {}
            for name, fn in versions.items():
                step = partial(run, fn, q, mem, target)
                seconds = best_time(step, args.repeats)
                with LargestTensor() as probe, PeakLiveBytes() as live:
                    results[name] = step()
                peak = live.peak
                row = {
                    "memories": num,
                    "dim": dim,
                    "batch": BATCH,
                    "energy": energy,
                    "version": name,
                    "seconds": seconds,
                    "largest_tensor_bytes": probe.largest_bytes,
                    "peak_live_bytes": peak,
                    "threads": torch.get_num_threads(),
                }
                add_row(
                    rows,
                    row,
                    f"M={num:>9,} D={dim:>3} {energy} {name:>5}: {seconds:7.3f} s, largest "
                    f"tensor {probe.largest_bytes / 2**20:8.1f} MiB, peak of live tensors "
                    f"{peak / 2**20:8.1f} MiB",
                    args.json,
                )
            diff = max(
                float((a - b).abs().max())
                for a, b in zip(results["amlab"], results["plain"], strict=True)
            )
            rows[-1]["max_abs_difference"] = rows[-2]["max_abs_difference"] = diff
            if not args.json:
                print(f"    largest |amlab - plain| over output and gradients: {diff:.2e}")
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
