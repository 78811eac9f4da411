"""Captions of digit images from their measured attributes, and the words a prompt may use.

A caption names the digit's class and, for each attribute of
:data:`~amlab.data.attributes.ATTRIBUTES`, its tercile among the training images: the lowest
third and the highest third have a word (thin / thick, small / large, upright / slanted),
the middle third none. So "a thick slanted 7" is a 7 thicker and more slanted than two thirds
of the training digits and of middle size, and "a 7" is a 7 of middle thickness, size and
slant. :class:`CaptionScheme` holds the tercile edges (measured on the training set) and turns
attributes into captions and prompts back into what they ask for.

Prompts are split at white space and lower-cased; every word must be in :data:`VOCABULARY`
(unknown words raise an AmlabError naming them). :func:`tokenize` turns prompts into token
ids (B, L), padded with -1 ("no token"); an all -1 row is the empty prompt, which
classifier-free guidance uses as the unconditional model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from amlab.data.attributes import ATTRIBUTES, measure
from amlab.errors import AmlabError

#: attribute -> its words for the lowest and the highest tercile (the middle has none)
WORDS = {
    "thickness": ("thin", "thick"),
    "size": ("small", "large"),
    "slant": ("upright", "slanted"),
}
#: the digits' names in a prompt
CLASS_WORDS = tuple(str(d) for d in range(10))
#: every word a prompt may use
VOCABULARY = ("a", *(w for name in ATTRIBUTES for w in WORDS[name]), *CLASS_WORDS)
#: the token id of padding ("no token")
PAD = -1


@dataclass(frozen=True)
class Request:
    """What a prompt asks for: ``digit`` (None when it names none) and, per attribute, its
    tercile 0 (low), 1 (middle: no word) or 2 (high)."""

    digit: int | None
    levels: dict[str, int]


@dataclass(frozen=True)
class CaptionScheme:
    """The tercile edges (low, high) of each attribute among the training images."""

    edges: dict[str, tuple[float, float]]

    @classmethod
    def fit(cls, images: Any, shape: tuple[int, ...]) -> CaptionScheme:
        """The terciles of the attributes of ``images`` (N, H*W)."""
        values = measure(images, shape)
        q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
        return cls(
            {
                name: tuple(float(v) for v in torch.quantile(values[name].double(), q))
                for name in ATTRIBUTES
            }
        )

    def levels(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each attribute's tercile (B,) int64 (0, 1 or 2) from its measured values (B,)."""
        return {
            name: torch.bucketize(
                values[name].double(), torch.tensor(self.edges[name], dtype=torch.float64)
            )
            for name in ATTRIBUTES
        }

    def captions(self, images: Any, shape: tuple[int, ...], labels: Any) -> list[str]:
        """One caption per image (N, H*W) of class ``labels`` (N,): "a thick slanted 7"."""
        levels = self.levels(measure(images, shape))
        labels = torch.as_tensor(labels).reshape(-1).tolist()
        out = []
        for i, label in enumerate(labels):
            words = ["a"]
            for name in ATTRIBUTES:
                level = int(levels[name][i])
                if level != 1:
                    words.append(WORDS[name][level // 2])
            out.append(" ".join([*words, str(int(label))]))
        return out


def unknown_words(prompt: str) -> list[str]:
    """The words of a prompt (lower-cased, split at white space) not in :data:`VOCABULARY`,
    each once, in the order they first appear."""
    if not isinstance(prompt, str):
        raise AmlabError(f"a prompt must be a string; got {type(prompt).__name__}.")
    found = prompt.lower().split()
    return sorted({w for w in found if w not in VOCABULARY}, key=found.index)


def words(prompt: str) -> list[str]:
    """The words of a prompt (lower-cased, split at white space), all of :data:`VOCABULARY`;
    unknown words raise an AmlabError naming them."""
    unknown = unknown_words(prompt)
    found = prompt.lower().split()
    if unknown:
        raise AmlabError(
            f"prompt {prompt!r} has words the model does not know: {', '.join(unknown)}; "
            f"use only {' '.join(VOCABULARY)}."
        )
    return found


def request(prompt: str) -> Request:
    """What ``prompt`` asks for; a prompt naming two digits or both words of an attribute
    raises an AmlabError."""
    found = words(prompt)
    digits = [w for w in found if w in CLASS_WORDS]
    if len(set(digits)) > 1:
        raise AmlabError(f"prompt {prompt!r} names more than one digit ({', '.join(digits)}).")
    levels = {}
    for name in ATTRIBUTES:
        low, high = WORDS[name]
        if low in found and high in found:
            raise AmlabError(f"prompt {prompt!r} says both {low!r} and {high!r}; pick one.")
        levels[name] = 0 if low in found else 2 if high in found else 1
    return Request(int(digits[0]) if digits else None, levels)


def tokenize(prompts: Sequence[str], vocabulary: Sequence[str] = VOCABULARY) -> torch.Tensor:
    """Token ids (B, L) of the prompts, L the longest prompt's word count (at least 1),
    padded with :data:`PAD`; a word's id is its index in ``vocabulary``."""
    if isinstance(prompts, str):
        raise AmlabError("tokenize takes a list of prompts; wrap the one prompt in a list.")
    index = {w: i for i, w in enumerate(vocabulary)}
    rows = []
    for prompt in prompts:
        found = words(prompt)
        missing = [w for w in found if w not in index]
        if missing:
            raise AmlabError(
                f"prompt {prompt!r} has words this model was not trained with: "
                f"{', '.join(missing)}; its words are {' '.join(vocabulary)}."
            )
        rows.append([index[w] for w in found])
    length = max([1, *(len(r) for r in rows)])
    ids = torch.full((len(rows), length), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids
