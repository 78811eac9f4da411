"""Memories sharded over the ranks of a ``torch.distributed`` process group (gloo on CPUs,
NCCL on GPUs): :class:`ShardedDenseAM`, a DenseAM whose every method returns on every rank
what one process holding all the memories returns, and DrDAM writes summed over ranks
(:func:`add_from_ranks`, :func:`remove_from_ranks`). See docs/distributed.md.
"""

from amlab.distributed.drdam import add_from_ranks, remove_from_ranks
from amlab.distributed.group import init_group, merge_lse
from amlab.distributed.sharded_dense_am import ShardedDenseAM, shard_range

__all__ = [
    "ShardedDenseAM",
    "add_from_ranks",
    "init_group",
    "merge_lse",
    "remove_from_ranks",
    "shard_range",
]
