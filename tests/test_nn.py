"""amlab.nn: the chunked read-out against autograd through the plain formula, gradcheck of
every layer and energy, memory bounded by the chunk, and clear errors."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from amlab.data.corrupt import gaussian_noise
from amlab.data.images import image_splits
from amlab.energy import lse_energy, lsr_energy
from amlab.errors import AmlabError
from amlab.nn import MemoryLayer, Pooling, Retrieval, memory_read, memory_step, read_weights
from amlab.tasks.profiling import LargestTensor, PeakLiveBytes

F64 = torch.float64
#: (energy, eps, beta): beta small enough for LSR that every query has some support
CASES = [("lse", 0.0, 0.7), ("lse_dot", 0.0, 0.7), ("lsr", 0.0, 0.15), ("lsr", 0.3, 0.15)]


def plain_read(q, k, v, beta, energy, eps=0.0, pad=None):
    """The read-out written out with full (G, N, M) scores, for autograd to differentiate."""
    if energy == "lsr":
        d2 = ((q[:, :, None, :] - k[:, None, :, :]) ** 2).sum(-1)
        kernel = torch.relu(1 - beta / 2 * d2)
        if pad is not None:
            kernel = kernel.masked_fill(pad[:, None, :], 0.0)
        z = kernel.sum(-1)
        return kernel @ v / (eps + z)[..., None], -torch.log(eps + z) / beta
    s = q @ k.transpose(1, 2)
    if energy == "lse":
        s = s - 0.5 * (k * k).sum(-1)[:, None, :]
    a = beta * s
    if pad is not None:
        a = a.masked_fill(pad[:, None, :], float("-inf"))
    lse = torch.logsumexp(a, -1)
    return torch.softmax(a, -1) @ v, -lse / beta + 0.5 * (q * q).sum(-1)


def plain_step(q, k, beta, energy, eps=0.0, pad=None):
    """The state move written out with full (G, N, M) tensors: LSE's read-out of the keys;
    LSR's damped centroid step x + (Z / n) (c - x) over the support S (n = |S|, c its mean,
    Z = sum of its kernels), the state kept where S is empty."""
    if energy != "lsr":
        return plain_read(q, k, k, beta, energy, eps, pad)
    d2 = ((q[:, :, None, :] - k[:, None, :, :]) ** 2).sum(-1)
    kernel = torch.relu(1 - beta / 2 * d2)
    if pad is not None:
        kernel = kernel.masked_fill(pad[:, None, :], 0.0)
    active = (kernel > 0).to(q.dtype)
    z, n = kernel.sum(-1, keepdim=True), active.sum(-1, keepdim=True).clamp_min(1)
    return q + z / n * (active @ k / n - q), -torch.log(eps + z[..., 0]) / beta  # S empty: Z = 0


def tensors(g, n, m, d, e, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(*s, generator=gen, dtype=dtype) for s in ((g, n, d), (g, m, d), (g, m, e))
    )
    pad = torch.rand(g, m, generator=gen) < 0.3
    pad[:, 0] = False
    return q, k, v, pad


@pytest.mark.parametrize(("energy", "eps", "beta"), CASES)
def test_gradcheck_of_the_chunked_read_out(energy, eps, beta):
    """Both outputs (read-out and energy) against finite differences in q, k, v and beta,
    across chunks of 3 memories and with padding."""
    q, k, v, pad = tensors(2, 3, 8, 4, 5)
    inputs = [t.requires_grad_() for t in (q, k, v, torch.tensor(beta, dtype=F64))]

    def read(q, k, v, b):
        return memory_read(q, k, v, b, energy=energy, eps=eps, padding_mask=pad, chunk_size=3)

    weights = read_weights(q, k, inputs[3], energy=energy, eps=eps, padding_mask=pad)
    if energy == "lsr":  # the check crosses support boundaries: some weights exactly zero
        assert 0.1 < float((weights == 0).double().mean()) < 0.9
    assert gradcheck(read, inputs)


@pytest.mark.parametrize(("energy", "eps", "beta"), CASES)
def test_gradcheck_of_the_chunked_state_step(energy, eps, beta):
    """The state step's new state and energy against finite differences in q, k and beta,
    across chunks of 3 memories and with padding (LSR: partial supports, so the step is the
    damped centroid step over a strict subset of the memories)."""
    q, k, _, pad = tensors(2, 3, 8, 4, 1)
    inputs = [t.requires_grad_() for t in (q, k, torch.tensor(beta, dtype=F64))]

    def step(q, k, b):
        return memory_step(q, k, b, energy=energy, eps=eps, padding_mask=pad, chunk_size=3)

    weights = read_weights(q, k, inputs[2], energy=energy, eps=eps, padding_mask=pad)
    if energy == "lsr":
        assert 0.1 < float((weights == 0).double().mean()) < 0.9
    assert gradcheck(step, inputs)


def weighted_sum(outputs, seed=2):
    """sum_i <t_i, r_i> over the outputs with fixed random r_i: a loss that weighs them all."""
    gen = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outputs)


@pytest.mark.parametrize(("energy", "eps", "beta"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("move", [False, True], ids=["read", "step"])
def test_chunked_backward_equals_autograd_through_the_plain_formula(energy, eps, beta, dtype, move):
    """The read-out (of q, k, v, beta) and the state step (of q, k, beta), chunked, against
    autograd through the plain formula: both outputs and every gradient."""
    q, k, v, pad = tensors(3, 17, 300, 6, 4, dtype=dtype, seed=1)
    beta = torch.tensor(beta, dtype=dtype)
    args, names = (
        ((q, k, beta), ("dq", "dk", "dbeta"))
        if move
        else ((q, k, v, beta), ("dq", "dk", "dv", "dbeta"))
    )
    kwargs = {"energy": energy, "eps": eps, "padding_mask": pad, "chunk_size": 64}
    got, want = [], []
    for chunked, store in ((True, got), (False, want)):
        inputs = [t.clone().requires_grad_() for t in args]
        if move:
            out = (
                memory_step(*inputs, **kwargs) if chunked else plain_step(*inputs, energy, eps, pad)
            )
        else:
            out = (
                memory_read(*inputs, **kwargs) if chunked else plain_read(*inputs, energy, eps, pad)
            )
        store.extend([*out, *torch.autograd.grad(weighted_sum(out), inputs)])
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-11}
    for name, a, b in zip(("out", "energy", *names), got, want, strict=True):
        torch.testing.assert_close(a, b, **tol, msg=f"{energy}: {name}")


def test_lsr_outside_every_support_reads_zero_with_zero_gradient():
    """No memory within reach: weights exactly zero, output zero, energy +inf (eps = 0), and
    the gradient zero, not NaN, even when the loss uses the energy."""
    q = torch.full((1, 2, 3), 10.0, dtype=F64, requires_grad=True)
    k = torch.zeros(1, 4, 3, dtype=F64, requires_grad=True)
    v = torch.randn(1, 4, 2, dtype=F64, requires_grad=True)
    beta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    for eps in (0.0, 0.5):
        out, e = memory_read(q, k, v, beta, energy="lsr", eps=eps)
        assert torch.equal(out, torch.zeros_like(out))
        assert bool((e == float("inf")).all()) if eps == 0 else torch.isfinite(e).all()
        loss = out.sum() + (e.sum() if eps else 0.0)
        *grads, d_beta = torch.autograd.grad(loss, (q, k, v, beta))
        for g in grads:
            assert torch.equal(g, torch.zeros_like(g))
        # with eps > 0 the energy there is the constant -log(eps) / beta, for 2 queries
        want = 2 * torch.log(torch.tensor(eps, dtype=F64)) / beta**2 if eps else 0.0
        torch.testing.assert_close(d_beta, torch.as_tensor(want, dtype=F64))
        assert bool((read_weights(q, k, beta, energy="lsr", eps=eps) == 0).all())


def test_lsr_weights_are_exactly_zero_outside_the_supports():
    q, k, _, pad = tensors(2, 5, 40, 3, 1, seed=3)
    beta = torch.tensor(0.4, dtype=F64)
    w = read_weights(q, k, beta, energy="lsr", padding_mask=pad, chunk_size=7)
    d2 = ((q[:, :, None] - k[:, None]) ** 2).sum(-1)
    outside = (d2 >= 2 / beta) | pad[:, None, :]
    assert bool((w[outside] == 0).all()) and bool((w[~outside] > 0).all())
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5, dtype=F64))
    lse = read_weights(q, k, beta, energy="lse", padding_mask=pad, chunk_size=7)
    torch.testing.assert_close(
        lse, torch.softmax((-beta / 2 * d2).masked_fill(pad[:, None], -torch.inf), -1)
    )


def layer_cases():
    for energy, eps, beta in CASES:
        opts = {"energy": energy, "eps": eps, "beta": beta, "learn_beta": True, "dtype": F64}
        yield energy, eps, opts


def check_layer(layer, inputs, args):
    """gradcheck of output and energies w.r.t. the inputs and every parameter (beta's
    included); ``args(*inputs)`` gives the layer's arguments."""
    names = [n for n, _ in layer.named_parameters()]
    assert any(n.endswith("log_beta") for n in names)
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]
    inputs = [t.detach().clone().requires_grad_() for t in inputs]

    def fn(*flat):
        state = dict(zip(names, flat[len(inputs) :], strict=True))
        return tuple(functional_call(layer, state, args(*flat[: len(inputs)])))

    assert gradcheck(fn, (*inputs, *params))


