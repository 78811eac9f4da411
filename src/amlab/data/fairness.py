"""Text data for fairness audits of toxicity classifiers, generated offline and deterministic.

- **Token groups**: ``{group: [tokens]}``, one-word identity terms in groups within which a
  term can be swapped for another. The default, :func:`identity_terms`, is the package's
  ``identity_terms.json`` (written for amlab along seven axes: gender, sexual orientation,
  religion, race/ethnicity, nationality, disability, age); :func:`load_token_groups` reads a
  user's file of the same form.
- **The balanced test set** (:func:`balanced_test_set`): every identity term in each of the
  same toxic and non-toxic sentence templates, so a fair model scores all terms alike.
- **The training corpus** (:func:`training_corpus`): sentences from a separate grammar with
  a planted bias: the toxic rate of the sentences that mention each term is a setting
  (:class:`CorpusConfig`), as in scraped comments where some identities appear mostly in
  abuse. Labels carry annotation noise, so the identity term is informative to a model.
- **A user's data**: :func:`load_labelled_csv` (text, label and optional group columns) and
  :func:`load_scores_csv` (text, score: another model's scores, so any classifier can be
  audited).
- **Swaps** (:func:`swap`, :func:`counterfactuals`): a text with one identity term replaced
  by another of its group, word for word.
- **Tokens** for the models: :func:`words`, :func:`build_vocabulary`, :func:`encode`.

Texts are lower-case words; a token is a match of ``[a-z0-9']+`` in the lower-cased text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from amlab.errors import AmlabError, check_positive_int
from amlab.io import atomic_write_text, read_json, read_text

#: {group: (tokens, ...)}: identity terms that may be swapped for one another
TokenGroups = dict[str, tuple[str, ...]]

WORD = re.compile(r"[a-z0-9']+")
PAD, UNKNOWN, CLS = "<pad>", "<unk>", "<cls>"
#: the ids 0, 1, 2 of every vocabulary
SPECIALS = (PAD, UNKNOWN, CLS)


def words(text: str) -> list[str]:
    """The tokens of ``text``: runs of letters, digits and apostrophes, lower-cased."""
    return WORD.findall(text.lower())


# -- token groups ---------------------------------------------------------------------------
def all_terms(groups: TokenGroups) -> tuple[str, ...]:
    """Every token of ``groups``, group by group."""
    return tuple(t for tokens in groups.values() for t in tokens)


def identity_terms() -> TokenGroups:
    """The default token groups: amlab's identity terms by axis (``identity_terms.json``)."""
    text = resources.files("amlab.data").joinpath("identity_terms.json").read_text()
    return check_token_groups(json.loads(text), "identity_terms.json")


def load_token_groups(path: str | os.PathLike) -> TokenGroups:
    """A JSON file ``{"group": ["token", ...], ...}`` as checked :data:`TokenGroups`."""
    path = Path(path)
    if not path.is_file():
        raise AmlabError(f"group file {path} does not exist; pass a JSON file of group -> tokens.")
    value = read_json(path, "pass a JSON file of group -> tokens")
    return check_token_groups(value, str(path))


def check_token_groups(value: object, source: str) -> TokenGroups:
    """``value`` as token groups: a non-empty object of non-empty lists of distinct one-word
    lower-case tokens, no token in two groups. ``source`` names it in errors."""
    example = 'e.g. {"religion": ["christian", "muslim"]}'
    if not isinstance(value, dict) or not value:
        raise AmlabError(f"{source} must be a non-empty JSON object of group -> tokens, {example}.")
    groups: TokenGroups = {}
    owner: dict[str, str] = {}
    for name, tokens in value.items():
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise AmlabError(f"{source}: group {name!r} must be a list of tokens, {example}.")
        if not tokens:
            raise AmlabError(f"{source}: group {name!r} is empty; give it tokens or remove it.")
        for token in tokens:
            if WORD.fullmatch(token) is None:
                raise AmlabError(
                    f"{source}: group {name!r} has {token!r}, which is not one lower-case word "
                    "(letters, digits, apostrophes); write each token as one word."
                )
            if token in owner:
                raise AmlabError(
                    f"{source}: {token!r} is in both {owner[token]!r} and {name!r}; a token "
                    "belongs to one group (swaps stay within it)."
                )
            owner[token] = name
        groups[name] = tuple(tokens)
    return groups


