"""Noise schedules: how a forward (noising) process blurs data, ``x_t = alpha_t x_0 + sigma_t z``.

Two processes, one interface, with t running from ``t_end`` (almost clean) to 1 (pure noise):

- variance exploding (VE): alpha_t = 1, sigma_t = sigma_min (sigma_max / sigma_min)^t
  (geometric, so evenly spaced times are evenly spaced in log sigma);
- variance preserving (VP), linear beta(t) = beta_min + t (beta_max - beta_min):
  alpha_t = exp(-B(t)/2), sigma_t^2 = 1 - alpha_t^2 with B(t) = integral_0^t beta.

Both are the SDE ``dx = f(t) x dt + g(t) dW`` with f = d log(alpha)/dt and
g^2 = d(sigma^2)/dt - 2 f sigma^2, which is what the samplers integrate backwards.

Every model works in the *scaled* coordinates ``y = x / alpha_t = x_0 + s_t z``, where the
noise level is ``s_t = sigma_t / alpha_t``: there a VP and a VE process look the same, and the
optimal denoiser of K points is an LSE Dense Associative Memory with ``beta_t = 1 / s_t^2``
(papers.md section 4).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from amlab.errors import AmlabError, check_positive, check_positive_int

#: largest noise level s_t = sigma_t / alpha_t a schedule may reach
MAX_NOISE_LEVEL = 1e6


class Schedule:
    """Base class: a forward process x_t = alpha(t) x_0 + sigma(t) z for t in [t_end, 1]."""

    name = ""
    t_end = 0.0

    def alpha(self, t: float) -> float:
        raise NotImplementedError

    def sigma(self, t: float) -> float:
        raise NotImplementedError

    def drift(self, t: float) -> float:
        """f(t) = d log(alpha_t) / dt, the linear drift coefficient of the forward SDE."""
        raise NotImplementedError

    def diffusion_sq(self, t: float) -> float:
        """g(t)^2 = d(sigma_t^2)/dt - 2 f(t) sigma_t^2, the forward SDE's squared diffusion."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments plus the name (see :func:`schedule_from_config`)."""
        raise NotImplementedError

    def noise_level(self, t: float) -> float:
        """s_t = sigma_t / alpha_t: the noise standard deviation in scaled coordinates x / alpha."""
        return self.sigma(t) / self.alpha(t)

    def beta(self, t: float) -> float:
        """The inverse temperature 1 / s_t^2 of the DenseAM that is the optimal denoiser."""
        return 1.0 / self.noise_level(t) ** 2

    def times(self, steps: int) -> torch.Tensor:
        """steps + 1 times from 1 down to ``t_end``, evenly spaced (float64)."""
        steps = check_positive_int(steps, "steps")
        return torch.linspace(1.0, self.t_end, steps + 1, dtype=torch.float64)

    def prior(
        self,
        num: int,
        dim: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """num draws (num, dim) from N(0, (alpha_1^2 + sigma_1^2) I), the start of sampling.

        This is p_1 when the data have zero mean and unit variance (VP) or are negligible
        next to sigma_max (VE).
        """
        num, dim = check_positive_int(num, "num"), check_positive_int(dim, "dim")
        return self.prior_scale() * torch.randn(num, dim, generator=generator, dtype=dtype)

    def prior_scale(self) -> float:
        """The prior's standard deviation, sqrt(alpha_1^2 + sigma_1^2)."""
        return math.hypot(self.alpha(1.0), self.sigma(1.0))

    def check_time(self, t: float) -> float:
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise AmlabError(f"the time t must be a number; got {t!r}.") from None
        if not self.t_end <= t <= 1.0:
            raise AmlabError(
                f"the time t must lie in [{self.t_end:g}, 1] for the {self.name} schedule; got {t}."
            )
        return t


class VESchedule(Schedule):
    """Variance exploding: alpha_t = 1 and sigma_t = sigma_min (sigma_max / sigma_min)^t
    for t in [0, 1]."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0) -> None:
        self.sigma_min = check_positive(sigma_min, "sigma_min")
        self.sigma_max = check_positive(sigma_max, "sigma_max")
        if not self.sigma_min < self.sigma_max:
            raise AmlabError(f"sigma_min must be below sigma_max; got {sigma_min} and {sigma_max}.")
        if self.sigma_max > MAX_NOISE_LEVEL:
            raise AmlabError(
                f"sigma_max must be at most {MAX_NOISE_LEVEL:g} (states of that size overflow "
                f"float32 energies); got {sigma_max}. Rescale the data instead."
            )
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: float) -> float:
        return 1.0

    def sigma(self, t: float) -> float:
        return self.sigma_min * math.exp(self._log_ratio * t)

    def drift(self, t: float) -> float:
        return 0.0

    def diffusion_sq(self, t: float) -> float:
        return 2.0 * self._log_ratio * self.sigma(t) ** 2

    def time_of(self, sigma: float) -> float:
        """The time t at which sigma_t = sigma (sigma within [sigma_min, sigma_max])."""
        sigma = check_positive(sigma, "sigma")
        if not self.sigma_min <= sigma <= self.sigma_max * (1 + 1e-12):
            raise AmlabError(
                f"sigma must lie in [{self.sigma_min:g}, {self.sigma_max:g}]; got {sigma}."
            )
        return min(math.log(sigma / self.sigma_min) / self._log_ratio, 1.0)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def __repr__(self) -> str:
        return f"VESchedule(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


class VPSchedule(Schedule):
    """Variance preserving with linear beta(t) = beta_min + t (beta_max - beta_min), t in
    [t_end, 1]: alpha_t = exp(-B(t)/2), sigma_t^2 = 1 - alpha_t^2."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_end: float = 1e-3) -> None:
        self.beta_min = check_positive(beta_min, "beta_min")
        self.beta_max = check_positive(beta_max, "beta_max")
        self.t_end = check_positive(t_end, "t_end")
        if not self.beta_min <= self.beta_max:
            raise AmlabError(f"beta_min must not exceed beta_max; got {beta_min} and {beta_max}.")
        if not self.t_end < 1.0:
            raise AmlabError(f"t_end must lie in (0, 1); got {t_end}.")
        if self._integral(1.0) > 2 * math.log(MAX_NOISE_LEVEL):
            raise AmlabError(
                f"beta_min = {beta_min} and beta_max = {beta_max} shrink alpha_1 to "
                f"{self.alpha(1.0):.3g}, a noise level beyond {MAX_NOISE_LEVEL:g}; keep "
                "beta_min + beta_max below about 50 (the usual values are 0.1 and 20)."
            )

    def _beta_t(self, t: float) -> float:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _integral(self, t: float) -> float:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def alpha(self, t: float) -> float:
        return math.exp(-0.5 * self._integral(t))

    def sigma(self, t: float) -> float:
        return math.sqrt(-math.expm1(-self._integral(t)))

    def drift(self, t: float) -> float:
        return -0.5 * self._beta_t(t)

    def diffusion_sq(self, t: float) -> float:
        return self._beta_t(t)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "beta_min": self.beta_min,
            "beta_max": self.beta_max,
            "t_end": self.t_end,
        }

    def __repr__(self) -> str:
        return (
            f"VPSchedule(beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, "
            f"t_end={self.t_end:g})"
        )


SCHEDULES = {"ve": VESchedule, "vp": VPSchedule}


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.config`."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise AmlabError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    try:
        return SCHEDULES[name](**config)
    except TypeError as exc:
        raise AmlabError(f"the {name} schedule's settings {config} do not fit ({exc}).") from None
