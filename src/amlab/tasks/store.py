"""``amlab store write``: images from a data set into a sharded memory store on disk."""

from __future__ import annotations

from pathlib import Path

from amlab.data.images import load
from amlab.distributed.group import refuse_torchrun
from amlab.distributed.store import MemoryStore, write_store
from amlab.errors import check_positive_int, dtype_name


def write_image_store(
    out: str | Path,
    *,
    data: str = "digits",
    data_dir: str | None = None,
    memories: int = 100,
    shards: int = 2,
    seed: int = 0,
) -> dict:
    """Write ``memories`` images of ``data`` (drawn with ``seed``, as ``amlab retrieve``
    draws the images it stores) into ``shards`` shard files and ``store.json`` in ``out``;
    returns what was written. Refused under torchrun with several ranks."""
    refuse_torchrun(
        "amlab store write",
        "one process writes every shard file, which the ranks of amlab retrieve --store then "
        "read: every rank would write the whole store to the same files",
    )
    images = load(data, data_dir, split="train")
    stored = images.subset(check_positive_int(memories, "memories"), seed=seed)
    manifest = write_store(out, stored.images, shards, image_shape=stored.shape)
    store = MemoryStore(manifest.parent)
    return {
        "store": str(manifest.parent),
        "store_id": store.store_id,
        "num_memories": store.num_memories,
        "dim": store.dim,
        "dtype": dtype_name(store.dtype),
        "image_shape": list(stored.shape),
        "shards": [
            {"file": name, "rows": [lo, hi], "bytes": size}
            for name, lo, hi, size, _ in store.shards
        ],
        "config": {"data": data, "memories": memories, "shards": shards, "seed": seed},
    }
