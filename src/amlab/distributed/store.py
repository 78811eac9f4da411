"""A memory store on disk, sharded for P ranks: ``P`` safetensors files of contiguous rows
(the even split of :func:`~amlab.distributed.shard_range`) and a manifest, ``store.json``,
with the shape, dtype, each file's rows, size and SHA-256, the store's id (a hash of its
memories) and, for memories that are images, the shape of one image. Any number of ranks Q
reads it: each reads the rows of its own even split for Q, from whichever files hold them
(re-sharding on load), one process all of them. A file that is missing, truncated, changed
or from another store is refused, naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from amlab.distributed.group import shard_range
from amlab.errors import FLOAT_DTYPES, AmlabError, as_float_tensor, check_positive_int, dtype_name
from amlab.io import atomic_write_bytes, atomic_write_text, check_regular_file, read_json

MANIFEST = "store.json"
FORMAT = "amlab memory store"
VERSION = 1


def shard_file(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}.safetensors"


def write_store(
    directory: str | Path,
    memories: Any,
    num_shards: int,
    *,
    image_shape: tuple[int, ...] | None = None,
) -> Path:
    """Write memories (M, D) into ``num_shards`` shard files and the manifest in
    ``directory`` (created if needed); returns the manifest's path. Each file is written
    atomically, the manifest last. ``image_shape``: for memories that are images, the shape
    of one, (H, W) or (C, H, W), whose product is D (``amlab retrieve --store`` needs it)."""
    num_shards = check_positive_int(num_shards, "num_shards")
    mem = as_float_tensor(memories, "memories").detach().cpu().contiguous()
    if mem.ndim != 2 or mem.shape[0] < 1 or mem.shape[1] < 1:
        raise AmlabError(f"memories must have shape (M, D), M, D >= 1; got {tuple(mem.shape)}.")
    if image_shape is not None:
        image_shape = tuple(image_shape)
        if not all(isinstance(n, int) and n >= 1 for n in image_shape) or (
            math.prod(image_shape) != mem.shape[1]
        ):
            raise AmlabError(
                f"image_shape {image_shape} does not fit memories of dimension {mem.shape[1]}: "
                "pass positive ints whose product is the dimension."
            )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    store_id = hashlib.sha256(
        f"{tuple(mem.shape)} {mem.dtype}".encode() + mem.numpy().tobytes()
    ).hexdigest()[:32]
    shards = []
    for shard in range(num_shards):
        lo, hi = shard_range(mem.shape[0], shard, num_shards)
        data = save_tensors(
            {"memories": mem[lo:hi].clone()}, metadata={"store_id": store_id, "rows": f"{lo}:{hi}"}
        )
        name = shard_file(shard, num_shards)
        atomic_write_bytes(directory / name, data)
        sha = hashlib.sha256(data).hexdigest()
        shards.append({"file": name, "rows": [lo, hi], "bytes": len(data), "sha256": sha})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "store_id": store_id,
        "num_memories": mem.shape[0],
        "dim": mem.shape[1],
        "dtype": dtype_name(mem.dtype),
        "image_shape": None if image_shape is None else list(image_shape),
        "sharding": "contiguous rows, the even split of amlab.distributed.shard_range",
        "shards": shards,
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return directory / MANIFEST


class MemoryStore:
    """A store written by :func:`write_store`, opened: its manifest read and checked, every
    shard file present at its recorded size. Reading checks each file it opens in full.
    ``num_memories``, ``dim``, ``dtype``, ``store_id`` and ``image_shape`` (None: not images)
    come from the manifest."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        remedy = "write the store with amlab.distributed.write_store (amlab store write)"
        # read_json refuses a missing, special (a FIFO would hang) or oversized file
        manifest = read_json(path, f"{MANIFEST} is not a readable memory store manifest; {remedy}")
        try:
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                raise ValueError(f"not an {FORMAT} of version {VERSION}")
            self.store_id = str(manifest["store_id"])
            self.num_memories, self.dim = int(manifest["num_memories"]), int(manifest["dim"])
            self.dtype = FLOAT_DTYPES[manifest["dtype"]]
            shape = manifest.get("image_shape")  # None: not images (or written before it)
            self.image_shape = None if shape is None else tuple(int(n) for n in shape)
            if self.image_shape is not None and math.prod(self.image_shape) != self.dim:
                raise ValueError(f"image_shape {self.image_shape} does not fit dim {self.dim}")
            self.shards = [
                (str(s["file"]), int(s["rows"][0]), int(s["rows"][1]), int(s["bytes"]), s["sha256"])
                for s in manifest["shards"]
            ]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise AmlabError(
                f"{path} is not a readable memory store manifest ({err}); {remedy}."
            ) from None
        ends = [0] + [hi for _, _, hi, _, _ in self.shards]
        if [lo for _, lo, _, _, _ in self.shards] != ends[:-1] or ends[-1] != self.num_memories:
            raise AmlabError(f"{path}: the shards' rows do not cover 0..{self.num_memories}.")
        for name, _, _, size, _ in self.shards:
            file = self.directory / name
            found = check_regular_file(file, "shard file missing from the store; copy it back")
            if found != size:
                raise AmlabError(
                    f"{file}: {found} bytes but the manifest says {size}: the "
                    "file is truncated or from another store; copy the store's own file back."
                )

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def rows_for(self, rank: int, world_size: int) -> torch.Tensor:
        """The memories (M_r, D) rank ``rank`` of ``world_size`` holds in the even split."""
        return self.rows(*shard_range(self.num_memories, rank, world_size))

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Memories lo..hi (rows, D), from the shard files that hold them."""
        parts = [torch.empty(0, self.dim, dtype=self.dtype)]
        for name, start, stop, _, sha in self.shards:
            if start < hi and lo < stop:
                shard = self._read(name, sha, stop - start)
                parts.append(shard[max(lo, start) - start : min(hi, stop) - start])
        return torch.cat(parts)

    def _read(self, name: str, sha: str, num_rows: int) -> torch.Tensor:
        file = self.directory / name
        remedy = f"copy store {self.store_id}'s own file back"
        check_regular_file(file, remedy)
        try:
            data = file.read_bytes()
        except OSError as exc:  # removed or made unreadable after the store was opened
            raise AmlabError(f"cannot read {file} ({exc.strerror or exc}); {remedy}.") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise AmlabError(
                f"{file}: its contents differ from the manifest's SHA-256 (changed, or a shard "
                f"of another store); copy store {self.store_id}'s own file back."
            )
        try:
            memories = load_tensors(data)["memories"]
        except (SafetensorError, KeyError) as err:
            raise AmlabError(f"{file} is not a shard of memories ({err}).") from None
        if memories.shape != (num_rows, self.dim) or memories.dtype != self.dtype:
            raise AmlabError(f"{file}: {tuple(memories.shape)} {memories.dtype}, not as listed.")
        return memories
