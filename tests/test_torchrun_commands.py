"""The commands that train through the shared loop, launched with torchrun on 2 gloo ranks:
every rank trains, rank 0 alone writes the outputs and prints; rank 1 writes and prints
nothing. Each rank runs in a directory of its own (``ranks.launch_apart``), so a file or a
line is known to come from the rank that made it."""

from __future__ import annotations

import json

import pytest
import torch
from ranks import launch, launch_apart

from amlab.data.images import image_splits
from amlab.distributed import is_main_process
from amlab.errors import AmlabError
from amlab.models import MaskedImageET
from amlab.tasks.et_images import ETImageConfig, build_model, masked_patch_loss
from amlab.training import latest_checkpoint, step_generator


def test_the_main_process_is_one_torchrun_did_not_start_or_its_rank_0(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert is_main_process()
    for rank, main in (("0", True), ("1", False), ("2", False)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "3")
        assert is_main_process() is main
    monkeypatch.setenv("RANK", "3")  # not a rank of 3: an error, not a silent answer
    with pytest.raises(AmlabError, match="RANK=3 is not a rank of WORLD_SIZE=3"):
        is_main_process()


def files(directory) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def written(run_dir: str, step: int, *names: str) -> list[str]:
    """The sorted files a training command's --out holds: the saved model, the training
    loop's run directory ``run_dir`` holding its checkpoint of ``step``, and ``names``."""
    name = f"{run_dir}/checkpoint-{step:08d}"
    parts = ("model.safetensors", "optimizer.safetensors", "state.json")
    checkpoint = [*(f"{name}/{part}" for part in parts), f"{run_dir}/latest"]
    return sorted([*checkpoint, "model/config.json", "model/tensors.safetensors", *names])


def check_rank_0_alone(tmp_path, args) -> tuple[dict, object]:
    """Launch ``amlab ARGS --out out --json`` on 2 ranks; check that rank 1 wrote no file
    and printed nothing of its own; return what rank 0 printed and its --out."""
    (rank0, out0, _), (rank1, out1, err1) = launch_apart(
        tmp_path, [*args, "--out", "out", "--json"]
    )
    assert files(rank1) == [] and out1 == ""
    # rank 1's stderr holds PyTorch's own warnings at most (DDP's note that it found no
    # unused parameter), no line of amlab's: no progress bar, no "wrote" line
    assert all(line.startswith("[rank1]:[W") for line in err1.splitlines() if line), err1
    return json.loads(out0), rank0 / "out"


def test_train_diffusion_writes_and_prints_from_rank_0_only(tmp_path):
    args = ["train", "diffusion", "--images", "20", "--steps", "3", "--channels", "4"]
    printed, out = check_rank_0_alone(tmp_path, [*args, "--blocks", "1", "--batch-size", "8"])
    assert printed == json.loads((out / "metrics.json").read_text())
    assert files(out) == written("checkpoints", 3, "metrics.json", "samples.png")
    state = json.loads((latest_checkpoint(out / "checkpoints") / "state.json").read_text())
    assert state["settings"]["world_size"] == 2
    assert printed["final_loss"] == state["losses"][-1]  # the mean over the ranks


def test_fairness_train_writes_and_prints_from_rank_0_only(tmp_path):
    args = ["fairness", "train", "--model", "transformer", "--steps", "3", "--size", "200"]
    printed, out = check_rank_0_alone(tmp_path, args)
    assert printed == json.loads((out / "training.json").read_text())
    assert files(out) == written("checkpoints", 3, "training.json")
    state = json.loads((latest_checkpoint(out / "checkpoints") / "state.json").read_text())
    assert state["settings"]["world_size"] == 2 and printed["final_loss"] == state["losses"][-1]


def test_train_et_writes_and_prints_from_rank_0_only_the_mean_loss_of_the_ranks(tmp_path):
    """train.json (rank 0's) holds the losses its checkpoint holds, each the mean of the two
    ranks' own: at step 0, computed here from the first weights and each rank's batch."""
    args = ["train", "et", "--steps", "3", "--warmup", "0", "--dim", "16", "--heads", "2"]
    args += ["--head-dim", "4", "--et-steps", "2", "--batch-size", "8"]
    printed, out = check_rank_0_alone(tmp_path, args)
    assert printed == json.loads((out / "train.json").read_text())
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert printed["losses"] == state["losses"] and state["settings"]["world_size"] == 2
    loaded = MaskedImageET.load(out / "model")
    assert sum(p.numel() for p in loaded.parameters()) == printed["parameters"]
    config = ETImageConfig(**printed["config"])
    images = image_splits(config.data, config.data_dir)[0].images
    loss = masked_patch_loss(images, config)
    model = build_model(config, loaded.image_shape).train()
    own = [float(loss(model, 0, step_generator(config.seed, 0, r))[0].detach()) for r in (0, 1)]
    assert abs(own[0] - own[1]) > 1e-3  # so the mean is neither rank's own
    torch.testing.assert_close(printed["losses"][0], (own[0] + own[1]) / 2, rtol=1e-5, atol=0)


def test_listops_train_writes_and_prints_from_rank_0_only(tmp_path):
    """Rank 0 runs the validation checks (in the loop's on_step) and writes their history,
    the phase's record and the model; rank 1 trains alongside and writes none of them."""
    args = ["listops", "train", "--steps", "4", "--dim", "8", "--layers", "1", "--heads", "1"]
    printed, out = check_rank_0_alone(
        tmp_path, [*args, "--train-size", "100", "--test-size", "50", "--eval-every", "2"]
    )
    assert printed == json.loads((out / "metrics.json").read_text())
    assert files(out) == written(
        "train", 4, "metrics.json", "train/done.json", "train/history.json"
    )
    done = json.loads((out / "train" / "done.json").read_text())
    assert [step for step, _ in done["val_history"]] == [2, 4] and done["stopped_by"] == "steps"
    assert printed["val_history"] == done["val_history"]


#: train_run on every rank of a torchrun launch; each rank writes the record it returned
LISTOPS_SCRIPT = """
import json, os, sys
from amlab.distributed import leave_group
from amlab.tasks.listops import RunSpec, train_run

out = sys.argv[1]
spec = RunSpec(ops="sum", dim=8, layers=1, heads=1, steps=6, warmup=0, batch_size=16,
               eval_every=2, stop_at=0.01, train_size=60, val_size=30, test_size=30,
               pretrain_ops="max", pretrain_steps=4)
record = train_run(spec, out=out)
with open(f"{out}-record-{os.environ['RANK']}.json", "w") as file:
    json.dump(record, file)
leave_group()
"""


def test_listops_train_run_returns_rank_0s_record_on_every_rank(tmp_path):
    """The validation checks run on rank 0 only (in the loop's on_step); it stops both
    phases early (stop_at), and rank 1 returns the record rank 0 wrote: the same history,
    reason and steps, where it held none of them before."""
    script = tmp_path / "listops.py"
    script.write_text(LISTOPS_SCRIPT)
    launch([script, tmp_path / "run"], nproc=2)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    records = [json.loads((tmp_path / f"run-record-{r}.json").read_text()) for r in (0, 1)]
    for record in records:
        assert record.pop("seconds") >= 0
    written.pop("seconds")
    assert records[0] == records[1] == written
    for phase in (written, written["pretrain"]):  # each stopped at its first check
        assert phase["stopped_by"] == "stop_at" and phase["steps_done"] == 2
        assert [step for step, _ in phase["val_history"]] == [2]
