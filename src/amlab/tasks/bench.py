"""``amlab bench``: amlab's hot paths against plain implementations and the matmul rate.

Every workload is timed in the same run as the machine's 2048 x 2048 matmul rate (measured
again just before each workload, as a shared machine's rate drifts; the report's headline
rate is the highest seen) and as a plain implementation of the same computation, so the
ratios hold even on a busy machine (the absolute times do not). Each workload reports its
time, GFLOP/s (flops counted analytically, or by torch's flop counter where marked), the
fraction of the matmul rate, the speed-up over the plain implementation, both peak memories
(growth of the process's peak resident memory on a CPU, the allocator's peak on CUDA), the
largest tensor each one makes, and the largest difference between the two results.

Workloads (full size; ``quick`` shrinks each for a smoke test):

- ``lse_784``: one LSE step (energy and gradient, i.e. the attention update), B = 256,
  M = 60,000, D = 784; plain: matmul, softmax, matmul over the whole score matrix.
- ``lse_64``: the same at B = 1,024, M = 600,000, D = 64 (plain holds a 2.4 GB matrix).
- ``update_784``: one attention (Hopfield) update through the public API,
  ``DenseAM.update`` (the softmax-weighted mean of the memories, no energy), at lse_784's
  sizes; plain: matmul, an in-place softmax, matmul. Both results' largest relative row
  error against float64 (on the first 16 queries) is reported too, and the time of the
  update's two matmuls alone (chunked as the pass chunks them, ``matmuls_seconds``) with
  ``speedup_ceiling``, plain's time over it: the most any update making both matmuls
  could gain over plain.
- ``update_64``: the same at lse_64's sizes.
- ``lsr_index``: one LSR fixed-point pass on clustered memories (M = 1,000,000, D = 64,
  supports of about 200), through the ball index; plain: the dense pass. The index's
  one-off build time is reported separately.
- ``drdam``: one DrDAM energy-and-gradient step at Y = 16,384 random features (D = 100,
  B = 64); plain: the exact DenseAM step over the M = 100,000 patterns it stores.
- ``energy_transformer``: the Energy Transformer's forward pass (12 steps); plain: the same
  steps with the gradient taken by autograd.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from amlab.energy.chunks import chunk_ranges, score_block
from amlab.energy.lsr import lsr_support_stats
from amlab.energy.transformer import attention_energy, attention_mask, hopfield_energy
from amlab.errors import AmlabError, check_choice, check_positive_int
from amlab.models import DenseAM, EnergyTransformer, RandomFeatureAM
from amlab.tasks.profiling import LargestTensor, peak_memory_bytes

WORKLOADS = (
    "lse_784",
    "lse_64",
    "update_784",
    "update_64",
    "lsr_index",
    "drdam",
    "energy_transformer",
)
CLOCKS = ("wall", "cpu")
DEVICES = ("cpu", "cuda")


@dataclass
class Workload:
    """One comparison: ``run`` (amlab) and ``plain`` compute the same result."""

    shape: dict[str, Any]
    flops: float | None
    run: Callable[[], torch.Tensor]
    plain: Callable[[], torch.Tensor]
    extra: dict[str, Any]
    #: the float64 result of the first rows of both, to report their errors against it
    reference: Callable[[], torch.Tensor] | None = None
    #: the workload's matmuls alone (no exponentials, no sums), chunked as amlab's pass
    #: chunks them: a time that no implementation making those matmuls can beat by much
    matmuls: Callable[[], object] | None = None


def run_bench(
    *,
    quick: bool = False,
    workloads: tuple[str, ...] = WORKLOADS,
    repeats: int = 3,
    device: str | None = None,
    threads: int | None = None,
    clock: str = "wall",
    seed: int = 0,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Run the chosen workloads on ``device`` (default: cuda when present), the CPU's with
    ``threads`` torch threads (default: torch's choice); returns the report
    (JSON-serialisable)."""
    for name in workloads:
        check_choice(name, "workload", WORKLOADS)
    repeats = check_positive_int(repeats, "repeats")
    clock = check_choice(clock, "clock", CLOCKS)
    device = check_choice(
        device or ("cuda" if torch.cuda.is_available() else "cpu"), "device", DEVICES
    )
    if device == "cuda" and not torch.cuda.is_available():
        raise AmlabError("--device cuda: torch sees no CUDA device here; use --device cpu.")
    if device != "cpu" and clock == "cpu":
        raise AmlabError(
            f"--clock cpu (the process's CPU time) does not time work on --device {device}; "
            "use --clock wall."
        )
    if device != "cpu" and threads is not None:
        raise AmlabError(
            f"--threads would do nothing: it sets torch's CPU threads, and the work runs on "
            f"--device {device}; drop --threads, or pass --device cpu."
        )
    if threads is not None:
        torch.set_num_threads(check_positive_int(threads, "threads"))
    dev = torch.device(device)
    timer = _Timer(dev, clock, repeats)
    report: dict[str, Any] = {
        "device": _device_name(dev),
        "threads": torch.get_num_threads(),
        "clock": clock,
        "repeats": repeats,
        "quick": quick,
        "load_average_before": _load_average(),
    }
    size = 2048 if not quick else 512
    a = torch.randn(size, size, device=dev)

    def matmul_gflops() -> float:
        return 2 * size**3 / timer.best(lambda: a @ a) / 1e9

    report["matmul_size"] = size
    rates = [matmul_gflops()]
    rows = []
    for i, name in enumerate(workloads):
        if progress is not None:
            progress(name, i / len(workloads))
        work = _BUILDERS[name](dev, quick, seed)
        # the rate just before the workload: a shared machine's rate drifts during a run
        rates.append(matmul_gflops())
        rows.append(_measure(name, work, timer, rates[-1]))
        del work
    report["matmul_gflops"] = max(rates)
    report["workloads"] = rows
    report["load_average_after"] = _load_average()
    if progress is not None:
        progress("done", 1.0)
    return report


