"""Chunking over memories: how many memories to process at once."""

from __future__ import annotations

#: Elements of one B x chunk score block (float32: 4 MiB). Peak memory of a pass over
#: the memories is a few such blocks, whatever M is.
SCORE_BLOCK_ELEMENTS = 1 << 20


def chunk_ranges(num_memories: int, batch: int, chunk_size: int | None = None):
    """Yield (start, stop) ranges covering ``range(num_memories)``.

    ``chunk_size`` None picks the largest chunk whose (batch, chunk) score block holds
    at most ``SCORE_BLOCK_ELEMENTS`` elements (at least 256 memories).
    """
    if chunk_size is None:
        chunk_size = max(256, SCORE_BLOCK_ELEMENTS // max(batch, 1))
    chunk_size = max(1, min(int(chunk_size), max(num_memories, 1)))
    for start in range(0, num_memories, chunk_size):
        yield start, min(start + chunk_size, num_memories)
