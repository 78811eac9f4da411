"""View 3 in the browser: two class prompts sampled from the same noise by the trained denoiser
(ONNX Runtime Web, wasm served by `amlab explain`, network blocked) and by the empirical
memory of the stored digits (TypeScript), checked against amlab.diffusion: the empirical run
is the Heun sampler with EmpiricalDenoiser, the learned one's steps are ConvDenoiser's, and
the energies shown are E_t of the class memory. Text prompts ("a thick slanted 7") run the
shipped TextConvDenoiser: the page's image is the one Python draws for that prompt and seed,
its memory the digits of that caption, an unknown word is named, the address sets them."""

from __future__ import annotations

import numpy as np
import torch
from playwright.sync_api import expect

from amlab.data import digits
from amlab.data.captions import CaptionScheme, request, tokenize
from amlab.diffusion import ConvDenoiser, EmpiricalDenoiser, TextConvDenoiser, sample
from amlab.diffusion.rng import normals
from amlab.explain.diffusion_onnx import SAMPLER, SHIPPED_DENOISER, SHIPPED_TEXT_DENOISER
from amlab.io import read_json

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
    wait_for_run(page, f"2:7:5:3:{STEPS}")
    start = torch.tensor(read(page, "run", "data-start"))
    times = read(page, "run", "data-times")
    model = ConvDenoiser.load(SHIPPED_DENOISER)
    schedule = model.schedule
    np.testing.assert_allclose(times, schedule.times(STEPS).numpy(), rtol=1e-12, atol=1e-15)
    # the start is the prior's scale times the seed's standard normals (amlab.diffusion.rng)
    scale = schedule.prior_scale()
    assert start.shape == (64,) and abs(float(start.std()) / scale - 1) < 0.3
    np.testing.assert_allclose(start, normals(64, 5) * scale, rtol=1e-12, atol=1e-12)

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
    wait_for_run(page, f"2:7:6:0:{STEPS}")
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
    wait_for_run(page, f"1:4:3:1.5:{STEPS}")
    expect(page.locator("[data-testid=k]")).to_have_text("7")
    expect(page.locator("[data-testid=prompt-a-1]")).to_have_class("on")
    expect(page.locator("[data-testid=prompt-b-4]")).to_have_class("on")
    page.click("[data-testid=prompt-a-0]")
    wait_for_run(page, f"0:4:3:1.5:{STEPS}")
    assert "a=0&b=4&seed=3&guidance=1.5&steps=40&k=7" in page.url  # w= read, written guidance=


# -- text prompts ------------------------------------------------------------------------------
def caption_memory(prompt: str) -> tuple[torch.Tensor, bool]:
    """The stored digits (float64) whose caption (under the text model's terciles) asks for
    what the prompt asks, and True; where there are none, the digits of its class and False."""
    edges = read_json(SHIPPED_TEXT_DENOISER / "captions.json", "")["edges"]
    data = digits(dtype=torch.float64)
    scheme = CaptionScheme({k: tuple(v) for k, v in edges.items()})
    captions = scheme.captions(data.images.float(), data.shape, data.labels)
    asked = request(prompt)
    keep = [i for i, c in enumerate(captions) if request(c) == asked]
    if keep:
        return data.images[keep], True
    return data.images[data.labels == asked.digit], False


