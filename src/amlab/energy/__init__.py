"""The math of amlab: energies and their analytic gradients, pure and batched.

Shapes: states ``x`` are (B, D), memories are (M, D). Work over memories is chunked,
so peak memory grows with the chunk, not with M.
"""

from amlab.energy.distances import nearest_memory, sq_distances
from amlab.energy.lse import (
    lse_attention_update,
    lse_energy,
    lse_energy_grad,
    lse_softmax_mean,
)
from amlab.energy.lsr import lsr_energy, lsr_energy_grad, lsr_support_stats
from amlab.energy.random_features import feature_sum, features, rf_energy, rf_energy_grad

__all__ = [
    "nearest_memory",
    "sq_distances",
    "lse_attention_update",
    "lse_energy",
    "lse_energy_grad",
    "lse_softmax_mean",
    "lsr_energy",
    "lsr_energy_grad",
    "lsr_support_stats",
    "features",
    "feature_sum",
    "rf_energy",
    "rf_energy_grad",
]
