"""The one model protocol (amlab.models): every model saves and loads through the one path
with its config dataclass, refuses a config.json that does not fit it, is seeded by its
``seed`` alone, and checks its inputs against its dtype and device in one place."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import typing
from collections.abc import Callable

import pytest
import torch

from amlab.diffusion import (
    ConvDenoiser,
    EmpiricalDenoiser,
    MLPDenoiser,
    TextConvDenoiser,
    VESchedule,
)
from amlab.errors import AmlabError, dtype_name
from amlab.io import config_from_json
from amlab.models import (
    GCN,
    MLP,
    CausalListOpsTransformer,
    DenseAM,
    EnergyTransformer,
    GraphET,
    ListOpsTransformer,
    ListOpsTransformerConfig,
    MaskedImageET,
    RandomFeatureAM,
    TextTransformer,
    TextTransformerConfig,
)

F64 = torch.float64
SCHEDULE = VESchedule(0.02, 3.0)


def rand(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def path_pairs(n: int) -> torch.Tensor:
    """(node, neighbour) pairs of a path graph over n nodes, both directions."""
    a, b = torch.arange(n - 1), torch.arange(1, n)
    return torch.stack([torch.cat([a, b]), torch.cat([b, a])])


def listops(dtype: torch.dtype, seed: int = 1) -> ListOpsTransformer:
    config = ListOpsTransformerConfig(
        vocab_size=18, classes=10, dim=8, max_len=12, seed=seed, dtype=dtype_name(dtype)
    )
    return ListOpsTransformer(config)


def text_transformer(dtype: torch.dtype, seed: int = 1) -> TextTransformer:
    vocabulary = ("<pad>", "<unk>", "<cls>", "kind", "rude", "people")
    return TextTransformer(
        TextTransformerConfig(vocabulary, dim=8, max_len=6, seed=seed, dtype=dtype_name(dtype))
    )


#: model name -> (build(dtype), inputs(model): the forward arguments, the first one checked)
MODELS: dict[str, tuple[Callable, Callable]] = {
    "DenseAM": (
        lambda dt: DenseAM(rand(6, 4, dtype=dt), energy="lsr", beta=3.0, eps=1e-3, dtype=dt),
        lambda m: (rand(3, 4, dtype=m.dtype, seed=1),),
    ),
    "RandomFeatureAM": (
        lambda dt: RandomFeatureAM(4, 64, 2.0, seed=3, dtype=dt).add(rand(5, 4, dtype=dt)),
        lambda m: (rand(3, 4, dtype=m.dtype, seed=1),),
    ),
    "EnergyTransformer": (
        lambda dt: EnergyTransformer(8, 2, 4, 12, steps=3, seed=1, dtype=dt),
        lambda m: (rand(2, 5, 8, dtype=m.dtype),),
    ),
    "MaskedImageET": (
        lambda dt: MaskedImageET((8, 8), dim=8, heads=2, head_dim=4, steps=3, seed=2, dtype=dt),
        lambda m: (rand(2, 64, dtype=m.dtype), rand(2, 16, seed=1) < 0.5),
    ),
    "GraphET": (
        lambda dt: GraphET(4, dim=8, heads=2, head_dim=4, steps=2, seed=1, dtype=dt),
        lambda m: (rand(6, 4, dtype=m.dtype), path_pairs(6)),
    ),
    "GCN": (
        lambda dt: GCN(4, 8, seed=1, dtype=dt),
        lambda m: (rand(6, 4, dtype=m.dtype), path_pairs(6)),
    ),
    "MLP": (
        lambda dt: MLP(4, 8, seed=1, dtype=dt),
        lambda m: (rand(6, 4, dtype=m.dtype), path_pairs(6)),
    ),
    "ListOpsTransformer": (
        listops,
        lambda m: (torch.randint(1, 18, (2, 10), generator=torch.Generator().manual_seed(0)),),
    ),
    "TextTransformer": (
        text_transformer,
        lambda m: (torch.tensor([[2, 3, 5, 0], [2, 4, 1, 5]]),),
    ),
    "CausalListOpsTransformer": (
        lambda dt: CausalListOpsTransformer(
            ListOpsTransformerConfig(
                vocab_size=19, classes=19, dim=8, max_len=12, seed=1, dtype=dtype_name(dt)
            )
        ),
        lambda m: (torch.randint(1, 19, (2, 10), generator=torch.Generator().manual_seed(0)),),
    ),
    "MLPDenoiser": (
        lambda dt: MLPDenoiser(
            2, SCHEDULE, hidden=16, layers=1, energy=True, num_classes=2, seed=1, dtype=dt
        ),
        lambda m: (rand(3, 2, dtype=m.dtype), 0.3, torch.tensor([0, 1, -1])),
    ),
    "ConvDenoiser": (
        lambda dt: ConvDenoiser((4, 4), SCHEDULE, channels=8, blocks=1, seed=1, dtype=dt),
        lambda m: (rand(2, 16, dtype=m.dtype), 0.5),
    ),
    "TextConvDenoiser": (
        lambda dt: TextConvDenoiser(
            (4, 4), SCHEDULE, ("a", "thick", "7"), channels=8, blocks=1, seed=1, dtype=dt
        ),
        lambda m: (rand(2, 16, dtype=m.dtype), 0.5, torch.tensor([[0, 2], [1, -1]])),
    ),
    "EmpiricalDenoiser": (
        lambda dt: EmpiricalDenoiser(rand(5, 3, dtype=dt), SCHEDULE, chunk_size=2, dtype=dt),
        lambda m: (rand(4, 3, dtype=m.dtype, seed=1), 0.4),
    ),
}


def trained(name: str, dtype: torch.dtype = torch.float32):
    """The model, its weights moved off their initial values (as training would)."""
    model = MODELS[name][0](dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", MODELS)
def test_every_model_round_trips_through_save_and_load(tmp_path, name, dtype):
    model = trained(name, dtype)
    cls = type(model)
    assert cls.__name__ == name and isinstance(model.config, cls.Config)
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    as_json = json.loads(json.dumps(dataclasses.asdict(model.config)))
    assert saved == {"kind": name, **as_json}  # config.json is exactly the config
    back = cls.load(tmp_path / "m", device="cpu")
    assert type(back) is cls and not back.training
    assert back.config == model.config and back.dtype == dtype
    for field in dataclasses.fields(model.config):  # ints stay ints, tuples tuples
        assert type(getattr(back.config, field.name)) is type(getattr(model.config, field.name))
    mine, theirs = model.state_dict(), back.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    inputs = MODELS[name][1](model)
    with torch.no_grad():
        assert torch.equal(back(*inputs), model(*inputs))
    with pytest.raises(AmlabError, match=f"holds a '{name}' model"):
        (MLP if name != "MLP" else GCN).load(tmp_path / "m")


def first_int_field(config) -> str:
    """The name of the config's first field that holds an int (or None)."""
    hints = typing.get_type_hints(type(config))
    return next(name for name, hint in hints.items() if hint in (int, int | None))


