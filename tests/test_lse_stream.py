"""The streaming LSE pass against the plain computation (whole score matrix, float64)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from amlab import DenseAM
from amlab.energy.lse import (
    lse_attention_update,
    lse_energy_grad,
    lse_softmax_mean,
    memory_bias,
)
from amlab.errors import AmlabError
from amlab.tasks.profiling import LargestTensor


def plain(x, memories, beta, bias):
    """logsumexp and softmax mean from the whole (B, M) score matrix, in float64."""
    x, memories = x.double(), memories.double()
    scores = beta * (x @ memories.T + (0.0 if bias is None else bias.double()))
    return torch.logsumexp(scores, 1), torch.softmax(scores, 1) @ memories


def check(x, memories, beta, form, chunk, rtol):
    bias = memory_bias(memories, form)
    lse, mean = lse_softmax_mean(x, memories, beta, bias=bias, chunk_size=chunk)
    ref_lse, ref_mean = plain(x, memories, beta, bias)
    assert lse.dtype == x.dtype and mean.dtype == x.dtype
    # lse is compared relative to beta times the scores' scale (it grows with beta)
    scale = beta * float((x.double().abs().sum(1).max() + 1) * (memories.abs().max() + 1) ** 2)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=rtol, atol=rtol * scale)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=rtol, atol=rtol * 10)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 9),
    m=st.integers(1, 150),
    d=st.integers(1, 20),
    chunk=st.one_of(st.none(), st.integers(1, 160)),
    log_beta=st.floats(-6, 4),
    form=st.sampled_from(["distance", "dot"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_match_the_plain_computation(b, m, d, chunk, log_beta, form, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    memories = torch.rand(m, d, generator=g, dtype=dtype)
    x = torch.rand(b, d, generator=g, dtype=dtype)
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    check(x, memories, 10.0**log_beta, form, chunk, rtol)


@pytest.mark.parametrize("beta", [1e-8, 1e-3, 1.0, 1e2, 1e4])
@pytest.mark.parametrize("chunk", [1, 7, 33, 99, 100, 1000])  # M = 100: most do not divide M
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_beta_and_chunks_that_do_not_divide_m(beta, chunk, dtype):
    g = torch.Generator().manual_seed(int(math.log10(beta)) + 20)
    memories = torch.rand(100, 6, generator=g, dtype=dtype)
    x = memories[:5] + 0.05 * torch.randn(5, 6, generator=g, dtype=dtype)
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    for form in ("distance", "dot"):
        check(x, memories, beta, form, chunk, rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_far_better_match_late_in_the_memories_raises_the_running_maximum(dtype):
    """Memories sorted from far to near: every chunk beats the last by more than exp's range,
    so every chunk raises every row's offset and rescales its sums (the rows differ in where)."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 4, dtype=dtype)
    x[1, 0] = 0.5
    x[2] = 2.0
    direction = torch.randn(200, 4, generator=g, dtype=dtype)
    direction /= direction.norm(dim=1, keepdim=True)
    radius = torch.linspace(3.0, 0.01, 200, dtype=dtype)[:, None]
    memories = radius * direction
    for beta in (1e3, 1e5):
        check(x, memories, beta, "distance", 10, 1e-4 if dtype == torch.float32 else 1e-10)


def test_energy_grad_takes_precomputed_norms_and_bias():
    g = torch.Generator().manual_seed(1)
    memories = torch.rand(50, 5, generator=g, dtype=torch.float64)
    x = torch.rand(4, 5, generator=g, dtype=torch.float64)
    mem_sq = (memories * memories).sum(1)
    for form in ("distance", "dot"):
        plain_e, plain_g = lse_energy_grad(x, memories, 3.0, form=form)
        e, grad = lse_energy_grad(
            x, memories, 3.0, form=form, mem_sq=mem_sq, bias=memory_bias(memories, form)
        )
        torch.testing.assert_close(e, plain_e, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, plain_g, rtol=1e-12, atol=1e-12)


