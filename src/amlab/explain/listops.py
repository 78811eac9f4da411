"""A ListOps transformer's forward pass written out step by step, for the explainer.

:func:`trace` recomputes :class:`~amlab.models.listops.ListOpsTransformer`'s forward pass
for one sequence from the model's weights, with plain matrix products (no hooks, no fused
attention), and returns every intermediate the browser view shows: token and position
embeddings, layer norms, per-head queries, keys and values, the scores with the padding
mask, the attention weights, the head outputs and their projection, the residual stream,
the MLP before and after its GELU, the read-out of the class token after every block (the
logit lens), the logits and the probabilities. Ablation switches off the attention or the
MLP of every block (as the model's ``ablate``) or single heads (their output is zeroed
before the projection). The app's TypeScript forward pass (``web/src/lib/math/
transformer.ts``) is tested against this function's output, and this function against the
model's own ``forward``.

:func:`export_listops` writes the shipped models (``models/listops-joint``, trained on
MAX+MED+SUM; ``models/listops-sum``, the same size trained on SUM alone;
``models/listops-causal``, the same size, a next-token model of MAX+MED+SUM expressions
followed by ``=`` and their value) as raw float32 for the app, with their held-out accuracy
and a sample of their held-out expressions; :func:`listops_vectors` the test vectors of the
app's forward pass, :func:`sampling_distribution` the distribution its sampler draws from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from amlab.data.listops import ListOpsConfig, Tokenizer, evaluate, make_splits
from amlab.errors import AmlabError
from amlab.io import read_json, write_float32_tensors
from amlab.models.listops import CausalListOpsTransformer, ListOpsTransformer, attention_mask

MODELS = Path(__file__).parent / "models"
#: the shipped models: the joint model (MAX+MED+SUM), a SUM-only model of the same size, and
#: a causal (next-token) model of the same size trained on MAX+MED+SUM expressions followed
#: by '=' and their value
SHIPPED_LISTOPS = {
    "joint": MODELS / "listops-joint",
    "sum": MODELS / "listops-sum",
    "causal": MODELS / "listops-causal",
}
#: held-out expressions shipped per model (the view's random-expression button draws them)
SAMPLE_EXPRESSIONS = 200


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


@torch.no_grad()
def trace(
    model: ListOpsTransformer,
    tokens: torch.Tensor | list[int],
    *,
    attention: bool = True,
    mlp: bool = True,
    heads_off: Iterable[tuple[int, int]] = (),
) -> dict:
    """Every intermediate of the forward pass of one sequence ``tokens`` (L,) (padding id
    0, the class token first), computed in the model's dtype.

    ``attention``/``mlp`` False leave that part of every block out of the residual stream
    (its numbers are still computed and returned); ``heads_off`` lists (block, head) pairs
    whose output is zeroed before the block's projection. Returns a dict of tensors:
    ``embed``/``position``/``x`` (L, D), ``blocks`` (one dict per layer: ``ln1``, ``q``,
    ``k``, ``v`` (H, L, D/H), ``scores`` (H, L, L) with -inf at padded keys (and, in a
    causal model, at keys after the query), ``weights``
    (H, L, L) (query rows, key columns), ``heads`` (H, L, D/H), ``mixed`` (L, D) the
    heads' outputs side by side (switched-off heads zeroed), ``attn_out`` (L, D),
    ``mid`` (L, D), ``ln2`` (L, D), ``mlp_pre``/``mlp_post`` (L, hidden), ``mlp_out`` and
    ``out`` (L, D), ``lens_logits`` (classes,): the class token read out after this
    block), ``final`` (D,) the normed class token, ``logits`` and ``probs`` (classes,).
    A causal model reads out every position: ``lens_logits``, ``logits`` and ``probs``
    are (L, classes), ``final`` (L, D).
    """
    config = model.config
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 1 or tokens.dtype != torch.long or len(tokens) == 0:
        raise AmlabError(f"tokens must be a non-empty (L,) int64 tensor; got {tokens!r}.")
    if len(tokens) > config.max_len:
        raise AmlabError(f"{len(tokens)} tokens exceed the model's max_len {config.max_len}.")
    if int(tokens.min()) < 0 or int(tokens.max()) >= config.vocab_size:
        raise AmlabError(f"token ids must lie in 0..{config.vocab_size - 1}.")
    off = set()
    for block, head in heads_off:
        if not (0 <= block < config.layers and 0 <= head < config.heads):
            raise AmlabError(
                f"no head ({block}, {head}): blocks are 0..{config.layers - 1}, heads "
                f"0..{config.heads - 1}."
            )
        off.add((block, head))
    n, heads = len(tokens), config.heads
    head_dim = config.dim // heads
    mask = attention_mask(tokens[None], model.causal)[0]
    embed = model.embed.weight[tokens]
    position = model.position.weight[:n]
    x = embed + position
    out: dict = {"embed": embed, "position": position, "x": x, "blocks": []}

    def read_out(stream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        final = _layer_norm(stream if model.causal else stream[0], model.norm)
        return final, _linear(final, model.head)

    for layer in range(config.layers):
        block = model.blocks[0 if config.share_weights else layer]
        ln1 = _layer_norm(x, block.norm1)
        q, k, v = _linear(ln1, block.qkv).view(n, 3, heads, head_dim).permute(1, 2, 0, 3)
        scores = q @ k.transpose(1, 2) / math.sqrt(head_dim)
        scores = scores.masked_fill(~mask[None], -math.inf)
        weights = torch.softmax(scores, -1)
        head_out = weights @ v
        mixed = head_out.clone()
        mixed[[h for h in range(heads) if (layer, h) in off]] = 0
        mixed = mixed.transpose(0, 1).reshape(n, config.dim)
        attn_out = _linear(mixed, block.proj)
        mid = x + attn_out if attention else x
        ln2 = _layer_norm(mid, block.norm2)
        mlp_pre = _linear(ln2, block.up)
        mlp_post = F.gelu(mlp_pre)
        mlp_out = _linear(mlp_post, block.down)
        x = mid + mlp_out if mlp else mid
        record = {
            "ln1": ln1,
            "q": q,
            "k": k,
            "v": v,
            "scores": scores,
            "weights": weights,
            "heads": head_out,
            "mixed": mixed,
            "attn_out": attn_out,
            "mid": mid,
            "ln2": ln2,
            "mlp_pre": mlp_pre,
            "mlp_post": mlp_post,
            "mlp_out": mlp_out,
            "out": x,
        }
        record["lens_logits"] = read_out(x)[1]
        out["blocks"].append(record)
    out["final"], out["logits"] = read_out(x)
    out["probs"] = torch.softmax(out["logits"], -1)
    return out


def load_shipped(name: str) -> tuple[ListOpsTransformer, dict]:
    """A shipped model (``joint``, ``sum`` or ``causal``) and its training record
    (``metrics.json``)."""
    if name not in SHIPPED_LISTOPS:
        raise AmlabError(f"no shipped ListOps model {name!r}; choose from {list(SHIPPED_LISTOPS)}.")
    path = SHIPPED_LISTOPS[name]
    record = read_json(path / "metrics.json", "train the model again")
    cls = CausalListOpsTransformer if record["spec"].get("causal") else ListOpsTransformer
    return cls.load(path), record


def held_out(record: dict, count: int) -> list[str]:
    """The first ``count`` test expressions of a training record's run: the splits
    ``amlab listops train`` drew (``amlab.tasks.listops.make_data``: test, val, train from
    one stream seeded by the data seed)."""
    spec = record["spec"]
    config = ListOpsConfig(ops=tuple(spec["ops"]), **spec["data"])
    sizes = {"test": spec["test_size"], "val": spec["val_size"], "train": spec["train_size"]}
    return make_splits(config, sizes, seed=spec["data_seed"])["test"][:count]


def digit_embeddings(model: ListOpsTransformer) -> torch.Tensor:
    """(10, dim): the embedding rows of the values 0..9 (the same ids in every vocabulary)."""
    tokenizer = Tokenizer(10)
    return model.embed.weight.detach()[[tokenizer.value_id(v) for v in range(10)]]


def export_listops(out: str | Path) -> dict:
    """Write ``listops-<name>.bin`` (every tensor of the model's ``state_dict``, float32
    little-endian, one after the other) for each shipped model into ``out``; return the
    manifest entry: per model its config and vocabulary, the tensors' names, shapes
    and offsets (in floats), its test accuracy (overall and per root operation, from the
    training record) and the first held-out test expressions with their values."""
    out = Path(out)
    entry: dict = {"models": {}}
    for name in SHIPPED_LISTOPS:
        model, record = load_shipped(name)
        spec = record["spec"]
        if spec["data"]["modulus"] != 10:
            raise AmlabError(f"the shipped model {name} was not trained on values 0..9.")
        file = f"listops-{name}.bin"
        tensors = write_float32_tensors(out / file, model.state_dict())
        entry["models"][name] = {
            "file": file,
            "config": {**asdict(model.config), "causal": model.causal},
            "vocab": Tokenizer(10, equals=model.causal).vocab,
            "tensors": tensors,
            "ops": spec["ops"],
            "parameters": record["parameters"],
            "steps": record["steps_done"],
            "train_size": spec["train_size"],
            "test_accuracy": record["test_accuracy"],
            "test_per_op": record["test_per_op"],
            "test_count": record["test_count"],
            "examples": [[e, evaluate(e)] for e in held_out(record, SAMPLE_EXPRESSIONS)],
        }
    return entry


#: the vector cases: (model, expression, ablation) with ablation (attention, mlp, heads_off)
VECTOR_CASES = (
    ("joint", "[MAX 3 [MED 4 2 8 ] [SM 5 9 ] ]", (True, True, ())),
    ("joint", "[MAX 3 [MED 4 2 8 ] [SM 5 9 ] ]", (False, True, ())),
    ("joint", "[MAX 3 [MED 4 2 8 ] [SM 5 9 ] ]", (True, False, ())),
    ("joint", "[SM 7 [MAX 1 6 ] 4 ]", (True, True, ((1, 2),))),
    ("joint", "[MED 1 9 5 ]", (True, True, ())),
    ("sum", "[SM 7 [SM 1 6 ] 4 ]", (True, True, ())),
    ("sum", "[SM 7 [SM 1 6 ] 4 ]", (True, True, ((0, 0), (1, 3)))),
    ("causal", "[MAX 3 [MED 4 2 8 ] [SM 5 9 ] ] = 4", (True, True, ())),
    ("causal", "[SM 7 [MAX 1 6 ] 4 ] =", (True, False, ((0, 2),))),
    ("causal", "[MED 1 9", (True, True, ())),
)


def _nested(value):
    """Tensors (and dicts and lists of them) as lists, -inf as None (JSON has no inf)."""
    if isinstance(value, dict):
        return {k: _nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nested(v) for v in value]
    flat = value.double().reshape(-1).tolist()
    return {"shape": list(value.shape), "data": [v if math.isfinite(v) else None for v in flat]}


def listops_vectors() -> list[dict]:
    """The app's forward pass test cases: each expression padded to the model's max_len,
    the ablation, every intermediate of :func:`trace` computed in float64 from the shipped
    float32 weights, and the float32 model's own logits (``forward``, fused attention)."""
    cases = []
    for name, expression, (attention, mlp, heads_off) in VECTOR_CASES:
        model, _ = load_shipped(name)
        tokenizer = Tokenizer(10, equals=model.causal)
        tokens = tokenizer.encode([expression], model.config.max_len)
        model.ablate = frozenset(
            part for part, on in (("attention", attention), ("mlp", mlp)) if not on
        )
        if heads_off:
            with torch.no_grad():
                for block, head in heads_off:
                    width = model.config.dim // model.config.heads
                    model.blocks[block].proj.weight[:, head * width : (head + 1) * width] = 0
        with torch.no_grad():
            logits32 = model(tokens)[0]
        model, _ = load_shipped(name)
        steps = trace(model.double(), tokens[0], attention=attention, mlp=mlp, heads_off=heads_off)
        cases.append(
            {
                "model": name,
                "expression": expression,
                "tokens": tokens[0].tolist(),
                "ablation": {
                    "attention": attention,
                    "mlp": mlp,
                    "heads_off": [list(h) for h in heads_off],
                },
                "trace": _nested(steps),
                "logits_float32": logits32.tolist(),
            }
        )
    return cases


