"""Local minima: the pruned exact search against brute force over all subsets (random
memories, the paper's grid at small sizes, lattices with exact ties, repeated memories),
and the properties every minimum must have."""

import math

import pytest
import torch

from amlab import AmlabError, DenseAM
from amlab.analysis import (
    lse_minima,
    lsr_minima,
    lsr_minima_brute_force,
    lsr_minima_counts,
    lsr_multistart_minima,
    lsr_neighbour_minima,
)
from amlab.analysis import minima as minima_module
from amlab.analysis.minima import _pair_sq_distances, _possible_supports


def supports(minima):
    return {tuple(row) for row in minima.supports.int().tolist()}


def beta_grid(mem, n=12, dtype=None):
    """The paper's range: from 2/d (r = sqrt(d)) to 2/R^2 (R half the smallest distance),
    n betas spaced in ``dtype`` (torch's default when None)."""
    d = mem.shape[1]
    r_min = 0.5 * torch.pdist(mem).min().item()
    return torch.linspace(2.0 / d, 2.0 / r_min**2, n, dtype=dtype).tolist()


@pytest.mark.parametrize(
    "m,d,seed",
    [(5, 2, 0), (9, 3, 1), (12, 8, 2), (14, 4, 3), (14, 2, 4), (11, 1, 11), (13, 1, 12)],
)
def test_exact_search_equals_brute_force(m, d, seed):
    g = torch.Generator().manual_seed(seed)
    mem = torch.rand(m, d, generator=g, dtype=torch.float64)
    betas = beta_grid(mem)
    for beta in betas:
        exact, brute = lsr_minima(mem, beta), lsr_minima_brute_force(mem, beta)
        assert supports(exact) == supports(brute), beta
        order_e = torch.argsort(exact.energies)
        order_b = torch.argsort(brute.energies)
        torch.testing.assert_close(exact.energies[order_e], brute.energies[order_b])
    counts = lsr_minima_counts(mem, betas)
    for i, beta in enumerate(betas):
        exact = lsr_minima(mem, beta)
        assert (counts["stored"][i], counts["emergent"][i]) == (
            exact.num_stored,
            exact.num_emergent,
        )


def paper_case(m, d, seed, n_betas=50):
    """Memories and betas as ``amlab repro lsr`` draws them (papers.md section 1)."""
    g = torch.Generator().manual_seed(seed)
    mem = torch.rand(m, d, generator=g, dtype=torch.float64)
    return mem, beta_grid(mem, n_betas, dtype=torch.float64)


def assert_counts_are_brute_force(mem, betas):
    counts = lsr_minima_counts(mem, betas)
    for i, beta in enumerate(betas):
        brute = lsr_minima_brute_force(mem, beta)
        assert (int(counts["stored"][i]), int(counts["emergent"][i])) == (
            brute.num_stored,
            brute.num_emergent,
        ), beta


@pytest.mark.parametrize("m,d", [(5, 8), (5, 32), (10, 8), (10, 32)])
def test_grid_counts_equal_brute_force_on_the_papers_grid(m, d):
    # every beta of the paper's grid, the last one included (there the two closest
    # memories' supports touch, and rounding decides: both sides decide it alike)
    for seed in (0, 42, 88):
        assert_counts_are_brute_force(*paper_case(m, d, seed))


def lattice_betas():
    """betas whose r^2 = 2/beta is exactly a squared distance between lattice points and
    centroids (0.25, 0.5, 1, 2, 4), and the next float on either side of each."""
    betas = []
    for beta in (8.0, 4.0, 2.0, 1.0, 0.5):
        betas += [math.nextafter(beta, 0.0), beta, math.nextafter(beta, math.inf)]
    return betas


