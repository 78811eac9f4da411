"""The worked examples of amlab.nn (``amlab nn mil``, ``amlab nn prototypes``), tiny."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import refused_by_parser
from typer.testing import CliRunner

from amlab.cli import app
from amlab.data.images import image_splits
from amlab.errors import AmlabError
from amlab.tasks.memory_layers import (
    MIL_QUICK,
    POOLINGS,
    MILConfig,
    PrototypeConfig,
    make_bags,
    run_prototypes,
)

runner = CliRunner()


def test_bags_are_positive_exactly_when_they_hold_the_target():
    train_set, _ = image_splits("digits", None)
    config = MILConfig(target=3, bag_min=2, bag_max=6)
    bags = make_bags(train_set, 200, config, torch.Generator().manual_seed(0))
    sizes = (~bags.padding).sum(1)
    assert int(sizes.min()) >= 2 and int(sizes.max()) <= 6
    holds = ((bags.digits == 3) & ~bags.padding).any(1)
    assert torch.equal(holds.float(), bags.labels)
    assert 0.35 < float(bags.labels.mean()) < 0.65
    assert bool((bags.images[bags.padding] == 0).all())
    assert bool((bags.digits[bags.padding] == -1).all())
    # each instance is the image its digit label says: look it up in the data
    first = bags.images[0, 0]
    match = (train_set.images == first).all(1).nonzero()[:, 0]
    assert int(bags.digits[0, 0]) in train_set.labels[match].tolist()


def test_mil_command_writes_report_metrics_and_figure(tmp_path):
    out = tmp_path / "mil"
    args = ["nn", "mil", "--quick", "--seeds", "0", "--steps", "8", "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics["accuracy"]) == set(POOLINGS)
    assert metrics["config"]["steps"] == 8 and metrics["config"]["seeds"] == [0]
    assert metrics["config"]["train_bags"] == MIL_QUICK.train_bags
    for name in ("report.md", "metrics.json", "mil.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text()) == metrics
    report = (out / "report.md").read_text()
    for pooling in POOLINGS:
        acc = metrics["accuracy"][pooling]["per_seed"][0]
        assert f"| {pooling} | {acc:.3f} ± 0.000 | {acc:.3f} |" in report
    # the weights a pooling puts on a bag's instances sum to one; the target's share is one part
    for share in metrics["weight_on_target_instances"].values():
        assert 0.0 <= share["mean"] <= 1.0


def test_prototype_memories_learn_and_lsr_reads_sparsely():
    config = PrototypeConfig(steps=60, seeds=(0,))
    metrics = run_prototypes(config)
    lse, lsr = metrics["lse"], metrics["lsr"]
    assert lse["accuracy"]["mean"] > 0.85 and lsr["accuracy"]["mean"] > 0.8
    assert lse["zero_weights"]["mean"] == 0.0  # a softmax weight is never exactly zero
    assert lsr["zero_weights"]["mean"] > 0.5  # most prototypes out of reach of an image
    # the active prototypes and the zero weights count the same thing
    assert lsr["active"]["mean"] == pytest.approx(30 * (1 - lsr["zero_weights"]["mean"]), rel=1e-5)
    assert metrics["logistic_regression_accuracy"] > 0.9


def test_prototypes_command_writes_its_files(tmp_path):
    out = tmp_path / "p"
    args = [
        "nn",
        "prototypes",
        "--seeds",
        "1",
        "--steps",
        "5",
        "--per-class",
        "2",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "logistic regression" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prototypes"] == 20 and metrics["config"]["seeds"] == [1]
    assert (out / "prototypes.png").stat().st_size > 0 and (out / "report.md").is_file()


def test_bad_settings_are_refused():
    with pytest.raises(AmlabError, match="bag_min <= bag_max"):
        MILConfig(bag_min=5, bag_max=3)
    with pytest.raises(AmlabError, match="pooling"):
        replace(MIL_QUICK, poolings=("max",))
    with pytest.raises(AmlabError, match="seeds is empty"):
        PrototypeConfig(seeds=())
    refused_by_parser(runner.invoke(app, ["nn", "mil", "--target", "12"]), "--target")