def sampling_distribution(
    logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """The distribution a sampler draws the next token from, (V,) from logits (V,):
    softmax(logits / temperature), cut to the ``top_k`` most likely tokens (0: no cut) and
    to the fewest most likely whose probability reaches ``top_p`` (the first always kept),
    renormalised. Ties are ranked by index (a stable sort)."""
    if not temperature > 0:
        raise AmlabError(f"temperature must be positive; got {temperature!r}.")
    p = torch.softmax(logits.double() / temperature, -1)
    order = torch.sort(p, descending=True, stable=True).indices
    ranked = p[order]
    rank = torch.arange(len(p))
    before = torch.cumsum(ranked, 0) - ranked  # the mass of the tokens ranked above
    keep = (rank == 0) | (before < top_p)
    if top_k > 0:
        keep &= rank < top_k
    out = torch.zeros_like(p)
    out[order[keep]] = ranked[keep] / ranked[keep].sum()
    return out


def sampling_vectors(seed: int = 0) -> list[dict]:
    """Test cases of :func:`sampling_distribution`: random logits (with ties) and settings."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for temperature, top_k, top_p in (
        (1.0, 0, 1.0),
        (0.5, 0, 1.0),
        (2.0, 3, 1.0),
        (1.0, 0, 0.7),
        (0.8, 4, 0.9),
        (1.0, 1, 1.0),
        (1.5, 0, 0.0),
    ):
        logits = torch.randn(19, generator=g, dtype=torch.float64) * 2
        logits[5] = logits[11]  # a tie
        dist = sampling_distribution(logits, temperature, top_k, top_p)
        cases.append(
            {
                "logits": logits.tolist(),
                "temperature": temperature,
                "top_k": top_k,
                "top_p": top_p,
                "distribution": dist.tolist(),
            }
        )
    return cases
