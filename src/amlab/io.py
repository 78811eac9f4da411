"""Saving and loading models: safetensors for tensors, JSON for the configuration.

A saved model is a directory holding ``tensors.safetensors`` (the model's ``state_dict()``)
and ``config.json`` (``{"kind": <class name>, **asdict(model.config)}``); every model saves
and loads through :func:`save_model` and :func:`load_model`.
Both are written to temporary files first and moved into place, so a crash mid-save
never leaves a half-written model. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

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
    each of its type (an int stays an int; a float field takes an int). Then the tensors are
    read (no more numbers than the file holds) and ``cls.from_saved(config, tensors)`` builds
    the model under a budget that the tensors set (:class:`_BuildBudget`): a config that asks
    for a bigger model than the file holds (a huge ``dim``, ``layers``) is refused before it
    allocates or loops beyond a few times the file's size. The model's tensors must be the
    saved ones in name, shape and dtype, and finite; they are loaded into it. Anything else
    raises AmlabError naming the file.
    """
    path = Path(path)
    kind = cls.__name__
    remedy = "re-save the model"
    config_file, tensors_file = path / CONFIG_FILE, path / TENSORS_FILE
    for f in (config_file, tensors_file):
        if not f.exists():
            raise AmlabError(
                f"cannot load a {kind} from {path}: {f.name} is missing. "
                f"Pass the directory that {kind}.save() wrote."
            )
    saved = read_json(config_file, remedy)
    found = saved.get("kind") if isinstance(saved, dict) else None
    if found != kind:
        raise AmlabError(
            f"{config_file} holds a {found!r} model, not a {kind}; load it with the matching class."
        )
    config = config_from_json(
        cls.Config, {k: v for k, v in saved.items() if k != "kind"}, config_file
    )
    tensors = read_tensors(tensors_file, remedy)  # as many numbers as the file holds
    with _BuildBudget(tensors):
        model = _build(cls, config, tensors, config_file, tensors_file)
    _check_layout(model.state_dict(), tensors, config_file, tensors_file, cls)
    check_finite(tensors, tensors_file, remedy)
    model.load_state_dict(tensors)
    model.eval()
    return model if device is None else model.to(device)


def model_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the config.json and tensors that :func:`save_model` wrote into directory
    ``path`` (hex, first 16 characters): which saved model drew a gallery, or is shipped."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, TENSORS_FILE):
        digest.update((Path(path) / name).read_bytes())
    return digest.hexdigest()[:16]


def _build(
    cls: type[M],
    config: Any,
    tensors: dict[str, torch.Tensor],
    config_file: Path,
    tensors_file: Path,
) -> M:
    """``cls.from_saved(config, tensors)``; any failure (the config comes from a file, so
    anything may go wrong) raises AmlabError naming both files."""
    try:
        return cls.from_saved(config, tensors)
    except Exception as exc:  # noqa: BLE001 - an untrusted file: every failure is its fault
        raise AmlabError(
            f"{config_file} and {tensors_file} do not fit {cls.__name__} "
            f"({type(exc).__name__}: {exc}); re-save the model."
        ) from None


def layout_mismatch(
    own: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], what: str
) -> str | None:
    """How the ``saved`` tensors differ from a model's own ``own`` (its ``state_dict()``) in
    names, shapes or dtypes, or None when they are the same; ``what`` names the model."""
    if set(own) != set(saved):
        return f"the file holds the tensors {sorted(saved)} but {what} has {sorted(own)}"
    for name, t in saved.items():
        shape, dtype = tuple(t.shape), t.dtype
        if shape != tuple(own[name].shape) or dtype != own[name].dtype:
            return (
                f"tensor {name} is {shape} {dtype} but {what} makes it "
                f"{tuple(own[name].shape)} {own[name].dtype}"
            )
    return None


def former_layout(
    cls: type, own: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]
) -> str | None:
    """What changed in the network, when the ``saved`` tensors hold one that only an earlier
    layout of ``cls`` held (``cls.former_tensors``, name -> what changed) and the model's own
    ``own`` lacks: such weights fit no model of this version (train again; a checkpoint cannot
    be resumed). None otherwise."""
    former = getattr(cls, "former_tensors", {})
    return next((why for name, why in former.items() if name in saved and name not in own), None)


