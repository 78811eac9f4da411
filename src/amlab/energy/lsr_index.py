"""An exact index for LSR: memories grouped into balls, pruned by the triangle inequality.

Memory mu is active at x only when ||x - xi_mu|| < r = sqrt(2/beta). The index groups the
memories into clusters k, each a ball with centre c_k and radius R_k >= ||xi_mu - c_k||
for every member. Since ||x - xi_mu|| >= ||x - c_k|| - R_k, no member of cluster k can be
active when ||x - c_k|| - R_k >= r, and the whole cluster is skipped. The members of the
clusters that remain are scored with the dense pass's expansion ||x||^2 - 2 x.xi + ||xi||^2
(:func:`~amlab.energy.distances.sq_distances`; here one batched matmul per block of
(ball, query) pairs), so the active sets, hence Z, the energy, the gradient and LSR's fixed
points, are those of the dense computation up to rounding: the two use different matmul
kernels, so a memory whose distance is within the rounding of the expansion from r can be
active in one and not the other (as between dense passes over batches of other sizes).
The pruning test keeps a margin that covers the rounding of both distance computations, so
a memory the dense pass would count is never skipped.

When a batch's supports are large the index cannot skip much, and
:meth:`BallIndex.support_stats` falls back to the dense pass; deciding costs one (B, K)
distance matrix to the K ~ M / 128 ball centres, under 1% of a dense pass.
"""

from __future__ import annotations

import math

import torch

from amlab.energy.distances import nearest_memory, sq_distances, sq_norms
from amlab.energy.lsr import (
    SupportStats,
    add_block_stats,
    lsr_support_stats,
    lsr_weights_,
    zero_stats,
)

#: Rows assigned to the centres at once while building (bounds the score block).
_ASSIGN_BLOCK = 1 << 14
#: Rows of a k-means sample, per cluster.
_SAMPLE_PER_CLUSTER = 32
#: Lloyd iterations on the sample. Exactness never depends on the clustering, only speed.
_KMEANS_ITERS = 8
#: Rounds of splitting balls wider than _SPLIT_RADIUS times the median radius in two.
_SPLIT_ROUNDS = 4
_SPLIT_RADIUS = 2.0
#: Memories per ball the build aims at.
LEAF_SIZE = 128
#: Use the index when its estimated work, the candidate (query, memory) pairs plus a fixed
#: cost per visited ball counted in pairs, is below this fraction of the dense B * M pairs.
DENSE_FALLBACK_FRACTION = 0.5
#: Overhead of visiting one ball, in (query, memory) pairs of dense work.
_BALL_OVERHEAD_PAIRS = 4096
#: Elements of the gathered members (pairs x ball size x D) scored at once.
_PAIR_BLOCK_ELEMENTS = 1 << 22


