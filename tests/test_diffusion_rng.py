"""amlab.diffusion.rng, the Python twin of the explainer's generator (web/src/lib/rng.ts):
its outputs are rng.ts's known answers (web/src/lib/rng.vectors.json, which vitest checks
rng.ts against too), a seed wraps as ``seed >>> 0`` does, and the sampler's start is the
seed's normals times the prior's scale."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from amlab.diffusion import VESchedule, VPSchedule
from amlab.diffusion.rng import mulberry32, normals, seeded_prior
from amlab.errors import AmlabError

VECTORS = Path(__file__).resolve().parents[1] / "web" / "src" / "lib" / "rng.vectors.json"
CASES = json.loads(VECTORS.read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[str(c["seed"]) for c in CASES])
def test_the_outputs_are_rng_ts_known_answers(case):
    assert mulberry32(len(case["uint32"]), case["seed"]) == case["uint32"]  # exactly
    z = normals(len(case["normals"]), case["seed"])
    assert z.dtype == torch.float64 and z.shape == (len(case["normals"]),)
    np.testing.assert_allclose(z.numpy(), case["normals"], rtol=0, atol=1e-14)


def test_the_known_answers_cover_wrapping_seeds_and_odd_lengths():
    seeds = {c["seed"] for c in CASES}
    assert {0, 2**32 - 1, 2**32, 2**40 + 7, -1} <= seeds
    assert any(len(c["normals"]) % 2 for c in CASES)


def test_a_seed_is_read_modulo_2_to_the_32():
    assert mulberry32(6, 2**32 + 5) == mulberry32(6, 5)
    assert torch.equal(normals(5, -1), normals(5, 2**32 - 1))
    assert torch.equal(normals(5, np.int64(9)), normals(5, 9))


def test_box_muller_pairs_two_uniforms_and_drops_an_odd_sine():
    u = np.array(mulberry32(8, 3)) / 2**32
    r = np.sqrt(-2 * np.log(1 - u[0::2]))
    pairs = np.stack([r * np.cos(2 * np.pi * u[1::2]), r * np.sin(2 * np.pi * u[1::2])], 1)
    np.testing.assert_allclose(normals(8, 3).numpy(), pairs.reshape(-1), rtol=1e-15, atol=0)
    assert torch.equal(normals(7, 3), normals(8, 3)[:7])
    assert normals(0, 3).shape == (0,)


def test_the_draws_are_standard_normal():
    z = normals(20_000, 11)
    assert abs(float(z.mean())) < 4 / math.sqrt(len(z))
    assert abs(float(z.std()) - 1) < 0.03
    u = np.array(mulberry32(20_000, 11)) / 2**32
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


@pytest.mark.parametrize("schedule", [VESchedule(0.01, 10.0), VPSchedule()])
def test_the_seeded_prior_is_the_normals_times_the_priors_scale(schedule):
    start = seeded_prior(schedule, 64, 5)
    scale = math.hypot(schedule.alpha(1.0), schedule.sigma(1.0))
    assert start.shape == (1, 64) and start.dtype == torch.float32
    assert torch.equal(start[0], (normals(64, 5) * scale).float())
    wide = seeded_prior(schedule, 64, 5, dtype=torch.float64)
    assert torch.equal(wide[0], normals(64, 5) * scale)
    assert schedule.prior_scale() == scale


@pytest.mark.parametrize("seed", [1.5, 2.0, True, "3", None])
def test_a_seed_that_is_no_integer_is_refused(seed):
    with pytest.raises(AmlabError, match="the seed must be an integer"):
        normals(4, seed)


def test_a_bad_length_is_refused():
    with pytest.raises(AmlabError, match="n must be an integer >= 0"):
        normals(-1, 0)
    with pytest.raises(AmlabError, match="dim must be an integer >= 1"):
        seeded_prior(VESchedule(), 0, 0)