@pytest.mark.parametrize(
    "mem",
    [
        [[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)],  # the unit cube's corners
        [[i, j] for i in (0, 1, 2) for j in (0, 1, 2)],  # a 3x3 square lattice
        [[0, 0], [1, 0], [0, 1], [1, 1], [1, 0], [2, 0], [0.5, 0.5]],  # a repeated memory
        [[0], [1], [2], [3], [4], [6], [8]],  # points on a line
    ],
    ids=["cube", "square", "repeated", "line"],
)
def test_exact_ties_are_decided_like_brute_force(mem):
    # members exactly at distance r are inactive (not minima), non-members exactly at r
    # are allowed; the search must cut no branch holding such a set
    mem = torch.tensor(mem, dtype=torch.float64)
    betas = lattice_betas()
    for beta in betas:
        exact, brute = lsr_minima(mem, beta), lsr_minima_brute_force(mem, beta)
        assert supports(exact) == supports(brute), beta
    assert_counts_are_brute_force(mem, betas)
    # the ties are there: some minimum appears or vanishes between neighbouring floats
    per_beta = [len(lsr_minima_brute_force(mem, beta)) for beta in betas]
    assert any(a != b for a, b in zip(per_beta, per_beta[1:], strict=False))


def test_search_cuts_almost_every_subset_at_the_smallest_paper_beta():
    # at beta = 2/d every pair of memories overlaps, so adjacency cuts nothing; the order
    # condition leaves well under 1% of the 2^20 subsets to check
    mem, betas = paper_case(20, 8, 0)
    r2 = 2.0 / betas[0]
    assert bool((_pair_sq_distances(mem) < 4 * r2).all())
    yielded = list(_possible_supports(mem, _pair_sq_distances(mem), r2))
    found = torch.cat(yielded)
    assert found.shape[0] < 0.01 * 2**20
    assert found.unique(dim=0).shape[0] == found.shape[0] and bool(found.any(1).all())


@pytest.mark.parametrize("cut_max", [128, 0])  # 0: the search without the cut
def test_separate_clusters_give_the_union_of_their_minima(monkeypatch, cut_max):
    # four clusters far apart (the overlap graph has four components): every minimum is
    # one cluster's minimum, found by brute force on that cluster alone
    monkeypatch.setattr(minima_module, "CUT_MAX", cut_max)
    g = torch.Generator().manual_seed(13)
    clusters = [
        torch.rand(n, 3, generator=g, dtype=torch.float64) + 10 * k
        for k, n in enumerate((12, 9, 14, 7))
    ]
    mem = torch.cat(clusters)
    offsets = [0, 12, 21, 35]
    emergent = 0
    for beta in beta_grid(clusters[0], 6)[1:]:
        expected = set()
        for cluster, offset in zip(clusters, offsets, strict=True):
            for row in lsr_minima_brute_force(cluster, beta).supports.int().tolist():
                expected.add(tuple([0] * offset + row + [0] * (mem.shape[0] - offset - len(row))))
        assert supports(lsr_minima(mem, beta)) == expected, beta
        emergent += sum(sum(row) > 1 for row in expected)
    assert emergent > 0


def test_every_minimum_has_zero_gradient_and_rises_in_every_direction():
    g = torch.Generator().manual_seed(5)
    mem = torch.rand(12, 5, generator=g, dtype=torch.float64)
    beta = beta_grid(mem)[4]
    minima = lsr_minima(mem, beta)
    assert minima.num_emergent > 0 and len(minima) > 1
    am = DenseAM(mem, energy="lsr", beta=beta)
    grad = am.grad(minima.points)
    assert grad.abs().max() < 1e-12
    for point, energy in zip(minima.points, minima.energies, strict=True):
        directions = torch.randn(200, 5, generator=g, dtype=torch.float64)
        directions /= directions.norm(dim=1, keepdim=True)
        for scale in (1e-6, 1e-4):
            assert (am.energy(point + scale * directions) > energy).all()
    # each minimum is the centroid of its own support
    centroids = minima.supports.double() @ mem / minima.sizes[:, None]
    torch.testing.assert_close(minima.points, centroids)


