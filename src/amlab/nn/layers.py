"""Associative memory as trainable layers: retrieval from learnable memories, from a set given
with each example, and pooling of a set by learnable queries.

Every layer runs ``steps`` retrieval steps (chunked over the memories both ways): the query,
projected if the layer has projections, is moved ``steps - 1`` times by
:func:`~amlab.nn.functional.memory_step` (LSE: to the softmax-weighted mean of the keys;
LSR: the damped centroid step), which never raises its energy, then the last step reads out
the values (:func:`~amlab.nn.functional.memory_read`). Each returns :class:`Retrieved`: the
output and the energy of the state that each step started from.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from amlab.errors import (
    AmlabError,
    check_choice,
    check_dtype,
    check_positive,
    check_positive_int,
    check_steps,
)
from amlab.models.model import ScaledModule, seeded
from amlab.nn.functional import (
    ENERGIES,
    check_every_set_has_memory,
    read_weights,
    unchecked_read,
    unchecked_step,
)


class Retrieved(NamedTuple):
    """A layer's result: ``output`` and ``energies`` (steps, ...), the energy of the state
    each step started from (the leading axes of ``output`` after ``steps``)."""

    output: torch.Tensor
    energies: torch.Tensor


class _MemoryReader(ScaledModule):
    """What the layers share: the energy, beta (fixed or learnable, kept positive by its
    logarithm), the number of steps, the chunk size, the dtype, and the steps themselves.
    beta and eps lie within the dtype's range, as a model's scales: beyond it the energies
    overflow. Checked when built and before ``.float()``, ``.half()`` or ``.to(dtype)``,
    which refuse a dtype whose range excludes them and leave the layer as it was."""

    scales = {"beta": False, "eps": True}

    def __init__(self, energy, beta, learn_beta, eps, steps, chunk_size, dtype) -> None:
        super().__init__()
        self.energy = check_choice(energy, "energy", ENERGIES)
        dtype = check_dtype(dtype)
        self.eps = self._scale(eps, "eps", dtype)
        self.steps = check_steps(steps)
        self.chunk_size = (
            None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        )
        log_beta = torch.tensor(math.log(self._scale(beta, "beta", dtype)), dtype=dtype)
        if learn_beta:
            self.log_beta = nn.Parameter(log_beta)
        else:
            self.register_buffer("log_beta", log_beta)

    @property
    def dtype(self) -> torch.dtype:
        """The layer's floating dtype (that of its tensors; ``layer.to(...)`` changes it)."""
        return self.log_beta.dtype

    @property
    def beta(self) -> torch.Tensor:
        """The inverse temperature, a 0-dim tensor: exp(log_beta), > 0 whatever training does."""
        return self.log_beta.exp()

    def _read(self, q, keys, values, padding_mask) -> Retrieved:
        """``steps - 1`` moves of q (G, N, D) on the keys (G, M, D), then the read-out of the
        values (G, M, E) (None or the keys themselves: the keys). The sets were checked once
        (:func:`check_sets`), so the steps run :func:`~amlab.nn.functional.unchecked_step` and
        :func:`~amlab.nn.functional.unchecked_read`, which do not check them again."""
        beta, settings = self.beta, self._settings(padding_mask)
        energies = []
        for _ in range(self.steps - 1):
            q, e = unchecked_step(q, keys, beta, **settings)
            energies.append(e)
        # the keys as values are passed as None: one tensor given twice breaks torch.compile
        out, e = unchecked_read(q, keys, None if values is keys else values, beta, **settings)
        energies.append(e)
        return Retrieved(out, torch.stack(energies))

    def _settings(self, padding_mask: torch.Tensor | None) -> dict:
        """The keyword arguments of :mod:`amlab.nn.functional` for this layer."""
        return {
            "energy": self.energy,
            "eps": self.eps,
            "padding_mask": padding_mask,
            "chunk_size": self.chunk_size,
        }

    def extra_repr(self) -> str:
        eps = f", eps={self.eps}" if self.energy == "lsr" else ""
        learn = isinstance(self.log_beta, nn.Parameter)
        beta = float(self.beta.detach())
        return (
            f"energy={self.energy!r}, beta={beta:.4g}, learn_beta={learn}{eps}, steps={self.steps}"
        )

    def _check(self, t: torch.Tensor, name: str, shape: str, ndim: int, dim: int) -> None:
        """t is a tensor of the layer's dtype with ``ndim`` axes (any if 0), the last ``dim``."""
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise AmlabError(
                f"{name} must be a floating torch.Tensor {shape}; got {type(t).__name__}."
            )
        if t.device != self.log_beta.device:
            raise AmlabError(
                f"{name} is on {t.device} but the layer on {self.log_beta.device}; move one of "
                f"them (e.g. {name}.to({str(self.log_beta.device)!r}))."
            )
        if t.dtype != self.dtype:
            raise AmlabError(
                f"{name} is {t.dtype} but the layer is {self.dtype}; convert one of them "
                f"(e.g. {name}.to({self.dtype}) or layer.to({t.dtype}))."
            )
        if (ndim and t.ndim != ndim) or t.ndim == 0 or t.shape[-1] != dim:
            raise AmlabError(
                f"{name} must have shape {shape} with last axis {dim}; got {tuple(t.shape)}."
            )


