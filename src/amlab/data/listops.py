"""ListOps: nested list operations on small integers, their exact values, files and tokens.

An expression is written as in the original ListOps release (Nangia & Bowman, 2018) and
Long Range Arena, without the binarising parentheses::

    [MAX 2 9 [MIN 4 7 ] 0 ]        -> 9

Operations (names as the ``ops`` setting spells them, tokens as the files spell them):
``max`` ``[MAX``, ``min`` ``[MIN``, ``med`` ``[MED`` (the original's ``int(np.median)``:
the lower-rounded mean of the two middle values when the count is even), ``sum``
``[SM`` (sum mod n) and ``prod`` ``[PM`` (product mod n). Values are 0..n-1 (n =
``modulus``, 10 by default); every operation maps them back into 0..n-1.

The generator follows the original's recursion: each child is a value with probability
``leaf_prob`` (0.75), otherwise an operator, drawn uniformly from ``ops``, with
``min_args``..``max_args`` children (2..5); nodes at nesting ``max_depth`` are always
values. Here the *depth* of an expression is its number of nested operators (a bare value
has depth 0, ``[MAX 1 [MIN 2 3 ] ]`` has depth 2). The original generators count the root
as depth 1 and allow operators while depth < MAX_DEPTH, so their MAX_DEPTH = 20 is
``max_depth=19`` here (the default). ``min_depth`` (default 1) forces operators near the
root so that no example is a bare digit (the original allowed them). Length bounds count
tokens (without parentheses) and are met by rejection. :meth:`ListOpsConfig.lra` is Long
Range Arena's preset (its MAX_DEPTH 10, max_args 10, 500 < length < 2000).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from amlab.errors import AmlabError, check_positive_int
from amlab.io import atomic_write_text, read_text

#: operation name -> its token in the files
OP_TOKENS = {"max": "[MAX", "min": "[MIN", "med": "[MED", "sum": "[SM", "prod": "[PM"}
TOKEN_OPS = {token: op for op, token in OP_TOKENS.items()}
CLOSE = "]"
#: the token between an expression and its value in a causal model's text
EQUALS = "="
#: a nested expression: an int (a value) or (operation name, children)
Tree = "int | tuple[str, tuple[Tree, ...]]"


def apply_op(op: str, args: list[int], modulus: int) -> int:
    """The value of one operation on its (already evaluated) arguments."""
    if op == "max":
        return max(args)
    if op == "min":
        return min(args)
    if op == "med":
        s = sorted(args)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    if op == "sum":
        return sum(args) % modulus
    if op == "prod":
        value = 1
        for a in args:
            value = value * a % modulus
        return value
    raise AmlabError(f"unknown operation {op!r}; choose from {', '.join(OP_TOKENS)}.")


def parse_ops(ops: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"max,med,sum"`` or a sequence of names -> a tuple of known operation names."""
    names = [o.strip().lower() for o in ops.split(",")] if isinstance(ops, str) else list(ops)
    if not names or any(not n for n in names):
        raise AmlabError(f"ops must name at least one operation; got {ops!r}.")
    for name in names:
        if name not in OP_TOKENS:
            raise AmlabError(
                f"unknown operation {name!r}; choose from {', '.join(OP_TOKENS)} "
                "(comma-separated, e.g. max,med,sum)."
            )
    if len(set(names)) != len(names):
        raise AmlabError(f"ops lists an operation twice: {ops!r}.")
    return tuple(names)


@dataclass(frozen=True)
class ListOpsConfig:
    """What expressions the generator draws; see the module docstring."""

    ops: tuple[str, ...] = ("max", "min", "med", "sum")
    modulus: int = 10
    leaf_prob: float = 0.75
    min_args: int = 2
    max_args: int = 5
    min_depth: int = 1
    max_depth: int = 19
    min_length: int = 1
    max_length: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", parse_ops(self.ops))
        check_positive_int(self.modulus, "modulus")
        if self.modulus < 2:
            raise AmlabError(f"modulus must be >= 2; got {self.modulus}.")
        if not 0.0 <= float(self.leaf_prob) <= 1.0:
            raise AmlabError(f"leaf_prob must lie in [0, 1]; got {self.leaf_prob!r}.")
        check_positive_int(self.min_args, "min_args")
        check_positive_int(self.max_args, "max_args")
        if self.min_args > self.max_args:
            raise AmlabError(
                f"min_args ({self.min_args}) exceeds max_args ({self.max_args}); lower it."
            )
        check_positive_int(self.min_depth, "min_depth", allow_zero=True)
        check_positive_int(self.max_depth, "max_depth", allow_zero=True)
        if self.min_depth > self.max_depth:
            raise AmlabError(
                f"min_depth ({self.min_depth}) exceeds max_depth ({self.max_depth}); lower it."
            )
        check_positive_int(self.min_length, "min_length")
        if self.max_length is not None:
            check_positive_int(self.max_length, "max_length")
            if self.max_length < self.min_length:
                raise AmlabError(
                    f"max_length ({self.max_length}) is below min_length ({self.min_length})."
                )

    @classmethod
    def lra(cls, **changes) -> ListOpsConfig:
        """Long Range Arena's ListOps settings (lra_benchmarks/data/listops.py: MAX_DEPTH
        10, i.e. at most 9 nested operators; max_args 10; strictly 500 < tokens < 2000)."""
        base = {"max_args": 10, "max_depth": 9, "min_length": 501, "max_length": 1999}
        return cls(**{**base, **changes})


