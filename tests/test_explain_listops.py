"""amlab.explain.listops: the step-by-step forward pass equals the model's own forward
(fused attention, nn modules), with and without ablation, for every block's output."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from amlab.data.listops import Tokenizer
from amlab.errors import AmlabError
from amlab.explain.listops import (
    SHIPPED_LISTOPS,
    held_out,
    load_shipped,
    sampling_distribution,
    trace,
)
from amlab.models.listops import (
    CausalListOpsTransformer,
    ListOpsTransformer,
    ListOpsTransformerConfig,
)
from amlab.tasks.listops import RunSpec, accuracy, make_data

EXPRESSIONS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "[SM 1 2 ]", "[MED 3 [SM 9 9 ] 1 ]"]


def model_of(causal: bool = False, **changes) -> ListOpsTransformer:
    config = ListOpsTransformerConfig(
        vocab_size=18,
        classes=18 if causal else 10,
        dim=16,
        heads=4,
        layers=3,
        max_len=16,
        seed=3,
        **changes,
    )
    model = (CausalListOpsTransformer if causal else ListOpsTransformer)(config).double()
    with torch.no_grad():  # biases and norms away from their initial 0 and 1
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    return model


def batch(model) -> torch.Tensor:
    return Tokenizer(10).encode(EXPRESSIONS, length=model.config.max_len)


@pytest.mark.parametrize(("share", "causal"), [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("ablate", [(), ("attention",), ("mlp",), ("attention", "mlp")])
def test_logits_are_the_models(ablate, share, causal):
    """A causal model's logits, probabilities and logit lens are read at every position."""
    model = model_of(share_weights=share, causal=causal)
    tokens = batch(model)
    model.ablate = frozenset(ablate)
    with torch.no_grad():
        want = model(tokens)
        hidden = model.hidden_states(tokens)
    for row in range(len(tokens)):
        got = trace(
            model, tokens[row], attention="attention" not in ablate, mlp="mlp" not in ablate
        )
        torch.testing.assert_close(got["logits"], want[row], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["blocks"][-1]["out"], hidden[row], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["blocks"][-1]["lens_logits"], got["logits"])
        torch.testing.assert_close(got["probs"], torch.softmax(want[row], -1))


def test_every_blocks_output_is_a_shallower_models():
    """Block i's output is the hidden state of the model cut after block i."""
    model = model_of()
    tokens = batch(model)
    got = trace(model, tokens[0])
    for layers in (1, 2):
        cut = ListOpsTransformer(replace(model.config, layers=layers)).double()
        cut.load_state_dict(model.state_dict(), strict=False)
        with torch.no_grad():
            want = cut.hidden_states(tokens[:1])[0]
            lens = cut(tokens[:1])[0]
        torch.testing.assert_close(got["blocks"][layers - 1]["out"], want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["blocks"][layers - 1]["lens_logits"], lens)


def test_intermediates_are_the_modules_outputs():
    model = model_of()
    tokens = batch(model)[1]
    got = trace(model, tokens)
    n, keep = len(tokens), tokens != 0
    block = model.blocks[0]
    with torch.no_grad():
        x = model.embed(tokens) + model.position(torch.arange(n))
        torch.testing.assert_close(got["x"], x)
        b = got["blocks"][0]
        torch.testing.assert_close(b["ln1"], block.norm1(x))
        q, k, v = block.qkv(block.norm1(x)).split(16, -1)
        torch.testing.assert_close(b["q"].transpose(0, 1).reshape(n, 16), q)
        torch.testing.assert_close(b["k"].transpose(0, 1).reshape(n, 16), k)
        torch.testing.assert_close(b["v"].transpose(0, 1).reshape(n, 16), v)
        torch.testing.assert_close(
            b["attn_out"], block.attention(x[None], keep[None, None, None])[0]
        )
        torch.testing.assert_close(b["mlp_out"], block.mlp(b["mid"]))
        torch.testing.assert_close(b["mlp_post"], torch.nn.functional.gelu(b["mlp_pre"]))
    weights = b["weights"]
    assert torch.all(weights[:, :, ~keep] == 0) and torch.all(
        b["scores"][:, :, ~keep] == -torch.inf
    )
    causal = trace(model_of(causal=True), tokens)["blocks"][0]
    after = torch.ones(n, n, dtype=torch.bool).triu(1)  # keys after the query
    assert torch.all(causal["scores"][:, after] == -torch.inf)
    assert torch.all(causal["weights"][:, after] == 0) and torch.all(
        causal["weights"][:, 0, 0] == 1
    )
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, n, dtype=torch.float64))
    torch.testing.assert_close(b["heads"], weights @ b["v"])


