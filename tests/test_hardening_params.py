"""Extreme parameters: an inverse temperature or an energy's floor outside the range its dtype
allows is refused with that range in the message; at the ends of the range, energies,
gradients and retrieval stay finite (float32 and float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from amlab.errors import AmlabError, check_scale, scale_range
from amlab.models import DenseAM, EnergyTransformer, RandomFeatureAM
from amlab.models.model import Model, ScaledModule
from amlab.nn import MemoryLayer, Pooling, Retrieval

DTYPES = [torch.float32, torch.float64]


def rand(*shape: int, dtype: torch.dtype, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * (2 * torch.rand(*shape, generator=g, dtype=torch.float64) - 1).to(dtype)


def dense(energy: str, parameter: str):
    """build(dtype, value): a DenseAM with ``parameter`` (beta or eps) set to value."""

    def build(dtype, value):
        kw = {"beta": 1.0, "eps": 1e-3, parameter: value}
        return DenseAM(rand(7, 5, dtype=dtype), energy=energy, dtype=dtype, **kw)

    return build


def rf(parameter: str):
    def build(dtype, value):
        kw = {"beta": 1.0, "eps": 1e-5, parameter: value}
        model = RandomFeatureAM(5, 64, seed=2, dtype=dtype, **kw)
        return model.add(rand(7, 5, dtype=dtype))

    return build


def et(parameter: str):
    def build(dtype, value):
        kw = {parameter: value}
        return EnergyTransformer(6, 2, 3, 10, "softmax", steps=3, seed=1, dtype=dtype, **kw)

    return build


def run_memory(model, scale: float = 1.0) -> list[torch.Tensor]:
    x = rand(4, 5, dtype=model.dtype, seed=1, scale=scale)
    energy, grad = model.energy_and_grad(x)
    return [energy, grad, model.energy(x), model.retrieve(x, steps=3).states]


def run_et(model) -> list[torch.Tensor]:
    x = rand(2, 4, 6, dtype=model.dtype, seed=1)
    energy, grad = model.energy_and_grad(x)
    return [energy, grad, model(x)]


#: (name, parameter, build(dtype, value), run(model))
CASES = [
    *[(f"DenseAM {e}", "beta", dense(e, "beta"), run_memory) for e in ("lse", "lse_dot", "lsr")],
    ("DenseAM lsr", "eps", dense("lsr", "eps"), run_memory),
    ("RandomFeatureAM", "beta", rf("beta"), run_memory),
    ("RandomFeatureAM", "eps", rf("eps"), run_memory),
    ("EnergyTransformer", "beta", et("beta"), run_et),
    ("EnergyTransformer", "hopfield_beta", et("hopfield_beta"), run_et),
]
IDS = [f"{name}-{parameter}" for name, parameter, _, _ in CASES]


def test_the_range_is_the_square_root_of_the_dtype_limit():
    for dtype in DTYPES:
        low, high = scale_range(dtype)
        assert high == pytest.approx(math.sqrt(torch.finfo(dtype).max)) and low * high == 1.0
    assert scale_range(torch.float32)[1] == pytest.approx(1.8446744e19, rel=1e-6)
    assert scale_range(torch.float64)[1] == pytest.approx(1.3407807929942596e154)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,parameter,build,run", CASES, ids=IDS)
def test_outside_the_dtype_range_a_parameter_is_refused_with_the_range(
    dtype, name, parameter, build, run
):
    low, high = scale_range(dtype)
    limit = torch.finfo(dtype)
    # the probe's values (beta near the float32 limits, LSR at 1e39, a huge eps), the
    # dtype's own limits, and just outside the range
    values = [1e-39, 1e38, 1e39, 1e300, 1e-300, limit.tiny, limit.max, high * 1.01, low / 1.01]
    for value in values:
        if low <= value <= high:
            continue
        with pytest.raises(AmlabError, match=rf"{parameter} = .* outside the range") as caught:
            build(dtype, value)
        assert f"{low:.2g}, {high:.2g}" in str(caught.value)
        assert str(dtype).removeprefix("torch.") in str(caught.value)
    for bad in (0.0, -1.0, math.inf, math.nan):
        if parameter == "eps" and bad == 0.0:
            continue
        with pytest.raises(AmlabError):
            build(dtype, bad)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,parameter,build,run", CASES, ids=IDS)
def test_inside_the_range_energies_gradients_and_retrieval_are_finite(
    dtype, name, parameter, build, run
):
    low, high = scale_range(dtype)
    for value in (low, low * 10, 1.0, high / 10, high):
        outputs = run(build(dtype, value))
        for out in outputs:
            assert bool(torch.isfinite(out).all()), (name, parameter, value, out)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_memory_energies_stay_finite_for_data_far_from_the_memories(dtype):
    """At the top of the range, states up to 1e4 away from the memories (squared distances
    1e8, beta times them far inside float32) still give finite energies and gradients."""
    high = scale_range(dtype)[1]
    for energy in ("lse", "lse_dot", "lsr"):
        model = dense(energy, "beta")(dtype, high)
        for out in run_memory(model, scale=1e4):
            assert bool(torch.isfinite(out).all()), (energy, out)


def test_with_beta_and_an_eps_of_zero_follow_the_same_rule():
    am = DenseAM(rand(5, 3, dtype=torch.float32), energy="lsr", eps=0.0)
    assert am.eps == 0.0  # LSR's eps may be 0: +inf outside the supports, by definition
    with pytest.raises(AmlabError, match="float32"):
        am.with_beta(1e39)
    assert am.with_beta(1e19).beta == 1e19
    f64 = DenseAM(rand(5, 3, dtype=torch.float64), beta=1e39)  # fine in float64
    assert f64.beta == 1e39
    assert check_scale(3, "beta", torch.float32) == 3.0


@pytest.mark.parametrize("name,parameter,build,run", CASES, ids=IDS)
def test_a_conversion_to_a_dtype_whose_range_excludes_a_parameter_is_refused(
    name, parameter, build, run
):
    """Built in float64 with a parameter only float64 allows, the model refuses .float() and
    .to(torch.float32) and stays as it was (float64, still finite); .double() of a float32
    model and a float32 conversion of an in-range model go through."""
    model = build(torch.float64, 1e30)
    for convert in (lambda m: m.float(), lambda m: m.to(torch.float32)):
        with pytest.raises(AmlabError, match=rf"{parameter} = 1e\+30 is outside .*float32"):
            convert(model)
        assert model.dtype == torch.float64
        assert all(t.dtype != torch.float32 for t in model.state_dict().values())
        assert all(torch.isfinite(t).all() for t in run(model))
    assert build(torch.float32, 1e18).double().dtype == torch.float64
    small = build(torch.float64, 0.5).float()
    assert small.dtype == torch.float32 and all(torch.isfinite(t).all() for t in run(small))


def test_a_conversion_to_half_precision_is_refused_with_that_dtype_s_range():
    """.half() and .bfloat16() check the scales against their own ranges (float16's is
    [1/256, 256]) and name the dtype; a model in range converts."""
    model = dense("lse", "beta")(torch.float64, 1000.0)
    with pytest.raises(
        AmlabError, match=r"beta = 1000 is outside the range \[0.0039, 2.6e\+02\] that float16"
    ):
        model.half()
    with pytest.raises(AmlabError, match="that bfloat16 allows"):
        dense("lse", "beta")(torch.float64, 1e30).bfloat16()
    assert model.dtype == torch.float64
    in_range = DenseAM(rand(7, 5, dtype=torch.float64), beta=3.0, eps=0.01, dtype=torch.float64)
    assert in_range.half().dtype == torch.float16


class _Holder(Model):
    """A model holding a plain layer registered before a model with a scale (as a task model
    may hold its block after an encoder)."""

    def __init__(self, inner: Model) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 2, dtype=inner.dtype)
        self.inner = inner


def test_a_refused_conversion_leaves_every_part_of_a_nested_model_as_it_was():
    """The scales of the models inside a model are checked before anything converts: the
    layers registered before the inner model stay float64 too."""
    holder = _Holder(dense("lse", "beta")(torch.float64, 1e30))
    with pytest.raises(AmlabError, match="beta = 1e\\+30 is outside .*float32"):
        holder.float()
    assert {t.dtype for t in holder.state_dict().values()} == {torch.float64}
    ok = _Holder(dense("lse", "beta")(torch.float64, 2.0)).float()
    assert {t.dtype for t in ok.state_dict().values()} == {torch.float32}


def _memory_layer(parameter: str):
    def build(dtype, value):
        kw = {"beta": 0.5, "eps": 0.5, parameter: value}
        return MemoryLayer(4, 6, energy="lsr", learn_beta=True, dtype=dtype, **kw)

    return build


#: (name, parameter, build(dtype, value)) of the layers of amlab.nn
NN_CASES = [
    ("MemoryLayer", "beta", _memory_layer("beta")),
    ("MemoryLayer", "eps", _memory_layer("eps")),
    ("Retrieval", "beta", lambda dtype, v: Retrieval(4, hidden_dim=3, beta=v, dtype=dtype)),
    ("Pooling", "beta", lambda dtype, v: Pooling(4, 2, hidden_dim=3, beta=v, dtype=dtype)),
]


def run_layer(layer) -> list[torch.Tensor]:
    """The layer's output and energies on random input of its dtype."""
    dtype = next(layer.parameters()).dtype
    sets = rand(2, 5, 4, dtype=dtype, seed=1)
    if isinstance(layer, MemoryLayer):
        return list(layer(rand(3, 4, dtype=dtype, seed=2)))
    if isinstance(layer, Retrieval):
        return list(layer(rand(2, 3, 4, dtype=dtype, seed=2), sets))
    return list(layer(sets))


