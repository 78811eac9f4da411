"""Attributes of digit images on constructed images (closed forms and numpy brute force),
captions from them, and the prompt vocabulary."""

import numpy as np
import pytest
import torch

from amlab.data import load
from amlab.data.attributes import measure, size, slant, thickness
from amlab.data.captions import PAD, VOCABULARY, CaptionScheme, request, tokenize
from amlab.errors import AmlabError

SHAPE = (16, 16)


def bar(width: int, length: int = 10) -> torch.Tensor:
    """A horizontal bar of ``width`` rows and ``length`` columns, flattened (1, 256)."""
    x = torch.zeros(SHAPE)
    x[4 : 4 + width, 3 : 3 + length] = 1.0
    return x.reshape(1, -1)


def sheared(shear: int) -> torch.Tensor:
    """A 2-pixel-wide vertical stroke whose rows move ``shear`` columns right per row risen."""
    x = torch.zeros(SHAPE)
    for row in range(2, 14):
        col = 6 + shear * (8 - row) // 2
        x[row, col : col + 2] = 1.0
    return x.reshape(1, -1)


def test_thickness_is_the_bar_width_closed_form():
    # area w L, total variation 2 L + 2 w: thickness = 2 w L / (2 L + 2 w)
    for w in (1, 2, 3, 5):
        assert thickness(bar(w), SHAPE).item() == pytest.approx(w * 10 / (10 + w), rel=1e-6)
    values = [thickness(bar(w), SHAPE).item() for w in (1, 2, 3, 5)]
    assert values == sorted(values)


def test_a_dilated_digit_scores_thicker():
    digits = load("digits")
    x = digits.images[:50].reshape(-1, 1, 8, 8)
    dilated = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
    assert bool((thickness(dilated[:, 0], (8, 8)) > thickness(x[:, 0], (8, 8))).all())


def test_slant_against_numpy_weighted_regression_and_shear():
    values = [slant(sheared(k), SHAPE).item() for k in (-2, 0, 1, 2, 3)]
    assert values == sorted(values) and values[1] == pytest.approx(0.0, abs=1e-6)
    # independent: the ink-weighted least-squares slope of column against "up" (numpy)
    img = sheared(2).reshape(SHAPE).numpy().astype(np.float64)
    rows, cols = np.nonzero(img)
    slope = np.polyfit(-rows.astype(np.float64), cols, 1, w=np.sqrt(img[rows, cols]))[0]
    assert slant(sheared(2), SHAPE).item() == pytest.approx(slope, rel=1e-5)


def test_size_doubles_with_the_digit_and_matches_numpy():
    small = torch.zeros(SHAPE)
    small[6:10, 6:10] = 1.0
    ring = small.clone()
    ring[7:9, 7:9] = 0.0
    big = torch.nn.functional.interpolate(ring[None, None], scale_factor=2, mode="nearest")[0, 0]
    big_image = torch.zeros(SHAPE)
    big_image[:, :] = big[4:20, 4:20]
    s_small, s_big = size(ring.reshape(1, -1), SHAPE).item(), size(big_image[None], SHAPE).item()
    assert s_big > 1.8 * s_small
    img = big_image.numpy().astype(np.float64)
    rows, cols = np.nonzero(img)
    gyration = np.sqrt(rows.var() + cols.var()) / 16
    assert s_big == pytest.approx(gyration, rel=1e-5)


def test_measure_gives_every_attribute_as_numpy_computes_it():
    """measure (size and slant from one pass over the moments) on random grey images against
    numpy: the ink-weighted radius of gyration, the weighted least-squares slope of column
    against up, and 2 A / P with P the total variation of the padded image."""
    gen = np.random.default_rng(0)
    images = gen.random((5, 8, 6)) * (gen.random((5, 8, 6)) > 0.5)
    got = measure(torch.from_numpy(images).reshape(5, -1), (8, 6))
    assert list(got) == ["thickness", "size", "slant"]
    rows, cols = np.mgrid[0:8, 0:6].astype(np.float64)
    for i, img in enumerate(images):
        w = img.ravel()
        var_r = np.cov(rows.ravel(), aweights=w, bias=True)
        var_c = np.cov(cols.ravel(), aweights=w, bias=True)
        assert got["size"][i].item() == pytest.approx(np.sqrt(var_r + var_c) / 8, rel=1e-9)
        on = w > 0
        slope = np.polyfit(-rows.ravel()[on], cols.ravel()[on], 1, w=np.sqrt(w[on]))[0]
        assert got["slant"][i].item() == pytest.approx(slope, rel=1e-9)
        padded = np.pad(img, 1)
        variation = np.abs(np.diff(padded, axis=0)).sum() + np.abs(np.diff(padded, axis=1)).sum()
        assert got["thickness"][i].item() == pytest.approx(2 * img.sum() / variation, rel=1e-9)


def test_no_ink_measures_zero_and_shapes_are_checked():
    values = measure(torch.zeros(2, 64), (8, 8))
    assert all(bool((v == 0).all()) for v in values.values())
    with pytest.raises(AmlabError, match="shape"):
        thickness(torch.zeros(2, 63), (8, 8))
    with pytest.raises(AmlabError, match="grey images"):
        thickness(torch.zeros(2, 192), (3, 8, 8))


def test_captions_follow_the_terciles_and_read_back():
    digits = load("digits")
    scheme = CaptionScheme.fit(digits.images, digits.shape)
    captions = scheme.captions(digits.images, digits.shape, digits.labels)
    levels = scheme.levels(measure(digits.images, digits.shape))
    for name in levels:  # terciles: about a third of the training images in each
        counts = torch.bincount(levels[name], minlength=3).float() / len(digits)
        assert bool(((counts - 1 / 3).abs() < 0.02).all())
    for i in (0, 7, 100, 1500):
        asked = request(captions[i])
        assert asked.digit == int(digits.labels[i])
        assert asked.levels == {name: int(levels[name][i]) for name in levels}
    assert request("a thick slanted 7").levels == {"thickness": 2, "size": 1, "slant": 2}


def test_tokenize_pads_and_names_unknown_words():
    ids = tokenize(["a thick 7", "3", ""])
    assert ids.shape == (3, 3)
    assert ids[0].tolist() == [VOCABULARY.index(w) for w in ("a", "thick", "7")]
    assert ids[1].tolist() == [VOCABULARY.index("3"), PAD, PAD]
    assert ids[2].tolist() == [PAD, PAD, PAD]
    with pytest.raises(AmlabError, match="fat, purple"):
        tokenize(["a fat purple 7"])
    with pytest.raises(AmlabError, match="more than one digit"):
        request("a 7 3")
    with pytest.raises(AmlabError, match="both 'thin' and 'thick'"):
        request("a thin thick 7")
    with pytest.raises(AmlabError, match="was not trained with: slanted"):
        tokenize(["a slanted 7"], vocabulary=("a", "7"))
