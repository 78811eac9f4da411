"""Training one ListOps model on one task mix (optionally after a pretraining mix).

:class:`RunSpec` is everything one run needs; :func:`train_run` makes the data (the same
splits for every model size and seed of a mix, drawn from ``data_seed``), builds the model
(initialised from ``seed``), trains it with :func:`amlab.training.train` and returns a
JSON-able record with the exact parameter count and the accuracy per root operation on
held-out expressions. Early stopping: every ``eval_every`` steps the validation accuracy
is measured; the run stops when it reaches ``stop_at`` or has not improved for
``patience`` evaluations.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from amlab.data.listops import (
    ListOpsConfig,
    Tokenizer,
    evaluate,
    make_splits,
    parse_ops,
    root_op,
)
from amlab.distributed.group import broadcast_json, is_main_process, torchrun_rank
from amlab.errors import AmlabError, check_positive_int
from amlab.io import atomic_write_text, read_json, write_metrics
from amlab.models.listops import (
    CausalListOpsTransformer,
    ListOpsTransformer,
    ListOpsTransformerConfig,
)
from amlab.training import OnStep, TrainConfig, latest_checkpoint, load_checkpoint, train


@dataclass(frozen=True)
class Encoded:
    """A split as tensors: tokens (N, L), values (N,), and each row's root operation."""

    expressions: list[str]
    tokens: torch.Tensor
    labels: torch.Tensor
    ops: list[str | None]

    def __len__(self) -> int:
        return len(self.expressions)


def encode(
    expressions: list[str], tokenizer: Tokenizer, length: int, causal: bool = False
) -> Encoded:
    """A split as tensors; ``causal``: each expression followed by ``=`` and its value."""
    texts = [tokenizer.with_value(e) for e in expressions] if causal else expressions
    return Encoded(
        expressions=expressions,
        tokens=tokenizer.encode(texts, length),
        labels=torch.tensor([evaluate(e, tokenizer.modulus) for e in expressions]),
        ops=[root_op(e) for e in expressions],
    )


def longest_expression(config: ListOpsConfig) -> int:
    """The most tokens an expression of ``config`` can have."""
    tokens = 1
    for _ in range(config.max_depth):
        tokens = 2 + config.max_args * tokens
        if config.max_length is not None and tokens >= config.max_length:
            return config.max_length
    return tokens


#: the data of the study's sweeps: short expressions (at most 2 nested operators with 2..3
#: arguments, at most 17 tokens) that models of a few thousand parameters can learn on CPU
STUDY_DATA = {"max_depth": 2, "max_args": 3, "leaf_prob": 0.75, "modulus": 10}


@dataclass(frozen=True)
class RunSpec:
    """One training run. ``ops``: the task mix; ``pretrain_ops``/``pretrain_steps``: an
    optional first phase on another mix (the curriculum); data settings are those of
    :class:`ListOpsConfig` besides ``ops``. ``causal``: a next-token model trained on each
    expression followed by ``=`` and its value, scored on the token it predicts after ``=``."""

    ops: tuple[str, ...] = ("sum",)
    dim: int = 32
    layers: int = 2
    heads: int = 2
    mlp_ratio: float = 2.0
    share_weights: bool = False
    seed: int = 0
    steps: int = 2000
    lr: float = 3e-3
    warmup: int = 100
    batch_size: int = 128
    weight_decay: float = 0.01
    eval_every: int = 100
    stop_at: float | None = None
    patience: int | None = None
    data: dict = field(default_factory=lambda: dict(STUDY_DATA))
    train_size: int = 20000
    val_size: int = 1000
    test_size: int = 2000
    data_seed: int = 0
    pretrain_ops: tuple[str, ...] | None = None
    pretrain_steps: int = 0
    causal: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", parse_ops(self.ops))
        if self.pretrain_ops is not None:
            object.__setattr__(self, "pretrain_ops", parse_ops(self.pretrain_ops))
            check_positive_int(self.pretrain_steps, "pretrain_steps")
        elif self.pretrain_steps != 0:
            raise AmlabError(
                f"pretrain_steps={self.pretrain_steps!r} would do nothing without pretrain_ops: "
                "give the mix to train on first, or leave pretrain_steps at 0."
            )
        for name in ("steps", "batch_size", "eval_every", "train_size", "val_size", "test_size"):
            check_positive_int(getattr(self, name), name)
        if self.stop_at is not None and not 0 < self.stop_at <= 1:
            raise AmlabError(f"stop_at must be an accuracy in (0, 1]; got {self.stop_at!r}.")
        if self.patience is not None:
            check_positive_int(self.patience, "patience")
        self.model_config()  # validates the data and model settings

    def data_config(self) -> ListOpsConfig:
        if "ops" in self.data:
            raise AmlabError("give the operations as ops=..., not inside data.")
        return ListOpsConfig(ops=self.ops, **self.data)

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.data_config().modulus, equals=self.causal)

    def model_config(self) -> ListOpsTransformerConfig:
        config = self.data_config()
        vocab = len(self.tokenizer())
        return ListOpsTransformerConfig(
            vocab_size=vocab,
            classes=vocab if self.causal else config.modulus,
            dim=self.dim,
            layers=self.layers,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            # the class token; a causal model's text adds '=' and the value
            max_len=longest_expression(config) + (3 if self.causal else 1),
            share_weights=self.share_weights,
            seed=self.seed,
        )

    def model_class(self) -> type[ListOpsTransformer]:
        return CausalListOpsTransformer if self.causal else ListOpsTransformer

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["ops"] = list(self.ops)
        d["pretrain_ops"] = None if self.pretrain_ops is None else list(self.pretrain_ops)
        if not self.causal:  # the records and checkpoints of classifiers stay as they were
            del d["causal"]
        return d

    def key(self) -> str:
        """A short readable name, unique within a sweep's grid."""
        mix = "+".join(self.ops)
        pre = "" if self.pretrain_ops is None else "+".join(self.pretrain_ops) + "-then-"
        shared = "-shared" if self.share_weights else ""
        causal = "-causal" if self.causal else ""
        return (
            f"{pre}{mix}_d{self.dim}_l{self.layers}_h{self.heads}_m{self.mlp_ratio:g}"
            f"{shared}{causal}_s{self.seed}"
        )