@pytest.mark.parametrize("name,parameter,build", NN_CASES, ids=[f"{n}-{p}" for n, p, _ in NN_CASES])
def test_an_nn_layer_refuses_a_conversion_to_a_dtype_whose_range_excludes_its_scales(
    name, parameter, build
):
    """As a model: built in float64 with a beta or eps only float64 allows, .float(),
    .to(torch.float32) and .half() are refused with the new dtype's range and the layer stays
    as it was (before, .float() gave NaN read-outs); in range, it converts."""
    layer = build(torch.float64, 1e30)
    before = {k: t.clone() for k, t in layer.state_dict().items()}
    conversions = [
        (lambda m: m.float(), "float32"),
        (lambda m: m.to(torch.float32), "float32"),
        (lambda m: m.half(), "float16"),
    ]
    for convert, dtype in conversions:
        with pytest.raises(AmlabError, match=rf"{parameter} = 1e\+30 is outside .* {dtype}"):
            convert(layer)
        after = layer.state_dict()
        assert all(
            after[k].dtype == torch.float64 and torch.equal(after[k], t) for k, t in before.items()
        )
    assert all(bool(torch.isfinite(t).all()) for t in run_layer(layer))
    small = build(torch.float64, 2.0).float()
    assert {t.dtype for t in small.state_dict().values()} == {torch.float32}
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in run_layer(small))


class _Net(ScaledModule):
    """A user's container: a plain torch Sequential holding a Linear, then a model."""

    def __init__(self, inner: Model) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 5, dtype=inner.dtype), inner)


def test_a_container_derived_from_scaled_module_converts_all_or_nothing():
    """The remedy docs/api/io.md gives for a plain torch container (whose earlier children
    convert before a model inside it refuses): a container that derives from ScaledModule
    checks the model's scales before anything inside it converts."""
    net = _Net(dense("lse", "beta")(torch.float64, 1e30))
    with pytest.raises(AmlabError, match=r"beta = 1e\+30 is outside .*float32"):
        net.float()
    assert {t.dtype for t in net.state_dict().values()} == {torch.float64}
    ok = _Net(dense("lse", "beta")(torch.float64, 2.0)).float()
    assert {t.dtype for t in ok.state_dict().values()} == {torch.float32}
