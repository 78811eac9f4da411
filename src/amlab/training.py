"""The one training loop every learned model in amlab uses.

``train(model, loss, config, out=...)`` runs AdamW with linear warm-up and cosine decay,
clips the gradient norm, reports each step to a callback (the CLI draws a progress bar
from it), and writes a checkpoint every ``checkpoint_every`` steps. With ``resume=True``
it continues from the latest checkpoint in ``out`` and reaches exactly the weights an
uninterrupted run would have reached:

- all randomness of a step (which examples, which patches are masked, ...) comes from
  ``step_generator(seed, step, rank)``, a generator seeded by the step number, so a
  resumed run draws the same batches as the original did;
- a checkpoint holds the model, the optimizer's moments and the loss history; the
  learning rate is a pure function of the step.

A checkpoint is a directory ``out/checkpoint-<step>/`` with ``model.safetensors``,
``optimizer.safetensors`` and ``state.json``; ``out/latest`` names the newest complete
one and is replaced atomically only after that directory is fully written, so a crash
at any moment leaves a loadable checkpoint. Nothing is ever unpickled. Ctrl-C writes a
checkpoint of the last finished step before it stops.

Distributed: when launched by ``torchrun`` with more than one process (``WORLD_SIZE`` >
1) the loop joins the process group (NCCL for a model on CUDA, gloo on CPU; on GPUs build
each rank's model on ``cuda:LOCAL_RANK``) and trains through
``torch.nn.parallel.DistributedDataParallel``: its construction starts every rank from
rank 0's weights and buffers, each rank draws its own batches (the generator also depends
on the rank), and the backward pass averages the gradients over the ranks (a sum divided
by the world size), so P ranks take the steps one process would take on the mean of the P
ranks' losses. That mean is the loss each step records (one all-reduce of one number a
step), on every rank: in the result, the checkpoints and ``on_step``'s ``"loss"`` (other
metrics are each rank's own), so a step whose loss is not finite on some rank stops every rank
with the same error. Only rank 0 calls ``on_step`` and writes checkpoints, of the model
itself (no ``module.`` prefix): a checkpoint of a distributed run loads in one process and
the other way round. What a task writes besides, it writes where
:func:`amlab.distributed.group.is_main_process` (rank 0 under torchrun). Any loss
function works unchanged: DDP averages only gradients of a backward through its own
forward, so the wrapped module is the loss (:class:`LossOfModel`), whose forward calls
``loss(model, step, generator)`` with the bare model. On one process it runs as is.

``find_unused_parameters=True``: a loss may leave some parameters without a gradient at
some steps on some ranks (a head or a branch the batch does not reach, a part of the model
a loss does not train), which DDP refuses at the next step without it. With it, a parameter
unused on one rank gets the other ranks' gradients averaged with zero there, and one unused
on every rank keeps no gradient, so AdamW leaves it and its moments alone as one process
would. It costs one walk over the autograd graph per step, small beside the backward pass.
It also keeps DDP's gradient buckets in their first layout for the whole run (without it
DDP lays them out anew after a run's first step, and a resumed run's first step would then
use another layout than the original run used at that step; with three or more ranks the
order in which an all-reduce adds the ranks' numbers can depend on where they lie in a
bucket), so a resumed run sums every gradient as the run it continues did, bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from amlab.errors import AmlabError, check_positive, check_positive_int
from amlab.io import (
    atomic_write_text,
    check_finite,
    check_regular_file,
    former_layout,
    jsonable,
    layout_mismatch,
    read_json,
    read_tensors,
)

#: loss(model, step, generator) -> loss tensor, or (loss tensor, {metric: float})
LossFn = Callable[[nn.Module, int, torch.Generator], "torch.Tensor | tuple[torch.Tensor, dict]"]
#: on_step(step done, total steps, {"loss": ..., "lr": ..., other metrics}); True stops the run
OnStep = Callable[[int, int, dict[str, float]], bool | None]

LATEST_FILE = "latest"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train`.

    steps: optimizer steps in all. lr: peak learning rate, reached after ``warmup``
    linear steps, then cosine decay to ``lr * final_lr_fraction``. weight_decay: AdamW's
    decoupled decay, applied to matrices only (tensors with two or more axes), never to
    biases, norms' scales or scalars. clip: largest gradient norm (None: no clipping).
    checkpoint_every: steps between checkpoints (the last step is always saved).
    """

    steps: int = 1000
    lr: float = 1e-3
    warmup: int = 0
    final_lr_fraction: float = 0.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float | None = 1.0
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int(self.steps, "steps")
        check_positive(self.lr, "lr")
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        if not isinstance(self.warmup, int) or not 0 <= self.warmup <= self.steps:
            raise AmlabError(f"warmup must be an integer in [0, steps]; got {self.warmup!r}.")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise AmlabError(
                f"final_lr_fraction must lie in [0, 1]; got {self.final_lr_fraction!r}."
            )
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise AmlabError(f"weight_decay must be >= 0; got {self.weight_decay!r}.")
        if self.clip is not None:
            check_positive(self.clip, "clip")

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        span = max(self.steps - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        floor = self.lr * self.final_lr_fraction
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    """What :func:`train` returns: the steps asked for, one loss per step done (including
    the steps a resumed run inherited; under torchrun the mean over the ranks, the same on
    every rank), the last step's metrics, the step resumed from,
    and the step at which ``on_step`` stopped the run (None: it ran all its steps)."""

    steps: int
    losses: list[float]
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    stopped_at: int | None = None


class LossOfModel(nn.Module):
    """A loss function as a module: ``forward(step, generator)`` returns
    ``loss(model, step, generator)``. DistributedDataParallel wraps this module, not the
    model, so that a loss may call any of the model's methods (DDP averages the gradients
    of a backward through its own forward only), and the model is its submodule, so the
    parameters DDP averages are the model's."""

    def __init__(self, model: nn.Module, loss: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, step: int, generator: torch.Generator):
        return self.loss(self.model, step, generator)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The random generator of one training step: depends only on (seed, step, rank)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + step) * 1_009 + rank)


