"""The explainer's Energy Transformer: a trained MaskedImageET exported to ONNX, its T steps
unrolled and every step recorded, for the browser (ONNX Runtime Web) to run.

The shipped model is ``models/et-digits/`` beside this file, trained on the embedded digits
(CI cannot afford to train it) with::

    amlab train et --out runs/et-digits --steps 3000     # D=64, H=4, Y=16, K=256, T=12
    cp -r runs/et-digits/model src/amlab/explain/models/et-digits

(2x2 patches, 16 per image; masked-patch MSE 0.042 against 0.072 for mean fill,
``amlab eval et --model runs/et-digits``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from amlab.energy.transformer import (
    attention_energy_grad,
    attention_log_partition,
    attention_mask,
    hopfield_energy_grad,
)
from amlab.errors import AmlabError
from amlab.explain.onnx_graph import onnx_bytes, write_onnx
from amlab.models.masked_image_et import MaskedImageET, MaskedImageETConfig

SHIPPED_ET = Path(__file__).parent / "models" / "et-digits"

#: the ONNX graph's inputs and outputs, in order (the app reads them by these names)
INPUTS = ("image", "masked")
OUTPUTS = ("completed", "decoded", "attention_energy", "hopfield_energy", "attention")


class UnrolledCompletion(nn.Module):
    """MaskedImageET's completion of one image, its T steps unrolled, with every step kept.

    forward(image (1, D) float32, masked (1, N) bool) returns, for steps t = 0..T:
    completed (T+1, D): the image with its masked patches decoded from the tokens at step t
    (the model's ``images`` at t = T); decoded (T+1, D): every patch decoded at step t;
    attention_energy, hopfield_energy (T+1,): the block's two energy parts at step t;
    attention (T+1, H, N+1, N+1): each head's attention probabilities [query, key] at step t
    (token 0 is CLS). The same functions as ``MaskedImageET.forward`` compute each step.
    """

    def __init__(self, model: MaskedImageET) -> None:
        super().__init__()
        self.model = model
        # the attention pattern is fixed (N+1 tokens): a constant of the graph
        n = model.num_patches + 1
        self.register_buffer("allowed", attention_mask(n, model.block.exclude_self), False)

    def forward(self, image: torch.Tensor, masked: torch.Tensor):
        m, block = self.model, self.model.block
        tokens = m.encoder(m.patches(image))
        tokens = torch.where(masked[..., None], m.mask_token, tokens)
        x = torch.cat([m.cls_token.expand(1, 1, -1), tokens], dim=1) + m.positions
        allowed = self.allowed
        pixels = m.pixel_mask(masked)
        completed, decoded, e_att, e_hn, probs = [], [], [], [], []
        for t in range(block.steps + 1):
            g = block.layer_norm(x)
            att, d_att = attention_energy_grad(g, block.w_k, block.w_q, block.beta, allowed)
            hn, d_hn = hopfield_energy_grad(g, block.xi, block.hopfield, block.hopfield_beta)
            picture = m.images(m.decoder(x[:, 1:]))
            decoded.append(picture)
            completed.append(torch.where(pixels, picture, image))
            e_att.append(att)
            e_hn.append(hn)
            probs.append(attention_log_partition(g, block.w_k, block.w_q, block.beta, allowed)[1])
            if t < block.steps:
                x = x - block.step_size * (d_att + d_hn)
        return (
            torch.cat(completed),
            torch.cat(decoded),
            torch.cat(e_att),
            torch.cat(e_hn),
            torch.cat(probs),
        )


def et_onnx_bytes(model: MaskedImageET) -> bytes:
    """The ONNX model (bytes) of :class:`UnrolledCompletion` around ``model`` (float32)."""
    if model.positions.dtype != torch.float32:
        raise AmlabError(f"the ONNX export needs a float32 model; got {model.positions.dtype}.")
    model = model.eval()
    image = torch.zeros(1, model.channels * model.height * model.width)
    masked = torch.zeros(1, model.num_patches, dtype=torch.bool)
    return onnx_bytes(UnrolledCompletion(model), (image, masked), INPUTS, OUTPUTS)


def app_settings(config: MaskedImageETConfig) -> dict:
    """The model's configuration as the app reads it (``web/src/lib/data.ts``): the config's
    fields but its dtype (the graph is float32), the step size named ``alpha`` as in the
    paper."""
    fields = {
        ("alpha" if k == "step_size" else k): v for k, v in asdict(config).items() if k != "dtype"
    }
    return {**fields, "image_shape": list(config.image_shape)}


def export_et_onnx(path: str | Path, model_dir: str | Path = SHIPPED_ET) -> dict:
    """Write the ONNX model of the MaskedImageET saved in ``model_dir`` to ``path``.

    Returns its manifest entry: file name, the model's settings (:func:`app_settings`), the
    inputs and outputs.
    """
    model = MaskedImageET.load(model_dir)
    path = write_onnx(path, et_onnx_bytes(model))
    h, y, _ = model.block.w_k.shape
    return {
        "file": path.name,
        "settings": app_settings(model.config),
        "patches": model.num_patches,
        "grid": list(model.grid),
        "heads": h,
        "head_dim": y,
        "beta": model.block.beta,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
    }
