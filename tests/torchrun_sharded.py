"""Run under torchrun by tests/test_distributed_store.py, as a user would launch a sharded
memory: ``torchrun --standalone --nproc_per_node P tests/torchrun_sharded.py STORE``. Each
rank loads its rows of the store and retrieves; every rank checks the result against one
DenseAM over the whole store and prints one line."""

import sys

import torch
import torch.distributed as dist

from amlab.distributed import MemoryStore, ShardedDenseAM, init_group, leave_group
from amlab.models import DenseAM

torch.set_num_threads(1)
init_group(backend="gloo", timeout_s=30)  # rank and world size from torchrun's environment
store = sys.argv[1]
memory = ShardedDenseAM.from_store(store, energy="lsr", beta=8.0, dtype=torch.float64)
full = DenseAM(MemoryStore(store).rows_for(0, 1), energy="lsr", beta=8.0, dtype=torch.float64)
x = full.memories[[0, 4, 9]] + 0.05
got, want = memory.retrieve(x, method="fixed_point"), full.retrieve(x, method="fixed_point")
torch.testing.assert_close(got.states, want.states, rtol=1e-12, atol=1e-12)
assert torch.equal(got.steps, want.steps)
print(f"rank {dist.get_rank()} of {dist.get_world_size()}: {memory.num_memories} rows, same states")
leave_group()