def train(
    model: nn.Module,
    loss: LossFn,
    config: TrainConfig,
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    on_step: OnStep | None = None,
    describe: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``loss`` for ``config.steps`` steps; see the module docstring.

    Args:
        model: the module; its parameters are trained in place.
        loss: ``loss(model, step, generator)`` returns the loss of one step (a scalar
            tensor), or ``(loss, metrics)``; draw all randomness from ``generator``.
        config: the hyperparameters.
        out: directory for checkpoints (None: none are written).
        resume: continue from the latest checkpoint in ``out`` (a fresh start if there
            is none). Without it, an ``out`` that already holds a checkpoint is an error,
            so no run is overwritten by accident.
        on_step: called after every step with (step done, total, metrics); a true return
            value stops the run there (after a checkpoint of that step, with ``out``).
        describe: JSON-able facts about the run (model and data settings); stored with
            each checkpoint and compared on resume, so a run is never continued with
            different settings.
    """
    rank, world = _join_process_group(model)
    out = None if out is None else Path(out)
    describe = json.loads(json.dumps(describe or {}))
    settings = {"train": jsonable(asdict(config)), "describe": describe, "world_size": world}
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AmlabError("the model has no trainable parameters.")
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=config.betas,
    )
    losses: list[float] = []
    start = 0
    latest = None if out is None else latest_checkpoint(out)
    if latest is not None and not resume:
        raise AmlabError(
            f"{out} already holds a checkpoint ({latest.name}); pass resume=True (--resume) "
            "to continue it, or choose another output directory."
        )
    if latest is not None:
        state = load_checkpoint(latest, model, optimizer)
        if state["settings"] != settings:
            raise AmlabError(
                f"the checkpoint in {latest} was written with other settings than this run; "
                f"it has {state['settings']}, this run has {settings}. Resume with the "
                "same settings, or choose another output directory."
            )
        start, losses = state["step"], state["losses"]
    resumed_from = start if latest is not None else None
    step_loss: nn.Module = LossOfModel(model, loss)
    if world > 1:
        _check_same_start(start, rank, out, params[0].device)
        # its construction broadcasts rank 0's parameters and buffers to every rank
        step_loss = DistributedDataParallel(step_loss, find_unused_parameters=True)

    metrics: dict[str, float] = {}
    stopped_at = None
    try:
        for step in range(start, config.steps):
            lr = config.learning_rate(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            value = step_loss(step, step_generator(config.seed, step, rank))
            value, extra = value if isinstance(value, tuple) else (value, {})
            if not (isinstance(value, torch.Tensor) and value.ndim == 0):
                raise AmlabError("the loss function must return a scalar tensor.")
            loss_value = float(value.detach())
            if world > 1:  # the step's loss: the mean of the ranks' own, on every rank
                loss_value = _mean_over_ranks(loss_value, world, params[0].device)
            if not math.isfinite(loss_value):  # (on every rank at once: the mean is shared)
                raise AmlabError(
                    f"the loss became {loss_value} at step {step}"
                    f"{' (the mean over the ranks)' if world > 1 else ''}; lower the learning "
                    "rate or check the data."
                )
            value.backward()  # under DDP, the gradients arrive averaged over the ranks
            if config.clip is not None:
                torch.nn.utils.clip_grad_norm_(params, config.clip)
            optimizer.step()
            losses.append(loss_value)
            metrics = {"loss": losses[-1], "lr": lr, **{k: float(v) for k, v in extra.items()}}
            done = step + 1
            checkpoint = done % config.checkpoint_every == 0 or done == config.steps
            if out is not None and rank == 0 and checkpoint:
                save_checkpoint(out, done, model, optimizer, losses, settings)
            stop = on_step is not None and rank == 0 and bool(on_step(done, config.steps, metrics))
            if world > 1:  # rank 0 decides; every rank stops at the same step
                stop = _broadcast_flag(stop, params[0].device)
            if stop:
                if out is not None and rank == 0 and not checkpoint:
                    save_checkpoint(out, done, model, optimizer, losses, settings)
                stopped_at = done
                break
    except KeyboardInterrupt:
        if out is not None and rank == 0 and len(losses) > start:
            save_checkpoint(out, len(losses), model, optimizer, losses, settings)
        raise
    return TrainResult(
        steps=config.steps,
        losses=losses,
        metrics=metrics,
        resumed_from=resumed_from,
        stopped_at=stopped_at,
    )


# -- checkpoints ---------------------------------------------------------------------------
def save_checkpoint(
    out: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    losses: list[float],
    settings: dict[str, Any],
) -> Path:
    """Write checkpoint-<step>/ in ``out``, then point ``out/latest`` at it, then delete
    older checkpoints. Returns the checkpoint directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"checkpoint-{step:08d}"
    if target.exists():
        shutil.rmtree(target)
    partial = out / f".{target.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
        str(partial / MODEL_FILE),
    )
    opt_tensors, opt_groups = _flatten_optimizer(optimizer)
    save_file(opt_tensors, str(partial / OPTIMIZER_FILE))
    state = {"step": step, "losses": losses, "settings": settings, "param_groups": opt_groups}
    (partial / STATE_FILE).write_text(json.dumps(state) + "\n")
    os.replace(partial, target)
    atomic_write_text(out / LATEST_FILE, target.name + "\n")
    for old in out.glob("checkpoint-*"):
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The checkpoint directory ``out/latest`` names, or None when there is none."""
    pointer = Path(out) / LATEST_FILE
    if not pointer.exists():
        return None
    check_regular_file(pointer, "delete it to start afresh")
    try:
        with open(pointer, "rb") as f:
            name = f.read(256).decode().strip()  # a name is short: read no more
    except (OSError, UnicodeDecodeError):
        name = "(unreadable)"
    if not name.startswith("checkpoint-") or "/" in name or not (Path(out) / name).is_dir():
        raise AmlabError(
            f"{pointer} names {name!r}, which is not a checkpoint directory in {out}; "
            "delete the file to start afresh."
        )
    return Path(out) / name


_RESTART = "delete the checkpoint to start afresh"


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load a checkpoint directory into ``model`` (and ``optimizer``); return its state
    (step, losses, settings). Missing, truncated, corrupt or tampered files raise AmlabError:
    the state must hold a step in 1..the run's steps with one finite loss per step, and the
    tensors must be the model's (and its optimizer's) in name, shape and dtype, all finite."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.exists():
        raise AmlabError(f"{state_file} is missing; {path} is not a checkpoint.")
    state = _checked_state(read_json(state_file, _RESTART), state_file)
    tensors = _read_safetensors(path / MODEL_FILE)
    own = model.state_dict()
    mismatch = layout_mismatch(own, tensors, "this model")
    if mismatch is not None:
        change = former_layout(type(model), own, tensors)
        if change is not None:  # the same settings, but a network of before a change
            raise AmlabError(
                f"{path / MODEL_FILE} holds a {type(model).__name__} of an earlier layout "
                f"({change}): this version cannot resume it; {_RESTART}."
            )
        raise AmlabError(
            f"{path / MODEL_FILE} does not fit this model ({mismatch}); resume with the same "
            "model settings."
        )
    check_finite(tensors, path / MODEL_FILE, _RESTART)
    model.load_state_dict(tensors)
    if optimizer is not None:
        _load_optimizer(optimizer, path / OPTIMIZER_FILE, state["param_groups"])
    return {k: state[k] for k in ("step", "losses", "settings")}


def _checked_state(state: Any, file: Path) -> dict[str, Any]:
    """The content of a checkpoint's state.json, checked: exactly the keys save_checkpoint
    writes; step an int in 1..settings.train.steps (the run's length); one finite loss per
    step; settings and param_groups of the right kinds."""

    def refuse(problem: str) -> AmlabError:
        return AmlabError(f"{file} is corrupt ({problem}); {_RESTART}.")

    keys = {"step", "losses", "settings", "param_groups"}
    if not isinstance(state, dict) or set(state) != keys:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise refuse(f"it must hold exactly the keys {sorted(keys)}; found {found}")
    step, losses, settings = state["step"], state["losses"], state["settings"]
    run = settings.get("train") if isinstance(settings, dict) else None
    length = run.get("steps") if isinstance(run, dict) else None
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise refuse("settings.train.steps, the run's length, must be an int >= 1")
    if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= length:
        raise refuse(f"step must be an int from 1 to the run's {length} steps; got {step!r}")
    if not isinstance(losses, list) or len(losses) != step:
        raise refuse(f"losses must be a list of one loss per step ({step}) ")
    for v in losses:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise refuse(f"losses must be finite numbers; found {v!r}")
    groups = state["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise refuse("param_groups must be a list of objects")
    return {**state, "losses": [float(v) for v in losses]}


def _load_optimizer(optimizer: torch.optim.Optimizer, file: Path, groups: list) -> None:
    """Load the optimizer state in ``file`` with the JSON ``groups``, both checked against the
    optimizer's own: the groups' keys, parameters and value types; per parameter, one entry
    of the same names as every other's, each tensor finite and (unless a scalar, as Adam's
    step) of its parameter's shape and dtype."""

    def refuse(problem: str) -> AmlabError:
        return AmlabError(f"{file} does not fit this model's optimizer ({problem}); {_RESTART}.")

    own_groups = optimizer.state_dict()["param_groups"]
    if len(groups) != len(own_groups):
        raise refuse(f"{len(groups)} parameter groups, not {len(own_groups)}")
    for group, own in zip(groups, own_groups, strict=True):
        if set(group) != set(own) or group["params"] != own["params"]:
            raise refuse(f"a parameter group holds {sorted(group)}, not {sorted(own)}")
        for key, value in own.items():
            if not _same_kind(group[key], value):
                raise refuse(f"a parameter group's {key} is {group[key]!r}, not like {value!r}")
    tensors = _read_safetensors(file)
    check_finite(tensors, file, _RESTART)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    entries: dict[int, set[str]] = {}
    for key, t in tensors.items():
        index, _, name = key.partition(".")
        if not index.isdigit() or int(index) >= len(params) or not name:
            raise refuse(f"a tensor named {key!r}, not <parameter index>.<name>")
        param = params[int(index)]
        if t.ndim and (t.shape != param.shape or t.dtype != param.dtype):
            raise refuse(
                f"{key} is {tuple(t.shape)} {t.dtype} for a parameter {tuple(param.shape)} "
                f"{param.dtype}"
            )
        if not t.is_floating_point():
            raise refuse(f"{key} is {t.dtype}")
        entries.setdefault(int(index), set()).add(name)
    if len({frozenset(names) for names in entries.values()}) > 1:
        raise refuse("the parameters' entries hold different names")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, groups))


