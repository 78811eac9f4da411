"""Local minima of DenseAM energies.

LSR (papers.md section 1). Inside the supports the gradient is
``sum_{mu active} (x - xi_mu) / Z``, so x is a critical point exactly when it is the
centroid of its own active set, and every such point is a strict local minimum. A set
S of memories therefore gives a minimum iff, with ``c`` its centroid and ``r^2 = 2/beta``,

    q_S = max_{mu in S} ||c - xi_mu||^2  <  r^2  <=  p_S = min_{nu not in S} ||c - xi_nu||^2

(every member active at c, no other memory active). Members of such an S lie pairwise
within 2r, so S is a clique of the graph joining memories closer than 2r: the exact
enumeration walks those cliques only, breadth-first in vectorised batches, instead of
all 2^M subsets. Because the condition is an interval in r^2, one walk over the cliques
of the smallest beta counts the minima at every beta of a grid at once
(:func:`lsr_minima_counts`).

LSE minima have no closed form: :func:`lse_minima` descends from many starts and
de-duplicates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from amlab.energy.distances import sq_distances
from amlab.errors import AmlabError, as_float_tensor, check_positive, check_positive_int
from amlab.models import DenseAM

#: cliques evaluated per batch; bounds the memory of the enumeration
BATCH = 1 << 16


@dataclass
class Minima:
    """Local minima of an energy.

    points: (K, D) the minima.
    supports: (K, M) bool, the memories active at each minimum (LSR), or for LSE the
        memory each minimum retrieves (a one-hot row) when it is a stored one.
    energies: (K,) energy at each minimum.
    stored: (K,) bool, True for a stored memory (LSR: support of size 1; LSE: within
        the classification radius of a memory), False for an emergent minimum.
    """

    points: torch.Tensor
    supports: torch.Tensor
    energies: torch.Tensor
    stored: torch.Tensor

    def __len__(self) -> int:
        return self.points.shape[0]

    @property
    def num_stored(self) -> int:
        return int(self.stored.sum())

    @property
    def num_emergent(self) -> int:
        return len(self) - self.num_stored

    @property
    def sizes(self) -> torch.Tensor:
        """(K,) number of memories in each support."""
        return self.supports.sum(1)


# -- LSR: exact enumeration ------------------------------------------------------------------
def _memories(memories: Any) -> torch.Tensor:
    mem = as_float_tensor(memories, "memories", dtype=torch.float64)
    if mem.ndim != 2 or mem.shape[0] == 0 or mem.shape[1] == 0:
        raise AmlabError(f"memories must have shape (M, D) with M, D >= 1; got {tuple(mem.shape)}.")
    return mem


def _overlap_graph(mem: torch.Tensor, r2: float) -> torch.Tensor:
    """Adjacency (M, M) of memories closer than 2r (their supports overlap), no self-loops.

    Squared distances by differences when small (exact), else by the expansion."""
    m, d = mem.shape
    if m * m * d <= 1 << 22:
        diff = mem[:, None, :] - mem[None, :, :]
        pair_sq = (diff * diff).sum(-1)
    else:
        sq = (mem * mem).sum(1)
        pair_sq = sq_distances(mem, mem, sq, sq)
    adjacency = pair_sq < 4.0 * r2
    adjacency.fill_diagonal_(False)
    return adjacency


def _clique_batches(
    mem: torch.Tensor,
    adjacency: torch.Tensor,
    members: torch.Tensor,
    candidates: torch.Tensor,
    max_size: int | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (membership (n, M) bool, member sums (n, D)) for every clique grown from the
    starting ``members`` (n0, M) by adding, one at a time and in increasing index order,
    memories in ``candidates`` (n0, M) adjacent to all members. Each clique comes once."""
    m = mem.shape[0]
    order = torch.arange(m)
    stack = [(members, members.to(mem.dtype) @ mem, candidates)]
    while stack:
        member, sums, cand = stack.pop()
        yield member, sums
        if max_size is not None and int(member[0].sum()) >= max_size:
            continue
        rows, cols = cand.nonzero(as_tuple=True)
        for lo in range(0, rows.numel(), BATCH):
            r, c = rows[lo : lo + BATCH], cols[lo : lo + BATCH]
            new_member = member[r].clone()
            new_member[torch.arange(r.numel()), c] = True
            new_cand = cand[r] & adjacency[c] & (order[None, :] > c[:, None])
            stack.append((new_member, sums[r] + mem[c], new_cand))


