"""View 3 in the browser: two class prompts sampled from the same noise by the trained denoiser
(ONNX Runtime Web, wasm served by `amlab explain`, network blocked) and by the empirical
memory of the stored digits (TypeScript), checked against amlab.diffusion: the empirical run
is the Heun sampler with EmpiricalDenoiser, the learned one's steps are ConvDenoiser's, and
the energies shown are E_t of the class memory."""

from __future__ import annotations

import numpy as np
import torch
from playwright.sync_api import expect

from amlab.data import digits
from amlab.diffusion import ConvDenoiser, EmpiricalDenoiser, sample
from amlab.explain.diffusion_onnx import SAMPLER, SHIPPED_DENOISER

STEPS = SAMPLER["steps"]


def wait_for_run(page, key: str) -> None:
    expect(page.locator("[data-testid=run]")).to_have_attribute("data-for", key, timeout=60_000)


def test_diffusion_runs_are_the_python_samplers(offline, base_url, set_range, read):
    page = offline.page
    page.goto(f"{base_url}#/diffusion")
    expect(page.locator("[data-testid=diffusion][data-ready=true]")).to_be_visible(timeout=60_000)
    # prompts 2 and 7, seed 5, guidance 3
    page.click("[data-testid=prompt-a-2]")
    page.click("[data-testid=prompt-b-7]")
    page.fill("[data-testid=seed]", "5")
    set_range(page, "guidance", 3)
    expect(page.locator("[data-testid=guidance-value]")).to_have_text("3")
    wait_for_run(page, "2:7:5:3")
    start = torch.tensor(read(page, "run", "data-start"))
    times = read(page, "run", "data-times")
    model = ConvDenoiser.load(SHIPPED_DENOISER)
    schedule = model.schedule
    np.testing.assert_allclose(times, schedule.times(STEPS).numpy(), rtol=1e-12, atol=1e-15)
    # the start is the prior's scale times standard normals
    scale = float(np.hypot(schedule.alpha(1.0), schedule.sigma(1.0)))
    assert start.shape == (64,) and abs(float(start.std()) / scale - 1) < 0.3

    data = digits(dtype=torch.float64)
    for prompt, label in (("a", 2), ("b", 7)):
        # the empirical run: Python's Heun sampler with the class's EmpiricalDenoiser
        memory = EmpiricalDenoiser(data.images[data.labels == label], schedule)
        run = sample(
            memory.score_fn(), schedule, start[None], steps=STEPS, method="heun", record=True
        )
        states = read(page, f"traj-{prompt}-empirical", "data-states")
        denoised = read(page, f"traj-{prompt}-empirical", "data-denoised")
        np.testing.assert_allclose(states, run.path[:, 0].numpy(), rtol=1e-5, atol=1e-6)
        final = memory.denoise(run.states, schedule.t_end)[0].numpy()
        np.testing.assert_allclose(denoised[-1], final, rtol=1e-5, atol=1e-6)
        # the memory's sample is one of its stored digits
        stored = data.images[data.labels == label]
        assert float((stored - torch.tensor(final)).abs().sum(1).min()) < 1e-3
        # the energies shown: E_t of the class memory along the empirical path
        energy = read(page, f"traj-{prompt}-empirical", "data-energy")
        expected = [
            memory.energy(run.path[j], float(t))[0].item() for j, t in enumerate(times.tolist())
        ]
        np.testing.assert_allclose(energy, expected, rtol=1e-6, atol=1e-9)
        # the learned run: at several steps, the page's D_w(x_k) is ConvDenoiser's
        learned = read(page, f"traj-{prompt}-learned", "data-states")
        learned_d = read(page, f"traj-{prompt}-learned", "data-denoised")
        np.testing.assert_allclose(learned[0], start.numpy())
        for step in (0, 10, 25, STEPS):
            x = torch.tensor(learned[step], dtype=torch.float32)[None]
            with torch.no_grad():
                d = model.denoise(x, float(times[step]), torch.tensor([label]), 3.0)[0]
            np.testing.assert_allclose(learned_d[step], d.numpy(), rtol=1e-4, atol=2e-5)
        # and one learned step is Heun's with those denoiser outputs
        k = 10
        x, t, t1 = torch.tensor(learned[k]), float(times[k]), float(times[k + 1])
        v = schedule.diffusion_sq(t) / 2 * (x - torch.tensor(learned_d[k])) / schedule.sigma(t) ** 2
        moved = (x + v * (t1 - t)).float()[None]
        with torch.no_grad():
            d1 = model.denoise(moved, t1, torch.tensor([label]), 3.0)[0].double()
        v1 = schedule.diffusion_sq(t1) / 2 * (moved[0].double() - d1) / schedule.sigma(t1) ** 2
        np.testing.assert_allclose(
            learned[k + 1], (x + 0.5 * (v + v1) * (t1 - t)).numpy(), rtol=1e-4, atol=1e-4
        )

    # the step controls: step forward, back, then play to the end
    set_range(page, "step-slider", 12)
    expect(page.locator("[data-testid=k]")).to_have_text("12")
    page.click("[data-testid=step]")
    expect(page.locator("[data-testid=k]")).to_have_text("13")
    level = float(page.text_content("[data-testid=level]"))
    assert abs(level - schedule.noise_level(float(times[13]))) < 1e-3
    shown = float(page.text_content("[data-testid=energy-a]"))
    assert abs(shown - read(page, "traj-a-empirical", "data-energy")[13]) < 1e-3
    page.click("[data-testid=back]")
    expect(page.locator("[data-testid=k]")).to_have_text("12")
    page.click("[data-testid=play]")
    expect(page.locator("[data-testid=k]")).to_have_text(str(STEPS), timeout=30_000)
    assert float(page.text_content("[data-testid=nearest-a-empirical]")) < 1e-3
    print(
        "time per sampler step in the page (both prompts): learned "
        f"{page.text_content('[data-testid=ms-learned]')} ms, empirical "
        f"{page.text_content('[data-testid=ms-empirical]')} ms"
    )
    offline.screenshot("diffusion")

    # a new seed and guidance 0 (the unconditional model): both runs are redone
    page.fill("[data-testid=seed]", "6")
    set_range(page, "guidance", 0)
    wait_for_run(page, "2:7:6:0")
    learned = read(page, "traj-b-learned", "data-states")
    learned_d = read(page, "traj-b-learned", "data-denoised")
    x = torch.tensor(learned[20], dtype=torch.float32)[None]
    with torch.no_grad():
        d = model.denoise(x, float(times[20]), torch.tensor([-1]), 1.0)[0]
    np.testing.assert_allclose(learned_d[20], d.numpy(), rtol=1e-4, atol=2e-5)


def test_diffusion_state_lives_in_the_address(offline, base_url):
    page = offline.page
    page.goto(f"{base_url}#/diffusion?a=1&b=4&seed=3&w=1.5&k=7")
    expect(page.locator("[data-testid=diffusion][data-ready=true]")).to_be_visible(timeout=60_000)
    wait_for_run(page, "1:4:3:1.5")
    expect(page.locator("[data-testid=k]")).to_have_text("7")
    expect(page.locator("[data-testid=prompt-a-1]")).to_have_class("on")
    expect(page.locator("[data-testid=prompt-b-4]")).to_have_class("on")
    page.click("[data-testid=prompt-a-0]")
    wait_for_run(page, "0:4:3:1.5")
    assert "a=0&b=4&seed=3&w=1.5&k=7" in page.url