@pytest.mark.parametrize(("energy", "eps", "opts"), list(layer_cases()))
def test_gradcheck_of_the_layers(energy, eps, opts):
    q, k, _, pad = tensors(2, 3, 6, 4, 1, seed=4)
    scale = 0.5 if energy == "lsr" else 1.0  # inside the supports
    projected = Retrieval(4, 4, hidden_dim=3, out_dim=2, steps=2, chunk_size=4, **opts)
    check_layer(projected, [q * scale, k * scale], lambda q, k: (q, k, pad))
    memory = MemoryLayer(4, 6, value_dim=3, in_dim=5, steps=2, chunk_size=4, **opts)
    x = torch.randn(2, 3, 5, dtype=F64, generator=torch.Generator().manual_seed(5)) * scale
    check_layer(memory, [x], lambda x: (x,))
    pooling = Pooling(4, num_queries=2, hidden_dim=3, chunk_size=4, **opts)
    check_layer(pooling, [k * scale], lambda k: (k, pad))


@pytest.mark.parametrize(("energy", "eps", "opts"), list(layer_cases()))
def test_steps_and_energies_follow_the_energy_module(energy, eps, opts):
    """Auto-association without projections: the first steps move the queries as the plain
    formula does, the last reads out; the reported energies are those of amlab.energy at
    each state, and they never rise."""
    gen = torch.Generator().manual_seed(6)
    memories = torch.randn(1, 50, 8, dtype=F64, generator=gen)
    queries = memories[:, :20] + 0.6 * torch.randn(1, 20, 8, dtype=F64, generator=gen)
    opts = {**opts, "beta": 0.05 if energy == "lsr" else 2.0}
    layer = Retrieval(8, steps=4, chunk_size=16, **opts)
    out, energies = layer(queries, memories)
    state, beta = queries[0], float(layer.beta.detach())
    for t in range(4):
        if energy == "lsr":
            want = lsr_energy(state, memories[0], beta, eps=eps)
        else:
            want = lse_energy(
                state, memories[0], beta, form="dot" if energy == "lse_dot" else "distance"
            )
        torch.testing.assert_close(energies[t, 0], want)
        if t < 3:
            state = plain_step(state[None], memories, beta, energy, eps)[0][0]
    torch.testing.assert_close(
        out[0], plain_read(state[None], memories, memories, beta, energy, eps)[0][0]
    )
    assert bool((energies.diff(dim=0) <= 1e-12).all())
    assert bool((energies[-1] < energies[0] - 1e-3).any())  # the states did move


