"""The worked examples of :mod:`amlab.nn` behind ``amlab nn mil`` and ``amlab nn prototypes``.

- :func:`run_mil`: multiple-instance learning on bags of the embedded digits. A bag is
  positive when it holds the target digit. One instance encoder, three poolings of the
  bag: the memory pooling layer (:class:`~amlab.nn.Pooling`, LSE and LSR), attention
  pooling (Ilse et al., 2018) and mean pooling; test accuracy over seeds.
- :func:`run_prototypes`: a classifier whose only layer is a memory of learnable prototypes
  (:class:`~amlab.nn.MemoryLayer` with class scores as values), LSE against LSR, with
  logistic regression as the baseline: accuracy, the sparsity of LSR's retrieval (the
  share of exactly-zero weights) and the prototypes as images.

Both train through the shared loop (:mod:`amlab.training`) and write ``report.md``,
``metrics.json`` and a figure into ``out`` (under torchrun every rank trains, each on its
own batches, and returns the metrics; rank 0 writes).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amlab.data.images import ImageSet, image_splits
from amlab.distributed.group import is_main_process
from amlab.errors import AmlabError, check_choice, check_positive_int
from amlab.io import atomic_write_text, write_metrics
from amlab.models.model import seeded
from amlab.nn import MemoryLayer, Pooling
from amlab.training import TrainConfig, train

#: progress(stage, fraction of the whole run done)
Progress = Callable[[str, float], None]

#: the bag poolings compared by :func:`run_mil`
POOLINGS = ("memory_lse", "memory_lsr", "attention", "mean")
#: the prototype memories compared by :func:`run_prototypes`
PROTOTYPE_ENERGIES = ("lse", "lsr")


def _no_progress(stage: str, fraction: float) -> None:
    """The progress callback when nobody watches."""


def _fit(model: nn.Module, loss, steps: int, lr: float, seed: int, report: Callable) -> None:
    """Train ``model`` on ``loss`` through the shared loop (AdamW, warm-up, cosine decay)."""
    config = TrainConfig(steps=steps, lr=lr, warmup=steps // 10, weight_decay=0.0, seed=seed)
    train(model, loss, config, on_step=lambda done, total, _: report(done / total))


def _share(progress: Progress, stage: str, index: int, count: int) -> Callable[[float], None]:
    """Progress of run ``index`` of ``count``: its fraction done, as the whole run's."""
    return lambda fraction: progress(stage, (index + fraction) / count)


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


# -- multiple-instance learning -------------------------------------------------------------
@dataclass(frozen=True)
class MILConfig:
    """Bags of digits: sizes in [bag_min, bag_max]; a positive bag holds 1 to 3 instances
    of ``target``, a negative one none. ``hidden``: the instance embedding's width."""

    target: int = 9
    bag_min: int = 5
    bag_max: int = 15
    train_bags: int = 1000
    test_bags: int = 500
    hidden: int = 32
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    poolings: tuple[str, ...] = POOLINGS

    def __post_init__(self) -> None:
        if not 0 <= self.target <= 9:
            raise AmlabError(f"target must be a digit 0-9; got {self.target}.")
        if not 1 <= self.bag_min <= self.bag_max:
            raise AmlabError(f"need 1 <= bag_min <= bag_max; got {self.bag_min}, {self.bag_max}.")
        for name in ("train_bags", "test_bags", "hidden", "steps", "batch_size"):
            check_positive_int(getattr(self, name), name)
        if not self.seeds:
            raise AmlabError("seeds is empty; pass at least one seed.")
        for pooling in self.poolings:
            check_choice(pooling, "pooling", POOLINGS)


#: --quick: a smaller run
MIL_QUICK = MILConfig(train_bags=500, test_bags=300, steps=250, seeds=(0, 1))


@dataclass(frozen=True)
class Bags:
    """Bags (n, bag_max, D) of images, padding (n, bag_max) True at padding, labels (n,)
    in {0, 1}, and the digit of every instance (n, bag_max) (-1 at padding)."""

    images: torch.Tensor
    padding: torch.Tensor
    labels: torch.Tensor
    digits: torch.Tensor


