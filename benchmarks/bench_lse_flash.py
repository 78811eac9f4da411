"""amlab's streaming LSE pass against PyTorch's fused CPU flash-attention kernel.

One LSE retrieval step is attention with the memories as keys and values, scale beta and
the memory bias as an additive mask, so PyTorch's CPU flash-attention kernel
(``aten::_scaled_dot_product_flash_attention_for_cpu``, which also returns the
log-sum-exp the energy needs) computes the same two outputs in one fused C++ loop. This
script checks that both agree with a float64 computation, then times both (wall clock,
best of ``--repeats``) over a grid of batch sizes B and dimensions D, with M D = 8e6
(32 MB of float32 memories), and prints the fused kernel's time as a share of amlab's.

    python benchmarks/bench_lse_flash.py [--threads N] [--repeats N] [--json]

The kernel is a private ATen op (its schema is the same from torch 2.3 to 2.13); amlab does
not call it. What this measured on the development machine is in the README's speed section.
"""

from __future__ import annotations

import json
from functools import partial

import torch
from common import add_row, best_time, parse_options

from amlab.energy.distances import sq_norms
from amlab.energy.lse import lse_softmax_mean, memory_bias


def flash_pass(x, memories, beta, bias):
    """(log-sum-exp (B,), softmax-weighted mean of the memories (B, D)) from the kernel."""
    keys = memories[None, None]
    mean, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        x[None, None], keys, keys, 0.0, False, attn_mask=(beta * bias)[None, None, None], scale=beta
    )
    return lse.reshape(-1), mean.reshape(x.shape)


def main() -> None:
    args = parse_options(
        __doc__,
        threads=torch.get_num_threads(),
        repeats=3,
        dims="64,784",
        batches="1,16,128,256,1024",
    )
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        m = 8_000_000 // dim
        memories = torch.rand(m, dim, generator=g)
        mem_sq = sq_norms(memories)
        bias = memory_bias(memories, "distance", mem_sq)
        beta = 6.4 / dim
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.rand(batch, dim, generator=g)
            ours = partial(lse_softmax_mean, x, memories, beta, bias=bias, mem_sq=mem_sq)
            fused = partial(flash_pass, x, memories, beta, bias)
            exact = lse_softmax_mean(x.double(), memories.double(), beta, bias=bias.double())
            for lse, mean in (ours(), fused()):
                torch.testing.assert_close(lse.double(), exact[0], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(mean.double(), exact[1], rtol=1e-5, atol=1e-5)
            t_ours, t_flash = best_time(ours, args.repeats), best_time(fused, args.repeats)
            add_row(
                rows,
                {
                    "D": dim,
                    "M": m,
                    "B": batch,
                    "amlab_ms": t_ours * 1e3,
                    "flash_ms": t_flash * 1e3,
                    "flash_over_amlab": t_flash / t_ours,
                },
                f"D={dim:4d} M={m:7d} B={batch:5d}  amlab {t_ours * 1e3:8.2f} ms  "
                f"flash {t_flash * 1e3:8.2f} ms  flash/amlab {t_flash / t_ours:.2f}",
                args.json,
            )
    if args.json:
        print(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
