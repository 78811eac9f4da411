"""Experiments: each runs models on data and writes figures, ``metrics.json`` and reports."""
