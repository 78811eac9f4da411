"""Local minima of DenseAM energies.

LSR (papers.md section 1). Inside the supports the gradient is
``sum_{mu active} (x - xi_mu) / Z``, so x is a critical point exactly when it is the
centroid of its own active set, and every such point is a strict local minimum. A set
S of memories therefore gives a minimum iff, with ``c`` its centroid and ``r^2 = 2/beta``,

    q_S = max_{mu in S} ||c - xi_mu||^2  <  r^2  <=  p_S = min_{nu not in S} ||c - xi_nu||^2

(every member active at c, no other memory active). The exact search grows sets one
member at a time, in a fixed order of the memories (so each set comes once), and cuts a
set, with every set grown from it, by two conditions every support must meet:

- its members lie pairwise within 2r (their balls overlap), so a memory is added only
  when it is within 2r of every member;
- every member is nearer to c than every non-member (q_S < p_S). With
  ``f_S(mu) = sum_{k in S} ||xi_k - xi_mu||^2`` one has
  ``||c - xi_mu||^2 = f_S(mu) / |S| - const(S)``, so this is ``f_S(i) < f_S(j)`` for
  every member i and non-member j, and f_S is a sum over the members. With T a set and X
  the memories no set grown from it can hold (earlier in the order, or not within 2r of
  a member), the memories k that can still join lower ``f(i) - f(j)`` by at most
  ``sum_k min(0, d(k, i) - d(k, j))`` (d the squared distance), so T is cut when for
  some i in T, j in X

      f_T(i) - f_T(j) + sum_{k after T's last member} min(0, d(k, i) - d(k, j)) > 0

  (evaluated for a whole batch of sets at once, with a margin above rounding).

The sets that survive are checked exactly. The second condition holds at every r, so one
search with the adjacency of the largest r of a grid counts the minima at every beta of
the grid at once (:func:`lsr_minima_counts`): each set is a minimum for r^2 in [q_S, p_S).

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

#: candidate sets per batch of the exact search; bounds its memory
BATCH = 1 << 14
#: the most candidates for which the search uses the cut (its table is CUT_MAX^3 floats)
CUT_MAX = 128


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


# -- LSR: exact search ------------------------------------------------------------------
def _memories(memories: Any) -> torch.Tensor:
    mem = as_float_tensor(memories, "memories", dtype=torch.float64)
    if mem.ndim != 2 or mem.shape[0] == 0 or mem.shape[1] == 0:
        raise AmlabError(f"memories must have shape (M, D) with M, D >= 1; got {tuple(mem.shape)}.")
    return mem


def _pair_sq_distances(mem: torch.Tensor) -> torch.Tensor:
    """Squared distances (M, M) between memories: by differences when small (exact), else
    by the expansion about their mean."""
    m, d = mem.shape
    if m * m * d <= 1 << 22:
        diff = mem[:, None, :] - mem[None, :, :]
        return (diff * diff).sum(-1)
    centred = mem - mem.mean(0)
    sq = (centred * centred).sum(1)
    return sq_distances(centred, centred, sq, sq).clamp_(min=0.0).fill_diagonal_(0.0)


def _search_margin(mem: torch.Tensor, pair_sq: torch.Tensor) -> float:
    """How far above zero the cut's bound must be before a branch is cut.

    With scale = the largest squared distance + the largest coordinate times
    sqrt(D * that) + D times the largest squared coordinate about the mean: rounding moves
    the bound (sums of at most 3M squared distances) by about (M + D) ulps of M * scale,
    and the exact check's q_S - p_S (from a centroid rounded by about M ulps of the
    largest coordinate) by about (M + D) ulps of scale. A cut needs the bound above
    1e-9 of M * scale, orders of magnitude above both for M + D up to ~1e5, so a branch
    that is cut holds no set the exact check would keep, rounding included."""
    m, d = mem.shape
    dmax = float(pair_sq.max())
    spread = float((mem - mem.mean(0)).abs().max())
    scale = dmax + (dmax * d) ** 0.5 * float(mem.abs().max()) + d * spread**2
    return 1e-9 * m * scale


def _search_order(mem: torch.Tensor) -> torch.Tensor:
    """Order (n,) in which the search decides these memories: along their first principal
    axis, so that the memories decided early lie on one side (the cut is the strongest
    when members and non-members are both decided). Any order is exact."""
    if mem.shape[0] < 3:
        return torch.arange(mem.shape[0])
    centred = mem - mem.mean(0)
    axis = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    return torch.argsort(centred @ axis, stable=True)


def _possible_supports(
    mem: torch.Tensor,
    pair_sq: torch.Tensor,
    r2_max: float,
    *,
    members: torch.Tensor | None = None,
    max_size: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield batches (n, M) of membership masks: every non-empty set of memories that
    holds ``members``, has at most ``max_size`` members and can be the support of a
    minimum at some r^2 <= r2_max (both conditions of the module docstring), each once.
    A yielded set still needs the exact check.

    Only the memories that can join (the candidates) enter the second condition; the
    others (not within 2r of a member of ``members``, or in another connected component
    of the overlap graph) are left to the exact check."""
    m = mem.shape[0]
    adjacent = pair_sq < 4.0 * r2_max  # the diagonal too: a memory is within 2r of itself
    forced = torch.zeros(m, dtype=torch.bool) if members is None else members
    if not bool(adjacent[forced][:, forced].all()):
        return
    free = adjacent[forced].all(0) & ~forced
    tol = _search_margin(mem, pair_sq)
    if bool(forced.any()):
        yield from _search(mem, pair_sq, adjacent, forced, free, max_size, tol)
        return
    # a support is a clique, so it lies within one connected component
    label = torch.where(free, torch.arange(m), m)
    while True:
        reached = torch.where(adjacent & free[None, :], label[None, :], m).amin(1)
        reached = torch.where(free, torch.minimum(label, reached), m)
        if torch.equal(reached, label):
            break
        label = reached  # each memory takes the smallest label of its neighbours
    for component in label[free].unique().tolist():
        yield from _search(mem, pair_sq, adjacent, forced, label == component, max_size, tol)