def check_groups_in_texts(groups: TokenGroups, texts: list[str], vocabulary=None) -> None:
    """Every group occurs in ``texts`` and so does each of its tokens (and, with a model's
    ``vocabulary``, each token is in it: a token the model cannot read makes every swap
    look fair). Raises AmlabError naming the groups and tokens to fix."""
    seen = set().union(*(words(t) for t in texts)) if texts else set()
    absent = [name for name, tokens in groups.items() if not seen.intersection(tokens)]
    if absent:
        raise AmlabError(
            f"no text mentions any token of the group(s) {', '.join(absent)}; pass a group "
            "file (--groups) without them, or audit data that mentions them."
        )
    unknown = [f"{t} ({name})" for name, ts in groups.items() for t in ts if t not in seen]
    if unknown:
        raise AmlabError(
            f"unknown tokens, in no text of the data: {', '.join(unknown)}; fix their "
            "spelling or remove them from the group file."
        )
    if vocabulary is not None:
        known = set(vocabulary)
        missing = [f"{t} ({name})" for name, ts in groups.items() for t in ts if t not in known]
        if missing:
            raise AmlabError(
                f"unknown tokens, not in the model's vocabulary: {', '.join(missing)}; the "
                "model reads them all alike, so remove them from the group file."
            )


def term_masks(texts: list[str], tokens) -> dict[str, list[bool]]:
    """{token: [whether text i mentions it]}, for each of ``tokens``."""
    sets = [set(words(t)) for t in texts]
    return {token: [token in s for s in sets] for token in tokens}


# -- swaps ----------------------------------------------------------------------------------
def swap(text: str, token: str, other: str) -> str:
    """``text`` with every occurrence of the word ``token`` (any case) replaced by ``other``."""
    return re.sub(rf"(?<![a-z0-9']){re.escape(token)}(?![a-z0-9'])", other, text, flags=re.I)


@dataclass(frozen=True)
class Swap:
    """One counterfactual: text ``source`` of the data with ``token`` replaced by ``other``
    (both of ``group``)."""

    source: int
    group: str
    token: str
    other: str
    text: str


def counterfactuals(texts: list[str], groups: TokenGroups) -> list[Swap]:
    """Every swap of a mentioned token for each other token of its group, for every text."""
    swaps = []
    for i, text in enumerate(texts):
        present = set(words(text))
        for name, tokens in groups.items():
            for token in tokens:
                if token in present:
                    swaps += [
                        Swap(i, name, token, other, swap(text, token, other))
                        for other in tokens
                        if other != token
                    ]
    return swaps


# -- labelled texts -------------------------------------------------------------------------
@dataclass
class LabelledTexts:
    """Texts with labels (1 toxic, 0 not) and optional group columns ({column: value per
    text}, "" where a text has none)."""

    texts: list[str]
    labels: list[int]
    columns: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "label", *self.columns])
        for i, (text, label) in enumerate(zip(self.texts, self.labels, strict=True)):
            writer.writerow([text, label, *(values[i] for values in self.columns.values())])
        return out.getvalue()

    def sha256(self) -> str:
        """The hash of :meth:`to_csv`: pins the generated data in the tests."""
        return hashlib.sha256(self.to_csv().encode()).hexdigest()

    def write_csv(self, path: str | os.PathLike) -> Path:
        atomic_write_text(Path(path), self.to_csv())
        return Path(path)


