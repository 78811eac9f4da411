"""Measuring what computations allocate, for tests and benchmarks."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LargestTensor(TorchDispatchMode):
    """Context manager recording the largest tensor any torch operation returns inside it.

    ``largest`` counts elements, ``largest_bytes`` bytes. Used to prove that chunked work
    never builds a tensor the size of the whole problem (e.g. a (B, M) score matrix).
    """

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.largest_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
                self.largest_bytes = max(self.largest_bytes, t.numel() * t.element_size())
        return out
