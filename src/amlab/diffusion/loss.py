"""Training a learned denoiser with the shared loop (:func:`amlab.training.train`).

The loss is denoising score matching with the EDM weighting: draw training examples, a
noise level s log-uniformly over the schedule's range [s(t_end), s(1)] (or log-normally)
and Gaussian noise,
and regress the denoiser onto the clean example,

    loss = mean over the batch of (s^2 + sd^2) / (s sd)^2 * ||D(x_0 + s z, s) - x_0||^2 / D,

which makes the network's own regression target unit-scale at every noise level. All
randomness of a step comes from the generator the loop passes in, so resuming a run from a
checkpoint reproduces it exactly. Class labels are replaced by -1 ("no class") with
probability ``label_dropout``, which trains the unconditional model used by guidance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from amlab.diffusion.denoiser import NO_CLASS
from amlab.diffusion.networks import LearnedDenoiser
from amlab.errors import AmlabError, as_float_tensor, check_positive_int


def denoising_loss(
    data: Any,
    labels: Any = None,
    *,
    batch_size: int = 128,
    label_dropout: float = 0.1,
    log_normal: tuple[float, float] | None = None,
) -> Callable[[LearnedDenoiser, int, torch.Generator], tuple[torch.Tensor, dict]]:
    """The loss ``loss(model, step, generator)`` of :func:`amlab.training.train` for a
    :class:`~amlab.diffusion.networks.LearnedDenoiser` on ``data`` (N, D) (and ``labels``:
    classes (N,), or token ids (N, L) of a :class:`~amlab.diffusion.networks.TextConvDenoiser`,
    whose dropped rows become the empty prompt).

    log_normal: (mean, std) to draw log(s) from a normal distribution instead (EDM uses
    (-1.2, 1.2)), clipped to the schedule's range; it spends the steps on the middle noise
    levels, where the structure of the samples is decided.
    """
    data = as_float_tensor(data, "data")
    if data.ndim != 2 or data.shape[0] == 0:
        raise AmlabError(f"data must have shape (N, D) with N >= 1; got {tuple(data.shape)}.")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not 0.0 <= label_dropout <= 1.0:
        raise AmlabError(f"label_dropout must lie in [0, 1]; got {label_dropout!r}.")
    if labels is not None:
        labels = torch.as_tensor(labels).long()
        if labels.ndim not in (1, 2) or labels.shape[0] != data.shape[0]:
            raise AmlabError(
                f"labels must have shape ({data.shape[0]},) (classes) or ({data.shape[0]}, L) "
                "(token ids) like the data; got "
                f"{tuple(labels.shape)}."
            )

    def loss(model: LearnedDenoiser, step: int, generator: torch.Generator):
        if not isinstance(model, LearnedDenoiser):
            raise AmlabError("denoising_loss trains a LearnedDenoiser (MLPDenoiser, ConvDenoiser).")
        if model.dim != data.shape[1]:
            raise AmlabError(f"the model takes D = {model.dim}; the data have D = {data.shape[1]}.")
        schedule = model.schedule
        lo = math.log(schedule.noise_level(schedule.t_end))
        hi = math.log(schedule.noise_level(1.0))
        index = torch.randint(data.shape[0], (batch_size,), generator=generator)
        if log_normal is None:
            u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
            s = torch.exp(lo + (hi - lo) * u)
        else:
            z = torch.randn(batch_size, generator=generator, dtype=torch.float64)
            s = torch.exp((log_normal[0] + log_normal[1] * z).clamp(lo, hi))
        noise = torch.randn(batch_size, data.shape[1], generator=generator, dtype=data.dtype)
        place = {"device": model.device, "dtype": model.dtype}
        clean = data[index].to(**place)
        s = s.to(**place)
        lab = None
        if labels is not None and model.conditional:
            drop = torch.rand(batch_size, generator=generator) < label_dropout
            drop = drop.reshape(-1, *[1] * (labels.ndim - 1))
            lab = torch.where(drop, NO_CLASS, labels[index]).to(model.device)
        denoised = model.denoise_scaled(clean + s[:, None] * noise.to(**place), s, lab)
        sd2 = model.sigma_data**2
        weight = (s * s + sd2) / (s * s * sd2)
        error = (denoised - clean) ** 2
        value = (weight * error.mean(1)).mean()
        return value, {"mse": float(error.mean().detach())}

    return loss