# -- generation ----------------------------------------------------------------------------
def generate_tree(
    config: ListOpsConfig, rng: random.Random, level: int = 0, _size: list | None = None
) -> Tree:
    """One random expression tree; ``level`` is the number of operators above this node.

    With ``max_length`` set, a tree that grows past it is abandoned early (_TooLong), so a
    branching setting that makes huge trees cannot exhaust memory before it is rejected.
    """
    size = [0] if _size is None else _size
    size[0] += 1
    if config.max_length is not None and size[0] > config.max_length:
        raise _TooLong
    if level >= config.max_depth or (level >= config.min_depth and rng.random() < config.leaf_prob):
        return rng.randrange(config.modulus)
    size[0] += 1  # the closing bracket
    n_args = rng.randint(config.min_args, config.max_args)
    op = rng.choice(config.ops)
    return (op, tuple(generate_tree(config, rng, level + 1, size) for _ in range(n_args)))


class _TooLong(Exception):
    """A tree under construction outgrew max_length."""


def to_string(tree: Tree) -> str:
    """``("max", (2, 9))`` -> ``"[MAX 2 9 ]"``."""
    if isinstance(tree, int):
        return str(tree)
    op, children = tree
    return " ".join([OP_TOKENS[op], *(to_string(c) for c in children), CLOSE])


def generate(config: ListOpsConfig, count: int, rng: random.Random) -> list[str]:
    """``count`` expressions (repeats possible) within the length bounds."""
    out: list[str] = []
    attempts = 0
    limit = 1000 + 1000 * count
    while len(out) < count:
        attempts += 1
        if attempts > limit:
            raise AmlabError(
                f"only {len(out)} of {count} generated expressions met the length bounds "
                f"{config.min_length}..{config.max_length} in {limit} tries; widen the bounds "
                "or change max_depth/max_args/leaf_prob."
            )
        try:
            text = to_string(generate_tree(config, rng))
        except _TooLong:
            continue
        n = text.count(" ") + 1
        if n >= config.min_length and (config.max_length is None or n <= config.max_length):
            out.append(text)
    return out