def lsr_rounding(e, beta, eps, radius_sq, dtype):
    """How far rounding may move a reported LSR energy E = -log(eps + Z) / beta: 16 units in
    the last place of |E| plus those of Z carried to E (dE = dZ / (beta (eps + Z))), Z's being
    those of a kernel 1 - (beta/2)(|x|^2 + |xi|^2 - 2 x.xi) with |x|^2, |xi|^2 <= radius_sq."""
    ulps = 16 * torch.finfo(dtype).eps
    return ulps * (e.abs() + (1 + beta * radius_sq) * torch.exp(beta * e) / beta)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_lsr_energy_never_rises_over_many_steps(dtype):
    """What LSR's damped centroid step is for: over 20 steps the reported LSR energy of every
    query never rises, up to rounding (:func:`lsr_rounding`), on 500 noisy digits read against
    the 500 stored ones and on random data with several beta and eps (queries near a memory
    and far from all). The LSR read-out repeated as the move (what the layers did before)
    raises it for many of the same digits."""
    stored = image_splits("digits", None)[0].images[:500].to(dtype)
    noisy = gaussian_noise(stored, 0.2, seed=0)[0]
    gen = torch.Generator().manual_seed(10)
    cases = [(noisy, stored, 0.15, 0.0), (noisy, stored, 0.15, 0.3)]
    for beta, eps in ((0.05, 0.0), (0.5, 0.1), (2.0, 0.0), (8.0, 1.0)):
        memories = torch.randn(300, 6, generator=gen, dtype=dtype)
        near = memories[:100] + (0.3 / beta**0.5) * torch.randn(100, 6, generator=gen, dtype=dtype)
        far = 1.5 * torch.randn(100, 6, generator=gen, dtype=dtype)
        cases.append((torch.cat([near, far]), memories, beta, eps))
    for queries, memories, beta, eps in cases:
        layer = Retrieval(
            memories.shape[1], energy="lsr", beta=beta, eps=eps, steps=21, dtype=dtype
        )
        energies = layer(queries[None], memories[None]).energies[:, 0]  # (21, N)
        radius_sq = float(torch.cat([queries, memories]).square().sum(1).max())
        support = torch.exp(-beta * energies[0]) - eps > 0  # Z > 0 at the start
        assert bool(energies[:, ~support].eq(energies[0, ~support]).all())  # the others stay
        e = energies[:, support]
        rise = e.diff(dim=0) - lsr_rounding(e[:-1], beta, eps, radius_sq, dtype)
        assert float(rise.max()) <= 0, (beta, eps, float(rise.max()))
        assert int(support.sum()) >= 90 and float((e[-1] < e[0]).double().mean()) > 0.5
    # the LSR read-out as the move: the kernel-weighted mean of the keys
    state, beta = noisy[None], torch.tensor(0.15, dtype=dtype)
    energies = []
    for _ in range(11):
        state, e = memory_read(state, stored[None], None, beta, energy="lsr")
        energies.append(e[0])
    e = torch.stack(energies)
    radius_sq = float(torch.cat([noisy, stored]).square().sum(1).max())
    rise = e.diff(dim=0) - lsr_rounding(e[:-1], 0.15, 0.0, radius_sq, dtype)
    assert int((rise > 0).any(0).sum()) > 100


