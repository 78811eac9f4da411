"""User-facing models."""

from amlab.models.dense_am import DenseAM

__all__ = ["DenseAM"]
