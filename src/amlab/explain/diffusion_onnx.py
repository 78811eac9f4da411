"""The explainer's learned denoiser: a trained class-conditional ConvDenoiser exported to ONNX,
for the browser (ONNX Runtime Web) to run inside its sampler.

The shipped model is ``models/diffusion-digits/`` beside this file, trained on all 1,797
embedded digits (CI cannot afford to train it); ``models/README.md`` gives the command and its
quality. The graph is the network's denoiser in the scaled coordinates of
:mod:`amlab.diffusion.schedules`,

    denoised = D(y, s, label)   (B, D),  y = x / alpha_t (B, D),  s = s_t (B,),  label (B,)

with label -1 for "no class" (the unconditional model). Classifier-free guidance
``D_uncond + w (D_cond - D_uncond)`` is done by the page: it runs the conditional and the
unconditional rows in one batch (the batch size is free).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from amlab.diffusion import ConvDenoiser, LearnedDenoiser
from amlab.diffusion.networks import ConvDenoiserConfig
from amlab.errors import AmlabError
from amlab.explain.onnx_graph import onnx_bytes, write_onnx

SHIPPED_DENOISER = Path(__file__).parent / "models" / "diffusion-digits"

#: the ONNX graph's inputs and outputs, in order (the app reads them by these names)
INPUTS = ("y", "s", "labels")
OUTPUTS = ("denoised",)
#: the sampler the page runs (the one amlab.experiments.diffusion samples with)
SAMPLER = {"method": "heun", "steps": 40}


class ScaledDenoiser(nn.Module):
    """forward(y (B, D) float32, s (B,) float32, labels (B,) int64) -> D(y, s, labels) (B, D):
    ``model.denoise_scaled`` of a network that is its own denoiser (energy=False)."""

    def __init__(self, model: LearnedDenoiser) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model.denoise_scaled(y, s, labels)


def denoiser_onnx_bytes(model: LearnedDenoiser) -> bytes:
    """The ONNX model (bytes) of :class:`ScaledDenoiser` around ``model`` (float32,
    class-conditional, not energy-parameterised: the graph has no autograd)."""
    if model.dtype != torch.float32:
        raise AmlabError(f"the ONNX export needs a float32 model; got {model.dtype}.")
    if model.has_energy:
        raise AmlabError("the ONNX export takes a direct denoiser; train it with --no-energy.")
    if model.num_classes == 0:
        raise AmlabError("the explainer prompts by class; the model must be class-conditional.")
    model = model.eval()
    batch = 2
    inputs = (
        torch.zeros(batch, model.dim),
        torch.ones(batch),
        torch.full((batch,), -1, dtype=torch.int64),
    )
    batch_axis = {name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)}
    return onnx_bytes(ScaledDenoiser(model), inputs, INPUTS, OUTPUTS, dynamic_axes=batch_axis)


def app_config(config: ConvDenoiserConfig) -> dict:
    """The model's configuration as the app reads it: the config's fields but its seed and
    dtype (the graph is float32), the schedule first."""
    fields = {k: v for k, v in asdict(config).items() if k not in ("seed", "dtype")}
    return {**fields, "shape": list(config.shape)}


def export_denoiser_onnx(path: str | Path, model_dir: str | Path = SHIPPED_DENOISER) -> dict:
    """Write the ONNX model of the ConvDenoiser saved in ``model_dir`` to ``path``.

    Returns its manifest entry: file name, the model's config as the app reads it
    (:func:`app_config`), the sampler the page runs, the inputs and outputs.
    """
    model = ConvDenoiser.load(model_dir)
    path = write_onnx(path, denoiser_onnx_bytes(model))
    return {
        "file": path.name,
        "config": app_config(model.config),
        "sampler": dict(SAMPLER),
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
    }
