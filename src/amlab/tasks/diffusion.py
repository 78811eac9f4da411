"""The job behind ``amlab train diffusion``, and the training and sampling steps that the
diffusion reproduction shares with it: a learned denoiser trained through the shared loop
(:func:`train_denoiser`), the step schedule every denoiser here trains with, guided samples
and their nearest training images."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from amlab.data import load
from amlab.data.captions import VOCABULARY, CaptionScheme, tokenize
from amlab.diffusion import ConvDenoiser, Denoiser, TextConvDenoiser, VESchedule, sample
from amlab.diffusion.loss import denoising_loss
from amlab.diffusion.networks import LearnedDenoiser
from amlab.distributed.group import is_main_process
from amlab.energy.distances import nearest_memory
from amlab.errors import AmlabError
from amlab.io import model_hash, write_metrics
from amlab.tasks.figures import image_grid
from amlab.tasks.prompts import TextModel, TrainingRecipe, adherence, judge, save_recipe
from amlab.training import OnStep, TrainConfig, TrainResult, train


def train_denoiser(
    model: LearnedDenoiser,
    data: Any,
    config: TrainConfig,
    *,
    labels: Any = None,
    batch_size: int = 128,
    label_dropout: float = 0.1,
    log_normal: tuple[float, float] | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    on_step: OnStep | None = None,
    describe: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` through :func:`amlab.training.train` (checkpoints in out)."""
    loss = denoising_loss(
        data, labels, batch_size=batch_size, label_dropout=label_dropout, log_normal=log_normal
    )
    facts = {
        "model": type(model).__name__,
        "config": asdict(model.config),
        "data_shape": list(torch.as_tensor(data).shape),
        "batch_size": batch_size,
        "label_dropout": label_dropout,
        "log_normal": None if log_normal is None else list(log_normal),
        **(describe or {}),
    }
    return train(model, loss, config, out, resume=resume, on_step=on_step, describe=facts)


