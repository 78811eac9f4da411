"""Retrieval: LSR exactness and emergent minima, attention closed form, monotone energy,
clamping, saving."""

import math

import pytest
import torch

from amlab import AmlabError, DenseAM, cosine_schedule, descend
from amlab.energy.lse import lse_softmax_mean, memory_bias


def separated_memories(m=20, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, d, generator=g, dtype=torch.float64)


def test_lsr_retrieves_stored_patterns_exactly_when_supports_are_disjoint():
    mem = separated_memories()
    min_dist = torch.pdist(mem).min().item()
    r = 0.45 * min_dist  # no other memory within r of any memory (2r < min distance)
    am = DenseAM(mem, energy="lsr", beta=2.0 / r**2)
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(mem.shape, generator=g, dtype=torch.float64)
    start = mem + 0.9 * r * direction / direction.norm(dim=1, keepdim=True)
    out = am.retrieve(start, method="fixed_point")
    assert torch.equal(out.states, mem)  # exact, bit for bit
    assert out.converged.all() and (out.steps <= 2).all()
    # each memory is itself a fixed point with zero gradient, and gradient descent gets there
    assert torch.equal(am.grad(mem), torch.zeros_like(mem))
    gd = am.retrieve(start, method="gd", step_size=0.05, steps=3000, tol=1e-12)
    torch.testing.assert_close(gd.states, mem, atol=1e-9, rtol=0)


