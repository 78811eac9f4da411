"""Untrusted model files: every model type, its config.json and its tensors tampered with,
its files replaced by special files. Every failure is an AmlabError naming the file, the
model is built under a budget that its tensors set (a huge ``dim`` allocates nothing),
and run lengths are bounded."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_models_protocol import MODELS, trained

from amlab.errors import MAX_STEPS, AmlabError
from amlab.io import MAX_JSON_BYTES
from amlab.models import EnergyTransformer

NAMES = list(MODELS)


def saved(tmp_path: Path, name: str) -> tuple[type, Path, dict]:
    """(class, directory, config as saved) of the model ``name`` saved into tmp_path."""
    model = trained(name)
    directory = model.save(tmp_path / name)
    return type(model), directory, json.loads((directory / "config.json").read_text())


def refused(cls: type, directory: Path, file: str, seconds: float = 5.0) -> str:
    """Loading must raise AmlabError naming ``file`` within ``seconds``; returns its message."""
    began = time.perf_counter()
    with pytest.raises(AmlabError) as caught:
        cls.load(directory)
    took = time.perf_counter() - began
    message = str(caught.value)
    assert str(directory / file) in message or f"{directory}: " in message, message
    assert took < seconds, f"{took:.1f} s: {message}"
    return message


def int_fields(config_cls: type) -> list[str]:
    hints = typing.get_type_hints(config_cls)
    return [k for k, h in hints.items() if h in (int, int | None) and k != "seed"]


#: config values that must be refused (or, for sizes, checked against the tensors)
HUGE = [10**6, 10**12, 2**62, 2**200]


@pytest.mark.parametrize("name", NAMES)
def test_every_size_in_the_config_is_checked_against_the_tensors(tmp_path, name):
    cls, directory, config = saved(tmp_path, name)
    for field in int_fields(cls.Config):
        if field == "chunk_size":  # how many memories a pass takes at once, not a size
            continue
        one_more = [] if field == "steps" else [config[field] + 1 if config[field] else 1]
        for value in [v for v in [*HUGE, -1, 0, *one_more] if v != config[field]]:
            (directory / "config.json").write_text(json.dumps({**config, field: value}))
            refused(cls, directory, "config.json")
    (directory / "config.json").write_text(json.dumps(config))
    assert cls.load(directory).config == trained(name).config  # untampered, it loads


@pytest.mark.parametrize("name", NAMES)
def test_wrong_types_and_values_in_the_config_are_refused(tmp_path, name):
    cls, directory, config = saved(tmp_path, name)
    deep = "[" * 100_000 + "]" * 100_000  # RecursionError in json
    tampered = [
        *[{**config, key: "8x8"} for key in config if key not in ("kind", "dtype")],
        *[{**config, key: [1, [2]]} for key in config if key != "kind"],
        *[{**config, key: {"a": 1}} for key in config if key != "kind"],
        *[{k: v for k, v in config.items() if k != key} for key in config if key != "kind"],
        {**config, "dtype": "float16"},
        {**config, "kind": "DenseAM" if name != "DenseAM" else "GCN"},
        [config],
        None,
    ]
    for value in tampered:
        text = json.dumps(value)
        (directory / "config.json").write_text(text)
        if value is not None and isinstance(value, dict) and value.get("kind") != name:
            with pytest.raises(AmlabError, match=str(directory)):
                cls.load(directory)
            continue
        if value == config:  # (a field whose value happens to be valid either way)
            continue
        try:
            cls.load(directory)
        except AmlabError as exc:
            assert str(directory) in str(exc)
        else:  # only a value that is valid for that field may load
            assert not isinstance(value, dict) or all(
                not isinstance(v, str) or k in ("hopfield", "energy", "index", "kernel")
                for k, v in value.items()
            ), text
    for raw in [deep, "{" * 50_000, '{"kind": 1e999999}', "\xff\xfe", "", "NaN", '{"a": 1' * 3]:
        (directory / "config.json").write_bytes(raw.encode("utf-8", "surrogateescape"))
        refused(cls, directory, "config.json")
    (directory / "config.json").write_text(json.dumps({**config, "x": "y" * (MAX_JSON_BYTES + 1)}))
    assert "more than the" in refused(cls, directory, "config.json")
    for key, value in config.items():  # non-finite numbers in float fields
        if isinstance(value, float):
            (directory / "config.json").write_text(json.dumps({**config, key: math.inf}))
            refused(cls, directory, "config.json")


def write_tensors(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(directory / "tensors.safetensors")
    )


@pytest.mark.parametrize("name", NAMES)
def test_tampered_tensors_are_refused(tmp_path, name):
    cls, directory, config = saved(tmp_path, name)
    file = directory / "tensors.safetensors"
    good = load_file(str(file))
    raw = file.read_bytes()
    first = next(iter(good))
    floating = next(k for k, t in good.items() if t.is_floating_point())
    cases = {
        "renamed": {(k + "_x" if k == first else k): v for k, v in good.items()},
        "dropped": {k: v for k, v in good.items() if k != first},
        "extra": {**good, "extra": torch.zeros(2)},
        "reshaped": {**good, floating: torch.zeros(good[floating].numel() + 1)},
        "float64": {**good, floating: good[floating].double()},
        "float16": {**good, floating: good[floating].half()},
        "int64": {**good, floating: good[floating].long()},
        "nan": {**good, floating: good[floating].clone().fill_(math.nan)},
        "inf": {**good, floating: good[floating].clone().fill_(-math.inf)},
        "empty": {},
    }
    for case, tensors in cases.items():
        write_tensors(directory, tensors)
        message = refused(cls, directory, "tensors.safetensors")
        assert case != "nan" or "NaN or inf" in message
    header_length = struct.unpack("<Q", raw[:8])[0]
    for damaged in [
        raw[: len(raw) // 2],  # truncated data
        raw[: 8 + header_length // 2],  # truncated header
        raw[:7],
        b"",
        struct.pack("<Q", 2**63) + raw[8:],  # a header length beyond the file
        struct.pack("<Q", header_length) + b"{" * header_length + raw[8 + header_length :],
        raw[:8] + raw[8 : 8 + header_length].replace(b'"F32"', b'"F99"') + raw[8 + header_length :],
        raw[:8] + raw[8 : 8 + header_length].replace(b'"F32"', b'"F64"') + raw[8 + header_length :],
        raw + b"\0" * 8,  # data beyond what the header names
        os.urandom(len(raw)),
    ]:
        file.write_bytes(damaged)
        refused(cls, directory, "tensors.safetensors")


def load_in_thread(cls: type, directory: Path, seconds: float = 10.0) -> BaseException | None:
    """Load in a thread (a FIFO must not block the caller); the exception it raised."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            cls.load(directory)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "load blocked"
    return outcome[0]


