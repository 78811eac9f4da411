"""Memories sharded over the ranks of a ``torch.distributed`` process group (gloo on CPUs,
NCCL on GPUs): :class:`ShardedDenseAM`, a DenseAM whose every method returns on every rank
what one process holding all the memories returns, and DrDAM writes summed over ranks
(:func:`add_from_ranks`, :func:`remove_from_ranks`), and a store of memories on disk in
shard files that any number of ranks reads (:func:`write_store`, :class:`MemoryStore`).
See docs/distributed.md.
"""

from amlab.distributed.drdam import add_from_ranks, remove_from_ranks
from amlab.distributed.group import (
    init_group,
    is_main_process,
    leave_group,
    leaving_group,
    merge_lse,
    shard_range,
)
from amlab.distributed.sharded_dense_am import ShardedDenseAM
from amlab.distributed.store import MemoryStore, write_store

__all__ = [
    "MemoryStore",
    "ShardedDenseAM",
    "add_from_ranks",
    "init_group",
    "is_main_process",
    "leave_group",
    "leaving_group",
    "merge_lse",
    "remove_from_ranks",
    "shard_range",
    "write_store",
]