@pytest.mark.parametrize("distance_over_r", [1.2, 1.6, 1.95])
def test_lsr_emergent_minimum_at_midpoint_of_two_memories(distance_over_r):
    beta = 2.0
    r = math.sqrt(2.0 / beta)
    a = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([distance_over_r * r, 0.0, 0.0], dtype=torch.float64)
    am = DenseAM(torch.stack([a, b]), energy="lsr", beta=beta)
    mid = 0.5 * (a + b)
    # distance in (r, 2r): each memory is outside the other's support, so both are stored
    # minima, and the midpoint (inside both supports) is a third, emergent one
    assert torch.equal(am.grad(torch.stack([a, b, mid])), torch.zeros(3, 3, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    margin = r - 0.5 * distance_over_r * r  # how far the midpoint lies inside both supports
    near_mid = mid + 0.2 * margin * torch.randn(10, 3, generator=g, dtype=torch.float64)
    out = am.retrieve(near_mid, method="fixed_point")
    assert torch.equal(out.states, mid.expand(10, 3))
    # a strict local minimum: every small perturbation raises the energy
    assert (am.energy(near_mid) > am.energy(mid)).all()
    # and gradient descent finds it too
    gd = am.retrieve(near_mid, method="gd", step_size=0.05, steps=4000, tol=1e-13)
    torch.testing.assert_close(gd.states, mid.expand(10, 3), atol=1e-9, rtol=0)


def test_lsr_no_emergent_minimum_when_memories_are_farther_than_2r():
    beta = 2.0
    r = math.sqrt(2.0 / beta)
    mem = torch.tensor([[0.0, 0.0], [2.2 * r, 0.0]], dtype=torch.float64)
    am = DenseAM(mem, energy="lsr", beta=beta)
    assert am.energy(mem.mean(0)).item() == math.inf


@pytest.mark.parametrize("kind", ["lse", "lse_dot"])
def test_attention_step_equals_closed_form(kind):
    mem = separated_memories(30, 6).float()
    x = torch.rand(5, 6)
    beta = 3.0
    am = DenseAM(mem, energy=kind, beta=beta)
    one = am.retrieve(x, method="attention", steps=1)
    if kind == "lse":
        scores = -0.5 * beta * torch.cdist(x.double(), mem.double()) ** 2
    else:
        scores = beta * x.double() @ mem.double().T
    expected = torch.softmax(scores, 1) @ mem.double()
    torch.testing.assert_close(one.states.double(), expected, rtol=1e-5, atol=1e-6)
    # attention is gradient descent with step 1
    gd = am.retrieve(x, method="gd", step_size=1.0, steps=1)
    torch.testing.assert_close(gd.states, one.states)


@pytest.mark.parametrize("kind,beta", [("lse", 8.0), ("lse_dot", 8.0), ("lsr", 1.5)])
def test_energy_never_rises_along_gradient_descent(kind, beta):
    mem = separated_memories(25, 4, seed=3)
    g = torch.Generator().manual_seed(4)
    x = mem[:10] + 0.2 * torch.randn(10, 4, generator=g, dtype=torch.float64)
    am = DenseAM(mem, energy=kind, beta=beta, eps=1e-6)
    out = am.retrieve(x, method="gd", step_size=0.01, steps=500, tol=0.0)
    diffs = out.energies[1:] - out.energies[:-1]
    assert (diffs <= 1e-12).all(), diffs.max()
    assert (out.energies[-1] < out.energies[0]).all()


def test_energy_never_rises_along_lsr_fixed_point_and_attention():
    mem = separated_memories(40, 3, seed=5)
    g = torch.Generator().manual_seed(6)
    x = torch.rand(30, 3, generator=g, dtype=torch.float64)
    for kind, method, beta in [("lsr", "fixed_point", 4.0), ("lse", "attention", 20.0)]:
        out = DenseAM(mem, energy=kind, beta=beta).retrieve(x, method=method)
        finite = torch.isfinite(out.energies[0])
        diffs = out.energies[1:, finite] - out.energies[:-1, finite]
        assert (diffs <= 1e-12).all(), (method, diffs.max())


def test_cosine_schedule_and_callable_step_size():
    sched = cosine_schedule(0.01, 0.001, 100)
    assert sched(0) == pytest.approx(0.01) and sched(99) == pytest.approx(0.001)
    assert sched(50) < sched(10)
    mem = separated_memories(5, 3).float()
    am = DenseAM(mem, beta=10.0)
    out = am.retrieve(mem + 0.01, step_size=sched, steps=100, tol=0.0)
    assert out.steps.tolist() == [100] * 5


@pytest.mark.parametrize(
    "kind,method", [("lse", "gd"), ("lse", "attention"), ("lsr", "fixed_point"), ("lsr", "gd")]
)
def test_clamped_entries_never_move(kind, method):
    mem = separated_memories(15, 10, seed=7).float()
    g = torch.Generator().manual_seed(8)
    x = mem[:6].clone()
    clamp = torch.zeros(6, 10, dtype=torch.bool)
    clamp[:, :5] = True  # the first half is observed
    x[:, 5:] = torch.rand(6, 5, generator=g)
    am = DenseAM(mem, energy=kind, beta=20.0 if kind == "lse" else 0.5)
    out = am.retrieve(x, method=method, clamp=clamp, steps=200, record_states=True)
    assert torch.equal(out.path[:, :, :5], x[:, :5].expand(out.path.shape[0], 6, 5))
    assert not torch.equal(out.states[:, 5:], x[:, 5:])
    # a (D,) mask applies to every query
    out1 = am.retrieve(x, method=method, clamp=clamp[0], steps=200)
    assert torch.equal(out1.states, out.states)


def test_clamp_must_be_a_boolean_mask_of_the_states_shape():
    """0/1 integers (or a list of bools) mean the same as the bool mask; anything else that
    is not a bool mask of (B, D) or (D,) is refused with the reason."""
    mem = separated_memories(6, 4).float()
    am = DenseAM(mem, beta=50.0)
    x = mem[:2] + 0.1
    mask = torch.tensor([True, False, True, False])
    want = am.retrieve(x, method="gd", clamp=mask, steps=20).states
    for same in (mask.long(), mask.to(torch.uint8), mask.tolist(), mask.expand(2, 4)):
        assert torch.equal(am.retrieve(x, method="gd", clamp=same, steps=20).states, want)
    for bad, message in (
        (mask.float(), "boolean mask"),
        (mask.long() * 2, "boolean mask"),
        (mask.to(torch.complex64), "boolean mask"),
        (mask[:3], "shape"),
        (mask.expand(3, 4), "shape"),
    ):
        with pytest.raises(AmlabError, match=message):
            am.retrieve(x, method="gd", clamp=bad, steps=20)


def test_image_completion_with_clamp_recovers_lower_half():
    mem = separated_memories(10, 16, seed=9)
    x = mem.clone()
    x[:, 8:] = 0.5
    clamp = torch.zeros(16, dtype=torch.bool)
    clamp[:8] = True
    out = DenseAM(mem, beta=200.0).retrieve(x, method="attention", clamp=clamp)
    torch.testing.assert_close(out.states, mem, atol=1e-6, rtol=0)


def test_single_state_round_trips_shapes():
    mem = separated_memories(6, 4).float()
    am = DenseAM(mem, beta=50.0)
    out = am.retrieve(mem[2] + 0.01, method="attention")
    assert out.states.shape == (4,) and out.energies.ndim == 1 and out.converged.ndim == 0
    assert am.energy(mem[2]).ndim == 0 and am.grad(mem[2]).shape == (4,)
    assert am.nearest(out.states)[0].item() == 2


def test_converged_queries_stop_and_report_steps():
    mem = separated_memories(6, 4).float()
    am = DenseAM(mem, beta=50.0)
    x = torch.cat([mem[:1], mem[1:2] + 0.2])
    out = am.retrieve(x, method="gd", tol=1e-5)
    assert out.converged.all()
    assert out.steps[0] < out.steps[1]
    assert out.energies.shape == (int(out.steps.max()) + 1, 2)


def test_a_diverging_descent_stops_with_a_clear_error():
    am = DenseAM(torch.linspace(0, 1, 12).reshape(4, 3), beta=1e-3)
    with pytest.raises(AmlabError, match="diverged at step"):
        am.retrieve(torch.zeros(3), method="gd", step_size=5e7, steps=50)


def test_descend_rejects_bad_arguments():
    with pytest.raises(AmlabError, match="step_size"):
        descend(lambda x, t: (x.sum(1), x), torch.zeros(1, 2), steps=3, step_size=-1.0)
    with pytest.raises(AmlabError, match="steps"):
        descend(lambda x, t: (x.sum(1), x), torch.zeros(1, 2), steps=-3, step_size=0.1)


def test_differentiable_descent_has_the_closed_form_gradient():
    """E = 0.5 a |x|^2 with clamped entries: after T steps x_T = (1 - h a)^T x_0 on the
    free entries, so d(sum x_T)/d(a) = -T h (1 - h a)^(T-1) sum x_0 over free entries."""
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]], dtype=torch.float64)
    clamp = torch.tensor([False, True, False])
    traj = descend(
        lambda x, t: (0.5 * a * (x * x).sum(1), a * x),
        x0,
        steps=5,
        step_size=0.3,
        clamp=clamp,
        differentiable=True,
        record_states=True,
    )
    free_sum = x0[:, ~clamp].sum()
    torch.testing.assert_close(traj.states[:, clamp], x0[:, clamp])
    torch.testing.assert_close(traj.states[:, ~clamp], (1 - 0.21) ** 5 * x0[:, ~clamp])
    (grad,) = torch.autograd.grad(traj.states.sum(), a)
    torch.testing.assert_close(grad, -5 * 0.3 * (1 - 0.21) ** 4 * free_sum)
    assert traj.energies.requires_grad and traj.path.shape == (6, 2, 3)
    assert traj.steps.tolist() == [5, 5]
    plain = descend(
        lambda x, t: (0.5 * a.detach() * (x * x).sum(1), a.detach() * x),
        x0,
        steps=5,
        step_size=0.3,
        clamp=clamp,
    )
    torch.testing.assert_close(plain.states, traj.states.detach())


