"""RandomFeatureAM (DrDAM): the feature maps estimate the Gaussian kernel, the energy tends to
the exact DenseAM's, writing is chunked, and the surface behaves like every other model."""

import math

import numpy as np
import pytest
import torch

from amlab import AmlabError, DenseAM, RandomFeatureAM
from amlab.energy.random_features import KERNELS, draw_projections, feature_sum, features
from amlab.models.random_feature_am import compare_with_dense
from amlab.tasks.profiling import LargestTensor

F64 = torch.float64


def binary(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g, dtype=F64) < 0.5).to(F64) / math.sqrt(d)


@pytest.mark.parametrize("kernel", KERNELS)
def test_features_estimate_the_gaussian_kernel(kernel):
    """phi(x).phi(y) -> exp(-beta/2 ||x - y||^2): small at large Y, falling like 1/sqrt(Y)."""
    g = torch.Generator().manual_seed(1)
    x = 0.3 * torch.rand(6, 4, generator=g, dtype=F64)
    y = 0.3 * torch.rand(7, 4, generator=g, dtype=F64)
    beta = 2.0
    exact = torch.exp(-beta / 2 * torch.cdist(x, y) ** 2)
    ys = (100, 10_000, 1_000_000)
    errors = []
    for num in ys:
        err = 0.0
        for seed in range(3):
            S, b = draw_projections(4, num, seed, dtype=F64)
            est = features(x, S, b, beta, kernel) @ features(y, S, b, beta, kernel).T
            err += (est - exact).abs().mean().item() / 3
        errors.append(err)
    assert errors[-1] < 2e-3, errors
    assert errors[0] > 3 * errors[1] > 9 * errors[2], errors  # x100 features: about /10
    slope = np.polyfit(np.log(ys), np.log(errors), 1)[0]
    assert -0.7 < slope < -0.3, (slope, errors)


def test_energy_tends_to_the_exact_dense_energy():
    memories = binary(40, 16, 0)
    dense = DenseAM(memories, energy="lse", beta=8.0)
    queries = torch.cat([memories[:10], binary(10, 16, 1)])
    errors = [
        compare_with_dense(RandomFeatureAM.from_dense(dense, y, seed=3), dense, queries)
        for y in (300, 3_000, 30_000)
    ]
    e = [r["energy_error"] for r in errors]
    g = [r["grad_error"] for r in errors]
    assert e[0] > e[1] > e[2] and g[0] > g[1] > g[2], (e, g)
    assert e[2] < 5e-3 and g[2] < 1e-2, (e, g)
    assert errors[2]["energy_errors"].shape == (20,) and errors[2]["grad_errors"].shape == (20,)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradient_equals_autograd(kernel):
    am = RandomFeatureAM(6, 500, beta=3.0, kernel=kernel, seed=2, dtype=F64, chunk_size=128)
    am.add(0.5 * binary(12, 6, 3))
    x = torch.cat([0.5 * binary(5, 6, 4), 0.2 * torch.randn(3, 6, dtype=F64)])
    energy, grad = am.energy_and_grad(x)
    xg = x.clone().requires_grad_(True)
    auto_energy = am.energy(xg)
    (auto_grad,) = torch.autograd.grad(auto_energy.sum(), xg)
    torch.testing.assert_close(energy, auto_energy.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, auto_grad, rtol=1e-9, atol=1e-12)


def test_energy_is_flat_below_eps():
    """Where phi(x).T <= eps the energy is -(1/beta) log(eps) and the gradient zero."""
    am = RandomFeatureAM(4, 4000, beta=2.0, eps=0.5, dtype=F64).add(torch.zeros(1, 4, dtype=F64))
    far = torch.full((2, 4), 5.0, dtype=F64)  # kernel exp(-50): the estimate is noise ~ 0.02
    energy, grad = am.energy_and_grad(far)
    torch.testing.assert_close(energy, torch.full((2,), -math.log(0.5) / 2.0, dtype=F64))
    assert (grad == 0).all()
    assert (am.retrieve(far, steps=5).states == far).all()


def test_add_then_remove_restores_T():
    am = RandomFeatureAM(10, 700, beta=5.0, dtype=F64, chunk_size=100)
    a, extra = binary(30, 10, 5), binary(25, 10, 6)
    am.add(a)
    before = am.T.clone()
    am.add(extra).remove(extra)
    torch.testing.assert_close(am.T, before, rtol=0, atol=1e-13)
    assert am.num_stored == 30
    am.remove(a)
    assert am.num_stored == 0 and am.T.abs().max() < 1e-13
    one_by_one = RandomFeatureAM(10, 700, beta=5.0, dtype=F64)
    for row in a:
        one_by_one.add(row)  # a single pattern (D,) is one pattern
    torch.testing.assert_close(one_by_one.T, before, rtol=0, atol=1e-12)


def test_size_does_not_depend_on_patterns_stored():
    am = RandomFeatureAM(8, 300, beta=1.0, kernel="sincos")
    sizes = [(am.num_parameters, am.nbytes)]
    for n in (10, 10_000):
        am.add(torch.rand(n, 8))
        sizes.append((am.num_parameters, am.nbytes))
    assert sizes[0] == sizes[1] == sizes[2] == (300 * 8 + 300 + 2 * 300, 4 * (300 * 11))
    assert am.num_stored == 10_010
    assert RandomFeatureAM(8, 300, beta=1.0, kernel="cos").num_parameters == 300 * 10


