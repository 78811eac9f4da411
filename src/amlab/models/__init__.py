"""User-facing models: every one an energy with the same surface (AssociativeMemory)."""

from amlab.models.base import AssociativeMemory
from amlab.models.dense_am import DenseAM
from amlab.models.random_feature_am import RandomFeatureAM

__all__ = ["AssociativeMemory", "DenseAM", "RandomFeatureAM"]
