"""Saving and loading models: safetensors for tensors, JSON for the configuration.

A saved model is a directory holding ``tensors.safetensors`` and ``config.json``.
Both are written to temporary files first and moved into place, so a crash mid-save
never leaves a half-written model. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from amlab.errors import AmlabError

M = TypeVar("M", bound=torch.nn.Module)

TENSORS_FILE = "tensors.safetensors"
CONFIG_FILE = "config.json"


def save_model(
    path: str | os.PathLike, kind: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> Path:
    """Write ``tensors`` and ``{"kind": kind, **config}`` into directory ``path``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AmlabError(f"cannot save into {path}: it is a file; name a directory instead.")
    path.mkdir(parents=True, exist_ok=True)
    payload = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    atomic_write(path / TENSORS_FILE, lambda tmp: save_file(payload, tmp))
    text = json.dumps({"kind": kind, **config}, indent=2, sort_keys=True)
    atomic_write_text(path / CONFIG_FILE, text + "\n")
    return path


def load_model(
    path: str | os.PathLike, kind: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a directory written by :func:`save_model`; check it holds a ``kind`` model."""
    path = Path(path)
    config_file, tensors_file = path / CONFIG_FILE, path / TENSORS_FILE
    for f in (config_file, tensors_file):
        if not f.is_file():
            raise AmlabError(
                f"cannot load a {kind} from {path}: {f.name} is missing. "
                f"Pass the directory that {kind}.save() wrote."
            )
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AmlabError(f"{config_file} is not valid JSON ({exc}); re-save the model.") from None
    if not isinstance(config, dict) or config.get("kind") != kind:
        found = config.get("kind") if isinstance(config, dict) else None
        raise AmlabError(
            f"{path} holds a {found!r} model, not a {kind}; load it with the matching class."
        )
    tensors = read_tensors(tensors_file, "re-save the model")
    config.pop("kind")
    return config, tensors


def read_tensors(file: Path, remedy: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an unreadable one raises AmlabError that ends
    with ``remedy`` (what the user should do)."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AmlabError(f"{file} is not a readable safetensors file ({exc}); {remedy}.") from None


def load_module(path: str | os.PathLike, kind: str, build: Callable[[dict[str, Any]], M]) -> M:
    """Read a module written by ``save_model(path, kind, config, module.state_dict())``:
    ``build(config)`` makes it, then the weights are loaded into it. A configuration or
    weights that do not fit raise AmlabError."""
    config, tensors = load_model(path, kind)
    try:
        module = build(config)
        module.load_state_dict(tensors)
    except (TypeError, KeyError, RuntimeError) as exc:
        raise AmlabError(
            f"the files in {path} do not fit {kind} ({exc}); re-save the model."
        ) from None
    return module


def atomic_write_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through :func:`atomic_write`."""
    atomic_write(target, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through :func:`atomic_write`."""
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); give it the mode open() would have
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_metrics(path: Path, metrics: Any) -> str:
    """Write ``metrics`` to ``path`` atomically as strict, indented JSON (see
    :func:`jsonable`); returns the text written."""
    text = json.dumps(jsonable(metrics), indent=2) + "\n"
    atomic_write_text(path, text)
    return text


def jsonable(value: Any) -> Any:
    """Metrics as strict JSON: tensors and numpy scalars to Python, NaN/inf to strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