def quadratic_with_parts(k=1.0):
    """E = 0.5 k |x|^2, reported as the parts 0.5 k x_0^2 ("first") and the rest ("rest");
    the direction is the gradient k x."""

    def oracle(x, t):
        first, rest = 0.5 * k * x[:, 0] ** 2, 0.5 * k * (x[:, 1:] ** 2).sum(1)
        return first + rest, k * x, {"first": first, "rest": rest}

    return oracle


def test_descent_records_energy_parts_and_a_converged_query_keeps_its_last():
    """Step 1/2 on E = 0.5 |x|^2 halves x: x_t = x_0 / 2^t. With tol 0.2 query 0 (largest
    entry 0.1) stops after its first step, query 1 (largest entry 2) after step 4 (its move
    0.125); every later row repeats a stopped query's last parts."""
    x0 = torch.tensor([[0.1, 0.0, 0.05], [1.0, -2.0, 0.5]], dtype=torch.float64)
    traj = descend(quadratic_with_parts(), x0, steps=10, step_size=0.5, tol=0.2)
    assert traj.steps.tolist() == [1, 4] and traj.converged.all()
    rows = torch.arange(5, dtype=torch.float64)[:, None]
    states = x0[None] / 2 ** torch.minimum(rows, traj.steps[None].double())[..., None]
    expected = {"first": 0.5 * states[..., 0] ** 2, "rest": 0.5 * (states[..., 1:] ** 2).sum(-1)}
    assert set(traj.parts) == {"first", "rest"}
    for name, values in expected.items():
        assert traj.parts[name].shape == (5, 2)
        torch.testing.assert_close(traj.parts[name], values, rtol=1e-15, atol=0)
    torch.testing.assert_close(traj.energies, expected["first"] + expected["rest"])
    # an oracle without parts records none
    plain = descend(lambda x, t: quadratic_with_parts()(x, t)[:2], x0, steps=10, step_size=0.5)
    assert plain.parts is None


