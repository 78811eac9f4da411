"""The LSR reproduction's sections (experiments/lsr/: kernels, minima, loglik, images):
minima counting, the mixture density, scores, and each section's compute -> figure ->
write on a small grid."""

import math

import pytest
import torch

from amlab import DenseAM
from amlab.analysis import lsr_minima_brute_force
from amlab.data import load
from amlab.experiments.lsr import QUICK, Grid
from amlab.experiments.lsr import images as I
from amlab.experiments.lsr import kernels as K
from amlab.experiments.lsr import loglik as L
from amlab.experiments.lsr import minima as N
from amlab.experiments.report import Context, Report

SPACING = 5e-4


def minima(kernel: str, h: float) -> K.GridMinima:
    x = K.kernel_grid(3.0, SPACING)
    return K.grid_minima(x, K.kernel_energy(kernel, x, h)[None])[0]


def as_t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# -- kernel minima ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "h", [0.5, 0.9, 0.999, 1.0, 1.001, 1.01, 1.3, 1.5, 1.8, 1.99, 1.999, 2.0, 2.001, 2.5, 3.0]
)
def test_epanechnikov_has_three_minima_exactly_for_h_between_1_and_2(h):
    """Analytic case: each memory is outside the other's support iff h <= 2, and both
    supports contain 0 iff h > 1; so minima at -1, 0, +1 iff 1 < h < 2 (on the grid, down to
    1e-3 from either end), no flat region ever."""
    found = minima("epanechnikov", h)
    assert not found.flats
    if 1.0 < h < 2.0:
        assert torch.allclose(as_t(found.strict), as_t([-1.0, 0.0, 1.0]), atol=SPACING)
        c = found.classify()
        assert (c["stored"], c["emergent"], c["shifted"], c["max_stored_shift"]) == (2, 1, 0, 0.0)
    elif h <= 1.0:
        assert torch.allclose(as_t(found.strict), as_t([-1.0, 1.0]))
    else:  # h >= 2: one minimum at the midpoint, the memories are no longer minima
        assert torch.allclose(as_t(found.strict), as_t([0.0]), atol=SPACING)


def test_gaussian_never_has_three_minima():
    """exp(-u^2/2) around +-1: two minima (at +-x*, x* = tanh(x*/h^2)) below h = 1, one at 0
    from h = 1 on; never three."""
    hs = torch.arange(0.3, 3.001, 0.02, dtype=torch.float64)
    x = K.kernel_grid(3.0, SPACING)
    found_all = K.grid_minima(x, K.kernel_energy("gaussian", x, hs))
    for h, found in zip(hs.tolist(), found_all, strict=True):
        assert len(found.strict) == (2 if h < 0.995 else 1), h
        assert not found.flats
        if h < 0.9:  # the two minima sit at the root of x = tanh(x / h^2), not at +-1
            x_star = max(found.strict)
            assert abs(x_star - math.tanh(x_star / h**2)) < 1e-3


def test_flat_kernels_report_plateaus_not_minima():
    # uniform, h < 1: each memory sits on a plateau of width 2h, no strict minimum
    found = minima("uniform", 0.5)
    assert len(found.strict) == 0
    assert [(round(a, 3), round(b, 3)) for a, b in found.flat_minima] == [(-1.5, -0.5), (0.5, 1.5)]
    # uniform, 1 < h < 2: the overlap (-(h-1), h-1) is a flat minimum; the memories lie on
    # flat regions that are not minima
    found = minima("uniform", 1.5)
    assert len(found.strict) == 0
    assert [(round(a, 3), round(b, 3)) for a, b in found.flat_minima] == [(-0.5, 0.5)]
    assert len(found.flats) == 3
    # triangle, 1 < h < 2: memories are strict minima, the middle a flat non-minimum
    found = minima("triangle", 1.5)
    assert torch.allclose(as_t(found.strict), as_t([-1.0, 1.0]))
    assert found.flat_minima == []
    assert [(round(a, 3), round(b, 3)) for a, b in found.flats] == [(-0.5, 0.5)]
    # triangle, h >= 2: one flat minimum spanning both memories
    found = minima("triangle", 2.5)
    assert len(found.strict) == 0
    assert [(round(a, 3), round(b, 3)) for a, b in found.flat_minima] == [(-1.0, 1.0)]


