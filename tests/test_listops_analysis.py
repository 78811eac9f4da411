"""ListOps analysis (PCA, probes, ablation) and the end-to-end `amlab repro listops`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import check_written_report
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from typer.testing import CliRunner

from amlab.cli import app
from amlab.data.listops import Tokenizer
from amlab.experiments import listops as experiment
from amlab.experiments.listops.analysis import (
    ablation,
    embedding_structure,
    linear_probe,
    partition_rank,
    pca,
    rank_correlation,
)
from amlab.models.listops import ListOpsTransformer, ListOpsTransformerConfig
from amlab.tasks.listops import accuracy, encode


def test_pca_matches_scikit_learn():
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 7)
    coords, explained = pca(x, k=2)
    ref = PCA(n_components=2).fit(x.numpy())
    assert np.allclose(explained.numpy(), ref.explained_variance_ratio_, atol=1e-6)
    ref_coords = ref.transform(x.numpy())
    for k in range(2):  # equal up to the sign of each axis
        sign = np.sign(coords[0, k].item() * ref_coords[0, k])
        assert np.allclose(coords[:, k].numpy(), sign * ref_coords[:, k], atol=1e-5)


def test_rank_correlation_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20), rng.normal(size=20)
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert rank_correlation(a, 3 * a + 1) == pytest.approx(1.0)


def test_probes_find_a_linear_label_and_not_a_random_one():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 5, generator=g)
    assert linear_probe(x, (x[:, 2] > 0).long()) > 0.95
    assert abs(linear_probe(x, torch.randint(0, 2, (400,), generator=g)) - 0.5) < 0.1


def test_partition_rank_is_one_for_the_clearest_split_and_uniform_otherwise():
    g = torch.Generator().manual_seed(2)
    parity = torch.arange(10) % 2
    points = torch.stack([3.0 * parity, 0.1 * torch.randn(10, generator=g)], 1)
    assert partition_rank(points, parity) == 1.0
    # labels unrelated to the points: the rank is uniform over splits, mean about 0.5
    ranks = [partition_rank(torch.randn(10, 6, generator=g), parity) for _ in range(20)]
    assert 0.3 < sum(ranks) / len(ranks) < 0.7


def model_with_number_line(step: float = 0.3, parity: float = 3.0) -> ListOpsTransformer:
    torch.manual_seed(0)
    model = ListOpsTransformer(
        ListOpsTransformerConfig(vocab_size=18, classes=10, dim=8, max_len=20)
    )
    tok = Tokenizer(10)
    with torch.no_grad():
        for v in range(10):  # values in order along axis 0, parity (wider) on axis 1
            row = torch.zeros(8)
            row[0], row[1] = step * v, parity * (v % 2)
            model.embed.weight[tok.value_id(v)] = row
    return model


def test_embedding_structure_sees_order_and_parity():
    line = embedding_structure(model_with_number_line(parity=0.0), 10)
    assert line["order"] == pytest.approx(1.0)
    structure = embedding_structure(model_with_number_line(), 10)
    assert structure["parity"] == 1.0
    assert len(structure["pca"]) == 10 and sum(structure["explained"]) == pytest.approx(1.0)


def test_ablation_restores_the_model_and_matches_plain_accuracy():
    model = model_with_number_line()
    data = encode(["[SM 1 2 ]", "[MAX 3 [MIN 4 5 ] ]", "[MED 1 2 3 ]"], Tokenizer(10), 20)
    result = ablation(model, data)
    assert model.ablate == frozenset()
    assert result["none"] == accuracy(model, data)
    model.ablate = frozenset({"mlp"})
    assert result["mlp"] == accuracy(model, data)


TINY = experiment.Grid(
    dims=(8,),
    seeds=(0,),
    steps=20,
    curriculum_steps=10,
    train_size=300,
    val_size=50,
    test_size=100,
    workers=1,
)


SECTIONS = (
    "Threshold per task mix",
    "SUM inside a mix",
    "Curriculum: MAX+MED first, then SUM",
    "What the models learned",
)
FIGURES = ("accuracy_vs_parameters.png", "curriculum.png", "embeddings.png", "ablation.png")


def test_repro_listops_writes_report_figures_metrics_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "PAPER", replace(experiment.PAPER, quick=TINY))
    out, calls = tmp_path / "repro", []
    experiment.PAPER.run(out, quick=True, progress=lambda s, f: calls.append((s, f)))
    _, metrics = check_written_report(out, SECTIONS, FIGURES, calls)
    assert len(metrics["claims"]) == 4
    assert set(metrics["thresholds"]) == {"SUM", "MAX", "MIN", "MED", "MAX+MED", "MAX+MED+SUM"}
    assert len(metrics["runs"]) == 6 + 1  # six mixes and the curriculum, one size, one seed
    # the analysis reports the saved model of the mix (largest size, first seed)
    saved = ListOpsTransformer.load(out / "sweep" / "models" / "max+med+sum_d8_l2_h2_m2_s0")
    assert metrics["analysis"]["MAX+MED+SUM"]["embedding"] == embedding_structure(saved, 10)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "sweep" / "runs").iterdir()}
    # the command line's repro runs the same study and resumes it: no run is trained again
    again = CliRunner().invoke(app, ["repro", "listops", "--quick", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "sweep" / "runs").iterdir()} == stamps
    assert json.loads((out / "metrics.json").read_text())["runs"] == metrics["runs"]


def test_repro_listops_refuses_a_data_dir(tmp_path):
    out = tmp_path / "repro"
    result = CliRunner().invoke(
        app, ["repro", "listops", "--quick", "--out", str(out), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "data-dir" in result.output
    assert "uses no image files" in result.output
    assert not out.exists()