def test_differentiable_descent_records_differentiable_parts():
    """Every query takes every step: x_T = (1 - h k)^T x_0, so the parts at step t are
    0.5 k (1 - h k)^(2t) x_0^2, with their derivatives in k."""
    k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([[0.1, 0.0, 0.05], [1.0, -2.0, 0.5]], dtype=torch.float64)
    traj = descend(quadratic_with_parts(k), x0, steps=4, step_size=0.3, differentiable=True)
    shrink = (1 - 0.3 * k) ** (2 * torch.arange(5, dtype=torch.float64))[:, None]
    expected = {
        "first": 0.5 * k * shrink * x0[:, 0] ** 2,
        "rest": 0.5 * k * shrink * (x0[:, 1:] ** 2).sum(1),
    }
    for name, values in expected.items():
        torch.testing.assert_close(traj.parts[name], values)
        (got,) = torch.autograd.grad(traj.parts[name].sum(), k, retain_graph=True)
        (want,) = torch.autograd.grad(values.sum(), k, retain_graph=True)
        torch.testing.assert_close(got, want)


def test_descent_rejects_parts_that_change_names():
    def oracle(x, t):
        return x.sum(1), x, {"a" if t == 0 else "b": x.sum(1)}

    with pytest.raises(AmlabError, match="same parts at every call"):
        descend(oracle, torch.ones(2, 3), steps=2, step_size=0.1)


