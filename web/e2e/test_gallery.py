"""The gallery view in the browser: it reads the shipped gallery's metadata.parquet itself
(hyparquet, network blocked), shows one point per row, filters as DuckDB does, shows a clicked
row's prompt and settings and links it into the diffusion view, which redraws the row's image
(the same start noise for the seed in the page as in Python) or says why it cannot; a
malformed parquet, or one lacking a column, shows what is wrong."""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qs, urlsplit

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from playwright.sync_api import expect

from amlab.explain import STATIC_DIR
from amlab.tasks.gallery import read_png, row_settings, sample_image
from amlab.tasks.prompts import load_text_model

SERVED = STATIC_DIR / "data" / "gallery" / "metadata.parquet"


def open_gallery(page, base_url: str, query: str = "") -> None:
    page.goto(f"{base_url}#/gallery{query}")
    expect(page.locator("[data-testid=gallery][data-ready=true]")).to_be_visible(timeout=30_000)


def shown_images(page) -> list[str]:
    points = page.locator("[data-testid=point]")
    return [points.nth(i).get_attribute("data-image") for i in range(points.count())]


def test_gallery_map_filters_and_selection_are_the_parquets(offline, base_url):
    page = offline.page
    table = pq.read_table(SERVED)
    open_gallery(page, base_url)
    assert page.get_attribute("[data-testid=gallery]", "data-rows") == str(table.num_rows)
    assert sorted(shown_images(page)) == sorted(table["image_name"].to_pylist())
    expect(page.locator("[data-testid=count]")).to_have_text(str(table.num_rows))

    # prompt text, guidance and steps: the rows DuckDB selects
    page.fill("[data-testid=filter-prompt]", "THICK")
    page.select_option("[data-testid=filter-cfg]", label="3")
    page.select_option("[data-testid=filter-steps]", label="30")
    want = duckdb.execute(
        "SELECT image_name, prompt, seed, cfg, step FROM read_parquet(?) "
        "WHERE prompt ILIKE '%thick%' AND cfg = 3 AND step = 30 ORDER BY image_name",
        [str(SERVED)],
    ).fetchall()
    assert 0 < len(want) < table.num_rows
    expect(page.locator("[data-testid=count]")).to_have_text(str(len(want)))
    assert sorted(shown_images(page)) == [r[0] for r in want]
    # and a seed
    seed = want[0][2]
    page.select_option("[data-testid=filter-seed]", label=str(seed))
    expect(page.locator("[data-testid=count]")).to_have_text(
        str(sum(1 for r in want if r[2] == seed))
    )

    # click a point: its row's prompt and settings, its nearest training digit, the link
    name = want[0][0]
    page.click(f"[data-testid=point][data-image='{name}']")
    row = next(r for r in table.to_pylist() if r["image_name"] == name)
    expect(page.locator("[data-testid=selected]")).to_have_attribute("data-image", name)
    expect(page.locator("[data-testid=sel-prompt]")).to_have_text(row["prompt"])
    expect(page.locator("[data-testid=sel-seed]")).to_have_text(str(row["seed"]))
    expect(page.locator("[data-testid=sel-steps]")).to_have_text(str(row["step"]))
    expect(page.locator("[data-testid=sel-audit]")).to_have_text(row["audit"])
    expect(page.locator("[data-testid=sel-distance]")).to_have_text(
        f"{row['nearest_distance']:.3f}"
    )
    expect(page.locator("[data-testid=nearest-image]")).to_be_visible()
    # the next nearest training images, as training.json lists them (amlab.explain.gallery
    # computes them; tests/test_explain_gallery.py checks them against scikit-learn)
    listed = json.loads((SERVED.parent / "training.json").read_text())["neighbours"][name]
    shown = page.locator("[data-testid=neighbour]")
    expect(shown).to_have_count(len(listed) - 1)
    for k, (index, distance) in enumerate(listed[1:]):
        expect(shown.nth(k)).to_have_attribute("data-index", str(index))
        expect(shown.nth(k)).to_contain_text(f"#{index}")
        expect(shown.nth(k)).to_contain_text(f"{distance:.3f}")
    picture = page.locator("[data-testid=picture]")
    loaded = picture.evaluate("img => img.complete && img.naturalWidth")
    assert loaded == row["width"]
    href = page.get_attribute("[data-testid=diffusion-link]", "href")
    route = urlsplit(href.lstrip("#"))
    assert route.path == "/diffusion"
    assert "prompt=" + row["prompt"].replace(" ", "%20") in href
    params = {k: v[0] for k, v in parse_qs(route.query).items()}
    assert params == {
        "prompt": row["prompt"],
        "seed": str(row["seed"]),
        "guidance": f"{row['cfg']:g}",
        "steps": str(row["step"]),
        "sampler": "heun",
    }
    # the view's state is in the route: a reload shows the same selection and filters
    page.reload()
    expect(page.locator("[data-testid=gallery][data-ready=true]")).to_be_visible(timeout=30_000)
    expect(page.locator("[data-testid=sel-prompt]")).to_have_text(row["prompt"])
    expect(page.locator("[data-testid=count]")).to_have_text(
        str(sum(1 for r in want if r[2] == seed))
    )
    page.click("[data-testid=colour-prompt]")
    offline.screenshot("gallery")
    # following the link opens the diffusion view on the row's prompt, seed and steps
    page.click("[data-testid=diffusion-link]")
    expect(page.locator("[data-testid=diffusion][data-ready=true]")).to_be_visible(timeout=60_000)
    expect(page.locator("[data-testid=prompt-text-a]")).to_have_value(row["prompt"])
    expect(page.locator("[data-testid=steps]")).to_have_value(str(row["step"]))
    assert f"seed={row['seed']}" in page.url and f"guidance={row['cfg']:g}" in page.url


