"""Measuring what computations allocate, for tests and benchmarks."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


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


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes(fn: Callable[[], object]) -> int | None:
    """Peak resident memory of the process while fn runs (None where /proc cannot tell):
    VmHWM after resetting it to the current RSS. Includes the model and torch itself."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    fn()
    peak = _status_kib("VmHWM")
    return None if peak is None else peak * 1024


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """How much memory fn adds at its peak: on CUDA the allocator's peak above what was
    allocated before; on a CPU the growth of the process's peak resident memory (Linux)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = _status_kib("VmRSS")
    peak = peak_rss_bytes(fn)
    return None if peak is None or before is None else max(0, peak - before * 1024)


class PeakLiveBytes(TorchDispatchMode):
    """Context manager recording the peak of the bytes held, at once, by the tensors that torch
    operations allocate inside it: a storage is counted from the op that allocates it until
    the last tensor on it dies (views and in-place results add nothing; what autograd saves
    for backward stays counted). ``peak`` is that peak, ``current`` what is still held.
    Storages made before the block (inputs, parameters) and views of them do not count."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors alive]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs or {}))
            if isinstance(t, torch.Tensor)
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            address = storage.data_ptr()
            if address not in self._live:
                if address in inputs or storage.nbytes() == 0:
                    continue  # a view or in-place result of a tensor made elsewhere
                self._live[address] = [storage.nbytes(), 0]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self._live[address][1] += 1
            weakref.finalize(t, self._release, address)
        return out

    def _release(self, address: int) -> None:
        entry = self._live.get(address)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[address]