def make_bags(images: ImageSet, count: int, config: MILConfig, gen: torch.Generator) -> Bags:
    """``count`` bags drawn from ``images``: half positive on average."""
    target = images.labels == config.target
    positives, negatives = target.nonzero()[:, 0], (~target).nonzero()[:, 0]
    index = torch.full((count, config.bag_max), -1)
    labels = torch.randint(2, (count,), generator=gen)
    sizes = torch.randint(config.bag_min, config.bag_max + 1, (count,), generator=gen)
    for b in range(count):
        size = int(sizes[b])
        members = negatives[torch.randint(len(negatives), (size,), generator=gen)]
        if labels[b]:
            hits = int(torch.randint(1, min(3, size) + 1, (1,), generator=gen))
            where = torch.randperm(size, generator=gen)[:hits]
            members[where] = positives[torch.randint(len(positives), (hits,), generator=gen)]
        index[b, :size] = members
    padding = index < 0
    safe = index.clamp_min(0)
    bag_images = images.images[safe].masked_fill(padding[..., None], 0.0)
    digits = images.labels[safe].masked_fill(padding, -1)
    return Bags(bag_images, padding, labels.float(), digits)


class AttentionPooling(nn.Module):
    """Attention-based MIL pooling (Ilse et al., 2018): weights softmax(w . tanh(V h))
    over the bag's instances, padding excluded; the bag is their weighted mean."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def weights(self, h: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.score(h)[..., 0].masked_fill(padding, float("-inf")), -1)

    def forward(self, h: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return (self.weights(h, padding)[..., None] * h).sum(1)


class BagClassifier(nn.Module):
    """Instance encoder (MLP), a pooling of the bag, a linear logit."""

    def __init__(self, pooling: str, dim: int, hidden: int, seed: int) -> None:
        super().__init__()
        self.pooling_name = check_choice(pooling, "pooling", POOLINGS)
        with seeded(seed):
            self.encoder = nn.Sequential(
                nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
            )
            self.head = nn.Linear(hidden, 1)
            if pooling == "attention":
                self.pooling = AttentionPooling(hidden, hidden)
        if pooling == "memory_lse":
            self.pooling = Pooling(
                hidden, hidden_dim=hidden, beta=hidden**-0.5, learn_beta=True, seed=seed
            )
        elif pooling == "memory_lsr":  # supports of radius sqrt(2 / beta) = 10 to start with
            self.pooling = Pooling(
                hidden, hidden_dim=hidden, energy="lsr", beta=0.02, learn_beta=True, seed=seed
            )

    def pooled(self, bags: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.encoder(bags)
        if self.pooling_name == "mean":
            keep = (~padding).to(h.dtype)[..., None]
            return (h * keep).sum(1) / keep.sum(1)
        if self.pooling_name == "attention":
            return self.pooling(h, padding)
        return self.pooling(h, padding).output[:, 0]

    def forward(self, bags: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(bags, padding))[:, 0]

    @torch.no_grad()
    def instance_weights(self, bags: torch.Tensor, padding: torch.Tensor) -> torch.Tensor | None:
        """The pooling's weights (n, bag_max) over each bag's instances (None for mean)."""
        h = self.encoder(bags)
        if self.pooling_name == "attention":
            return self.pooling.weights(h, padding)
        if self.pooling_name.startswith("memory"):
            return self.pooling.weights(h, padding)[:, 0]
        return None


def run_mil(
    config: MILConfig = MILConfig(),
    out: str | Path | None = None,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Train every pooling with every seed; test accuracy per pooling. With ``out``, write
    ``report.md``, ``metrics.json`` and ``mil.png``."""
    train_set, test_set = image_splits("digits", None)
    runs = [(seed, pooling) for seed in config.seeds for pooling in config.poolings]
    results: dict[str, dict[str, Any]] = {
        p: {"accuracy": [], "target_weight": []} for p in config.poolings
    }
    shown = None
    bags: dict[int, tuple[Bags, Bags]] = {}
    for i, (seed, pooling) in enumerate(runs):
        if seed not in bags:  # every pooling sees the same bags
            gen = torch.Generator().manual_seed(seed)
            bags[seed] = (
                make_bags(train_set, config.train_bags, config, gen),
                make_bags(test_set, config.test_bags, config, gen),
            )
        train_bags, test_bags = bags[seed]
        model = BagClassifier(pooling, train_bags.images.shape[-1], config.hidden, seed)

        def loss(model, step, g, bags=train_bags):
            pick = torch.randint(len(bags.labels), (config.batch_size,), generator=g)
            logits = model(bags.images[pick], bags.padding[pick])
            return nn.functional.binary_cross_entropy_with_logits(logits, bags.labels[pick])

        stage = _share(progress, f"{pooling}, seed {seed}", i, len(runs))
        _fit(model, loss, config.steps, config.lr, seed, stage)
        model.eval()
        with torch.no_grad():
            predicted = (model(test_bags.images, test_bags.padding) > 0).float()
        results[pooling]["accuracy"].append(float((predicted == test_bags.labels).float().mean()))
        weights = model.instance_weights(test_bags.images, test_bags.padding)
        if weights is not None:
            positive = test_bags.labels == 1
            on_target = (weights * (test_bags.digits == config.target))[positive].sum(1)
            results[pooling]["target_weight"].append(float(on_target.mean()))
            if seed == config.seeds[0] and pooling == "memory_lse":
                shown = (test_bags, weights)
    metrics = {
        "config": asdict(config),
        "train_images": len(train_set),
        "test_images": len(test_set),
        "positive_share_test": statistics.fmean(float(t.labels.mean()) for _, t in bags.values()),
        "accuracy": {
            p: {"per_seed": r["accuracy"], **_mean_std(r["accuracy"])} for p, r in results.items()
        },
        "weight_on_target_instances": {
            p: _mean_std(r["target_weight"]) for p, r in results.items() if r["target_weight"]
        },
    }
    if out is not None and is_main_process():
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _mil_figure(metrics, shown, test_set.shape, out / "mil.png")
        write_metrics(out / "metrics.json", metrics)
        atomic_write_text(out / "report.md", _mil_report(metrics))
    return metrics