def make_data(spec: RunSpec, exclude: set[str] | None = None) -> dict[str, Encoded]:
    """train/val/test splits of ``spec``'s mix; ``exclude`` drops those expressions from
    train."""
    config = spec.data_config()
    sizes = {"test": spec.test_size, "val": spec.val_size, "train": spec.train_size}
    splits = make_splits(config, sizes, seed=spec.data_seed)
    if exclude:
        splits["train"] = [e for e in splits["train"] if e not in exclude]
    length = spec.model_config().max_len
    tokenizer = spec.tokenizer()
    return {name: encode(exprs, tokenizer, length, spec.causal) for name, exprs in splits.items()}


def predicted_values(logits: torch.Tensor, tokens: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B,) the value each row's model predicts, from its logits: the class token's argmax;
    a causal model's most likely token after ``=`` as a value (-1 where that token is not a
    value)."""
    if not causal:
        return logits.argmax(-1)
    equals = logits.shape[-1] - 1  # Tokenizer(equals=True) puts '=' last
    rows, cols = (tokens == equals).nonzero(as_tuple=True)
    if not torch.equal(rows, torch.arange(len(tokens))):
        raise AmlabError("every row of a causal model's text must hold one '='.")
    zero = Tokenizer(1).value_id(0)
    value = logits[rows, cols].argmax(-1) - zero
    return torch.where((value >= 0) & (value < equals - zero), value, -1)


def batch_loss(data: Encoded, batch_size: int):
    """The shared loop's loss: a batch drawn with replacement from ``generator``; a causal
    model's is the next token's cross-entropy at every position before padding."""

    def loss(model, step, generator):
        index = torch.randint(len(data), (batch_size,), generator=generator)
        tokens = data.tokens[index]
        logits = model(tokens)
        labels = data.labels[index]
        causal = model.causal
        if causal:
            value = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                tokens[:, 1:].reshape(-1),
                ignore_index=Tokenizer.PAD,
            )
        else:
            value = F.cross_entropy(logits, labels)
        right = predicted_values(logits, tokens, causal) == labels
        return value, {"accuracy": float(right.float().mean())}

    return loss


@torch.no_grad()
def accuracy(model: ListOpsTransformer, data: Encoded, batch: int = 2048) -> dict[str, Any]:
    """Accuracy on a split: overall and per root operation (a causal model's: of the value
    it predicts after ``=``)."""
    causal = model.causal
    right = torch.cat(
        [
            predicted_values(model(data.tokens[i : i + batch]), data.tokens[i : i + batch], causal)
            == data.labels[i : i + batch]
            for i in range(0, len(data), batch)
        ]
    )
    per_op: dict[str, float] = {}
    counts: dict[str, int] = {}
    for op in sorted({o for o in data.ops if o is not None}):
        mask = torch.tensor([o == op for o in data.ops])
        per_op[op] = float(right[mask].float().mean())
        counts[op] = int(mask.sum())
    return {"accuracy": float(right.float().mean()), "per_op": per_op, "count": counts}


def fit(
    model: ListOpsTransformer,
    data: dict[str, Encoded],
    spec: RunSpec,
    steps: int,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    on_step: OnStep | None = None,
) -> dict[str, Any]:
    """Train with the shared loop, evaluating on ``data["val"]`` for early stopping."""
    config = TrainConfig(
        steps=steps,
        lr=spec.lr,
        warmup=min(spec.warmup, steps),
        weight_decay=spec.weight_decay,
        checkpoint_every=spec.eval_every,
        seed=spec.seed,
    )
    done_file = None if out is None else Path(out) / "done.json"
    history_file = None if out is None else Path(out) / "history.json"
    writes = out is not None and is_main_process()  # (every rank reads them on resume)
    history: list[list] = []  # [step, validation accuracy]
    reason = "steps"
    describe = spec.describe()

    def is_check(done: int) -> bool:
        """Whether the validation accuracy is measured after ``done`` steps."""
        return done % spec.eval_every == 0 or done == steps

    def check(done: int) -> str | None:
        """Record the validation accuracy after ``done`` steps; the reason to stop, if any."""
        history.append([done, accuracy(model, data["val"])["accuracy"]])
        if writes:
            atomic_write_text(history_file, json.dumps(history))
        if spec.stop_at is not None and history[-1][1] >= spec.stop_at:
            return "stop_at"
        p = spec.patience
        if p is not None and len(history) > p:
            before = max(a for _, a in history[:-p])
            if max(a for _, a in history[-p:]) <= before + 1e-3:
                return "plateau"
        return None

    def hook(done: int, total: int, metrics: dict[str, float]) -> bool:
        nonlocal reason
        if on_step is not None:
            on_step(done, total, metrics)
        if is_check(done):
            reason = check(done) or reason
        return reason != "steps"

    latest = latest_checkpoint(out) if resume and out is not None else None
    if latest is not None:
        state = load_checkpoint(latest, model)
        # (a checkpoint of other settings: train refuses it below)
        if state["settings"]["describe"] == json.loads(json.dumps(describe)):
            if done_file.exists():
                # the phase ended before the kill (maybe early): its last checkpoint is
                # its end
                return read_json(done_file, "delete it to train the phase again")
            # early stopping goes on from the validation history up to the checkpoint,
            # as if the run had never been killed; a kill between the checkpoint and
            # its validation check loses that check, so it is redone on the checkpoint
            step = state["step"]
            saved = (
                read_json(history_file, "delete it to validate again")
                if history_file.exists()
                else []
            )
            if not isinstance(saved, list) or not all(
                isinstance(h, list) and len(h) == 2 and isinstance(h[0], int) for h in saved
            ):
                raise AmlabError(f"{history_file} is not a list of [step, accuracy] pairs.")
            history += [h for h in saved if h[0] <= step]
            if is_check(step) and step not in (h[0] for h in history):
                reason = check(step) or reason
    if reason == "steps":  # (a check redone on the checkpoint may already stop the run)
        train(
            model,
            batch_loss(data["train"], spec.batch_size),
            config,
            out,
            resume=resume,
            on_step=hook,
            describe=describe,
        )
        if torchrun_rank()[1] > 1:  # the checks ran on rank 0 (the loop calls hook there)
            device = next(model.parameters()).device
            history, reason = broadcast_json([history, reason], device)
    result = {
        "steps_done": history[-1][0] if history else steps,
        "stopped_by": reason,
        "val_history": history,
    }
    if writes:
        atomic_write_text(done_file, json.dumps(result))
    return result


def train_run(
    spec: RunSpec,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    on_step: OnStep | None = None,
    return_model: bool = False,
    model_dir: str | os.PathLike | None = None,
):
    """Train one run; returns its record (and the model when ``return_model``).

    With ``out`` the shared loop checkpoints into ``out/pretrain`` and ``out/train``, the
    final model is saved to ``out/model`` (or ``model_dir`` when given) and the record to
    ``out/metrics.json``; ``resume`` continues a killed run to the model the whole run would
    have given (the validation history that early stopping reads is kept in
    ``out/<phase>/history.json``). Under torchrun every rank trains and rank 0 alone writes;
    the validation checks run on rank 0 (in the training loop's ``on_step``), whose
    decision to stop every rank follows; at the end of each phase rank 0 sends its
    validation history and the reason it stopped to the others, so every rank returns the
    record rank 0 writes (``seconds`` aside).
    """
    started = time.time()
    model = spec.model_class()(spec.model_config())
    data = make_data(spec)
    record: dict[str, Any] = {"key": spec.key(), "spec": spec.describe()}
    phases = [("train", spec, data, spec.steps)]
    if spec.pretrain_ops is not None:
        pre_spec = replace(spec, ops=spec.pretrain_ops)
        held_out = set(data["test"].expressions) | set(data["val"].expressions)
        pre_data = make_data(pre_spec, exclude=held_out)
        phases.insert(0, ("pretrain", pre_spec, pre_data, spec.pretrain_steps))
    for name, phase_spec, phase_data, steps in phases:
        phase = fit(
            model,
            phase_data,
            phase_spec,
            steps,
            out=None if out is None else Path(out) / name,
            resume=resume,
            on_step=on_step,
        )
        if name == "pretrain":
            record["pretrain"] = {**phase, "test": accuracy(model, phase_data["test"])}
    test = accuracy(model, data["test"])
    record.update(
        {
            "parameters": model.num_parameters(),
            **phase,
            "test_accuracy": test["accuracy"],
            "test_per_op": test["per_op"],
            "test_count": test["count"],
            "seconds": round(time.time() - started, 2),
        }
    )
    if model_dir is None and out is not None:
        model_dir = Path(out) / "model"
    if is_main_process():
        if model_dir is not None:
            model.save(model_dir)
        if out is not None:
            write_metrics(Path(out) / "metrics.json", record)
    return (record, model) if return_model else record