def test_grid_minima_on_a_hand_made_profile():
    x = torch.arange(12, dtype=torch.float64)
    inf = math.inf
    #            0    1    2    3    4    5    6    7    8    9    10   11
    e = torch.tensor([inf, 3.0, 1.0, 2.0, inf, inf, 2.0, 0.5, 0.5, 0.5, 1.0, 0.0])
    (found,) = K.grid_minima(x, e[None], flat_width=1.5)
    assert found.strict == [2.0]  # 11 touches the grid's end, inf runs never count
    assert found.flat_minima == [(7.0, 9.0)]
    (found,) = K.grid_minima(x, e[None], flat_width=10.0)  # that run, narrower than flat
    assert found.strict == [2.0, 8.0]
    assert found.flats == []
    # rows are independent: a second row does not see the first one's last value
    both = K.grid_minima(x, torch.stack([e, e.flip(0)]), flat_width=1.5)
    assert both[0] == K.grid_minima(x, e[None], flat_width=1.5)[0]
    assert both[1].strict == [9.0] and both[1].flat_minima == [(2.0, 4.0)]


def test_kernels_match_the_dense_am_energies():
    """The 1-D picture and the kernel scan are the same energies: LSR = (1/beta) x
    Epanechnikov with h = sqrt(2/beta), LSE = (1/beta) x Gaussian with h = 1/sqrt(beta)."""
    beta = 0.9
    x = torch.linspace(-2.4, 2.4, 101, dtype=torch.float64)
    mem = torch.tensor(K.MEMORIES, dtype=torch.float64)[:, None]
    lsr = DenseAM(mem, energy="lsr", beta=beta).energy(x[:, None]).detach()
    lse = DenseAM(mem, energy="lse", beta=beta).energy(x[:, None]).detach()
    epa = K.kernel_energy("epanechnikov", x, math.sqrt(2 / beta)) / beta
    gauss = K.kernel_energy("gaussian", x, 1 / math.sqrt(beta)) / beta
    assert torch.allclose(lsr, epa, atol=1e-12)
    assert torch.allclose(lse, gauss, atol=1e-12)


@pytest.mark.parametrize("kernel", list(K.KERNELS))
def test_three_minima_exactly_inside_the_analytic_range(kernel):
    """Every kernel: three strict minima exactly for h inside THEORY_THREE, checked at 0.005
    on both sides of each end of the interval (and across 0.5..3 in steps of 0.1)."""
    bounds = K.THEORY_THREE[kernel]
    hs = [round(0.5 + 0.1 * i, 6) for i in range(26)]
    if bounds is not None:
        hs += [b + s for b in bounds for s in (-0.005, 0.005)]
    scan = K.kernel_scan(sorted(hs), SPACING, kernels=[kernel])[kernel]
    assert K.agrees_with_theory(kernel, scan)
    assert any(K._three(r) for r in scan) == (bounds is not None)


def test_h_ranges_joins_consecutive_bandwidths():
    rows = [{"h": h, "ok": ok} for h, ok in [(1, 0), (2, 1), (3, 1), (4, 0), (5, 1)]]
    assert K.h_ranges(rows, lambda r: bool(r["ok"])) == [[2, 3], [5, 5]]


# -- log-likelihood experiment ------------------------------------------------------------------
def test_gmm_log_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    means = L.gmm_means(4, 6, g)
    x = torch.rand(50, 6, generator=g, dtype=torch.float64)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(4, dtype=torch.float64)),
        torch.distributions.Independent(
            torch.distributions.Normal(means, torch.full_like(means, L.SIGMA)), 1
        ),
    )
    assert torch.allclose(L.gmm_log_density(x, means), mix.log_prob(x), atol=1e-9)
    # a direct one-component formula: log N(x; m, s^2 I)
    one = means[:1]
    direct = -((x - one) ** 2).sum(1) / (2 * L.SIGMA**2) - 3 * math.log(2 * math.pi * L.SIGMA**2)
    assert torch.allclose(L.gmm_log_density(x, one), direct, atol=1e-9)


def test_novelty_and_unique_retrievals_on_a_hand_made_case():
    mem = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    # LSE: points within 1e-3 merge; distances to the nearest memory 0, 0.5, 0.2
    states = torch.tensor(
        [[0.0, 0.0], [0.0, 5e-4], [0.5, 0.0], [0.5, 2e-4], [1.0, 0.2]], dtype=torch.float64
    )
    keep = L.unique_retrievals("lse", states, mem, beta=1.0)
    assert keep.tolist() == [0, 2, 4]
    new = L.novelty(states[keep], mem)
    assert new["novel"].tolist() == [False, True, True]
    assert new["fraction"] == pytest.approx(2 / 3)
    # LSR at r = 0.8: active sets {0}, {0, 1}, {0, 1}, {1} -> three distinct retrievals
    beta = 2 / 0.8**2
    states = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert L.unique_retrievals("lsr", states, mem, beta).tolist() == [0, 1, 3]
    assert math.isnan(L.novelty(states[:0], mem)["fraction"])


