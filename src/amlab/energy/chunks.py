"""Chunking over memories: how many memories to process at once."""

from __future__ import annotations

import torch

#: Elements of one B x chunk score block (float32: 4 MiB). Peak memory of a pass over
#: the memories is a few such blocks, whatever M is.
SCORE_BLOCK_ELEMENTS = 1 << 20

#: Score block of the streaming passes (LSE, LSR) on a CPU: 1 MiB in float32, so the block
#: stays in a core's L2 cache between the matmul that writes it and the passes that read it.
CPU_CACHE_BLOCK_ELEMENTS = 1 << 18

#: Score block on an accelerator (CUDA): large, so that each kernel launch has work enough.
ACCELERATOR_BLOCK_ELEMENTS = 1 << 24


def score_block(device: torch.device) -> int:
    """Elements of a streaming pass's score block on ``device``."""
    return CPU_CACHE_BLOCK_ELEMENTS if device.type == "cpu" else ACCELERATOR_BLOCK_ELEMENTS


def chunk_ranges(
    num_memories: int,
    batch: int,
    chunk_size: int | None = None,
    block: int = SCORE_BLOCK_ELEMENTS,
):
    """Yield (start, stop) ranges covering ``range(num_memories)``.

    ``chunk_size`` None picks the largest chunk whose (batch, chunk) score block holds
    at most ``block`` elements (at least 256 memories).
    """
    if chunk_size is None:
        chunk_size = max(256, block // max(batch, 1))
    chunk_size = max(1, min(int(chunk_size), max(num_memories, 1)))
    for start in range(0, num_memories, chunk_size):
        yield start, min(start + chunk_size, num_memories)
