"""View 4 in the browser: the trained Energy Transformer run by ONNX Runtime Web (wasm served
by `amlab explain`, network blocked) completes the digit exactly as MaskedImageET does."""

from __future__ import annotations

import json

import numpy as np
import torch
from playwright.sync_api import expect

from amlab.data import digits
from amlab.explain import STATIC_DIR
from amlab.explain.et_onnx import SHIPPED_ET
from amlab.models.masked_image_et import MaskedImageET


def test_et_completion_is_the_python_models(offline, base_url, read):
    page = offline.page
    page.goto(f"{base_url}#/et")
    expect(page.locator("[data-testid=et][data-ready=true]")).to_be_visible(timeout=60_000)
    # no index in the route: the page opens on the first digit the model never saw in training
    held_out = json.loads((STATIC_DIR / "data" / "manifest.json").read_text())["et"]["held_out"]
    assert int(page.text_content("[data-testid=index]")) == held_out[0]
    page.click("[data-testid=digit-2]")
    page.click("[data-testid=hide-none]")
    # hide the right half's top two rows of patches and one more, by clicking the patches
    box = page.locator("[data-testid=input-canvas]").bounding_box()
    cell = box["width"] / 4
    for row, col in ((0, 2), (0, 3), (1, 2), (1, 3), (2, 1)):
        page.mouse.click(box["x"] + (col + 0.5) * cell, box["y"] + (row + 0.5) * cell)
    hidden = [4 * r + c for r, c in ((0, 2), (0, 3), (1, 2), (1, 3), (2, 1))]
    expect(page.locator("[data-testid=hidden]")).to_have_text("5")
    masked = torch.zeros(1, 16, dtype=torch.bool)
    masked[0, hidden] = True
    assert read(page, "hidden", "data-patches").tolist() == masked[0].int().tolist()
    index = int(page.text_content("[data-testid=index]"))
    assert digits().labels[index] == 2

    # the page runs the whole dynamics on each change; wait for this mask's run
    model = MaskedImageET.load(SHIPPED_ET)
    image = digits().images[index : index + 1].float()
    with torch.no_grad():
        expected = model.complete(image, masked)
    shown_for = f"{index}:{json.dumps(masked[0].int().tolist(), separators=(',', ':'))}"
    expect(page.locator("[data-testid=completed]")).to_have_attribute("data-for", shown_for)
    expect(page.locator("[data-testid=t]")).to_have_text("12")
    completed = read(page, "completed", "data-image")
    np.testing.assert_allclose(completed, expected.images[0].numpy(), rtol=1e-4, atol=1e-5)
    attention = read(page, "energy-chart", "data-attention")
    hopfield = read(page, "energy-chart", "data-hopfield")
    parts = expected.trajectory.parts
    np.testing.assert_allclose(attention, parts["attention"][:, 0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(hopfield, parts["hopfield"][:, 0].numpy(), rtol=1e-5)
    total = attention + hopfield
    assert len(total) == 13 and (np.diff(total) < 0).all()  # the energy never rises
    # visible pixels are the original's, hidden ones were filled in
    pixels = model.pixel_mask(masked)[0].numpy()
    assert np.array_equal(completed[~pixels], image[0].numpy()[~pixels])

    # play replays the steps from 0; the slider shows step t's energy
    page.click("[data-testid=play]")
    expect(page.locator("[data-testid=t]")).to_have_text("12", timeout=20_000)
    page.locator("[data-testid=step-slider]").fill("3")
    expect(page.locator("[data-testid=t]")).to_have_text("3")
    assert abs(float(page.text_content("[data-testid=energy]")) - float(total[3])) < 1e-3
    times = read(page, "forward-ms", "data-times")
    print(f"ET forward in the page (all 12 steps): {times.tolist()} ms")
    offline.screenshot("et")