def test_starts_lie_on_the_sphere_and_betas_span_the_paper_range():
    g = torch.Generator().manual_seed(0)
    mem = torch.rand(5, 3, generator=g, dtype=torch.float64)
    starts = L.sphere_starts(mem, 0.7, 4, g)
    assert starts.shape == (20, 3)
    dist = (starts - mem.repeat_interleave(4, 0)).norm(dim=1)
    assert torch.allclose(dist, torch.full_like(dist, 0.7))
    betas = L.beta_grid(mem, 7)
    r_min = 0.5 * torch.pdist(mem).min()
    assert betas[0].item() == pytest.approx(2 / 3)
    assert betas[-1].item() == pytest.approx(2 / r_min.item() ** 2)
    ratios = betas[1:] / betas[:-1]
    assert torch.allclose(ratios, ratios[:1].expand_as(ratios))


def test_lsr_starts_converge_to_centroids_of_their_active_sets():
    g = torch.Generator().manual_seed(1)
    means = L.gmm_means(3, 4, g)
    mem = L.gmm_sample(means, 15, g)
    beta = float(L.beta_grid(mem, 5)[2])
    starts = L.sphere_starts(mem, L.START_SHRINK * math.sqrt(2 / beta), 3, g)
    states, converged = L.retrieve("lsr", mem, beta, starts, lse_steps=10)
    assert bool(converged.all())
    active = torch.cdist(states, mem) < math.sqrt(2 / beta)
    centroids = active.double() @ mem / active.sum(1, keepdim=True)
    assert torch.allclose(states, centroids, atol=1e-12)


# -- the sections on small grids --------------------------------------------------------------
def run_section(section, grid, out, seed=0, images=None):
    """compute -> figure -> write of one section, as `reproduce` runs it; returns the
    result, the metrics, the report and the progress fractions seen."""
    ctx = Context(grid=grid, seed=seed, quick=True, out=out, images=images)
    report = Report(out, "t")
    seen = []
    result = section.compute(ctx, lambda s, f: seen.append(f))
    section.figure(result, ctx, report)
    metrics = section.write(result, ctx, report)
    report.write(metrics)  # the metrics are valid JSON
    return result, metrics, report, seen


def test_kernel_section_quick(tmp_path):
    result, metrics, report, seen = run_section(K.SECTION, QUICK, tmp_path)
    assert (tmp_path / "lsr_1d.png").stat().st_size > 0
    assert (tmp_path / "lsr_kernels.png").stat().st_size > 0
    assert set(metrics) == {"picture_1d", "kernels"}
    lsr = metrics["picture_1d"]["lsr"]
    assert (lsr["stored"], lsr["emergent"]) == (2, 1)
    assert lsr == result.picture.minima["lsr"]
    summary = metrics["kernels"]["summary"]
    assert summary == result.kernels.summary
    assert summary["epanechnikov"]["three_minima_h"] == [[1.05, 1.95]]
    assert all(s["agrees_with_theory"] for s in summary.values())
    assert summary["gaussian"]["three_minima_h"] == []
    assert summary["uniform"]["flat_minimum_h"]
    assert metrics["kernels"]["bandwidths"] == [round(0.5 + 0.05 * i, 6) for i in range(51)]
    assert len(report.claims) == 2
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