class BallIndex:
    """Memories grouped into balls (centre, radius), for exact LSR pruning.

    Build with :meth:`build`; :meth:`add` takes memories appended later (each joins the
    ball with the nearest centre, whose radius grows to hold it). The index holds ids, not
    copies of the memories: row k of ``slots`` (K, largest ball) lists the ids of ball k's
    members, padded with -1.
    """

    def __init__(self, centres: torch.Tensor, radii: torch.Tensor, labels: torch.Tensor) -> None:
        self.centres = centres  # (K, D)
        self.radii = radii  # (K,)
        self.labels = labels  # (M,) ball of each memory
        self._sort()

    @property
    def num_memories(self) -> int:
        return self.labels.shape[0]

    @property
    def num_clusters(self) -> int:
        return self.centres.shape[0]

    @classmethod
    @torch.no_grad()
    def build(cls, memories: torch.Tensor, leaf_size: int = LEAF_SIZE, seed: int = 0) -> BallIndex:
        """Two levels of k-means: about sqrt(M / leaf_size) coarse clusters, each split into
        balls of about ``leaf_size`` memories (k-means on samples, then every memory to its
        nearest centre). Costs a few dense passes of a small batch."""
        m = memories.shape[0]
        gen = torch.Generator().manual_seed(seed)
        coarse = _kmeans(memories, max(1, round(math.sqrt(m / leaf_size))), gen)
        top = _assign(memories, coarse)
        order = torch.argsort(top)
        sizes = torch.bincount(top, minlength=coarse.shape[0]).tolist()
        labels = torch.empty_like(top)
        centres = []
        first = 0
        for ids in order.split(sizes):
            if ids.numel() == 0:
                continue
            rows = memories[ids]
            fine = _kmeans(rows, math.ceil(ids.numel() / leaf_size), gen)
            labels[ids] = _assign(rows, fine) + first
            centres.append(fine)
            first += fine.shape[0]
        centres = torch.cat(centres)
        for _ in range(_SPLIT_ROUNDS):  # split balls that k-means left spanning two clusters
            radii = _radii(memories, centres, labels)
            sizes = torch.bincount(labels, minlength=centres.shape[0])
            wide = ((radii > _SPLIT_RADIUS * radii.median()) & (sizes > 1)).nonzero()
            if wide.numel() == 0:
                break
            order = torch.argsort(labels)
            starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)]).tolist()
            extra = []
            for k in wide.squeeze(1).tolist():
                ids = order[starts[k] : starts[k + 1]]
                rows = memories[ids]
                halves = _kmeans(rows, 2, gen)
                side = _assign(rows, halves)
                centres[k] = halves[0]
                moved = ids[side == 1]
                if moved.numel():
                    labels[moved] = centres.shape[0] + len(extra)
                    extra.append(halves[1:2])
            centres = torch.cat([centres, *extra])
        return cls(centres, _radii(memories, centres, labels), labels)

    @torch.no_grad()
    def add(self, new_memories: torch.Tensor) -> None:
        """Take memories appended after the last build or add (their ids follow on)."""
        if new_memories.shape[0] == 0:
            return
        labels = _assign(new_memories, self.centres)
        dist = _distances(new_memories, self.centres, labels)
        self.radii = self.radii.scatter_reduce(0, labels, dist, "amax")
        self.labels = torch.cat([self.labels, labels])
        self._sort()

    def _sort(self) -> None:
        """Ball sizes (K,) and ``slots`` from ``labels``."""
        order = torch.argsort(self.labels, stable=True)
        sizes = torch.bincount(self.labels, minlength=self.num_clusters)
        self.sizes = sizes
        offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        ball = self.labels[order]
        rank = torch.arange(self.num_memories, device=sizes.device) - offsets[ball]
        self.slots = torch.full(
            (self.num_clusters, int(sizes.max())), -1, dtype=torch.long, device=sizes.device
        )
        self.slots[ball, rank] = order

    @torch.no_grad()
    def candidates(self, x: torch.Tensor, radius: float, x_sq: torch.Tensor) -> torch.Tensor:
        """Bool (B, K): True where cluster k may hold a memory within ``radius`` of x[b].

        False is a proof: every member is at least ``radius`` from x[b] (in exact
        arithmetic, with a margin for the rounding of the computed distances).
        """
        c_sq = (self.centres * self.centres).sum(1)
        d2 = sq_distances(x, self.centres, x_sq, c_sq)
        # rounding of an expanded squared distance in dimension D is below (D + 8) u (|x|^2 +
        # |c|^2); the same bound, with |xi| <= |c| + R, covers the dense pass's distances.
        u = torch.finfo(x.dtype).eps
        d = x.shape[1]
        radii = self.radii * (1 + 16 * u)
        err_centre = (d + 8) * u * (x_sq[:, None] + c_sq[None, :])
        err_member = (d + 8) * u * (x_sq[:, None] + (c_sq.sqrt() + radii).square()[None, :])
        lower = (d2 - err_centre).clamp_min(0.0).sqrt() - radii[None, :]
        far = (lower > 0) & (lower.square() - err_member > radius**2 * (1 + 16 * u))
        return ~far

    @torch.no_grad()
    def support_stats(
        self,
        x: torch.Tensor,
        memories: torch.Tensor,
        beta: float,
        *,
        mem_sq: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> SupportStats:
        """:func:`~amlab.energy.lsr.lsr_support_stats` through the index: Z (B,), active
        count (B,) and sum of active memories (B, D), visiting only the clusters that can
        hold an active memory. Falls back to the dense pass when too little can be skipped.
        """
        if self.num_memories != memories.shape[0]:
            raise ValueError(
                f"the index covers {self.num_memories} memories but there are "
                f"{memories.shape[0]}; add the new memories to the index first."
            )
        if mem_sq is None:
            mem_sq = sq_norms(memories)
        x_sq = (x * x).sum(1)
        mask = self.candidates(x, math.sqrt(2.0 / beta), x_sq) & (self.sizes > 0)
        per_cluster = mask.sum(0)
        visited = per_cluster.nonzero().squeeze(1)
        pairs = int((per_cluster * self.sizes).sum()) + _BALL_OVERHEAD_PAIRS * visited.numel()
        if pairs > DENSE_FALLBACK_FRACTION * x.shape[0] * memories.shape[0]:
            return lsr_support_stats(x, memories, beta, mem_sq=mem_sq, chunk_size=chunk_size)
        stats = zero_stats(x)
        # (ball, query) candidate pairs, a block at a time: each pair scores the ball's
        # members (padded to the largest ball) with one batched matmul
        balls, queries = mask.T.nonzero(as_tuple=True)
        block = max(1, _PAIR_BLOCK_ELEMENTS // (self.slots.shape[1] * x.shape[1]))
        for k, q in zip(balls.split(block), queries.split(block), strict=True):
            ids = self.slots[k]  # a padding slot, -1, picks the last memory: weight zeroed below
            members = memories[ids]  # (P, L, D)
            d2 = torch.baddbmm(
                (x_sq[q, None] + mem_sq[ids])[:, None, :],
                x[q, None, :],
                members.transpose(1, 2),
                alpha=-2.0,
            ).squeeze(1)
            weights = lsr_weights_(d2.clamp_min_(0.0), beta).mul_(ids >= 0)
            add_block_stats(stats, weights, members, q)
        return stats


def _kmeans(rows: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k centres (k, D) of rows (N, D): k-means++ seeding and Lloyd's iterations on a
    sample of 32 k rows."""
    k = min(k, rows.shape[0])
    ids = torch.randperm(rows.shape[0], generator=gen)[: k * _SAMPLE_PER_CLUSTER]
    sample = rows[ids.to(rows.device)]
    picks = [0]
    d2 = ((sample - sample[0]) ** 2).sum(1)
    for _ in range(1, k):  # each next seed drawn with probability ~ squared distance
        weights = d2.cpu().double()
        pick = int(torch.multinomial(weights, 1, generator=gen)) if weights.sum() > 0 else 0
        picks.append(pick)
        d2 = torch.minimum(d2, ((sample - sample[pick]) ** 2).sum(1))
    centres = sample[picks].clone()
    for _ in range(_KMEANS_ITERS):
        labels = nearest_memory(sample, centres)[0]
        sums = torch.zeros_like(centres).index_add_(0, labels, sample)
        counts = torch.bincount(labels, minlength=k).to(sample.dtype)
        filled = counts > 0  # an empty cluster keeps its old centre
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def _assign(rows: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Nearest centre (N,) of each row."""
    return torch.cat([nearest_memory(part, centres)[0] for part in rows.split(_ASSIGN_BLOCK)])


def _radii(memories: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Radius (K,) of each ball: its largest member distance (0 for an empty ball)."""
    dist = _distances(memories, centres, labels)
    return dist.new_zeros(centres.shape[0]).scatter_reduce_(0, labels, dist, "amax")


def _distances(rows: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """||row - centres[label]|| (N,) as the norm of the difference: accurate, so radii built
    from it bound the members' distances."""
    return torch.cat(
        [
            torch.linalg.vector_norm(part - centres[lab], dim=1)
            for part, lab in zip(
                rows.split(_ASSIGN_BLOCK), labels.split(_ASSIGN_BLOCK), strict=True
            )
        ]
    )
