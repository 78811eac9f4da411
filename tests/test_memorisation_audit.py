"""The memorisation audit on constructed cases: a training image is memorised, the mixture
of two close training images at the spurious minimum between them is spurious, a far point
is generalised; the default scale against brute force."""

import pytest
import torch

from amlab.analysis.memorisation import AUDIT_CLASSES, Audit, audit
from amlab.errors import AmlabError


def training_set():
    """Two training images 1 apart (a pair whose mixture is a minimum at s = 0.8) and three
    lone ones far from them and from each other."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(16, generator=g, dtype=torch.float64)
    direction = torch.randn(16, generator=g, dtype=torch.float64)
    b = a + direction / direction.norm()
    lone = a + 20 * torch.eye(16, dtype=torch.float64)[:3]
    return torch.cat([a[None], b[None], lone])


SCALE = Audit(threshold=0.3, noise_level=0.8)


def test_the_three_classes_on_constructed_points():
    train = training_set()
    mixture = (train[0] + train[1]) / 2  # the spurious minimum between the pair (1 < 2 s)
    far = train[2] + 6 * torch.ones(16, dtype=torch.float64) / 4  # 6 from every image
    near_lone = train[3] + 0.1 * torch.ones(16, dtype=torch.float64) / 4
    x = torch.stack([train[1], mixture, far, near_lone, train[4] + 0.02])
    result = audit(x, train, SCALE)
    assert result.names() == ["memorised", "spurious", "generalised", "memorised", "memorised"]
    assert result.distance[0] < 1e-6 and int(result.nearest[0]) == 1
    assert torch.allclose(result.minimum[1], mixture, atol=1e-6)  # it is a minimum: stays
    assert result.fractions() == {"memorised": 0.6, "spurious": 0.2, "generalised": 0.2}


def test_a_pair_too_far_apart_has_no_spurious_minimum():
    # at s = 0.3 the pair (1 apart > 2 s) is two minima and the midpoint a saddle: a point
    # just off it falls to the nearer memory, a training image, so it is no mixture
    train = training_set()
    off_middle = 0.52 * train[0] + 0.48 * train[1]
    result = audit(off_middle[None], train, Audit(threshold=0.3, noise_level=0.3))
    assert result.names() == ["generalised"]
    # the minimum near a memory sits a hair towards the other (weight exp(-1 / (2 s^2)))
    assert (result.minimum[0] - train[0]).norm() < 0.01


def test_energy_is_the_lse_energy_of_the_training_set():
    train = training_set()
    x = train[:2] + 0.3
    s = SCALE.noise_level
    d2 = ((x[:, None] - train[None]) ** 2).sum(-1)
    expected = -(s**2) * torch.logsumexp(-d2 / (2 * s**2), dim=1)
    assert torch.allclose(audit(x, train, SCALE).energy, expected, atol=1e-10)


def test_default_scale_is_a_third_and_a_half_of_the_median_neighbour_distance():
    g = torch.Generator().manual_seed(1)
    train = torch.rand(30, 5, generator=g, dtype=torch.float64)
    nn = torch.stack(
        [min((train[i] - train[j]).norm() for j in range(30) if j != i) for i in range(30)]
    )
    typical = float(nn.median())
    scale = Audit.fit(train)
    assert scale.threshold == pytest.approx(typical / 3)
    assert scale.noise_level == pytest.approx(typical / 2)
    with pytest.raises(AmlabError, match="duplicate"):
        Audit.fit(torch.zeros(4, 3))
    with pytest.raises(AmlabError, match="shape"):
        audit(torch.zeros(2, 4), train)
    assert AUDIT_CLASSES == ("memorised", "spurious", "generalised")
