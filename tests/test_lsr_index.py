"""The LSR ball index gives the dense pass's results: active sets, Z, gradients, fixed points."""

import math

import pytest
import torch

from amlab import AmlabError, DenseAM
from amlab.energy import lsr_index
from amlab.energy.distances import sq_distances, sq_norms
from amlab.energy.lsr import lsr_energy, lsr_support_stats
from amlab.energy.lsr_index import BallIndex

F64 = torch.float64


@pytest.fixture
def no_dense_fallback(monkeypatch):
    """The index's own pass even where it would fall back to the dense pass: at these test
    sizes the fixed cost per visited ball makes nearly every call fall back, and a test of
    the index would compare the dense pass with itself."""
    monkeypatch.setattr(lsr_index, "DENSE_FALLBACK_FRACTION", math.inf)


def clustered(num_clusters, per_cluster, dim, spread, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_clusters, dim, generator=g, dtype=dtype)
    points = centres.repeat_interleave(per_cluster, 0)
    points = points + spread * torch.randn(points.shape, generator=g, dtype=dtype)
    return points[torch.randperm(points.shape[0], generator=g)]


def assert_same_stats(x, memories, beta, index):
    dense = lsr_support_stats(x, memories, beta)
    indexed = index.support_stats(x, memories, beta)
    assert torch.equal(indexed[1], dense[1])  # the same number of active memories
    tol = 1e-10 if x.dtype == F64 else 1e-4
    torch.testing.assert_close(indexed[0], dense[0], rtol=tol, atol=tol)  # Z
    torch.testing.assert_close(indexed[2], dense[2], rtol=tol, atol=tol)  # sum of the active
    return dense


def assert_as_accurate_as_dense(x, memories, beta, index):
    """float32: the same active counts as the dense pass, and Z and the sums no farther from
    the float64 computation than the dense pass's own distance from it plus 1e-4. (At large
    beta a weight 1 - beta/2 d^2 carries d^2's rounding times beta/2, so two float32 kernels
    can differ by more than 1e-4 while neither is closer to the exact value.)"""
    dense = lsr_support_stats(x, memories, beta)
    indexed = index.support_stats(x, memories, beta)
    exact = lsr_support_stats(x.double(), memories.double(), beta)
    assert torch.equal(indexed[1], dense[1])
    for k in (0, 2):
        dense_error = float((dense[k].double() - exact[k]).abs().max())
        torch.testing.assert_close(
            indexed[k].double(), exact[k], rtol=1e-4, atol=dense_error + 1e-4
        )
    return dense