def test_a_rows_link_redraws_its_image_in_the_diffusion_view(offline, base_url, read):
    """Follow a row's link: the diffusion view's learned run for prompt A ends on the row's
    image, the float image the Python sampler draws for the row (to float32 and ONNX
    rounding), and, stored as the gallery stores it (clipped, times 255, rounded), its PNG."""
    page = offline.page
    rows = pq.read_table(SERVED).to_pylist()
    # 30 Heun steps at guidance 3: the longest runs, the strongest guidance
    row = next(
        r
        for r in rows
        if (r["prompt"], r["seed"], r["cfg"], r["step"]) == ("a thin slanted 7", 2, 3, 30)
    )
    open_gallery(page, base_url, f"?image={row['image_name']}")
    expect(page.locator("[data-testid=selected]")).to_have_attribute(
        "data-image", row["image_name"]
    )
    reproduces = page.locator("[data-testid=link-reproduces]")
    expect(reproduces).to_contain_text("redraws this image there (prompt A, learned model): the")
    expect(reproduces).not_to_contain_text("if this gallery's is the shipped one")
    expect(page.locator("[data-testid=link-caveat]")).to_have_count(0)
    page.click("[data-testid=diffusion-link]")
    run = page.locator("[data-testid=run]")
    expect(run).to_have_attribute(
        "data-for", f"{row['prompt']}|a thin upright 7:2:3:30", timeout=60_000
    )
    expect(run).to_have_attribute("data-sampler", "heun")
    final = read(page, "traj-a-learned", "data-denoised")[-1]
    python = sample_image(load_text_model(), row_settings(row)).double().numpy()
    np.testing.assert_allclose(final, python, rtol=0, atol=1e-4)
    stored = read_png(SERVED.parent / f"images/part-{row['part_id']:06d}/{row['image_name']}")
    pixels = np.round(np.clip(final, 0, 1) * 255).reshape(stored.shape)
    # a pixel may round the other way only where the image sits on a rounding edge
    edge = np.abs(np.clip(python, 0, 1) * 255 % 1 - 0.5).reshape(stored.shape) < 0.05
    differs = pixels != stored
    assert np.abs(pixels - stored).max() <= 1 and not (differs & ~edge).any(), (pixels, stored)
    print(
        f"page vs Python: max |difference| {np.abs(final - python).max():.2e}, "
        f"{int(differs.sum())} of {stored.size} stored pixels differ by one"
    )