def check_finite(tensors: dict[str, torch.Tensor], file: Path, remedy: str) -> None:
    """Every floating tensor read from ``file`` is finite."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise AmlabError(f"{file}: tensor {name} holds NaN or inf; {remedy}.")


def _check_layout(
    own: dict[str, torch.Tensor],
    saved: dict[str, torch.Tensor],
    config_file: Path,
    tensors_file: Path,
    cls: type,
) -> None:
    """The model built from a config holds exactly the saved tensors. Tensors that only an
    earlier layout of the model held (``cls.former_tensors``) mean the file predates a change
    to the network: its weights must be trained again. Otherwise the config and the tensors
    disagree (one edited, or the two from different saves): re-save the model."""
    mismatch = layout_mismatch(own, saved, "the config")
    if mismatch is None:
        return
    kind = cls.__name__
    change = former_layout(cls, own, saved)
    if change is not None:
        raise AmlabError(
            f"{tensors_file} holds a {kind} of an earlier layout ({change}): its weights do "
            f"not fit this version's {kind} and cannot be converted, re-saved or not. Train "
            "the model again with this version of amlab (the command that trained it)."
        )
    raise AmlabError(
        f"{config_file} and {tensors_file} do not fit {kind}: {mismatch}; re-save the model."
    )


class _BuildBudget(TorchFunctionMode):
    """While a model is built from a config read from a file, count the torch calls made
    and the numbers their results hold, and stop the build (AmlabError) once either passes
    a budget that the file's tensors set. A model that fits them creates a few times their
    numbers in a few dozen calls per tensor; a tampered config (``dim``: 10**6, ``layers``:
    10**9) would allocate gigabytes or loop for hours. A call that creates a tensor from
    sizes (:func:`_requested_numbers`) is refused before it runs, so no single allocation
    passes the budget either."""

    NUMBERS_PER_SAVED, CALLS_PER_SAVED = 16, 64
    NUMBERS_FLOOR, CALLS_FLOOR = 2**20, 2**14

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        numbers = sum(t.numel() for t in tensors.values())
        self.numbers = self.NUMBERS_PER_SAVED * numbers + self.NUMBERS_FLOOR
        self.calls = self.CALLS_PER_SAVED * len(tensors) + self.CALLS_FLOOR

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        requested = _requested_numbers(func, args, kwargs)
        if requested is not None and requested > self.numbers:
            self._refuse()
        out = func(*args, **kwargs)
        self.calls -= 1
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        self.numbers -= sum(t.numel() for t in outputs if isinstance(t, torch.Tensor))
        if self.calls < 0 or self.numbers < 0:
            self._refuse()
        return out

    @staticmethod
    def _refuse() -> None:
        raise AmlabError("the config describes a bigger model than the saved tensors hold")


#: torch functions that create a tensor of a size given in their arguments
_SIZED = {
    "empty",
    "zeros",
    "ones",
    "full",
    "rand",
    "randn",
    "randint",
    "normal",
    "empty_strided",
    "new_empty",
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty_strided",
}


def _requested_numbers(func: Any, args: tuple, kwargs: dict) -> int | None:
    """How many numbers a call that creates a tensor from sizes asks for, before it runs
    (None for other calls, and for arguments torch itself will refuse): the size as
    ``size=``, as the first sequence argument, or as leading int arguments (``randn(2, 3)``);
    ``eye``'s n * m; ``arange``'s, ``linspace``'s and ``logspace``'s number of steps."""
    name = getattr(func, "__name__", "")
    try:
        if name in _SIZED:
            rest = args[1:] if name.startswith("new_") else args
            size = kwargs.get("size")
            if size is None:
                size = next((a for a in rest if isinstance(a, (tuple, list, torch.Size))), None)
            if size is None:
                size = [a for a in rest if isinstance(a, int) and not isinstance(a, bool)]
            return math.prod(int(v) for v in size)
        if name == "eye":
            n = int(kwargs.get("n", args[0] if args else 0))
            return n * int(kwargs.get("m", args[1] if len(args) > 1 else n))
        if name in ("linspace", "logspace"):
            return int(kwargs.get("steps", args[2] if len(args) > 2 else 0))
        if name == "arange":
            bounds = [float(a) for a in args if isinstance(a, (int, float))]
            start, end, step = ([0.0, *bounds] if len(bounds) == 1 else [*bounds, 1.0])[:3]
            return max(0, math.ceil((end - start) / step))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, IndexError):
        return None
    return None


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
    check_regular_file(file, remedy)
    try:
        return load_file(str(file))
    except Exception as exc:  # noqa: BLE001 - safetensors' parser raises several kinds
        raise AmlabError(f"{file} is not a readable safetensors file ({exc}); {remedy}.") from None


#: the largest JSON file amlab reads (a model's config, a checkpoint's state, a record)
MAX_JSON_BYTES = 16 * 2**20


def read_json(file: Path, remedy: str) -> Any:
    """The JSON value in ``file``. A missing file, a special one (directory, FIFO, device),
    one over MAX_JSON_BYTES, unreadable bytes or malformed JSON (nesting too deep included)
    raise AmlabError naming the file and ending with ``remedy``."""
    size = check_regular_file(file, remedy)
    if size > MAX_JSON_BYTES:
        raise AmlabError(
            f"{file} is {size:,} bytes, more than the {MAX_JSON_BYTES:,} a JSON file amlab "
            f"reads may have; {remedy}."
        )
    data = _read_bytes(file, remedy, MAX_JSON_BYTES + 1)
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, too deep, huge ints
        raise AmlabError(f"{file} is not valid JSON ({exc}); {remedy}.") from None


def read_text(file: Path, remedy: str) -> str:
    """The UTF-8 text of ``file``. A missing or special file, unreadable bytes or bytes that
    are not UTF-8 raise AmlabError naming the file (and the first bad byte) and ending with
    ``remedy``."""
    check_regular_file(file, remedy)
    data = _read_bytes(file, remedy)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AmlabError(
            f"{file} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); {remedy}."
        ) from None


def _read_bytes(file: Path, remedy: str, limit: int = -1) -> bytes:
    """The bytes of ``file`` (at most ``limit``, all if -1); an error reading them raises
    AmlabError naming the file and ending with ``remedy``."""
    try:
        with open(file, "rb") as f:
            return f.read(limit)
    except OSError as exc:
        raise AmlabError(f"cannot read {file} ({exc.strerror or exc}); {remedy}.") from None


def check_regular_file(file: Path, remedy: str) -> int:
    """The size of ``file``, a regular file we may read; a missing or special one (directory,
    FIFO, device: opening a FIFO to read would wait for a writer) raises AmlabError."""
    try:
        st = os.stat(file)
    except OSError as exc:
        raise AmlabError(f"cannot read {file} ({exc.strerror or exc}); {remedy}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise AmlabError(f"{file} is not a regular file (a directory or a special file); {remedy}.")
    return st.st_size


def atomic_write_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through :func:`atomic_write`."""
    atomic_write(target, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through :func:`atomic_write`."""
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))


def write_float32_tensors(target: Path, tensors: dict[str, torch.Tensor]) -> list[dict]:
    """Write every tensor of ``tensors`` (a ``state_dict``) to ``target`` as float32
    little-endian, one after the other, through :func:`atomic_write`; return each tensor's
    ``name``, ``shape`` and ``offset`` (in floats), in order: what the explainer's
    ``unpackTensors`` reads."""
    layout, parts, offset = [], [], 0
    for name, value in tensors.items():
        layout.append({"name": name, "shape": list(value.shape), "offset": offset})
        parts.append(value.detach().float().numpy().astype("<f4").tobytes())
        offset += value.numel()
    atomic_write_bytes(target, b"".join(parts))
    return layout


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