@pytest.mark.parametrize("causal", [False, True])
def test_a_head_switched_off_is_its_projection_columns_zeroed(causal):
    model = model_of(causal=causal)
    tokens = batch(model)
    for block, head in ((0, 1), (2, 3)):
        cut = model_of(causal=causal)
        with torch.no_grad():
            cut.blocks[block].proj.weight[:, head * 4 : (head + 1) * 4] = 0
            want = cut(tokens)
        for row in range(len(tokens)):
            got = trace(model, tokens[row], heads_off=[(block, head)])
            torch.testing.assert_close(got["logits"], want[row], rtol=1e-12, atol=1e-12)
            assert torch.all(got["blocks"][block]["mixed"][:, head * 4 : (head + 1) * 4] == 0)
    plain = trace(model, tokens[0])["logits"]
    assert not torch.allclose(trace(model, tokens[0], heads_off=[(0, 1)])["logits"], plain)


def test_bad_input_is_refused():
    model = model_of()
    with pytest.raises(AmlabError, match="max_len"):
        trace(model, torch.ones(17, dtype=torch.long))
    with pytest.raises(AmlabError, match="no head"):
        trace(model, torch.ones(3, dtype=torch.long), heads_off=[(3, 0)])
    with pytest.raises(AmlabError, match="0..17"):
        trace(model, torch.tensor([1, 18]))
    with pytest.raises(AmlabError, match="int64"):
        trace(model, torch.ones(2, 3, dtype=torch.long))


def test_the_sampling_distribution_keeps_the_top_tokens():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(12, generator=g, dtype=torch.float64)
        for temperature in (0.5, 1.0, 3.0):
            plain = torch.softmax(logits / temperature, -1)
            torch.testing.assert_close(sampling_distribution(logits, temperature), plain)
            greedy = sampling_distribution(logits, temperature, top_k=1)
            assert greedy[logits.argmax()] == 1 and greedy.sum() == 1
            assert torch.equal(sampling_distribution(logits, temperature, top_p=0.0), greedy)
            top3 = sampling_distribution(logits, temperature, top_k=3)
            assert set(top3.nonzero().squeeze(1).tolist()) == set(logits.topk(3).indices.tolist())
            for top_p in (0.3, 0.6, 0.9):
                kept = sampling_distribution(logits, temperature, top_p=top_p) > 0
                mass = plain[kept].sum()
                # the kept tokens are the most likely, reach top_p, and the least of them is needed
                dropped = plain[~kept]
                assert not len(dropped) or plain[kept].min() >= dropped.max()
                assert mass >= top_p and mass - plain[kept].min() < top_p
    with pytest.raises(AmlabError, match="temperature"):
        sampling_distribution(torch.zeros(3), 0.0)


@pytest.mark.parametrize("name", list(SHIPPED_LISTOPS))
def test_the_shipped_models_score_what_their_record_says(name):
    """The held-out accuracy the view states is the shipped model's on the test split that
    `amlab listops train` drew, and the examples the view offers are that split's."""
    model, record = load_shipped(name)
    spec = RunSpec(**{**record["spec"], "ops": tuple(record["spec"]["ops"])})
    test = make_data(spec)["test"]
    assert held_out(record, 50) == test.expressions[:50]
    result = accuracy(model, test)
    assert result["accuracy"] == pytest.approx(record["test_accuracy"], abs=1e-6)
    assert result["per_op"] == pytest.approx(record["test_per_op"], abs=1e-6)
    assert model.causal == (name == "causal") and model.num_parameters() == record["parameters"]
