"""The gallery: DiffusionDB's layout and schema, rows that regenerate bit for bit, a killed
generation resumed, the query layer over generated and DiffusionDB-shaped tables (nulls
included), bad input, and the shipped text model's prompt adherence."""

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from amlab.cli import app
from amlab.data.attributes import ATTRIBUTES
from amlab.data.captions import tokenize
from amlab.diffusion import sample
from amlab.errors import AmlabError
from amlab.tasks.diffusion import ImageDiffusionConfig, draw_samples, train_image_model
from amlab.tasks.gallery import (
    DIFFUSIONDB_SCHEMA,
    SAMPLER_CODE,
    SAMPLER_CODES,
    GallerySpec,
    audit_gallery,
    generate,
    read_png,
    read_prompts,
    regenerate,
    row_settings,
    sample_image,
)
from amlab.tasks.gallery_query import query, stats
from amlab.tasks.prompts import adherence, judge, load_text_model

runner = CliRunner()
#: 2 prompts x 2 guidance scales x 3 samplers = 12 images in parts of 5 (5, 5, 2)
SPEC = GallerySpec(
    ("a thick 3", "a thin slanted 7"),
    seeds=(7,),
    guidance=(1.0, 3.0),
    steps=(6,),
    samplers=("heun", "euler", "euler_maruyama"),
    part_size=5,
)


@pytest.fixture(scope="module")
def model():
    return load_text_model()


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("gallery")
    summary = generate(SPEC, out, model)
    return out, summary


# -- DiffusionDB's layout and schema --------------------------------------------------------------
def test_layout_and_schema_are_diffusiondbs(gallery):
    out, summary = gallery
    assert summary["images"] == 12 and summary["parts"] == 3
    table = pq.read_table(out / "metadata.parquet")
    # the first 13 columns are DiffusionDB's, names and dtypes, in its order (its README)
    expected = [
        ("image_name", pa.string()),
        ("prompt", pa.string()),
        ("part_id", pa.uint16()),
        ("seed", pa.uint32()),
        ("step", pa.uint16()),
        ("cfg", pa.float32()),
        ("sampler", pa.uint8()),
        ("width", pa.uint16()),
        ("height", pa.uint16()),
        ("user_name", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("image_nsfw", pa.float32()),
        ("prompt_nsfw", pa.float32()),
    ]
    assert [(f.name, f.type) for f in table.schema][:13] == expected
    assert table.schema.names[13:] == [
        "model_hash",
        "training_images",
        "final_energy",
        "nearest_train",
        "nearest_distance",
        "class",
        *ATTRIBUTES,
        "class_match",
        *(f"{n}_match" for n in ATTRIBUTES),
        "audit",
    ]
    rows = table.to_pylist()
    for column in ("user_name", "image_nsfw", "prompt_nsfw"):
        assert all(r[column] is None for r in rows)
    # DiffusionDB's sampler codes: 5 k_heun, 3 k_euler, 9 others (Euler-Maruyama)
    assert sorted({r["sampler"] for r in rows}) == [3, 5, 9]
    assert SAMPLER_CODES[3] == "k_euler" and SAMPLER_CODES[5] == "k_heun"
    assert {r["width"] for r in rows} == {8} and {r["height"] for r in rows} == {8}
    assert [r["part_id"] for r in rows] == [1] * 5 + [2] * 5 + [3] * 2
    assert {r["training_images"] for r in rows} == {1797}
    assert {r["audit"] for r in rows} <= {"memorised", "spurious", "generalised"}
    # part folders: the PNGs and a part JSON of p, se, c, st, sa
    for part in (1, 2, 3):
        folder = out / "images" / f"part-{part:06d}"
        entries = json.loads((folder / f"part-{part:06d}.json").read_text())
        mine = [r for r in rows if r["part_id"] == part]
        assert sorted(entries) == sorted(r["image_name"] for r in mine)
        for r in mine:
            entry = entries[r["image_name"]]
            assert set(entry) == {"p", "se", "c", "st", "sa"}
            assert (entry["p"], entry["se"], entry["c"], entry["st"]) == (
                r["prompt"],
                r["seed"],
                r["cfg"],
                r["step"],
            )
            assert (folder / r["image_name"]).is_file()
    assert {e["sa"] for e in entries.values()} <= {"k_heun", "k_euler", "euler_maruyama"}


def test_every_row_regenerates_bit_for_bit_and_its_columns_check_out(gallery, model):
    out, _ = gallery
    rows = pq.read_table(out / "metadata.parquet").to_pylist()
    train = model.train.images
    for r in rows:
        stored = read_png(out / "images" / f"part-{r['part_id']:06d}" / r["image_name"])
        again = regenerate(r, model)
        assert again.dtype == np.uint8 and np.array_equal(again, stored)
        picture = torch.from_numpy(stored.reshape(-1)).double() / 255
        distances = (train.double() - picture).norm(dim=1)  # brute force nearest image
        assert r["nearest_train"] == int(distances.argmin())
        assert r["nearest_distance"] == pytest.approx(float(distances.min()), rel=1e-5)
        assert r["class"] == int(model.train.labels[r["nearest_train"]])


# -- resuming a killed generation -----------------------------------------------------------------
class Killed(Exception):
    pass


def test_a_killed_generation_keeps_its_finished_parts_and_resumes(tmp_path, gallery, model):
    out = tmp_path / "g"

    def kill_after_first_part(done, total, drawn):
        if done == 1:
            raise Killed

    with pytest.raises(Killed):
        generate(SPEC, out, model, progress=kill_after_first_part)
    first = out / "images" / "part-000001"
    kept = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    assert len(kept) == 6 and not (out / "metadata.parquet").exists()
    with pytest.raises(AmlabError, match="--resume"):
        generate(SPEC, out, model)
    other = GallerySpec(SPEC.prompts, seeds=(8,), part_size=5)
    with pytest.raises(AmlabError, match="other settings"):
        generate(other, out, model, resume=True)
    summary = generate(SPEC, out, model, resume=True)
    assert summary["parts_kept"] == 1 and summary["images_drawn"] == 7
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == kept  # untouched
    straight = pq.read_table(gallery[0] / "metadata.parquet").drop(["timestamp"])
    resumed = pq.read_table(out / "metadata.parquet").drop(["timestamp"])
    assert resumed.equals(straight)
    for r in resumed.to_pylist():
        name = f"part-{r['part_id']:06d}/{r['image_name']}"
        assert (out / "images" / name).read_bytes() == (gallery[0] / "images" / name).read_bytes()


def test_resume_without_a_gallery_and_a_foreign_directory_are_refused(tmp_path, model):
    with pytest.raises(AmlabError, match="no gallery to resume"):
        generate(SPEC, tmp_path / "none", model, resume=True)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "metadata.parquet").write_bytes(b"x")
    with pytest.raises(AmlabError, match="did not write"):
        generate(SPEC, tmp_path / "foreign", model)


