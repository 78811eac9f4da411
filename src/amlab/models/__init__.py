"""User-facing models. The memories share one surface (AssociativeMemory); the Energy
Transformer descends one energy over tokens."""

from amlab.models.base import AssociativeMemory
from amlab.models.dense_am import DenseAM
from amlab.models.energy_transformer import EnergyTransformer
from amlab.models.graph_et import GraphET
from amlab.models.masked_image_et import MaskedImageET
from amlab.models.random_feature_am import RandomFeatureAM

__all__ = [
    "AssociativeMemory",
    "DenseAM",
    "EnergyTransformer",
    "GraphET",
    "MaskedImageET",
    "RandomFeatureAM",
]
