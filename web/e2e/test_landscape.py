"""View 1 in the browser: the LSR minima the page finds are amlab.analysis.lsr_minima's, the
descent it draws is amlab's descent, and the controls change both."""

from __future__ import annotations

import json

import numpy as np
import torch
from playwright.sync_api import expect

from amlab.analysis import lsr_minima
from amlab.models import DenseAM

SIZE = 380  # px of one plot (Panel.svelte)


def open_landscape(offline, base_url, memories, beta, query=(0.5, 0.5)):
    m = ";".join(f"{x},{y}" for x, y in memories)
    offline.page.goto(f"{base_url}#/landscape?m={m}&beta={beta}&q={query[0]},{query[1]}&eta=0.5")
    expect(offline.page.locator("[data-testid=landscape][data-ready=true]")).to_be_visible()
    return offline.page


def shown(page):
    """Memories and beta as the page holds them, and its minima counts."""
    root = page.locator("[data-testid=landscape]")
    text = {k: int(page.text_content(f"[data-testid=lsr-{k}]")) for k in ("stored", "emergent")}
    return (
        json.loads(root.get_attribute("data-memories")),
        float(root.get_attribute("data-beta")),
        text,
    )


def assert_minima_match_python(page):
    memories, beta, counts = shown(page)
    expected = lsr_minima(torch.tensor(memories, dtype=torch.float64), beta)
    assert (counts["stored"], counts["emergent"]) == (expected.num_stored, expected.num_emergent)
    markers = page.locator("[data-testid=lsr-emergent-marker]").count()
    assert markers == expected.num_emergent
    return expected


def test_lsr_minima_counts_equal_python_for_random_memories(offline, base_url):
    rng = np.random.default_rng(7)
    for beta in (15, 40, 90):
        memories = np.round(rng.uniform(0.1, 0.9, size=(10, 2)), 3).tolist()
        page = open_landscape(offline, base_url, memories, beta)
        expected = assert_minima_match_python(page)
        assert expected.num_emergent > 0 or beta == 90
    offline.screenshot("landscape-random")


def test_controls_add_memory_change_beta_drag_query(offline, base_url, set_range):
    memories = [[0.2, 0.25], [0.34, 0.31], [0.27, 0.45], [0.7, 0.72], [0.8, 0.62]]
    page = open_landscape(offline, base_url, memories, 25)
    assert_minima_match_python(page)

    # click on an empty spot of the LSR plot: a memory is added there
    plot = page.locator("[data-testid=lsr-plot]")
    box = plot.bounding_box()
    page.mouse.click(box["x"] + 0.45 * SIZE, box["y"] + (1 - 0.35) * SIZE)
    expect(page.locator("[data-testid=memory-count]")).to_have_text("6")
    now, _, _ = shown(page)
    assert now[-1] == [0.45, 0.35]
    assert_minima_match_python(page)

    # slide beta: the landscape and the minima follow, still equal to Python's
    for log_beta in (0.9, 1.6, 2.2):
        set_range(page, "beta", log_beta)
        expect(page.locator("[data-testid=beta-value]")).to_have_text(
            f"{round(10**log_beta * 100) / 100:g}"
        )
        assert_minima_match_python(page)
    set_range(page, "beta", 1.4)

    # drag the query: the path shown is amlab's descent from the new start, energy falling
    page.mouse.move(box["x"] + 0.5 * SIZE, box["y"] + 0.5 * SIZE)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.3 * SIZE, box["y"] + (1 - 0.4) * SIZE, steps=5)
    page.mouse.up()
    expect(page.locator("[data-testid=landscape]")).to_have_attribute("data-query", "0.3,0.4")
    start = [0.3, 0.4]
    # the route carries the state, so a view can be shared by its address
    page.wait_for_function("location.hash.includes('q=0.3%2C0.4')")
    memories, beta, _ = shown(page)
    mem = torch.tensor(memories, dtype=torch.float64)
    x0 = torch.tensor(start, dtype=torch.float64)
    runs = {
        "lse": DenseAM(mem, "lse", beta).retrieve(
            x0, method="gd", steps=500, step_size=0.5, tol=1e-7
        ),
        "lsr": DenseAM(mem, "lsr", beta).retrieve(x0, method="fixed_point", steps=100),
    }
    for kind, run in runs.items():
        energies = json.loads(page.get_attribute(f"[data-testid={kind}-path]", "data-energies"))
        assert len(energies) >= 2 and None not in energies, kind
        assert (np.diff(energies) <= 1e-12).all(), kind
        assert energies[-1] < energies[0], kind
        np.testing.assert_allclose(energies, run.energies.numpy(), rtol=1e-9, atol=1e-12)
    offline.screenshot("landscape-controls")


# Every formula of the drill-down against its card's content box (the card less its border and
# padding): the horizontal extent of the rendered boxes (.katex-html's children hold every glyph
# of a row or an environment) and, for a display formula, its wrapper's scroll size, which
# exceeds the wrapper's size when the formula only fits by scrolling sideways or is clipped.
FORMULA_FIT = """() => Array.from(document.querySelectorAll('.drill details')).flatMap((card) => {
    const style = getComputedStyle(card);
    const box = card.getBoundingClientRect();
    const left = box.left + parseFloat(style.borderLeftWidth) + parseFloat(style.paddingLeft);
    const right = box.right - parseFloat(style.borderRightWidth) - parseFloat(style.paddingRight);
    return Array.from(card.querySelectorAll('.katex')).map((k) => {
        const rect = (e) => e.getBoundingClientRect();
        const parts = Array.from(k.querySelectorAll('.katex-html > *'), rect);
        const wrapper = k.closest('.katex-display');
        return {
            tex: k.querySelector('annotation').textContent,
            fontPx: parseFloat(getComputedStyle(k).fontSize),
            left: Math.min(...parts.map((r) => r.left)) - left,
            right: right - Math.max(...parts.map((r) => r.right)),
            scrolled: wrapper ? wrapper.scrollWidth - wrapper.clientWidth : 0,
            clipped: wrapper ? wrapper.scrollHeight - wrapper.clientHeight : 0,
            wrapperRight: wrapper ? right - wrapper.getBoundingClientRect().right : 0,
        };
    });
})"""


def test_drill_down_formulas_fit_their_cards_at_1300px(offline, base_url):
    page = open_landscape(offline, base_url, [[0.2, 0.25], [0.34, 0.31], [0.7, 0.72]], 25)
    assert page.viewport_size["width"] == 1300
    for summary in page.locator(".drill details:not([open]) > summary").all():
        summary.click()
    assert page.locator(".drill details:not([open])").count() == 0
    page.evaluate("document.fonts.ready.then(() => true)")  # KaTeX's fonts set the widths
    formulas = page.evaluate(FORMULA_FIT)
    assert page.locator(".drill .katex-display").count() == 3
    # fitting by shrinking does not count: no formula is set smaller than the body text
    assert min(f["fontPx"] for f in formulas) >= 16
    offline.screenshot("landscape-drill-down")
    misfits = [
        {k: v if k == "tex" else round(v, 1) for k, v in f.items()}
        for f in formulas
        if min(f["left"], f["right"], f["wrapperRight"]) < -0.5 or f["scrolled"] or f["clipped"]
    ]
    assert misfits == [], f"formulas wider than their card (px to spare < 0) or cut: {misfits}"