# -- the query layer ------------------------------------------------------------------------------
def diffusiondb_table(n=40):
    """A table of DiffusionDB's schema alone with DiffusionDB-like prompts and nulls."""
    g = np.random.default_rng(0)
    phrases = ["portrait", "digital art", "4 k", "trending on artstation", "by greg rutkowski"]
    prompts = [", ".join(g.choice(phrases, size=g.integers(1, 4), replace=False)) for _ in range(n)]
    prompts[3] = None
    stamp = datetime(2022, 8, 11, 9, 5, tzinfo=timezone.utc)
    columns = {
        "image_name": [f"{i:08d}.png" for i in range(n)],
        "prompt": prompts,
        "part_id": [1 + i // 10 for i in range(n)],
        "seed": g.integers(0, 2**32, n).tolist(),
        "step": [50] * n,
        "cfg": g.choice([7.0, 12.0], n).tolist(),
        "sampler": g.choice([1, 8], n).tolist(),
        "width": [512] * n,
        "height": [768] * n,
        "user_name": [None if i % 4 == 0 else "c2f288a2" for i in range(n)],
        "timestamp": [None if i % 5 == 0 else stamp for i in range(n)],
        "image_nsfw": [None if i % 3 == 0 else 0.1 for i in range(n)],
        "prompt_nsfw": [0.01] * n,
    }
    return pa.table(columns, schema=DIFFUSIONDB_SCHEMA)


def test_stats_of_a_diffusiondb_table_against_python(tmp_path):
    table = diffusiondb_table()
    path = tmp_path / "metadata.parquet"
    pq.write_table(table, path)
    result = stats(path)
    prompts = [p for p in table.column("prompt").to_pylist() if p is not None]
    assert result["rows"] == 40 and result["prompts"]["null"] == 1
    assert result["prompts"]["distinct_prompts"] == len(set(prompts))
    assert result["prompts"]["max_words"] == max(len(p.split()) for p in prompts)
    phrases = [q.strip() for p in prompts for q in p.split(",")]
    top = max(set(phrases), key=lambda q: (phrases.count(q), -ord(q[0])))
    assert result["top_phrases"][0] == {"phrase": top, "n": phrases.count(top)}
    repeated = {p for p in prompts if prompts.count(p) > 1}
    assert result["duplicates"]["prompts_repeated"] == len(repeated)
    assert result["duplicates"]["images"] == sum(prompts.count(p) for p in repeated)
    assert result["nulls"]["user_name"] == 10 and result["nulls"]["timestamp"] == 8
    assert result["nulls"]["image_nsfw"] == 14
    samplers = table.column("sampler").to_pylist()
    assert result["sampler"] == [
        {"code": c, "n": samplers.count(c), "name": SAMPLER_CODES[c]} for c in sorted(set(samplers))
    ]
    assert "adherence_by_guidance" not in result  # DiffusionDB has no columns of ours
    answer = query(path, "SELECT count(*) AS n FROM metadata WHERE cfg = 7")
    assert answer == {"columns": ["n"], "rows": [[table.column("cfg").to_pylist().count(7.0)]]}


def test_stats_of_a_gallery_report_adherence_by_guidance(gallery):
    out, _ = gallery
    result = stats(out)
    rows = pq.read_table(out / "metadata.parquet").to_pylist()
    for entry in result["adherence_by_guidance"]:
        mine = [r for r in rows if r["cfg"] == entry["cfg"]]
        assert entry["thickness"] == pytest.approx(np.mean([r["thickness_match"] for r in mine]))
    assert sum(r["n"] for r in result["audit"]) == 12


def test_bad_tables_are_refused_with_what_is_wrong(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is no parquet")
    with pytest.raises(AmlabError, match="not a readable parquet"):
        stats(junk)
    table = diffusiondb_table()
    pq.write_table(table.drop(["cfg", "sampler"]), tmp_path / "missing.parquet")
    with pytest.raises(AmlabError, match="lacks DiffusionDB's column\\(s\\) cfg, sampler"):
        query(tmp_path / "missing.parquet", "SELECT 1")
    wrong = table.set_column(5, "cfg", pa.array(["7"] * 40))
    pq.write_table(wrong, tmp_path / "wrong.parquet")
    with pytest.raises(AmlabError, match="cfg is string, not float"):
        stats(tmp_path / "wrong.parquet")
    with pytest.raises(AmlabError, match="does not exist"):
        stats(tmp_path / "nowhere")
    pq.write_table(table, tmp_path / "ok.parquet")
    with pytest.raises(AmlabError, match="the query failed"):
        query(tmp_path / "ok.parquet", "SELECT no_such_column FROM metadata")


# -- the command line ------------------------------------------------------------------------------
def test_cli_generate_names_unknown_prompt_words_and_query_answers(tmp_path, gallery):
    result = runner.invoke(
        app, ["gallery", "generate", "--prompts", "a fat purple 7", "--out", str(tmp_path / "g")]
    )
    assert result.exit_code == 2 and "fat, purple" in result.output
    assert not (tmp_path / "g").exists()  # refused before anything was written
    result = runner.invoke(
        app,
        ["gallery", "generate", "--prompts", "a 3,a thin thick 7", "--out", str(tmp_path / "g")],
    )
    assert result.exit_code == 2 and "both 'thin' and 'thick'" in result.output
    result = runner.invoke(
        app,
        [
            "gallery",
            "query",
            "SELECT audit, count(*) AS n FROM metadata GROUP BY 1",
            "--metadata",
            str(gallery[0]),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sum(n for _, n in json.loads(result.stdout)["rows"]) == 12
    result = runner.invoke(app, ["gallery", "stats", "--metadata", str(tmp_path / "x")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_stats_shows_a_null_setting(tmp_path):
    # DiffusionDB's columns are nullable: a row without cfg or steps is a group of its own
    table = diffusiondb_table()
    for name in ("cfg", "step"):
        values = table.column(name).to_pylist()
        values[0] = None
        index = table.schema.get_field_index(name)
        table = table.set_column(
            index, table.schema.field(index), pa.array(values, table.schema.field(index).type)
        )
    pq.write_table(table, tmp_path / "metadata.parquet")
    result = runner.invoke(app, ["gallery", "stats", "--metadata", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "cfg null" in result.output and "steps null" in result.output
    assert "steps 50" in result.output


def test_a_row_of_a_sampler_amlab_lacks_is_refused(model):
    row = {"prompt": "a 3", "seed": 0, "cfg": 1.0, "step": 4, "sampler": 1}  # DiffusionDB's ddim
    with pytest.raises(
        AmlabError,
        match=r"1 \(ddim\) is not one of amlab's samplers \(3 k_euler, 5 k_heun, "
        r"9 euler_maruyama\)",
    ):
        regenerate(row, model)


def test_audit_of_a_gallery_matches_its_table(gallery):
    out, _ = gallery
    result = audit_gallery(out)
    table = pq.read_table(out / "metadata.parquet")
    audits = table.column("audit").to_pylist()
    assert result["fractions"] == {k: audits.count(k) / 12 for k in result["fractions"]}
    # per guidance scale: the shares among that scale's rows
    cfg = table.column("cfg").to_pylist()
    assert sorted(result["by_guidance"]) == sorted(set(cfg))
    for w, shares in result["by_guidance"].items():
        mine = [a for a, c in zip(audits, cfg, strict=True) if c == w]
        assert shares == pytest.approx({k: mine.count(k) / len(mine) for k in shares})


def test_train_diffusion_text_writes_a_text_model(tmp_path):
    out = tmp_path / "text"
    args = ["train", "diffusion", "--text", "--images", "40", "--steps", "3", "--channels", "8"]
    result = runner.invoke(app, [*args, "--blocks", "1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["text"] and set(metrics["adherence"]) == {"class", *ATTRIBUTES}
    loaded = load_text_model(out)
    assert len(loaded.train) == 40 and loaded.network.vocabulary[0] == "a"


def test_the_shipped_text_model_does_what_its_prompts_ask(model):
    """60 prompts from training captions: each attribute well above chance."""
    train = model.train
    g = torch.Generator().manual_seed(5)
    chosen = torch.randint(len(train), (60,), generator=g)
    prompts = model.scheme.captions(train.images[chosen], train.shape, train.labels[chosen])
    ids = tokenize(prompts, model.network.vocabulary)
    images = draw_samples(model.network, 60, 20, 1, ids, 3.0)
    table = adherence(prompts, judge(images, prompts, model), model)
    for name, row in table.items():
        assert row["adherence"] > row["chance"] + 0.25, (name, row)


def test_a_text_model_of_mnist_files_trains_and_fills_a_gallery(tmp_path):
    from test_data import write_mnist

    data = tmp_path / "mnist"
    data.mkdir()
    write_mnist(data, "train", n=30)
    out = tmp_path / "text"
    config = ImageDiffusionConfig(
        data="mnist",
        data_dir=str(data),
        images=30,
        steps=2,
        channels=8,
        blocks=1,
        sampler_steps=2,
        text=True,
    )
    assert train_image_model(config, out)["adherence"]["class"]["prompts"] == 200
    gallery = tmp_path / "gallery"
    args = ["gallery", "generate", "--model", str(out), "--prompts", "a thick 3,a 5"]
    args += ["--seeds", "0", "--guidance", "1", "--steps", "3", "--out", str(gallery), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(gallery / "metadata.parquet").to_pylist()
    assert [(r["width"], r["height"], r["training_images"]) for r in rows] == [(28, 28, 30)] * 2
    model = load_text_model(out)
    stored = read_png(gallery / "images" / "part-000001" / rows[1]["image_name"])
    assert np.array_equal(regenerate(rows[1], model), stored)


def test_a_prompts_file_gives_the_prompts(tmp_path):
    file = tmp_path / "prompts.txt"
    file.write_text("# digits\na thick 7\n\n  a 3  \n  # an indented comment\n")
    assert read_prompts(file) == ("a thick 7", "a 3")
    file.write_text("# nothing\n\n")
    with pytest.raises(AmlabError, match="holds no prompt"):
        read_prompts(file)
    with pytest.raises(AmlabError, match="does not exist"):
        read_prompts(tmp_path / "none.txt")
    with pytest.raises(AmlabError, match="seeds must lie in"):
        GallerySpec(("a 7",), seeds=(2**32,))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seeds", 1.5, "each seed must be an integer; got 1.5"),
        ("seeds", 2.0, "each seed must be an integer; got 2.0"),
        ("seeds", True, "each seed must be an integer; got True"),
        ("seeds", -1, "each seed must be an integer >= 0; got -1"),
        ("steps", 10.5, "each number of steps must be an integer; got 10.5"),
        ("steps", False, "each number of steps must be an integer; got False"),
        ("steps", 0, "each number of steps must be an integer >= 1; got 0"),
        ("steps", 2**16, "steps must lie in"),
    ],
)
def test_a_seed_or_steps_that_is_no_integer_is_refused_not_truncated(field, value, message):
    with pytest.raises(AmlabError, match=message):
        GallerySpec(("a 7",), **{field: (3, value)})
    spec = GallerySpec(("a 7",), seeds=(np.uint32(2**32 - 1),), steps=(np.int64(4),))
    assert spec.rows()[0]["seed"] == 2**32 - 1 and spec.rows()[0]["steps"] == 4


# -- the start noise is the explainer's ------------------------------------------------------------
def test_a_rows_start_noise_is_the_browsers_normals_for_its_seed(model):
    """Seed 42 of rng.ts's known answers (web/src/lib/rng.vectors.json, 64 normals): the
    gallery's Heun image is Heun from those normals times the prior's scale."""
    vectors = json.loads((Path(__file__).parents[1] / "web/src/lib/rng.vectors.json").read_text())
    known = next(c["normals"] for c in vectors["cases"] if c["seed"] == 42)
    net = model.network
    schedule = net.schedule
    scale = math.hypot(schedule.alpha(1.0), schedule.sigma(1.0))
    start = (torch.tensor(known, dtype=torch.float64) * scale).float()[None]
    settings = {"prompt": "a thick 3", "seed": 42, "cfg": 2.5, "steps": 5, "sampler": "heun"}
    tokens = tokenize([settings["prompt"]], net.vocabulary)
    run = sample(net.score_fn(tokens, 2.5), schedule, start, steps=5, method="heun")
    with torch.no_grad():
        want = net.denoise(run.states, schedule.t_end, tokens, 2.5)[0]
    image = sample_image(model, settings)
    torch.testing.assert_close(image, want, rtol=0, atol=1e-6)
    pixels = regenerate({**settings, "step": 5, "sampler": SAMPLER_CODE["heun"]}, model)
    assert np.array_equal(pixels.reshape(-1), (want.clamp(0, 1) * 255).round().byte().numpy())
    # Euler-Maruyama starts there too, then draws its steps' noise from torch's generator
    noisy = {**settings, "sampler": "euler_maruyama", "steps": 1}
    g = torch.Generator().manual_seed(42)
    moved = sample(
        net.score_fn(tokens, 2.5), schedule, start, steps=1, method="euler_maruyama", generator=g
    )
    with torch.no_grad():
        want = net.denoise(moved.states, schedule.t_end, tokens, 2.5)[0]
    torch.testing.assert_close(sample_image(model, noisy), want, rtol=0, atol=1e-6)


def test_a_rows_float32_guidance_is_read_as_it_was_given(tmp_path, model):
    spec = GallerySpec(("a thin 2",), seeds=(4,), guidance=(2.2,), steps=(3,))
    generate(spec, tmp_path, model)
    (row,) = pq.read_table(tmp_path / "metadata.parquet").to_pylist()
    assert row["cfg"] != 2.2 and row_settings(row)["cfg"] == 2.2  # float32 in the table
    stored = read_png(tmp_path / "images" / "part-000001" / row["image_name"])
    assert np.array_equal(regenerate(row, model), stored)


def test_a_guidance_float32_cannot_hold_is_drawn_as_its_row_reads_it(tmp_path, model):
    """A guidance with more digits than float32 holds was drawn with its float64 value but
    read back from the row's float32 cfg as another: regenerate drew with another guidance.
    Both now use the float32 value."""
    spec = GallerySpec(("a thin 2",), seeds=(4,), guidance=(0.1234567891,), steps=(3,))
    generate(spec, tmp_path, model)
    (row,) = pq.read_table(tmp_path / "metadata.parquet").to_pylist()
    (drawn,) = spec.rows()
    assert drawn["cfg"] == row_settings(row)["cfg"] == 0.12345679
    stored = read_png(tmp_path / "images" / "part-000001" / row["image_name"])
    assert np.array_equal(regenerate(row, model), stored)


def test_draw_samples_refuses_a_start_of_the_wrong_shape(model):
    with pytest.raises(AmlabError, match=r"start must have shape \(2, 64\)"):
        draw_samples(model.network, 2, 3, 0, start=torch.zeros(1, 64))