def test_a_million_patterns_are_written_in_chunks():
    """No (M, Y) block: the largest tensor any op returns stays far below M * Y.

    (The input check's (M, D) mask of finite entries is the largest: M * D = M * Y / 128.)
    Correct sums chunk by chunk: test_feature_sum_is_independent_of_the_chunks.
    """
    num, dim, num_features = 1_000_000, 8, 1024
    patterns = torch.rand(num, dim, generator=torch.Generator().manual_seed(0))
    am = RandomFeatureAM(dim, num_features, beta=4.0, kernel="cos")  # one cos per feature
    with LargestTensor() as probe:
        am.add(patterns)
    assert am.num_stored == num and bool(torch.isfinite(am.T).all())
    assert probe.largest <= num * num_features // 100, probe.largest
    with LargestTensor() as probe:  # the probe does see an unchunked feature map
        features(patterns[:20_000], am.S, am.b, am.beta, am.kernel)
    assert probe.largest >= 20_000 * num_features


def test_clamped_entries_never_move():
    memories = binary(20, 12, 7)
    am = RandomFeatureAM.from_dense(DenseAM(memories, beta=10.0), 2000)
    start = memories[:5].clone()
    start[:, 6:] = 0.0
    clamp = torch.zeros(12, dtype=torch.bool)
    clamp[:6] = True
    out = am.retrieve(start, steps=50, step_size=0.05, clamp=clamp)
    assert (out.states[:, :6] == start[:, :6]).all()
    assert (out.states[:, 6:] != start[:, 6:]).any()
    assert (out.energies[-1] <= out.energies[0] + 1e-9).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_save_load_round_trip(tmp_path, dtype):
    am = RandomFeatureAM(5, 64, beta=7.0, kernel="expexp", seed=11, eps=1e-4, dtype=dtype)
    am.add(torch.rand(9, 5, dtype=dtype))
    am.save(tmp_path / "rf")
    back = RandomFeatureAM.load(tmp_path / "rf")
    for name in ("S", "b", "T"):
        assert torch.equal(getattr(back, name), getattr(am, name)), name
    assert back.config == am.config
    x = torch.rand(3, 5, dtype=dtype)
    assert torch.equal(back.energy(x), am.energy(x))
    DenseAM(torch.rand(3, 5)).save(tmp_path / "dense")
    with pytest.raises(AmlabError, match="DenseAM"):
        RandomFeatureAM.load(tmp_path / "dense")


def test_same_seed_same_projections():
    a, b = RandomFeatureAM(6, 100, 1.0, seed=4), RandomFeatureAM(6, 100, 1.0, seed=4)
    assert torch.equal(a.S, b.S) and torch.equal(a.b, b.b)
    assert not torch.equal(a.S, RandomFeatureAM(6, 100, 1.0, seed=5).S)
    c = RandomFeatureAM(6, 100, 1.0, seed=4, dtype=F64)
    assert torch.equal(c.S.float(), a.S)


def test_feature_sum_is_independent_of_the_chunks():
    S, b = draw_projections(7, 1000, 0, dtype=F64)
    x = binary(50, 7, 8)
    whole = features(x, S, b, 3.0, "cos").sum(0)
    torch.testing.assert_close(feature_sum(x, S, b, 3.0, "cos", chunk_size=97), whole)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomFeatureAM(0, 10, 1.0),
        lambda: RandomFeatureAM(4, 0, 1.0),
        lambda: RandomFeatureAM(4, -3, 1.0),
        lambda: RandomFeatureAM(4, 10, 0.0),
        lambda: RandomFeatureAM(4, 10, -1.0),
        lambda: RandomFeatureAM(4, 10, float("nan")),
        lambda: RandomFeatureAM(4, 10, 1.0, kernel="gauss"),
        lambda: RandomFeatureAM(4, 10, 1.0, eps=-1.0),
        lambda: RandomFeatureAM(4, 10, 1.0, dtype=torch.int64),
        lambda: RandomFeatureAM(4, 10, 1.0).add(torch.rand(3, 5)),
        lambda: RandomFeatureAM(4, 10, 1.0).add(torch.tensor([[0.1, float("nan"), 0.0, 0.0]])),
        lambda: RandomFeatureAM(4, 10, 1.0).energy(torch.rand(2, 3)),
        lambda: RandomFeatureAM(4, 10, 1.0).energy(torch.full((4,), float("inf"))),
        lambda: RandomFeatureAM(4, 10, 1.0).add(torch.rand(2, 4)).remove(torch.rand(3, 4)),
        lambda: RandomFeatureAM(4, 10, 1.0).retrieve(torch.rand(2, 4), method="attention"),
        lambda: RandomFeatureAM.from_dense(DenseAM(torch.rand(3, 4), energy="lse_dot"), 10),
        lambda: RandomFeatureAM.from_dense(DenseAM(torch.rand(3, 4), energy="lsr"), 10),
        lambda: compare_with_dense(
            RandomFeatureAM(4, 10, 2.0), DenseAM(torch.rand(3, 4), beta=1.0), torch.rand(2, 4)
        ),
    ],
)
def test_bad_input_raises_amlab_error(make):
    with pytest.raises(AmlabError):
        make()


def test_add_feature_sum_refuses_features_that_are_not_t_s_shape():
    """A scalar or a wrong-shaped sum would have broadcast into T."""
    memory = RandomFeatureAM(4, 8, beta=1.0)
    features, count = memory.feature_sum_of(torch.randn(3, 4))
    for bad in (torch.tensor(1.0), features[:-1], features.tolist()):
        with pytest.raises(AmlabError, match="T's shape"):
            memory.add_feature_sum(bad, count)
    with pytest.raises(AmlabError, match="features is torch.float64"):
        memory.add_feature_sum(features.double(), count)
    assert memory.num_stored == 0 and not memory.T.any()
    memory.add_feature_sum(features, count)
    torch.testing.assert_close(memory.T, features)
