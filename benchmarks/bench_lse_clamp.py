"""What clamping exponents below exp's normal range saves in the running-max LSE pass.

At a large beta most weights exp(s - offset) of a row lie below the smallest normal float;
torch's CPU exp and the matmuls that read such subnormal numbers run much slower. The pass
raises exponents to a floor first (the weights it changes are below 1e-35, nothing next to a
total >= 1). This script times the pass with and without that clamp (CPU time, one thread,
best of ``--repeats``) at the two shapes of ``amlab bench``'s LSE rows, reduced in M, over
a range of beta, and checks that both give the same log-sum-exp and mean.

    python benchmarks/bench_lse_clamp.py [--repeats N] [--json]
"""

from __future__ import annotations

import json
import math
import time
from functools import partial

import torch
from common import add_row, best_time, parse_options

from amlab.energy.chunks import chunk_ranges, score_block
from amlab.energy.distances import sq_norms
from amlab.energy.lse import _running_max_pass, memory_bias

SHAPES = ((256, 60_000, 784), (1024, 150_000, 64))  # (B, M, D)


def main() -> None:
    args = parse_options(__doc__, betas="50,1000,10000", repeats=2)
    torch.set_num_threads(1)
    floor = math.log(torch.finfo(torch.float32).tiny) + 8.0  # as lse_softmax_mean sets it
    g = torch.Generator().manual_seed(0)
    rows = []
    for b, m, d in SHAPES:
        memories, x = torch.rand(m, d, generator=g), torch.rand(b, d, generator=g)
        bias = memory_bias(memories, "distance", sq_norms(memories))
        chunks = list(chunk_ranges(m, b, None, score_block(x.device)))
        for beta in (float(v) for v in args.betas.split(",")):
            clamped = partial(_running_max_pass, x * beta, memories, bias * beta, chunks)
            (lse_c, mean_c), (lse_u, mean_u) = clamped(floor), clamped(None)
            torch.testing.assert_close(lse_c, lse_u)
            torch.testing.assert_close(mean_c, mean_u)
            with_clamp = best_time(partial(clamped, floor), args.repeats, time.process_time)
            without = best_time(partial(clamped, None), args.repeats, time.process_time)
            add_row(
                rows,
                {
                    "B": b,
                    "M": m,
                    "D": d,
                    "beta": beta,
                    "clamped_ms": with_clamp * 1e3,
                    "unclamped_ms": without * 1e3,
                    "speedup": without / with_clamp,
                },
                f"B={b} M={m} D={d} beta={beta:g}: clamped {with_clamp * 1e3:.0f} ms, "
                f"unclamped {without * 1e3:.0f} ms, x{without / with_clamp:.1f}",
                args.json,
            )
    if args.json:
        print(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