def _same_kind(value: Any, own: Any) -> bool:
    """Whether ``value`` read from JSON is of the kind of the optimizer's own ``own`` (a float
    takes an int; a tuple is a list of as many of the same kinds)."""
    if isinstance(own, bool) or own is None:
        return value is own or (isinstance(own, bool) and isinstance(value, bool))
    if isinstance(own, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(own, (tuple, list)):
        return (
            isinstance(value, list)
            and len(value) == len(own)
            and all(_same_kind(v, o) for v, o in zip(value, own, strict=True))
        )
    return type(value) is type(own)


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.exists():
        raise AmlabError(f"{file} is missing; the checkpoint is incomplete.")
    return read_tensors(file, _RESTART)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, list]:
    """An optimizer's state as flat tensors ("<param index>.<name>") and JSON groups."""
    sd = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": (value if isinstance(value, torch.Tensor) else torch.tensor(value))
        .detach()
        .contiguous()
        .cpu()
        for index, entry in sd["state"].items()
        for name, value in entry.items()
    }
    return tensors, jsonable(sd["param_groups"])


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# -- distributed ---------------------------------------------------------------------------
#: How long a rank waits for the others in a collective: long enough for rank 0 to write a
#: large checkpoint while the others wait for its decision to stop or go on.
TIMEOUT_S = 1800.0