def _spread(
    mem: torch.Tensor, member: torch.Tensor, sums: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centroids (n, D), q = max member and p = min non-member squared distance (n,)."""
    centroid = sums / member.sum(1, keepdim=True)
    d2 = sq_distances(centroid, mem, (centroid * centroid).sum(1), (mem * mem).sum(1))
    q = torch.where(member, d2, torch.full_like(d2, -1.0)).amax(1)
    p = torch.where(member, torch.full_like(d2, float("inf")), d2).amin(1)
    return centroid, q, p


def _lsr_result(mem: torch.Tensor, beta: float, points: list, supports: list) -> Minima:
    m, d = mem.shape
    pts = torch.cat(points) if points else mem.new_zeros((0, d))
    sup = torch.cat(supports) if supports else torch.zeros((0, m), dtype=torch.bool)
    energies = DenseAM(mem, energy="lsr", beta=beta).energy(pts) if len(pts) else pts[:, 0]
    return Minima(pts, sup, energies.detach(), sup.sum(1) == 1)


def _all_cliques(
    mem: torch.Tensor, adjacency: torch.Tensor, max_size: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every clique of ``adjacency`` (each once) as (membership (n, M), member sums (n, D)).

    When every pair is adjacent (small beta: all supports overlap) every subset is a
    clique, and the subsets are generated directly from their bit patterns, which is
    much cheaper than growing them.
    """
    m = mem.shape[0]
    if m <= 40 and bool(adjacency.sum() == m * (m - 1)):
        bits = torch.arange(m)
        for lo in range(1, 2**m, BATCH):
            ids = torch.arange(lo, min(lo + BATCH, 2**m))
            member = ((ids[:, None] >> bits) & 1).bool()
            if max_size is not None:
                member = member[member.sum(1) <= max_size]
            yield member, member.to(mem.dtype) @ mem
        return
    order = torch.arange(m)
    yield from _clique_batches(
        mem,
        adjacency,
        torch.eye(m, dtype=torch.bool),
        adjacency & (order[None, :] > order[:, None]),
        max_size,
    )


def lsr_minima(memories: Any, beta: float, *, max_size: int | None = None) -> Minima:
    """Every local minimum of the LSR energy (eps = 0), exactly, by clique enumeration.

    memories: (M, D). max_size limits the support size searched (None: no limit).
    Computed in float64.
    """
    mem = _memories(memories)
    r2 = 2.0 / check_positive(beta, "beta")
    adjacency = _overlap_graph(mem, r2)
    points, supports = [], []
    for member, sums in _all_cliques(mem, adjacency, max_size):
        centroid, q, p = _spread(mem, member, sums)
        keep = (q < r2) & (p >= r2)
        points.append(centroid[keep])
        supports.append(member[keep])
    return _lsr_result(mem, beta, points, supports)


def lsr_minima_counts(memories: Any, betas: Any) -> dict[str, torch.Tensor]:
    """Numbers of stored and emergent LSR minima at every beta of a grid, in one walk.

    Each set S is a minimum for r^2 = 2/beta in the interval [q_S, p_S) (see the module
    docstring), so the cliques at the smallest beta are walked once and each adds one to
    the betas whose r^2 falls in its interval. Returns {"betas", "stored", "emergent"},
    each (len(betas),).
    """
    mem = _memories(memories)
    betas = as_float_tensor(betas, "betas", dtype=torch.float64).reshape(-1)
    if betas.numel() == 0 or bool((betas <= 0).any()):
        raise AmlabError("betas must be a non-empty list of positive numbers.")
    r2 = 2.0 / betas  # r^2 of each beta, computed as lsr_minima does
    r2_sorted, order = torch.sort(r2)
    adjacency = _overlap_graph(mem, float(r2_sorted[-1]))
    n = betas.numel()
    counts = {1: torch.zeros(n + 1, dtype=torch.long), 2: torch.zeros(n + 1, dtype=torch.long)}
    for member, sums in _all_cliques(mem, adjacency, None):
        _, q, p = _spread(mem, member, sums)
        # grid indices k (sorted by r^2) with q < r2[k] <= p
        first = torch.searchsorted(r2_sorted, q, right=True)
        last = torch.searchsorted(r2_sorted, p, right=True)
        some = first < last
        single = member.sum(1) == 1
        for size, rows in ((1, some & single), (2, some & ~single)):
            counts[size] += torch.bincount(first[rows], minlength=n + 1)
            counts[size] -= torch.bincount(last[rows], minlength=n + 1)
    per_sorted = {k: torch.cumsum(v, 0)[:n] for k, v in counts.items()}
    stored, emergent = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.long)
    stored[order], emergent[order] = per_sorted[1], per_sorted[2]
    return {"betas": betas, "stored": stored, "emergent": emergent}


def lsr_minima_brute_force(memories: Any, beta: float) -> Minima:
    """Test oracle: every subset of the memories (2^M - 1 of them, M <= 20) is tried; a
    subset is kept when the active set of its centroid, computed directly, is itself."""
    mem = _memories(memories)
    m = mem.shape[0]
    if m > 20:
        raise AmlabError(f"brute force over 2^{m} subsets is too large; use lsr_minima.")
    r2 = 2.0 / check_positive(beta, "beta")
    ids = torch.arange(1, 2**m)
    member = ((ids[:, None] >> torch.arange(m)) & 1).bool()
    centroid = member.double() @ mem / member.sum(1, keepdim=True)
    # direct differences (not the expansion the enumeration uses), a block of subsets at a time
    active = torch.cat(
        [((block[:, None, :] - mem) ** 2).sum(-1) < r2 for block in centroid.split(4096)]
    )
    keep = (active == member).all(1)
    return _lsr_result(mem, beta, [centroid[keep]], [member[keep]])


