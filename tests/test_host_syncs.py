"""No host round trips inside the loops: the operations that make the host wait for the
device (a value read back, a size known only from the data) are counted under a dispatch
mode on the CPU, and must not grow with the number of steps.

The engine's per-step report to the host (:class:`amlab.dynamics._HostCopy`: on CUDA a
non-blocking copy into pinned memory, read once its event has completed) never waits, and
is not counted.
"""

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from amlab import DenseAM, EnergyTransformer

aten = torch.ops.aten
#: operations that copy a value to the host, or whose output size depends on the data
WAITING = {
    aten._local_scalar_dense,
    aten.item,
    aten.is_nonzero,
    aten.equal,
    aten.nonzero,
    aten.argwhere,
    aten.masked_select,
    aten.unique_consecutive,
    aten._unique2,
    aten.unique_dim,
    aten.bincount,
    aten.repeat_interleave,
    aten.allclose,
}
#: indexing that waits when an index is a boolean mask (it becomes nonzero)
MASK_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class WaitCounter(TorchDispatchMode):
    """Counts, by name, the operations dispatched inside it that make the host wait."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in WAITING or (packet in MASK_INDEXING and _has_mask(args)):
            self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _has_mask(args) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
    )


def waits(fn) -> Counter:
    with WaitCounter() as counter:
        fn()
    return counter.counts


def memories(m=64, d=8, seed=0):
    return torch.rand(m, d, generator=torch.Generator().manual_seed(seed))


CASES = {
    "lse attention": (dict(energy="lse", beta=8.0), dict(method="attention", tol=0.0)),
    "lse gd": (dict(energy="lse", beta=8.0), dict(method="gd", tol=0.0, step_size=0.05)),
    "lse_dot gd, large beta": (
        dict(energy="lse_dot", beta=1e4),
        dict(method="gd", tol=0.0, step_size=1e-5),
    ),
    "lsr gd": (dict(energy="lsr", beta=2.0, eps=1e-3), dict(method="gd", tol=0.0, step_size=0.05)),
    "lsr fixed point": (dict(energy="lsr", beta=2.0, eps=1e-3), dict(method="fixed_point")),
}


@pytest.mark.parametrize("record_energies", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_retrieval_waits_a_fixed_number_of_times_whatever_the_steps(case, record_energies):
    model_args, run_args = CASES[case]
    am = DenseAM(memories(), **model_args)
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(1))
    clamp = torch.zeros(8, dtype=torch.bool)
    clamp[:2] = True
    counts = {}
    for steps in (5, 20):

        def run(s=steps):
            return am.retrieve(x, steps=s, clamp=clamp, record_energies=record_energies, **run_args)

        run()  # the first call builds the model's caches (norms), once per memory set
        counts[steps] = waits(run)
        if case != "lsr fixed point":  # a fixed point stops early; the others take every step
            assert int(am.retrieve(x, steps=steps, **run_args).steps.min()) == steps
    assert counts[5] == counts[20], counts
    # the input's two checks, the start's norm (for the LSE pass's bound) and the end's two
    assert sum(counts[20].values()) <= 5, counts[20]


def test_converging_queries_leave_the_batch_without_a_wait():
    """Half the queries start on a stored pattern and stop after one step, the others keep
    moving: the batch shrinks, and the waits stay those of a run with no convergence."""
    mem = memories()
    x = torch.cat([mem[:3], torch.rand(3, 8, generator=torch.Generator().manual_seed(2))])
    am = DenseAM(mem, beta=200.0)
    counts = {}
    for steps in (5, 20):

        def run(s=steps):
            return am.retrieve(x, steps=s, method="gd", step_size=1e-4, tol=1e-9)

        out = run()
        assert out.steps[:3].max() < steps and out.steps[3:].min() == steps
        counts[steps] = waits(run)
    assert counts[5] == counts[20], counts


@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
def test_energy_transformer_forward_waits_a_fixed_number_of_times(hopfield):
    model = EnergyTransformer(16, 2, 8, 32, hopfield=hopfield, steps=12)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    counts = {steps: waits(lambda s=steps: model(x, s)) for steps in (5, 12)}
    assert counts[5] == counts[12], counts
    assert sum(counts[12].values()) <= 4, counts[12]
    traj = {steps: waits(lambda s=steps: model.retrieve(x, s)) for steps in (5, 12)}
    assert traj[5] == traj[12], traj


def test_retrieval_through_the_fused_kernel_waits_a_fixed_number_of_times(monkeypatch):
    from amlab.models import dense_am

    monkeypatch.setattr(dense_am, "FUSED_UPDATE_DEVICES", ("cuda", "cpu"))
    am = DenseAM(memories(), beta=8.0)
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(1))
    counts = {}
    for steps in (5, 20):

        def run(s=steps):
            return am.retrieve(x, steps=s, method="attention", tol=0.0, record_energies=False)

        run()
        counts[steps] = waits(run)
    assert counts[5] == counts[20], counts


@pytest.mark.parametrize("energy", ["lse", "lsr"])
def test_an_nn_retrieval_with_padding_waits_once_whatever_the_steps(energy):
    """The check that no set is all padding (the one wait) runs once per forward, not once
    per step: the steps call the functions' unchecked forms."""
    from amlab.nn import Retrieval

    gen = torch.Generator().manual_seed(0)
    q, sets = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 5, 4, generator=gen)
    pad = torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    counts = {}
    for steps in (1, 6):
        layer = Retrieval(4, energy=energy, beta=0.3, eps=0.1, steps=steps)
        counts[steps] = waits(lambda layer=layer: layer(q, sets, pad))
    assert counts[1] == counts[6] and sum(counts[6].values()) == 1, counts
