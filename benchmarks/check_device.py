"""amlab's hot paths on an accelerator, checked against independent computations.

The test suite runs on CPUs only (CI has no GPU). On a machine with one, run this once beside
`amlab bench`: each check computes on the device and compares with a float64 computation
on the CPU (or, for the LSR index, with the dense pass on the same device, whose active sets
must be identical):

- lse_float32 / lse_float64: the streaming LSE pass (log-sum-exp and softmax mean), at a
  moderate beta (the offset-free pass) and a large one (the running-max pass), against
  the whole score matrix in float64;
- lsr_index: indexed LSR support statistics against the dense pass (active counts equal,
  Z and sums close), clustered memories;
- retrieval: DenseAM LSE attention and LSR fixed-point retrieval against the same on CPU;
- energy_transformer: the forward pass (tokens and energies per step) against the CPU;
- drdam: DrDAM energy and gradient against the CPU.

    python benchmarks/check_device.py [--device cuda] [--size small|full] [--json FILE]

Prints one row per check and exits with status 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from amlab import DenseAM, EnergyTransformer, RandomFeatureAM
from amlab.energy.lse import lse_softmax_mean, memory_bias
from amlab.energy.lsr import lsr_support_stats
from amlab.energy.lsr_index import BallIndex
from amlab.io import atomic_write

F64 = torch.float64


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / (1 + |b|), on the CPU in float64."""
    a, b = a.detach().to("cpu", F64), b.detach().to("cpu", F64)
    return float(((a - b).abs() / (1 + b.abs())).max())


def _plain_lse(x: torch.Tensor, memories: torch.Tensor, beta: float):
    x, memories = x.to("cpu", F64), memories.to("cpu", F64)
    scores = beta * (x @ memories.T - 0.5 * (memories * memories).sum(1))
    return torch.logsumexp(scores, 1), torch.softmax(scores, 1) @ memories


def check_lse(dev: torch.device, dtype: torch.dtype, n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    memories = torch.rand(n, 64, generator=g, dtype=F64)
    x = memories[:32] + 0.05 * torch.randn(32, 64, generator=g, dtype=F64)
    worst = 0.0
    for beta in (0.1, 30.0):  # the offset-free pass, then the running-max pass
        mem_d, x_d = memories.to(dev, dtype), x.to(dev, dtype)
        lse, mean = lse_softmax_mean(x_d, mem_d, beta, bias=memory_bias(mem_d, "distance"))
        ref_lse, ref_mean = _plain_lse(x, memories, beta)
        worst = max(worst, _max_rel(lse / beta, ref_lse / beta), _max_rel(mean, ref_mean))
    return {"max_rel_difference": worst, "tolerance": 1e-4 if dtype == torch.float32 else 1e-10}


def check_lsr_index(dev: torch.device, n: int) -> dict:
    g = torch.Generator().manual_seed(1)
    centres = torch.rand(max(n // 100, 2), 16, generator=g)
    memories = centres.repeat_interleave(100, 0)
    memories = (memories + 0.02 * torch.randn(memories.shape, generator=g)).to(dev)
    x = memories[:64] + 0.01 * torch.randn(64, 16, generator=g).to(dev)
    beta = 2.0 / 0.3**2
    index = BallIndex.build(memories)
    dense = lsr_support_stats(x, memories, beta)
    indexed = index.support_stats(x, memories, beta)
    same_counts = bool(torch.equal(dense[1], indexed[1]))
    worst = max(_max_rel(indexed[0], dense[0]), _max_rel(indexed[2], dense[2]))
    return {
        "max_rel_difference": worst if same_counts else math.inf,
        "tolerance": 1e-4,
        "active_counts_equal": same_counts,
    }


def check_retrieval(dev: torch.device, n: int) -> dict:
    g = torch.Generator().manual_seed(2)
    memories = torch.rand(n, 32, generator=g, dtype=F64)
    x = memories[:16] + 0.05 * torch.randn(16, 32, generator=g, dtype=F64)
    worst = 0.0
    for energy, beta, method in (("lse", 20.0, "attention"), ("lsr", 2.0 / 0.5**2, "fixed_point")):
        on_cpu = DenseAM(memories, energy=energy, beta=beta).retrieve(x, method=method, steps=50)
        on_dev = DenseAM(memories.to(dev), energy=energy, beta=beta).retrieve(
            x.to(dev), method=method, steps=50
        )
        worst = max(worst, _max_rel(on_dev.states, on_cpu.states))
    return {"max_rel_difference": worst, "tolerance": 1e-10}


def check_energy_transformer(dev: torch.device) -> dict:
    model = EnergyTransformer(64, 4, 16, 256, steps=12, seed=0).to(F64)
    x = torch.randn(4, 32, 64, generator=torch.Generator().manual_seed(3), dtype=F64)
    on_cpu = model.retrieve(x)
    on_dev = model.to(dev).retrieve(x.to(dev))
    worst = max(_max_rel(on_dev.states, on_cpu.states), _max_rel(on_dev.energies, on_cpu.energies))
    return {"max_rel_difference": worst, "tolerance": 1e-9}


def check_drdam(dev: torch.device, n: int) -> dict:
    g = torch.Generator().manual_seed(4)
    patterns = torch.rand(n, 50, generator=g, dtype=F64) / math.sqrt(50)
    x = torch.rand(16, 50, generator=g, dtype=F64) / math.sqrt(50)
    rf = RandomFeatureAM.from_dense(DenseAM(patterns, beta=10.0), num_features=4096)
    e_cpu, g_cpu = rf.energy_and_grad(x)
    e_dev, g_dev = rf.to(dev).energy_and_grad(x.to(dev))
    return {
        "max_rel_difference": max(_max_rel(e_dev, e_cpu), _max_rel(g_dev, g_cpu)),
        "tolerance": 1e-9,
    }


def run_checks(device: str, size: str) -> list[dict]:
    dev = torch.device(device)
    n = {"small": 2_000, "full": 200_000}[size]
    checks: dict[str, Callable[[], dict]] = {
        "lse_float32": lambda: check_lse(dev, torch.float32, n),
        "lse_float64": lambda: check_lse(dev, F64, n),
        "lsr_index": lambda: check_lsr_index(dev, n),
        "retrieval": lambda: check_retrieval(dev, min(n, 20_000)),
        "energy_transformer": lambda: check_energy_transformer(dev),
        "drdam": lambda: check_drdam(dev, min(n, 20_000)),
    }
    rows = []
    for name, check in checks.items():
        row = {"name": name, **check()}
        row["ok"] = row["max_rel_difference"] <= row["tolerance"]
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = run_checks(args.device, args.size)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"amlab on {args.device} ({name}), torch {torch.__version__}")
    for row in rows:
        print(
            f"{row['name']:20s} max rel. difference {row['max_rel_difference']:.2e} "
            f"(tolerance {row['tolerance']:.0e})  {'ok' if row['ok'] else 'FAILED'}"
        )
    if args.json:
        text = json.dumps({"device": name, "torch": torch.__version__, "checks": rows}, indent=2)
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