def _measure(name: str, work: Workload, timer: _Timer, matmul_gflops: float) -> dict[str, Any]:
    seconds = timer.best(work.run)
    plain_seconds = timer.best(work.plain)
    ours, theirs = work.run(), work.plain()
    row: dict[str, Any] = {"name": name, "shape": work.shape, "seconds": seconds}
    gflops = None if work.flops is None else work.flops / seconds / 1e9
    row["gflops"] = gflops
    row["matmul_gflops"] = matmul_gflops
    row["fraction_of_matmul"] = None if gflops is None else gflops / matmul_gflops
    row["plain_seconds"] = plain_seconds
    row["plain_gflops"] = None if work.flops is None else work.flops / plain_seconds / 1e9
    row["speedup_vs_plain"] = plain_seconds / seconds
    row["peak_bytes"] = peak_memory_bytes(work.run, timer.device)
    row["plain_peak_bytes"] = peak_memory_bytes(work.plain, timer.device)
    row["largest_tensor_bytes"] = _largest_tensor_bytes(work.run)
    row["plain_largest_tensor_bytes"] = _largest_tensor_bytes(work.plain)
    row["max_abs_difference"] = float((ours.double() - theirs.double()).abs().max())
    if work.reference is not None:
        exact = work.reference()
        for key, result in (("error_vs_float64", ours), ("plain_error_vs_float64", theirs)):
            error = (result[: exact.shape[0]].double() - exact).norm(dim=1) / exact.norm(dim=1)
            row[key] = float(error.max())
    if work.matmuls is not None:
        row["matmuls_seconds"] = timer.best(work.matmuls)
        row["speedup_ceiling"] = plain_seconds / row["matmuls_seconds"]
    row.update(work.extra)
    return row


def _largest_tensor_bytes(fn: Callable[[], object]) -> int:
    with LargestTensor() as probe:
        fn()
    return probe.largest_bytes