def _linear(n_in: int, n_out: int | None, dtype: torch.dtype) -> nn.Module:
    """A linear map n_in -> n_out, or the identity when n_out is None."""
    return nn.Identity() if n_out is None else nn.Linear(n_in, n_out, dtype=dtype)


class Retrieval(_MemoryReader):
    """Retrieval from a set of memories given with each example (``Hopfield`` of
    hopfield-layers, attention with an energy).

    ``forward(queries (B, N, query_dim), memories (B, M, memory_dim), padding_mask (B, M)
    bool, True at padding)`` returns :class:`Retrieved` with output (B, N, out) and energies
    (steps, B, N). With ``hidden_dim`` the queries, keys and values are linear maps of the
    queries and memories into ``hidden_dim`` and the output a linear map of the read-out to
    ``out_dim`` (default ``query_dim``), as in attention; without it the memories are read
    as they are (``query_dim == memory_dim``, the output has ``memory_dim``).

    Args:
        query_dim, memory_dim: the last axes of queries and memories (memory_dim: query_dim).
        hidden_dim, out_dim: the projections (see above); None: none.
        energy: "lse" (distance form), "lse_dot" or "lsr" (Epanechnikov, exactly sparse).
        beta: the inverse temperature, > 0; learn_beta: train it (as its logarithm).
        eps: LSR's floor inside the log (>= 0). steps: retrieval steps T (>= 1).
        chunk_size: memories per chunk (None: chosen from the batch and device).
        seed: the projections' initial weights. dtype: float32 or float64.
    """

    def __init__(
        self,
        query_dim: int,
        memory_dim: int | None = None,
        *,
        hidden_dim: int | None = None,
        out_dim: int | None = None,
        energy: str = "lse",
        beta: float = 1.0,
        learn_beta: bool = False,
        eps: float = 0.0,
        steps: int = 1,
        chunk_size: int | None = None,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__(energy, beta, learn_beta, eps, steps, chunk_size, dtype)
        self.query_dim = check_positive_int(query_dim, "query_dim")
        self.memory_dim = check_positive_int(
            query_dim if memory_dim is None else memory_dim, "memory_dim"
        )
        if hidden_dim is None:
            if out_dim is not None:
                raise AmlabError(
                    "out_dim needs hidden_dim: without projections the output is the "
                    "memories' read-out."
                )
            if self.memory_dim != self.query_dim:
                raise AmlabError(
                    f"query_dim {self.query_dim} and memory_dim {self.memory_dim} differ: pass "
                    "hidden_dim to project both into one space, or make them equal."
                )
        else:
            check_positive_int(hidden_dim, "hidden_dim")
            out_dim = check_positive_int(query_dim if out_dim is None else out_dim, "out_dim")
        with seeded(seed):
            self.query_proj = _linear(self.query_dim, hidden_dim, self.dtype)
            self.key_proj = _linear(self.memory_dim, hidden_dim, self.dtype)
            self.value_proj = _linear(self.memory_dim, hidden_dim, self.dtype)
            self.out_proj = _linear(hidden_dim or 0, out_dim, self.dtype)

    def forward(
        self,
        queries: torch.Tensor,
        memories: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> Retrieved:
        q, keys = self._queries_keys(queries, memories, padding_mask)
        out, energies = self._read(q, keys, self.value_proj(memories), padding_mask)
        return Retrieved(self.out_proj(out), energies)

    def weights(self, queries, memories, padding_mask=None) -> torch.Tensor:
        """The first step's weights (B, N, M) over the memories, for inspection."""
        q, keys = self._queries_keys(queries, memories, padding_mask)
        return read_weights(q, keys, self.beta, **self._settings(padding_mask))

    def _queries_keys(self, queries, memories, padding_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """The checked input's projected queries and keys."""
        self._check(queries, "queries", "(B, N, query_dim)", 3, self.query_dim)
        self._check(memories, "memories", "(B, M, memory_dim)", 3, self.memory_dim)
        check_sets(queries.shape[0], memories, padding_mask)
        return self.query_proj(queries), self.key_proj(memories)


def check_sets(batch: int, memories: torch.Tensor, padding_mask: torch.Tensor | None) -> None:
    """Memories (B, M, D) for ``batch`` examples, with M >= 1 and a bool padding mask (B, M)
    that leaves every example at least one memory
    (:func:`~amlab.nn.functional.check_every_set_has_memory`: eagerly an AmlabError naming
    the examples, compiled a RuntimeError from the device)."""
    if memories.shape[0] != batch:
        raise AmlabError(
            f"the queries hold {batch} examples but the memories {memories.shape[0]} sets; "
            "pass one set of memories (M, D) per example, stacked to (B, M, D)."
        )
    if memories.shape[1] == 0:
        raise AmlabError("the memory sets are empty (M = 0); pass at least one memory per example.")
    if padding_mask is None:
        return
    if not isinstance(padding_mask, torch.Tensor) or padding_mask.dtype != torch.bool:
        raise AmlabError(
            f"padding_mask must be a bool tensor (B, M), True at padding; got "
            f"{getattr(padding_mask, 'dtype', type(padding_mask).__name__)}."
        )
    if tuple(padding_mask.shape) != tuple(memories.shape[:2]):
        raise AmlabError(
            f"padding_mask has shape {tuple(padding_mask.shape)} but the memories are "
            f"{tuple(memories.shape)}; it must be (B, M) = {tuple(memories.shape[:2])}."
        )
    if padding_mask.device != memories.device:
        raise AmlabError(
            f"padding_mask is on {padding_mask.device} but the memories on {memories.device}."
        )
    check_every_set_has_memory(padding_mask)


class MemoryLayer(_MemoryReader):
    """Retrieval from learnable memories (``HopfieldLayer`` of hopfield-layers).

    ``forward(x (..., in_dim))`` returns :class:`Retrieved` with output (..., out) and
    energies (steps, ...). The layer holds ``memories`` (M, dim), an ``nn.Parameter``, and,
    with ``value_dim``, learnable ``values`` (M, value_dim) that the last step reads out
    (hetero-association: e.g. class scores per prototype); without it the memories are
    read out. ``in_dim`` adds a linear map of the input to ``dim``, ``out_dim`` one of the
    read-out to ``out_dim``. Memory is bounded by the chunk, whatever M is.

    Args:
        dim: the memories' dimension. num_memories: M.
        value_dim, in_dim, out_dim: see above (None: none).
        init_scale: the memories (and values) start as Gaussian noise of this std (default
            1 / sqrt(dim)); copy data into ``layer.memories`` to start from patterns.
        energy, beta, learn_beta, eps, steps, chunk_size, seed, dtype: as :class:`Retrieval`.
    """

    def __init__(
        self,
        dim: int,
        num_memories: int,
        *,
        value_dim: int | None = None,
        in_dim: int | None = None,
        out_dim: int | None = None,
        init_scale: float | None = None,
        energy: str = "lse",
        beta: float = 1.0,
        learn_beta: bool = False,
        eps: float = 0.0,
        steps: int = 1,
        chunk_size: int | None = None,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__(energy, beta, learn_beta, eps, steps, chunk_size, dtype)
        self.dim = check_positive_int(dim, "dim")
        num_memories = check_positive_int(num_memories, "num_memories")
        scale = check_positive(init_scale if init_scale is not None else dim**-0.5, "init_scale")
        self.in_dim = self.dim if in_dim is None else check_positive_int(in_dim, "in_dim")
        read_dim = self.dim if value_dim is None else check_positive_int(value_dim, "value_dim")
        with seeded(seed):
            self.memories = nn.Parameter(
                torch.randn(num_memories, self.dim, dtype=self.dtype) * scale
            )
            self.values = (
                None
                if value_dim is None
                else nn.Parameter(torch.randn(num_memories, read_dim, dtype=self.dtype) * scale)
            )
            self.in_proj = _linear(self.in_dim, None if in_dim is None else self.dim, self.dtype)
            self.out_proj = _linear(read_dim, out_dim, self.dtype)

    def forward(self, x: torch.Tensor) -> Retrieved:
        q = self._queries(x)  # checks x first
        lead = x.shape[:-1]
        values = None if self.values is None else self.values[None]
        out, energies = self._read(q, self.memories[None], values, None)
        # sizes, not -1: an empty batch (a 0 in lead) leaves -1 undetermined
        out = out.reshape(*lead, out.shape[-1])
        return Retrieved(self.out_proj(out), energies.reshape(energies.shape[0], *lead))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The first step's weights (..., M) over the memories, for inspection."""
        w = read_weights(self._queries(x), self.memories[None], self.beta, **self._settings(None))
        return w.reshape(*x.shape[:-1], w.shape[-1])

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        """The checked input x (..., in_dim) as one group of queries (1, N, dim)."""
        self._check(x, "x", "(..., in_dim)", 0, self.in_dim)
        return self.in_proj(x).reshape(1, -1, self.dim)


class Pooling(ScaledModule):
    """Pooling of a set by learnable queries (``HopfieldPooling`` of hopfield-layers; the
    pooling of multiple-instance learning).

    ``forward(memories (B, M, dim), padding_mask (B, M) bool, True at padding)`` returns
    :class:`Retrieved` with output (B, num_queries, out) and energies (steps, B,
    num_queries). The ``num_queries`` queries (num_queries, dim) are an ``nn.Parameter``;
    ``retrieval`` is the :class:`Retrieval` they read with (its projections: ``hidden_dim``,
    ``out_dim``). A conversion its retrieval's beta or eps refuses leaves the queries as
    they were too (a :class:`~amlab.models.model.ScaledModule` checks every module inside
    it before any converts).

    Args:
        dim: the set elements' dimension. num_queries: learnable queries.
        hidden_dim, out_dim, energy, beta, learn_beta, eps, steps, chunk_size, seed, dtype:
            as :class:`Retrieval` (queries start as Gaussian noise of std 1 / sqrt(dim)).
    """

    def __init__(self, dim: int, num_queries: int = 1, *, seed: int = 0, **retrieval) -> None:
        super().__init__()
        self.retrieval = Retrieval(dim, dim, seed=seed, **retrieval)
        num_queries = check_positive_int(num_queries, "num_queries")
        with seeded(seed + 1):
            self.queries = nn.Parameter(
                torch.randn(num_queries, dim, dtype=self.retrieval.dtype) * dim**-0.5
            )

    def forward(
        self, memories: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> Retrieved:
        return self.retrieval(self._batch_queries(memories), memories, padding_mask)

    def weights(
        self, memories: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The first step's weights (B, num_queries, M) over each set, for inspection."""
        return self.retrieval.weights(self._batch_queries(memories), memories, padding_mask)

    def _batch_queries(self, memories: torch.Tensor) -> torch.Tensor:
        """The queries once per set of the checked memories (B, num_queries, dim)."""
        self.retrieval._check(memories, "memories", "(B, M, dim)", 3, self.retrieval.memory_dim)
        return self.queries.expand(memories.shape[0], *self.queries.shape)
