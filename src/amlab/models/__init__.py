"""User-facing models. The memories share one surface (AssociativeMemory); the Energy
Transformer descends one energy over tokens."""

from amlab.models.base import AssociativeMemory
from amlab.models.dense_am import DenseAM
from amlab.models.energy_transformer import EnergyTransformer
from amlab.models.random_feature_am import RandomFeatureAM

__all__ = ["AssociativeMemory", "DenseAM", "EnergyTransformer", "RandomFeatureAM"]