class _Timer:
    """Best of ``repeats`` runs after a warm-up, by wall clock (synchronised on CUDA) or by
    the process's CPU time (robust to other processes on the machine; one thread only)."""

    def __init__(self, device: torch.device, clock: str, repeats: int) -> None:
        self.device, self.repeats = device, repeats
        self.now = time.process_time if clock == "cpu" else time.perf_counter

    def best(self, fn: Callable[[], object]) -> float:
        fn()
        best = math.inf
        for _ in range(self.repeats):
            self._sync()
            start = self.now()
            fn()
            self._sync()
            best = min(best, self.now() - start)
        return best

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({os.cpu_count()} cores seen, torch {torch.__version__})"


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the workloads -----------------------------------------------------------------------


def _lse_problem(dev: torch.device, quick: bool, seed: int, b: int, m: int, d: int, beta: float):
    """States x (B, D), memories (M, D), their DenseAM (norms computed: the model's one-off
    cost, outside the timing), the shape to report and the flops of a pass (its two matmuls);
    ``quick`` shrinks B and M."""
    nb, nm = (max(8, b // 8), max(500, m // 50)) if quick else (b, m)
    g = _generator(seed)
    memories = torch.rand(nm, d, generator=g).to(dev)
    x = torch.rand(nb, d, generator=g).to(dev)
    am = DenseAM(memories, beta=beta)
    am.memory_sq_norms()
    shape = {"B": nb, "M": nm, "D": d, "beta": beta, "dtype": "float32"}
    return x, memories, am, shape, 4.0 * nb * nm * d


def _lse(b: int, m: int, d: int, beta: float):
    def build(dev: torch.device, quick: bool, seed: int) -> Workload:
        x, memories, am, shape, flops = _lse_problem(dev, quick, seed, b, m, d, beta)

        def plain() -> torch.Tensor:
            scores = torch.addmm(-0.5 * (memories * memories).sum(1), x, memories.T).mul_(beta)
            return torch.softmax(scores, dim=1) @ memories

        return Workload(shape, flops, lambda: x - am.grad(x), plain, {})

    return build


def _update(b: int, m: int, d: int, beta: float):
    def build(dev: torch.device, quick: bool, seed: int) -> Workload:
        x, memories, am, shape, flops = _lse_problem(dev, quick, seed, b, m, d, beta)
        bias = -0.5 * am.memory_sq_norms()

        def plain() -> torch.Tensor:
            weights = torch.addmm(bias, x, memories.T).mul_(beta)
            weights = weights.sub_(weights.amax(1, keepdim=True)).exp_()
            return weights.div_(weights.sum(1, keepdim=True)) @ memories

        def reference() -> torch.Tensor:
            scores = x[:16].double() @ memories.double().T + bias.double()
            return torch.softmax(beta * scores, dim=1) @ memories.double()

        chunks = list(chunk_ranges(memories.shape[0], x.shape[0], None, score_block(dev)))

        def matmuls() -> torch.Tensor:
            batch, blocks = x.shape[0], x.new_empty(x.shape[0] * chunks[0][1])
            total = torch.zeros_like(x)
            for lo, hi in chunks:
                scores = blocks[: batch * (hi - lo)].view(batch, hi - lo)
                total.addmm_(torch.mm(x, memories[lo:hi].T, out=scores), memories[lo:hi])
            return total

        return Workload(
            shape,
            flops,
            lambda: am.update(x),
            plain,
            {"plain_is": "matmul, in-place softmax, matmul"},
            reference,
            matmuls,
        )

    return build


def _lsr_index(dev: torch.device, quick: bool, seed: int) -> Workload:
    g = _generator(seed)
    per_cluster, d, b = 200, 64, 256
    num_clusters = 100 if quick else 5000
    centres = torch.rand(num_clusters, d, generator=g)
    memories = centres.repeat_interleave(per_cluster, 0)
    memories += 0.02 * torch.randn(memories.shape, generator=g)
    memories = memories[torch.randperm(memories.shape[0], generator=g)].to(dev)
    x = (memories[:b] + 0.01 * torch.randn(b, d, generator=g).to(dev)).contiguous()
    beta = 8.0  # support radius 0.5: about one cluster
    indexed = DenseAM(memories, energy="lsr", beta=beta, index="clusters")
    start = time.perf_counter()
    index = indexed.lsr_index(x)
    build_seconds = time.perf_counter() - start
    mem_sq = indexed.memory_sq_norms()

    def run() -> torch.Tensor:
        return index.support_stats(x, memories, beta, mem_sq=mem_sq)[2]

    def plain() -> torch.Tensor:
        return lsr_support_stats(x, memories, beta, mem_sq=mem_sq)[2]

    counts = index.support_stats(x, memories, beta, mem_sq=mem_sq)[1]
    return Workload(
        {"B": b, "M": memories.shape[0], "D": d, "beta": beta, "dtype": "float32"},
        4.0 * b * memories.shape[0] * d,  # the dense pass's flops: an effective rate
        run,
        plain,
        {
            "index_build_seconds": build_seconds,
            "index_balls": index.num_clusters,
            "mean_support": float(counts.mean()),
            "flops_note": "dense-equivalent (effective) rate",
        },
    )


def _drdam(dev: torch.device, quick: bool, seed: int) -> Workload:
    d, b = 100, 64
    y, m = (1024, 5000) if quick else (16_384, 100_000)
    g = _generator(seed)
    patterns = (torch.rand(m, d, generator=g) / math.sqrt(d)).to(dev)
    x = (torch.rand(b, d, generator=g) / math.sqrt(d)).to(dev)
    dense = DenseAM(patterns, beta=10.0)
    rf = RandomFeatureAM.from_dense(dense, num_features=y).to(dev)
    dense.memory_sq_norms()
    return Workload(
        {"B": b, "Y": y, "D": d, "M": m, "kernel": rf.kernel, "dtype": "float32"},
        4.0 * b * y * d,  # x S^T and its transpose product, per feature
        lambda: rf.grad(x),
        lambda: dense.grad(x),
        {"plain_is": "exact DenseAM over the M patterns; difference = DrDAM's error"},
    )


def _energy_transformer(dev: torch.device, quick: bool, seed: int) -> Workload:
    b, n, d, h, y, k = (2, 16, 64, 2, 16, 128) if quick else (8, 64, 256, 4, 64, 1024)
    model = EnergyTransformer(d, h, y, k, steps=12, seed=seed).to(dev)
    x = torch.randn(b, n, d, generator=_generator(seed)).to(dev)
    allowed = attention_mask(n, model.exclude_self, device=dev)

    def plain() -> torch.Tensor:
        tokens = x
        for _ in range(model.steps):
            g = model.layer_norm(tokens).detach().requires_grad_(True)
            energy = attention_energy(g, model.w_k, model.w_q, model.beta, allowed)
            energy = energy + hopfield_energy(g, model.xi, model.hopfield, model.hopfield_beta)
            (grad,) = torch.autograd.grad(energy.sum(), g)
            tokens = tokens - model.step_size * grad
        return tokens

    with FlopCounterMode(display=False) as counter:
        model(x)
    return Workload(
        {"B": b, "N": n, "D": d, "heads": h, "head_dim": y, "K": k, "steps": 12},
        float(counter.get_total_flops()),
        lambda: model(x),
        plain,
        {"flops_note": "counted by torch.utils.flop_counter on the forward pass"},
    )


_BUILDERS = {
    "lse_784": _lse(256, 60_000, 784, 0.05),
    "lse_64": _lse(1024, 600_000, 64, 0.1),
    "update_784": _update(256, 60_000, 784, 0.05),
    "update_64": _update(1024, 600_000, 64, 0.1),
    "lsr_index": _lsr_index,
    "drdam": _drdam,
    "energy_transformer": _energy_transformer,
}
