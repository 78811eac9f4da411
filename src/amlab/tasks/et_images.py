"""Masked image completion with the Energy Transformer: ``amlab train et`` / ``eval et``.

Training (:func:`train_et`) runs the shared loop (:mod:`amlab.training`) on the masked-
patch MSE; the run directory holds the checkpoints, the final model in ``model/`` and
``train.json`` (settings and loss curve). Evaluation (:func:`eval_et`) hides patches of
held-out images (the same masks for every method) and reports the MSE on the masked
patches of the ET against two baselines:

- mean fill: each hidden patch becomes the mean training patch at its position;
- DenseAM: an LSE memory of the training images completes the query, its visible
  pixels clamped and the hidden ones started at the mean; beta is picked on a
  validation share of the training images (which are then left out of the memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from amlab.data.images import image_splits
from amlab.distributed.group import is_main_process, refuse_torchrun
from amlab.dynamics import Trajectory
from amlab.errors import AmlabError, check_positive_int
from amlab.io import config_from_json, read_json, write_metrics
from amlab.models import DenseAM
from amlab.models.masked_image_et import MaskedImageET, sample_masks
from amlab.tasks.figures import image_grid, plt, save_figure
from amlab.training import OnStep, TrainConfig, train

#: DenseAM baseline: inverse temperatures tried on the validation images
BASELINE_BETAS = (1.0, 3.0, 10.0, 30.0, 100.0)


@dataclass(frozen=True)
class ETImageConfig:
    """What ``amlab train et`` trains: data, model, masking and optimisation."""

    data: str = "digits"
    data_dir: str | None = None
    patch: int = 2
    dim: int = 64
    heads: int = 4
    head_dim: int = 16
    hopfield_memories: int | None = None
    et_steps: int = 12
    step_size: float = 0.1
    scored_fraction: float = 0.5
    masked_share: float = 0.9
    batch_size: int = 64
    train_steps: int = 3000
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.05
    clip: float = 1.0
    checkpoint_every: int = 250
    seed: int = 0


def build_model(config: ETImageConfig, shape: tuple[int, ...]) -> MaskedImageET:
    return MaskedImageET(
        shape,
        patch=config.patch,
        dim=config.dim,
        heads=config.heads,
        head_dim=config.head_dim,
        hopfield_memories=config.hopfield_memories,
        steps=config.et_steps,
        step_size=config.step_size,
        seed=config.seed,
    )


def masked_patch_loss(
    images: torch.Tensor, config: ETImageConfig
) -> Callable[[MaskedImageET, int, torch.Generator], tuple[torch.Tensor, dict]]:
    """The training loss: MSE over the scored patches of a random batch."""
    check_positive_int(config.batch_size, "batch_size")

    def loss(model: MaskedImageET, step: int, gen: torch.Generator):
        batch = images[torch.randint(len(images), (config.batch_size,), generator=gen)]
        scored, masked = sample_masks(
            len(batch), model.num_patches, config.scored_fraction, config.masked_share, gen
        )
        out = model.complete(batch, masked, differentiable=True)
        error = ((out.patches - model.patches(batch)) ** 2).mean(-1)
        return error[scored].mean(), {"masked_mse": float(error[masked].mean().detach())}

    return loss


def train_et(
    config: ETImageConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_step: OnStep | None = None,
) -> dict[str, Any]:
    """Train a MaskedImageET; write checkpoints, ``model/`` and ``train.json`` to ``out``.
    Under torchrun each rank draws its own batch of ``batch_size`` images a step (DDP
    averages their gradients) and rank 0 alone writes."""
    out = Path(out)
    train_set, _ = image_splits(config.data, config.data_dir)
    model = build_model(config, train_set.shape).train()
    loop = TrainConfig(
        steps=config.train_steps,
        lr=config.lr,
        warmup=min(config.warmup, config.train_steps),
        weight_decay=config.weight_decay,
        clip=config.clip,
        checkpoint_every=config.checkpoint_every,
        seed=config.seed,
    )
    result = train(
        model,
        masked_patch_loss(train_set.images, config),
        loop,
        out,
        resume=resume,
        on_step=on_step,
        describe={"et_images": asdict(config)},
    )
    model.eval()
    summary = {
        "config": asdict(config),
        "train_images": len(train_set.labels),
        "parameters": sum(p.numel() for p in model.parameters()),
        "losses": result.losses,
        "final_loss": sum(result.losses[-50:]) / len(result.losses[-50:]),
        "resumed_from": result.resumed_from,
    }
    if is_main_process():  # under torchrun the other ranks hold the same model and losses
        model.save(out / "model")
        write_metrics(out / "train.json", summary)
    return summary


def eval_et(
    model_dir: str | Path,
    out: str | Path | None = None,
    *,
    data_dir: str | None = None,
    images: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Masked-patch MSE of a trained model and both baselines on the same held-out masks.

    images: number of test images (0: all). With ``out``, writes ``metrics.json``,
    ``completions.png`` and ``energy.png``. Refused under torchrun with several ranks.
    """
    refuse_torchrun(
        "amlab eval et",
        "the evaluation is not spread over ranks: every rank would evaluate every test "
        "image and write the same files",
    )
    model_dir = Path(model_dir)
    config = _training_config(model_dir)
    data = config.data
    if data == "digits" and data_dir is not None:
        raise AmlabError(
            f"--data-dir would do nothing: the model in {model_dir} was trained on the "
            "embedded digits, which read no files; drop --data-dir."
        )
    model = MaskedImageET.load(model_dir / "model" if (model_dir / "model").is_dir() else model_dir)
    train_set, test_set = image_splits(data, data_dir or config.data_dir)
    if tuple(test_set.shape) != tuple(model.image_shape):
        raise AmlabError(
            f"the model was trained on images of shape {model.image_shape}, but {data} has "
            f"{test_set.shape}; evaluate on the data it was trained on."
        )
    test = test_set.images
    if images:
        test = test[: check_positive_int(images, "images")]
    gen = torch.Generator().manual_seed(seed)
    _, masked = sample_masks(
        len(test), model.num_patches, config.scored_fraction, config.masked_share, gen
    )
    hidden = model.pixel_mask(masked)

    with torch.no_grad():
        et_out = model.complete(test, masked)
    dynamics = et_out.trajectory
    mean_patch = model.patches(train_set.images).mean(0)  # (N, P): mean patch per position
    mean_fill = torch.where(hidden, model.images(mean_patch[None].expand(len(test), -1, -1)), test)
    beta, dense_fill, val_errors = dense_am_completion(train_set.images, test, hidden, seed)

    def masked_mse(completed: torch.Tensor) -> float:
        return float(((completed - test) ** 2)[hidden].mean())

    metrics = {
        "data": data,
        "test_images": len(test),
        "masked_patches_per_image": int(masked[0].sum()),
        "patches_per_image": model.num_patches,
        "masked_mse": {
            "energy_transformer": masked_mse(et_out.images),
            "mean_fill": masked_mse(mean_fill),
            "dense_am": masked_mse(dense_fill),
        },
        "dense_am_beta": beta,
        "dense_am_validation_mse": val_errors,
        "energy_per_step": dynamics.energies.mean(1).tolist(),
        "attention_energy_per_step": dynamics.parts["attention"].mean(1).tolist(),
        "hopfield_energy_per_step": dynamics.parts["hopfield"].mean(1).tolist(),
        "energy_never_rises": bool((dynamics.energies.diff(dim=0) <= 1e-4).all()),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        shown = slice(0, min(12, len(test)))
        image_grid(
            [
                ("original", test[shown]),
                ("masked", torch.where(hidden, 0.5, test)[shown]),
                ("ET", et_out.images[shown]),
                ("DenseAM", dense_fill[shown]),
                ("mean fill", mean_fill[shown]),
            ],
            test_set.shape,
            out / "completions.png",
            title="Masked patches (grey) completed by each method",
        )
        _energy_figure(dynamics, out / "energy.png")
        write_metrics(out / "metrics.json", metrics)
    return metrics


def dense_am_completion(
    train_images: torch.Tensor, test: torch.Tensor, hidden: torch.Tensor, seed: int
) -> tuple[float, torch.Tensor, dict[str, float]]:
    """Complete ``test`` (hidden pixels True in ``hidden``) with an LSE DenseAM of the
    training images; beta chosen on a validation tenth held out of the memory."""
    gen = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(train_images), generator=gen)
    n_val = max(1, len(order) // 10)
    val, memories = train_images[order[:n_val]], train_images[order[n_val:]]
    val_hidden = hidden[torch.randint(len(hidden), (n_val,), generator=gen)]
    mean = train_images.mean(0)

    def complete(am: DenseAM, x: torch.Tensor, hid: torch.Tensor) -> torch.Tensor:
        start = torch.where(hid, mean, x)
        return am.retrieve(start, method="attention", steps=100, tol=1e-6, clamp=~hid).states

    errors = {}
    for beta in BASELINE_BETAS:
        done = complete(DenseAM(memories, beta=beta), val, val_hidden)
        errors[str(beta)] = float(((done - val) ** 2)[val_hidden].mean())
    best = min(BASELINE_BETAS, key=lambda b: errors[str(b)])
    return best, complete(DenseAM(train_images, beta=best), test, hidden), errors


def _training_config(model_dir: Path) -> ETImageConfig:
    file = model_dir / "train.json"
    if not file.exists():
        return ETImageConfig()
    saved = read_json(file, "retrain or remove it")
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise AmlabError(f'{file} holds no "config" object; retrain or remove it.')
    return config_from_json(ETImageConfig, saved["config"], file)


def _energy_figure(dynamics: Trajectory, path: Path) -> None:
    steps = range(dynamics.energies.shape[0])
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    parts = dynamics.parts
    for ax, (name, values) in zip(
        axes,
        [
            ("total", dynamics.energies),
            ("attention", parts["attention"]),
            ("Hopfield", parts["hopfield"]),
        ],
        strict=True,
    ):
        mean = values.mean(1)
        ax.plot(steps, values[:, : min(20, values.shape[1])], color="0.8", linewidth=0.6)
        ax.plot(steps, mean, color="C0", linewidth=2, label="mean")
        ax.set_title(f"{name} energy")
        ax.set_xlabel("step t")
    axes[0].legend()
    fig.suptitle("Energy Transformer: energy along the dynamics (held-out masked images)")
    save_figure(fig, path)