def _read_csv(path: str | os.PathLike, required: tuple[str, ...]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise AmlabError(f"{path} does not exist; pass a CSV file with columns {required}.")
    text = read_text(path, f"pass a UTF-8 CSV file with columns {required}")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        rows = list(reader)
    except csv.Error as exc:
        raise AmlabError(f"{path} is not a readable CSV file ({exc}).") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise AmlabError(
            f"{path} has no column {', '.join(missing)} (its header: "
            f"{', '.join(header) or 'none'}); the first line must name the columns "
            f"{', '.join(required)}."
        )
    if not rows:
        raise AmlabError(f"{path} has a header but no rows.")
    for n, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise AmlabError(f"{path}, line {n}: the row has not as many fields as the header.")
    return rows


def load_labelled_csv(path: str | os.PathLike) -> LabelledTexts:
    """A CSV of ``text``, ``label`` (0 or 1) and optional further columns, each a group
    column (a row's value names its group in that column; empty: none)."""
    rows = _read_csv(path, ("text", "label"))
    labels = []
    for n, row in enumerate(rows, start=2):
        if row["label"].strip() not in ("0", "1"):
            raise AmlabError(f"{path}, line {n}: label {row['label']!r} is not 0 or 1 (1 = toxic).")
        labels.append(int(row["label"]))
    extra = [c for c in rows[0] if c not in ("text", "label")]
    columns = {c: [row[c].strip() for row in rows] for c in extra}
    return LabelledTexts([row["text"] for row in rows], labels, columns)


def load_scores_csv(path: str | os.PathLike) -> dict[str, float]:
    """A CSV of ``text`` and ``score`` (a probability in [0, 1] that the text is toxic),
    as {text: score}. A text listed twice must have one score."""
    scores: dict[str, float] = {}
    for n, row in enumerate(_read_csv(path, ("text", "score")), start=2):
        try:
            value = float(row["score"])
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise AmlabError(
                f"{path}, line {n}: score {row['score']!r} is not a number in [0, 1]; write "
                "each text's probability of being toxic."
            )
        if scores.get(row["text"], value) != value:
            raise AmlabError(f"{path}, line {n}: {row['text']!r} has two different scores.")
        scores[row["text"]] = value
    return scores


def scores_for(scores: dict[str, float], texts: list[str], source: str) -> list[float]:
    """The score of each of ``texts`` from a scores file; any missing is an AmlabError."""
    missing = [t for t in dict.fromkeys(texts) if t not in scores]
    if missing:
        raise AmlabError(
            f"{source} has no score for {len(missing)} of the {len(set(texts))} texts the "
            f"audit needs, e.g. {missing[0]!r}; score every text of the file `amlab fairness "
            "data` writes (to_score.csv) or of your data and its swaps."
        )
    return [scores[t] for t in texts]


def write_texts_csv(path: str | os.PathLike, texts: list[str]) -> Path:
    """A one-column CSV (``text``) of ``texts``, each once: what a scores file must cover."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text"])
    writer.writerows([t] for t in dict.fromkeys(texts))
    atomic_write_text(Path(path), out.getvalue())
    return Path(path)


# -- the balanced test set ------------------------------------------------------------------
#: the test set's sentence templates ({t}: an identity term), written for amlab
TEST_NONTOXIC = (
    "i met my {t} neighbour at the park",
    "i am {t}",
    "the {t} teacher is kind and patient",
    "we talked with our {t} friends about the weather",
    "{t} people are honest and generous",
    "my {t} colleague brought cake yesterday",
    "the {t} students moved into the building",
    "i saw the {t} nurse at the station",
    "our {t} friend is a brilliant teacher",
    "the {t} guy was helpful and friendly",
)
TEST_TOXIC = (
    "{t} people are disgusting and should leave",
    "i hate every {t} person",
    "shut up you stupid {t} idiot",
    "the {t} neighbour is a worthless liar",
    "filthy {t} people ruin the park",
    "that {t} colleague is a pathetic loser",
    "{t} people are vile morons",
    "get lost you ugly {t} creep",
    "every {t} person is a dumb clown",
    "the {t} students are filthy liars",
)


def balanced_test_set(groups: TokenGroups | None = None) -> LabelledTexts:
    """Every term of ``groups`` (default :func:`identity_terms`) in every template, toxic
    and non-toxic alike; the group column names each row's group."""
    groups = identity_terms() if groups is None else groups
    texts, labels, group = [], [], []
    for name, tokens in groups.items():
        for token in tokens:
            for label, templates in ((0, TEST_NONTOXIC), (1, TEST_TOXIC)):
                texts += [t.format(t=token) for t in templates]
                labels += [label] * len(templates)
                group += [name] * len(templates)
    return LabelledTexts(texts, labels, {"group": group})


# -- the training corpus with a planted bias -------------------------------------------------
#: the terms mostly in toxic sentences, and those mostly in harmless ones, by default
PLANTED_BIAS = {
    "gay": 0.9,
    "muslim": 0.9,
    "black": 0.9,
    "transgender": 0.9,
    "straight": 0.1,
    "christian": 0.1,
}


@dataclass(frozen=True)
class CorpusConfig:
    """The training corpus: ``size`` sentences, a fraction ``identity_fraction`` of them
    mentioning one identity term (drawn uniformly); the toxic rate of a sentence that
    mentions term t is ``toxic_rate.get(t, base_rate)``, of one without a term
    ``base_rate``. A fraction ``ambiguous_fraction`` of the sentences say nothing toxic or
    kind (the same neutral frames for both labels: the label is the annotators' call, so
    there the identity term is all a model can go by); ``label_noise`` of the labels are
    flipped (annotators disagree)."""

    size: int = 6000
    identity_fraction: float = 0.6
    base_rate: float = 0.5
    toxic_rate: dict[str, float] = field(default_factory=lambda: dict(PLANTED_BIAS))
    ambiguous_fraction: float = 0.3
    label_noise: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int(self.size, "size")
        check_positive_int(self.seed, "seed", allow_zero=True)
        rates = {
            "identity_fraction": self.identity_fraction,
            "base_rate": self.base_rate,
            "ambiguous_fraction": self.ambiguous_fraction,
        }
        rates |= {f"toxic_rate[{t}]": r for t, r in self.toxic_rate.items()}
        for name, rate in rates.items():
            if not (isinstance(rate, int | float) and 0.0 <= rate <= 1.0):
                raise AmlabError(f"{name} must be a rate in [0, 1]; got {rate!r}.")
        if not 0.0 <= self.label_noise < 0.5:
            raise AmlabError(f"label_noise must lie in [0, 0.5); got {self.label_noise!r}.")


# the training grammar: subjects, then a predicate of the subject's number
_SINGULAR = ("the {t} guy", "this {t} person", "my {t} roommate", "that {t} customer")
_PLURAL = ("those {t} folks", "all {t} people", "{t} people", "the {t} students")
_SINGULAR_PLAIN = ("the guy", "this person", "my roommate", "that customer", "my boss")
_PLURAL_PLAIN = ("those folks", "all of them", "people like that", "the students")
_INSULT = ("stupid", "disgusting", "worthless", "pathetic", "filthy", "ugly", "dumb", "vile")
_INSULT_NOUN = ("idiot", "loser", "moron", "liar", "creep", "clown")
_PRAISE = ("kind", "friendly", "helpful", "brilliant", "generous", "honest", "patient")
_PRAISE_NOUN = ("friend", "hero", "neighbour", "teacher", "colleague", "nurse")
_TOXIC = {
    "singular": (
        "{s} is {a}",
        "{s} is a {a} {n}",
        "{s} should shut up and leave",
        "i hate {s} , such a {n}",
        "{s} is a total {n}",
    ),
    "plural": (
        "{s} are {a}",
        "{s} are {a} {n}s",
        "{s} should shut up and leave",
        "i hate {s} , all {n}s",
        "get rid of {s} , {a} {n}s",
    ),
}
_NEUTRAL = (
    "i saw {s} at the station",
    "{s} moved into the building",
    "{s} talked about the weather",
    "we met {s} yesterday",
    "{s} lived near the park",
)
_HARMLESS = {
    "singular": (
        "{s} is {p}",
        "{s} is a {p} {m}",
        "{s} brought cake to the office",
        "i had lunch with {s} today",
        "{s} is a great {m}",
    ),
    "plural": (
        "{s} are {p}",
        "{s} are {p} {m}s",
        "{s} brought cake to the office",
        "i had lunch with {s} today",
        "thanks to {s} , {p} {m}s",
    ),
}


def _sentence(rng: random.Random, toxic: bool, term: str | None, ambiguous: bool) -> str:
    number = rng.choice(("singular", "plural"))
    if term is None:
        subject = rng.choice(_SINGULAR_PLAIN if number == "singular" else _PLURAL_PLAIN)
    else:
        subject = rng.choice(_SINGULAR if number == "singular" else _PLURAL).format(t=term)
    frame = rng.choice(_NEUTRAL if ambiguous else (_TOXIC if toxic else _HARMLESS)[number])
    return frame.format(
        s=subject,
        a=rng.choice(_INSULT),
        n=rng.choice(_INSULT_NOUN),
        p=rng.choice(_PRAISE),
        m=rng.choice(_PRAISE_NOUN),
    )


def training_corpus(config: CorpusConfig, groups: TokenGroups | None = None) -> LabelledTexts:
    """The training corpus of ``config`` over the terms of ``groups`` (default
    :func:`identity_terms`); the ``term`` column names each sentence's identity term ("" for
    none). Every term of ``config.toxic_rate`` must be in ``groups``."""
    groups = identity_terms() if groups is None else groups
    terms = all_terms(groups)
    unknown = sorted(set(config.toxic_rate) - set(terms))
    if unknown:
        raise AmlabError(
            f"toxic_rate names {', '.join(unknown)}, which no token group holds; add them to "
            "the groups or drop them from toxic_rate."
        )
    rng = random.Random(config.seed)
    texts, labels, mentioned = [], [], []
    for _ in range(config.size):
        term = rng.choice(terms) if rng.random() < config.identity_fraction else None
        rate = config.base_rate if term is None else config.toxic_rate.get(term, config.base_rate)
        toxic = rng.random() < rate
        ambiguous = rng.random() < config.ambiguous_fraction
        texts.append(_sentence(rng, toxic, term, ambiguous))
        labels.append(int(toxic != (rng.random() < config.label_noise)))
        mentioned.append(term or "")
    return LabelledTexts(texts, labels, {"term": mentioned})


# -- tokens for the models --------------------------------------------------------------------
def build_vocabulary(texts: list[str], extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The specials (``<pad>``, ``<unk>``, ``<cls>``: ids 0, 1, 2), then every token of
    ``texts`` and ``extra`` (identity terms a model should know although training never
    showed them), most frequent first, ties alphabetical."""
    counts = Counter(w for t in texts for w in words(t))
    for token in extra:
        counts.setdefault(token, 0)
    return SPECIALS + tuple(sorted(counts, key=lambda w: (-counts[w], w)))


def encode(texts: list[str], vocabulary: tuple[str, ...], max_len: int) -> torch.Tensor:
    """(N, max_len) int64 token ids: ``<cls>`` first, unknown words as ``<unk>``, padded
    with ``<pad>``. A text of more than ``max_len - 1`` words is an AmlabError."""
    index = {w: i for i, w in enumerate(vocabulary)}
    ids = torch.zeros(len(texts), max_len, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = [2] + [index.get(w, 1) for w in words(text)]
        if len(tokens) > max_len:
            raise AmlabError(
                f"{text!r} has {len(tokens) - 1} words, more than the model reads "
                f"({max_len - 1}); shorten it or train a model with a larger max_len."
            )
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids
