"""Associative memory as trainable layers (``torch.nn`` modules).

- :class:`MemoryLayer`: retrieval from learnable memories (and, optionally, values).
- :class:`Retrieval`: retrieval from a set of memories given with each example, with a
  padding mask and optional attention-like projections.
- :class:`Pooling`: learnable queries pooling a set (multiple-instance learning).

Energies LSE (distance and dot form) and LSR (Epanechnikov, exactly sparse), beta fixed or
learnable, ``steps`` retrieval steps, the energy of each step returned beside the output
(it never rises from one step to the next). Forward and backward are chunked over the
memories (:func:`memory_read`, :func:`memory_step`), so memory grows with the chunk, not
with the number of memories.
"""

from amlab.nn.functional import ENERGIES, memory_read, memory_step, read_weights
from amlab.nn.layers import MemoryLayer, Pooling, Retrieval, Retrieved

__all__ = [
    "ENERGIES",
    "MemoryLayer",
    "Pooling",
    "Retrieval",
    "Retrieved",
    "memory_read",
    "memory_step",
    "read_weights",
]
