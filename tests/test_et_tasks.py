"""The Energy Transformer's two tasks: masked image completion and graph anomaly detection
(models, data, training through the shared loop, evaluation, CLI)."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from amlab.cli import app
from amlab.data.graphs import Graph, anomalous_block_graph, load_graph, split_nodes
from amlab.data.images import image_splits
from amlab.errors import AmlabError
from amlab.models import GraphET, MaskedImageET
from amlab.models.baselines import GCN
from amlab.models.masked_image_et import sample_masks
from amlab.tasks.et_graph import GraphRunConfig, run_graph_anomaly, tuned_macro_f1
from amlab.tasks.et_images import ETImageConfig, eval_et, train_et
from amlab.training import latest_checkpoint

runner = CliRunner()
TINY = dict(patch=2, dim=16, heads=2, head_dim=4, et_steps=3, batch_size=16)


def tiny_model(**kw) -> MaskedImageET:
    return MaskedImageET((8, 8), patch=2, dim=16, heads=2, head_dim=4, steps=3, **kw)


# -- masked image completion -------------------------------------------------------------
def test_patches_cut_the_image_row_by_row_and_invert_exactly():
    model = MaskedImageET((3, 4, 6), patch=2, dim=8, heads=1, head_dim=2)
    images = torch.arange(2 * 72, dtype=torch.float32).reshape(2, 72)
    patches = model.patches(images)
    assert patches.shape == (2, 6, 12)
    pictures = images.reshape(2, 3, 4, 6)
    torch.testing.assert_close(patches[1, 0], pictures[1, :, 0:2, 0:2].reshape(-1))
    torch.testing.assert_close(patches[0, 4], pictures[0, :, 2:4, 2:4].reshape(-1))
    torch.testing.assert_close(model.images(patches), images)
    masked = torch.zeros(2, 6, dtype=torch.bool)
    masked[0, 4] = True
    pixels = model.pixel_mask(masked).reshape(2, 3, 4, 6)
    assert pixels[0, :, 2:4, 2:4].all() and pixels.sum() == 12


def test_sample_masks_pick_the_stated_shares_uniformly():
    gen = torch.Generator().manual_seed(0)
    scored, masked = sample_masks(4000, 16, 0.5, 0.9, gen)
    assert (scored.sum(1) == 8).all() and (masked.sum(1) == 7).all()
    assert not (masked & ~scored).any()
    share = masked.float().mean(0)  # every position equally likely: 7/16
    assert (share - 7 / 16).abs().max() < 0.03
    assert sample_masks(2, 16, 0.01, 0.01, gen)[1].sum(1).tolist() == [1, 1]
    with pytest.raises(AmlabError):
        sample_masks(2, 16, 0.0, 0.9, gen)


def test_completion_keeps_visible_pixels_and_trains_every_weight():
    model = tiny_model().train()
    images = torch.rand(5, 64, generator=torch.Generator().manual_seed(1))
    _, masked = sample_masks(5, 16, 0.5, 0.9, torch.Generator().manual_seed(2))
    out = model.complete(images, masked)
    hidden = model.pixel_mask(masked)
    torch.testing.assert_close(out.images[~hidden], images[~hidden])
    torch.testing.assert_close(out.images[hidden], model.images(out.patches)[hidden])
    out.patches.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert out.trajectory.energies.shape == (4, 5)
    with torch.no_grad():
        completed = model.eval().complete(images, masked)
        assert (completed.trajectory.energies.diff(dim=0) <= 1e-5).all()
        torch.testing.assert_close(model(images, masked), completed.images)


@pytest.mark.parametrize(
    "images,masked",
    [
        (torch.rand(2, 63), torch.zeros(2, 16, dtype=torch.bool)),
        (torch.rand(2, 64), torch.zeros(2, 15, dtype=torch.bool)),
        (torch.rand(2, 64), torch.zeros(2, 16)),
        (torch.full((2, 64), math.nan), torch.zeros(2, 16, dtype=torch.bool)),
    ],
)
def test_bad_completion_inputs_raise(images, masked):
    with pytest.raises(AmlabError):
        tiny_model()(images, masked)


def test_bad_image_shapes_raise():
    with pytest.raises(AmlabError, match="divisible"):
        MaskedImageET((8, 7), patch=2)


def test_save_load_gives_the_same_completions(tmp_path):
    model = tiny_model(seed=4).eval()
    model.save(tmp_path / "m")
    back = MaskedImageET.load(tmp_path / "m")
    images = torch.rand(3, 64)
    masked = torch.rand(3, 16) < 0.5
    assert back.config == model.config
    torch.testing.assert_close(back(images, masked), model(images, masked))
    with pytest.raises(AmlabError):
        MaskedImageET.load(tmp_path / "nothing")
    config_file = tmp_path / "m" / "config.json"
    config_file.write_text(config_file.read_text().replace('"dim": 16', '"dim": 8'))
    with pytest.raises(AmlabError, match="do not fit MaskedImageET"):
        MaskedImageET.load(tmp_path / "m")


def test_digits_split_is_fixed_and_disjoint():
    train, test = image_splits("digits", None)
    assert len(train.labels) + len(test.labels) == 1797 and len(test.labels) == 359
    pairs = {tuple(r) for r in train.images.tolist()}
    overlap = sum(tuple(r) in pairs for r in test.images.tolist())
    again, _ = image_splits("digits", None)
    assert torch.equal(again.images, train.images)
    assert overlap < 5  # the digits set holds a few exact duplicates, nothing more


def test_killed_and_resumed_et_training_matches_an_uninterrupted_run(tmp_path):
    config = ETImageConfig(**TINY, train_steps=12, checkpoint_every=4, warmup=2)
    full = train_et(config, tmp_path / "full")

    def kill(done, total, metrics):
        if done == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_et(config, tmp_path / "run", on_step=kill)
    resumed = train_et(config, tmp_path / "run", resume=True)
    assert resumed["resumed_from"] == 6 and resumed["losses"] == full["losses"]
    a = MaskedImageET.load(tmp_path / "full" / "model").state_dict()
    b = MaskedImageET.load(tmp_path / "run" / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_scores_every_method_on_the_same_masked_patches(tmp_path):
    config = ETImageConfig(**TINY, train_steps=5, checkpoint_every=5)
    train_et(config, tmp_path / "run")
    metrics = eval_et(tmp_path / "run", tmp_path / "eval", images=40, seed=1)
    assert set(metrics["masked_mse"]) == {"energy_transformer", "mean_fill", "dense_am"}
    assert metrics["masked_patches_per_image"] == 7 and metrics["test_images"] == 40
    # mean fill, computed independently: the mean training patch at each hidden position
    model = MaskedImageET.load(tmp_path / "run" / "model")
    train, test = image_splits("digits", None)
    _, masked = sample_masks(40, 16, 0.5, 0.9, torch.Generator().manual_seed(1))
    mean_patches = model.patches(train.images).mean(0)
    truth = model.patches(test.images[:40])
    errors = [((mean_patches[j] - truth[i, j]) ** 2).mean() for i, j in masked.nonzero().tolist()]
    assert metrics["masked_mse"]["mean_fill"] == pytest.approx(float(sum(errors) / len(errors)))
    assert metrics["dense_am_beta"] in (1.0, 3.0, 10.0, 30.0, 100.0)
    assert len(metrics["energy_per_step"]) == 4 and metrics["energy_never_rises"]
    for name in ("metrics.json", "completions.png", "energy.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0


def test_mnist_files_train_with_7x7_patches(tmp_path):
    from test_data import write_mnist

    write_mnist(tmp_path, "train", n=12)
    write_mnist(tmp_path, "test", n=6, seed=1)
    config = ETImageConfig(
        data="mnist", data_dir=str(tmp_path), **{**TINY, "patch": 7}, train_steps=2
    )
    summary = train_et(config, tmp_path / "run")
    assert summary["train_images"] == 12
    model = MaskedImageET.load(tmp_path / "run" / "model")
    assert model.num_patches == 16 and model.patch_dim == 49
    metrics = eval_et(tmp_path / "run")
    assert metrics["test_images"] == 6 and metrics["data"] == "mnist"


def test_cli_trains_and_evaluates_et(tmp_path):
    run = tmp_path / "et"
    args = ["train", "et", "--out", str(run), "--steps", "3", "--dim", "16", "--heads", "2"]
    args += ["--head-dim", "4", "--et-steps", "2", "--batch-size", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, args)  # an existing run is not overwritten
    assert again.exit_code == 2 and "--resume" in again.output
    result = runner.invoke(app, ["eval", "et", "--model", str(run), "--images", "20", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["test_images"] == 20
    table = runner.invoke(app, ["eval", "et", "--model", str(run), "--images", "20"])
    assert table.exit_code == 0, table.output
    assert "20 held-out" in table.output
    for name, mse in metrics["masked_mse"].items():  # the same evaluation, as a table
        assert f"{mse:.5f}" in table.output, name


# -- graph anomaly detection -------------------------------------------------------------
def test_generated_graph_has_the_injected_anomalies():
    graph = anomalous_block_graph(nodes=300, structural=20, contextual=15, clique_size=5, seed=3)
    assert graph.labels.sum() == 35 and (graph.kind > 0).sum() == 35
    adjacency = graph.adjacency()
    assert torch.equal(adjacency, adjacency.T) and not adjacency.diagonal().any()
    assert (graph.edges[:, 0] < graph.edges[:, 1]).all()
    structural = (graph.kind == 1).nonzero().flatten()
    # the structural nodes form 4 complete cliques of 5: each has >= 4 structural neighbours
    assert (adjacency[structural][:, structural].sum(1) >= 4).all()
    for node in (graph.kind == 2).nonzero().flatten().tolist():
        same = (graph.features == graph.features[node]).all(1)
        assert same.sum() >= 2  # copied from another node


def test_graph_files_round_trip_and_bad_files_raise(tmp_path):
    graph = anomalous_block_graph(nodes=60, structural=10, contextual=5, clique_size=5, seed=1)
    edges, feats, labels = tmp_path / "e.txt", tmp_path / "f.csv", tmp_path / "l.txt"
    edges.write_text("# u v\n" + "\n".join(f"{v} {u}" for u, v in graph.edges.tolist()))
    np.savetxt(feats, graph.features.numpy(), delimiter=",")
    np.savetxt(labels, graph.labels.numpy(), fmt="%d")
    back = load_graph(edges, feats, labels)
    assert torch.equal(back.edges, graph.edges) and torch.equal(back.labels, graph.labels)
    torch.testing.assert_close(back.features, graph.features)
    for text, message in [
        ("0 60\n", "outside"),
        ("0 x\n", "not rows of numbers"),
        ("0 1\n1 2 3\n", "same length"),
        ("0 1.5\n", "whole node numbers"),
    ]:
        edges.write_text(text)
        with pytest.raises(AmlabError, match=message):
            load_graph(edges, feats, labels)
    edges.write_text("# nothing but a comment\n\n")
    assert load_graph(edges, feats, labels).edges.shape == (0, 2)
    with pytest.raises(AmlabError, match="does not exist"):
        load_graph(tmp_path / "missing", feats, labels)
    labels.write_text("0\n1\n")
    with pytest.raises(AmlabError, match="labels"):
        load_graph(tmp_path / "e.txt", feats, labels)
    feats.write_text("1, nan\n" * 60)
    with pytest.raises(AmlabError, match="NaN or infinite"):
        load_graph(edges, feats, labels)


def test_node_split_is_stratified_and_disjoint():
    labels = torch.tensor([1] * 20 + [0] * 180)
    train, val, test = split_nodes(labels, (0.4, 0.2), seed=2)
    assert len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 200
    assert len(train) + len(val) + len(test) == 200
    assert labels[train].sum() == 8 and labels[val].sum() == 4 and labels[test].sum() == 8


@pytest.mark.parametrize("seed,rounding", [(0, None), (1, 1), (2, 0)])
def test_tuned_threshold_is_the_best_on_validation(seed, rounding):
    """Against sklearn at every candidate (rounded scores give ties, one class may be
    absent above a threshold): the same best macro-F1 and the same (smallest) threshold."""
    gen = np.random.default_rng(seed)
    val_y, test_y = gen.integers(0, 2, 60), gen.integers(0, 2, 50)
    val_s, test_s = val_y + gen.normal(0, 0.8, 60), test_y + gen.normal(0, 0.8, 50)
    if rounding is not None:
        val_s = np.round(val_s, rounding)
    f1, threshold = tuned_macro_f1(val_s, val_y, test_s, test_y)
    candidates = np.unique(val_s)
    scores = [f1_score(val_y, val_s >= t, average="macro", zero_division=0) for t in candidates]
    assert threshold == candidates[int(np.argmax(scores))]
    assert f1_score(val_y, val_s >= threshold, average="macro") == pytest.approx(max(scores))
    assert f1 == pytest.approx(f1_score(test_y, test_s >= threshold, average="macro"))


def test_gcn_propagates_with_the_symmetric_normalised_adjacency():
    adjacency = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    gcn = GCN(2, hidden=4)
    x = torch.randn(3, 2)
    a = adjacency.double() + torch.eye(3, dtype=torch.float64)
    d = torch.diag(a.sum(1) ** -0.5)
    a_hat = (d @ a @ d).float()
    h = torch.relu(a_hat @ gcn.first(x))
    expected = (a_hat @ gcn.second(h)).squeeze(-1)
    torch.testing.assert_close(gcn(x, adjacency.nonzero().T), expected)


def path_graph(n: int) -> Graph:
    edges = torch.stack([torch.arange(n - 1), torch.arange(1, n)], dim=1)
    zeros = torch.zeros(n, dtype=torch.long)
    return Graph(torch.zeros(n, 4), edges, zeros, zeros)


def test_graph_pairs_are_the_adjacency_both_ways():
    graph = anomalous_block_graph(nodes=80, structural=10, contextual=5, clique_size=5)
    pairs = graph.pairs()
    dense = torch.zeros(80, 80, dtype=torch.bool)
    dense[pairs[0], pairs[1]] = True
    assert torch.equal(dense, graph.adjacency()) and pairs.shape[1] == 2 * len(graph.edges)


def test_graph_et_sees_only_what_its_steps_can_reach():
    """On a path graph, one step of the dynamics moves a token using its neighbours (as
    queries and keys) and their neighbours: nodes 3 or more hops away change nothing."""
    n = 8
    pairs = path_graph(n).pairs()
    model = GraphET(4, dim=8, heads=2, head_dim=4, steps=1, seed=0).eval()
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[5:] += 3.0  # nodes 5, 6, 7: at least 3 hops from nodes 0, 1, 2
    with torch.no_grad():
        a, b = model(x, pairs), model(y, pairs)
        torch.testing.assert_close(a[:3], b[:3])
        assert not torch.allclose(a[3:], b[3:])
        everyone = (~torch.eye(n, dtype=torch.bool)).nonzero().T  # no restriction
        assert not torch.allclose(model(x, everyone)[:3], model(y, everyone)[:3])
        # sparse pairs give the same logits as the dense mask they describe
        dense = torch.zeros(n, n, dtype=torch.bool)
        dense[pairs[0], pairs[1]] = True
        tokens = model.encoder(x)[None]
        torch.testing.assert_close(model.block(tokens, mask=pairs), model.block(tokens, mask=dense))
    with pytest.raises(AmlabError):
        model(x, pairs.float())
    with pytest.raises(AmlabError, match="0..7"):
        model(x, pairs + 1)


def test_graph_run_reports_auc_and_f1_for_every_detector(tmp_path):
    sizes = dict(dim=8, heads=2, head_dim=4, et_steps=2)
    config = GraphRunConfig(nodes=120, structural=10, contextual=10, train_steps=8, **sizes)
    metrics = run_graph_anomaly(config, tmp_path)
    assert set(metrics["detectors"]) == {"graph_et", "gcn", "mlp"}
    for r in metrics["detectors"].values():
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
        assert set(r["auc_by_kind"]) == {"structural", "contextual"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert (tmp_path / "roc.png").stat().st_size > 0
    assert latest_checkpoint(tmp_path / "graph_et").name == "checkpoint-00000008"


def test_cli_graph_from_files_and_missing_files(tmp_path):
    graph = anomalous_block_graph(nodes=60, structural=10, contextual=5, clique_size=5)
    files = {"edges": "e.txt", "features": "f.txt", "labels": "l.txt"}
    np.savetxt(tmp_path / "e.txt", graph.edges.numpy(), fmt="%d")
    np.savetxt(tmp_path / "f.txt", graph.features.numpy())
    np.savetxt(tmp_path / "l.txt", graph.labels.numpy(), fmt="%d")
    args = ["train", "et-graph", "--out", str(tmp_path / "run"), "--steps", "3"]
    args += ["--et-steps", "1", "--json"]
    file_args = [a for k, v in files.items() for a in (f"--{k}", str(tmp_path / v))]
    result = runner.invoke(app, args + file_args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["graph"]["nodes"] == 60
    result = runner.invoke(app, args + ["--edges", str(tmp_path / "e.txt")])
    assert result.exit_code == 2 and "all three" in result.output


def test_cli_graph_progress_runs_once_over_all_three_detectors(tmp_path, monkeypatch):
    import contextlib

    import amlab.cli.train

    fractions = []

    @contextlib.contextmanager
    def record(shown):  # (a process torchrun did not start shows it)
        assert shown
        yield lambda stage, fraction: fractions.append(fraction)

    monkeypatch.setattr(amlab.cli.train, "stage_progress", record)
    args = ["train", "et-graph", "--nodes", "120", "--structural", "10", "--contextual", "10"]
    args += ["--steps", "4", "--et-steps", "1", "--out", str(tmp_path / "run")]
    assert runner.invoke(app, args).exit_code == 0
    assert len(fractions) == 12 and fractions == sorted(fractions)
    assert fractions[3] == pytest.approx(1 / 3) and fractions[-1] == 1.0


def test_graph_type_checks():
    with pytest.raises(AmlabError):
        anomalous_block_graph(nodes=10, structural=7, clique_size=5)
    with pytest.raises(AmlabError):
        anomalous_block_graph(nodes=10, structural=10, contextual=5, clique_size=5)
    assert isinstance(anomalous_block_graph(nodes=40, structural=0, contextual=0), Graph)