def test_lsr_step_at_a_tie_on_the_support_boundary():
    """A memory exactly on the boundary of x's support (kernel 0: beta = 2, |x - xi| = 1) is
    not in S: the step and its gradients (a case finite differences cannot check) are those
    of autograd through the plain formula. Just inside, the state jumps (n and c change) while
    the energy does not (docs/nn.md)."""
    x, beta = torch.zeros(1, 1, 3, dtype=F64), torch.tensor(2.0, dtype=F64)
    keys = torch.tensor([[[1.0, 0.0, 0.0], [0.2, 0.1, 0.0]]], dtype=F64)
    results = []
    for chunked in (True, False):
        inputs = [t.clone().requires_grad_() for t in (x, keys, beta)]
        out = (
            memory_step(*inputs, energy="lsr", chunk_size=1)
            if chunked
            else plain_step(*inputs, "lsr")
        )
        results.append([*out, *torch.autograd.grad(weighted_sum(out), inputs)])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    y, e = (t.detach() for t in results[0][:2])
    torch.testing.assert_close(y, torch.tensor([[[0.19, 0.095, 0.0]]], dtype=F64))
    y_in, e_in = memory_step(
        x + torch.tensor([1e-7, 0.0, 0.0], dtype=F64), keys, beta, energy="lsr"
    )
    assert float((y_in - y).abs().max()) > 0.05
    torch.testing.assert_close(e_in, e, rtol=0.0, atol=1e-6)  # x moved by 1e-7