def _join_process_group(model: nn.Module) -> tuple[int, int]:
    """(rank, world size) in the default process group when torchrun started several
    processes, which joins it unless the caller has (NCCL for a model on CUDA, gloo
    otherwise); (0, 1), one process, when it did not. The group stays joined for the
    caller's further runs; the caller leaves it (:func:`amlab.distributed.leave_group`),
    as every amlab command does when it ends."""
    import torch.distributed as dist

    from amlab.distributed.group import init_group, torchrun_rank

    if torchrun_rank()[1] == 1:
        return 0, 1
    if not dist.is_initialized():
        on_cuda = any(p.is_cuda for p in model.parameters())
        init_group(backend="nccl" if on_cuda else "gloo", timeout_s=TIMEOUT_S)
    return dist.get_rank(), dist.get_world_size()


def _check_same_start(start: int, rank: int, out: Path | None, device: torch.device) -> None:
    """Refuse a resume where the ranks found different checkpoints (each reads ``out``:
    on several machines it must be a directory every one of them sees). ``device``: where
    the collective's tensors live (the model's: NCCL sends CUDA tensors only)."""
    from amlab.distributed.group import all_gather

    starts = [int(t) for t in all_gather(torch.tensor([start], device=device), None)]
    if any(s != starts[0] for s in starts):
        raise AmlabError(
            f"the ranks resume from different steps ({starts}, in rank order; this is rank "
            f"{rank}): each rank reads the checkpoints in {out}, so on several machines it "
            "must be a directory every machine sees (a shared filesystem)."
        )


def _mean_over_ranks(value: float, world: int, device: torch.device) -> float:
    """The mean of every rank's ``value``: one all-reduce of one float64 number (exact for two
    ranks: (a + b) / 2 as one process would compute it)."""
    from amlab.distributed.group import all_reduce_

    total = all_reduce_(torch.tensor([value], dtype=torch.float64, device=device), "sum", None)
    return float(total.item()) / world


def _broadcast_flag(flag: bool, device: torch.device) -> bool:
    from amlab.distributed.group import broadcast_

    return bool(broadcast_(torch.tensor([int(flag)], device=device), 0, None).item())
