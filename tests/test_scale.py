"""Chunking over memories keeps peak memory bounded by the chunk, not by M."""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, torch
    from amlab import DenseAM
    torch.manual_seed(0)
    memories = torch.rand(1_000_000, 64)          # 256 MB
    x = memories[:256] + 0.01 * torch.randn(256, 64)
    am = DenseAM(memories, energy="{energy}", beta={beta}, chunk_size={chunk})
    def status_kb(field):
        line = [l for l in open("/proc/self/status") if l.startswith(field)][0]
        return int(line.split()[1])
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    before = status_kb("VmRSS:")
    out = am.retrieve(x, method="{method}", steps=2)
    after = status_kb("VmHWM:")
    nearest = am.nearest(out.states)[0]
    print(json.dumps({{"growth_mb": (after - before) / 1024,
                      "retrieved": (nearest == torch.arange(256)).float().mean().item()}}))
    """
)


def peak_growth(energy, method, chunk):
    code = SCRIPT.format(energy=energy, beta=2000.0, method=method, chunk=chunk)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("energy,method", [("lse", "attention"), ("lsr", "fixed_point")])
def test_million_memories_retrieve_without_the_full_score_matrix(energy, method):
    # a (256, 1,000,000) float32 score matrix alone would take 1024 MB
    report = peak_growth(energy, method, chunk=None)
    assert report["growth_mb"] < 100, report
    assert report["retrieved"] == 1.0, report


def test_peak_memory_measurement_sees_an_unchunked_pass():
    # the same run with one chunk of all memories does build the (256, M) matrix
    report = peak_growth("lse", "attention", chunk=1_000_000)
    assert report["growth_mb"] > 900, report