def test_retrieve_of_one_state_reports_its_parts_per_step():
    class WithParts(DenseAM):  # a model whose oracle reports its energy as one part
        def _retrieval(self, method, record_energies, step_size=None):
            plain, _, toward = super()._retrieval(method, record_energies, step_size)

            def oracle(x, t):
                energy, direction = plain(x, t)
                return energy, direction, {"whole": energy}

            return oracle, None, toward  # None: the final energy by the oracle, with parts

    am = WithParts(separated_memories(), beta=4.0)
    one = am.retrieve(separated_memories()[0] + 0.05, steps=5)
    assert one.parts["whole"].shape == one.energies.shape == (6,)
    torch.testing.assert_close(one.parts["whole"], one.energies, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lse", "lsr", "lse_dot"])
def test_save_load_round_trips_exactly(tmp_path, kind):
    mem = torch.randn(17, 5, dtype=torch.float64)
    am = DenseAM(mem, energy=kind, beta=0.1234567891234, eps=1e-7, chunk_size=4)
    am.save(tmp_path / "m")
    back = DenseAM.load(tmp_path / "m")
    assert torch.equal(back.memories, am.memories) and back.memories.dtype == torch.float64
    assert (back.energy_name, back.beta, back.eps, back.chunk_size) == (
        kind,
        am.beta,
        am.eps,
        am.chunk_size,
    )
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.equal(back.energy(x), am.energy(x))
    # saving again over the same directory replaces it and leaves no temporary files
    am.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "tensors.safetensors",
    ]


