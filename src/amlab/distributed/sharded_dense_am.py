"""A DenseAM whose memories are sharded over the ranks of a ``torch.distributed`` group.

Each rank holds a shard of the rows (any number, none included); every method returns on
every rank what one :class:`~amlab.models.DenseAM` holding all the memories returns, up to
rounding. It is that DenseAM with its passes over the memories made collective: each rank
runs the same streaming pass over its own shard (the LSR ball index, if any, per shard),
and the partial results are merged by all-reduces (:func:`~amlab.distributed.group.merge_lse`
for LSE; the sums of Z, active counts and active sums for LSR). Everything else, the
descent engine included, runs unchanged on every rank over the same numbers, so every rank
takes the same steps. One pass sends B (D + 2) numbers through all-reduces.

Every rank must make the same calls with the same states (checked at each call), clamp mask
and options, in the same order.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from amlab.distributed.group import (
    all_gather,
    all_reduce_,
    check_group,
    merge_lse,
    shard_range,
)
from amlab.distributed.store import MemoryStore
from amlab.energy.distances import nearest_memory
from amlab.energy.lse import memory_bias
from amlab.energy.lsr import SupportStats, lsr_energy_from_stats
from amlab.energy.lsr_index import BallIndex
from amlab.errors import AmlabError
from amlab.models.dense_am import ENERGIES, DenseAM


class ShardedDenseAM(DenseAM):
    """:class:`~amlab.models.DenseAM` over the memories of every rank of ``group``.

    Args:
        shard: (M_r, D) this rank's memories (M_r may be 0; the group holds at least one).
        energy, beta, eps, chunk_size, index, dtype: as for DenseAM; the same on every rank.
        group: the process group (None: the default group, which must exist).

    ``num_memories`` and ``memories`` are this rank's shard; ``total_memories`` the group's,
    ``offset`` the index of this shard's first row among them. :meth:`add` is collective:
    every rank calls it, with its own patterns (possibly none). Gradients of
    :meth:`energy` flow to the states (every rank's copy gets the whole gradient), not to
    the memories.
    """

    _MIN_MEMORIES = 0
    _FUSED_UPDATE = False
    _LOCKSTEP = True  # on a GPU, every rank must drop converged queries at the same step

    def __init__(
        self,
        shard: Any,
        energy: str = "lse",
        beta: float = 1.0,
        eps: float = 0.0,
        chunk_size: int | None = None,
        index: str = "auto",
        dtype: torch.dtype | str | None = None,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        rank, world_size = check_group(group)
        super().__init__(shard, energy, beta, eps, chunk_size, index, dtype)
        self.group, self.rank, self.world_size = group, rank, world_size
        self._sizes = self._gather_sizes()

    @classmethod
    def from_all(
        cls, memories: Any, group: dist.ProcessGroup | None = None, **options: Any
    ) -> ShardedDenseAM:
        """The sharded memory over ``memories`` (M, D), the same on every rank: each keeps its
        rows of the even split (:func:`shard_range`)."""
        rank, world_size = check_group(group)
        rows = torch.as_tensor(memories)  # a tensor as it is, not copied
        lo, hi = shard_range(rows.shape[0] if rows.ndim else 0, rank, world_size)
        return cls(rows[lo:hi], group=group, **options)

    @classmethod
    def from_store(
        cls, directory: Any, group: dist.ProcessGroup | None = None, **options: Any
    ) -> ShardedDenseAM:
        """The sharded memory over a store on disk (:func:`~amlab.distributed.write_store`),
        written for any number of ranks: each rank reads the rows of its even split. Every
        rank must see the same store: a rank that cannot read it raises why, and the others
        that it could not; ranks that read different stores all raise, naming their ids."""
        rank, world_size = check_group(group)
        try:
            store = MemoryStore(directory)
            rows, failure = store.rows_for(rank, world_size), None
        except AmlabError as err:
            store, rows, failure = None, None, err
        _check_same_store(directory, store, group)
        if failure is not None:
            raise failure
        return cls(rows, group=group, **options)

    def _gather_sizes(self) -> list[int]:
        """Every rank's shard size, after checking that the ranks agree on everything else."""
        mine = torch.tensor(
            [
                self.memories.shape[0],
                self.dim,
                self.beta,
                self.eps,
                ENERGIES.index(self.energy_name),
                self.memories.element_size(),
            ],
            dtype=torch.float64,
            device=self.memories.device,
        )
        rows = torch.stack(all_gather(mine, self.group)).tolist()
        names = ("dimension", "beta", "eps", "energy", "bytes per number (dtype)")
        for rank, row in enumerate(rows):
            for name, theirs, ours in zip(names, row[1:], rows[0][1:], strict=True):
                if theirs != ours:
                    raise AmlabError(
                        f"the ranks disagree on the memory's {name}: rank 0 has {ours:g}, rank "
                        f"{rank} has {theirs:g}. Build the sharded memory with the same "
                        "options and dimension on every rank."
                    )
        sizes = [int(row[0]) for row in rows]
        if sum(sizes) == 0:
            raise AmlabError("every shard is empty; give at least one rank some memories.")
        return sizes

    @property
    def total_memories(self) -> int:
        """Memories held by the whole group."""
        return sum(self._sizes)

    @property
    def offset(self) -> int:
        """Index of this rank's first memory among all the group's (ranks in order)."""
        return sum(self._sizes[: self.rank])

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, rank={self.rank}/{self.world_size}, "
            f"total_memories={self.total_memories}"
        )

    def add(self, patterns: Any) -> ShardedDenseAM:
        """Collective: every rank stores its own patterns (N_r, D) (N_r may be 0) after its
        shard's memories. Returns self."""
        super().add(patterns)
        self._sizes = self._gather_sizes()
        return self

    def _states(self, x: Any, name: str = "x") -> tuple[torch.Tensor, bool]:
        states, single = super()._states(x, name)
        if name == "x":  # the states every rank descends from must be the same
            self._check_same(states)
        return states, single

    def _check_same(self, x: torch.Tensor) -> None:
        weights = torch.arange(1, x.shape[1] + 1, dtype=torch.float64, device=x.device)
        sums = x.to(torch.float64) @ weights
        mine = torch.stack([sums.sum(), (sums * sums).sum(), sums.new_tensor(x.shape[0])])
        rows = torch.stack(all_gather(mine, self.group)).tolist()
        for rank, row in enumerate(rows):
            if row != rows[0]:
                raise AmlabError(
                    f"rank {rank} passed other states than rank 0 (a batch of {int(row[2])} "
                    f"against {int(rows[0][2])}, or other values). Pass every rank the same "
                    "states: a sharded memory answers for the whole group."
                )

    # -- the passes over the memories, made collective -----------------------------------
    def _lse_pass(self, x: torch.Tensor, **stream: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.num_memories:
            lse, mean = super()._lse_pass(x, **stream)
        else:
            with_mean = stream.get("with_mean", True)
            lse = x.new_full((x.shape[0],), -math.inf)
            mean = x.new_zeros(x.shape) if with_mean else None
        return merge_lse(lse, mean, self.group)

    def _lsr_stats(self, x: torch.Tensor) -> SupportStats:
        z, count, active_sum = super()._lsr_stats(x)
        packed = torch.cat([z[:, None], count[:, None], active_sum], 1)
        all_reduce_(packed, "sum", self.group)
        return packed[:, 0], packed[:, 1], packed[:, 2:]

    def _lsr_energy(self, x: torch.Tensor) -> torch.Tensor:
        z = all_reduce_(super()._lsr_stats(x)[0].clone(), "sum", self.group)
        return lsr_energy_from_stats(z, self.beta, self.eps)

    def lsr_index(self, x: torch.Tensor | None = None) -> BallIndex | None:
        """This shard's LSR ball index (None: dense passes; always for an empty shard)."""
        return super().lsr_index(x) if self.num_memories else None

    def _memory_extent(self) -> tuple[float, float]:
        """The largest norm and the bias spread over every rank's memories (one small
        all-reduce: the descent's bound must hold for states drawn toward any memory)."""
        mem_sq = self.memory_sq_norms()
        bias = memory_bias(self.memories, self._lse_form, mem_sq)
        values = mem_sq.new_full((3,), -math.inf)
        if self.num_memories:
            values[0] = mem_sq.max().sqrt()
            if bias is not None:
                values[1], values[2] = bias.max(), -bias.min()
        norm, top, minus_bottom = all_reduce_(values, "max", self.group).tolist()
        return max(norm, 0.0), (0.0 if bias is None else top + minus_bottom)

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            energy, grad = self._oracle("gd")(x.detach(), 0)
            return _EnergyWithGradient.apply(x, energy, grad)
        with torch.no_grad():
            return self._retrieval("gd", record_energies=True)[1](x)

    def nearest(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Index (B,) among all the group's memories of each state's nearest one, and the
        distance (B,) to it (ties: the lowest index)."""
        x, single = self._states(x)
        index, dist_ = nearest_memory(x, self.memories, chunk_size=self.chunk_size)
        best = all_reduce_(dist_.clone(), "min", self.group)
        mine = torch.where(dist_ == best, index + self.offset, self.total_memories)
        index = all_reduce_(mine, "min", self.group)
        return (index[0], best[0]) if single else (index, best)


def _check_same_store(directory: Any, store: MemoryStore | None, group) -> None:
    """Collective: every rank says whether it opened a store at ``directory`` (``store``
    None: it could not) and which (its id); an AmlabError on every rank where any rank
    could not, or where they opened different stores."""
    # the id is 32 hex digits: two 60-bit halves fit int64s (the first 30 digits tell apart)
    store_id = "0" * 30 if store is None else store.store_id
    mine = torch.tensor([store is None, int(store_id[:15], 16), int(store_id[15:30], 16)])
    rows = [row.tolist() for row in all_gather(mine, group)]
    failed = [rank for rank, row in enumerate(rows) if row[0]]
    if failed and store is not None:
        raise AmlabError(
            f"rank(s) {failed} could not read the memory store {directory} (each says why). "
            "Every rank must see the whole store: on several machines copy it to the same "
            "path on each, or put it on a filesystem they share."
        )
    ids = {tuple(row[1:]) for row in rows}
    if not failed and len(ids) > 1:
        found = [f"{a:015x}{b:015x}" for _, a, b in rows]
        raise AmlabError(
            f"the ranks read different memory stores at {directory} (store ids, by rank: "
            f"{found}); give every rank a copy of the same store."
        )


class _EnergyWithGradient(torch.autograd.Function):
    """The energy (B,) as a function of the states x (B, D) whose gradient is the one the
    collective pass computed with it (autograd cannot follow a pass across ranks)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor):
        ctx.save_for_backward(grad)
        return energy.clone()

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return upstream[:, None] * grad, None, None
