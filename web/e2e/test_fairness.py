"""The fairness view in the browser: the page's scores (TypeScript, network blocked) are the
shipped Python classifiers', a swap changes each displayed score by the Python model's
difference, and the threshold slider's per-term FPR/FNR and a user-built group's metrics are
amlab.analysis.fairness's at that threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from playwright.sync_api import expect

from amlab.analysis.fairness import Bootstrap, Pairs, counterfactual_metrics, group_metrics
from amlab.data.fairness import balanced_test_set, counterfactuals, identity_terms
from amlab.explain.fairness import SHIPPED_FAIRNESS, load_shipped_classifier
from amlab.tasks.fairness import score_texts, subgroups_of

MODELS = list(SHIPPED_FAIRNESS)


@pytest.fixture(scope="module")
def python():
    """The shipped models and their scores of the balanced test set, computed by Python."""
    test = balanced_test_set()
    models = {name: load_shipped_classifier(name)[0] for name in MODELS}
    return test, models, {name: score_texts(m, test.texts) for name, m in models.items()}


def open_view(offline, base_url):
    page = offline.page
    page.goto(f"{base_url}#/fairness")
    expect(page.locator("[data-testid=fairness][data-ready=true]")).to_be_visible(timeout=60_000)
    expect(page.locator("[data-testid=group-table]")).to_be_visible()
    return page


def test_a_swap_changes_each_score_by_the_python_models_difference(offline, base_url, python):
    _, models, _ = python
    page = open_view(offline, base_url)
    sentence = "my Muslim colleague is a brilliant teacher"
    page.fill("[data-testid=sentence]", sentence)
    scores = json.loads(page.get_attribute("[data-testid=scores]", "data-scores"))
    want = [float(score_texts(models[n], [sentence])[0]) for n in MODELS]
    np.testing.assert_allclose(scores, want, rtol=0, atol=2e-6)
    for k, w in enumerate(want):
        assert page.inner_text(f"[data-testid=score-{k}]") == f"{w:.4f}"

    page.click("[data-testid=term-muslim]")
    page.click("[data-testid=swap-to-christian]")
    result = page.locator("[data-testid=swap-result]")
    swapped = "my christian colleague is a brilliant teacher"
    expect(result).to_have_attribute("data-text", swapped)
    delta = json.loads(result.get_attribute("data-delta"))
    python_delta = [
        float(np.diff(score_texts(models[n], [sentence, swapped]).astype(np.float64))[0])
        for n in MODELS
    ]
    np.testing.assert_allclose(delta, python_delta, rtol=0, atol=3e-6)
    # the planted bias: the baselines find "muslim" more toxic than "christian"; cda does not
    assert python_delta[0] < 0 and python_delta[2] < 0 and abs(python_delta[1]) < 1e-4

    page.click("[data-testid=keep-swap]")
    expect(page.locator("[data-testid=sentence]")).to_have_value(swapped)
    offline.screenshot("fairness-swap")


def shown_rates(page, name: str, threshold: float):
    figure = page.locator(f"[data-testid='rates-{name}']")
    expect(figure).to_have_attribute("data-threshold", str(threshold))
    terms = json.loads(figure.get_attribute("data-terms"))
    fpr = json.loads(figure.get_attribute("data-fpr"))
    fnr = json.loads(figure.get_attribute("data-fnr"))
    return terms, np.array(fpr, dtype=float), np.array(fnr, dtype=float)


@pytest.mark.parametrize("threshold", [0.37, 0.62])
def test_the_threshold_slider_gives_pythons_fpr_and_fnr(
    offline, base_url, python, set_range, threshold
):
    test, _, scores = python
    groups = identity_terms()
    page = open_view(offline, base_url)
    page.select_option("[data-testid=family]", "religion")
    set_range(page, "threshold", threshold)
    expect(page.locator("[data-testid=threshold-value]")).to_have_text(f"{threshold:.2f}")
    subgroups = subgroups_of(test, groups)
    for name in MODELS:
        # no score so near the threshold that float32 rounding could decide its side
        assert np.abs(scores[name] - threshold).min() > 1e-5
        want = group_metrics(
            test.labels, scores[name], subgroups, Bootstrap(len(test), 1), threshold
        )
        terms, fpr, fnr = shown_rates(page, name, threshold)
        assert terms == list(groups["religion"])
        np.testing.assert_allclose(fpr, [want["subgroups"][t]["fpr"]["value"] for t in terms])
        np.testing.assert_allclose(fnr, [want["subgroups"][t]["fnr"]["value"] for t in terms])
    offline.screenshot(f"fairness-threshold-{threshold}")


def test_a_group_built_by_drag_and_keyboard_gives_pythons_metrics(
    offline, base_url, python, set_range
):
    test, _, scores = python
    page = open_view(offline, base_url)
    page.drag_and_drop("[data-testid=palette-gay]", "[data-testid=group-drop]")
    expect(page.locator("[data-testid=group-gay]")).to_be_visible()
    page.focus("[data-testid=palette-straight]")
    page.keyboard.press("Enter")
    page.focus("[data-testid=palette-queer]")
    page.keyboard.press("Space")
    page.fill("[data-testid=group-input]", "zorblax")
    page.press("[data-testid=group-input]", "Enter")
    expect(page.locator("[data-testid=group-unknown]")).to_contain_text("zorblax")
    page.click("[data-testid=group-use]")
    expect(page.locator("[data-testid=family]")).to_have_value("your group")
    set_range(page, "threshold", 0.45)
    mine = {"yours": ("gay", "straight", "queer")}
    subgroups = subgroups_of(test, mine)
    swaps = counterfactuals(test.texts, mine)
    index = {t: i for i, t in enumerate(test.texts)}
    gaps = []
    for k, name in enumerate(MODELS):
        point = Bootstrap(len(test), 1)
        want = group_metrics(test.labels, scores[name], subgroups, point, 0.45)
        terms, fpr, fnr = shown_rates(page, name, 0.45)
        assert terms == ["gay", "straight", "queer"]
        np.testing.assert_allclose(fpr, [want["subgroups"][t]["fpr"]["value"] for t in terms])
        np.testing.assert_allclose(fnr, [want["subgroups"][t]["fnr"]["value"] for t in terms])
        pairs = Pairs.from_swaps(swaps, scores[name], scores[name][[index[s.text] for s in swaps]])
        individual = counterfactual_metrics(pairs, point, 0.45)["all"]
        row = page.locator("[data-testid=individual-table] tbody tr").nth(k)
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == name
        assert cells[3] == f"{individual['gap']['value']:.4f}"
        assert cells[4] == f"{100 * individual['flip_rate']['value']:.1f}%"
        gaps.append(individual["gap"]["value"])
    assert gaps[0] > 0.05 and gaps[1] < 1e-4  # the baseline bow's gap, gone with cda
    offline.screenshot("fairness-group")


def test_bad_input_is_named_not_fed(offline, base_url):
    page = open_view(offline, base_url)
    page.fill("[data-testid=sentence]", "")
    expect(page.locator("[data-testid=empty]")).to_be_visible()
    page.fill("[data-testid=sentence]", "the flibbertigibbet Gay people, and qwxz!")
    expect(page.locator("[data-testid=unknown]")).to_contain_text("flibbertigibbet, qwxz")
    expect(page.locator("[data-testid=term-gay]")).to_be_visible()
    page.fill("[data-testid=sentence]", " ".join(["people"] * 30))
    expect(page.locator("[data-testid=score-error-2]")).to_contain_text("at most 23")
    expect(page.locator("[data-testid=score-0]")).to_be_visible()  # the bag of words reads it


def test_a_shared_group_is_read_as_typed_words(offline, base_url):
    """A route's group (a link, or one edited by hand) with a term twice or in capitals is
    the group of its distinct words, as typing them gives; the page raises no error."""
    page = offline.page
    page.goto(f"{base_url}#/fairness?group=gay,GAY,straight,gay&family=your%20group")
    expect(page.locator("[data-testid=fairness][data-ready=true]")).to_be_visible(timeout=60_000)
    expect(page.locator("[data-testid=family]")).to_have_value("your group")
    figure = page.locator(f"[data-testid='rates-{MODELS[0]}']")
    expect(figure).to_have_attribute(
        "data-terms", json.dumps(["gay", "straight"], separators=(",", ":"))
    )
    expect(page.locator("[data-testid=group-drop] [role=listitem]")).to_have_count(2)
    assert "group=gay%2Cstraight" in page.url
