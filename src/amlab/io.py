"""Saving and loading models: safetensors for tensors, JSON for the configuration.

A saved model is a directory holding ``tensors.safetensors`` (the model's ``state_dict()``)
and ``config.json`` (``{"kind": <class name>, **asdict(model.config)}``); every model saves
and loads through :func:`save_model` and :func:`load_model`.
Both are written to temporary files first and moved into place, so a crash mid-save
never leaves a half-written model. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from amlab.errors import AmlabError

M = TypeVar("M", bound=torch.nn.Module)
C = TypeVar("C")

TENSORS_FILE = "tensors.safetensors"
CONFIG_FILE = "config.json"


def save_model(path: str | os.PathLike, model: torch.nn.Module) -> Path:
    """Write ``model`` into directory ``path``: ``model.state_dict()`` to
    ``tensors.safetensors`` and ``{"kind": <class name>, **asdict(model.config)}`` to
    ``config.json``. Returns the directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AmlabError(f"cannot save into {path}: it is a file; name a directory instead.")
    path.mkdir(parents=True, exist_ok=True)
    payload = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    atomic_write(path / TENSORS_FILE, lambda tmp: save_file(payload, tmp))
    config = {"kind": type(model).__name__, **dataclasses.asdict(model.config)}
    atomic_write_text(path / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def load_model(
    path: str | os.PathLike, cls: type[M], device: torch.device | str | None = None
) -> M:
    """The ``cls`` model that :func:`save_model` wrote into directory ``path``, in eval mode,
    moved to ``device`` when given.

    config.json must name ``cls`` as its kind and hold exactly the fields of ``cls.Config``,
    each of its type (an int stays an int; a float field takes an int); the model is built by
    ``cls.from_saved(config, tensors)`` and its tensors must be the saved ones in name,
    shape and dtype. Anything else raises AmlabError naming the file.
    """
    path = Path(path)
    kind = cls.__name__
    config_file, tensors_file = path / CONFIG_FILE, path / TENSORS_FILE
    for f in (config_file, tensors_file):
        if not f.is_file():
            raise AmlabError(
                f"cannot load a {kind} from {path}: {f.name} is missing. "
                f"Pass the directory that {kind}.save() wrote."
            )
    try:
        saved = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AmlabError(f"{config_file} is not valid JSON ({exc}); re-save the model.") from None
    found = saved.get("kind") if isinstance(saved, dict) else None
    if found != kind:
        raise AmlabError(
            f"{path} holds a {found!r} model, not a {kind}; load it with the matching class."
        )
    config = config_from_json(
        cls.Config, {k: v for k, v in saved.items() if k != "kind"}, config_file
    )
    tensors = read_tensors(tensors_file, "re-save the model")
    try:
        model = cls.from_saved(config, tensors)
    except (AmlabError, TypeError, KeyError, RuntimeError) as exc:
        raise AmlabError(
            f"{config_file} and {tensors_file.name} do not fit {kind} ({exc}); re-save the model."
        ) from None
    _check_loaded(model.state_dict(), tensors, tensors_file, kind)
    model.eval()
    return model if device is None else model.to(device)


def _check_loaded(
    own: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], file: Path, kind: str
) -> None:
    """The model built from a config holds exactly the saved tensors: same names, shapes and
    dtypes, and finite values."""
    if set(own) != set(saved):
        raise AmlabError(
            f"{file} holds the tensors {sorted(saved)} but a {kind} of this config has "
            f"{sorted(own)}; re-save the model."
        )
    for name, t in saved.items():
        if t.shape != own[name].shape or t.dtype != own[name].dtype:
            raise AmlabError(
                f"{file}: tensor {name} is {tuple(t.shape)} {t.dtype} but the config makes it "
                f"{tuple(own[name].shape)} {own[name].dtype}; re-save the model."
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise AmlabError(f"{file}: tensor {name} holds NaN or inf; re-save the model.")


def config_from_json(config_cls: type[C], values: dict[str, Any], file: Path) -> C:
    """The dataclass ``config_cls`` from the JSON object ``values`` read from ``file``: exactly
    its fields, each of its annotated type (JSON lists become tuples where the field is a
    tuple; ints stay ints; a float field takes an int). Raises AmlabError naming the file."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(values) - set(names))
    missing = [name for name in names if name not in values]
    if unknown or missing:
        what = "; ".join(
            f"{label} {', '.join(keys)}"
            for label, keys in (("unknown keys", unknown), ("missing keys", missing))
            if keys
        )
        raise AmlabError(
            f"{file} does not fit {config_cls.__name__} ({what}); re-save the model with "
            "this version of amlab."
        )
    checked = {}
    for name in names:
        ok, checked[name] = _typed(values[name], hints[name])
        if not ok:
            raise AmlabError(
                f"{file}: {name} must be {_type_name(hints[name])}; got {values[name]!r}. "
                "Re-save the model."
            )
    try:
        return config_cls(**checked)
    except AmlabError as exc:
        raise AmlabError(f"{file}: {exc}") from None


def _typed(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether ``value`` read from JSON is of type ``hint``, the value as that type)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, typed = _typed(value, arg)
            if ok:
                return True, typed
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool or hint is str:
        return isinstance(value, hint), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number, float(value) if number else value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list):
            return False, value
        items = [_typed(v, args[0]) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return False, value
        items = {k: _typed(v, args[1]) for k, v in value.items()}
        return all(ok for ok, _ in items.values()), {k: v for k, (_, v) in items.items()}
    raise TypeError(f"config fields of type {hint} cannot be read from JSON")


def _type_name(hint: Any) -> str:
    """How a field's type reads in an error message: "an int", "a float or None", ..."""
    names = {int: "an int", float: "a number", bool: "true or false", str: "a string"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    if typing.get_origin(hint) is dict:
        return "an object"
    return names.get(hint, str(hint))


def read_tensors(file: Path, remedy: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an unreadable one raises AmlabError that ends
    with ``remedy`` (what the user should do)."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AmlabError(f"{file} is not a readable safetensors file ({exc}); {remedy}.") from None


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