def test_isolated_stored_memories_are_always_found():
    g = torch.Generator().manual_seed(6)
    for _ in range(5):
        mem = torch.rand(10, 3, generator=g, dtype=torch.float64)
        beta = beta_grid(mem)[6]
        r = math.sqrt(2.0 / beta)
        dist = torch.cdist(mem, mem).fill_diagonal_(float("inf"))
        isolated = (dist.min(1).values >= r).nonzero().squeeze(1).tolist()
        minima = lsr_minima(mem, beta)
        found = {row.index(1) for row in minima.supports.int().tolist() if sum(row) == 1}
        assert set(isolated) == found


def test_two_memories_between_r_and_2r_give_three_minima():
    beta = 2.0
    r = 1.0
    mem = torch.tensor([[0.0, 0.0], [1.5 * r, 0.0]], dtype=torch.float64)
    minima = lsr_minima(mem, beta)
    assert (minima.num_stored, minima.num_emergent) == (2, 1)
    mid = minima.points[~minima.stored][0]
    torch.testing.assert_close(mid, torch.tensor([0.75, 0.0], dtype=torch.float64))


def test_neighbour_search_finds_the_exact_minima_holding_the_memory():
    g = torch.Generator().manual_seed(7)
    mem = torch.rand(14, 4, generator=g, dtype=torch.float64)
    beta = beta_grid(mem)[3]
    exact = lsr_minima(mem, beta)
    for index in range(14):
        local = lsr_neighbour_minima(mem, beta, index, max_size=3)
        expected = {s for s in supports(exact) if s[index] == 1 and sum(s) <= 3}
        assert supports(local) == expected


def test_multistart_finds_only_true_minima():
    g = torch.Generator().manual_seed(8)
    mem = torch.rand(12, 3, generator=g, dtype=torch.float64)
    beta = beta_grid(mem)[5]
    exact = supports(lsr_minima(mem, beta))
    starts = torch.rand(3000, 3, generator=g, dtype=torch.float64)
    found = supports(lsr_multistart_minima(mem, beta, starts))
    assert found and found <= exact
    # near a minimum the active set is its support, so one centroid step lands on it
    minima = lsr_minima(mem, beta)
    near = minima.points.repeat(5, 1) + 1e-7 * torch.randn(
        5 * len(minima), 3, generator=g, dtype=torch.float64
    )
    again = lsr_multistart_minima(mem, beta, near)
    assert supports(again) == exact


def test_lse_minima_at_large_beta_are_the_stored_memories():
    g = torch.Generator().manual_seed(9)
    mem = torch.rand(8, 3, generator=g, dtype=torch.float64)
    starts = torch.cat([mem, torch.rand(500, 3, generator=g, dtype=torch.float64)])
    minima = lse_minima(mem, 2000.0, starts)
    assert minima.num_stored == 8 and minima.num_emergent == 0
    assert sorted(minima.supports.int().argmax(1).tolist()) == list(range(8))
    # at tiny beta the only minimum is the mean of the memories
    low = lse_minima(mem, 1e-3, starts)
    assert len(low) == 1
    torch.testing.assert_close(low.points[0], mem.mean(0), atol=1e-5, rtol=0)


def test_bad_input():
    with pytest.raises(AmlabError):
        lsr_minima(torch.zeros(0, 3), 1.0)
    with pytest.raises(AmlabError):
        lsr_minima(torch.rand(3, 2), -1.0)
    with pytest.raises(AmlabError):
        lsr_minima_counts(torch.rand(3, 2), [1.0, -2.0])
    with pytest.raises(AmlabError):
        lsr_minima_brute_force(torch.rand(30, 2), 1.0)
    with pytest.raises(AmlabError):
        lsr_neighbour_minima(torch.rand(3, 2), 1.0, 5)


@pytest.mark.parametrize("beta_index", [0, 3, 8])
def test_max_size_keeps_exactly_the_small_supports(beta_index):
    g = torch.Generator().manual_seed(10)
    mem = torch.rand(11, 3, generator=g, dtype=torch.float64)
    beta = beta_grid(mem)[beta_index]  # index 0: every pair overlaps (all subsets are cliques)
    expected = {s for s in supports(lsr_minima_brute_force(mem, beta)) if sum(s) <= 2}
    assert supports(lsr_minima(mem, beta, max_size=2)) == expected