def test_peak_memory_is_bounded_by_the_chunk():
    g = torch.Generator().manual_seed(2)
    memories = torch.rand(20_000, 8, generator=g)
    x = torch.rand(64, 8, generator=g)
    bias, mem_sq = memory_bias(memories, "distance"), (memories * memories).sum(1)
    for chunk in (100, 1000):
        with LargestTensor() as probe:
            lse_softmax_mean(x, memories, 2.0, bias=bias, mem_sq=mem_sq, chunk_size=chunk)
        # the score block (B x chunk) and the scaled (M,) bias are the largest things made
        assert probe.largest <= max(64 * chunk, 20_000), (chunk, probe.largest)


def test_dense_am_caches_the_norms_and_notices_changed_memories():
    g = torch.Generator().manual_seed(3)
    memories = torch.rand(30, 4, generator=g, dtype=torch.float64)
    x = torch.rand(5, 4, generator=g, dtype=torch.float64)
    am = DenseAM(memories.clone(), beta=2.0)
    first = am.energy_and_grad(x)
    assert am.memory_sq_norms() is am.memory_sq_norms()  # computed once
    with torch.no_grad():
        am.memories.mul_(0.5)  # changed in place: the cached norms must not be reused
    expected = DenseAM(memories * 0.5, beta=2.0).energy_and_grad(x)
    for a, b in zip(am.energy_and_grad(x), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(first[0], expected[0])


def spy_on_unshifted_pass(monkeypatch) -> list:
    """A list that gets one entry per call of the offset-free pass."""
    from amlab.energy import lse

    taken, original = [], lse._unshifted_pass
    monkeypatch.setattr(lse, "_unshifted_pass", lambda *a: taken.append(True) or original(*a))
    return taken


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [3, 40])  # below and above the dimension (two scalings)
@pytest.mark.parametrize("form", ["distance", "dot"])
def test_both_passes_equal_the_plain_computation_where_both_apply(dtype, batch, form, monkeypatch):
    """At moderate beta both the offset-free pass and the running-max pass are valid; each
    must equal the float64 plain computation, and the dispatcher must take the first."""
    from amlab.energy import lse

    g = torch.Generator().manual_seed(batch)
    memories = torch.rand(300, 16, generator=g, dtype=dtype) * 2
    x = torch.rand(batch, 16, generator=g, dtype=dtype) * 2
    beta = 0.7
    bias = memory_bias(memories, form)
    bs = None if bias is None else bias * beta
    ref_lse, ref_mean = plain(x, memories, beta, bias)
    results = {
        "unshifted": lse._unshifted_pass(x * beta, memories, bs, lse.chunk_ranges(300, 1, 37)),
        "running": lse._running_max_pass(
            x * beta, memories, bs, lse.chunk_ranges(300, 1, 37), None
        ),
    }
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    for got_lse, got_mean in results.values():
        torch.testing.assert_close(got_lse.double(), ref_lse, rtol=rtol, atol=rtol)
        torch.testing.assert_close(got_mean.double(), ref_mean, rtol=rtol, atol=rtol)
    taken = spy_on_unshifted_pass(monkeypatch)
    lse_softmax_mean(x, memories, beta, bias=bias, chunk_size=37)
    assert taken == [True]


def test_the_offset_free_pass_is_not_taken_where_an_exponential_could_overflow(monkeypatch):
    memories = torch.full((4, 2), 30.0)
    x = torch.full((1, 2), 30.0)  # beta x . xi = 1800: exp overflows without an offset
    taken = spy_on_unshifted_pass(monkeypatch)
    lse_val, mean = lse_softmax_mean(x, memories, 1.0)
    assert taken == []
    assert torch.isfinite(lse_val).all()
    torch.testing.assert_close(mean, memories[:1])


