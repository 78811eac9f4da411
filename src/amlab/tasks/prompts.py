"""Text-prompted denoisers as the gallery and ``amlab train diffusion --text`` use them: the
saved model with its training set and caption scheme, and how well generated images do
what their prompts ask (the attributes of :mod:`amlab.data.attributes`).

A text model's directory holds what :meth:`~amlab.models.model.Model.save` writes (the
:class:`~amlab.diffusion.TextConvDenoiser`) and ``captions.json``: the training set's recipe
(data set, its directory, number of images, the seed that drew them) and the tercile edges
of the caption scheme. From these the training set is drawn again, exactly, for the nearest
training image, the class of a generated digit and the memorisation audit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from amlab.data import ImageSet, load
from amlab.data.attributes import ATTRIBUTES, measure
from amlab.data.captions import CaptionScheme, request
from amlab.diffusion import TextConvDenoiser
from amlab.energy.distances import nearest_memory
from amlab.errors import AmlabError
from amlab.io import atomic_write_text, model_hash, read_json

CAPTIONS_FILE = "captions.json"
#: the text model shipped with the package (``amlab gallery generate`` without --model)
SHIPPED_MODEL = Path(__file__).parent / "models" / "text-digits"
#: what an adherence table reports: the class and each attribute
JUDGED = ("class", *ATTRIBUTES)


@dataclass(frozen=True)
class TrainingRecipe:
    """How a text model's training set was drawn (``ImageSet.subset(images, seed)`` of
    ``data``'s training split) and its caption scheme's tercile edges."""

    data: str
    data_dir: str | None
    images: int
    seed: int
    edges: dict[str, tuple[float, float]]

    def training_set(self, data_dir: str | None = None) -> ImageSet:
        """The training images, drawn again (``data_dir`` replaces the recorded directory)."""
        dataset = load(self.data, data_dir or self.data_dir, split="train")
        return dataset.subset(self.images, seed=self.seed)


@dataclass
class TextModel:
    """A loaded text model: the network, its training set, caption scheme and hash."""

    network: TextConvDenoiser
    recipe: TrainingRecipe
    train: ImageSet
    path: Path
    hash: str

    @property
    def scheme(self) -> CaptionScheme:
        return CaptionScheme(self.recipe.edges)


def save_recipe(model_dir: Path, recipe: TrainingRecipe) -> None:
    atomic_write_text(Path(model_dir) / CAPTIONS_FILE, json.dumps(asdict(recipe), indent=2) + "\n")


def load_text_model(path: str | Path | None = None, data_dir: str | None = None) -> TextModel:
    """The text model saved in ``path`` (a model directory, or a training run's directory
    holding ``model/``; None: the shipped one) with its training set drawn again."""
    path = SHIPPED_MODEL if path is None else Path(path)
    if (path / "model" / CAPTIONS_FILE).is_file():
        path = path / "model"
    file = path / CAPTIONS_FILE
    if not file.is_file():
        raise AmlabError(
            f"{path} holds no text model ({CAPTIONS_FILE} is missing); pass the --out of "
            "amlab train diffusion --text, or its model/ directory."
        )
    saved = read_json(file, "train the model again")
    try:
        recipe = TrainingRecipe(
            data=str(saved["data"]),
            data_dir=saved["data_dir"],
            images=int(saved["images"]),
            seed=int(saved["seed"]),
            edges={k: (float(v[0]), float(v[1])) for k, v in saved["edges"].items()},
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise AmlabError(
            f"{file} is not a caption record ({exc}); train the model again."
        ) from None
    if sorted(recipe.edges) != sorted(ATTRIBUTES):
        raise AmlabError(f"{file} has edges for {sorted(recipe.edges)}, not {sorted(ATTRIBUTES)}.")
    network = TextConvDenoiser.load(path)
    train = recipe.training_set(data_dir)
    if train.images.shape[1] != network.dim:
        raise AmlabError(
            f"the training set {recipe.data} has images of {train.images.shape[1]} pixels but "
            f"the model in {path} takes {network.dim}; pass the data it was trained on."
        )
    return TextModel(network, recipe, train, path, model_hash(path))


def judge(images: torch.Tensor, prompts: list[str], model: TextModel) -> dict[str, Any]:
    """What generated ``images`` (B, D) show and whether it is what their prompts ask:
    ``class`` (B,) (the label of the nearest training image), each attribute's measured value
    (B,), and ``<name>_match`` (B,) bool per judged name (``class_match`` None for a prompt
    naming no digit: a list of bools and Nones)."""
    train = model.train
    nearest, _ = nearest_memory(images.float(), train.images.float())
    measured = measure(images, train.shape)
    levels = model.scheme.levels(measured)
    classes = train.labels[nearest]
    asked = [request(p) for p in prompts]
    out: dict[str, Any] = {"class": classes, **measured}
    out["class_match"] = [
        None if a.digit is None else bool(a.digit == int(c))
        for a, c in zip(asked, classes.tolist(), strict=True)
    ]
    for name in ATTRIBUTES:
        out[f"{name}_match"] = [
            a.levels[name] == int(v) for a, v in zip(asked, levels[name].tolist(), strict=True)
        ]
    return out


def adherence(prompts: list[str], matches: dict[str, Any], model: TextModel) -> dict[str, Any]:
    """Per judged name: the share of images doing what their prompts ask (``adherence``),
    against ``chance``, the mean over the prompts of the share of training images that have
    the prompted class or tercile (what a model ignoring the prompt scores), and ``prompts``,
    how many prompts ask for it."""
    train = model.train
    train_levels = model.scheme.levels(measure(train.images, train.shape))
    class_share = torch.bincount(train.labels, minlength=10).double() / len(train)
    level_share = {
        n: torch.bincount(train_levels[n], minlength=3).double() / len(train) for n in ATTRIBUTES
    }
    asked = [request(p) for p in prompts]
    table = {}
    for name in JUDGED:
        rows = [
            (hit, a)
            for hit, a in zip(matches[f"{name}_match"], asked, strict=True)
            if hit is not None
        ]
        if not rows:
            continue
        if name == "class":
            chance = [float(class_share[a.digit]) for _, a in rows]
        else:
            chance = [float(level_share[name][a.levels[name]]) for _, a in rows]
        table[name] = {
            "adherence": sum(hit for hit, _ in rows) / len(rows),
            "chance": sum(chance) / len(chance),
            "prompts": len(rows),
        }
    return table
