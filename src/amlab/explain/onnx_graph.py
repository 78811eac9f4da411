"""What the explainer's two ONNX exports share: tracing a module to ONNX bytes with fixed
settings (opset 17, the TorchScript exporter) and writing them atomically."""

from __future__ import annotations

import inspect
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from amlab.errors import AmlabError
from amlab.io import atomic_write_bytes

#: the ONNX opset of every graph the explainer ships
OPSET = 17

# torch 2.5 added the dynamo exporter behind `dynamo=` (default False until 2.9, True after);
# before 2.5 the TorchScript exporter is the only one and the switch does not exist
_TORCHSCRIPT = (
    {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
)


def require_onnx() -> None:
    """Raise AmlabError, naming the extra to install, when the onnx package is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise AmlabError("writing ONNX needs the onnx package: pip install 'amlab[onnx]'") from err


def onnx_bytes(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> bytes:
    """The ONNX model (bytes) of ``module`` traced on ``args``, its inputs and outputs named
    ``inputs`` and ``outputs`` (the app reads them by these names).

    Needs the ``onnx`` package (the ``onnx`` extra), which torch's exporter writes through."""
    require_onnx()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing (unrolled loops)
        torch.onnx.export(
            module,
            args,
            buffer,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            **_TORCHSCRIPT,
        )
    return buffer.getvalue()


def write_onnx(path: str | Path, raw: bytes) -> Path:
    """Write ONNX bytes to ``path`` atomically (its directory is created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, raw)
    return path
