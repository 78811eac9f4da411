"""The explainer's gallery view (``#/gallery``): a gallery of ``amlab gallery generate`` as the
browser reads it.

:func:`write_gallery_view` writes into ``out``::

    out/metadata.parquet     the gallery's metadata table and two columns more, map_x and
                             map_y: each stored picture on the training set's first two
                             principal axes (the map the view draws)
    out/training.json        the training set on the same axes; each row's NEIGHBOURS nearest
                             training images (index, distance), and the pixels and labels of
                             every training image some row names among them
    out/images/part-XXXXXX/  the gallery's pictures (DiffusionDB's layout, as generated)

The browser reads the parquet itself (hyparquet). ``amlab export`` copies the gallery shipped
in :data:`SHIPPED_GALLERY` (this function's files of a generated gallery; docs/gallery.md has
the commands) into the app's data as it is, byte for byte; ``amlab explain --gallery DIR``
serves the files of a user's gallery.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from amlab.energy.distances import nearest_memories
from amlab.errors import AmlabError
from amlab.explain.pca import map_coordinates, principal_axes
from amlab.io import atomic_write, atomic_write_text

#: the gallery the view opens unless amlab explain --gallery names another
SHIPPED_GALLERY = Path(__file__).parent / "shipped-gallery"

#: the metadata columns the view reads (DiffusionDB's settings, the audit's, the model's hash)
VIEW_COLUMNS = (
    "image_name",
    "prompt",
    "part_id",
    "seed",
    "step",
    "cfg",
    "sampler",
    "width",
    "height",
    "nearest_train",
    "nearest_distance",
    "audit",
    "model_hash",
)
#: the map's columns, added after the gallery's own
MAP_COLUMNS = ("map_x", "map_y")
#: decimals of the training set's map coordinates in training.json (the view only draws them)
MAP_DECIMALS = 4
#: how many nearest training images the view shows for a picture
NEIGHBOURS = 4


def check_view_columns(table: pa.Table, source: str) -> None:
    """Refuse a metadata table that lacks a column the view reads, naming it."""
    missing = [name for name in VIEW_COLUMNS if name not in table.column_names]
    if missing:
        raise AmlabError(
            f"{source} lacks the column(s) {', '.join(missing)} that the gallery view reads; "
            "pass a gallery written by amlab gallery generate."
        )


def write_gallery_view(
    table: pa.Table,
    pictures: torch.Tensor,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    images: str | Path,
    out: str | Path,
) -> list[Path]:
    """Write the view's files (module docstring) into ``out``, a new or empty directory.

    ``table``: the gallery's metadata; ``pictures`` (B, D): its stored pictures in [0, 1] in
    the table's order; ``train_images`` (N, D) and ``train_labels`` (N,): the model's training
    set; ``images``: the gallery's ``images/`` folder. Returns the files written."""
    check_view_columns(table, "the gallery's metadata")
    out, images = Path(out), Path(images)
    if len(pictures) != table.num_rows or pictures.shape[1] != train_images.shape[1]:
        raise AmlabError(
            f"{len(pictures)} pictures of {pictures.shape[1]} pixels for {table.num_rows} rows "
            f"and training images of {train_images.shape[1]}; pass the gallery's own pictures."
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AmlabError(f"{out} is not an empty directory; pass a new one.")
    nearest = table.column("nearest_train").to_pylist()
    if any(i is None or not 0 <= i < len(train_images) for i in nearest):
        raise AmlabError(
            f"nearest_train names an image outside the training set of {len(train_images)}; "
            "pass the gallery's own model."
        )
    axes = principal_axes(train_images)
    coords = map_coordinates(pictures, axes).float()
    for name, column in zip(MAP_COLUMNS, coords.T, strict=True):
        table = table.append_column(pa.field(name, pa.float32()), [column.numpy()])
    shutil.copytree(images, out / "images", dirs_exist_ok=True)
    atomic_write(out / "metadata.parquet", lambda tmp: pq.write_table(table, tmp))
    train_map = map_coordinates(train_images, axes).float().double()
    index, distance = nearest_memories(pictures.double(), train_images.double(), NEIGHBOURS)
    referenced = sorted(set(nearest) | set(index.reshape(-1).tolist()))
    names = table.column("image_name").to_pylist()
    training = {
        "count": len(train_images),
        "explained": axes["explained"],
        "map": [round(v, MAP_DECIMALS) for v in train_map.reshape(-1).tolist()],
        "neighbours": {
            name: [[i, d] for i, d in zip(row_index, row_distance, strict=True)]
            for name, row_index, row_distance in zip(
                names, index.tolist(), distance.tolist(), strict=True
            )
        },
        "labels": {str(i): int(train_labels[i]) for i in referenced},
        "pixels": {str(i): train_images[i].double().tolist() for i in referenced},
    }
    atomic_write_text(out / "training.json", json.dumps(training, separators=(",", ":")))
    return [out / "metadata.parquet", out / "training.json", out / "images"]


def copy_shipped_gallery(out: str | Path) -> Path:
    """Copy :data:`SHIPPED_GALLERY` into ``out`` (replacing what is there)."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(SHIPPED_GALLERY, out)
    return out


#: the gallery view's filter cases: (prompt text, cfg, steps, seed), None keeps every value
_GALLERY_FILTERS = (
    ("thick", None, None, None),
    ("SLANTED", 3.0, None, None),
    ("", 1.0, 30, 2),
    ("a 0", None, 10, None),
    ("no such prompt", None, None, None),
)


def gallery_vectors() -> dict:
    """The shipped gallery's metadata.parquet as pyarrow reads it (the view's columns), the
    rows each filter keeps (prompt contains the text, case-insensitively; cfg, steps, seed
    equal), and float32 values with numpy's shortest decimal of each."""
    table = pq.read_table(SHIPPED_GALLERY / "metadata.parquet")
    filters = []
    for text, cfg, steps, seed in _GALLERY_FILTERS:
        keep = pc.match_substring(table["prompt"], text, ignore_case=True)
        for name, value in (("cfg", cfg), ("step", steps), ("seed", seed)):
            if value is not None:
                keep = pc.and_(keep, pc.equal(table[name], value))
        rows = np.flatnonzero(keep.to_numpy(zero_copy_only=False)).tolist()
        filters.append({"prompt": text, "cfg": cfg, "step": steps, "seed": seed, "rows": rows})
    float32 = np.array([1.0, 3.0, 2.2, 0.1, 7.5, 1 / 3, 12.345, 1e-3], dtype=np.float32)
    return {
        "file": "gallery/metadata.parquet",
        "columns": {name: table[name].to_pylist() for name in VIEW_COLUMNS + MAP_COLUMNS},
        "filters": filters,
        "float32": [[float(v), str(v)] for v in float32],
    }
