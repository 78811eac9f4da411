"""The sharded memory store: written for 3 ranks, read on 2, on 1 and by 2 spawned ranks
into a ShardedDenseAM; missing, truncated, changed and foreign shard files refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import error_line
from ranks import close, launch, run_ranks
from typer.testing import CliRunner

from amlab.cli import app
from amlab.data.images import load
from amlab.distributed import MemoryStore, ShardedDenseAM, shard_range, write_store
from amlab.errors import AmlabError
from amlab.models import DenseAM


def memories(num=11, seed=0):
    return torch.rand(num, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_a_store_for_three_ranks_reads_on_any_number(tmp_path):
    mem = memories()
    manifest = json.loads(write_store(tmp_path, mem, 3).read_text())
    assert [s["rows"] for s in manifest["shards"]] == [[0, 3], [3, 7], [7, 11]]
    assert (manifest["num_memories"], manifest["dim"], manifest["dtype"]) == (11, 4, "float64")
    store = MemoryStore(tmp_path)
    assert store.num_shards == 3
    assert torch.equal(store.rows_for(0, 1), mem)  # one process: everything
    for ranks in (2, 3, 5, 20):  # fewer, as many, more ranks than shards (some get none)
        parts = [store.rows_for(r, ranks) for r in range(ranks)]
        for r, part in enumerate(parts):
            lo, hi = shard_range(11, r, ranks)
            assert torch.equal(part, mem[lo:hi])
    assert torch.equal(store.rows(2, 8), mem[2:8])  # across three files


def damage(tmp_path, how):
    mem = memories()
    write_store(tmp_path / "store", mem, 3)
    victim = tmp_path / "store" / "shard-00001-of-00003.safetensors"
    if how == "missing":
        victim.unlink()
    elif how == "truncated":
        victim.write_bytes(victim.read_bytes()[:-9])
    elif how == "changed":  # same size, one number different
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0x40
        victim.write_bytes(bytes(data))
    else:  # foreign: the same shard of another store of the same shape
        write_store(tmp_path / "other", memories(seed=1), 3)
        victim.write_bytes((tmp_path / "other" / victim.name).read_bytes())
    return tmp_path / "store", victim


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing", "shard file missing"),
        ("truncated", "bytes but the manifest says"),
        ("changed", "differ from the manifest's SHA-256"),
        ("foreign", "differ from the manifest's SHA-256"),
    ],
)
def test_a_bad_shard_is_refused_naming_the_file(tmp_path, how, message):
    store, victim = damage(tmp_path, how)
    with pytest.raises(AmlabError, match=message) as err:
        MemoryStore(store).rows_for(0, 1)
    assert str(victim) in str(err.value)
    if how in ("changed", "foreign"):  # a rank that does not read the file is not stopped
        assert torch.equal(MemoryStore(store).rows_for(0, 3), memories()[:3])


def test_a_bad_manifest_is_refused_naming_it(tmp_path):
    with pytest.raises(AmlabError, match="store.json is not a readable memory store manifest"):
        MemoryStore(tmp_path)
    write_store(tmp_path, memories(), 2)
    manifest = json.loads((tmp_path / "store.json").read_text())
    manifest["shards"][1]["rows"] = [6, 11]  # a gap: row 5 in no file
    (tmp_path / "store.json").write_text(json.dumps(manifest))
    with pytest.raises(AmlabError, match="rows do not cover"):
        MemoryStore(tmp_path)


def two_ranks_load_a_store_for_three(rank, world_size, directory):
    mem = memories()
    sharded = ShardedDenseAM.from_store(directory, beta=3.0, dtype=torch.float64)
    assert sharded.num_memories == len(range(*shard_range(11, rank, world_size)))
    full = DenseAM(mem, beta=3.0, dtype=torch.float64)
    x = mem[[1, 9]] + 0.1
    close(
        sharded.retrieve(x, method="attention").states, full.retrieve(x, method="attention").states
    )


def test_two_ranks_load_a_store_written_for_three(tmp_path):
    write_store(tmp_path / "store", memories(), 3)
    run_ranks(tmp_path, 2, two_ranks_load_a_store_for_three, str(tmp_path / "store"))


def test_the_store_write_command_stores_what_retrieve_would(tmp_path):
    args = ["store", "write", "--memories", "30", "--shards", "4", "--seed", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["num_memories"] == 30 and len(written["shards"]) == 4
    assert written["store_id"] == MemoryStore(tmp_path).store_id
    want = load("digits").subset(30, seed=2).images
    assert torch.equal(MemoryStore(tmp_path).rows_for(0, 1), want)
    table = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "again")])
    assert table.exit_code == 0 and "shard-00003-of-00004.safetensors" in table.output


def test_under_torchrun_three_ranks_retrieve_from_a_store_written_for_two(tmp_path):
    write_store(tmp_path / "store", memories(), 2)
    script = Path(__file__).with_name("torchrun_sharded.py")
    stdout = launch([script, tmp_path / "store"], nproc=3)
    for rank in range(3):
        assert f"rank {rank} of 3: " in stdout


def test_a_shard_removed_after_opening_is_refused_naming_it(tmp_path):
    write_store(tmp_path / "store", memories(), 3)
    store = MemoryStore(tmp_path / "store")  # opened while every shard is there
    victim = tmp_path / "store" / "shard-00001-of-00003.safetensors"
    victim.unlink()
    with pytest.raises(AmlabError, match="cannot read") as err:
        store.rows_for(0, 1)
    assert str(victim) in str(err.value)


def other_stores_on_other_ranks(rank, world_size, directories):
    with pytest.raises(AmlabError, match="read different memory stores") as err:
        ShardedDenseAM.from_store(directories[rank])
    assert str(directories[rank]) in str(err.value)


def a_rank_without_the_store(rank, world_size, store, missing):
    if rank == 1:  # its own reason, naming what it could not read
        with pytest.raises(AmlabError, match="store.json is not a readable"):
            ShardedDenseAM.from_store(missing)
    else:  # the others: which rank could not, not a hang
        with pytest.raises(AmlabError, match=r"rank\(s\) \[1\] could not read the memory store"):
            ShardedDenseAM.from_store(store)


def test_ranks_that_see_other_stores_or_none_are_all_refused(tmp_path):
    write_store(tmp_path / "a", memories(), 2)
    write_store(tmp_path / "b", memories(seed=1), 2)  # same shape, other memories
    stores = [str(tmp_path / "a"), str(tmp_path / "b")]
    run_ranks(tmp_path, 2, other_stores_on_other_ranks, stores)
    run_ranks(tmp_path, 2, a_rank_without_the_store, stores[0], str(tmp_path / "none"))


def test_a_store_keeps_the_shape_of_its_images(tmp_path):
    write_store(tmp_path / "img", memories(), 2, image_shape=(2, 2))
    assert MemoryStore(tmp_path / "img").image_shape == (2, 2)
    write_store(tmp_path / "flat", memories(), 2)
    assert MemoryStore(tmp_path / "flat").image_shape is None
    with pytest.raises(AmlabError, match="does not fit memories of dimension 4"):
        write_store(tmp_path / "bad", memories(), 2, image_shape=(3, 2))


RETRIEVE = ["retrieve", "--seed", "2", "--corruption", "mask", "--json"]


def test_retrieve_under_torchrun_from_a_store_equals_one_process(tmp_path):
    """`amlab retrieve --store` on 2 torchrun ranks (each loads its rows of a store written
    for 3) prints and writes what one process over the whole store prints and writes; rank 1
    prints nothing. float64 memories, so that every query takes the same steps."""
    digits = load("digits").subset(40, seed=2)
    write_store(tmp_path / "store", digits.images.double(), 3, image_shape=digits.shape)
    args = [*RETRIEVE, "--store", str(tmp_path / "store")]
    one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    stdout = launch(["-m", "amlab.cli", *args, "--out", tmp_path / "two"], nproc=2)
    printed = json.loads(stdout)  # one JSON document: rank 1 printed nothing
    written = json.loads((tmp_path / "two" / "metrics.json").read_text())
    alone = json.loads(one.stdout)
    assert written == printed
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["metrics.json", "retrieval.png"]
    assert printed["config"] == {**alone["config"], "ranks": 2}
    assert alone["config"]["ranks"] == 1 and alone["config"]["memories"] == 40
    for key in ("accuracy", "mean_steps", "converged_fraction"):
        assert printed[key] == alone[key], key
    for key in ("mean_squared_error", "corrupted_mean_squared_error", "final_energy_mean"):
        assert printed[key] == pytest.approx(alone[key], rel=1e-12), key


def test_retrieve_under_torchrun_needs_a_store(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(app, ["retrieve", "--memories", "20"])
    assert "under torchrun (2 ranks) amlab retrieve needs --store DIR" in error_line(result)


@pytest.mark.parametrize("option", [["--data", "digits"], ["--memories", "20"]])
def test_retrieve_from_a_store_refuses_data_options(tmp_path, option):
    write_store(tmp_path, memories(), 2, image_shape=(2, 2))
    result = CliRunner().invoke(app, ["retrieve", "--store", str(tmp_path), *option])
    assert f"{option[0]} would do nothing: --store holds the memories" in error_line(result)


def test_retrieve_from_a_store_of_no_images_is_refused(tmp_path):
    write_store(tmp_path, memories(), 2)
    result = CliRunner().invoke(app, ["retrieve", "--store", str(tmp_path)])
    assert "holds no image shape" in error_line(result)