def remove(target: Path) -> None:
    """Remove whatever ``target`` is: a file, a link, a FIFO or an empty directory."""
    if target.is_dir() and not target.is_symlink():
        target.rmdir()
    elif target.is_symlink() or target.exists():
        target.unlink()


@pytest.mark.parametrize("file", ["config.json", "tensors.safetensors"])
def test_special_files_are_refused_without_blocking(tmp_path, file):
    cls, directory, _ = saved(tmp_path, "EnergyTransformer")
    target = directory / file
    specials = {
        "directory": lambda: target.mkdir(),
        "fifo": lambda: os.mkfifo(target),
        "/dev/zero": lambda: target.symlink_to(Path("/dev/zero")),  # endless: must not be read
        "dangling link": lambda: target.symlink_to(tmp_path / "nowhere"),
        "link loop": lambda: target.symlink_to(target),
    }
    for kind, make in specials.items():
        remove(target)
        make()
        exc = load_in_thread(cls, directory)
        assert isinstance(exc, AmlabError), (kind, exc)
        assert str(target) in str(exc) or str(directory) in str(exc), (kind, exc)
    remove(target)
    target.write_bytes(b"")
    os.chmod(target, 0)
    if os.geteuid() != 0:  # (root reads it anyway)
        assert isinstance(load_in_thread(cls, directory), AmlabError)


