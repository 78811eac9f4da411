"""The empirical (optimal) denoiser of a finite set: closed-form posterior mean in float64,
one LSE DenseAM attention step, its energy and score by autograd."""

import pytest
import torch

from amlab import DenseAM, descend
from amlab.diffusion import EmpiricalDenoiser, VESchedule, VPSchedule, sample
from amlab.errors import AmlabError

SCHEDULES = [VESchedule(0.05, 5.0), VPSchedule()]


def problem(dtype=torch.float64, k=12, d=5, b=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.rand(k, d, generator=g, dtype=torch.float64)
    x = 1.5 * torch.randn(b, d, generator=g, dtype=torch.float64)
    return data.to(dtype), x.to(dtype)


def log_weights(x, data, schedule, t):
    """log p(mu | x_t = x) + const (B, K) by brute force: ||x - alpha xi||^2 / (2 sigma^2)."""
    a, sig = schedule.alpha(t), schedule.sigma(t)
    d2 = ((x[:, None, :] - a * data[None, :, :]) ** 2).sum(-1)
    return -d2 / (2 * sig**2)


def brute_posterior_mean(x, data, schedule, t):
    w = torch.softmax(log_weights(x, data, schedule, t), dim=1)
    return w @ data


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["ve", "vp"])
@pytest.mark.parametrize("t", [0.02, 0.3, 0.7, 1.0])
def test_denoiser_is_the_posterior_mean(schedule, t):
    data, x = problem()
    t = max(t, schedule.t_end)
    x_t = x * schedule.alpha(t)  # states on the scale of x_t
    expected = brute_posterior_mean(x_t, data, schedule, t)
    exact = EmpiricalDenoiser(data, schedule)
    assert torch.allclose(exact.denoise(x_t, t), expected, atol=1e-12, rtol=0)
    single = EmpiricalDenoiser(data.float(), schedule, chunk_size=5)
    assert torch.allclose(single.denoise(x_t.float(), t).double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["ve", "vp"])
def test_denoising_step_is_one_dense_am_attention_step(schedule):
    data, x = problem(torch.float32)
    denoiser = EmpiricalDenoiser(data, schedule)
    for t in (schedule.t_end, 0.2, 0.6):
        am = denoiser.memory_at(t)
        assert isinstance(am, DenseAM) and am.energy_name == "lse"
        s = schedule.sigma(t) / schedule.alpha(t)
        assert am.beta == pytest.approx(1.0 / s**2)
        if isinstance(schedule, VESchedule):
            assert am.beta == pytest.approx(1.0 / schedule.sigma(t) ** 2)
        x_t = x * schedule.alpha(t)
        y = x_t / schedule.alpha(t)
        assert torch.equal(denoiser.denoise(x_t, t), am.update(y))
        # the one-step retrieval makes the same update by the streaming pass
        step = am.retrieve(y, steps=1, method="attention", tol=0.0)
        torch.testing.assert_close(denoiser.denoise(x_t, t), step.states, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["ve", "vp"])
def test_score_and_energy_match_autograd_of_the_mixture_density(schedule):
    data, x = problem()
    denoiser = EmpiricalDenoiser(data, schedule)
    for t in (max(0.05, schedule.t_end), 0.5):
        x_t = (x * schedule.alpha(t)).requires_grad_(True)
        log_p = torch.logsumexp(log_weights(x_t, data, schedule, t), dim=1)  # + const
        (brute_score,) = torch.autograd.grad(log_p.sum(), x_t)
        assert torch.allclose(denoiser.score(x_t.detach(), t), brute_score, atol=1e-9)
        # E_t = -s^2 log sum exp(-||y - xi||^2 / (2 s^2)) at y = x / alpha, so score = -grad E / s^2
        s2 = (schedule.sigma(t) / schedule.alpha(t)) ** 2
        y = x_t.detach() / schedule.alpha(t)
        brute_energy = -s2 * torch.logsumexp(
            -((y[:, None] - data[None]) ** 2).sum(-1) / (2 * s2), 1
        )
        assert torch.allclose(denoiser.energy(x_t.detach(), t), brute_energy, atol=1e-10)
        state = x_t.detach().requires_grad_(True)
        (grad_e,) = torch.autograd.grad(denoiser.energy(state, t).sum(), state)
        assert torch.allclose(-grad_e / s2, brute_score, atol=1e-9)
        e, g = denoiser.energy_oracle(t)(x_t.detach(), 0)
        assert torch.allclose(g, grad_e) and torch.allclose(e, brute_energy, atol=1e-10)


def test_limits_mean_at_high_noise_nearest_point_at_low_noise():
    data, x = problem(k=6, d=3)
    schedule = VESchedule(0.002, 1000.0)
    denoiser = EmpiricalDenoiser(data, schedule)
    assert torch.allclose(denoiser.denoise(0.01 * x, 1.0), data.mean(0).expand(7, 3), atol=1e-4)
    near = data[[2, 4]] + 0.01
    assert torch.allclose(denoiser.denoise(near, 0.0), data[[2, 4]], atol=1e-12)


def test_sampling_the_empirical_denoiser_returns_training_points():
    data, _ = problem(torch.float32, k=8, d=4)
    schedule = VESchedule(0.01, 5.0)
    denoiser = EmpiricalDenoiser(data, schedule)
    g = torch.Generator().manual_seed(0)
    out = sample(denoiser.score_fn(), schedule, schedule.prior(64, 4, g), steps=60)
    _, dist = denoiser.memory.nearest(out.states)
    # every sample ends within the last noise level (sigma_min sqrt(D) = 0.02) of a stored
    # point, far below their smallest spacing, and denoises onto it: pure memorisation
    assert dist.max() < 0.05 < 0.2 < torch.pdist(data).min()
    assert denoiser.memory.nearest(denoiser.denoise(out.states, 0.0))[1].max() < 1e-3
    # the same DenseAM descended from the same start also lands on a stored point
    plain = descend(denoiser.energy_oracle(0.0), schedule.prior(4, 4, g), steps=200, step_size=1.0)
    assert denoiser.memory.nearest(plain.states)[1].max() < 1e-3


def test_bad_input():
    data, x = problem(torch.float32)
    denoiser = EmpiricalDenoiser(data, VESchedule())
    with pytest.raises(AmlabError, match="shape"):
        denoiser.denoise(x[:, :3], 0.5)
    with pytest.raises(AmlabError, match="time t must lie"):
        denoiser.denoise(x, 1.5)
    with pytest.raises(AmlabError, match="unconditional"):
        denoiser.denoise(x, 0.5, labels=torch.zeros(7, dtype=torch.long))
    with pytest.raises(AmlabError, match="one noise level per call"):
        denoiser.denoise_scaled(x, torch.tensor([0.1, 0.2]))
    with pytest.raises(AmlabError, match="memories"):
        EmpiricalDenoiser(torch.zeros(0, 3), VESchedule())
    with pytest.raises(AmlabError, match="schedule"):
        EmpiricalDenoiser(data, "ve")
