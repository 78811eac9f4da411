"""amlab's error type and the input checks every public entry point shares.

Every problem with user input raises :class:`AmlabError` (a ``ValueError``) whose
message says what was wrong and how to fix it, so that no bare traceback from deep
inside torch reaches the user.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class AmlabError(ValueError):
    """Bad input to amlab: the message names the problem and the fix."""


def as_float_tensor(
    value: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn ``value`` (tensor, array or nested list) into a finite floating tensor.

    Integers and booleans become ``dtype`` (float32 unless given); floating tensors keep
    their dtype unless ``dtype`` is given; Python floats asked for in float64 keep all
    their digits. Raises AmlabError for non-numeric input,
    complex numbers, NaN or inf.
    """
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise AmlabError(
                f"{name} must be a tensor or array of numbers; got {type(value).__name__} "
                f"that torch cannot convert ({exc}). Pass a torch.Tensor or numpy array."
            ) from None
    if dtype == torch.float64 and t.dtype == torch.float32 and not hasattr(value, "dtype"):
        # torch reads Python floats (doubles) as float32: read them again at full precision
        t = torch.as_tensor(value, dtype=torch.float64)
    if t.is_complex():
        raise AmlabError(f"{name} is complex ({t.dtype}); amlab works with real numbers only.")
    if not (t.is_floating_point() or t.dtype in _INTEGER_DTYPES):
        raise AmlabError(f"{name} has dtype {t.dtype}; pass floating-point numbers.")
    target = (
        dtype
        if dtype is not None
        else (t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32)
    )
    t = t.to(device=device if device is not None else t.device, dtype=target)
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise AmlabError(
            f"{name} contains {bad} NaN or infinite value(s); replace them (for missing "
            "pixels, fill a value and pass a clamp mask instead)."
        )
    return t


def check_squares_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Rows (N, D) whose squared norms fit the dtype: energies use ||x||^2, so entries near
    the dtype's limit (e.g. 1e38 in float32) would turn into inf - inf = NaN."""
    if t.numel() and not bool(torch.isfinite(torch.linalg.vector_norm(t, dim=-1) ** 2).all()):
        raise AmlabError(
            f"{name} has entries so large that their squared norm overflows {t.dtype}; "
            "rescale the data (e.g. to [0, 1]) or use float64."
        )
    return t


_INTEGER_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool}


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``), returned as float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AmlabError(f"{name} must be a number; got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise AmlabError(f"{name} must be a finite number {need}; got {value!r}.")
    return v


def check_int(value: Any, name: str) -> int:
    """An integer of any sign (an int or an int-like such as numpy's; not a bool, not a
    float, however whole), returned as int."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):  # ints and int-likes
        raise AmlabError(f"{name} must be an integer; got {value!r}.")
    return int(value)


def check_positive_int(value: Any, name: str, *, allow_zero: bool = False) -> int:
    """An integer >= 1 (or >= 0 with ``allow_zero``)."""
    v = check_int(value, name)
    if v < 0 or (v == 0 and not allow_zero):
        need = ">= 0" if allow_zero else ">= 1"
        raise AmlabError(f"{name} must be an integer {need}; got {v}.")
    return v


def scale_range(dtype: torch.dtype) -> tuple[float, float]:
    """The range [1/R, R], R = sqrt(largest number of ``dtype``), that an inverse temperature
    or an energy's floor must lie in for ``dtype`` (float32: about 5.4e-20..1.8e19; float64:
    7.5e-155..1.3e154). Inside it the parameter, its reciprocal, and either one times a
    squared distance up to R (entries up to about R^(1/2)) stay finite, so energies and
    gradients do; outside it they overflow to inf or NaN (beta = 1e39 or 1e-39 in float32)."""
    root = math.sqrt(torch.finfo(dtype).max)
    return 1.0 / root, root


def check_scale(value: Any, name: str, dtype: torch.dtype, *, allow_zero: bool = False) -> float:
    """A positive number within :func:`scale_range` of ``dtype`` (or 0 with ``allow_zero``,
    as an energy's floor eps may be), returned as float: an inverse temperature beta, or a
    floor inside a log. Refused with the range the dtype allows."""
    v = check_positive(value, name, allow_zero=allow_zero)
    low, high = scale_range(dtype)
    if v != 0 and not low <= v <= high:
        zero = "0 or " if allow_zero else ""
        or_f64 = "" if dtype == torch.float64 else ", or use float64"
        raise AmlabError(
            f"{name} = {v:g} is outside the range {zero}[{low:.2g}, {high:.2g}] that "
            f"{str(dtype).removeprefix('torch.')} allows (beyond it, energies and gradients "
            f"overflow); choose a value inside it{or_f64}."
        )
    return v


#: the most steps a run may take (descent, a model's default number of steps, a looped
#: transformer's layers): a longer run is a mistake or a tampered file, not a computation
MAX_STEPS = 100_000


def check_steps(value: Any, name: str = "steps", *, allow_zero: bool = False) -> int:
    """A number of steps: an integer >= 1 (>= 0 with ``allow_zero``) and <= MAX_STEPS."""
    v = check_positive_int(value, name, allow_zero=allow_zero)
    if v > MAX_STEPS:
        raise AmlabError(
            f"{name} must be at most {MAX_STEPS:,} (amlab's limit on the length of a run); "
            f"got {v:,}."
        )
    return v


#: the floating dtypes a model may have, by name (the name is what a model's config holds)
FLOAT_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_dtype(value: Any, name: str = "dtype") -> torch.dtype:
    """torch.float32 or torch.float64, given as the dtype or its name ("float32", "float64")."""
    dtype = FLOAT_DTYPES.get(value) if isinstance(value, str) else value
    if dtype not in FLOAT_DTYPES.values():
        raise AmlabError(
            f"{name} must be torch.float32 or torch.float64 (or their names); got {value!r}."
        )
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The name ("float32", "float64") of a floating dtype, as a model's config holds it."""
    return str(check_dtype(dtype)).removeprefix("torch.")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (exact string match)."""
    if value not in choices:
        raise AmlabError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}.")
    return value