@pytest.mark.parametrize("name", MODELS)
def test_a_config_json_that_does_not_fit_is_refused_naming_the_file(tmp_path, name):
    model = trained(name)
    model.save(tmp_path / "m")
    file = tmp_path / "m" / "config.json"
    saved = json.loads(file.read_text())
    int_field = first_int_field(model.config)
    missing = {k: v for k, v in saved.items() if k != "dtype"}
    for tampered, problem in (
        ({**saved, "colour": "red"}, "unknown keys colour"),
        (missing, "missing keys dtype"),
        ({**saved, "dtype": 64}, "dtype must be a string; got 64"),
        ({**saved, int_field: 2.0}, f"{int_field} must be an int"),  # an int stays an int
        ({**saved, int_field: True}, f"{int_field} must be an int"),
        ({**saved, "dtype": "float16"}, "float32 or torch.float64"),
    ):
        file.write_text(json.dumps(tampered))
        with pytest.raises(AmlabError, match=re.escape(str(file))) as caught:
            type(model).load(tmp_path / "m")
        assert problem in str(caught.value)


def test_saved_tensors_must_fit_the_config(tmp_path):
    model = trained("GCN")
    model.save(tmp_path / "m")
    other = GCN(4, 6, seed=1)  # hidden 6, not 8
    other.save(tmp_path / "other")
    (tmp_path / "m" / "tensors.safetensors").write_bytes(
        (tmp_path / "other" / "tensors.safetensors").read_bytes()
    )
    with pytest.raises(AmlabError, match="do not fit GCN"):
        GCN.load(tmp_path / "m")
    f64 = GCN(4, 8, seed=1, dtype=F64)
    f64.save(tmp_path / "f64")
    (tmp_path / "m" / "tensors.safetensors").write_bytes(
        (tmp_path / "f64" / "tensors.safetensors").read_bytes()
    )
    with pytest.raises(AmlabError, match="torch.float64 but the config makes it"):
        GCN.load(tmp_path / "m")


