"""Chunking over memories: no tensor anywhere near the (B, M) score matrix is ever made."""

import pytest
import torch

from amlab import DenseAM
from amlab.tasks.profiling import LargestTensor


@pytest.fixture(scope="module")
def million():
    g = torch.Generator().manual_seed(0)
    memories = torch.rand(1_000_000, 64, generator=g)  # 256 MB
    queries = memories[:256] + 0.01 * torch.randn(256, 64, generator=g)
    return memories, queries


@pytest.mark.parametrize("energy,method", [("lse", "attention"), ("lsr", "fixed_point")])
def test_million_memories_retrieve_without_the_score_matrix(million, energy, method):
    memories, queries = million
    am = DenseAM(memories, energy=energy, beta=2000.0)
    with LargestTensor() as probe:
        out = am.retrieve(queries, method=method, steps=2)
    score_matrix = queries.shape[0] * memories.shape[0]  # 256,000,000 elements, 1 GB
    assert probe.largest <= score_matrix // 20, probe.largest
    assert (am.nearest(out.states)[0] == torch.arange(256)).all()


def test_probe_sees_an_unchunked_pass(million):
    memories, queries = million
    am = DenseAM(memories[:100_000], beta=2000.0, chunk_size=100_000)
    with LargestTensor() as probe:
        am.energy_and_grad(queries)
    assert probe.largest >= queries.shape[0] * 100_000
