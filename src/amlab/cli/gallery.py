"""``amlab gallery``: generated images of a text model in DiffusionDB's layout, SQL and
canned analyses over a metadata.parquet (ours or DiffusionDB's), and the memorisation
audit."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from amlab.cli.common import (
    JsonOpt,
    ResumeOpt,
    choice,
    console,
    errors,
    integer,
    list_option,
    number,
    out_option,
    path_str,
    result_table,
    show_result,
    stage_progress,
)
from amlab.diffusion import SAMPLERS
from amlab.distributed.group import refuse_torchrun
from amlab.errors import AmlabError, check_positive

gallery_app = typer.Typer(
    help="A DiffusionDB of our own models: generate a gallery, query it, audit it.",
    no_args_is_help=True,
)

MetadataOpt = Annotated[
    Path,
    typer.Option(
        "--metadata",
        help="A metadata.parquet (a gallery's or DiffusionDB's) or the directory holding it.",
    ),
]
GalleryDataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Directory of the model's training data (MNIST files) if it moved since training.",
    ),
]


@gallery_app.command("generate")
def generate(
    out: Annotated[
        Path, out_option("images/part-*/, metadata.parquet and .amlab/", resumable=True)
    ] = Path("runs/gallery"),
    model: Annotated[
        Path | None,
        typer.Option(
            help="A text model: the --out of amlab train diffusion --text (default: the one "
            "shipped with amlab)."
        ),
    ] = None,
    data_dir: GalleryDataDirOpt = None,
    prompts: Annotated[Any, list_option(str, "'a thick 7,a 3'", "Prompts", "PROMPT,...")] = None,
    prompts_file: Annotated[
        Path | None, typer.Option(help="A text file of prompts, one a line (# comments).")
    ] = None,
    seeds: Annotated[Any, list_option(integer, "0,1,2", "Seeds", "SEED,...")] = None,
    guidance: Annotated[Any, list_option(number, "1,3", "Guidance (CFG) scales", "W,...")] = None,
    steps: Annotated[Any, list_option(integer, "20,40", "Sampler steps", "N,...")] = None,
    samplers: Annotated[
        Any,
        list_option(
            choice(SAMPLERS), "heun,euler", f"Samplers, from {', '.join(SAMPLERS)}", "NAME,..."
        ),
    ] = None,
    part_size: Annotated[
        int | None, typer.Option(min=1, help="Images per part folder (default 1000).")
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A 32-image grid in 2 parts: a smoke test in seconds."),
    ] = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Draw prompts x seeds x guidance x steps x samplers into DiffusionDB's layout."""
    from amlab.tasks.gallery import DEFAULT_SPEC, QUICK_SPEC, read_prompts, refuse_torchrun_generate
    from amlab.tasks.gallery import generate as run
    from amlab.tasks.prompts import load_text_model

    with errors():
        refuse_torchrun_generate()  # before the text model is read (seconds)
        if prompts is not None and prompts_file is not None:
            raise AmlabError("pass --prompts or --prompts-file, not both.")
        base = QUICK_SPEC if quick else DEFAULT_SPEC
        given = {
            "prompts": tuple(prompts) if prompts else None,
            "seeds": tuple(seeds) if seeds else None,
            "guidance": tuple(guidance) if guidance else None,
            "steps": tuple(steps) if steps else None,
            "samplers": tuple(samplers) if samplers else None,
            "part_size": part_size,
        }
        if prompts_file is not None:
            given["prompts"] = read_prompts(prompts_file)
        # replace() builds a new GallerySpec, so its checks run on the values given
        spec = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
        text_model = load_text_model(model, path_str(data_dir))
        with stage_progress() as progress:
            summary = run(
                spec,
                out,
                text_model,
                resume=resume,
                progress=lambda done, total, drawn: progress(
                    f"part {done}/{total} ({drawn} drawn)", done / total
                ),
            )
    table = _adherence_table(summary["adherence"], f"{summary['images']} images: adherence")
    show_result(summary, as_json, table, wrote=(out / "images", out / "metadata.parquet"))
    if not as_json:
        shares = ", ".join(f"{v:.0%} {k}" for k, v in summary["audit"].items())
        console.print(
            f"{summary['images_drawn']} drawn, {summary['parts_kept']} part(s) kept; audit: "
            f"{shares}. Next: amlab gallery stats --metadata {out}"
        )


def _adherence_table(table: dict[str, Any], title: str):
    return result_table(
        title,
        ("attribute", "adherence", "chance", "prompts"),
        [
            (name, f"{r['adherence']:.0%}", f"{r['chance']:.0%}", str(r["prompts"]))
            for name, r in table.items()
        ],
    )


@gallery_app.command("query")
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the table 'metadata' (DuckDB).")],
    metadata: MetadataOpt = Path("runs/gallery"),
    as_json: JsonOpt = False,
) -> None:
    """SQL over a metadata.parquet, the table named metadata: SELECT ... FROM metadata."""
    from amlab.tasks.gallery_query import query as run

    with errors():
        refuse_torchrun(
            "amlab gallery query",
            "a query is not spread over ranks: every rank would run it and print the same rows",
        )
        result = run(metadata, sql)
    table = result_table(
        f"{len(result['rows'])} row(s)",
        result["columns"],
        [[str(v) for v in row] for row in result["rows"]],
    )
    show_result(result, as_json, table)