def make_splits(config: ListOpsConfig, sizes: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Disjoint splits of distinct expressions, e.g. ``{"train": 20000, "test": 2000}``.

    Expressions are drawn until there are enough distinct ones; no expression is in two
    splits. Splits are filled in the order given, from one stream seeded by ``seed``.
    """
    for name, size in sizes.items():
        check_positive_int(size, f"size of split {name!r}")
    total = sum(sizes.values())
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    tries, limit = 0, 1000 + 10 * total
    while len(seen) < total:
        batch = generate(config, min(total - len(seen), 4096), rng)
        tries += len(batch)
        seen.update(dict.fromkeys(batch))
        if tries > limit and len(seen) < total:
            raise AmlabError(
                f"only {len(seen)} distinct expressions turned up in {tries} draws, fewer than "
                f"the {total} asked for; ask for fewer or allow more (raise max_depth, "
                "max_args or the modulus)."
            )
    unique = list(seen)[:total]
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = unique[start : start + size]
        start += size
    return splits


# -- evaluation ----------------------------------------------------------------------------
def tokens_of(expression: str) -> list[str]:
    """The tokens of an expression; the parentheses of the binarised files are dropped."""
    return [t for t in expression.split() if t not in ("(", ")")]


def parse(expression: str, modulus: int = 10) -> Tree:
    """The tree of an expression string; malformed text raises AmlabError."""
    stack: list[tuple[str, list]] = []
    result: Tree | None = None
    for token in tokens_of(expression):
        if result is not None:
            raise AmlabError(f"text after the end of the expression in {expression!r}.")
        if token in TOKEN_OPS:
            stack.append((TOKEN_OPS[token], []))
            continue
        if token == CLOSE:
            if not stack:
                raise AmlabError(f"unmatched ']' in {expression!r}.")
            op, args = stack.pop()
            if not args:
                raise AmlabError(f"an operator without arguments in {expression!r}.")
            node: Tree = (op, tuple(args))
        else:
            if not token.isdigit() or int(token) >= modulus:
                raise AmlabError(
                    f"unknown token {token!r} in {expression!r}; expected an operator "
                    f"({', '.join(TOKEN_OPS)}), ']' or a value 0..{modulus - 1}."
                )
            node = int(token)
        if stack:
            stack[-1][1].append(node)
        else:
            result = node
    if stack or result is None:
        raise AmlabError(f"the expression {expression!r} is incomplete (a ']' is missing).")
    return result


def evaluate(expression: str | Tree, modulus: int = 10) -> int:
    """The exact value of an expression (string or tree)."""
    tree = parse(expression, modulus) if isinstance(expression, str) else expression
    if isinstance(tree, int):
        return tree
    op, children = tree
    return apply_op(op, [evaluate(c, modulus) for c in children], modulus)


def depth(expression: str | Tree) -> int:
    """Nesting depth: the number of operators on the longest root-to-value path."""
    tree = parse(expression, 10**9) if isinstance(expression, str) else expression
    if isinstance(tree, int):
        return 0
    return 1 + max(depth(c) for c in tree[1])


def root_op(expression: str) -> str | None:
    """The name of the outermost operation (None for a bare value)."""
    first = tokens_of(expression)[0] if expression.strip() else ""
    return TOKEN_OPS.get(first)


# -- files ---------------------------------------------------------------------------------
LRA_HEADER = "Source\tTarget"


def write_tsv(
    path: str | os.PathLike, expressions: list[str], modulus: int = 10, fmt: str = "original"
) -> Path:
    """Write expressions with their values, atomically.

    ``fmt="original"``: ``value<TAB>expression`` lines (the original release);
    ``fmt="lra"``: a ``Source<TAB>Target`` header, then ``expression<TAB>value`` lines.
    """
    if fmt not in ("original", "lra"):
        raise AmlabError(f"unknown TSV format {fmt!r}; choose original or lra.")
    rows = [(e, evaluate(e, modulus)) for e in expressions]
    if fmt == "lra":
        lines = [LRA_HEADER] + [f"{e}\t{v}" for e, v in rows]
    else:
        lines = [f"{v}\t{e}" for e, v in rows]
    path = Path(path)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def read_tsv(path: str | os.PathLike, modulus: int = 10) -> tuple[list[str], list[int]]:
    """Read an original or LRA ListOps TSV (the format is detected from the header).

    Returns (expressions without parentheses, values); each stored value is checked
    against :func:`evaluate`, so a file of another modulus or a corrupt line is reported.
    """
    path = Path(path)
    if not path.is_file():
        raise AmlabError(f"{path} does not exist; pass a ListOps .tsv file.")
    lines = read_text(path, "pass a ListOps .tsv file").splitlines()
    lra = bool(lines) and lines[0].strip() == LRA_HEADER
    expressions, values = [], []
    for number, line in enumerate(lines[1:] if lra else lines, start=2 if lra else 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise AmlabError(f"{path}:{number}: expected two tab-separated fields.")
        expression, label = (parts[0], parts[1]) if lra else (parts[1], parts[0])
        expression = " ".join(tokens_of(expression))
        if not re.fullmatch(r"\d+", label.strip()):
            raise AmlabError(f"{path}:{number}: the value {label!r} is not an integer.")
        value = evaluate(expression, modulus)
        if value != int(label):
            raise AmlabError(
                f"{path}:{number}: the file says {label.strip()} but the expression evaluates "
                f"to {value} (modulus {modulus}); is the modulus right?"
            )
        expressions.append(expression)
        values.append(value)
    return expressions, values


# -- tokens --------------------------------------------------------------------------------
class Tokenizer:
    """Maps tokens to ids. The vocabulary is fixed by the modulus (all operations are in
    it, whatever the task mix), so models of different mixes share their embeddings' rows.

    Ids: 0 padding, 1 the class token that starts every sequence, then ``]``, the
    operator tokens, then the values 0..n-1; with ``equals``, last, ``=`` (the causal
    models read ``[MAX 3 [MIN 4 2 ] ] = 3``: :meth:`with_value`).
    """

    PAD, CLS = 0, 1

    def __init__(self, modulus: int = 10, equals: bool = False) -> None:
        self.modulus = check_positive_int(modulus, "modulus")
        self.vocab = ["<pad>", "<cls>", CLOSE, *OP_TOKENS.values()] + [
            str(v) for v in range(modulus)
        ]
        if equals:
            self.vocab.append(EQUALS)
        self.ids = {t: i for i, t in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def value_id(self, value: int) -> int:
        return self.ids[str(value)]

    def with_value(self, expression: str) -> str:
        """``"[MAX 3 4 ]"`` -> ``"[MAX 3 4 ] = 4"``: the text a causal model learns."""
        return f"{expression} {EQUALS} {evaluate(expression, self.modulus)}"

    def encode(self, expressions: list[str], length: int | None = None) -> torch.Tensor:
        """(B, L) int64 ids: class token, the expression's tokens, padding."""
        rows = []
        for e in expressions:
            try:
                rows.append([self.CLS] + [self.ids[t] for t in tokens_of(e)])
            except KeyError as exc:
                raise AmlabError(
                    f"unknown token {exc.args[0]!r} in {e!r} (modulus {self.modulus})."
                ) from None
        longest = max((len(r) for r in rows), default=1)
        length = longest if length is None else length
        if longest > length:
            raise AmlabError(
                f"an expression has {longest - 1} tokens, more than the model's "
                f"{length - 1}; build the model with a larger max_len."
            )
        padded = [r + [self.PAD] * (length - len(r)) for r in rows]
        return torch.tensor(padded, dtype=torch.long).reshape(len(rows), length)

    def decode(self, ids: torch.Tensor) -> str:
        return " ".join(self.vocab[i] for i in ids.tolist() if i not in (self.PAD, self.CLS))