def _search(
    mem: torch.Tensor,
    pair_sq: torch.Tensor,
    adjacent: torch.Tensor,
    forced: torch.Tensor,
    free: torch.Tensor,
    max_size: int | None,
    tol: float,
) -> Iterator[torch.Tensor]:
    """The search of :func:`_possible_supports` over the sets holding every ``forced``
    memory and any of the ``free`` ones.

    Each set is grown from its smallest members by adding, one at a time and in search
    order, memories within 2r of all its members (each set comes once). A set's subtree
    adds only its candidates (later memories within 2r of every member); every other
    memory is out of it, and the cut compares members with those. Above
    ``CUT_MAX`` candidates the cut is left out (its table grows as the cube): the sets
    are then the cliques, each checked exactly."""
    m = mem.shape[0]
    free_ids = free.nonzero().squeeze(1)
    # the candidates: the forced members, then the free memories in search order
    order = torch.cat([forced.nonzero().squeeze(1), free_ids[_search_order(mem[free_ids])]])
    n_in, n = int(forced.sum()), order.numel()
    d = pair_sq[order][:, order]
    adjacent = adjacent[order][:, order]
    position = torch.arange(n)
    later = position[None, :] > position[:, None]  # later[k, l]: l comes after k
    gain = None
    if n <= CUT_MAX:
        # gain[k, i, j]: sum over the positions l after k of min(0, d(l, i) - d(l, j))
        lower = (d[:, :, None] - d[:, None, :]).clamp_(max=0.0)
        gain = torch.cat([lower.flip(0).cumsum(0).flip(0)[1:], lower.new_zeros(1, n, n)])
    if n_in:
        member = (position < n_in)[None, :]
        grow = (position >= n_in)[None, :]
        stack = [(member, d[:n_in].sum(0, keepdim=True), grow, torch.tensor([n_in - 1]))]
    else:
        stack = [(torch.eye(n, dtype=torch.bool), d.clone(), adjacent & later, position)]
    found = []  # sets to check, yielded in batches of about BATCH
    while stack:
        member, f, grow, last = stack.pop()
        if gain is not None:
            keep = _not_cut(member, f, ~member & ~grow, tol, gain, last)
            member, f, grow, last = member[keep], f[keep], grow[keep], last[keep]
            done = _not_cut(member, f, ~member, tol)  # the set itself, all others out
        else:
            done = torch.ones(member.shape[0], dtype=torch.bool)
        if bool(done.any()):
            found.append(member[done])
        if sum(x.shape[0] for x in found) >= BATCH:
            yield _in_memory_order(torch.cat(found), order, m)
            found = []
        if max_size is not None:
            grow = grow & (member.sum(1, keepdim=True) < max_size)
        rows, cols = grow.nonzero(as_tuple=True)
        for lo in range(0, rows.numel(), BATCH):
            r, c = rows[lo : lo + BATCH], cols[lo : lo + BATCH]
            child = member[r]
            child[torch.arange(r.numel()), c] = True
            stack.append((child, f[r] + d[c], grow[r] & adjacent[c] & later[c], c))
    if found:
        yield _in_memory_order(torch.cat(found), order, m)


