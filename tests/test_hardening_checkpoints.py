"""Tampered checkpoints: a state.json whose step is negative, beyond the run's length, of the
wrong type, or whose keys or losses do not fit, and model or optimizer tensors that do not
fit, are refused with an AmlabError; an untouched checkpoint still resumes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_training import make_model, regression_loss

from amlab.errors import AmlabError
from amlab.training import TrainConfig, latest_checkpoint, load_checkpoint, train

RUN = TrainConfig(steps=8, checkpoint_every=5, lr=1e-2)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A run of 8 steps stopped after a checkpoint at step 5 (so it can be resumed)."""
    train(make_model(), regression_loss, RUN, tmp_path, on_step=lambda done, total, m: done == 5)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "checkpoint-00000005"
    return ckpt


def resume(ckpt: Path):
    return train(make_model(), regression_loss, RUN, ckpt.parent, resume=True)


def edit_state(ckpt: Path, change) -> None:
    file = ckpt / "state.json"
    state = json.loads(file.read_text())
    change(state)
    file.write_text(json.dumps(state))


def set_key(key, value):
    return lambda state: state.__setitem__(key, value)


STATE_TAMPERING = {
    "step negative": set_key("step", -1),
    "step zero": set_key("step", 0),
    "step beyond the run": set_key("step", 9),
    "step far beyond": set_key("step", 10**18),
    "step a float": set_key("step", 5.0),
    "step a fraction": set_key("step", 4.5),
    "step a string": set_key("step", "5"),
    "step a bool": set_key("step", True),
    "step null": set_key("step", None),
    "losses too few": lambda s: s["losses"].pop(),
    "losses too many": lambda s: s["losses"].append(1.0),
    "losses a string": set_key("losses", "0.1"),
    "a loss NaN": lambda s: s["losses"].__setitem__(0, math.nan),
    "a loss infinite": lambda s: s["losses"].__setitem__(0, math.inf),
    "a loss a string": lambda s: s["losses"].__setitem__(0, "1"),
    "missing step": lambda s: s.pop("step"),
    "missing settings": lambda s: s.pop("settings"),
    "missing param_groups": lambda s: s.pop("param_groups"),
    "an unknown key": set_key("extra", 1),
    "run length tampered": lambda s: s["settings"]["train"].__setitem__("steps", 3),
    "run length a string": lambda s: s["settings"]["train"].__setitem__("steps", "8"),
    "settings not an object": set_key("settings", [1]),
    "param_groups not a list": set_key("param_groups", {"lr": 1}),
    "param_groups of numbers": set_key("param_groups", [1, 2]),
    "param_groups empty": set_key("param_groups", []),
    "a group's params wrong": lambda s: s["param_groups"][0].__setitem__("params", [99]),
    "a group's betas wrong": lambda s: s["param_groups"][0].__setitem__("betas", "x"),
}


@pytest.mark.parametrize("change", STATE_TAMPERING.values(), ids=STATE_TAMPERING)
def test_a_tampered_state_is_refused(checkpoint, change):
    edit_state(checkpoint, change)
    with pytest.raises(AmlabError, match="checkpoint-00000005"):
        resume(checkpoint)


@pytest.mark.parametrize(
    "text", ["", "[]", "5", "null", "{", "[" * 100_000, '{"step": 1e999}', "\xff"]
)
def test_a_state_that_is_not_an_object_is_refused(checkpoint, text):
    (checkpoint / "state.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(AmlabError, match="state.json"):
        resume(checkpoint)


def edit_tensors(file: Path, change) -> None:
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file))


def first(tensors: dict) -> str:
    return sorted(tensors)[0]


TENSOR_TAMPERING = {
    "float64": lambda t: t.__setitem__(first(t), t[first(t)].double()),
    "float16": lambda t: t.__setitem__(first(t), t[first(t)].half()),
    "reshaped": lambda t: t.__setitem__(first(t), t[first(t)].reshape(-1, 1)),
    "grown": lambda t: t.__setitem__(first(t), torch.zeros(t[first(t)].numel() + 1)),
    "NaN": lambda t: t.__setitem__(first(t), torch.full_like(t[first(t)], math.nan)),
    "inf": lambda t: t.__setitem__(first(t), torch.full_like(t[first(t)], math.inf)),
    "dropped": lambda t: t.pop(first(t)),
    "extra": lambda t: t.__setitem__("extra", torch.zeros(1)),
}


@pytest.mark.parametrize("change", TENSOR_TAMPERING.values(), ids=TENSOR_TAMPERING)
@pytest.mark.parametrize("file", ["model.safetensors", "optimizer.safetensors"])
def test_tampered_tensors_are_refused(checkpoint, file, change):
    edit_tensors(checkpoint / file, change)
    with pytest.raises(AmlabError, match=file):
        resume(checkpoint)


def test_optimizer_state_of_another_shape_is_refused(checkpoint):
    def swap(tensors):  # exp_avg of the first parameter, shaped like another one's
        other = next(k for k in sorted(tensors) if k.endswith("exp_avg") and not k.startswith("0."))
        tensors["0.exp_avg"] = torch.zeros_like(tensors[other])

    edit_tensors(checkpoint / "optimizer.safetensors", swap)
    with pytest.raises(AmlabError, match="optimizer"):
        resume(checkpoint)


@pytest.mark.parametrize("kind", ["directory", "fifo", "/dev/zero"])
def test_special_files_in_a_checkpoint_are_refused(checkpoint, kind):
    for name in ("state.json", "model.safetensors"):
        target = checkpoint / name
        target.rename(checkpoint / f"{name}.bak")
        if kind == "directory":
            target.mkdir()
        elif kind == "fifo":
            os.mkfifo(target)
        else:
            target.symlink_to(Path("/dev/zero"))
        with pytest.raises(AmlabError, match=name):
            load_checkpoint(checkpoint, make_model())
        target.rmdir() if kind == "directory" else target.unlink()
        (checkpoint / f"{name}.bak").rename(target)
    pointer = checkpoint.parent / "latest"
    pointer.unlink()
    pointer.mkdir()
    with pytest.raises(AmlabError, match="latest"):
        resume(checkpoint)


def test_an_untouched_checkpoint_resumes_to_the_uninterrupted_weights(checkpoint, tmp_path):
    state = load_checkpoint(checkpoint, make_model())
    assert state["step"] == 5 and len(state["losses"]) == 5
    resumed = resume(checkpoint)
    assert resumed.resumed_from == 5 and len(resumed.losses) == 8
    straight = make_model()
    done = train(straight, regression_loss, RUN, tmp_path / "straight")
    assert resumed.losses == done.losses
