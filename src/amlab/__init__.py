"""amlab: energy-based associative memory in PyTorch.

Every model is an energy E(x) -> one scalar per sample, and every computation is
descent on that energy (:func:`amlab.dynamics.descend`).
"""

from amlab.dynamics import Trajectory, cosine_schedule, descend
from amlab.errors import AmlabError
from amlab.models import DenseAM, EnergyTransformer, RandomFeatureAM

__version__ = "0.1.0"

__all__ = [
    "AmlabError",
    "DenseAM",
    "EnergyTransformer",
    "RandomFeatureAM",
    "Trajectory",
    "cosine_schedule",
    "descend",
    "__version__",
]
