"""View 2 in the browser: digits as memories; each step the page takes is amlab's step, each
energy it shows is amlab's energy, for LSE, LSR and DrDAM."""

from __future__ import annotations

import json

import numpy as np
import torch
from playwright.sync_api import expect

from amlab.data import digits
from amlab.energy.random_features import draw_projections, feature_sum, rf_energy_grad
from amlab.explain.export import MAX_FEATURES, PROJECTION_SEED
from amlab.models import DenseAM

M = 1000  # the view's default number of stored digits


def memories() -> torch.Tensor:
    return digits(dtype=torch.float64).images[:M]


def state(page) -> torch.Tensor:
    return torch.tensor(
        json.loads(page.get_attribute("[data-testid=state]", "data-state")), dtype=torch.float64
    )


def energies(page) -> list[float]:
    return json.loads(page.get_attribute("[data-testid=energy-trace]", "data-energies"))


def step(page, times: int = 1) -> None:
    for _ in range(times):
        before = int(page.text_content("[data-testid=step-count]"))
        page.click("[data-testid=step]")
        expect(page.locator("[data-testid=step-count]")).to_have_text(str(before + 1))


def open_images(offline, base_url, model="lse"):
    offline.page.goto(f"{base_url}#/images?model={model}")
    expect(offline.page.locator("[data-testid=images][data-ready=true]")).to_be_visible()
    return offline.page


def test_lse_completion_steps_are_amlabs(offline, base_url, set_range):
    page = open_images(offline, base_url, "lse")
    mem = memories()
    page.click("[data-testid=digit-3]")
    set_range(page, "sigma", 0)
    page.click("[data-testid=hide-lower]")
    expect(page.locator("[data-testid=step-count]")).to_have_text("0")
    x0 = state(page)
    index = int(page.input_value("[data-testid=index]"))
    assert digits().labels[index] == 3
    visible = torch.arange(64) < 32
    assert torch.equal(x0[visible], mem[index][visible]) and bool((x0[~visible] == 0).all())

    am = DenseAM(mem, "lse", beta=3.0)
    step(page)
    expected = am.retrieve(x0, method="gd", steps=1, step_size=0.2, clamp=visible).states
    torch.testing.assert_close(state(page), expected, rtol=1e-9, atol=1e-12)

    page.click("[data-testid=play]")
    expect(page.locator("[data-testid=step]")).to_be_disabled(timeout=60_000)
    trace = energies(page)
    assert len(trace) > 5 and trace[-1] < trace[0]
    assert (np.diff(trace) <= 1e-12).all()
    final = state(page)
    assert torch.equal(final[visible], x0[visible])  # the visible half stayed clamped
    shown = float(page.text_content("[data-testid=energy]"))
    assert abs(shown - float(am.energy(final))) < 1e-6
    assert abs(trace[-1] - float(am.energy(final))) < 1e-9
    nearest, _ = am.nearest(final)
    assert page.text_content("[data-testid=nearest]").startswith(f"#{int(nearest)} ")
    offline.screenshot("images-lse")


def test_lsr_exact_solver_and_active_set(offline, base_url, set_range):
    page = open_images(offline, base_url, "lsr")
    mem = memories()
    page.click("[data-testid=digit-7]")
    set_range(page, "sigma", 0.3)
    x0 = state(page)
    am = DenseAM(mem, "lsr", beta=0.15)
    active = int(((mem - x0) ** 2).sum(1).lt(2 / 0.15).sum())
    assert int(page.text_content("[data-testid=active-count]")) == active > 0
    step(page, 2)
    expected = am.retrieve(x0, method="fixed_point", steps=2)
    torch.testing.assert_close(state(page), expected.states, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(energies(page), expected.energies.numpy(), rtol=1e-9)

    # fewer memories: the active set is counted over the first 200 only
    set_range(page, "count", 200)
    expect(page.locator("[data-testid=step-count]")).to_have_text("0")
    x0 = state(page)
    active = int(((mem[:200] - x0) ** 2).sum(1).lt(2 / 0.15).sum())
    assert int(page.text_content("[data-testid=active-count]")) == active
    offline.screenshot("images-lsr")


def test_drdam_feature_slider_and_energy(offline, base_url, set_range):
    page = open_images(offline, base_url, "drdam")
    mem = memories()
    set_range(page, "features", 8)
    expect(page.locator("[data-testid=features-value]")).to_have_text("256")
    page.click("[data-testid=digit-5]")
    x0 = state(page)
    S, b = draw_projections(64, MAX_FEATURES, PROJECTION_SEED)  # the exported float32 S
    S, b = S[:256].double(), b[:256].double()
    T = feature_sum(mem, S, b, 0.5, "sincos")
    e0, g0 = rf_energy_grad(x0[None], S, b, T, 0.5, "sincos")
    assert abs(energies(page)[0] - float(e0[0])) < 1e-9
    step(page)
    torch.testing.assert_close(state(page), x0 - 0.2 * g0[0], rtol=1e-9, atol=1e-12)
    exact = float(DenseAM(mem, "lse", beta=0.5).energy(state(page)))
    assert abs(float(page.text_content("[data-testid=exact-energy]")) - exact) < 1e-6

    # more features: the same state, a different (better) estimate; T is a rescaled prefix
    set_range(page, "features", 12)
    expect(page.locator("[data-testid=features-value]")).to_have_text("4096")
    x0 = state(page)
    S, b = draw_projections(64, MAX_FEATURES, PROJECTION_SEED)
    e_full, _ = rf_energy_grad(
        x0[None],
        S.double(),
        b.double(),
        feature_sum(mem, S.double(), b.double(), 0.5, "sincos"),
        0.5,
        "sincos",
    )
    assert abs(energies(page)[0] - float(e_full[0])) < 1e-9
    offline.screenshot("images-drdam")
