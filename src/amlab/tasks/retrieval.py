"""The retrieval job behind ``amlab retrieve``: store images, corrupt them, retrieve.

A query counts as retrieved when the memory nearest to its final state is the memory
it was made from.

With ``store`` the memories are those of a memory store on disk (``amlab store write``),
the queries corrupted copies of its first rows. Launched by torchrun on P > 1 ranks, the
ranks join a gloo group, each loads its rows of the store into a
:class:`~amlab.distributed.ShardedDenseAM`, all retrieve together, and rank 0 alone writes
the outputs; every rank returns the metrics of one process over the whole store. Without
torchrun (or with one rank) one process reads the whole store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from amlab.data import CORRUPTIONS, corrupt, load
from amlab.distributed import MemoryStore, ShardedDenseAM, init_group, leaving_group
from amlab.distributed.group import is_main_process, torchrun_rank
from amlab.errors import AmlabError, check_choice, check_positive, check_positive_int
from amlab.io import write_metrics
from amlab.models import DenseAM
from amlab.models.dense_am import ENERGIES

#: beta used when none is given: values that retrieve well on the embedded digits
DEFAULT_BETA = {"lse": 3.0, "lse_dot": 20.0, "lsr": 0.15}
#: the exact or fastest solver of each energy, used for method "auto"
AUTO_METHOD = {"lse": "attention", "lse_dot": "attention", "lsr": "fixed_point"}
#: the retrieval methods: "auto" picks the energy's from AUTO_METHOD
METHODS = ("auto", *DenseAM.METHODS)
#: corruptions that hide entries, whose visible entries are clamped by default
MASKING = ("mask", "block")
#: what --level is for each corruption that takes one (block does not), and its default
LEVELS = {"mask": "hidden fraction", "salt_pepper": "flipped fraction", "noise": "noise sigma"}
DEFAULT_LEVEL = 0.5
#: how long a rank waits for the others (the slowest to load its shard, or to meet it in a
#: collective) before it fails with an error
GROUP_TIMEOUT_S = 600.0


@dataclass
class RetrievalConfig:
    data: str = "digits"
    data_dir: str | None = None
    memories: int = 100
    queries: int = 0  # 0: one query per stored memory
    corruption: str = "block"
    level: float | None = None  # None: DEFAULT_LEVEL for the corruptions that take one
    energy: str = "lse"
    beta: float | None = None
    eps: float = 0.0
    method: str = "auto"
    steps: int = 1000
    step_size: float | None = None
    tol: float | None = None
    clamp: bool | None = None  # None: clamp the visible entries of masking corruptions
    seed: int = 0
    chunk_size: int | None = None
    store: str | None = None  # a memory store: its memories, not data/memories'


def run_retrieval(
    config: RetrievalConfig,
    *,
    out: str | Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Run the job; return its metrics. With ``out``, write ``retrieval.png`` and
    ``metrics.json`` there (on rank 0 only, under torchrun)."""
    level, method, clamp = _settings(config)
    world = torchrun_rank()[1]
    if world > 1 and config.store is None:
        raise AmlabError(
            f"under torchrun ({world} ranks) amlab retrieve needs --store DIR, a memory store "
            "(amlab store write) that the ranks share out; launch one process to retrieve "
            "from --data."
        )
    if world > 1:
        init_group(backend="gloo", timeout_s=GROUP_TIMEOUT_S)
    with leaving_group():
        return _retrieve(config, (level, method, clamp), world, out, on_step)