def test_lsr_step_outside_every_support_keeps_the_state_with_a_defined_gradient():
    """No memory within reach: the state stays exactly, its gradient passes through unchanged
    (y = x), the memories get zero, beta only the energy's explicit part; no NaN."""
    q = torch.full((1, 2, 3), 10.0, dtype=F64, requires_grad=True)
    k = torch.zeros(1, 4, 3, dtype=F64, requires_grad=True)
    beta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    r = torch.randn(1, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(11))
    for eps in (0.0, 0.5):
        y, e = memory_step(q, k, beta, energy="lsr", eps=eps)
        assert torch.equal(y, q)
        assert bool((e == float("inf")).all()) if eps == 0 else torch.isfinite(e).all()
        loss = (y * r).sum() + (e.sum() if eps else 0.0)
        dq, dk, d_beta = torch.autograd.grad(loss, (q, k, beta))
        assert torch.equal(dq, r) and torch.equal(dk, torch.zeros_like(dk))
        want = 2 * torch.log(torch.tensor(eps, dtype=F64)) / beta**2 if eps else 0.0
        torch.testing.assert_close(d_beta, torch.as_tensor(want, dtype=F64))


def test_memory_layer_and_pooling_read_what_retrieval_reads():
    """The three layers are one read-out: MemoryLayer = Retrieval from its memories shared by
    every input; Pooling = Retrieval of its queries from each set."""
    gen = torch.Generator().manual_seed(7)
    layer = MemoryLayer(5, 30, beta=3.0, dtype=F64)
    x = torch.randn(4, 2, 5, dtype=F64, generator=gen)
    plain = Retrieval(5, beta=3.0, dtype=F64)
    want = plain(x.reshape(1, 8, 5), layer.memories.detach()[None])
    got = layer(x)
    torch.testing.assert_close(got.output, want.output.reshape(4, 2, 5))
    torch.testing.assert_close(got.energies, want.energies.reshape(1, 4, 2))
    pool = Pooling(5, num_queries=3, beta=3.0, dtype=F64)
    sets = torch.randn(2, 7, 5, dtype=F64, generator=gen)
    want = plain(pool.queries.detach().expand(2, 3, 5), sets)
    torch.testing.assert_close(pool(sets).output, want.output)


def test_padding_is_the_same_as_leaving_the_memories_out():
    gen = torch.Generator().manual_seed(8)
    layer = Retrieval(4, hidden_dim=6, energy="lsr", beta=0.1, eps=0.1, dtype=F64)
    q = torch.randn(2, 3, 4, dtype=F64, generator=gen)
    sets = torch.randn(2, 5, 4, dtype=F64, generator=gen)
    pad = torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    junk = sets.clone()
    junk[0, 3:] = 1e3  # padding's values never matter
    got = layer(q, junk, pad).output
    torch.testing.assert_close(got[0], layer(q[:1], sets[:1, :3]).output[0])
    torch.testing.assert_close(got[1], layer(q[1:], sets[1:]).output[0])