def _in_memory_order(member: torch.Tensor, order: torch.Tensor, m: int) -> torch.Tensor:
    """Membership masks (n, m) from masks (n, len(order)) over the memories ``order``."""
    full = torch.zeros(member.shape[0], m, dtype=torch.bool)
    full[:, order] = member
    return full


def _not_cut(
    member: torch.Tensor,
    f: torch.Tensor,
    out: torch.Tensor,
    tol: float,
    gain: torch.Tensor | None = None,
    last: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n,) False for the sets (n, M), all of one size, whose subtree the second condition
    cuts: some member i and memory j in ``out`` with f(i) - f(j) + gain[last, i, j] > tol
    (no gain: the set alone)."""
    n, size = member.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.bool)
    inside = member.nonzero()[:, 1].view(n, -1)  # each row's members, in order
    f_in = f.gather(1, inside)
    f_out = torch.where(out, f, float("inf"))
    chunk = max(1, (1 << 18) // (inside.shape[1] * size))
    keep = []
    for lo in range(0, n, chunk):
        rows = slice(lo, lo + chunk)
        worst = f_in[rows, :, None] - f_out[rows, None, :]
        if gain is not None:
            worst += gain[last[rows, None], inside[rows]]
        keep.append(worst.amax((1, 2)) <= tol)
    return torch.cat(keep)


def _centroids(mem: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Centroids (n, D) of the sets (n, M), summed in memory order, so that a set gets the
    same bits in any batch: the search and the brute-force oracle decide ties alike."""
    sums = mem.new_zeros(member.shape[0], mem.shape[1])
    for k in member.any(0).nonzero().squeeze(1).tolist():
        sums += member[:, k, None] * mem[k]
    return sums / member.sum(1, keepdim=True)


