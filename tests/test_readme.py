"""The README's Python examples run as written (in order, sharing one namespace), so the
first thing a newcomer copies works. Names the prose leaves to the reader (their own tokens,
patterns, a time t) are defined here, and long runs are shortened by exact text
replacements that must each still match the README."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"

#: the README's long runs, shortened for the test (each must still appear in the README)
SHORTER = {
    "TrainConfig(steps=2000)": "TrainConfig(steps=2)",
    "steps=50, method=": "steps=3, method=",
}


def readme_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_examples_run(tmp_path, monkeypatch):
    blocks = readme_examples()
    assert len(blocks) >= 4
    code = "\n".join(blocks)
    for long, short in SHORTER.items():
        assert long in code, f"the README no longer has {long!r}: update SHORTER"
        code = code.replace(long, short)
    monkeypatch.chdir(tmp_path)  # the examples write runs/ relative to the working directory
    g = torch.Generator().manual_seed(0)
    namespace = {
        # what the reader brings: new patterns to store, ET tokens and mask, a time and states
        "new_patterns": torch.rand(5, 64, generator=g),
        "tokens": torch.randn(2, 6, 64, generator=g),
        "allowed": torch.rand(6, 6, generator=g) < 0.5,
        "t": 0.5,
        "x": torch.randn(4, 64, generator=g),
    }
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["out"].states.shape == (16, 64)  # the last example: 16 samples
    assert namespace["rf"].num_features == 20_000
