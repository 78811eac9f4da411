"""The shared training loop: exact resume, atomic checkpoints, clear errors, torchrun."""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import pytest
import torch
from ranks import launch
from torch import nn

from amlab.errors import AmlabError
from amlab.training import (
    TrainConfig,
    latest_checkpoint,
    load_checkpoint,
    step_generator,
    train,
)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


TARGET = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def regression_loss(model: nn.Module, step: int, gen: torch.Generator):
    x = torch.randn(8, 4, generator=gen)
    y = x @ TARGET
    loss = ((model(x) - y) ** 2).mean()
    return loss, {"mse": float(loss.detach())}


CONFIG = TrainConfig(steps=20, lr=1e-2, warmup=3, checkpoint_every=5, seed=7, clip=1.0)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb), ka


def assert_same_weights_dict(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Kill(Exception):
    pass


def killed_at(step: int, kind=KeyboardInterrupt):
    def on_step(done, total, metrics):
        if done == step:
            raise kind()

    return on_step


def test_learning_rate_warmup_then_cosine():
    cfg = TrainConfig(steps=100, lr=1.0, warmup=10, final_lr_fraction=0.1)
    assert cfg.learning_rate(0) == pytest.approx(0.1)
    assert cfg.learning_rate(9) == pytest.approx(1.0)
    assert cfg.learning_rate(10) == pytest.approx(1.0)
    assert cfg.learning_rate(55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cfg.learning_rate(100) == pytest.approx(0.1)
    rates = [cfg.learning_rate(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


def test_training_lowers_the_loss_and_reports_every_step(tmp_path):
    model = make_model()
    seen = []
    result = train(model, regression_loss, CONFIG, tmp_path, on_step=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == list(range(1, 21))
    assert len(result.losses) == 20 and result.resumed_from is None
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert set(seen[-1][2]) == {"loss", "lr", "mse"}
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000020"
    assert len(list(tmp_path.glob("checkpoint-*"))) == 1  # older ones deleted


def test_step_generator_depends_on_seed_step_and_rank():
    draws = {
        key: torch.rand(3, generator=step_generator(*key)).tolist()
        for key in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (0, 0, 1)]
    }
    assert len({tuple(v) for v in draws.values()}) == 4
    assert torch.rand(3, generator=step_generator(0, 1, 0)).tolist() == draws[(0, 1, 0)]


@pytest.mark.parametrize("kill_at,kind,resumes_from", [(12, KeyboardInterrupt, 12), (13, Kill, 10)])
def test_killed_and_resumed_run_reaches_the_same_weights(tmp_path, kill_at, kind, resumes_from):
    reference = make_model()
    full = train(reference, regression_loss, CONFIG, tmp_path / "full")

    model = make_model()
    with pytest.raises(kind):
        train(model, regression_loss, CONFIG, tmp_path / "run", on_step=killed_at(kill_at, kind))
    # Ctrl-C saves the step it stopped at; a crash leaves the last periodic checkpoint.
    assert latest_checkpoint(tmp_path / "run").name == f"checkpoint-{resumes_from:08d}"

    resumed_model = make_model()  # a fresh process: weights start from scratch
    resumed = train(resumed_model, regression_loss, CONFIG, tmp_path / "run", resume=True)
    assert resumed.resumed_from == resumes_from
    assert_same_weights(reference, resumed_model)
    assert resumed.losses == full.losses


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    a, b = make_model(), make_model()
    train(a, regression_loss, CONFIG, tmp_path / "a")
    result = train(b, regression_loss, CONFIG, tmp_path / "b", resume=True)
    assert result.resumed_from is None
    assert_same_weights(a, b)


def test_an_existing_run_is_never_overwritten_without_resume(tmp_path):
    train(make_model(), regression_loss, CONFIG, tmp_path)
    with pytest.raises(AmlabError, match="already holds a checkpoint"):
        train(make_model(), regression_loss, CONFIG, tmp_path)


def test_resume_with_other_settings_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(make_model(), regression_loss, CONFIG, tmp_path, on_step=killed_at(4))
    other = TrainConfig(steps=20, lr=5e-3, warmup=3, checkpoint_every=5, seed=7)
    with pytest.raises(AmlabError, match="other settings"):
        train(make_model(), regression_loss, other, tmp_path, resume=True)
    with pytest.raises(AmlabError, match="other settings"):
        train(make_model(), regression_loss, CONFIG, tmp_path, resume=True, describe={"d": 1})


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    """A crash while writing leaves only a .partial directory; latest still points at the
    previous complete checkpoint."""
    with pytest.raises(Kill):
        train(make_model(), regression_loss, CONFIG, tmp_path, on_step=killed_at(7, Kill))
    partial = tmp_path / ".checkpoint-00000010.partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    model = make_model()
    result = train(model, regression_loss, CONFIG, tmp_path, resume=True)
    assert result.resumed_from == 5
    reference = make_model()
    train(reference, regression_loss, CONFIG, tmp_path / "ref")
    assert_same_weights(model, reference)


def corrupt_truncated_model(ckpt: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])


def corrupt_garbage_model(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(os.urandom(200))


def corrupt_truncated_optimizer(ckpt: Path) -> None:
    data = (ckpt / "optimizer.safetensors").read_bytes()
    (ckpt / "optimizer.safetensors").write_bytes(data[:40])


def corrupt_state_json(ckpt: Path) -> None:
    text = (ckpt / "state.json").read_text()
    (ckpt / "state.json").write_text(text[: len(text) // 2])


def corrupt_state_fields(ckpt: Path) -> None:
    (ckpt / "state.json").write_text(json.dumps({"step": 5}))


def remove_optimizer(ckpt: Path) -> None:
    (ckpt / "optimizer.safetensors").unlink()


def point_latest_elsewhere(ckpt: Path) -> None:
    (ckpt.parent / "latest").write_text("checkpoint-99999999\n")


@pytest.mark.parametrize(
    "damage",
    [
        corrupt_truncated_model,
        corrupt_garbage_model,
        corrupt_truncated_optimizer,
        corrupt_state_json,
        corrupt_state_fields,
        remove_optimizer,
        point_latest_elsewhere,
    ],
)
def test_damaged_checkpoints_give_a_clear_error(tmp_path, damage):
    train(make_model(), regression_loss, TrainConfig(steps=5, checkpoint_every=5), tmp_path)
    damage(latest_checkpoint(tmp_path))
    with pytest.raises(AmlabError):
        train(
            make_model(),
            regression_loss,
            TrainConfig(steps=8, checkpoint_every=5),
            tmp_path,
            resume=True,
        )


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    train(make_model(), regression_loss, CONFIG, tmp_path)
    with pytest.raises(AmlabError, match="does not fit"):
        load_checkpoint(latest_checkpoint(tmp_path), nn.Linear(4, 1))


def test_bad_settings_and_bad_losses_are_refused(tmp_path):
    for bad in [dict(steps=0), dict(lr=-1.0), dict(warmup=50, steps=10), dict(clip=0.0)]:
        with pytest.raises(AmlabError):
            TrainConfig(**bad)
    with pytest.raises(AmlabError, match="scalar"):
        train(make_model(), lambda m, s, g: m(torch.ones(3, 4)), TrainConfig(steps=2))

    def exploding(model, step, gen):
        return model(torch.ones(1, 4)).sum() * math.inf

    with pytest.raises(AmlabError, match="became"):
        train(make_model(), exploding, TrainConfig(steps=2))
    with pytest.raises(AmlabError, match="no trainable"):
        train(nn.ReLU(), regression_loss, TrainConfig(steps=2))


TORCHRUN_SCRIPT = """
import os, signal, sys, torch
from torch import nn
from amlab.distributed import leave_group
from amlab.training import TrainConfig, latest_checkpoint, load_checkpoint, step_generator, train

prefix, world, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def done():  # train() joined the process group; a script leaves it when it is done
    leave_group()
    sys.exit()

rank = int(os.environ.get("RANK", "0"))
TARGET = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
PARTIAL = mode.startswith("partial")

class TwoHeads(nn.Module):
    # a body and two heads: a step's loss uses one, chosen by the step and the rank
    def __init__(self):
        super().__init__()
        self.body, self.a, self.b = nn.Linear(4, 16), nn.Linear(16, 1), nn.Linear(16, 1)

    def predict(self, x, head):  # not forward: a loss may call any method of the model
        return getattr(self, head)(torch.tanh(self.body(x)))

def head(step, r):  # b on rank 0 at steps 2, 5, on rank 1 at steps 1, 4, on none at 0, 3
    return "b" if (step + r) % 3 == 2 else "a"

def batch_loss(model, step, r, gen):
    x = torch.randn(8, 4, generator=gen)
    pred = model.predict(x, head(step, r)) if PARTIAL else model(x)
    return ((pred - x @ TARGET) ** 2).mean()

own_losses = []  # this rank's own loss at each step

def per_rank(model, step, gen):
    value = batch_loss(model, step, rank, gen)
    own_losses.append(float(value.detach()))
    return value

def all_ranks_in_one(model, step, gen):
    return sum(batch_loss(model, step, r, step_generator(3, step, r)) for r in range(world)) / world

def make_model():
    torch.manual_seed(0)
    model = TwoHeads() if PARTIAL else nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    if rank != 0:
        # every rank but 0 starts elsewhere: the loop must broadcast rank 0's weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    return model

model = make_model()
cfg = TrainConfig(steps=6, lr=1e-2, seed=3)
if mode == "stop":  # rank 0 alone decides to stop after step 4
    result = train(model, per_rank, cfg, prefix + "-ckpt",
                   on_step=lambda done, total, metrics: done == 4)
    torch.save({"stopped_at": result.stopped_at, "steps_done": len(result.losses)},
               prefix + "-stop-" + os.environ["RANK"] + ".pt")
    done()
cfg_ckpt = TrainConfig(steps=6, lr=1e-2, seed=3, checkpoint_every=2)
if mode == "crash":  # a run that goes through, then one whose rank 0 is killed at step 3
    result = train(model, per_rank, cfg_ckpt)
    torch.save({"state": model.state_dict(), "losses": result.losses},
               f"{prefix}-full-{rank}.pt")

    def die(done, total, metrics):
        if done == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    train(make_model(), per_rank, cfg_ckpt, prefix + "-run", on_step=die)
    done()
if mode == "resume":  # the killed run resumed; and a checkpoint of one process loaded
    result = train(model, per_rank, cfg_ckpt, prefix + "-run", resume=True)
    one = make_model()
    load_checkpoint(latest_checkpoint(prefix + "-one"), one)
    torch.save({"state": model.state_dict(), "losses": result.losses,
                "resumed_from": result.resumed_from, "one": one.state_dict()},
               f"{prefix}-resume-{rank}.pt")
    done()
result = train(model, per_rank if mode in ("ddp", "partial") else all_ranks_in_one, cfg)
torch.save({k: v for k, v in model.state_dict().items()}, f"{prefix}-{mode}-{rank}.pt")
torch.save({"losses": result.losses, "own": own_losses}, f"{prefix}-{mode}-losses-{rank}.pt")
done()
"""


def run_torchrun_script(tmp_path: Path, mode: str, torchrun: bool = True, succeeds=True) -> str:
    """Run TORCHRUN_SCRIPT in ``mode``: under torchrun as two gloo ranks, or with
    ``torchrun=False`` as one plain process; returns the prefix of the files it writes.
    ``succeeds=False``: the run must fail (a rank is killed)."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT))
    prefix = str(tmp_path / "w")
    launch([script, prefix, "2", mode], nproc=2 if torchrun else None, succeeds=succeeds)
    return prefix


def test_torchrun_two_processes_average_gradients_like_one_process(tmp_path):
    """Two gloo ranks with their own batches reach the same weights as one process whose
    loss is the average of both ranks' losses; both ranks end identical."""
    prefix = run_torchrun_script(tmp_path, "ddp")
    run_torchrun_script(tmp_path, "single", torchrun=False)
    rank0 = torch.load(prefix + "-ddp-0.pt")
    rank1 = torch.load(prefix + "-ddp-1.pt")
    single = torch.load(prefix + "-single-0.pt")
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-5, atol=1e-6)
    # the loss each step records is the mean of the two ranks' own, on both ranks, and one
    # process on both ranks' batches records that loss too (up to float32 rounding)
    losses = [torch.load(f"{prefix}-ddp-losses-{rank}.pt") for rank in (0, 1)]
    own = [r["own"] for r in losses]
    assert len(own[0]) == len(own[1]) == 6 and own[0] != own[1]
    mean = [(a + b) / 2 for a, b in zip(*own, strict=True)]
    assert losses[0]["losses"] == losses[1]["losses"] == mean
    single_losses = torch.load(prefix + "-single-losses-0.pt")["losses"]
    torch.testing.assert_close(mean, single_losses, rtol=1e-5, atol=1e-6)


def test_torchrun_ranks_stop_together_where_rank_0_decides(tmp_path):
    """on_step runs on rank 0 only; its decision to stop reaches every rank (else rank 1
    would wait forever in the next gradient average), and the run's checkpoint is the step
    where it stopped."""
    prefix = run_torchrun_script(tmp_path, "stop")
    for rank in (0, 1):
        assert torch.load(f"{prefix}-stop-{rank}.pt") == {"stopped_at": 4, "steps_done": 4}
    assert latest_checkpoint(prefix + "-ckpt").name == "checkpoint-00000004"
    assert [p.name for p in Path(prefix + "-ckpt").iterdir() if p.is_dir()] == [
        "checkpoint-00000004"
    ]


def test_on_step_returning_true_stops_the_run_after_a_checkpoint(tmp_path):
    model = make_model()
    result = train(
        model, regression_loss, CONFIG, tmp_path, on_step=lambda done, total, m: done == 7
    )
    assert result.stopped_at == 7 and len(result.losses) == 7
    # saved where it stopped (7 is no multiple of checkpoint_every), so a resume goes on
    # from there to the weights of a run that never stopped
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000007"
    again = make_model()
    resumed = train(again, regression_loss, CONFIG, tmp_path, resume=True)
    whole = make_model()
    uninterrupted = train(whole, regression_loss, CONFIG)
    assert uninterrupted.stopped_at is None and resumed.stopped_at is None
    assert resumed.resumed_from == 7 and resumed.losses == uninterrupted.losses
    assert_same_weights(again, whole)


def test_torchrun_ranks_using_different_parameters_average_like_one_process(tmp_path):
    """A loss that leaves a head without a gradient on one rank (DDP averages the other
    rank's gradient with zero) or on both (it keeps none, so AdamW leaves the head and its
    moments alone, as one process does): the ranks still reach one process's weights."""
    prefix = run_torchrun_script(tmp_path, "partial")
    run_torchrun_script(tmp_path, "partial-single", torchrun=False)
    rank0 = torch.load(prefix + "-partial-0.pt")
    rank1 = torch.load(prefix + "-partial-1.pt")
    single = torch.load(prefix + "-partial-single-0.pt")
    assert sorted(single) == [
        "a.bias",
        "a.weight",
        "b.bias",
        "b.weight",
        "body.bias",
        "body.weight",
    ]
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-5, atol=1e-6)


def test_torchrun_run_killed_and_resumed_reaches_the_uninterrupted_weights(tmp_path):
    """Two gloo ranks: rank 0 is killed (SIGKILL) after step 3; relaunched with resume,
    both ranks continue from the checkpoint of step 2 to exactly (bit for bit) the weights
    and losses of a run that was never killed. Checkpoints hold the bare model's tensors,
    so the distributed run's loads in one process and one process's loads in each rank."""
    prefix = run_torchrun_script(tmp_path, "crash", succeeds=False)
    assert latest_checkpoint(prefix + "-run").name == "checkpoint-00000002"
    one_process = make_model()
    train(one_process, regression_loss, TrainConfig(steps=3), prefix + "-one")
    run_torchrun_script(tmp_path, "resume")
    full = torch.load(prefix + "-full-0.pt")
    for rank in (0, 1):
        resumed = torch.load(f"{prefix}-resume-{rank}.pt")
        assert resumed["resumed_from"] == 2
        assert (
            list(resumed["state"])
            == list(full["state"])
            == ["0.weight", "0.bias", "2.weight", "2.bias"]
        )
        for key, value in full["state"].items():
            assert torch.equal(resumed["state"][key], value), key
        assert_same_weights_dict(resumed["one"], one_process.state_dict())
    # every rank records the mean loss over the ranks, the one its checkpoints hold
    for rank in (0, 1):
        assert torch.load(f"{prefix}-resume-{rank}.pt")["losses"] == full["losses"]
        assert torch.load(f"{prefix}-full-{rank}.pt")["losses"] == full["losses"]
    assert len(full["losses"]) == 6
    alone = make_model()  # the distributed run's checkpoint, in this one process
    state = load_checkpoint(latest_checkpoint(prefix + "-run"), alone)
    assert state["step"] == 6 and state["settings"]["world_size"] == 2
    assert_same_weights_dict(alone.state_dict(), full["state"])