def lsr_neighbour_minima(
    memories: Any, beta: float, index: int, *, max_size: int = 3, max_neighbours: int = 64
) -> Minima:
    """Minima whose support contains memory ``index``, among its neighbours within 2r.

    The paper's search for image data, where the whole enumeration is out of reach:
    supports are cliques holding ``index`` of at most ``max_size`` memories drawn from
    the ``max_neighbours`` nearest memories within 2r of it. Each candidate is checked
    exactly: a centroid lies within r of memory ``index``, so only memories within 2r of
    it can be active there, and all of those are checked.
    """
    mem = _memories(memories)
    m = mem.shape[0]
    index = check_positive_int(index, "index", allow_zero=True)
    if index >= m:
        raise AmlabError(f"index {index} is out of range for {m} memories.")
    r2 = 2.0 / check_positive(beta, "beta")
    d2 = ((mem - mem[index]) ** 2).sum(1)
    d2[index] = -1.0  # first in the ordering below
    ball = (d2 < 4.0 * r2).nonzero().squeeze(1)
    ball = ball[torch.argsort(d2[ball], stable=True)]  # memory index first, then by distance
    sub = mem[ball]
    adjacency = _overlap_graph(sub, r2)
    root = torch.zeros(1, ball.numel(), dtype=torch.bool)
    root[0, 0] = True
    candidates = adjacency[:1].clone()
    candidates[0, 1 + max_neighbours :] = False
    points, supports = [], []
    for member, sums in _clique_batches(sub, adjacency, root, candidates, max_size):
        centroid, q, p = _spread(sub, member, sums)
        keep = (q < r2) & (p >= r2)
        full = torch.zeros(int(keep.sum()), m, dtype=torch.bool)
        full[:, ball] = member[keep]
        points.append(centroid[keep])
        supports.append(full)
    return _lsr_result(mem, beta, points, supports)


# -- search from many starts -------------------------------------------------------------------
def unique_rows(x: torch.Tensor, tol: float) -> torch.Tensor:
    """Indices of rows of x (N, D) kept so that no two kept rows lie within ``tol``
    (greedy in row order). Rows that round to the same point of a tol-grid are
    collapsed first, so the greedy pass only sees a few candidates per minimum."""
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    _, candidates = first_unique(torch.round(x / tol))
    kept: list[int] = []
    for i in candidates.tolist():
        if not kept or float(torch.cdist(x[i : i + 1], x[kept]).min()) > tol:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long)


def lsr_multistart_minima(memories: Any, beta: float, starts: Any, *, steps: int = 1000) -> Minima:
    """Minima reached by LSR's exact solver from ``starts`` (N, D), de-duplicated by support.

    Starts outside every support (energy +inf) are dropped.
    """
    mem = _memories(memories)
    am = DenseAM(mem, energy="lsr", beta=beta)
    out = am.retrieve(
        as_float_tensor(starts, "starts", dtype=torch.float64), method="fixed_point", steps=steps
    )
    ok = out.converged
    states = out.states[ok]
    r2 = 2.0 / am.beta
    support = sq_distances(states, mem, (states * states).sum(1), (mem * mem).sum(1)) < r2
    _, first = first_unique(support)
    return _lsr_result(mem, beta, [states[first]], [support[first]])


def first_unique(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of a matrix and the sorted indices of the first occurrence of each."""
    uniq, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((uniq.shape[0],), rows.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(rows.shape[0]), reduce="amin")
    return uniq, torch.sort(first).values


def lse_minima(
    memories: Any,
    beta: float,
    starts: Any,
    *,
    steps: int = 2000,
    step_size: Any = 0.5,
    tol: float = 1e-9,
    merge_tol: float | None = None,
    stored_radius: float | None = None,
) -> Minima:
    """LSE minima found by gradient descent from ``starts`` (N, D), de-duplicated.

    Converged end points closer than ``merge_tol`` (default: 1e-3 times the smallest
    distance between memories) count as one minimum. A minimum is *stored* when it lies
    within ``stored_radius`` of a memory (default: a quarter of the smallest distance
    between memories), else emergent. Points that did not converge are dropped.
    """
    mem = _memories(memories)
    min_dist = float(torch.pdist(mem).min()) if mem.shape[0] > 1 else 1.0
    merge_tol = 1e-3 * min_dist if merge_tol is None else merge_tol
    stored_radius = 0.25 * min_dist if stored_radius is None else stored_radius
    am = DenseAM(mem, energy="lse", beta=beta)
    out = am.retrieve(
        as_float_tensor(starts, "starts", dtype=torch.float64),
        method="gd",
        steps=steps,
        step_size=step_size,
        tol=tol,
    )
    states = out.states[out.converged]
    keep = unique_rows(states, merge_tol)
    points = states[keep]
    nearest, dist = (
        am.nearest(points) if len(points) else (torch.zeros(0, dtype=torch.long), points[:, 0])
    )
    stored = dist < stored_radius
    supports = torch.zeros(len(points), mem.shape[0], dtype=torch.bool)
    supports[stored, nearest[stored]] = True
    return Minima(
        points, supports, am.energy(points).detach() if len(points) else points[:, 0], stored
    )