def _sq_distances_by_differences(points: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
    """Squared distances (n, M) from points (n, D) to memories (M, D), one memory at a
    time by differences: the same bits for a point in any batch."""
    if mem.shape[0] == 0:
        return points.new_zeros(points.shape[0], 0)
    return torch.stack([((points - xi) ** 2).sum(1) for xi in mem], 1)


def _spread(
    mem: torch.Tensor, member: torch.Tensor, r2_max: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sets (n, M) with q < r2_max (the others are minima at no r^2 <= r2_max), with
    their centroids, q = max member and p = min non-member squared distance."""
    centroid = _centroids(mem, member)
    cols = member.any(0).nonzero().squeeze(1)
    to_members = _sq_distances_by_differences(centroid, mem[cols])
    q = torch.where(member[:, cols], to_members, -1.0).amax(1)
    some = q < r2_max
    member, centroid, q = member[some], centroid[some], q[some]
    d2 = _sq_distances_by_differences(centroid, mem)
    p = torch.where(member, float("inf"), d2).amin(1)
    return member, centroid, q, p


def _lsr_result(mem: torch.Tensor, beta: float, points: list, supports: list) -> Minima:
    m, d = mem.shape
    pts = torch.cat(points) if points else mem.new_zeros((0, d))
    sup = torch.cat(supports) if supports else torch.zeros((0, m), dtype=torch.bool)
    energies = DenseAM(mem, energy="lsr", beta=beta).energy(pts) if len(pts) else pts[:, 0]
    return Minima(pts, sup, energies.detach(), sup.sum(1) == 1)


def lsr_minima(memories: Any, beta: float, *, max_size: int | None = None) -> Minima:
    """Every local minimum of the LSR energy (eps = 0), exactly, by the pruned search of
    the module docstring.

    memories: (M, D). max_size limits the support size searched (None: no limit).
    Computed in float64.
    """
    mem = _memories(memories)
    r2 = 2.0 / check_positive(beta, "beta")
    points, supports = [], []
    for member in _possible_supports(mem, _pair_sq_distances(mem), r2, max_size=max_size):
        member, centroid, q, p = _spread(mem, member, r2)
        keep = p >= r2
        points.append(centroid[keep])
        supports.append(member[keep])
    return _lsr_result(mem, beta, points, supports)


def lsr_minima_counts(memories: Any, betas: Any) -> dict[str, torch.Tensor]:
    """Numbers of stored and emergent LSR minima at every beta of a grid, in one search.

    Each set S is a minimum for r^2 = 2/beta in the interval [q_S, p_S) (see the module
    docstring), so one search with the adjacency of the smallest beta finds every
    candidate, and each adds one to the betas whose r^2 falls in its interval. Returns
    {"betas", "stored", "emergent"}, each (len(betas),).
    """
    mem = _memories(memories)
    betas = as_float_tensor(betas, "betas", dtype=torch.float64).reshape(-1)
    if betas.numel() == 0 or bool((betas <= 0).any()):
        raise AmlabError("betas must be a non-empty list of positive numbers.")
    r2 = 2.0 / betas  # r^2 of each beta, computed as lsr_minima does
    r2_sorted, order = torch.sort(r2)
    n = betas.numel()
    counts = {1: torch.zeros(n + 1, dtype=torch.long), 2: torch.zeros(n + 1, dtype=torch.long)}
    for member in _possible_supports(mem, _pair_sq_distances(mem), float(r2_sorted[-1])):
        member, _, q, p = _spread(mem, member, float(r2_sorted[-1]))
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
    points, supports = [], []
    for block in member.split(4096):
        centroid = _centroids(mem, block)
        d2 = _sq_distances_by_differences(centroid, mem)
        keep = ((d2 < r2) == block).all(1)
        points.append(centroid[keep])
        supports.append(block[keep])
    return _lsr_result(mem, beta, points, supports)


def lsr_neighbour_minima(
    memories: Any, beta: float, index: int, *, max_size: int = 3, max_neighbours: int = 64
) -> Minima:
    """Minima whose support contains memory ``index``, among its neighbours within 2r.

    The paper's search for image data, where the whole enumeration is out of reach:
    supports hold ``index`` and at most ``max_size`` memories in all, drawn from the
    ``max_neighbours`` nearest memories within 2r of it. Each candidate is checked
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
    # the search runs over the index and its nearest neighbours; the check over the ball
    near = mem[ball[: 1 + max_neighbours]]
    root = torch.zeros(near.shape[0], dtype=torch.bool)
    root[0] = True
    points, supports = [], []
    for member in _possible_supports(
        near, _pair_sq_distances(near), r2, members=root, max_size=max_size
    ):
        in_ball = torch.zeros(member.shape[0], ball.numel(), dtype=torch.bool)
        in_ball[:, : near.shape[0]] = member
        in_ball, centroid, q, p = _spread(mem[ball], in_ball, r2)
        keep = p >= r2
        points.append(centroid[keep])
        supports.append(_in_memory_order(in_ball[keep], ball, m))
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