def test_minima_section_counts_match_brute_force(tmp_path):
    grid = Grid(
        minima_sizes=(5,),
        minima_dims=(8,),
        minima_seed_offsets=(0, 3),
        minima_n_betas=5,
        minima_volume_samples=2000,
        minima_starts_per_memory=3,
        minima_lse_steps=200,
    )
    runs, metrics, report, _ = run_section(N.SECTION, grid, tmp_path, seed=1)
    assert (tmp_path / "minima_vs_beta.png").stat().st_size > 0
    assert metrics["minima_vs_beta"] == runs
    assert [(run["M"], run["d"], run["seed"]) for run in runs] == [(5, 8, 1), (5, 8, 4)]
    for run in runs:  # the memories are the first draw of the run's seed
        mem = torch.rand(
            5, 8, generator=torch.Generator().manual_seed(run["seed"]), dtype=torch.float64
        )
        assert run["betas"][0] == pytest.approx(2 / 8)
        assert run["betas"][-1] == pytest.approx(2 / (0.5 * torch.pdist(mem).min().item()) ** 2)
        # the last beta is left out: there the two closest supports touch exactly
        for k, beta in enumerate(run["betas"][:-1]):
            brute = lsr_minima_brute_force(mem, beta)
            assert run["lsr_stored"][k] == int(brute.stored.sum())
            assert run["lsr_emergent"][k] == int((~brute.stored).sum())
        assert run["lsr_stored"][-1] == 5
        # at beta = 2/d the support radius sqrt(d) spans the cube: full coverage, shrinking after
        assert run["coverage"][0] == 1.0
        assert all(a >= b for a, b in zip(run["coverage"], run["coverage"][1:], strict=False))
    ratios = [
        max(
            (e / s for e, s in zip(run["lsr_emergent"], run["lsr_stored"], strict=True) if s),
            default=0.0,
        )
        for run in runs
    ]
    assert metrics["max_emergent_over_stored"] == max(ratios)
    assert len(report.claims) == 3


def test_loglik_section_small_grid(tmp_path):
    grid = Grid(
        loglik_configs=((3, 4, 12),),
        loglik_n_betas=4,
        loglik_starts_per_memory=5,
        loglik_lse_steps=500,
    )
    result, metrics, report, _ = run_section(L.SECTION, grid, tmp_path)
    assert (tmp_path / "lsr_loglik.png").stat().st_size > 0
    assert set(metrics["loglik"]) == {"lsr", "lse"}
    assert all(math.isfinite(v) for v in metrics["loglik"].values())
    (run,) = metrics["loglik_experiment"]["runs"]
    assert metrics["loglik_experiment"]["runs"] == result.runs
    assert metrics["loglik_experiment"]["settings"]["lse_steps"] == 500
    assert len(run["lsr"]) == len(run["lse"]) == 4
    for energy in ("lsr", "lse"):
        assert {"loglik", "loglik_unique", "novelty", "unique", "converged"} <= set(run[energy][0])
        # at the largest beta the supports do not overlap: every memory retrieves itself
        assert run[energy][-1]["unique"] == 12
        assert run[energy][-1]["novel"] == 0
        # the reported log-likelihood is the mean over the betas of one config
        per_beta = [row["loglik"] for row in run[energy]]
        assert metrics["loglik"][energy] == pytest.approx(sum(per_beta) / len(per_beta))
    # at the smallest beta r = sqrt(d) covers the cube: one retrieval, the memories' mean
    assert run["lsr"][0]["unique"] == 1
    assert len(report.claims) == 2


def test_images_section_on_a_digits_subset(tmp_path):
    data = load("digits").subset(300, seed=0)
    result, metrics, report, _ = run_section(
        I.SECTION, Grid(images_per_search=5), tmp_path, images=data
    )
    mem = result.mem
    assert mem.shape[0] == metrics["images"]["stored"] == len(mem.unique(dim=0))
    pair = torch.pdist(mem).min().item()
    assert metrics["images"]["min_pair_distance"] == pytest.approx(pair)
    assert result.r < pair
    assert metrics["images"]["beta"] == pytest.approx(2 / result.r**2)
    assert metrics["exact_retrieval_fraction"] == 1.0
    for found, key in (
        (result.tight, "emergent_at_exact_beta"),
        (result.wide, "emergent_at_wide_beta"),
    ):
        summary = metrics["images"][key]
        assert summary["emergent_found"] == len(found.gallery)
        assert summary["searched"] == found.searched <= 5
        assert sum(summary["support_sizes"].values()) == len(found.gallery)
        r2 = 2 / found.beta
        for point, support in found.gallery:
            assert len(support) >= 2
            assert torch.allclose(point, mem[list(support)].mean(0), atol=1e-12)
            # the point's active set, computed directly, is its support: a fixed point
            active = ((mem - point) ** 2).sum(1) < r2
            assert active.nonzero().squeeze(1).tolist() == list(support)
    assert result.wide.gallery
    assert (tmp_path / "emergent_wide_beta.png").stat().st_size > 0
    assert len(report.claims) == 2  # the digits: no MNIST claim