@pytest.mark.parametrize("energy", ["lse", "lsr"])
def test_largest_tensor_is_bounded_by_the_chunk(energy):
    """Forward and backward (a state step, then the read-out) with 512 queries and 8192
    learnable memories never build a tensor near the (B, M) = 4M-element weight matrix: the
    largest is one chunk's block."""
    torch.manual_seed(0)
    batch, chunk = 512, 256
    beta = 0.02 if energy == "lsr" else 1.0
    layer = MemoryLayer(8, 8192, energy=energy, beta=beta, steps=2, chunk_size=chunk)
    x = torch.randn(batch, 8, requires_grad=True)
    with LargestTensor() as probe:
        out, energies = layer(x)
        (out.square().sum() + energies.sum()).backward()
    assert layer.memories.grad is not None and x.grad is not None
    assert probe.largest <= batch * chunk, probe.largest
    assert probe.largest * 16 <= batch * 8192


def test_compiled_layers_have_no_graph_break_and_equal_eager():
    """``torch.compile(fullgraph=True)``, which raises at any graph break, of a MemoryLayer
    (LSR: a state step, then the read-out of its memories, keys and values one tensor) and of
    a Retrieval with projections and padding: outputs and gradients (input, memories, beta)
    equal eager's. A set that is all padding is still refused, checked on the device.
    The backend ``aot_eager`` captures the forward graph (Dynamo) and the backward graph
    (AOTAutograd) without generating code, which is slow on a CPU."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(3, 4, dtype=F64, generator=gen)
    q, sets = (
        torch.randn(2, 3, 4, dtype=F64, generator=gen),
        torch.randn(2, 5, 4, dtype=F64, generator=gen),
    )
    pad = torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    memory = MemoryLayer(4, 10, energy="lsr", beta=0.2, learn_beta=True, steps=2, dtype=F64)
    retrieval = Retrieval(4, hidden_dim=3, beta=0.5, learn_beta=True, steps=2, dtype=F64)
    for layer, args in ((memory, (x,)), (retrieval, (q, sets, pad))):
        compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
        results = []
        for run in (layer, compiled):
            inputs = [a.clone().requires_grad_(a.is_floating_point()) for a in args]
            out = run(*inputs)
            floats = [a for a in inputs if a.requires_grad]
            results.append(
                [*out, *torch.autograd.grad(weighted_sum(out), [*floats, *layer.parameters()])]
            )
        assert len(results[0]) >= 5
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="every memory of an example as padding"):
        compiled(q, sets, torch.tensor([[False] * 5, [True] * 5]))


def test_bad_input_raises_clear_errors():
    layer = Retrieval(4)
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    with pytest.raises(AmlabError, match="2 examples but the memories 3 sets"):
        layer(q, torch.randn(3, 5, 4))
    with pytest.raises(AmlabError, match=r"padding_mask has shape \(2, 4\)"):
        layer(q, k, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(AmlabError, match="bool tensor"):
        layer(q, k, torch.zeros(2, 5))
    with pytest.raises(AmlabError, match=r"every memory of example\(s\) \[1\]"):
        layer(q, k, torch.tensor([[False] * 5, [True] * 5]))
    with pytest.raises(AmlabError, match="last axis 4"):
        layer(q, torch.randn(2, 5, 3))
    with pytest.raises(AmlabError, match="float64 but the layer is torch.float32"):
        layer(q.double(), k.double())
    with pytest.raises(AmlabError, match="on meta but the layer on cpu"):
        layer(q.to("meta"), k)
    with pytest.raises(AmlabError, match="M = 0"):
        layer(q, torch.randn(2, 0, 4))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(AmlabError, match="beta must be a finite number > 0"):
            MemoryLayer(4, 10, beta=bad)
    # beyond the dtype's range the read-out overflowed to NaN (beta = 1e39 in float32)
    for bad in (1e39, 1e-39):
        with pytest.raises(AmlabError, match="beta = .* is outside the range"):
            Retrieval(4, beta=bad)
    Retrieval(4, beta=1e39, dtype=torch.float64)
    with pytest.raises(AmlabError, match="eps = .* is outside the range"):
        Retrieval(4, energy="lsr", eps=1e30)
    with pytest.raises(AmlabError, match="energy"):
        Pooling(4, energy="softmax")
    with pytest.raises(AmlabError, match="steps"):
        MemoryLayer(4, 10, steps=0)
    with pytest.raises(AmlabError, match="steps must be at most 100,000"):
        MemoryLayer(4, 10, steps=10**6)
    with pytest.raises(AmlabError, match="hidden_dim"):
        Retrieval(4, 6)
    with pytest.raises(AmlabError, match=r"\(\.\.\., in_dim\) with last axis 3"):
        MemoryLayer(4, 10, in_dim=3)(torch.randn(2, 4))
    # 0 was taken for "not given" and replaced by query_dim
    with pytest.raises(AmlabError, match="memory_dim"):
        Retrieval(4, 0)
    with pytest.raises(AmlabError, match="out_dim"):
        Retrieval(4, hidden_dim=3, out_dim=0)


def test_the_functions_refuse_a_set_that_is_all_padding():
    """memory_read, memory_step and read_weights called directly on a set that is all padding
    raise AmlabError naming it, as the layers do (LSE's read-out of it was 0 / 0 = NaN);
    compiled with fullgraph (no graph break) the check runs on the device: a RuntimeError."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 4, generator=gen, dtype=F64) for _ in range(3))
    beta = torch.tensor(0.7, dtype=F64)
    pad = torch.tensor([[False, True, False], [True, True, True]])
    empty = r"every memory of example\(s\) \[1\]"
    for energy in ("lse", "lse_dot", "lsr"):
        kw = {"energy": energy, "padding_mask": pad}
        with pytest.raises(AmlabError, match=empty):
            memory_read(q, k, v, beta, **kw)
        with pytest.raises(AmlabError, match=empty):
            memory_step(q, k, beta, **kw)
        with pytest.raises(AmlabError, match=empty):
            read_weights(q, k, beta, **kw)
    ok = pad.clone()
    ok[1, 0] = False
    out, energy = memory_read(q, k, v, beta, padding_mask=ok)
    assert bool(torch.isfinite(out).all() and torch.isfinite(energy).all())
    compiled = torch.compile(
        lambda q, k, pad: memory_step(q, k, beta, padding_mask=pad), fullgraph=True, backend="eager"
    )
    torch.testing.assert_close(compiled(q, k, ok), memory_step(q, k, beta, padding_mask=ok))
    with pytest.raises(RuntimeError, match="every memory of an example as padding"):
        compiled(q, k, pad)


def test_memory_layer_reads_an_empty_batch():
    """No queries: empty output and energies (reshaping with -1 failed on the 0 size)."""
    layer = MemoryLayer(4, 10, value_dim=3, steps=2)
    out, energies = layer(torch.randn(0, 5, 4))
    assert out.shape == (0, 5, 3) and energies.shape == (2, 0, 5)
    assert layer.weights(torch.randn(0, 4)).shape == (0, 10)


def test_learned_beta_stays_positive_and_moves():
    """beta is trained as its logarithm: a step that moves log beta by far more than beta's
    size (lower energy wants a smaller beta: E tends to -log(M) / beta) leaves it positive."""
    layer = MemoryLayer(3, 10, beta=0.5, learn_beta=True)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(9))
    layer(x).energies.mean().backward()
    opt.step()
    assert float(layer.log_beta.detach()) < torch.log(torch.tensor(0.5)) - 2.0
    assert float(layer.beta.detach()) > 0


def test_peak_live_bytes_counts_each_allocation_once_while_it_lives():
    """The probe behind the benchmark's peak memory: an allocation counts until its last
    tensor dies; views and in-place results add nothing; tensors made before do not count."""
    before = torch.zeros(1000)
    with PeakLiveBytes() as probe:
        a = torch.ones(1000)  # 4,000 bytes
        view = a[:10]
        a.add_(1.0)
        del a  # the view keeps the storage
        b = before[:500] * 2  # 2,000 bytes; before[:500] itself is a view of an old tensor
        assert probe.current == 6000
        del view
        assert probe.current == 2000
        del b
    assert probe.peak == 6000 and probe.current == 0
