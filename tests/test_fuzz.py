"""Fuzzing: whatever shapes, dtypes and values arrive, amlab either works or raises its own
AmlabError, never a crash from deep inside torch and never a NaN. The load paths too: the
bytes of a model's config.json and of its safetensors header drawn at random load or raise
AmlabError, in bounded time and memory."""

import json
import math
import resource
import struct
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amlab import AmlabError, DenseAM
from amlab.errors import as_float_tensor
from amlab.models import (
    EnergyTransformer,
    ListOpsTransformer,
    ListOpsTransformerConfig,
    MaskedImageET,
    RandomFeatureAM,
)

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


# -- load paths: the bytes of config.json and of the safetensors header drawn at random ------
#: the models whose files are fuzzed (their sizes come from the config, so a config that
#: does not fit the tensors must be caught before it allocates)
LOADED = {
    "EnergyTransformer": lambda: EnergyTransformer(8, 2, 4, 12, steps=3, seed=1),
    "MaskedImageET": lambda: MaskedImageET((4, 4), dim=8, heads=2, head_dim=4, steps=2),
    "ListOpsTransformer": lambda: ListOpsTransformer(
        ListOpsTransformerConfig(vocab_size=18, classes=10, dim=8, max_len=12)
    ),
    "RandomFeatureAM": lambda: RandomFeatureAM(4, 16, 2.0, seed=3),
    "DenseAM": lambda: DenseAM(torch.rand(5, 3), energy="lsr", beta=2.0, eps=1e-3),
}
#: the most one load of a fuzzed file may take
LOAD_SECONDS = 5.0

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """name -> (class, directory, config.json text, tensors.safetensors bytes)."""
    saved = {}
    for name, build in LOADED.items():
        model = build()
        directory = model.save(tmp_path_factory.mktemp(name))
        saved[name] = (
            type(model),
            directory,
            (directory / "config.json").read_text(),
            (directory / "tensors.safetensors").read_bytes(),
        )
    return saved


def load_fuzzed(saved, name: str, config: bytes | None, tensors: bytes | None) -> None:
    """Write the fuzzed files over a saved model and load it: only AmlabError (naming the
    directory) may come out, within LOAD_SECONDS."""
    cls, directory, good_config, good_tensors = saved[name]
    (directory / "config.json").write_bytes(good_config.encode() if config is None else config)
    (directory / "tensors.safetensors").write_bytes(good_tensors if tensors is None else tensors)
    began = time.perf_counter()
    try:
        cls.load(directory)
    except AmlabError as exc:
        assert str(directory) in str(exc)
    assert time.perf_counter() - began < LOAD_SECONDS


@FUZZ
@given(name=st.sampled_from(sorted(LOADED)), data=st.data())
def test_random_config_bytes_load_or_raise_amlab_error(saved_models, name, data):
    good = json.loads(saved_models[name][2])
    how = data.draw(st.sampled_from(["bytes", "value", "drop", "whole"]))
    if how == "bytes":
        config = data.draw(st.binary(max_size=200))
    elif how == "whole":
        config = json.dumps(data.draw(json_values)).encode()
    else:
        key = data.draw(st.sampled_from(sorted(good)))
        changed = dict(good)
        if how == "drop":
            changed.pop(key)
        else:
            changed[key] = data.draw(
                st.one_of(json_values, st.integers(-1, 10**15), st.sampled_from([2**62, 10**30]))
            )
        config = json.dumps(changed).encode()
    load_fuzzed(saved_models, name, config, None)


@FUZZ
@given(name=st.sampled_from(sorted(LOADED)), data=st.data())
def test_random_safetensors_headers_load_or_raise_amlab_error(saved_models, name, data):
    good = saved_models[name][3]
    length = struct.unpack("<Q", good[:8])[0]
    header, body = good[8 : 8 + length], good[8 + length :]
    how = data.draw(st.sampled_from(["bytes", "json", "flip", "length", "cut"]))
    if how == "bytes":
        new_header = data.draw(st.binary(max_size=300))
    elif how == "json":  # a well-formed header of random entries
        entry = st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F64", "F16", "I64", "BOOL", "U8", "X"]),
                "shape": st.lists(st.integers(0, 2**40), max_size=4),
                "data_offsets": st.lists(st.integers(0, 2**40), min_size=2, max_size=2),
            }
        )
        entries = data.draw(st.dictionaries(st.text(max_size=8), entry, max_size=4))
        new_header = json.dumps(entries).encode()
    elif how == "flip":
        new_header = bytearray(header)
        for _ in range(data.draw(st.integers(1, 8))):
            new_header[data.draw(st.integers(0, len(header) - 1))] = data.draw(st.integers(0, 255))
        new_header = bytes(new_header)
    else:
        new_header = header
    stated = len(new_header)
    if how == "length":
        stated = data.draw(st.one_of(st.integers(0, 2 * length), st.integers(0, 2**64 - 1)))
    tensors = struct.pack("<Q", stated) + new_header + body
    if how == "cut":
        tensors = tensors[: data.draw(st.integers(0, len(tensors) - 1))]
    load_fuzzed(saved_models, name, None, tensors)


def test_fuzzed_loads_keep_memory_bounded(saved_models):
    """A header or config that asks for huge tensors allocates nothing: a few hundred such
    loads (sizes up to 2**40 per axis) raise the peak resident memory by under 256 MB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, (_, _, config, _) in saved_models.items():
        good = json.loads(config)
        for key, value in good.items():
            if isinstance(value, int) and not isinstance(value, bool) and key != "seed":
                for huge in (2**20, 2**30, 2**40):
                    tampered = json.dumps({**good, key: huge}).encode()
                    load_fuzzed(saved_models, name, tampered, None)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 256, grown_mb
