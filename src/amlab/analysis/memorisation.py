"""The memorisation audit: is a generated image a training image, a spurious mixture of
training images, or something new?

The training set's energy at noise level s is the LSE energy of the DenseAM storing the
training images with beta = 1 / s^2; one attention step of that DenseAM is the exact
(empirical) denoiser of the training set at level s (papers.md section 4,
:class:`amlab.diffusion.EmpiricalDenoiser`). Its local minima are the training images and,
where training images lie within about 2 s of each other, *spurious* minima between them:
weighted mixtures that are no training image. Each generated image x is classed

- **memorised** when its nearest training image lies within ``threshold``;
- **spurious** otherwise when attention steps (the empirical denoiser applied until it stops
  moving) carry it to a minimum m within ``threshold`` of x that is itself no training image
  (its nearest training image is ``threshold`` or more away);
- **generalised** otherwise: neither a copy nor near a mixture.

The default scale comes from the training set itself (:meth:`Audit.fit`): with ``typical`` the
median distance from a training image to its nearest other training image (over a fixed
sample of :data:`TYPICAL_SAMPLE` of them in a larger set), ``threshold`` is
``typical / 3`` (the memorised distance of :mod:`amlab.experiments.diffusion.digits`) and
s is ``typical / 2`` (so training images closer than ``typical`` merge into mixtures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from amlab.energy.distances import nearest_memory, nearest_other_distances
from amlab.errors import AmlabError, as_float_tensor, check_positive, check_positive_int
from amlab.models import DenseAM

#: at most this many training images' nearest-neighbour distances give the typical one
TYPICAL_SAMPLE = 2000
#: the audit's classes, by their index in :attr:`AuditResult.classes`
AUDIT_CLASSES = ("memorised", "spurious", "generalised")


@dataclass(frozen=True)
class Audit:
    """The audit's scale: ``threshold`` (a distance) and the energy's ``noise_level`` s."""

    threshold: float
    noise_level: float

    def __post_init__(self) -> None:
        check_positive(self.threshold, "threshold")
        check_positive(self.noise_level, "noise_level")

    @classmethod
    def fit(cls, train: Any) -> Audit:
        """The default scale of the training set ``train`` (N, D), N >= 2 (module docstring)."""
        train = _training_set(train)
        if train.shape[0] < 2:
            raise AmlabError("the audit's default scale needs at least 2 training images.")
        rows = torch.arange(train.shape[0])
        if len(rows) > TYPICAL_SAMPLE:  # the median of a fixed sample of them
            rows = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
            rows = rows[:TYPICAL_SAMPLE]
        typical = float(nearest_other_distances(train, rows, block=512).median())
        if typical <= 0:
            raise AmlabError(
                "most training images have an exact duplicate; the audit needs distinct images "
                "(or pass Audit(threshold, noise_level) yourself)."
            )
        return cls(threshold=typical / 3, noise_level=typical / 2)


@dataclass
class AuditResult:
    """Per audited image (B,): ``classes`` (index into :data:`AUDIT_CLASSES`), the index of
    and distance to the nearest training image (``nearest``, ``distance``), the training
    set's energy at the image (``energy``), the minimum its descent reached (``minimum``
    (B, D)) and that minimum's distance to the image (``minimum_distance``)."""

    classes: torch.Tensor
    nearest: torch.Tensor
    distance: torch.Tensor
    energy: torch.Tensor
    minimum: torch.Tensor
    minimum_distance: torch.Tensor

    def names(self) -> list[str]:
        return [AUDIT_CLASSES[int(c)] for c in self.classes]

    def fractions(self) -> dict[str, float]:
        """The share of the images in each class."""
        n = max(len(self.classes), 1)
        return {name: int((self.classes == i).sum()) / n for i, name in enumerate(AUDIT_CLASSES)}


def _training_set(train: Any) -> torch.Tensor:
    train = as_float_tensor(train, "train", dtype=torch.float64)
    if train.ndim != 2 or train.shape[0] == 0:
        raise AmlabError(f"train must have shape (N, D) with N >= 1; got {tuple(train.shape)}.")
    return train


def audit(x: Any, train: Any, scale: Audit | None = None, *, steps: int = 500) -> AuditResult:
    """Class each image of ``x`` (B, D) against the training set ``train`` (N, D) (module
    docstring); ``scale`` defaults to :meth:`Audit.fit` of ``train``. Computed in float64;
    ``steps`` bounds the attention steps of the descent."""
    train = _training_set(train)
    x = as_float_tensor(x, "x", dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] != train.shape[1]:
        raise AmlabError(f"x must have shape (B, {train.shape[1]}); got {tuple(x.shape)}.")
    scale = Audit.fit(train) if scale is None else scale
    steps = check_positive_int(steps, "steps")
    memory = DenseAM(train, energy="lse", beta=scale.noise_level**-2, dtype=torch.float64)
    nearest, distance = nearest_memory(x, train)
    descent = memory.retrieve(x, steps=steps, method="attention", tol=1e-9 * scale.threshold)
    minimum = descent.states
    _, minimum_to_train = nearest_memory(minimum, train)
    minimum_distance = (minimum - x).norm(dim=1)
    memorised = distance < scale.threshold
    spurious = (
        ~memorised & (minimum_distance < scale.threshold) & (minimum_to_train >= scale.threshold)
    )
    classes = torch.full((x.shape[0],), 2, dtype=torch.long)
    classes[spurious] = 1
    classes[memorised] = 0
    return AuditResult(
        classes, nearest, distance, memory.energy(x).detach(), minimum, minimum_distance
    )
