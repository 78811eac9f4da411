import os

import pytest
import torch
from hypothesis import settings

# `make test` is deterministic (the same examples every run); `make fuzz` explores afresh.
settings.register_profile("ci", derandomize=True, max_examples=300, database=None)
settings.register_profile("explore", derandomize=False, max_examples=5000)
settings.load_profile(os.environ.get("AMLAB_FUZZ_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