def _retrieve(
    config: RetrievalConfig,
    settings: tuple[float | None, str, bool],
    world: int,
    out: str | Path | None,
    on_step: Callable[[int, int], None] | None,
) -> dict:
    """run_retrieval's work, once the ranks (if several) have joined their group."""
    level, method, clamp = settings
    beta = DEFAULT_BETA.get(config.energy, 1.0) if config.beta is None else config.beta
    options = {"energy": config.energy, "beta": beta, "eps": config.eps}
    options["chunk_size"] = config.chunk_size
    if config.store is None:
        stored = _stored_images(config)
        model, shape, memories = DenseAM(stored.images, **options), stored.shape, len(stored)

        def first_rows(count: int) -> torch.Tensor:
            return stored.images[:count]

    else:
        if world > 1:  # each rank its rows, once all have checked they see the same store
            model = ShardedDenseAM.from_store(config.store, **options)
        store = MemoryStore(config.store)
        if store.image_shape is None:
            raise AmlabError(
                f"the memory store {config.store} holds no image shape, so its memories "
                "cannot be corrupted and shown as images; write it with amlab store write "
                "(or write_store(..., image_shape=...))."
            )
        if world == 1:
            model = DenseAM(store.rows_for(0, 1), **options)
        shape, memories = store.image_shape, store.num_memories

        def first_rows(count: int) -> torch.Tensor:  # of all: every rank reads them
            return store.rows(0, count)

    queries = check_positive_int(config.queries, "queries", allow_zero=True) or memories
    if queries > memories:
        raise AmlabError(
            f"--queries {queries} is more than the {memories} stored memories; "
            "queries are corrupted copies of stored images."
        )
    source = torch.arange(queries)
    clean = first_rows(queries)
    noisy, observed = corrupt(
        clean,
        config.corruption,
        0.0 if level is None else level,
        seed=config.seed + 1,
        shape=shape,
    )
    result = model.retrieve(
        noisy,
        steps=config.steps,
        step_size=config.step_size,
        tol=config.tol,
        clamp=observed if clamp else None,
        method=method,
        on_step=on_step,
    )
    nearest, _ = model.nearest(result.states)
    metrics = {
        "accuracy": (nearest == source).float().mean().item(),
        "mean_squared_error": (result.states - clean).pow(2).mean().item(),
        "corrupted_mean_squared_error": (noisy - clean).pow(2).mean().item(),
        "mean_steps": result.steps.float().mean().item(),
        "converged_fraction": result.converged.float().mean().item(),
        "final_energy_mean": result.energies[-1].mean().item(),
        "config": {
            **asdict(config),
            **({} if config.store is None else {"data": None, "memories": memories}),
            "level": level,
            "beta": beta,
            "method": method,
            "clamp": clamp,
            "queries": queries,
            "ranks": world,
        },
    }
    if out is not None and is_main_process():
        # here, not at the top: the CLI imports this module for its choices, and pyplot
        # would add 0.3 s to every amlab command (python -X importtime)
        from amlab.tasks.figures import image_grid

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        shown = slice(0, min(queries, 12))
        image_grid(
            [
                ("corrupted", noisy[shown]),
                ("retrieved", result.states[shown]),
                ("original", clean[shown]),
            ],
            shape,
            out / "retrieval.png",
            title=f"{config.energy} ({method}), beta={beta:g}: {metrics['accuracy']:.0%} retrieved",
        )
        write_metrics(out / "metrics.json", metrics)
    return metrics


def _stored_images(config: RetrievalConfig):
    """The ``memories`` images of ``data`` that a run without a store stores."""
    images = load(config.data, config.data_dir, split="train")
    memories = check_positive_int(config.memories, "memories")
    if memories > len(images):
        raise AmlabError(
            f"--memories {memories} is more than the {len(images)} images of "
            f"{config.data}; pass at most {len(images)}."
        )
    return images.subset(memories, seed=config.seed)


def _settings(config: RetrievalConfig) -> tuple[float | None, str, bool]:
    """(level, method, clamp) of a run, the defaults filled in; an option that would do
    nothing with the others given (or that does not fit them) is an AmlabError."""
    check_choice(config.corruption, "corruption", CORRUPTIONS)
    check_choice(config.energy, "energy", ENERGIES)
    method = check_choice(config.method, "method", METHODS)
    if config.corruption not in LEVELS:
        if config.level is not None:
            raise AmlabError(
                f"--level would do nothing: --corruption {config.corruption} hides a fixed "
                "part of each image; drop --level, or use --corruption mask, salt_pepper or "
                "noise."
            )
        level = None
    else:
        name = LEVELS[config.corruption]
        level = DEFAULT_LEVEL if config.level is None else config.level
        level = check_positive(level, f"--level (the {name})", allow_zero=True)
        if name.endswith("fraction") and level > 1:
            raise AmlabError(f"--level is the {name} of each image: pass one in [0, 1].")
    if config.eps and config.energy != "lsr":
        raise AmlabError(
            f"--eps would do nothing: it is LSR's floor inside the log, and --energy "
            f"{config.energy} has none; drop --eps, or use --energy lsr."
        )
    if method == "auto":
        method = AUTO_METHOD[config.energy]
    elif method != "gd" and method != AUTO_METHOD[config.energy]:
        raise AmlabError(
            f"--method {method} does not descend --energy {config.energy}; use --method "
            f"{AUTO_METHOD[config.energy]} (its exact update) or gd."
        )
    if config.step_size is not None:
        check_positive(config.step_size, "--step-size")
    if config.clamp and config.corruption == "noise":
        raise AmlabError(
            f"--clamp would do nothing: --corruption {config.corruption} changes every entry, "
            "so none is known to be right; drop --clamp."
        )
    clamp = config.corruption in MASKING if config.clamp is None else config.clamp
    return level, method, clamp
