"""One LSE retrieval step (attention update) at B = 256, M = 60,000, D = 784, float32.

Compares amlab's chunked streaming step against a plain torch implementation
(matmul, softmax, matmul) in the same run, and against the machine's measured
2048 x 2048 matmul rate. A step costs 4 B M D flops (two matmuls).

    python benchmarks/bench_lse_step.py [--json] [--repeats N]
"""

from __future__ import annotations

import json

import torch
from common import best_time, parse_options

from amlab import DenseAM


def plain_dot_step(x: torch.Tensor, memories: torch.Tensor, beta: float) -> torch.Tensor:
    """Plain torch: matmul, softmax, matmul, with the whole (B, M) score matrix."""
    scores = beta * (x @ memories.T - 0.5 * (memories * memories).sum(1))
    return torch.softmax(scores, dim=1) @ memories


def main() -> None:
    args = parse_options(__doc__, repeats=5, batch=256, memories=60_000, dim=784)
    torch.manual_seed(0)
    b, m, d = args.batch, args.memories, args.dim
    memories = torch.rand(m, d)
    x = torch.rand(b, d)
    beta = 0.05
    am = DenseAM(memories, beta=beta)

    a = torch.randn(2048, 2048)
    t_mm = best_time(lambda: a @ a, args.repeats)
    matmul_gflops = 2 * 2048**3 / t_mm / 1e9

    flops = 4 * b * m * d

    # one step is one pass over the memories: energy and gradient at x, and x - grad is the
    # attention update (a retrieval of T steps makes T + 1 such passes)
    def amlab_step() -> torch.Tensor:
        return x - am.grad(x)

    t_amlab = best_time(amlab_step, args.repeats)
    t_plain = best_time(lambda: plain_dot_step(x, memories, beta), args.repeats)
    same = torch.allclose(amlab_step(), plain_dot_step(x, memories, beta), atol=1e-4, rtol=1e-4)
    report = {
        "shape": {"B": b, "M": m, "D": d, "dtype": "float32"},
        "threads": torch.get_num_threads(),
        "matmul_2048_gflops": matmul_gflops,
        "amlab_step_seconds": t_amlab,
        "amlab_gflops": flops / t_amlab / 1e9,
        "plain_step_seconds": t_plain,
        "plain_gflops": flops / t_plain / 1e9,
        "speedup_vs_plain": t_plain / t_amlab,
        "amlab_fraction_of_matmul_rate": flops / t_amlab / 1e9 / matmul_gflops,
        "same_result": same,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"LSE retrieval step, B={b} M={m} D={d} float32, {report['threads']} threads")
    print(f"  torch matmul 2048^2      : {matmul_gflops:7.1f} GFLOP/s")
    print(
        f"  plain torch step         : {t_plain * 1e3:7.1f} ms  "
        f"{report['plain_gflops']:6.1f} GFLOP/s"
    )
    print(
        f"  amlab step               : {t_amlab * 1e3:7.1f} ms  "
        f"{report['amlab_gflops']:6.1f} GFLOP/s"
    )
    print(
        f"  amlab / plain speed ratio: {report['speedup_vs_plain']:.2f}x, "
        f"{report['amlab_fraction_of_matmul_rate']:.2f} of the matmul rate; "
        f"same result: {same}"
    )


if __name__ == "__main__":
    main()