@pytest.mark.parametrize("fallback", ["allowed", "off"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("data", ["uniform", "clustered"])
def test_indexed_stats_equal_dense_stats(dtype, data, fallback, request):
    if fallback == "off":
        request.getfixturevalue("no_dense_fallback")
    same = assert_as_accurate_as_dense if fallback == "off" and dtype != F64 else assert_same_stats
    g = torch.Generator().manual_seed(0)
    if data == "uniform":
        memories = torch.rand(3000, 6, generator=g, dtype=dtype)
    else:
        memories = clustered(60, 50, 8, 0.02, seed=1, dtype=dtype)
    index = BallIndex.build(memories, leaf_size=16)
    x = memories[:40] + 0.03 * torch.randn(40, memories.shape[1], generator=g, dtype=dtype)
    x = torch.cat([x, torch.rand(20, memories.shape[1], generator=g, dtype=dtype)])
    for beta in (3.0, 30.0, 300.0, 3e4):  # supports from large (dense fallback) to tiny
        dense = same(x, memories, beta, index)
    assert (dense[1] == 0).any()  # at beta = 3e4 some states are outside every support


def test_pruning_skips_most_balls_on_clustered_data(no_dense_fallback):
    memories = clustered(100, 40, 16, 0.02, seed=2)
    index = BallIndex.build(memories, leaf_size=16)
    x = memories[:50]
    beta = 2.0 / 0.3**2  # r = 0.3: a state's support is (part of) its own cluster
    keep = index.candidates(x, math.sqrt(2.0 / beta), (x * x).sum(1))
    assert keep.sum(1).float().mean() < 0.05 * index.num_clusters
    assert_same_stats(x, memories, beta, index)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_memories_on_the_support_boundary_are_never_skipped(dtype):
    """Memories at distance r (1 -+ a few ulps) from a state: the margin in the pruning test
    keeps every ball the dense pass could count."""
    g = torch.Generator().manual_seed(3)
    dim, beta = 10, 2.0
    r = math.sqrt(2.0 / beta)
    directions = torch.randn(400, dim, generator=g, dtype=F64)
    directions /= directions.norm(dim=1, keepdim=True)
    factors = 1 + torch.linspace(-8, 8, 400, dtype=F64) * torch.finfo(dtype).eps
    centre = torch.rand(dim, generator=g, dtype=F64)
    memories = (centre + r * factors[:, None] * directions).to(dtype)
    memories = torch.cat([memories, torch.rand(600, dim, generator=g, dtype=dtype) + 3.0])
    index = BallIndex.build(memories, leaf_size=8)
    x = centre[None].to(dtype)
    dense = assert_same_stats(x, memories, beta, index)
    assert 0 < dense[1].item() < 400  # the boundary splits the 400 near memories
    # what the name says, on the pruning test itself: with balls of one memory each (the
    # bound is then as tight as it gets), every memory the dense pass counts is kept
    single = BallIndex.build(memories, leaf_size=1)
    weight = 1 - 0.5 * beta * sq_distances(x, memories, (x * x).sum(1), sq_norms(memories))
    kept = single.candidates(x, r, (x * x).sum(1))[0, single.labels]
    assert kept[weight[0] > 0].all()


def test_added_memories_are_indexed(no_dense_fallback):
    memories = clustered(40, 30, 8, 0.02, seed=4)
    g = torch.Generator().manual_seed(4)
    later = torch.cat(
        [
            memories[:50] + 0.01 * torch.randn(50, 8, generator=g, dtype=F64),  # near old balls
            torch.full((1, 8), 5.0, dtype=F64),  # far from every ball: its ball must grow
        ]
    )
    index = BallIndex.build(memories, leaf_size=16)
    index.add(later)
    everything = torch.cat([memories, later])
    x = torch.cat([everything[-60:], everything[:20] + 0.01])
    for beta in (50.0, 500.0):
        dense = assert_same_stats(x, everything, beta, index)
    assert dense[1][59] >= 1  # the far memory is found at its own position


def test_dense_am_index_gives_the_dense_fixed_points_and_takes_added_memories(no_dense_fallback):
    memories = clustered(50, 40, 8, 0.03, seed=5)
    g = torch.Generator().manual_seed(5)
    queries = memories[:30] + 0.05 * torch.randn(30, 8, generator=g, dtype=F64)
    queries = torch.cat([queries, torch.full((2, 8), -4.0, dtype=F64)])  # outside every support
    beta = 2.0 / 0.15**2
    indexed = DenseAM(memories[:1500], energy="lsr", beta=beta, index="clusters")
    dense = DenseAM(memories[:1500], energy="lsr", beta=beta, index="none")
    for step in range(2):
        if step == 1:  # memories added after the index was built
            indexed.add(memories[1500:])
            dense.add(memories[1500:])
            assert indexed.lsr_index().num_memories == memories.shape[0]
        a = indexed.retrieve(queries, method="fixed_point")
        b = dense.retrieve(queries, method="fixed_point")
        assert torch.equal(a.steps, b.steps) and torch.equal(a.converged, b.converged)
        torch.testing.assert_close(a.states, b.states, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.energies, b.energies, rtol=1e-12, atol=1e-12)
        for x in (queries, a.states):
            ea, ga = indexed.energy_and_grad(x)
            eb, gb = dense.energy_and_grad(x)
            torch.testing.assert_close(ea, eb, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
    assert torch.isinf(ea[-1]) and torch.equal(ga[-1], torch.zeros(8, dtype=F64))


def test_dense_am_add_takes_one_pattern_or_rows_and_rejects_bad_patterns():
    am = DenseAM(torch.zeros(2, 3, dtype=F64), energy="lsr", beta=2.0)
    am.add([1, 2, 3]).add(torch.ones(2, 3, dtype=F64))  # (D,) as a list (cast), or rows
    assert am.memories.dtype == F64
    expected = torch.tensor([[1.0, 2, 3], [1, 1, 1], [1, 1, 1]], dtype=F64)
    torch.testing.assert_close(am.memories[2:], expected)
    for bad, match in (
        (torch.ones(2, 3), "patterns is torch.float32 on cpu but the DenseAM is torch.float64"),
        (torch.ones(2, 4, dtype=F64), r"shape \(B, 3\) or \(3,\)"),
        ([[0.0, float("nan"), 0.0]], "NaN"),
        (torch.full((1, 3), 1e200, dtype=F64), "squared norm overflows"),
    ):
        with pytest.raises(AmlabError, match=match):
            am.add(bad)
    assert am.num_memories == 5  # a rejected add stores nothing


def test_memories_added_to_a_with_beta_copy_leave_the_originals_index_alone():
    memories = clustered(20, 30, 6, 0.02, seed=8)
    x = memories[:10]
    beta = 2.0 / 0.1**2
    am = DenseAM(memories, energy="lsr", beta=beta, index="clusters")
    before = am.energy(x)  # builds the index
    for other_beta in (beta, 2 * beta):
        hot = am.with_beta(other_beta)
        hot.add(memories[:7] + 0.01)
        assert hot.lsr_index().num_memories == 607
        assert am.lsr_index().num_memories == 600
        torch.testing.assert_close(am.energy(x), before, rtol=0, atol=0)
        torch.testing.assert_close(hot.energy(x), lsr_energy(x, hot.memories, other_beta))


def test_auto_index_is_built_only_for_many_memories_with_small_supports(monkeypatch):
    import amlab.models.dense_am as dense_am

    monkeypatch.setattr(dense_am, "AUTO_INDEX_MIN_MEMORIES", 1000)
    memories = clustered(30, 40, 8, 0.02, seed=6)
    x = memories[:10]
    small = DenseAM(memories, energy="lsr", beta=2.0 / 0.1**2)
    small.energy_and_grad(x)
    assert small.lsr_index(x) is not None
    wide = DenseAM(memories, energy="lsr", beta=2.0 / 3.0**2)  # supports hold everything
    wide.energy_and_grad(x)
    assert wide.lsr_index(x) is None
    few = DenseAM(memories[:500], energy="lsr", beta=2.0 / 0.1**2)
    assert few.lsr_index(x) is None
    with torch.no_grad():  # a change in place is noticed: the index is rebuilt
        small.memories[:5] += 1.0
    assert_same_stats(x, small.memories, small.beta, small.lsr_index(x))


def test_energy_goes_through_the_index_and_equals_the_formula(monkeypatch, no_dense_fallback):
    memories = clustered(40, 30, 6, 0.03, seed=7)
    g = torch.Generator().manual_seed(7)
    x = memories[:25] + 0.04 * torch.randn(25, 6, generator=g, dtype=F64)
    x = torch.cat([x, torch.full((2, 6), -5.0, dtype=F64)])  # outside every support: +inf
    beta = 2.0 / 0.12**2
    am = DenseAM(memories, energy="lsr", beta=beta, index="clusters")
    visits = []
    index = am.lsr_index()
    original = index.support_stats
    monkeypatch.setattr(
        index, "support_stats", lambda *a, **k: visits.append(1) or original(*a, **k)
    )
    energy = am.energy(x)
    assert visits == [1]  # the index answered, not a dense pass
    expected = lsr_energy(x, memories, beta)
    assert torch.isinf(energy[-2:]).all() and torch.isinf(expected[-2:]).all()
    torch.testing.assert_close(energy, expected, rtol=1e-12, atol=1e-12)
    # a state that needs autograd takes the formula; its gradient is the analytic one
    inside = x[:25].clone().requires_grad_(True)
    am.energy(inside).sum().backward()
    assert visits == [1]
    torch.testing.assert_close(inside.grad, am.grad(x[:25]), rtol=1e-10, atol=1e-10)


def test_a_centroid_within_rounding_of_its_state_is_the_state_itself():
    """The exact solver stops when the state repeats: a fixed point's centroid summed in
    another order (another batch, chunking or thread split) must not move it by an ulp."""
    from amlab.energy.lsr import lsr_centroid

    for dtype in (torch.float32, F64):
        g = torch.Generator().manual_seed(0)
        members = torch.rand(4, 5, 3, generator=g, dtype=dtype)  # 4 states, 5 active each
        centroid = members.mean(1)
        count = torch.full((4,), 5.0, dtype=dtype)
        active_sum = members.sum(1)
        ulp = torch.finfo(dtype).eps * centroid.abs()
        x = centroid + torch.tensor([0.0, 1.0, -2.0, 1e6], dtype=dtype)[:, None] * ulp
        out = lsr_centroid(x, (count, count, active_sum))
        assert torch.equal(out[:3], x[:3])  # within rounding: the state repeats exactly
        torch.testing.assert_close(out[3], active_sum[3] / 5, rtol=0, atol=0)  # a real move
