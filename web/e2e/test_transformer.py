"""The transformer view in the browser: the page's forward pass (TypeScript, network blocked)
gives the shipped Python models' probabilities, plain and ablated; malformed or too long
expressions are marked and never fed to the model."""

from __future__ import annotations

import time

import numpy as np
import torch
from playwright.sync_api import expect

from amlab.data.listops import Tokenizer
from amlab.explain.listops import load_shipped


def python_probs(name: str, expression: str, ablate=(), heads_off=()) -> np.ndarray:
    """The shipped float32 model's own forward (fused attention): a head is switched off by
    zeroing its columns of the block's projection."""
    model, _ = load_shipped(name)
    model.ablate = frozenset(ablate)
    width = model.config.dim // model.config.heads
    with torch.no_grad():
        for block, head in heads_off:
            model.blocks[block].proj.weight[:, head * width : (head + 1) * width] = 0
        tokens = Tokenizer(10).encode([expression])
        return torch.softmax(model(tokens)[0], -1).numpy()


def shown_probs(page, read, key: str) -> np.ndarray:
    expect(page.locator("[data-testid=probs]")).to_have_attribute("data-for", key)
    return read(page, "probs", "data-probs")


def test_the_page_computes_the_python_models_answer(offline, base_url, read):
    page = offline.page
    started = time.perf_counter()
    page.goto(f"{base_url}#/transformer")
    expect(page.locator("[data-testid=transformer][data-ready=true]")).to_be_visible(timeout=60_000)
    expect(page.locator("[data-testid=probs]")).to_be_visible()
    interactive = time.perf_counter() - started
    # each heatmap's hatching pattern has an id of its own (a page's ids are unique)
    ids = page.eval_on_selector_all("pattern", "ps => ps.map((p) => p.id)")
    assert len(ids) > 1 and len(set(ids)) == len(ids), ids
    fills = page.eval_on_selector_all(
        "rect[fill^='url(']", "rs => rs.map((r) => r.getAttribute('fill'))"
    )
    assert {f[len("url(#") : -1] for f in fills} <= set(ids)

    expression = "[SM 7 [MAX 1 6 ] 4 ]"
    page.fill("[data-testid=expression]", expression)
    got = shown_probs(page, read, f"joint|{expression}|11|")
    np.testing.assert_allclose(got, python_probs("joint", expression), rtol=1e-4, atol=1e-6)
    assert page.get_attribute("[data-testid=tree]", "data-value") == "7"

    # attention off in every block: the model's ablate={"attention"}
    page.click("[data-testid=attention-on]")
    got = shown_probs(page, read, f"joint|{expression}|01|")
    want = python_probs("joint", expression, ablate=("attention",))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(want, python_probs("joint", expression), atol=1e-3)
    np.testing.assert_allclose(
        read(page, "probs", "data-plain"), python_probs("joint", expression), rtol=1e-4, atol=1e-6
    )
    # attention back on, the MLP off, and head 3 of block 2 off
    page.click("[data-testid=attention-on]")
    page.click("[data-testid=mlp-on]")
    page.click("[data-testid=head-off-1-2]")
    got = shown_probs(page, read, f"joint|{expression}|10|1:2")
    want = python_probs("joint", expression, ablate=("mlp",), heads_off=[(1, 2)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    # the SUM-only model, one head of block 1 off
    page.click("[data-testid=mlp-on]")
    page.click("[data-testid=head-off-1-2]")
    page.select_option("[data-testid=model]", "sum")
    got = shown_probs(page, read, f"sum|{expression}|11|")
    np.testing.assert_allclose(got, python_probs("sum", expression), rtol=1e-4, atol=1e-6)
    page.click("[data-testid=head-off-0-1]")
    got = shown_probs(page, read, f"sum|{expression}|11|0:1")
    want = python_probs("sum", expression, heads_off=[(0, 1)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    # the head-as-memory panel: one update never raises the energy
    before = float(page.text_content("[data-testid=energy-before]"))
    after = float(page.text_content("[data-testid=energy-after]"))
    assert after <= before
    offline.screenshot("transformer")

    # time per forward pass: the page times each; draw held-out expressions to collect some
    for _ in range(20):
        page.click("[data-testid=random]")
    times = read(page, "forward-ms", "data-times")
    print(
        f"transformer view: first interactive {interactive:.2f} s; forward pass median "
        f"{np.median(times):.3f} ms over {len(times)} runs"
    )


def test_malformed_and_too_long_expressions_are_not_fed(offline, base_url):
    page = offline.page
    page.goto(f"{base_url}#/transformer")
    expect(page.locator("[data-testid=probs]")).to_be_visible(timeout=60_000)
    page.fill("[data-testid=expression]", "[MAX 3 x 4 ]")
    expect(page.locator("[data-testid=parse-error]")).to_contain_text(
        'at token 3: unknown token "x"'
    )
    expect(page.locator("[data-testid=probs]")).to_have_count(0)
    assert page.locator("[data-testid=tokens] .bad").all_text_contents() == ["x"]
    # 19 tokens: two past the model's 17
    long = "[SM 1 2 3 [MAX 4 5 6 ] [MED 7 8 9 ] 1 2 3 4 ]"
    page.fill("[data-testid=expression]", long)
    expect(page.locator("[data-testid=parse-error]")).to_contain_text("19 tokens")
    expect(page.locator("[data-testid=probs]")).to_have_count(0)
    assert page.locator("[data-testid=tokens] .bad").all_text_contents() == ["4", "]"]
    page.fill("[data-testid=expression]", "[MED 1 9 5 ]")
    expect(page.locator("[data-testid=probs]")).to_be_visible()
    expect(page.locator("[data-testid=parse-error]")).to_have_count(0)


def python_greedy(prompt: str) -> list[int]:
    """The shipped causal model's most likely continuation, one token at a time, until the
    token after '=' (or max_len)."""
    model, _ = load_shipped("causal")
    tokenizer = Tokenizer(10, equals=True)
    ids = tokenizer.encode([prompt])[0].tolist()
    out: list[int] = []
    with torch.no_grad():
        while len(ids) < model.config.max_len:
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
            if ids[-2] == tokenizer.ids["="] or nxt <= 1:
                break
    return out


def test_the_causal_model_predicts_and_samples_as_in_python(offline, base_url, read, set_range):
    page = offline.page
    page.goto(f"{base_url}#/transformer?model=causal")
    expect(page.locator("[data-testid=probs]")).to_be_visible(timeout=60_000)
    model, _ = load_shipped("causal")
    tokenizer = Tokenizer(10, equals=True)
    for prompt in ("[SM 7 [MAX 1 6 ] 4 ] =", "[MED 1 9"):
        page.fill("[data-testid=expression]", prompt)
        got = shown_probs(page, read, f"causal|{prompt}|11|")
        with torch.no_grad():
            want = torch.softmax(model(tokenizer.encode([prompt]))[0, -1], -1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    # top-k 1: greedy decoding, which Python repeats with the model's own forward
    prompt = "[MAX 2 [SM"
    page.fill("[data-testid=expression]", prompt)
    page.fill("[data-testid=top-k]", "1")
    page.click("[data-testid=sample]")
    greedy = read(page, "sampled", "data-ids").tolist()
    assert greedy == python_greedy(prompt)
    # the sampler is seeded: the same seed draws the same tokens, another seed others
    page.fill("[data-testid=top-k]", "0")
    set_range(page, "temperature", 1.5)
    drawn = {}
    for seed in ("3", "4", "3"):
        page.fill("[data-testid=seed]", seed)
        page.click("[data-testid=sample]")
        ids = read(page, "sampled", "data-ids").tolist()
        assert drawn.setdefault(seed, ids) == ids
    assert drawn["3"] != drawn["4"]
    offline.screenshot("transformer-causal")