def check_text_run(
    page, read, prompts, seed: int, guidance: float, steps: int, method: str = "heun"
) -> None:
    """The page's learned runs are TextConvDenoiser's guided runs (Heun or Euler) from the
    page's start, which is the seed's noise (amlab.diffusion.rng, the twin of the page's
    generator); its empirical runs those of the captioned digits' memory."""
    model = TextConvDenoiser.load(SHIPPED_TEXT_DENOISER)
    schedule = model.schedule
    start = read(page, "run", "data-start")
    expected = normals(64, seed).numpy() * schedule.prior_scale()
    np.testing.assert_allclose(start, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(read(page, "run", "data-times"), schedule.times(steps).numpy())
    x0 = torch.tensor(start, dtype=torch.float32)[None]
    for key, prompt in zip("ab", prompts, strict=True):
        tokens = tokenize([prompt], model.vocabulary)
        score = model.score_fn(tokens, guidance)
        run = sample(score, schedule, x0, steps=steps, method=method, record=True)
        with torch.no_grad():
            image = model.denoise(run.states, schedule.t_end, tokens, guidance)[0].numpy()
        states = read(page, f"traj-{key}-learned", "data-states")
        denoised = read(page, f"traj-{key}-learned", "data-denoised")
        np.testing.assert_allclose(states, run.path[:, 0].numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(denoised[-1], image, rtol=1e-4, atol=1e-4)
        stored, exact_caption = caption_memory(prompt)
        memory = EmpiricalDenoiser(stored, schedule)
        exact = sample(
            memory.score_fn(), schedule, x0.double(), steps=steps, method=method, record=True
        )
        np.testing.assert_allclose(
            read(page, f"traj-{key}-empirical", "data-states"),
            exact.path[:, 0].numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
        shown = page.locator(f"[data-testid=memory-{key}]")
        if exact_caption:
            expect(shown).to_contain_text(f'the {len(stored)} stored digits captioned "{prompt}"')
        else:
            expect(shown).to_contain_text(
                f'no stored digit is captioned "{prompt}": the {len(stored)}'
            )


def test_diffusion_text_prompts_are_the_python_text_model(offline, base_url, set_range, read):
    page = offline.page
    page.goto(f"{base_url}#/diffusion")
    expect(page.locator("[data-testid=diffusion][data-ready=true]")).to_be_visible(timeout=60_000)
    page.click("[data-testid=mode-text]")
    prompts = ("a thick slanted 7", "a thin upright 7")
    page.fill("[data-testid=prompt-text-a]", "A  Thick slanted 7")  # read as Python reads it
    page.fill("[data-testid=prompt-text-b]", prompts[1])
    page.fill("[data-testid=seed]", "4")
    set_range(page, "guidance", 3)
    page.click("[data-testid=run-prompts]")
    wait_for_run(page, f"{prompts[0]}|{prompts[1]}:4:3:{STEPS}")
    check_text_run(page, read, prompts, 4, 3.0, STEPS)
    assert "prompt=A++Thick+slanted+7&prompt_b=a+thin+upright+7&seed=4&guidance=3" in page.url
    offline.screenshot("diffusion-text")

    # an unknown word is named, and nothing runs: the shown run stays the last one
    page.fill("[data-testid=prompt-text-b]", "a purple 7 dragon")
    page.keyboard.press("Enter")
    error = page.locator("[data-testid=prompt-error-b]")
    expect(error).to_contain_text('does not know "purple", "dragon"')
    expect(page.locator("[data-testid=prompt-error-a]")).to_have_count(0)
    page.fill("[data-testid=seed]", "5")
    page.wait_for_timeout(500)
    expect(page.locator("[data-testid=run]")).to_have_attribute(
        "data-for", f"{prompts[0]}|{prompts[1]}:4:3:{STEPS}"
    )
    # a prompt asking for two digits is refused as amlab.data.captions.request refuses it
    page.fill("[data-testid=prompt-text-b]", "a 3 7")
    page.click("[data-testid=run-prompts]")
    expect(error).to_contain_text("more than one digit (3, 7)")
    page.fill("[data-testid=prompt-text-b]", "a 3")
    page.click("[data-testid=run-prompts]")
    wait_for_run(page, f"{prompts[0]}|a 3:5:3:{STEPS}")
    expect(error).to_have_count(0)

    # back to classes: the class model runs again
    page.click("[data-testid=mode-class]")
    wait_for_run(page, f"3:8:5:3:{STEPS}")


def test_diffusion_text_prompt_lives_in_the_address(offline, base_url, read):
    page = offline.page
    page.goto(f"{base_url}#/diffusion?prompt=a%20thin%20large%203&seed=9&guidance=1.5&steps=12")
    expect(page.locator("[data-testid=diffusion][data-ready=true]")).to_be_visible(timeout=60_000)
    wait_for_run(page, "a thin large 3|a thin upright 7:9:1.5:12")
    expect(page.locator("[data-testid=prompt-text-a]")).to_have_value("a thin large 3")
    expect(page.locator("[data-testid=steps]")).to_have_value("12")
    check_text_run(page, read, ("a thin large 3", "a thin upright 7"), 9, 1.5, 12)
    page.click("[data-testid=play]")
    expect(page.locator("[data-testid=k]")).to_have_text("12", timeout=30_000)
    assert "prompt=a+thin+large+3&prompt_b=a+thin+upright+7&seed=9&guidance=1.5&steps=12" in (
        page.url
    )


def test_diffusion_sampler_lives_in_the_address(offline, base_url, read):
    """sampler=euler runs the probability-flow ODE by Euler (Python's Euler from the same
    start); the select switches back to Heun and the address follows. A sampler the view
    lacks, or more steps than it runs, runs the model's own."""
    page = offline.page
    page.goto(f"{base_url}#/diffusion?prompt=a%20thick%201&seed=6&guidance=2&steps=9&sampler=euler")
    expect(page.locator("[data-testid=diffusion][data-ready=true]")).to_be_visible(timeout=60_000)
    run = page.locator("[data-testid=run]")
    wait_for_run(page, "a thick 1|a thin upright 7:6:2:9")
    expect(run).to_have_attribute("data-sampler", "euler")
    expect(page.locator("[data-testid=sampler]")).to_have_value("euler")
    check_text_run(page, read, ("a thick 1", "a thin upright 7"), 6, 2.0, 9, method="euler")
    assert "steps=9&k=0&sampler=euler" in page.url
    page.select_option("[data-testid=sampler]", "heun")
    expect(run).to_have_attribute("data-sampler", "heun", timeout=60_000)
    check_text_run(page, read, ("a thick 1", "a thin upright 7"), 6, 2.0, 9)
    assert "sampler=heun" in page.url
    # a sampler the view lacks is not run: the model's own (Heun) is. (Each address is opened
    # from another view: the open view would write its own state over a new address.)
    page.goto(f"{base_url}#/")
    page.goto(f"{base_url}#/diffusion?prompt=a%20thick%201&seed=6&steps=9&sampler=euler_maruyama")
    expect(page.locator("[data-testid=diffusion][data-ready=true]")).to_be_visible(timeout=60_000)
    wait_for_run(page, "a thick 1|a thin upright 7:6:2:9")
    expect(run).to_have_attribute("data-sampler", "heun")
    # nor are more steps than the view runs (200): the model's own are
    page.goto(f"{base_url}#/")
    page.goto(f"{base_url}#/diffusion?prompt=a%20thick%201&seed=6&steps=500&sampler=bogus")
    expect(page.locator("[data-testid=diffusion][data-ready=true]")).to_be_visible(timeout=60_000)
    wait_for_run(page, f"a thick 1|a thin upright 7:6:2:{STEPS}")
    expect(run).to_have_attribute("data-sampler", "heun")
    expect(page.locator("[data-testid=steps]")).to_have_value(str(STEPS))
    assert f"steps={STEPS}&k=0&sampler=heun" in page.url
