"""``amlab store``: sharded memory stores on disk, for memories sharded over ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amlab.cli.common import (
    DataFilesOpt,
    ImageDataOpt,
    JsonOpt,
    SeedOpt,
    errors,
    image_files,
    out_option,
    result_table,
    show_result,
)

store_app = typer.Typer(
    help="Sharded memory stores: shard files and a manifest that any number of ranks reads.",
    no_args_is_help=True,
)


@store_app.command("write")
def write(
    out: Annotated[Path, out_option("the shard files and store.json")],
    data: ImageDataOpt = "digits",
    data_dir: DataFilesOpt = None,
    memories: Annotated[int, typer.Option(min=1, help="Number of images stored.")] = 100,
    shards: Annotated[int, typer.Option(min=1, help="Number of shard files (ranks).")] = 2,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Write images into a memory store of --shards shard files (safetensors) and a manifest
    (shapes, dtype, SHA-256 of each file); a store for P ranks also loads on any other
    number of ranks (ShardedDenseAM.from_store) and on one process."""
    from amlab.tasks.store import write_image_store

    with errors():
        result = write_image_store(
            out,
            data=data,
            data_dir=image_files(data, data_dir),
            memories=memories,
            shards=shards,
            seed=seed,
        )
    table = result_table(
        f"store {result['store_id'][:12]}: {result['num_memories']} x {result['dim']} "
        f"{result['dtype']}",
        ("file", "rows", "bytes"),
        [(s["file"], f"{s['rows'][0]}..{s['rows'][1]}", str(s["bytes"])) for s in result["shards"]],
    )
    show_result(result, as_json, table, [out / "store.json"])
