"""Energy Transformer: layer norm, attention and Hopfield energies against autograd and
explicit formulas, and the dynamics (energy never rises, masks, input checks)."""

import json
import math

import pytest
import torch

from amlab.energy.transformer import (
    attention_energy,
    attention_energy_grad,
    attention_log_partition,
    attention_mask,
    hopfield_energy,
    hopfield_energy_grad,
    layer_norm,
    layer_norm_lagrangian,
)
from amlab.errors import AmlabError
from amlab.models.dense_am import DenseAM
from amlab.models.energy_transformer import EnergyTransformer

F64 = torch.float64


def rand(gen, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=gen, dtype=F64)


def make_weights(seed, b=3, n=6, d=8, h=2, y=4, k=10):
    gen = torch.Generator().manual_seed(seed)
    return gen, rand(gen, b, n, d), rand(gen, h, y, d, scale=0.5), rand(gen, h, y, d, scale=0.5), k


def autograd_grad(fn, g):
    g = g.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(g).sum(), g)
    return grad


@pytest.mark.parametrize("seed", [0, 1])
def test_layer_norm_is_gradient_of_lagrangian(seed):
    gen = torch.Generator().manual_seed(seed)
    x, gamma, delta = rand(gen, 3, 5, 7, scale=2.0), 1.7, rand(gen, 7)
    grad = autograd_grad(lambda v: layer_norm_lagrangian(v, gamma, delta, 1e-5), x)
    torch.testing.assert_close(layer_norm(x, gamma, delta, 1e-5), grad, rtol=0, atol=1e-10)
    ref = torch.nn.functional.layer_norm(x, (7,), eps=1e-5) * gamma + delta
    torch.testing.assert_close(layer_norm(x, gamma, delta, 1e-5), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_attention_grad_matches_autograd(exclude_self, use_mask, seed):
    gen, g, wk, wq, _ = make_weights(seed)
    n = g.shape[1]
    mask = torch.rand(n, n, generator=gen) < 0.5 if use_mask else None
    if use_mask:
        mask[0] = False  # a query with no allowed key contributes 0 and no gradient
    allowed = attention_mask(n, exclude_self, mask)
    beta = 1 / math.sqrt(wk.shape[1])
    energy, grad = attention_energy_grad(g, wk, wq, beta, allowed)
    torch.testing.assert_close(energy, attention_energy(g, wk, wq, beta, allowed))
    ref = autograd_grad(lambda v: attention_energy(v, wk, wq, beta, allowed), g)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(grad, ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_pair_attention_equals_the_dense_mask(seed):
    """Attention over a list of (query, key) pairs: the same energy and gradient as the
    dense form with that mask, by formula and by autograd; queries with no key add 0."""
    from amlab.energy.transformer import pair_attention_energy_grad

    gen, g, wk, wq, _ = make_weights(seed, n=9)
    allowed = torch.rand(9, 9, generator=gen) < 0.3
    allowed[2] = False  # a query with no key
    pairs = allowed.nonzero().T
    beta = 0.7
    energy, grad = pair_attention_energy_grad(g, wk, wq, beta, pairs)
    dense_energy, dense_grad = attention_energy_grad(g, wk, wq, beta, allowed)
    torch.testing.assert_close(energy, dense_energy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, dense_grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attention_energy(g, wk, wq, beta, pairs), dense_energy)
    ref = autograd_grad(lambda v: attention_energy(v, wk, wq, beta, pairs), g)
    torch.testing.assert_close(grad, ref, rtol=0, atol=1e-10)
    huge = pair_attention_energy_grad(g * 40, wk, wq, beta, pairs)  # no overflow
    assert torch.isfinite(huge[0]).all() and torch.isfinite(huge[1]).all()


def test_batched_mask_equals_per_sample_masks():
    gen, g, wk, wq, _ = make_weights(4)
    masks = torch.rand(g.shape[0], g.shape[1], g.shape[1], generator=gen) < 0.5
    energy, grad = attention_energy_grad(g, wk, wq, 0.5, attention_mask(g.shape[1], mask=masks))
    for b, m in enumerate(masks):
        e1, g1 = attention_energy_grad(
            g[b : b + 1], wk, wq, 0.5, attention_mask(g.shape[1], mask=m)
        )
        torch.testing.assert_close(energy[b : b + 1], e1)
        torch.testing.assert_close(grad[b : b + 1], g1)


@pytest.mark.parametrize("kind", ["relu", "softmax"])
@pytest.mark.parametrize("seed", [0, 1])
def test_hopfield_grad_matches_autograd(kind, seed):
    gen, g, *_ = make_weights(seed)
    xi = rand(gen, 10, g.shape[2])
    energy, grad = hopfield_energy_grad(g, xi, kind, beta=0.7)
    torch.testing.assert_close(energy, hopfield_energy(g, xi, kind, beta=0.7))
    ref = autograd_grad(lambda v: hopfield_energy(v, xi, kind, beta=0.7), g)
    torch.testing.assert_close(grad, ref, rtol=0, atol=1e-8)
    h = g @ xi.T  # explicit formulas
    explicit = (
        -0.5 * (torch.relu(h) ** 2).sum((1, 2))
        if kind == "relu"
        else -torch.logsumexp(0.7 * h, -1).sum(1) / 0.7
    )
    torch.testing.assert_close(energy, explicit)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_self_exclusion_changes_exactly_the_diagonal(exclude_self):
    _, g, wk, wq, _ = make_weights(3)
    beta, n = 0.5, g.shape[1]
    lse = attention_log_partition(g, wk, wq, beta, attention_mask(n, exclude_self))[0]
    for b in range(g.shape[0]):
        for h in range(wk.shape[0]):
            keys, queries = g[b] @ wk[h].T, g[b] @ wq[h].T
            a = keys @ queries.T  # A[key B, query C], explicit (N, N)
            for c in range(n):
                terms = [math.exp(beta * a[k, c]) for k in range(n) if k != c or not exclude_self]
                assert lse[b, h, c].item() == pytest.approx(math.log(sum(terms)), rel=1e-12)
    energy = attention_energy(g, wk, wq, beta, attention_mask(n, exclude_self))
    torch.testing.assert_close(energy, -lse.sum((1, 2)) / beta)


def make_model(seed, hopfield="relu", exclude_self=True, init_std=0.3, **kw):
    return EnergyTransformer(
        8, 2, 4, 12, hopfield, exclude_self, seed=seed, init_std=init_std, dtype=F64, **kw
    )


@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
@pytest.mark.parametrize("init_std", [0.3, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_energy_never_rises(hopfield, init_std, seed):
    model = make_model(seed, hopfield, exclude_self=seed != 2, init_std=init_std)
    x = torch.randn(4, 7, 8, generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = model.retrieve(x)
    assert out.states.shape == x.shape and out.energies.shape == (13, 4)
    rise = out.energies.diff(dim=0)
    assert (rise <= 1e-10 * out.energies.abs()[1:].clamp_min(1)).all(), rise.max()
    assert (rise.sum(0) < 0).all()  # and it moves
    torch.testing.assert_close(out.energies[0], model.energy(x))
    torch.testing.assert_close(out.energies[-1], model.energy(out.states))
    torch.testing.assert_close(out.energies, out.parts["attention"] + out.parts["hopfield"])


def test_dynamics_step_is_the_direction_dE_dg():
    model = make_model(0)
    x = torch.randn(2, 5, 8, dtype=F64)
    out = model.retrieve(x, steps=1)
    xr = x.clone().requires_grad_(True)
    g = model.layer_norm(xr)
    parts = (
        attention_energy(g, model.w_k, model.w_q, model.beta, attention_mask(5)).sum()
        + hopfield_energy(g, model.xi).sum()
    )
    (dg,) = torch.autograd.grad(parts, g)
    torch.testing.assert_close(model.direction(x), dg)
    torch.testing.assert_close(out.states, x - model.step_size * dg)
    torch.testing.assert_close(model(x, steps=1), out.states)


@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
def test_grad_is_dE_dx_by_autograd(hopfield):
    """grad is the gradient of the energy in the tokens (through the layer norm), not the
    direction dE/dg the dynamics take."""
    model = make_model(1, hopfield, init_std=0.5)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 5, 8, generator=gen, dtype=F64)
    mask = torch.rand(5, 5, generator=gen) < 0.6
    xr = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(model.energy(xr, mask).sum(), xr)
    energy, got = model.energy_and_grad(x, mask)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.grad(x, mask), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(energy, model.energy(x, mask).detach())
    assert got.shape == x.shape and not torch.allclose(got, model.direction(x, mask))


@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
def test_training_gradient_through_the_dynamics_matches_an_autograd_unroll(hopfield):
    """differentiable=True: d(loss)/d(weights, x) through 4 steps equals the gradient of an
    independent unroll whose every step takes dE/dg by autograd (create_graph)."""
    model = make_model(3, hopfield, init_std=0.5)
    x0 = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    target = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    params = [x0.requires_grad_(True), *model.parameters()]

    out = model.retrieve(x0, steps=4, differentiable=True)
    grads = torch.autograd.grad(((out.states - target) ** 2).sum(), params)

    x = x0
    for _ in range(4):
        g = model.layer_norm(x)
        energy = attention_energy(
            g, model.w_k, model.w_q, model.beta, attention_mask(5)
        ) + hopfield_energy(g, model.xi, hopfield, model.hopfield_beta)
        (dg,) = torch.autograd.grad(energy.sum(), g, create_graph=True)
        x = x - model.step_size * dg
    ref = torch.autograd.grad(((x - target) ** 2).sum(), params)
    torch.testing.assert_close(out.states, x)
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    plain = model.retrieve(x0.detach(), steps=4)
    assert not plain.states.requires_grad
    torch.testing.assert_close(plain.states, out.states.detach())
    torch.testing.assert_close(plain.energies, out.energies.detach())


def test_energy_parts_when_one_sequence_stops_early():
    """A sequence at a fixed point stops after one step while the other runs on; the
    energy parts per step are still reported for both (the stopped one keeps its last)."""
    model = EnergyTransformer(4, 1, 2, 1, seed=0, dtype=F64)
    with torch.no_grad():
        model.xi.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0]]))
    # one token: no key to attend; token 0 points away from xi (ReLU 0: no force)
    x = torch.tensor([[[-1.0, 1.0, 0.0, 0.0]], [[1.0, -1.0, 0.5, 0.0]]], dtype=F64)
    out = model.retrieve(x, steps=5)
    assert out.energies.shape == (6, 2)
    torch.testing.assert_close(out.states[0], x[0])
    assert (out.energies[:, 0] == out.energies[0, 0]).all()
    assert (out.energies[1:, 1] < out.energies[:-1, 1]).all()
    torch.testing.assert_close(out.energies[-1], model.energy(out.states))
    torch.testing.assert_close(out.energies, out.parts["attention"] + out.parts["hopfield"])
    # each part, step by step: the stopped one keeps its own, the other's are its run alone
    alone = model.retrieve(x[1:], steps=5)
    for part in ("attention", "hopfield"):
        assert (out.parts[part][:, 0] == out.parts[part][0, 0]).all()
        torch.testing.assert_close(out.parts[part][:, 1], alone.parts[part][:, 0])


