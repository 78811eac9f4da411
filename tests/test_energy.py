"""Energies and gradients against float64 brute force and autograd, for every energy."""

import math

import pytest
import torch

from amlab import DenseAM
from amlab.errors import AmlabError

ENERGIES = ["lse", "lse_dot", "lsr"]


def brute_energy(x, mem, beta, kind, eps=0.0):
    """Direct float64 evaluation of the papers' formulas, one query at a time."""
    out = []
    for q in x.double():
        d2 = ((q[None, :] - mem.double()) ** 2).sum(1)
        if kind == "lse":
            out.append(-torch.logsumexp(-0.5 * beta * d2, 0) / beta)
        elif kind == "lse_dot":
            out.append(-torch.logsumexp(beta * mem.double() @ q, 0) / beta + 0.5 * q @ q)
        else:
            out.append(-torch.log(eps + torch.relu(1 - 0.5 * beta * d2).sum()) / beta)
    return torch.stack(out)


def make_case(seed, m=40, d=12, b=7):
    g = torch.Generator().manual_seed(seed)
    mem = torch.rand(m, d, generator=g, dtype=torch.float64)
    x = mem[:b] + 0.1 * torch.randn(b, d, generator=g, dtype=torch.float64)
    return mem, x


@pytest.mark.parametrize("kind", ENERGIES)
@pytest.mark.parametrize("beta", [0.5, 3.0, 40.0])
def test_energy_and_grad_match_float64_brute_force_and_autograd(kind, beta):
    mem, x = make_case(int(beta * 10))
    eps = 1e-3 if kind == "lsr" else 0.0
    am = DenseAM(mem, energy=kind, beta=beta, eps=eps, chunk_size=9)  # chunks do not divide M
    expected = brute_energy(x, mem, beta, kind, eps)
    energy, grad = am.energy_and_grad(x)
    assert energy.dtype == torch.float64
    torch.testing.assert_close(energy, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(am.energy(x), expected, rtol=1e-10, atol=1e-10)
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(brute_energy(xr, mem, beta, kind, eps).sum(), xr)
    torch.testing.assert_close(grad, auto, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(am.grad(x), auto, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ENERGIES)
def test_float32_matches_float64(kind):
    mem, x = make_case(1)
    beta = 5.0
    e64, g64 = DenseAM(mem, energy=kind, beta=beta).energy_and_grad(x)
    e32, g32 = DenseAM(mem.float(), energy=kind, beta=beta).energy_and_grad(x.float())
    assert e32.dtype == torch.float32
    torch.testing.assert_close(e32.double(), e64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", ["lse", "lse_dot"])
def test_lse_is_stable_at_huge_beta(kind):
    mem, x = make_case(2)
    beta = 1e4
    am = DenseAM(mem.float(), energy=kind, beta=beta)
    energy, grad = am.energy_and_grad(x.float())
    assert torch.isfinite(energy).all() and torch.isfinite(grad).all()
    # At large beta the LSE energy is the distance to the nearest memory (minus a log M / beta
    # term at most) and the gradient points from that memory to x.
    d2 = torch.cdist(x, mem) ** 2
    if kind == "lse":
        nearest = d2.argmin(1)
        torch.testing.assert_close(energy.double(), 0.5 * d2.min(1).values, atol=1e-3, rtol=1e-3)
    else:
        nearest = (x @ mem.T).argmax(1)
        ref = -(x @ mem.T).max(1).values + 0.5 * (x * x).sum(1)
        torch.testing.assert_close(energy.double(), ref, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(grad.double(), x - mem[nearest], atol=1e-4, rtol=1e-4)


def test_lsr_outside_support_is_inf_with_zero_gradient():
    mem = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    am = DenseAM(mem, energy="lsr", beta=8.0)  # r = 0.5: the supports do not touch
    x = torch.tensor([[5.0, 5.0], [0.1, 0.0], [0.5, 0.0]])  # outside, inside, on both boundaries
    energy, grad = am.energy_and_grad(x)
    assert energy[0] == math.inf and energy[2] == math.inf
    assert torch.equal(grad[0], torch.zeros(2)) and torch.equal(grad[2], torch.zeros(2))
    assert torch.isfinite(energy[1]) and not torch.isnan(grad).any()
    # with eps > 0 the energy outside is the constant -(1/beta) log eps
    am_eps = DenseAM(mem, energy="lsr", beta=8.0, eps=1e-2)
    assert am_eps.energy(x[0]).item() == pytest.approx(-math.log(1e-2) / 8.0)
    # descent leaves an outside query where it is and does not call it converged
    out = am.retrieve(x[:1], method="gd")
    assert torch.equal(out.states, x[:1]) and not out.converged[0]


@pytest.mark.parametrize("kind", ENERGIES)
def test_chunked_equals_unchunked(kind):
    mem, x = make_case(3, m=103, d=5, b=11)
    mem, x = mem.float(), x.float()
    whole = DenseAM(mem, energy=kind, beta=2.0, chunk_size=10_000)
    for chunk in (1, 7, 50, 102):
        part = DenseAM(mem, energy=kind, beta=2.0, chunk_size=chunk)
        for a, b in zip(part.energy_and_grad(x), whole.energy_and_grad(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(part.energy(x), whole.energy(x), rtol=1e-5, atol=1e-6)


def test_nearest_other_distances_equal_brute_force_in_any_block():
    from amlab.energy.distances import nearest_other_distances

    g = torch.Generator().manual_seed(3)
    points = torch.randn(37, 5, generator=g, dtype=torch.float64)
    points[7] = points[2]  # a duplicate: its nearest other point is at distance 0
    full = ((points[:, None] - points[None]) ** 2).sum(-1).sqrt()
    full.fill_diagonal_(float("inf"))
    want = full.min(1).values
    for block in (1, 4, 37, 100):
        torch.testing.assert_close(nearest_other_distances(points, block=block), want)
    rows = torch.tensor([30, 2, 7])
    torch.testing.assert_close(nearest_other_distances(points, rows, block=2), want[rows])
    assert nearest_other_distances(points)[7] == 0


def test_k_nearest_memories_equal_brute_force_in_any_chunk():
    """Against a sort of the full distance matrix (by distance, then index); the first
    column is nearest_memory's answer, ties included (repeated memories)."""
    from amlab.energy.distances import nearest_memories, nearest_memory

    g = torch.Generator().manual_seed(5)
    mem = torch.randn(41, 6, generator=g, dtype=torch.float64)
    mem[30] = mem[3]  # a tie: the lower index comes first
    mem[12] = mem[3]
    x = torch.cat([torch.randn(9, 6, generator=g, dtype=torch.float64), mem[3:4]])
    full = torch.cdist(x, mem)
    for k in (1, 3, 41, 50):
        want = full.sort(dim=1, stable=True).indices[:, : min(k, 41)]  # ties: index order
        for chunk in (1, 4, 40, None):
            index, distance = nearest_memories(x, mem, k, chunk_size=chunk)
            assert torch.equal(index, want), (k, chunk)
            torch.testing.assert_close(distance, full.gather(1, want), atol=1e-7, rtol=0)
            one, d = nearest_memory(x, mem, chunk_size=chunk)
            assert torch.equal(index[:, 0], one) and torch.equal(distance[:, 0], d)
    assert nearest_memories(x, mem, 3)[0][-1].tolist() == [3, 12, 30]
    assert nearest_memories(x, mem, 0)[0].shape == (10, 0)


@pytest.mark.parametrize("k", [-1, 2.0, True])
def test_k_nearest_memories_refuse_a_k_that_is_no_count(k):
    """A negative k once sliced the sorted columns from the end (M - 1 columns, not the
    nearest); a float or a bool is no count either."""
    from amlab.energy.distances import nearest_memories

    with pytest.raises(AmlabError, match="k must be an integer"):
        nearest_memories(torch.zeros(2, 3), torch.zeros(5, 3), k)
