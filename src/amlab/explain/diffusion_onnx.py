"""The explainer's learned denoisers: a trained class-conditional ConvDenoiser and a trained
text-prompted TextConvDenoiser exported to ONNX, for the browser (ONNX Runtime Web) to run
inside its sampler.

The shipped model is ``models/diffusion-digits/`` beside this file, trained on all 1,797
embedded digits (CI cannot afford to train it); ``models/README.md`` gives the command and its
quality. The graph is the network's denoiser in the scaled coordinates of
:mod:`amlab.diffusion.schedules`,

    denoised = D(y, s, label)   (B, D),  y = x / alpha_t (B, D),  s = s_t (B,),  label (B,)

with label -1 for "no class" (the unconditional model). Classifier-free guidance
``D_uncond + w (D_cond - D_uncond)`` is done by the page: it runs the conditional and the
unconditional rows in one batch (the batch size is free).

The text model (``tasks/models/text-digits/``, the one ``amlab gallery`` draws with) goes out
as the same graph with its text encoder inside: its third input is ``tokens`` (B, L) int64,
the token ids of :func:`amlab.data.captions.tokenize` (-1: padding, a row of -1 the empty
prompt, the unconditional model); the prompt length L is free. Its manifest entry carries the
words a prompt may use (the vocabulary also in its config) and the caption of every embedded
digit under the model's caption scheme, so the page tokenises and picks the stored digits of
a caption with the package's own words and terciles.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from amlab.data.attributes import ATTRIBUTES
from amlab.data.captions import CLASS_WORDS, VOCABULARY, WORDS, CaptionScheme
from amlab.data.images import digits
from amlab.diffusion import ConvDenoiser, LearnedDenoiser, TextConvDenoiser
from amlab.diffusion.networks import ConvDenoiserConfig
from amlab.errors import AmlabError
from amlab.explain.onnx_graph import onnx_bytes, write_onnx
from amlab.io import model_hash, read_json

SHIPPED_DENOISER = Path(__file__).parent / "models" / "diffusion-digits"
#: the text model shipped with the package (amlab.tasks.prompts.SHIPPED_MODEL: explain may
#: not import tasks, so the directory is named here)
SHIPPED_TEXT_DENOISER = Path(__file__).parents[1] / "tasks" / "models" / "text-digits"

#: the ONNX graph's inputs and outputs, in order (the app reads them by these names)
INPUTS = ("y", "s", "labels")
#: the text model's graph: token ids (B, L) in place of the labels
TEXT_INPUTS = ("y", "s", "tokens")
OUTPUTS = ("denoised",)
#: the sampler the page runs (the one amlab.experiments.diffusion samples with)
SAMPLER = {"method": "heun", "steps": 40}


class ScaledDenoiser(nn.Module):
    """forward(y (B, D) float32, s (B,) float32, labels (B,) int64) -> D(y, s, labels) (B, D):
    ``model.denoise_scaled`` of a network that is its own denoiser (energy=False); for a
    TextConvDenoiser ``labels`` are token ids (B, L)."""

    def __init__(self, model: LearnedDenoiser) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model.denoise_scaled(y, s, labels)


def graph_inputs(model: LearnedDenoiser) -> tuple[str, ...]:
    """The names of the ONNX graph's inputs for ``model``: :data:`TEXT_INPUTS` for a
    TextConvDenoiser, else :data:`INPUTS`."""
    return TEXT_INPUTS if isinstance(model, TextConvDenoiser) else INPUTS


def denoiser_onnx_bytes(model: LearnedDenoiser) -> bytes:
    """The ONNX model (bytes) of :class:`ScaledDenoiser` around ``model`` (float32,
    class-conditional or a TextConvDenoiser, not energy-parameterised: the graph has no
    autograd)."""
    if model.dtype != torch.float32:
        raise AmlabError(f"the ONNX export needs a float32 model; got {model.dtype}.")
    if model.has_energy:
        raise AmlabError("the ONNX export takes a direct denoiser; train it with --no-energy.")
    if not model.conditional:
        raise AmlabError(
            "the explainer prompts by class or by text; the model must be class-conditional "
            "or a TextConvDenoiser."
        )
    model = model.eval()
    batch = 2
    names = graph_inputs(model)
    axes = {name: {0: "batch"} for name in (*names, *OUTPUTS)}
    if names == TEXT_INPUTS:  # one real prompt of two words and the empty prompt
        condition = torch.tensor([[0, 0], [-1, -1]])
        axes["tokens"] = {0: "batch", 1: "words"}
    else:
        condition = torch.full((batch,), -1, dtype=torch.int64)
    inputs = (torch.zeros(batch, model.dim), torch.ones(batch), condition)
    return onnx_bytes(ScaledDenoiser(model), inputs, names, OUTPUTS, dynamic_axes=axes)


def app_config(config: ConvDenoiserConfig) -> dict:
    """The model's configuration as the app reads it: the config's fields but its seed and
    dtype (the graph is float32), the schedule first."""
    fields = {k: v for k, v in asdict(config).items() if k not in ("seed", "dtype")}
    return {**fields, "shape": list(config.shape)}


def export_denoiser_onnx(
    path: str | Path, model_dir: str | Path = SHIPPED_DENOISER, kind: type = ConvDenoiser
) -> dict:
    """Write the ONNX model of the ``kind`` (ConvDenoiser or TextConvDenoiser) saved in
    ``model_dir`` to ``path``.

    Returns its manifest entry: file name, the model's config as the app reads it
    (:func:`app_config`; a text model's holds its vocabulary), the sampler the page runs, the
    inputs and outputs.
    """
    model = kind.load(model_dir)
    path = write_onnx(path, denoiser_onnx_bytes(model))
    return {
        "file": path.name,
        "config": app_config(model.config),
        "sampler": dict(SAMPLER),
        "inputs": list(graph_inputs(model)),
        "outputs": list(OUTPUTS),
    }


def prompt_words() -> dict:
    """The words a prompt may use (amlab.data.captions), as the page reads them:
    ``vocabulary``, ``attribute_words`` (attribute -> its low and high word, in
    :data:`~amlab.data.attributes.ATTRIBUTES` order) and ``class_words``."""
    return {
        "vocabulary": list(VOCABULARY),
        "attribute_words": {name: list(WORDS[name]) for name in ATTRIBUTES},
        "class_words": list(CLASS_WORDS),
    }


def export_text_denoiser_onnx(
    path: str | Path, model_dir: str | Path = SHIPPED_TEXT_DENOISER
) -> dict:
    """:func:`export_denoiser_onnx` of the TextConvDenoiser saved in ``model_dir`` (with its
    ``captions.json``, as ``amlab train diffusion --text`` writes it). Its manifest entry adds
    the words of :func:`prompt_words`; ``captions``, the caption of each embedded digit (in
    :func:`amlab.data.digits` order) under the model's caption scheme; ``metrics``, its
    training run's; and ``model_hash`` (:func:`amlab.io.model_hash`, as a gallery's rows name
    the model that drew them)."""
    entry = export_denoiser_onnx(path, model_dir, TextConvDenoiser) | prompt_words()
    model_dir = Path(model_dir)
    recipe = read_json(model_dir / "captions.json", "train the model again")
    if recipe.get("data") != "digits":
        raise AmlabError(
            f"the explainer shows the embedded digits; the model in {model_dir} was trained "
            f"on {recipe.get('data')!r}."
        )
    scheme = CaptionScheme({k: tuple(v) for k, v in recipe["edges"].items()})
    data = digits()
    entry["captions"] = scheme.captions(data.images, data.shape, data.labels)
    entry["metrics"] = read_json(model_dir / "metrics.json", "train the model again")
    entry["model_hash"] = model_hash(model_dir)
    return entry