#: models whose initial weights are PyTorch's default initialisation, drawn inside seeded()
DEFAULT_INIT: dict[str, Callable[[int], torch.nn.Module]] = {
    "MLPDenoiser": lambda seed: MLPDenoiser(2, SCHEDULE, hidden=16, num_classes=2, seed=seed),
    "ConvDenoiser": lambda seed: ConvDenoiser((8, 8), SCHEDULE, channels=8, seed=seed),
    "ListOpsTransformer": lambda seed: listops(torch.float32, seed),
    "TextTransformer": lambda seed: text_transformer(torch.float32, seed),
    "GCN": lambda seed: GCN(4, 8, seed=seed),
    "MLP": lambda seed: MLP(4, 8, seed=seed),
}
#: models drawing from their own torch.Generator (GraphET: its block, and seed + 1 for the rest)
OWN_GENERATOR: dict[str, Callable[[int], torch.nn.Module]] = {
    "EnergyTransformer": lambda seed: EnergyTransformer(8, 2, 4, seed=seed),
    "MaskedImageET": lambda seed: MaskedImageET((8, 8), dim=8, heads=2, head_dim=4, seed=seed),
    "RandomFeatureAM": lambda seed: RandomFeatureAM(4, 32, 1.0, seed=seed),
    "GraphET": lambda seed: GraphET(4, dim=8, heads=2, head_dim=4, seed=seed),
}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", [*DEFAULT_INIT, *OWN_GENERATOR])
def test_seed_alone_decides_the_weights_and_the_global_state_is_untouched(name):
    build = {**DEFAULT_INIT, **OWN_GENERATOR}[name]
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = build(5)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from the global state
    torch.manual_seed(99)
    assert same_weights(build(5), first)
    assert build(5).config.seed == 5
    assert not same_weights(build(6), first)


@pytest.mark.parametrize("name", DEFAULT_INIT)
@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_seed_gives_the_weights_of_manual_seed_then_construction(name, seed, monkeypatch):
    """``seed=s`` reproduces bit for bit what the global generator gave after
    ``torch.manual_seed(s)`` with the same construction (how these models were seeded
    before they took a seed, and what the diffusion and ListOps runs did)."""
    build = DEFAULT_INIT[name]
    model = build(seed)
    module = sys.modules[type(model).__module__]
    monkeypatch.setattr(module, "seeded", lambda s: contextlib.nullcontext())
    torch.manual_seed(seed)
    from_global = build(seed)  # the same construction, drawing from the global generator
    assert same_weights(model, from_global)


@pytest.mark.parametrize("name", MODELS)
def test_float64_models_take_float64_input_and_refuse_a_mismatch_alike(name):
    model = MODELS[name][0](F64).eval()
    assert model.dtype == F64 and model.config.dtype == "float64"
    first, *rest = MODELS[name][1](model)
    with torch.no_grad():
        out = model(first, *rest)
    assert out.dtype == F64 and torch.isfinite(out).all()
    what = type(model).__name__
    wrong = [first.to("meta")]  # another device
    if first.is_floating_point():
        wrong.append(first.float())  # another dtype
    for x in wrong:
        expected = f"is {x.dtype} on {x.device} but the {what} is torch.float64 on cpu; convert"
        with pytest.raises(AmlabError, match=re.escape(expected)):
            model(x, *rest)


def test_load_moves_the_model_to_the_device(tmp_path):
    trained("DenseAM").save(tmp_path / "m")
    back = DenseAM.load(tmp_path / "m", device="meta")
    assert back.device == torch.device("meta") and back.memories.is_meta


@dataclasses.dataclass(frozen=True)
class Example:
    count: int
    scale: float
    flag: bool
    shape: tuple[int, ...]
    chunk: int | None
    extra: dict[str, typing.Any]


def test_config_values_are_checked_against_the_field_types(tmp_path):
    file = tmp_path / "config.json"
    good = {"count": 3, "scale": 2, "flag": False, "shape": [1, 2], "chunk": None, "extra": {}}
    config = config_from_json(Example, good, file)
    assert config == Example(3, 2.0, False, (1, 2), None, {})
    assert type(config.count) is int and type(config.scale) is float  # ints stay ints
    for key, value, expected in (
        ("count", 3.0, "count must be an int; got 3.0"),
        ("count", True, "count must be an int; got True"),
        ("scale", "2", "scale must be a number; got '2'"),
        ("flag", "no", "flag must be true or false; got 'no'"),
        ("shape", [1, 2.5], "shape must be a list of ints; got [1, 2.5]"),
        ("chunk", "4", "chunk must be an int or null; got '4'"),
        ("extra", [], "extra must be an object; got []"),
    ):
        with pytest.raises(AmlabError, match=re.escape(f"{file}: {expected}")):
            config_from_json(Example, {**good, key: value}, file)