def serve_with_column(page, name: str, values: pa.Array) -> pa.Table:
    """Serve the shipped metadata with column ``name`` replaced by ``values``; return it as
    it was."""
    table = pq.read_table(SERVED)
    serve_table(page, table.set_column(table.schema.get_field_index(name), name, values))
    return table


def test_a_row_the_view_cannot_redraw_says_so(offline, base_url):
    """A row of Euler-Maruyama (sampler code 9: noise at every step, from torch's generator):
    the link passes no sampler the view lacks and the view says it cannot redraw the image."""
    page = offline.page
    rows = pq.read_metadata(SERVED).num_rows
    table = serve_with_column(page, "sampler", pa.array([9] * rows, pa.uint8()))
    name = table["image_name"][0].as_py()
    open_gallery(page, base_url, f"?image={name}")
    expect(page.locator("[data-testid=link-caveat]")).to_contain_text(
        "cannot redraw this image: it was drawn by Euler-Maruyama"
    )
    expect(page.locator("[data-testid=link-reproduces]")).to_have_count(0)
    assert "sampler=" not in page.get_attribute("[data-testid=diffusion-link]", "href")


def test_a_row_of_another_model_says_the_view_cannot_redraw_it(offline, base_url):
    """A gallery drawn by another model than the shipped text model, which the diffusion view
    runs (the manifest's model_hash): the view says it cannot redraw the image."""
    page = offline.page
    rows = pq.read_metadata(SERVED).num_rows
    table = serve_with_column(page, "model_hash", pa.array(["0123456789abcdef"] * rows))
    shipped = table["model_hash"][0].as_py()
    name = table["image_name"][0].as_py()
    open_gallery(page, base_url, f"?image={name}")
    expect(page.locator("[data-testid=link-caveat]")).to_contain_text(
        "cannot redraw this image: it was drawn by the model 0123456789abcdef and the view "
        f"runs the shipped text model {shipped}"
    )
    expect(page.locator("[data-testid=link-reproduces]")).to_have_count(0)


def serve_instead(page, body: bytes) -> None:
    page.route(
        "**/data/gallery/metadata.parquet",
        lambda route: route.fulfill(status=200, body=body, content_type="application/octet-stream"),
    )


def serve_table(page, table: pa.Table) -> None:
    """Serve ``table``, written as parquet, as the gallery's metadata.parquet."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    serve_instead(page, buffer.getvalue())


def test_a_malformed_parquet_shows_what_is_wrong(offline, base_url):
    page = offline.page
    serve_instead(page, b"this is no parquet file, only text")
    page.goto(f"{base_url}#/gallery")
    expect(page.locator("[data-testid=gallery-error]")).to_contain_text(
        "metadata.parquet is not a readable parquet file", timeout=30_000
    )
    assert page.locator("[data-testid=point]").count() == 0


def test_a_parquet_without_a_column_names_it(offline, base_url):
    page = offline.page
    serve_table(page, pq.read_table(SERVED).drop(["audit", "map_y"]))
    page.goto(f"{base_url}#/gallery")
    expect(page.locator("[data-testid=gallery-error]")).to_contain_text(
        "lacks the column(s) audit, map_y", timeout=30_000
    )
    assert page.locator("[data-testid=point]").count() == 0


def test_route_values_the_gallery_lacks_are_dropped(offline, base_url):
    """A link whose steps, guidance or image the gallery lacks (another gallery's, or edited
    by hand) shows the images of the values it has, with selects that say so."""
    page = offline.page
    table = pq.read_table(SERVED)
    seed = table["seed"][0].as_py()
    open_gallery(page, base_url, f"?seed={seed}&steps=99999&cfg=123.5&image=no-such.png")
    with_seed = sum(1 for s in table["seed"].to_pylist() if s == seed)
    expect(page.locator("[data-testid=count]")).to_have_text(str(with_seed))
    expect(page.locator("[data-testid=filter-seed]")).to_have_value(str(seed))
    expect(page.locator("[data-testid=filter-steps]")).to_have_value("")
    expect(page.locator("[data-testid=filter-cfg]")).to_have_value("")
    expect(page.locator("[data-testid=selected]")).to_have_attribute("data-image", "")
    assert "steps=" not in page.url and "cfg=" not in page.url and "image=" not in page.url
