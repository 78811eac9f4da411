"""Schedules and samplers against Gaussian data, where p_t and its score are known exactly.

Data x_0 ~ N(m, diag(s^2)) gives p_t = N(alpha_t m, diag(alpha_t^2 s^2 + sigma_t^2)), the score
-(x - alpha_t m) / v_t, and the probability-flow ODE's exact solution
x_t = alpha_t m + sqrt(v_t / v_1) (x_1 - alpha_1 m) per coordinate.
"""

import math

import pytest
import torch

from amlab.diffusion import VESchedule, VPSchedule, sample, schedule_from_config
from amlab.errors import AmlabError

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
STD = torch.tensor([0.5, 0.8], dtype=torch.float64)
SCHEDULES = [VESchedule(0.01, 10.0), VPSchedule()]


def variance(schedule, t):
    return schedule.alpha(t) ** 2 * STD**2 + schedule.sigma(t) ** 2


def gaussian_score(schedule):
    return lambda x, t: -(x - schedule.alpha(t) * MEAN) / variance(schedule, t)


def draw_p1(schedule, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return schedule.alpha(1.0) * MEAN + variance(schedule, 1.0).sqrt() * z


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["ve", "vp"])
@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_ode_samplers_follow_the_exact_flow_with_their_order(schedule, method, order):
    x1 = draw_p1(schedule, 200)
    te = schedule.t_end
    exact = schedule.alpha(te) * MEAN + (
        variance(schedule, te) / variance(schedule, 1.0)
    ).sqrt() * (x1 - schedule.alpha(1.0) * MEAN)
    errors = [
        (sample(gaussian_score(schedule), schedule, x1, steps=n, method=method).states - exact)
        .abs()
        .max()
        .item()
        for n in (50, 100, 200)
    ]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    # doubling the steps divides the error by about 2^order
    assert all(2**order * 0.85 < r < 2**order * 1.15 for r in ratios), (errors, ratios)
    assert errors[-1] < (0.15 if order == 1 else 0.002)


# Stated tolerance: with 20,000 draws, |mean error| < 0.03 per coordinate and the variance
# within 5% of the exact p_{t_end} (sampling error alone: about 0.006 and 1%).
@pytest.mark.parametrize("schedule", SCHEDULES, ids=["ve", "vp"])
@pytest.mark.parametrize("method,steps", [("euler", 1000), ("heun", 100), ("euler_maruyama", 500)])
def test_samplers_reach_the_gaussian_marginal(schedule, method, steps):
    x1 = draw_p1(schedule, 20_000, seed=1)
    g = torch.Generator().manual_seed(2)
    out = sample(gaussian_score(schedule), schedule, x1, steps=steps, method=method, generator=g)
    te = schedule.t_end
    assert out.states.shape == x1.shape and out.path is None
    assert (out.states.mean(0) - schedule.alpha(te) * MEAN).abs().max() < 0.03
    rel = out.states.var(0) / variance(schedule, te) - 1
    assert rel.abs().max() < 0.05, rel


def test_record_path_and_times():
    schedule = VESchedule(0.1, 5.0)
    x1 = draw_p1(schedule, 4)
    calls = []
    out = sample(
        gaussian_score(schedule),
        schedule,
        x1,
        steps=7,
        record=True,
        on_step=lambda i, n: calls.append(i),
    )
    assert out.path.shape == (8, 4, 2) and torch.equal(out.path[0], x1)
    assert torch.equal(out.path[-1], out.states)
    assert out.times[0] == 1.0 and out.times[-1] == 0.0 and calls == list(range(1, 8))
    sigmas = [schedule.sigma(float(t)) for t in out.times]
    ratios = [a / b for a, b in zip(sigmas, sigmas[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios))  # even steps in log sigma


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["ve", "vp"])
def test_schedule_coefficients_match_finite_differences(schedule):
    h = 1e-6
    for t in (0.05, 0.3, 0.9):
        dlog_alpha = (math.log(schedule.alpha(t + h)) - math.log(schedule.alpha(t - h))) / (2 * h)
        dvar = (schedule.sigma(t + h) ** 2 - schedule.sigma(t - h) ** 2) / (2 * h)
        assert schedule.drift(t) == pytest.approx(dlog_alpha, abs=1e-6)
        g2 = dvar - 2 * schedule.drift(t) * schedule.sigma(t) ** 2
        assert schedule.diffusion_sq(t) == pytest.approx(g2, rel=1e-5)
        assert schedule.beta(t) == pytest.approx(schedule.alpha(t) ** 2 / schedule.sigma(t) ** 2)
    if isinstance(schedule, VPSchedule):
        assert schedule.alpha(0.4) ** 2 + schedule.sigma(0.4) ** 2 == pytest.approx(1.0)
    rebuilt = schedule_from_config(schedule.config())
    assert type(rebuilt) is type(schedule) and rebuilt.config() == schedule.config()


def test_ve_time_of_inverts_sigma():
    schedule = VESchedule(0.02, 20.0)
    for sigma in (0.02, 0.5, 20.0):
        assert schedule.sigma(schedule.time_of(sigma)) == pytest.approx(sigma)
    with pytest.raises(AmlabError, match="sigma must lie"):
        schedule.time_of(50.0)


def test_bad_input_raises_clear_errors():
    schedule = VESchedule()
    x = torch.zeros(3, 2)
    with pytest.raises(AmlabError, match="unknown method"):
        sample(lambda x, t: x, schedule, x, method="rk4")
    with pytest.raises(AmlabError, match="returned shape"):
        sample(lambda x, t: x[:, :1], schedule, x)
    with pytest.raises(AmlabError, match=r"shape \(B, D\)"):
        sample(lambda x, t: x, schedule, torch.zeros(3))
    with pytest.raises(AmlabError, match="NaN"):
        sample(lambda x, t: x, schedule, torch.full((2, 2), float("nan")))
    with pytest.raises(AmlabError, match="diverged"):
        sample(lambda x, t: torch.full_like(x, 1e38), schedule, x, steps=3)
    with pytest.raises(AmlabError, match="below sigma_max"):
        VESchedule(1.0, 0.5)
    with pytest.raises(AmlabError, match="t_end"):
        VPSchedule(t_end=1.5)
    with pytest.raises(AmlabError, match="sigma_max must be at most"):
        VESchedule(0.01, 1e7)
    with pytest.raises(AmlabError, match="shrink alpha_1"):
        VPSchedule(1.0, 2839.0)
    with pytest.raises(AmlabError, match="unknown schedule"):
        schedule_from_config({"name": "cosine"})
    with pytest.raises(AmlabError, match="time t must lie"):
        schedule.check_time(2.0)
