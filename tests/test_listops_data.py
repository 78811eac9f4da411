"""ListOps data: exact values, generator settings, disjoint splits, TSV files, tokens."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amlab.data.listops import (
    ListOpsConfig,
    Tokenizer,
    depth,
    evaluate,
    generate,
    generate_tree,
    make_splits,
    parse,
    read_tsv,
    root_op,
    to_string,
    write_tsv,
)
from amlab.errors import AmlabError

HAND = [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 3 [MAX 1 0 ] 8 ]", 1),
    ("[MED 3 1 4 1 5 ]", 3),
    ("[MED 3 1 4 1 ]", 2),  # the original's int(np.median): int(2.0)
    ("[MED 1 2 ]", 1),  # int(1.5)
    ("[SM 7 8 9 ]", 4),
    ("[SM [SM 9 9 ] [MAX 5 6 ] ]", 4),  # 8 + 6 = 14
    ("[PM 3 4 5 ]", 0),
    ("[PM 3 [SM 2 5 ] ]", 1),  # 3 * 7 = 21
    ("[MAX [MED 9 0 1 ] [MIN 2 [SM 5 6 ] ] ]", 1),
    ("7", 7),
]


@pytest.mark.parametrize(("expression", "value"), HAND)
def test_evaluator_matches_hand_computed_values(expression, value):
    assert evaluate(expression) == value


def test_other_modulus():
    assert evaluate("[SM 6 5 4 ]", modulus=7) == 1
    assert evaluate("[PM 6 5 ]", modulus=7) == 2


def reference_value(expression: str, modulus: int) -> int:
    """Brute force, independent of the stack parser: repeatedly replace an innermost
    bracket by its value, computed with numpy."""
    inner = re.compile(r"\[(MAX|MIN|MED|SM|PM)((?: \d+)+) \]")
    while "[" in expression:
        match = inner.search(expression)
        args = np.array([int(a) for a in match.group(2).split()])
        op = match.group(1)
        value = {
            "MAX": lambda a: a.max(),
            "MIN": lambda a: a.min(),
            "MED": lambda a: int(np.median(a)),
            "SM": lambda a: a.sum() % modulus,
            "PM": lambda a: int(np.prod(a.astype(object))) % modulus,
        }[op](args)
        expression = expression[: match.start()] + str(int(value)) + expression[match.end() :]
    return int(expression)


@pytest.mark.parametrize(
    "config",
    [
        ListOpsConfig(max_depth=4, max_args=5),
        ListOpsConfig(ops=("med", "prod", "sum"), modulus=7, max_depth=3, max_args=6),
        ListOpsConfig(
            ops=("max", "min", "med", "sum", "prod"), modulus=13, leaf_prob=0.6, max_depth=4
        ),
    ],
)
def test_evaluator_matches_brute_force_on_generated_expressions(config):
    expressions = generate(config, 300, random.Random(1))
    for e in expressions:
        assert evaluate(e, config.modulus) == reference_value(e, config.modulus), e


def walk(tree, level=0):
    """(node, level) for every node."""
    yield tree, level
    if not isinstance(tree, int):
        for child in tree[1]:
            yield from walk(child, level + 1)


def test_generator_honours_depth_argument_and_operation_settings():
    config = ListOpsConfig(ops=("min", "sum"), max_depth=3, min_depth=2, min_args=3, max_args=4)
    rng = random.Random(0)
    depths = []
    for _ in range(500):
        tree = generate_tree(config, rng)
        depths.append(depth(tree))
        for node, level in walk(tree):
            if isinstance(node, int):
                assert 0 <= node < 10
                assert level >= 2  # min_depth: operators above level 2
            else:
                assert node[0] in ("min", "sum")
                assert 3 <= len(node[1]) <= 4
                assert level < 3
    assert max(depths) == 3 and min(depths) == 2


def test_generator_leaf_probability_and_defaults_of_the_original():
    config = ListOpsConfig()
    # the original's MAX_DEPTH = 20 counts the root as 1: at most 19 nested operators
    assert (config.leaf_prob, config.max_args, config.max_depth) == (0.75, 5, 19)
    rng = random.Random(3)
    leaves = nodes = 0
    for _ in range(2000):
        for node, level in walk(generate_tree(config, rng)):
            if level >= 1:  # below the forced root operator
                nodes += 1
                leaves += isinstance(node, int)
    assert abs(leaves / nodes - 0.75) < 0.02
    assert all(depth(e) <= 19 for e in generate(config, 2000, rng))


def test_length_bounds_and_lra_preset():
    config = ListOpsConfig(max_depth=4, min_length=20, max_length=40)
    for e in generate(config, 200, random.Random(0)):
        assert 20 <= len(e.split()) <= 40
    lra = ListOpsConfig.lra()
    assert (lra.max_args, lra.max_depth, lra.min_length, lra.max_length) == (10, 9, 501, 1999)
    for e in generate(lra, 2, random.Random(0)):
        assert 500 < len(e.split()) < 2000
        assert depth(e) <= 9
        assert evaluate(e) == reference_value(e, 10)


def test_huge_trees_are_abandoned_once_longer_than_max_length():
    # leaf_prob 0.4 with up to 8 arguments branches 3-fold per level: most trees of depth
    # 20 would not fit in memory; with max_length they are cut off while being built
    config = ListOpsConfig(leaf_prob=0.4, max_args=8, max_length=200, min_length=10)
    for e in generate(config, 5, random.Random(0)):
        assert 10 <= len(e.split()) <= 200


def test_impossible_length_bounds_raise():
    config = ListOpsConfig(max_depth=1, max_args=3, min_length=50)
    with pytest.raises(AmlabError, match="length bounds"):
        generate(config, 1, random.Random(0))


def test_splits_are_distinct_disjoint_and_reproducible():
    config = ListOpsConfig(ops=("sum",), max_depth=2, max_args=3)
    sizes = {"train": 3000, "val": 200, "test": 500}
    splits = make_splits(config, sizes, seed=5)
    assert {k: len(v) for k, v in splits.items()} == sizes
    everything = [e for split in splits.values() for e in split]
    assert len(set(everything)) == len(everything)
    assert not set(splits["train"]) & set(splits["test"])
    assert make_splits(config, sizes, seed=5) == splits
    assert make_splits(config, sizes, seed=6) != splits


def test_splits_too_large_for_the_expression_space_raise():
    # ops max, values 0..1, one level of 2 arguments: only 4 distinct expressions exist
    config = ListOpsConfig(ops=("max",), modulus=2, max_depth=1, max_args=2)
    with pytest.raises(AmlabError, match="distinct"):
        make_splits(config, {"train": 8, "test": 2}, seed=0)


@pytest.mark.parametrize("fmt", ["original", "lra"])
def test_tsv_round_trip(tmp_path, fmt):
    expressions = generate(ListOpsConfig(max_depth=3), 50, random.Random(2))
    path = write_tsv(tmp_path / "data.tsv", expressions, fmt=fmt)
    first = path.read_text().splitlines()[0]
    assert (first == "Source\tTarget") == (fmt == "lra")
    read, values = read_tsv(path)
    assert read == expressions
    assert values == [evaluate(e) for e in expressions]


def test_read_tsv_drops_the_binarising_parentheses(tmp_path):
    path = tmp_path / "lra.tsv"
    path.write_text("Source\tTarget\n( ( [MAX 2 ) 9 ( [MIN 4 7 ] ) 0 ] )\t9\n")
    assert read_tsv(path) == (["[MAX 2 9 [MIN 4 7 ] 0 ]"], [9])
    path.write_text("9\t( ( [MAX 2 ) 9 ( [MIN 4 7 ] ) 0 ] )\n")
    assert read_tsv(path) == (["[MAX 2 9 [MIN 4 7 ] 0 ]"], [9])


def test_read_tsv_reports_wrong_values_and_bad_lines(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("5\t[SM 3 4 ]\n")
    with pytest.raises(AmlabError, match="bad.tsv:1.*evaluates to 7"):
        read_tsv(path)
    path.write_text("[SM 3 4 ]\n")
    with pytest.raises(AmlabError, match="two tab-separated"):
        read_tsv(path)
    with pytest.raises(AmlabError, match="does not exist"):
        read_tsv(tmp_path / "missing.tsv")


def test_tokenizer_round_trip_and_errors():
    tok = Tokenizer(10)
    exprs = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "[SM 1 2 ]"]
    ids = tok.encode(exprs)
    assert ids.shape == (2, 10)
    assert ids[:, 0].tolist() == [Tokenizer.CLS] * 2
    assert ids[1, 5:].tolist() == [Tokenizer.PAD] * 5
    assert [tok.decode(row) for row in ids] == exprs
    with pytest.raises(AmlabError, match="unknown token"):
        tok.encode(["[SM 1 12 ]"])
    with pytest.raises(AmlabError, match="max_len"):
        tok.encode(exprs, length=5)


def test_root_op():
    assert root_op("[MED 1 [SM 2 3 ] ]") == "med"
    assert root_op("4") is None


@pytest.mark.parametrize(
    "bad",
    ["", "[MAX 1 2", "[MAX ]", "1 2", "[MAX 1 ] ]", "[FOO 1 ]", "[SM 1 10 ]", "]"],
)
def test_malformed_expressions_raise(bad):
    with pytest.raises(AmlabError):
        evaluate(bad)


def test_bad_settings_raise():
    for kwargs in (
        {"ops": ("max", "pow")},
        {"ops": ""},
        {"ops": ("max", "max")},
        {"modulus": 1},
        {"leaf_prob": 1.5},
        {"min_args": 4, "max_args": 3},
        {"min_depth": 3, "max_depth": 2},
        {"min_length": 10, "max_length": 5},
    ):
        with pytest.raises(AmlabError):
            ListOpsConfig(**kwargs)


TOKENS = st.sampled_from(["[MAX", "[MIN", "[MED", "[SM", "[PM", "]", "0", "5", "9", "(", ")"])


@given(st.lists(TOKENS, max_size=12))
def test_any_token_sequence_parses_to_its_own_text_or_raises_amlab_error(tokens):
    text = " ".join(tokens)
    try:
        tree = parse(text)
    except AmlabError:
        return
    assert to_string(tree) == " ".join(t for t in tokens if t not in "()")