def test_block_mask_separates_token_groups():
    model = make_model(0)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[:3, :3] = mask[3:, 3:] = True
    x = torch.randn(2, 6, 8, dtype=F64)
    y = x.clone()
    y[:, 3:] = torch.randn(2, 3, 8, dtype=F64)
    torch.testing.assert_close(model.direction(x, mask)[:, :3], model.direction(y, mask)[:, :3])
    torch.testing.assert_close(model(x, mask=mask)[:, :3], model(y, mask=mask)[:, :3])
    assert not torch.allclose(
        model.direction(x)[:, :3], model.direction(y)[:, :3]
    )  # unmasked: they do


def test_float32_default():
    model = EnergyTransformer(8, 2, 4, 12)
    out = model.retrieve(torch.randn(2, 5, 8))
    assert out.states.dtype == torch.float32 and out.energies.dtype == torch.float32
    assert EnergyTransformer(8, 2, 4).xi.shape == (32, 8)  # K defaults to 4 * dim


@pytest.mark.parametrize(
    "x, kw",
    [
        (torch.randn(5, 8), {}),
        (torch.randn(2, 5, 7), {}),
        (torch.randn(2, 0, 8), {}),
        (torch.full((2, 5, 8), float("nan")), {}),
        ("tokens", {}),
        (torch.randn(2, 5, 8), {"steps": 0}),
        (torch.randn(2, 5, 8), {"mask": torch.ones(4, 4, dtype=torch.bool)}),
        (torch.randn(2, 5, 8), {"mask": torch.ones(5, 5)}),
    ],
)
def test_bad_inputs_raise(x, kw):
    with pytest.raises(AmlabError):
        make_model(0)(x, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"heads": 0},
        {"head_dim": 0},
        {"steps": 0},
        {"dim": -1},
        {"hopfield": "tanh"},
        {"step_size": 0},
        {"hopfield_memories": 0},
        {"dtype": torch.float16},
    ],
)
def test_bad_config_raises(kw):
    args = {"dim": 8, "heads": 2, "head_dim": 4, "hopfield_memories": 3, **kw}
    with pytest.raises(AmlabError):
        EnergyTransformer(**args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_round_trips_exactly(tmp_path, dtype):
    model = EnergyTransformer(
        12,
        3,
        4,
        20,
        hopfield="softmax",
        exclude_self=False,
        steps=5,
        step_size=0.05,
        seed=3,
        beta=0.7,
        init_std=0.3,
        dtype=dtype,
    )
    with torch.no_grad():
        model.gamma.fill_(1.7)  # a trained-looking value, not the initial one
    model.save(tmp_path / "et")
    back = EnergyTransformer.load(tmp_path / "et")
    for (name, a), (_, b) in zip(
        model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert back.config == model.config
    assert (back.hopfield, back.exclude_self, back.steps, back.step_size, back.beta) == (
        "softmax",
        False,
        5,
        0.05,
        0.7,
    )
    x = torch.randn(2, 6, 12, dtype=dtype)
    assert torch.equal(back(x), model(x))
    DenseAM(torch.ones(2, 12)).save(tmp_path / "dense")
    with pytest.raises(AmlabError, match="DenseAM"):
        EnergyTransformer.load(tmp_path / "dense")
    config_file = tmp_path / "et" / "config.json"
    saved = json.loads(config_file.read_text())
    for tampered, problem in (
        ({**saved, "heads": 2}, "do not fit EnergyTransformer"),  # weights of another shape
        ({k: v for k, v in saved.items() if k != "dtype"}, "missing keys dtype"),
    ):
        config_file.write_text(json.dumps(tampered))
        with pytest.raises(AmlabError, match=problem):
            EnergyTransformer.load(tmp_path / "et")
