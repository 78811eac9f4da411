"""Analysis of energy landscapes: local minima (exact for LSR), metrics."""

from amlab.analysis.minima import (
    Minima,
    lse_minima,
    lsr_minima,
    lsr_minima_brute_force,
    lsr_minima_counts,
    lsr_multistart_minima,
    lsr_neighbour_minima,
    unique_rows,
)

__all__ = [
    "Minima",
    "lse_minima",
    "lsr_minima",
    "lsr_minima_brute_force",
    "lsr_minima_counts",
    "lsr_multistart_minima",
    "lsr_neighbour_minima",
    "unique_rows",
]