@gallery_app.command("stats")
def stats(metadata: MetadataOpt = Path("runs/gallery"), as_json: JsonOpt = False) -> None:
    """Canned analyses: prompts, phrases, duplicates, settings, nulls, adherence, audit."""
    from amlab.tasks.gallery_query import stats as run
    from amlab.tasks.prompts import JUDGED

    with errors():
        refuse_torchrun(
            "amlab gallery stats",
            "its analyses are not spread over ranks: every rank would run them and print the "
            "same tables",
        )
        result = run(metadata)
    if as_json:
        show_result(result, True)
        return
    p = result["prompts"]
    rows = [
        ("rows", str(result["rows"])),
        ("distinct prompts", str(p["distinct_prompts"])),
        (
            "prompt characters (mean / median / max)",
            f"{p['mean_characters'] or 0:.1f} / {p['median_characters'] or 0:g} / "
            f"{p['max_characters'] or 0}",
        ),
        (
            "prompt words (mean / median / max)",
            f"{p['mean_words'] or 0:.1f} / {p['median_words'] or 0:g} / {p['max_words'] or 0}",
        ),
        ("prompts used more than once", str(result["duplicates"]["prompts_repeated"])),
        ("distinct seeds", str(result["seed"]["distinct_seeds"])),
        *(
            (f"top phrase {i + 1}", f"{r['phrase']} ({r['n']})")
            for i, r in enumerate(result["top_phrases"][:5])
        ),
        *((f"cfg {_number(r['value'])}", str(r["n"])) for r in result["cfg"]),
        *((f"steps {_number(r['value'])}", str(r["n"])) for r in result["step"]),
        *((f"sampler {r['code']} ({r['name']})", str(r["n"])) for r in result["sampler"]),
        *((f"nulls in {k}", str(v)) for k, v in result["nulls"].items() if v),
        *((f"audit: {r['audit']}", str(r["n"])) for r in result.get("audit", [])),
        *(
            (
                f"adherence at cfg {_number(r['cfg'])}",
                ", ".join(f"{k} {r[k]:.0%}" for k in JUDGED if r[k] is not None),
            )
            for r in result.get("adherence_by_guidance", [])
        ),
    ]
    Console(width=120).print(result_table(result["file"], ("analysis", "value"), rows))


def _number(value: float | None) -> str:
    """A setting's value as the stats table shows it: "null" where a row has none."""
    return "null" if value is None else f"{value:g}"


@gallery_app.command("audit")
def audit(
    gallery: Annotated[Path, typer.Option(help="The --out of amlab gallery generate.")] = Path(
        "runs/gallery"
    ),
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Distance under which an image is a training image or a minimum "
            "(default: a third of the median nearest-neighbour distance)."
        ),
    ] = None,
    noise_level: Annotated[
        float | None,
        typer.Option(
            help="Noise level s of the training set's energy, beta = 1/s^2 "
            "(default: half the median nearest-neighbour distance)."
        ),
    ] = None,
    data_dir: GalleryDataDirOpt = None,
    out: Annotated[Path | None, out_option("audit.json and audit.png", optional=True)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Class each image memorised / spurious / generalised against the training set."""
    from amlab.io import write_metrics
    from amlab.tasks.figures import image_grid
    from amlab.tasks.gallery import audit_gallery

    with errors():
        refuse_torchrun(
            "amlab gallery audit",
            "the audit is not spread over ranks: every rank would class every image and write "
            "the same files",
        )
        for name, value in (("--threshold", threshold), ("--noise-level", noise_level)):
            if value is not None:
                check_positive(value, name)
        result = audit_gallery(
            gallery, threshold=threshold, noise_level=noise_level, data_dir=path_str(data_dir)
        )
        examples = result.pop("examples")
        shape = result.pop("shape")
        wrote = []
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_metrics(out / "audit.json", result)
            rows = []
            for name, (images, nearest, minimum) in examples.items():
                if len(images):
                    rows += [(name, images), ("nearest train", nearest), ("minimum", minimum)]
            if rows:
                image_grid(rows, shape, out / "audit.png", title="audit classes: examples")
                wrote.append(out / "audit.png")
            wrote.insert(0, out / "audit.json")
    table = result_table(
        f"audit of {result['images']} images (threshold {result['scale']['threshold']:.3f}, "
        f"s = {result['scale']['noise_level']:.3f})",
        ("guidance", *result["fractions"]),
        [
            ("all", *(f"{v:.0%}" for v in result["fractions"].values())),
            *(
                (f"{w:g}", *(f"{v:.0%}" for v in shares.values()))
                for w, shares in result["by_guidance"].items()
            ),
        ],
    )
    show_result(result, as_json, table, wrote)


def write_view(gallery: Path, out: Path, data_dir: Path | None = None) -> list[Path]:
    """Write the explainer's gallery-view files of ``gallery`` into ``out``
    (:func:`amlab.explain.gallery.write_gallery_view`), after checking its metadata."""
    from amlab.explain.gallery import write_gallery_view
    from amlab.tasks.gallery import gallery_pictures, load_gallery
    from amlab.tasks.gallery_query import check_schema

    table, model = load_gallery(gallery, path_str(data_dir))
    check_schema(gallery / "metadata.parquet")
    pictures = gallery_pictures(gallery, table)
    train = model.train
    return write_gallery_view(table, pictures, train.images, train.labels, gallery / "images", out)


@gallery_app.command("explorer")
def explorer(
    gallery: Annotated[Path, typer.Option(help="The --out of amlab gallery generate.")] = Path(
        "runs/gallery"
    ),
    out: Annotated[
        Path, out_option("metadata.parquet with the map's columns, training.json and images/")
    ] = Path("runs/gallery-view"),
    data_dir: GalleryDataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write what the explainer's #/gallery view reads (amlab explain --gallery does it for you)."""
    with errors():
        refuse_torchrun(
            "amlab gallery explorer",
            "it writes one copy of the view's files: every rank would write all of them to "
            "the same place",
        )
        wrote = write_view(gallery, out, data_dir)
    show_result({"written": [str(path) for path in wrote]}, as_json, wrote=wrote)


__all__ = ["gallery_app", "write_view"]