def test_load_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(AmlabError, match="missing"):
        DenseAM.load(tmp_path / "nothing")
    DenseAM(torch.ones(2, 2)).save(tmp_path / "m")
    (tmp_path / "m" / "tensors.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(AmlabError, match="safetensors"):
        DenseAM.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{oops")
    with pytest.raises(AmlabError, match="JSON"):
        DenseAM.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"kind": "Other"}')
    with pytest.raises(AmlabError, match="Other"):
        DenseAM.load(tmp_path / "m")


def count_passes(monkeypatch) -> list[str]:
    """Records each pass over the memories a DenseAM makes: "update" (fused attention),
    "lse+mean" (streaming, both sums), "lse" (streaming, energy only), "lsr" (support
    statistics) or "lsr energy" (Z alone)."""
    from amlab.models import dense_am

    passes: list[str] = []

    def spy(name, original):
        def wrapped(*args, **kwargs):
            passes.append(name(kwargs) if callable(name) else name)
            return original(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(
        dense_am,
        "lse_softmax_mean",
        spy(lambda k: "lse+mean" if k.get("with_mean", True) else "lse", dense_am.lse_softmax_mean),
    )
    monkeypatch.setattr(
        dense_am, "lse_attention_update", spy("update", dense_am.lse_attention_update)
    )
    monkeypatch.setattr(dense_am, "lsr_support_stats", spy("lsr", dense_am.lsr_support_stats))
    monkeypatch.setattr(dense_am, "lsr_energy", spy("lsr energy", dense_am.lsr_energy))
    return passes


def fused_on_the_cpu(monkeypatch, fused: bool) -> None:
    """Make DenseAM's updates without energy take the fused kernel on the CPU too, or not."""
    from amlab.models import dense_am

    monkeypatch.setattr(dense_am, "FUSED_UPDATE_DEVICES", ("cuda", "cpu") if fused else ("cuda",))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind", ["lse", "lse_dot", "lsr"])
def test_one_update_costs_one_pass_and_t_steps_t_passes_and_one_energy(kind, fused, monkeypatch):
    fused_on_the_cpu(monkeypatch, fused)
    mem = separated_memories(12, 6, seed=3)
    am = DenseAM(mem, energy=kind, beta=30.0 if kind == "lsr" else 4.0)
    method = "fixed_point" if kind == "lsr" else "attention"
    step, energy_only = ("lsr", "lsr energy") if kind == "lsr" else ("lse+mean", "lse")
    one = "lsr" if kind == "lsr" else ("update" if fused else "lse+mean")
    x = mem[:4] + 0.02 * torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    passes = count_passes(monkeypatch)
    am.update(x)
    assert passes == [one]
    passes.clear()
    am.retrieve(x, steps=1, method=method, record_energies=False)
    assert passes == [one]
    passes.clear()
    out = am.retrieve(x, steps=7, method="gd", tol=0.0)
    assert passes == [step] * 7 + [energy_only] and out.energies.shape == (8, 4)
    passes.clear()
    am(x)  # forward: the default retrieval, no energies
    assert energy_only not in passes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beta", [0.5, 30.0, 1e4])
@pytest.mark.parametrize("kind", ["lse", "lse_dot"])
@pytest.mark.parametrize("fused", [False, True])
def test_update_is_the_one_step_retrieval_with_and_without_clamping(
    fused, kind, beta, dtype, monkeypatch
):
    fused_on_the_cpu(monkeypatch, fused)
    g = torch.Generator().manual_seed(5)
    mem = torch.rand(50, 9, generator=g, dtype=dtype)
    x = torch.rand(7, 9, generator=g, dtype=dtype)
    am = DenseAM(mem, energy=kind, beta=beta, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    bias = None if kind == "lse_dot" else -0.5 * (mem.double() ** 2).sum(1)
    reference = torch.softmax(
        beta * (x.double() @ mem.double().T + (0 if bias is None else bias)), 1
    )
    reference = reference @ mem.double()
    one = am.retrieve(x, steps=1, method="attention").states  # the streaming pass
    torch.testing.assert_close(am.update(x).double(), reference, rtol=tol, atol=tol)
    torch.testing.assert_close(one.double(), reference, rtol=tol, atol=tol)
    clamp = torch.zeros(9, dtype=torch.bool)
    clamp[::3] = True
    for record in (True, False):  # the streaming pass, then the update without energy
        out = am.retrieve(x, steps=1, method="attention", clamp=clamp, record_energies=record)
        torch.testing.assert_close(out.states[:, clamp], x[:, clamp], rtol=0, atol=0)
        torch.testing.assert_close(
            out.states[:, ~clamp].double(), reference[:, ~clamp], rtol=tol, atol=tol
        )


@pytest.mark.parametrize("fused", [False, True])
def test_the_update_is_the_weighted_mean_itself_as_accurate_as_the_plain_formula(
    fused, monkeypatch
):
    """Far from the memories (|x| >> |x_new|) x - (x - mean) loses the digits of |x|; the
    update and the one-step retrieval must be as close to float64 as softmax(beta s) Xi is."""
    fused_on_the_cpu(monkeypatch, fused)
    g = torch.Generator().manual_seed(7)
    mem = torch.rand(400, 64, generator=g)
    x = 300.0 * torch.randn(32, 64, generator=g)  # |x| ~ 2400, |mean| ~ 4.6
    beta = 2e-3
    for kind in ("lse", "lse_dot"):
        am = DenseAM(mem, energy=kind, beta=beta)
        bias = 0.0 if kind == "lse_dot" else -0.5 * (mem.double() ** 2).sum(1)
        exact = torch.softmax(beta * (x.double() @ mem.double().T + bias), 1) @ mem.double()
        scores = x @ mem.T + (0.0 if kind == "lse_dot" else -0.5 * (mem**2).sum(1))
        plain_formula = torch.softmax(beta * scores, 1) @ mem

        def errors(y, exact=exact):  # relative error of each row, against float64
            return (y.double() - exact).norm(dim=1) / exact.norm(dim=1)

        plain_errors = errors(plain_formula)
        form = "dot" if kind == "lse_dot" else "distance"
        old_way = x - (x - lse_softmax_mean(x, mem, beta, bias=memory_bias(mem, form))[1])
        assert errors(old_way).mean() > 20 * plain_errors.mean()  # the test tells them apart
        for got in (am.update(x), am.retrieve(x, steps=1, method="attention").states):
            # the same rounding level: another order of operations, not a larger error
            assert errors(got).mean() <= 1.1 * plain_errors.mean(), kind
            assert errors(got).max() <= 1.3 * plain_errors.max(), kind


@pytest.mark.parametrize(
    "where,beta,kind",
    [
        ("uniform", 1.0, "lse"),  # weights spread over thousands of memories
        ("far", 1e-3, "lse"),  # |x| >> |xi|: nearly uniform weights
        ("far", 1e-3, "lse_dot"),
        ("near", 3.0, "lse"),  # a few close memories weigh most
        ("uniform", 8.0, "lse"),  # beyond the bound: the running-maximum pass
    ],
)
def test_many_chunks_add_no_error_the_plain_formula_does_not_have(where, beta, kind):
    """20,000 memories in 1,250 chunks of 16: the chunks' sums add up in float64, so the
    update's error against float64 stays about that of one chunk's matmul, below the error
    of the plain ``softmax(beta s) Xi`` (whose one float32 matmul sums 20,000 terms): its
    largest row error no larger, its mean under half (0.2 to 0.37 here, on 1 or 2 threads).
    Chunk sums added in float32 groups (before) gave 0.8 of the mean, and a larger largest
    error than the plain formula's far from the memories."""
    g = torch.Generator().manual_seed(17)
    mem = torch.rand(20_000, 32, generator=g)
    x = {
        "uniform": torch.rand(16, 32, generator=g),
        "far": 30.0 * torch.randn(16, 32, generator=g),
        "near": mem[:16] + 0.05 * torch.randn(16, 32, generator=g),
    }[where]
    bias = memory_bias(mem, "dot" if kind == "lse_dot" else "distance")
    offsets = 0.0 if bias is None else bias
    exact = torch.softmax(beta * (x.double() @ mem.double().T + offsets), 1) @ mem.double()

    def errors(y):  # relative error of each row, against float64
        return (y.double() - exact).norm(dim=1) / exact.norm(dim=1)

    plain_errors = errors(torch.softmax(beta * (x @ mem.T + offsets), 1) @ mem)
    am = DenseAM(mem, energy=kind, beta=beta, chunk_size=16)
    _, running_max = lse_softmax_mean(x, mem, beta, bias=bias, chunk_size=16, host_bound=False)
    got = {
        "update": am.update(x),
        "one step": am.retrieve(x, steps=1, method="attention").states,
        "running max": running_max,
    }
    for name, states in got.items():
        assert errors(states).max() <= plain_errors.max(), name
        assert errors(states).mean() <= 0.5 * plain_errors.mean(), name


@pytest.mark.parametrize(
    "step_size,beta,expected",
    [
        (1.0, 2.0, "_unshifted_pass"),  # a step <= 1 keeps the bound known from the start
        (0.1, 2.0, "_unshifted_pass"),
        (1.5, 2.0, "_running_max_pass"),  # a longer step can leave the start's ball
        (1.0, 400.0, "_running_max_pass"),  # the bound holds but is too wide for exp's range
    ],
)
def test_retrieval_takes_the_pass_its_bound_allows_and_matches_float64(
    step_size, beta, expected, monkeypatch
):
    from amlab.energy import lse

    taken = []
    for name in ("_unshifted_pass", "_running_max_pass"):
        original = getattr(lse, name)
        monkeypatch.setattr(lse, name, lambda *a, _n=name, _f=original: taken.append(_n) or _f(*a))
    g = torch.Generator().manual_seed(11)
    mem = torch.rand(40, 6, generator=g)
    x = torch.rand(5, 6, generator=g) * 3
    out = DenseAM(mem, beta=beta).retrieve(x, steps=4, method="gd", step_size=step_size, tol=0)
    assert set(taken) == {expected}
    exact = DenseAM(mem.double(), beta=beta)
    path = (
        DenseAM(mem, beta=beta)
        .retrieve(x, steps=4, method="gd", step_size=step_size, tol=0, record_states=True)
        .path
    )
    for row, states in zip(out.energies, path, strict=True):
        torch.testing.assert_close(
            row.double(), exact.energy(states.double()), rtol=1e-5, atol=1e-5
        )