def _mil_figure(metrics, shown, shape, path: Path) -> None:
    from amlab.tasks.figures import plt, save_figure

    names = list(metrics["accuracy"])
    fig = plt.figure(figsize=(10, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    for x, name in enumerate(names):
        acc = metrics["accuracy"][name]
        ax.bar(x, acc["mean"], yerr=acc["std"], color=f"C{x}", alpha=0.7, capsize=4)
        ax.scatter([x] * len(acc["per_seed"]), acc["per_seed"], color="k", s=12, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("test accuracy (bags)")
    ax.set_title("MIL on digit bags: pooling compared")
    if shown is not None:
        bags, weights = shown
        b = int((bags.labels == 1).nonzero()[0, 0])
        size = int((~bags.padding[b]).sum())
        cols = 5
        grid = fig.add_gridspec(1, 2)[0, 1].subgridspec(
            math.ceil(size / cols) + 1, cols, hspace=0.6
        )
        head = fig.add_subplot(grid[0, :])
        head.axis("off")
        head.text(0.5, 0.2, "one positive test bag:\nmemory_lse pooling weights", ha="center")
        for j in range(size):
            sub = fig.add_subplot(grid[1 + j // cols, j % cols])
            sub.imshow(bags.images[b, j].reshape(shape).numpy(), cmap="gray", vmin=0, vmax=1)
            sub.set_xticks([])
            sub.set_yticks([])
            sub.set_title(f"{float(weights[b, j]):.2f}", fontsize=8)
    save_figure(fig, path)


def _mil_report(metrics: dict[str, Any]) -> str:
    cfg = metrics["config"]
    rows = "\n".join(
        f"| {name} | {acc['mean']:.3f} ± {acc['std']:.3f} | "
        + ", ".join(f"{a:.3f}" for a in acc["per_seed"])
        + f" | {_weight_cell(metrics, name)} |"
        for name, acc in metrics["accuracy"].items()
    )
    return f"""# Multiple-instance learning on bags of digits

A bag holds {cfg["bag_min"]} to {cfg["bag_max"]} of scikit-learn's 8x8 digits; it is
positive when it holds the digit {cfg["target"]} (1 to 3 times), negative otherwise (about
half of the bags are positive). Train bags draw from the {metrics["train_images"]} training
images, test bags from the {metrics["test_images"]} held-out ones. Every model is the same
instance encoder (64 -> {cfg["hidden"]} -> {cfg["hidden"]}, ReLU), a pooling of the bag and
a linear logit, trained for {cfg["steps"]} steps of {cfg["batch_size"]} bags (AdamW,
lr {cfg["lr"]}, the shared training loop) with each seed in {list(cfg["seeds"])}; the
seed draws the bags and the initial weights.

Poolings: `memory_lse` / `memory_lsr` are `amlab.nn.Pooling` (one learnable query, linear
projections, learnable beta, LSE or LSR energy); `attention` is attention-based MIL pooling
(Ilse et al., 2018); `mean` averages the instances.

| pooling | test accuracy (mean ± std) | per seed | weight on target digits |
|---|---|---|---|
{rows}

The last column is the pooling weight that positive test bags put on their instances of
the target digit (1.0: all of it), averaged over bags and seeds; the mean pooling gives
each instance the same weight. Figure: `mil.png` (accuracy per pooling with each seed as a
dot; the memory pooling's weights over one positive test bag).
"""


def _weight_cell(metrics: dict[str, Any], name: str) -> str:
    weight = metrics["weight_on_target_instances"].get(name)
    return "-" if weight is None else f"{weight['mean']:.2f}"


# -- prototypes -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PrototypeConfig:
    """A memory of ``per_class`` prototypes per class in pixel space, read out as class
    scores; beta (learned) starts at ``beta[energy]``; LSR's floor ``eps``."""

    per_class: int = 3
    steps: int = 800
    batch_size: int = 64
    lr: float = 0.02
    beta: dict[str, float] = field(default_factory=lambda: {"lse": 1.0, "lsr": 0.1})
    # eps > 0 rewards kernel mass, which keeps the learned beta from shrinking the supports
    # until images fall outside every one (there the gradient is zero: with eps = 0, one
    # seed of the quick run ended with 62% of the test images outside, accuracy 0.39)
    eps: float = 0.5
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        for name in ("per_class", "steps", "batch_size"):
            check_positive_int(getattr(self, name), name)
        if not self.seeds:
            raise AmlabError("seeds is empty; pass at least one seed.")


PROTOTYPES_QUICK = PrototypeConfig(steps=300, seeds=(0, 1))


def prototype_memory(
    energy: str, train_set: ImageSet, config: PrototypeConfig, seed: int
) -> MemoryLayer:
    """A MemoryLayer of ``per_class`` prototypes per class, started at random training images
    of the class, whose values are class scores starting at 4 x one-hot."""
    classes = int(train_set.labels.max()) + 1
    layer = MemoryLayer(
        train_set.images.shape[1],
        classes * config.per_class,
        value_dim=classes,
        energy=energy,
        beta=config.beta[energy],
        learn_beta=True,
        eps=config.eps,
        seed=seed,
    )
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(classes):
        members = (train_set.labels == c).nonzero()[:, 0]
        picks.append(members[torch.randperm(len(members), generator=gen)[: config.per_class]])
    picks = torch.cat(picks)
    with torch.no_grad():
        layer.memories.copy_(train_set.images[picks])
        layer.values.copy_(4.0 * nn.functional.one_hot(train_set.labels[picks], classes))
    return layer


def run_prototypes(
    config: PrototypeConfig = PrototypeConfig(),
    out: str | Path | None = None,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Train an LSE and an LSR prototype memory with every seed; accuracy, LSR's sparsity and
    the baseline. With ``out``, write ``report.md``, ``metrics.json`` and ``prototypes.png``."""
    from sklearn.linear_model import LogisticRegression

    train_set, test_set = image_splits("digits", None)
    runs = [(seed, energy) for seed in config.seeds for energy in PROTOTYPE_ENERGIES]
    results: dict[str, dict[str, list[float]]] = {
        e: {"accuracy": [], "zero_weights": [], "active": [], "no_support": [], "beta": []}
        for e in PROTOTYPE_ENERGIES
    }
    shown = {}
    for i, (seed, energy) in enumerate(runs):
        layer = prototype_memory(energy, train_set, config, seed)

        def loss(layer, step, g):
            pick = torch.randint(len(train_set), (config.batch_size,), generator=g)
            logits = layer(train_set.images[pick]).output
            return nn.functional.cross_entropy(logits, train_set.labels[pick])

        stage = _share(progress, f"{energy}, seed {seed}", i, len(runs))
        _fit(layer, loss, config.steps, config.lr, seed, stage)
        with torch.no_grad():
            logits = layer(test_set.images).output
            weights = layer.weights(test_set.images)
        result = results[energy]
        result["accuracy"].append(float((logits.argmax(1) == test_set.labels).float().mean()))
        result["zero_weights"].append(float((weights == 0).float().mean()))
        result["active"].append(float((weights > 0).float().sum(1).mean()))
        result["no_support"].append(float((weights.sum(1) == 0).float().mean()))
        result["beta"].append(float(layer.beta.detach()))
        if seed == config.seeds[0]:
            shown[energy] = (layer.memories.detach().clone(), layer.values.detach().argmax(1))
    baseline = LogisticRegression(max_iter=2000).fit(
        train_set.images.numpy(), train_set.labels.numpy()
    )
    metrics = {
        "config": asdict(config),
        "prototypes": len(layer.memories),  # the same in every run
        "train_images": len(train_set),
        "test_images": len(test_set),
        "logistic_regression_accuracy": float(
            baseline.score(test_set.images.numpy(), test_set.labels.numpy())
        ),
        **{
            energy: {name: {"per_seed": v, **_mean_std(v)} for name, v in r.items()}
            for energy, r in results.items()
        },
    }
    if out is not None and is_main_process():
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _prototype_figure(metrics, shown, config.per_class, test_set.shape, out / "prototypes.png")
        write_metrics(out / "metrics.json", metrics)
        atomic_write_text(out / "report.md", _prototype_report(metrics))
    return metrics


def _prototype_figure(metrics, shown, per_class: int, shape, path: Path) -> None:
    """Each memory's prototypes as a mosaic: one column per class (the class its values score
    highest), one row per prototype."""
    from amlab.tasks.figures import plt, save_figure

    fig, axes = plt.subplots(
        1, len(shown), figsize=(5 * len(shown), 1.2 + 0.55 * per_class), squeeze=False
    )
    for ax, (energy, (memories, classes)) in zip(axes[0], shown.items(), strict=True):
        h, w = shape
        columns = int(classes.max()) + 1
        rows = max(int((classes == c).sum()) for c in range(columns))
        mosaic = torch.full((rows * (h + 1), columns * (w + 1)), float("nan"))
        for c in range(columns):
            for r, m in enumerate(memories[classes == c]):
                mosaic[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = m.reshape(
                    h, w
                )
        ax.imshow(mosaic.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks(
            [c * (w + 1) + w / 2 for c in range(columns)], [str(c) for c in range(columns)]
        )
        ax.set_yticks([])
        m = metrics[energy]
        ax.set_title(
            f"{energy.upper()}: accuracy {m['accuracy']['per_seed'][0]:.3f}, zero weights "
            f"{m['zero_weights']['per_seed'][0]:.2f}",
            fontsize=9,
        )
    fig.suptitle("Learned prototypes (first seed), one column per class", fontsize=10)
    save_figure(fig, path)


PROTOTYPE_COLUMNS = (
    "| memory | test accuracy | share of exactly-zero weights | active prototypes per image "
    "| images with no active prototype | learned beta |\n|---|---|---|---|---|---|"
)


def _prototype_report(metrics: dict[str, Any]) -> str:
    cfg = metrics["config"]

    def cell(energy: str, name: str, digits: int = 3) -> str:
        v = metrics[energy][name]
        seeds = ", ".join(f"{x:.{digits}f}" for x in v["per_seed"])
        return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f} ({seeds})"

    rows = "\n".join(
        f"| {e.upper()} | {cell(e, 'accuracy')} | {cell(e, 'zero_weights')} | "
        f"{cell(e, 'active', 1)} | {cell(e, 'no_support')} | {cell(e, 'beta', 3)} |"
        for e in PROTOTYPE_ENERGIES
    )
    return f"""# A classifier whose last layer is a memory of prototypes

The classifier is one `amlab.nn.MemoryLayer`: {metrics["prototypes"]} learnable prototypes
in pixel space ({cfg["per_class"]} per class, started at random training images of the
class) whose values are learnable class scores (started at 4 x one-hot); an image's logits
are the values read out with the memory's weights. LSE reads with the softmax of
-(beta/2) ||x - prototype||^2, LSR with the Epanechnikov kernel ReLU(1 - (beta/2) ||x -
prototype||^2) (eps = {cfg["eps"]}), which is exactly zero beyond the radius sqrt(2/beta);
beta is learned (starting at {cfg["beta"]}). Trained for {cfg["steps"]} steps of
{cfg["batch_size"]} images (cross-entropy, AdamW, lr {cfg["lr"]}, the shared training loop)
on the {metrics["train_images"]} training digits; tested on the {metrics["test_images"]}
held-out ones, seeds {list(cfg["seeds"])} (mean ± std, then each seed).

{PROTOTYPE_COLUMNS}
{rows}

Baseline: logistic regression on the pixels (scikit-learn, 64 x 10 weights):
{metrics["logistic_regression_accuracy"]:.3f}.

An LSE weight is never exactly zero (every prototype contributes to every image); LSR's
retrieval touches only the prototypes within reach. Figure: `prototypes.png` (the learned
prototypes of the first seed, one column per class).
"""
