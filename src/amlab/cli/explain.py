"""``amlab explain`` and ``amlab export``: the browser explainer and the data it computes with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amlab.cli.common import (
    JsonOpt,
    busy,
    console,
    errors,
    out_option,
    refuse_unused,
    show_result,
)
from amlab.distributed.group import refuse_torchrun


def explain(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")
    ] = 8765,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Only serve; do not open a browser.")
    ] = False,
    gallery: Annotated[
        Path | None,
        typer.Option(
            help="A gallery (the --out of amlab gallery generate) for the #/gallery view to "
            "show instead of the shipped one."
        ),
    ] = None,
) -> None:
    """Serve the interactive explainer on 127.0.0.1 and open it in the browser."""
    import tempfile
    import webbrowser

    from amlab.cli.gallery import write_view
    from amlab.explain import serve

    with errors():  # before the temporary directory and the server
        refuse_torchrun(
            "amlab explain",
            "one server serves the explainer: every rank would serve it on the same port and "
            "open the browser",
        )
    with tempfile.TemporaryDirectory(prefix="amlab-gallery-") as view, errors():
        if gallery is not None:
            with busy("preparing the gallery"):
                write_view(gallery, Path(view))
        server = serve(port, gallery=None if gallery is None else view)
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        if gallery is not None:
            url += "#/gallery"
        console.print(f"amlab explain: serving {url} (Ctrl-C stops)")
        if not no_browser:
            webbrowser.open(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def export(
    out: Annotated[
        Path,
        out_option("the app's data (digits, DrDAM's projections, the ONNX models, manifest.json)"),
    ] = Path("web/public/data"),
    vectors: Annotated[
        Path | None,
        typer.Option(help="Also write the test vectors of the app's math to this JSON file."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the test vectors' random cases (default 0).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the data the explainer computes with, and test vectors for its math."""
    from amlab.explain import export_app_data, export_test_vectors

    with errors():
        refuse_torchrun(
            "amlab export",
            "its data and test vectors are not spread over ranks: every rank would compute "
            "all of them and write the same files",
        )
        if vectors is None:
            refuse_unused(
                {"--seed": seed},
                "it seeds the test vectors, and only --vectors FILE writes them (the app's "
                "data is always drawn with seed 0)",
            )
        with busy("exporting"):
            written = export_app_data(out)
            if vectors is not None:
                written.append(export_test_vectors(vectors, seed=seed or 0))
    show_result({"written": [str(path) for path in written]}, as_json, wrote=written)
