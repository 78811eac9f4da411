"""Fuzzing: whatever shapes, dtypes and values arrive, amlab either works or raises its own
AmlabError, never a crash from deep inside torch and never a NaN."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amlab import AmlabError, DenseAM
from amlab.errors import as_float_tensor

# how many examples, and whether they are drawn afresh, come from the hypothesis profile
# chosen in conftest.py: deterministic in `make test`, exploring in `make fuzz`
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=-10, max_value=10),
)
dtypes = st.sampled_from(
    [
        torch.float32,
        torch.float64,
        torch.float16,
        torch.int64,
        torch.bool,
        torch.complex64,
        torch.uint8,
    ]
)
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@st.composite
def tensors(draw, shape_strategy=shapes):
    shape = draw(shape_strategy)
    n = math.prod(shape)
    data = draw(st.lists(values, min_size=n, max_size=n))
    t = torch.tensor(data, dtype=torch.float64).reshape(shape)
    dtype = draw(dtypes)
    if dtype == torch.bool:
        return t.nan_to_num() > 0
    if not dtype.is_floating_point and not dtype.is_complex:
        return t.nan_to_num().clamp(0, 100).to(dtype)
    return t.to(dtype)


# mostly well-formed states for a D = 3 memory, sometimes anything at all
state_shapes = st.one_of(st.tuples(st.integers(0, 4), st.just(3)), st.just((3,)))
states = tensors(state_shapes)
masks = state_shapes.map(lambda shape: torch.rand(shape) > 0.5)
anything = st.one_of(
    tensors(),
    st.none(),
    st.text(max_size=3),
    st.floats(),
    st.lists(st.floats(), max_size=4),
    st.integers(),
)


def finite_or_inf_without_nan(t):
    return not torch.isnan(t).any()


@FUZZ
@given(
    memories=anything,
    energy=st.sampled_from(["lse", "lsr", "lse_dot", "LSE", "", "x"]),
    beta=st.one_of(st.floats(), st.integers(-3, 3), st.none(), st.text(max_size=2)),
    eps=st.one_of(st.floats(), st.integers(-1, 1)),
    chunk=st.one_of(st.none(), st.integers(-2, 4)),
)
def test_constructor_accepts_or_raises_amlab_error(memories, energy, beta, eps, chunk):
    try:
        am = DenseAM(memories, energy=energy, beta=beta, eps=eps, chunk_size=chunk)
    except AmlabError:
        return
    assert am.memories.ndim == 2 and am.memories.numel() > 0
    assert torch.isfinite(am.memories).all() and am.beta > 0 and am.eps >= 0


@FUZZ
@given(
    x=st.one_of(states, states, states, anything),
    energy=st.sampled_from(["lse", "lsr", "lse_dot"]),
    beta=st.floats(min_value=1e-3, max_value=1e4),
    method=st.sampled_from(["gd", "attention", "fixed_point", "gd", "newton"]),
    steps=st.one_of(st.integers(-1, 5), st.integers(0, 5), st.floats(0, 3)),
    step_size=st.one_of(st.none(), st.floats(), st.integers(-1, 2)),
    tol=st.one_of(st.none(), st.floats()),
    clamp=st.one_of(st.none(), masks, masks, tensors()),
)
def test_retrieve_runs_or_raises_amlab_error(x, energy, beta, method, steps, step_size, tol, clamp):
    am = DenseAM(torch.linspace(0, 1, 12).reshape(4, 3), energy=energy, beta=beta)
    try:
        out = am.retrieve(x, method=method, steps=steps, step_size=step_size, tol=tol, clamp=clamp)
    except AmlabError:
        return
    assert not torch.isnan(out.states).any() and not torch.isnan(out.energies).any()
    assert out.states.shape[-1] == 3


@FUZZ
@given(
    x=st.one_of(states, states, states, anything),
    energy=st.sampled_from(["lse", "lsr", "lse_dot"]),
    beta=st.floats(min_value=1e-4, max_value=1e4),
)
def test_energy_and_grad_never_leak_nan(x, energy, beta):
    am = DenseAM(torch.linspace(-1, 1, 12).reshape(4, 3), energy=energy, beta=beta)
    try:
        e, g = am.energy_and_grad(x)
    except AmlabError:
        return
    assert finite_or_inf_without_nan(e) and torch.isfinite(g).all()
    torch.testing.assert_close(am.energy(x), e, rtol=1e-4, atol=1e-4, equal_nan=False)


@FUZZ
@given(
    scale=st.floats(min_value=-1e3, max_value=1e3),
    beta=st.floats(min_value=1e-4, max_value=1e4),
    energy=st.sampled_from(["lse", "lsr", "lse_dot"]),
    b=st.integers(0, 4),
)
def test_extreme_but_valid_values_stay_finite(scale, beta, energy, b):
    g = torch.Generator().manual_seed(0)
    mem = scale * torch.rand(6, 4, generator=g)
    x = scale * torch.rand(b, 4, generator=g)
    am = DenseAM(mem, energy=energy, beta=beta)
    e, grad = am.energy_and_grad(x)
    assert e.shape == (b,) and grad.shape == (b, 4)
    assert not torch.isnan(e).any() and torch.isfinite(grad).all()
    if energy != "lsr":
        assert torch.isfinite(e).all()


@pytest.mark.parametrize("energy", ["lse", "lsr", "lse_dot"])
def test_values_whose_squares_overflow_are_refused(energy):
    am = DenseAM(torch.linspace(-1, 1, 12).reshape(4, 3), energy=energy, beta=2.0)
    with pytest.raises(AmlabError, match="overflows"):
        am.energy_and_grad(torch.tensor([0.0, 0.0, 1.7014e38]))
    with pytest.raises(AmlabError, match="overflows"):
        DenseAM(torch.tensor([[3e19, 3e19]]), energy=energy)
    # the same values in float64 are fine
    e, g = DenseAM(
        torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3), energy=energy
    ).energy_and_grad(torch.tensor([0.0, 0.0, 1.7014e38], dtype=torch.float64))
    assert not torch.isnan(e) and torch.isfinite(g).all()


def test_numpy_and_list_inputs_work():
    am = DenseAM(np.eye(3), beta=10.0)
    assert am.memories.dtype == torch.float64
    assert am.energy([[1.0, 0.0, 0.0]]).shape == (1,)
    with pytest.raises(AmlabError):
        am.energy([[1.0, 0.0]])
    # Python floats are doubles: a float64 model reads them without rounding to float32
    x = [[0.1, 1 / 3, 2.0**-30 + 1.0]]
    assert torch.equal(am.energy(x), am.energy(torch.tensor(x, dtype=torch.float64)))
    assert as_float_tensor([0.1], "x", dtype=torch.float64).item() == 0.1


@FUZZ
@given(
    x=states,
    energy=st.sampled_from(["lse", "lsr", "lse_dot"]),
    beta=st.floats(min_value=1e-3, max_value=1e4),
    exact=st.booleans(),
    steps=st.integers(0, 30),
    step_size=st.one_of(st.none(), st.floats(1e-4, 2.0)),
    clamp=st.one_of(st.none(), masks),
    eps=st.sampled_from([0.0, 1e-6]),
)
def test_well_formed_retrievals_never_produce_nan(
    x, energy, beta, exact, steps, step_size, clamp, eps
):
    method = ("fixed_point" if energy == "lsr" else "attention") if exact else "gd"
    am = DenseAM(torch.linspace(0, 1, 12).reshape(4, 3), energy=energy, beta=beta, eps=eps)
    if x.is_floating_point() and x.dtype != am.dtype:  # never cast behind the caller's back
        with pytest.raises(AmlabError, match=f"x is {x.dtype} on cpu but the DenseAM is"):
            am.retrieve(x, method=method, steps=steps, step_size=step_size, clamp=clamp)
        return
    try:
        out = am.retrieve(x, method=method, steps=steps, step_size=step_size, clamp=clamp)
    except AmlabError as exc:  # only non-finite or complex input, or a clamp of the wrong shape
        assert any(
            m in str(exc)
            for m in (
                "NaN or infinite",
                "complex",
                "clamp must have shape",
                "overflows",
                "diverged",
            )
        )
        return
    assert out.states.shape == x.shape
    assert not torch.isnan(out.states).any() and not torch.isnan(out.energies).any()
    if clamp is not None:
        before, after = x.reshape(-1, 3).to(out.states.dtype), out.states.reshape(-1, 3)
        kept = torch.broadcast_to(clamp.reshape(-1, 3), before.shape)
        assert torch.equal(after[kept], before[kept])
