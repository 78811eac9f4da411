"""EnergyTransformer: one Energy Transformer block (papers.md section 3).

Tokens x (B, N, D) are normalised by the energy layer norm, g = LN(x), and the block's
energy is E(g) = E_ATT(g) + E_HN(g) (see :mod:`amlab.energy.transformer`). Its dynamics,
:meth:`EnergyTransformer.retrieve`, are the paper's ``x <- x - step_size dE/dg`` for T
steps, one block with shared weights, run by the one descent engine
(:func:`amlab.dynamics.descend`); ``forward`` returns their final tokens.

The step follows dE/dg (:meth:`~EnergyTransformer.direction`), not dE/dx
(:meth:`~EnergyTransformer.grad`). It still descends: dE/dx = J dE/dg, where the layer
norm's Jacobian J (the Hessian of its Lagrangian) is positive semidefinite for gamma > 0,
so -dE/dg is a descent direction and E never rises for a small enough step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amlab.dynamics import Trajectory, descend
from amlab.energy.transformer import (
    HOPFIELD_KINDS,
    attention_energy,
    attention_energy_grad,
    attention_mask,
    hopfield_energy,
    hopfield_energy_grad,
    layer_norm,
)
from amlab.errors import (
    AmlabError,
    check_choice,
    check_dtype,
    check_positive,
    check_positive_int,
    check_steps,
)
from amlab.models.model import Model


@dataclass(frozen=True)
class EnergyTransformerConfig:
    """What :class:`EnergyTransformer` is built with (see its arguments); ``hopfield_memories``
    and ``beta`` hold the values their defaults resolved to."""

    dim: int
    heads: int
    head_dim: int
    hopfield_memories: int
    hopfield: str = "relu"
    exclude_self: bool = True
    steps: int = 12
    step_size: float = 0.1
    seed: int = 0
    beta: float | None = None
    hopfield_beta: float = 1.0
    eps: float = 1e-5
    init_std: float = 0.02
    dtype: str = "float32"


class EnergyTransformer(Model):
    """One Energy Transformer block over tokens of dimension ``dim``.

    ``forward(x)`` is the final tokens (B, N, D) of the dynamics, ``retrieve(x).states``.

    Args:
        dim: token dimension D.
        heads, head_dim: attention heads H and head dimension Y.
        hopfield_memories: number K of Hopfield memories xi (K, D); default 4 * dim.
        hopfield: "relu" (ReLU^2 energy) or "softmax" (log-sum-exp energy).
        exclude_self: attention sums over keys B != C (the paper); False keeps B = C.
        steps, step_size: default number of steps T and step size of the dynamics.
        seed: seeds the initial weights: gamma = 1, delta = 0, and W_K, W_Q (H, Y, D)
            and xi (K, D) drawn from N(0, init_std^2) (drawn in ``dtype``).
        beta: attention inverse temperature (default 1/sqrt(head_dim)).
        hopfield_beta: inverse temperature of the softmax Hopfield energy.
        eps: layer-norm epsilon.
        dtype: float32 (default) or float64 (a dtype or its name).
    """

    Config = EnergyTransformerConfig
    scales = {"beta": False, "hopfield_beta": False}

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        hopfield_memories: int | None = None,
        hopfield: str = "relu",
        exclude_self: bool = True,
        steps: int = 12,
        step_size: float = 0.1,
        seed: int = 0,
        *,
        beta: float | None = None,
        hopfield_beta: float = 1.0,
        eps: float = 1e-5,
        init_std: float = 0.02,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim")
        heads = check_positive_int(heads, "heads")
        head_dim = check_positive_int(head_dim, "head_dim")
        k = 4 * dim if hopfield_memories is None else hopfield_memories
        k = check_positive_int(k, "hopfield_memories")
        self.heads, self.head_dim, self.hopfield_memories = heads, head_dim, k
        self.hopfield = check_choice(hopfield, "hopfield", HOPFIELD_KINDS)
        self.exclude_self = bool(exclude_self)
        self.steps = check_steps(steps)
        self.step_size = check_positive(step_size, "step_size")
        self.seed = check_positive_int(seed, "seed", allow_zero=True)
        dtype = check_dtype(dtype)
        self.beta = 1.0 / math.sqrt(head_dim) if beta is None else self._scale(beta, "beta", dtype)
        self.hopfield_beta = self._scale(hopfield_beta, "hopfield_beta", dtype)
        self.eps = check_positive(eps, "eps")
        self.init_std = check_positive(init_std, "init_std")

        gen = torch.Generator().manual_seed(self.seed)

        def normal(*shape: int) -> nn.Parameter:
            return nn.Parameter(self.init_std * torch.randn(*shape, generator=gen, dtype=dtype))

        self.gamma = nn.Parameter(torch.ones((), dtype=dtype))
        self.delta = nn.Parameter(torch.zeros(dim, dtype=dtype))
        self.w_k = normal(heads, head_dim, dim)
        self.w_q = normal(heads, head_dim, dim)
        self.xi = normal(k, dim)

    @property
    def dim(self) -> int:
        return self.delta.shape[0]

    def extra_repr(self) -> str:
        h, y, d = self.w_k.shape
        return (
            f"dim={d}, heads={h}, head_dim={y}, hopfield_memories={self.xi.shape[0]}, "
            f"hopfield={self.hopfield!r}, exclude_self={self.exclude_self}, steps={self.steps}, "
            f"step_size={self.step_size:g}, dtype={self.dtype}"
        )

    # -- energy --------------------------------------------------------------------------
    def layer_norm(self, x: torch.Tensor) -> torch.Tensor:
        """g = LN(x) (B, N, D) of checked tokens."""
        return layer_norm(x, self.gamma, self.delta, self.eps)

    def energy_parts(self, x: Any, mask: Any = None) -> dict[str, torch.Tensor]:
        """{"attention": E_ATT (B,), "hopfield": E_HN (B,)} at g = LN(x); differentiable."""
        x = self._tokens(x)
        return self._energy_parts(x, self._allowed(mask, x.shape[1]))

    def _energy_parts(self, x: torch.Tensor, allowed: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`energy_parts` of checked tokens x (B, N, D) and attention pattern ``allowed``."""
        g = self.layer_norm(x)
        return {
            "attention": attention_energy(g, self.w_k, self.w_q, self.beta, allowed),
            "hopfield": hopfield_energy(g, self.xi, self.hopfield, self.hopfield_beta),
        }

    def energy(self, x: Any, mask: Any = None) -> torch.Tensor:
        """Total energy E_ATT + E_HN (B,) of tokens x (B, N, D); differentiable."""
        parts = self.energy_parts(x, mask)
        return parts["attention"] + parts["hopfield"]

    def grad(self, x: Any, mask: Any = None) -> torch.Tensor:
        """dE/dx (B, N, D) at tokens x (B, N, D): the analytic dE/dg taken back through the
        layer norm (dE/dx = J dE/dg)."""
        return self.energy_and_grad(x, mask)[1]

    def energy_and_grad(self, x: Any, mask: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The total energy (B,) and dE/dx (B, N, D) at tokens x (B, N, D)."""
        x = self._tokens(x)
        e_att, e_hn, d_g = self._energy_and_direction(x, self._allowed(mask, x.shape[1]))
        with torch.enable_grad():
            state = x.detach().requires_grad_(True)
            (d_x,) = torch.autograd.grad(self.layer_norm(state), state, d_g.detach())
        return (e_att + e_hn).detach(), d_x

    def direction(self, x: Any, mask: Any = None) -> torch.Tensor:
        """The direction the dynamics descend along: the analytic dE/dg (B, N, D) at tokens
        x (B, N, D)."""
        x = self._tokens(x)
        return self._energy_and_direction(x, self._allowed(mask, x.shape[1]))[2]

    def _energy_and_direction(
        self, x: torch.Tensor, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E_ATT (B,), E_HN (B,), dE/dg (B, N, D)) at tokens x."""
        g = self.layer_norm(x)
        e_att, d_att = attention_energy_grad(g, self.w_k, self.w_q, self.beta, allowed)
        e_hn, d_hn = hopfield_energy_grad(g, self.xi, self.hopfield, self.hopfield_beta)
        return e_att, e_hn, d_att + d_hn

    # -- dynamics ------------------------------------------------------------------------
    def retrieve(
        self,
        x: Any,
        steps: int | None = None,
        step_size: float | None = None,
        mask: Any = None,
        tol: float = 0.0,
        differentiable: bool = False,
        record_states: bool = False,
        on_step: Callable[[int, int], None] | None = None,
        record_energies: bool = True,
    ) -> Trajectory:
        """Run ``x <- x - step_size dE/dg`` for ``steps`` steps (defaults: the config's) from
        tokens x (B, N, D); ``mask`` bool (N, N), True where query c may attend key b,
        or int64 (2, P) (query, key) pairs (sparse attention: cost O(P) not O(N^2)).

        Returns a :class:`~amlab.dynamics.Trajectory` whose states are the final tokens
        (B, N, D) (``path``: (n + 1, B, N, D)), with the total energy per step (n + 1, B)
        and its parts ``"attention"`` and ``"hopfield"``. tol, record_states, on_step: as
        in :func:`~amlab.dynamics.descend` (tol = 0: a sequence stops only when it repeats).

        With ``differentiable=True`` the final tokens and the energies stay in the autograd
        graph, so a loss on them trains the weights (and x) through all T steps; the
        analytic update direction is itself differentiated. Otherwise the run holds no graph.

        T steps evaluate the block T times and the energies of the final tokens once more
        (not at all with ``record_energies=False``: then ``energies`` and ``parts`` are None).
        """
        x = self._tokens(x)
        steps = self.steps if steps is None else check_steps(steps)
        step_size = self.step_size if step_size is None else step_size
        b, n, d = x.shape
        allowed = self._allowed(mask, n)

        def oracle(
            flat: torch.Tensor, t: int
        ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
            e_att, e_hn, grad = self._energy_and_direction(flat.view(-1, n, d), allowed)
            parts = {"attention": e_att, "hopfield": e_hn}
            return e_att + e_hn, grad.reshape(flat.shape), parts

        def final_energy(flat: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            parts = self._energy_parts(flat.view(-1, n, d), allowed)
            return parts["attention"] + parts["hopfield"], parts

        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            traj = descend(
                oracle,
                x.reshape(b, n * d),
                steps=steps,
                step_size=step_size,
                tol=tol,
                record_states=record_states,
                record_energies=record_energies,
                energy=final_energy,
                on_step=on_step,
                differentiable=differentiable,
            )
        traj.states = traj.states.view(b, n, d)
        if traj.path is not None:
            traj.path = traj.path.view(-1, b, n, d)
        return traj

    def forward(
        self, x: Any, steps: int | None = None, mask: Any = None, differentiable: bool = False
    ) -> torch.Tensor:
        """The final tokens (B, N, D) of the dynamics from tokens x (B, N, D):
        ``retrieve(x, steps, mask=mask, differentiable=differentiable).states``, recording
        no energies."""
        return self.retrieve(
            x, steps, mask=mask, differentiable=differentiable, record_energies=False
        ).states

    # -- input checks --------------------------------------------------------------------
    def _tokens(self, x: Any) -> torch.Tensor:
        x = self._as_input(x)
        if x.ndim != 3 or x.shape[2] != self.dim or x.shape[0] == 0 or x.shape[1] == 0:
            raise AmlabError(
                f"x must be tokens of shape (B, N, {self.dim}) with B, N >= 1; got "
                f"{tuple(x.shape)}. Add a batch axis with x[None] for a single sequence."
            )
        return x

    def _allowed(self, mask: Any, n: int) -> torch.Tensor:
        """The attention pattern: a dense bool mask (N, N), or (query, key) pairs (2, P)."""
        if mask is not None:
            mask = torch.as_tensor(mask, device=self.device)
            if mask.dtype == torch.int64 and mask.ndim == 2 and mask.shape[0] == 2:
                if mask.numel() and (mask.min() < 0 or mask.max() >= n):
                    raise AmlabError(
                        f"attention pairs must name tokens 0..{n - 1}; got indices from "
                        f"{int(mask.min())} to {int(mask.max())}."
                    )
                return mask[:, mask[0] != mask[1]] if self.exclude_self else mask
            if mask.dtype != torch.bool or mask.shape != (n, n):
                raise AmlabError(
                    f"mask must be a bool tensor of shape ({n}, {n}) (True where query c may "
                    f"attend key b), or int64 (2, P) (query, key) pairs for sparse attention; "
                    f"got dtype {mask.dtype}, shape {tuple(mask.shape)}."
                )
        return attention_mask(n, self.exclude_self, mask, device=self.device)