def denoiser_schedule(steps: int, seed: int, checkpoints: int) -> TrainConfig:
    """How every denoiser here trains: lr 3e-3, warm-up over a tenth of the steps (at most
    50), cosine decay to 5%, ``checkpoints`` checkpoints along the way."""
    return TrainConfig(
        steps=steps,
        lr=3e-3,
        warmup=min(50, steps // 10),
        final_lr_fraction=0.05,
        checkpoint_every=max(steps // checkpoints, 1),
        seed=seed,
    )


def draw_samples(
    denoiser: Denoiser,
    n: int,
    steps: int,
    seed: int,
    labels=None,
    guidance=1.0,
    method: str = "heun",
    start: torch.Tensor | None = None,
):
    """n samples: the sampler ``method`` (default the probability-flow ODE by Heun) from the
    prior down to sigma_min, then one last denoising step D(x, t_end) (the usual final step
    to sigma = 0). The prior's draw and then the SDE's noise come from one generator seeded
    with ``seed``; a given ``start`` (n, D) replaces the prior's draw (the SDE's noise still
    comes from that generator)."""
    g = torch.Generator().manual_seed(seed)
    schedule = denoiser.schedule
    if start is None:
        start = schedule.prior(n, denoiser.dim, g)
    elif tuple(start.shape) != (n, denoiser.dim):
        raise AmlabError(
            f"start must have shape ({n}, {denoiser.dim}), one state per sample; "
            f"got {tuple(start.shape)}."
        )
    score = denoiser.score_fn(labels, guidance)
    states = sample(score, schedule, start, steps=steps, method=method, generator=g).states
    with torch.no_grad():
        return denoiser.denoise(states, schedule.t_end, labels, guidance).detach()


def nearest_training(x: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (B,) of, and distance (B,) to, the nearest row of ``pool`` for each row of x."""
    return nearest_memory(x.float(), pool.float())


@dataclass(frozen=True)
class ImageDiffusionConfig:
    """What ``amlab train diffusion`` trains and samples: ``images`` training images of
    ``data``, a :class:`ConvDenoiser` of ``channels`` and ``blocks`` (energy-parameterised
    with ``energy``; prompted by the images' captions instead of their classes with ``text``,
    a :class:`TextConvDenoiser`), ``steps`` optimiser steps of ``batch_size`` images, then
    guided samples (scale ``guidance``, ``sampler_steps`` Heun steps)."""

    data: str = "digits"
    data_dir: str | None = None
    images: int = 1000
    steps: int = 2000
    batch_size: int = 64
    channels: int = 32
    blocks: int = 2
    energy: bool = False
    guidance: float = 2.0
    sampler_steps: int = 40
    seed: int = 0
    text: bool = False


def train_image_model(
    config: ImageDiffusionConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_step: OnStep | None = None,
) -> dict[str, Any]:
    """Train a class-conditional :class:`ConvDenoiser` as ``config`` says through the shared
    loop (checkpoints in ``out/checkpoints``; ``resume`` continues them), save it to
    ``out/model``, and write one guided sample per class to ``out/samples.png`` and the facts
    of the run to ``out/metrics.json``, with its quality: of 20 guided samples per class, the
    share whose nearest training image has the prompted class (``prompted_accuracy``), and
    their mean distance to that image.

    With ``config.text`` the net is a :class:`TextConvDenoiser` trained on each image's
    caption (:class:`~amlab.data.captions.CaptionScheme` fitted to the training set, saved
    with the model as ``captions.json``), and its quality is the adherence of 200 guided
    samples, prompted with captions of training images, per attribute against chance
    (:func:`amlab.tasks.prompts.adherence`).

    Under torchrun every rank trains (DDP, each on its own batches) and rank 0 alone saves,
    samples and writes; the other ranks return the facts of the training only."""
    data, images, seed = config.data, config.images, config.seed
    guidance, sampler_steps = config.guidance, config.sampler_steps
    dataset = load(data, config.data_dir, split="train")
    if images > len(dataset):
        raise AmlabError(
            f"--images {images} is more than the {len(dataset)} images of {data}; pass at "
            f"most {len(dataset)}."
        )
    train_set = dataset.subset(images, seed=seed)
    schedule = VESchedule(0.01, 10.0)
    net = {"channels": config.channels, "blocks": config.blocks, "energy": config.energy}
    if config.text:
        scheme = CaptionScheme.fit(train_set.images, train_set.shape)
        labels = tokenize(scheme.captions(train_set.images, train_set.shape, train_set.labels))
        model = TextConvDenoiser(
            train_set.shape, schedule, VOCABULARY, **net, sigma_data=0.4, seed=seed
        )
    else:
        labels = train_set.labels
        classes = int(train_set.labels.max()) + 1
        model = ConvDenoiser(
            train_set.shape, schedule, **net, num_classes=classes, sigma_data=0.4, seed=seed
        )
    out = Path(out)
    started = time.perf_counter()
    result = train_denoiser(
        model,
        train_set.images,
        denoiser_schedule(config.steps, seed, checkpoints=10),
        labels=labels,
        batch_size=config.batch_size,
        label_dropout=0.2,
        log_normal=(-1.2, 1.2),
        out=out / "checkpoints",
        resume=resume,
        on_step=on_step,
        describe={"data": data, "images": len(train_set), "seed": seed, "text": config.text},
    )
    train_seconds = time.perf_counter() - started
    model.eval()
    facts = {
        "data": data,
        "images": len(train_set),
        "steps": config.steps,
        "resumed_from": result.resumed_from,
        "final_loss": result.losses[-1],
        "train_seconds": train_seconds,  # this run's steps only (a resumed run's are not all)
        "energy": config.energy,
        "text": config.text,
        "guidance": guidance,
        "sampler_steps": sampler_steps,
    }
    if not is_main_process():  # a torchrun rank that trained alongside rank 0, which writes
        return facts
    model.save(out / "model")
    if config.text:
        recipe = TrainingRecipe(data, config.data_dir, images, seed, scheme.edges)
        save_recipe(out / "model", recipe)
        text_model = TextModel(model, recipe, train_set, out / "model", model_hash(out / "model"))
        metrics = {**facts, **_text_quality(text_model, labels, config, out)}
        write_metrics(out / "metrics.json", metrics)
        return metrics
    classes = torch.arange(model.num_classes)
    samples = draw_samples(model, len(classes), sampler_steps, seed + 1, classes, guidance)
    image_grid(
        [(f"w={guidance:g}", samples)],
        train_set.shape,
        out / "samples.png",
        title="one guided sample per class",
    )
    # quality: prompted samples counted as their class when the nearest training image has it
    per_class = 20
    prompts = classes.repeat_interleave(per_class)
    prompted = draw_samples(model, len(prompts), sampler_steps, seed + 2, prompts, guidance)
    nearest, distance = nearest_training(prompted, train_set.images)
    metrics = {
        **facts,
        "prompted_accuracy": (train_set.labels[nearest] == prompts).float().mean().item(),
        "prompted_samples": len(prompts),
        "mean_nearest_distance": distance.mean().item(),
        "model": str(out / "model"),
        "samples": str(out / "samples.png"),
    }
    write_metrics(out / "metrics.json", metrics)
    return metrics


def _text_quality(
    model: TextModel, tokens: torch.Tensor, config: ImageDiffusionConfig, out: Path
) -> dict[str, Any]:
    """Guided samples of a text model prompted with 200 captions of training images (drawn
    with the run's seed): their adherence per attribute against chance, and a figure of the
    first ten (``out/samples.png``)."""
    train = model.train
    g = torch.Generator().manual_seed(config.seed + 2)
    chosen = torch.randint(len(train), (200,), generator=g)
    prompts = model.scheme.captions(train.images[chosen], train.shape, train.labels[chosen])
    samples = draw_samples(
        model.network,
        len(prompts),
        config.sampler_steps,
        config.seed + 2,
        tokens[chosen],
        config.guidance,
    )
    table = adherence(prompts, judge(samples, prompts, model), model)
    image_grid(
        [(f"w={config.guidance:g}", samples[:10])],
        train.shape,
        out / "samples.png",
        title="; ".join(prompts[:10]),
    )
    return {
        "adherence": table,
        "prompted_samples": len(prompts),
        "model": str(out / "model"),
        "samples": str(out / "samples.png"),
    }
