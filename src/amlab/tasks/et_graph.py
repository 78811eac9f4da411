"""Graph anomaly detection with the Energy Transformer: ``amlab train et-graph``.

One graph (generated, or read from files), nodes split stratified into train /
validation / test. Three detectors are trained through the shared loop on the same
train nodes with a class-balanced binary cross-entropy, full batch:

- GraphET: the Energy Transformer with attention restricted to graph neighbours;
- GCN: two graph-convolution layers, D^-1/2 (A + I) D^-1/2 X W (Kipf and Welling);
- MLP: the node's own features only (no graph).

Reported on the test nodes: AUC, and macro-F1 at the threshold that maximises macro-F1
on the validation nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score, roc_curve
from torch import nn

from amlab.data.graphs import Graph, anomalous_block_graph, load_graph, split_nodes
from amlab.distributed.group import is_main_process
from amlab.errors import AmlabError
from amlab.io import write_metrics
from amlab.models.baselines import GCN, MLP
from amlab.models.graph_et import GraphET
from amlab.tasks.figures import plt, save_figure
from amlab.training import TrainConfig, train

DETECTORS = ("graph_et", "gcn", "mlp")
#: progress(detector name, step done, total steps)
GraphProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GraphRunConfig:
    nodes: int = 600
    communities: int = 5
    feature_dim: int = 16
    structural: int = 30
    contextual: int = 30
    dim: int = 32
    heads: int = 4
    head_dim: int = 8
    et_steps: int = 6
    train_steps: int = 300
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    edges: str | None = None
    features: str | None = None
    labels: str | None = None


def make_graph(config: GraphRunConfig) -> Graph:
    files = (config.edges, config.features, config.labels)
    if any(files):
        if not all(files):
            raise AmlabError("a graph from files needs all three: --edges, --features, --labels.")
        return load_graph(*files)  # type: ignore[arg-type]
    return anomalous_block_graph(
        nodes=config.nodes,
        communities=config.communities,
        feature_dim=config.feature_dim,
        structural=config.structural,
        contextual=config.contextual,
        seed=config.seed,
    )


def build_detector(name: str, feature_dim: int, config: GraphRunConfig) -> nn.Module:
    if name == "graph_et":
        return GraphET(
            feature_dim,
            dim=config.dim,
            heads=config.heads,
            head_dim=config.head_dim,
            steps=config.et_steps,
            seed=config.seed,
        )
    baseline = GCN if name == "gcn" else MLP
    return baseline(feature_dim, config.dim, seed=config.seed)


def tuned_macro_f1(
    val_scores: np.ndarray, val_labels: np.ndarray, test_scores: np.ndarray, test_labels
) -> tuple[float, float]:
    """(test macro-F1, threshold): the threshold (a validation score; a node is called
    anomalous when its score is at least the threshold) maximises macro-F1 on validation.

    Every candidate is scored at once from cumulative counts over the sorted scores."""
    thresholds = np.unique(val_scores)  # ascending
    labels = np.asarray(val_labels).astype(bool)
    order = np.argsort(val_scores)
    sorted_scores, sorted_labels = val_scores[order], labels[order]
    # nodes with score >= t: everything from the first index where sorted_scores >= t
    first = np.searchsorted(sorted_scores, thresholds, side="left")
    positives_above = np.concatenate([np.cumsum(sorted_labels[::-1])[::-1], [0]])[first]
    called = len(labels) - first
    tp, fp = positives_above, called - positives_above
    fn = labels.sum() - tp
    tn = len(labels) - tp - fp - fn

    def f1(hit, false_alarm, miss):
        denominator = 2 * hit + false_alarm + miss
        return np.divide(2 * hit, denominator, out=np.zeros(len(hit)), where=denominator > 0)

    macro = 0.5 * (f1(tp, fp, fn) + f1(tn, fn, fp))
    threshold = float(thresholds[int(np.argmax(macro))])
    return float(f1_score(test_labels, test_scores >= threshold, average="macro")), threshold


def run_graph_anomaly(
    config: GraphRunConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    progress: GraphProgress | None = None,
) -> dict[str, Any]:
    """Train the three detectors and report test AUC and macro-F1; see the module doc. With
    ``out``: each detector's checkpoints in ``out/<detector>``, ``metrics.json`` and
    ``roc.png`` (under torchrun every rank trains and returns the metrics; rank 0 writes)."""
    graph = make_graph(config)
    labels = graph.labels
    if labels.sum() < 3 or (1 - labels).sum() < 3:
        raise AmlabError("the graph needs at least 3 anomalous and 3 normal nodes.")
    train_idx, val_idx, test_idx = split_nodes(labels, seed=config.seed)
    mean, std = graph.features[train_idx].mean(0), graph.features[train_idx].std(0)
    features = (graph.features - mean) / std.clamp_min(1e-6)
    pairs = graph.pairs()
    positives = labels[train_idx].sum().clamp_min(1)
    bce = nn.BCEWithLogitsLoss(pos_weight=(len(train_idx) - positives) / positives)
    target = labels[train_idx].float()

    def loss(model: nn.Module, step: int, gen: torch.Generator) -> torch.Tensor:
        return bce(model(features, pairs)[train_idx], target)

    loop = TrainConfig(
        steps=config.train_steps,
        lr=config.lr,
        warmup=min(20, config.train_steps),
        weight_decay=config.weight_decay,
        checkpoint_every=max(config.train_steps // 4, 1),
        seed=config.seed,
    )
    y = labels.numpy()
    results: dict[str, Any] = {}
    curves = {}
    for name in DETECTORS:
        model = build_detector(name, features.shape[1], config).train()
        on_step = None if progress is None else (lambda d, t, m, n=name: progress(n, d, t))
        train(
            model,
            loss,
            loop,
            None if out is None else Path(out) / name,
            resume=resume,
            on_step=on_step,
            describe={"et_graph": asdict(config), "detector": name},
        )
        with torch.no_grad():
            scores = model.eval()(features, pairs).numpy()
        f1, threshold = tuned_macro_f1(scores[val_idx], y[val_idx], scores[test_idx], y[test_idx])
        results[name] = {
            "auc": float(roc_auc_score(y[test_idx], scores[test_idx])),
            "macro_f1": f1,
            "threshold": threshold,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if (graph.kind >= 0).all():
            results[name]["auc_by_kind"] = {
                kind: float(roc_auc_score(y[test_idx][keep], scores[test_idx][keep]))
                for kind, code in (("structural", (1, 3)), ("contextual", (2, 3)))
                if (keep := np.isin(graph.kind.numpy()[test_idx], (0, *code))).any()
                and y[test_idx][keep].any()
            }
        curves[name] = roc_curve(y[test_idx], scores[test_idx])[:2]
    metrics = {
        "config": asdict(config),
        "graph": {
            "nodes": graph.num_nodes,
            "edges": int(graph.edges.shape[0]),
            "anomalies": int(labels.sum()),
            "train_val_test": [len(train_idx), len(val_idx), len(test_idx)],
        },
        "detectors": results,
    }
    if out is not None and is_main_process():  # under torchrun, rank 0 writes
        out = Path(out)
        _roc_figure(curves, results, out / "roc.png")
        write_metrics(out / "metrics.json", metrics)
    return metrics


def _roc_figure(curves: dict, results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {results[name]['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Anomalous nodes, test split")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)