def test_with_beta_shares_the_checked_memories_and_gives_a_fresh_models_results():
    g = torch.Generator().manual_seed(4)
    memories = torch.rand(40, 5, generator=g, dtype=torch.float64)
    x = torch.rand(6, 5, generator=g, dtype=torch.float64)
    am = DenseAM(memories, beta=1.0)
    norms = am.memory_sq_norms()
    hot = am.with_beta(7.0)
    assert hot.beta == 7.0 and am.beta == 1.0
    assert hot.memories is am.memories and hot.memory_sq_norms() is norms  # nothing redone
    fresh = DenseAM(memories, beta=7.0)
    for a, b in zip(hot.energy_and_grad(x), fresh.energy_and_grad(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    hot.add(torch.rand(2, 5, generator=g, dtype=torch.float64))
    assert hot.num_memories == 42 and am.num_memories == 40  # the two stay apart
    with pytest.raises(AmlabError, match="beta"):
        am.with_beta(0.0)


def fused_and_streamed(x, memories, beta, form, chunk=None):
    """The attention update by the fused kernel and by the streaming pass (no host reads)."""
    bias = memory_bias(memories, form)
    fused = lse_attention_update(x, memories, beta, bias=bias, chunk_size=chunk)
    streamed = lse_softmax_mean(x, memories, beta, bias=bias, chunk_size=chunk, host_bound=False)
    return fused, streamed[1]


def test_the_fused_kernel_runs_here(monkeypatch):
    """The fused path must really take the kernel on a CPU (not fall back in silence)."""
    from amlab.energy import lse

    calls = []
    monkeypatch.setattr(
        lse, "lse_softmax_mean", lambda *a, **k: calls.append(True) or lse_softmax_mean(*a, **k)
    )
    for dtype in (torch.float32, torch.float64):
        x, memories = torch.rand(3, 5, dtype=dtype), torch.rand(40, 5, dtype=dtype)
        for form in ("distance", "dot"):
            lse.lse_attention_update(x, memories, 2.0, bias=memory_bias(memories, form))
    assert calls == []
    lse.lse_attention_update(x, memories, 2.0, fused=False)
    assert calls == [True]


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 300),
    m=st.integers(1, 700),
    d=st.integers(1, 70),
    log_beta=st.floats(-3, 4),
    form=st.sampled_from(["distance", "dot"]),
    seed=st.integers(0, 2**16),
)
def test_fused_update_equals_the_streaming_pass_in_float64(b, m, d, log_beta, form, seed):
    g = torch.Generator().manual_seed(seed)
    memories = torch.rand(m, d, generator=g, dtype=torch.float64)
    x = torch.rand(b, d, generator=g, dtype=torch.float64) * 2
    beta = 10.0**log_beta
    fused, streamed = fused_and_streamed(x, memories, beta, form, chunk=97)
    # the scores, hence the weights, carry a rounding of u times the scores' scale
    scale = beta * float(x.norm(dim=1).max() + memories.norm(dim=1).max()) ** 2
    tol = 1e-14 * max(1.0, scale)
    torch.testing.assert_close(fused, streamed, rtol=tol, atol=tol)
    reference = plain(x, memories, beta, memory_bias(memories, form))[1]
    torch.testing.assert_close(fused, reference, rtol=tol, atol=tol)


@pytest.mark.parametrize("beta", [1e-3, 1.0, 1e2, 1e4])
@pytest.mark.parametrize("form", ["distance", "dot"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 500, 3), (257, 600, 64), (33, 1000, 784)])
def test_fused_update_equals_the_streaming_pass_in_float32(beta, form, shape):
    """At float32 the two agree to its rounding (scores scaled to a moderate range: at a
    large beta the float32 scores themselves carry beta times the rounding)."""
    b, m, d = shape
    g = torch.Generator().manual_seed(b + m + d)
    memories = torch.rand(m, d, generator=g) / d**0.5
    x = memories[torch.randint(m, (b,), generator=g)] + 0.1 * torch.rand(b, d, generator=g) / d**0.5
    fused, streamed = fused_and_streamed(x, memories, beta, form)
    reference = plain(x, memories, beta, memory_bias(memories, form))[1]
    # each against float64 to within a few float32 roundings of the score range
    tol = 1e-6 * max(1.0, beta * 0.05)
    torch.testing.assert_close(fused.double(), reference, rtol=tol, atol=tol)
    torch.testing.assert_close(streamed.double(), reference, rtol=tol, atol=tol)


def test_fused_update_takes_dtypes_it_has_no_kernel_for_by_the_streaming_pass():
    memories = torch.rand(30, 4, dtype=torch.float64)
    x = torch.rand(2, 4, dtype=torch.float64)
    reference = plain(x, memories, 3.0, memory_bias(memories, "distance"))[1]
    half = lse_attention_update(
        x.half(), memories.half(), 3.0, bias=memory_bias(memories.half(), "distance")
    )
    torch.testing.assert_close(half.double(), reference, rtol=1e-2, atol=1e-2)
    assert lse_attention_update(x[:0], memories, 3.0).shape == (0, 4)