def test_run_lengths_are_bounded(tmp_path):
    cls, directory, config = saved(tmp_path, "EnergyTransformer")
    (directory / "config.json").write_text(json.dumps({**config, "steps": MAX_STEPS + 1}))
    assert "at most 100,000" in refused(cls, directory, "config.json")
    (directory / "config.json").write_text(json.dumps({**config, "steps": MAX_STEPS}))
    model = cls.load(directory)
    assert model.steps == MAX_STEPS
    with pytest.raises(AmlabError, match="at most"):
        model.retrieve(torch.zeros(1, 2, 8), steps=MAX_STEPS + 1)
    ls_cls, ls_dir, ls_config = saved(tmp_path, "ListOpsTransformer")
    shared = {**ls_config, "share_weights": True, "layers": 10**9}  # one block, looped
    (ls_dir / "config.json").write_text(json.dumps(shared))
    assert "layers must be at most" in refused(ls_cls, ls_dir, "config.json")


#: loads a MaskedImageET whose config.json asks for dim = 4096 (about 400 MB of weights for
#: a model of a few kB of tensors) and prints the growth of the peak resident memory in MB
MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from amlab.errors import AmlabError
    from amlab.models import MaskedImageET
    model = MaskedImageET((8, 8), dim=8, heads=2, head_dim=4, steps=3)
    model.save(sys.argv[1])
    MaskedImageET.load(sys.argv[1])  # the load path's own imports and caches, untampered
    config = json.loads(open(sys.argv[1] + "/config.json").read())
    config.update(dim=4096, hopfield_memories=None, head_dim=1024)
    open(sys.argv[1] + "/config.json", "w").write(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        MaskedImageET.load(sys.argv[1])
        outcome = "loaded"
    except AmlabError:
        outcome = "refused"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(outcome, (after - before) / 1024)
    """
)


def test_a_tampered_config_allocates_nothing_while_it_is_checked(tmp_path):
    """In a fresh process (the peak resident memory of this one is already high), a config
    that asks for ~400 MB of weights is refused and the peak grows by under 64 MB (measured:
    0-2 MB). Without the build budget the model was built in full: its weights were drawn, and
    the peak grew by ~580 MB."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcome, grown_mb = result.stdout.split()
    assert outcome == "refused"
    assert float(grown_mb) < 64, f"peak memory grew by {grown_mb} MB"


def test_a_shipped_model_still_loads_and_a_tampered_copy_does_not(tmp_path):
    from amlab.explain.server import STATIC_DIR  # noqa: F401 - the package's data is there
    from amlab.models import MaskedImageET

    shipped = Path(__file__).parents[1] / "src" / "amlab" / "explain" / "models" / "et-digits"
    model = MaskedImageET.load(shipped)
    copy = tmp_path / "et"
    copy.mkdir()
    (copy / "tensors.safetensors").write_bytes((shipped / "tensors.safetensors").read_bytes())
    config = json.loads((shipped / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "dim": 10**7}))
    refused(MaskedImageET, copy, "config.json")
    (copy / "config.json").write_text(json.dumps({**config, "steps": 10**9}))
    refused(MaskedImageET, copy, "config.json")
    (copy / "config.json").write_text(json.dumps(config))
    assert MaskedImageET.load(copy).config == model.config


def test_the_energy_transformer_keeps_its_step_limit_outside_loading():
    with pytest.raises(AmlabError, match="at most"):
        EnergyTransformer(4, 1, 2, steps=MAX_STEPS + 1)
