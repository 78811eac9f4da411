"""Learned denoisers: energy parameterisation against autograd, classifier-free guidance,
saving, and training through the shared loop (exact resume, it learns)."""

import pytest
import torch

from amlab.diffusion import (
    ConvDenoiser,
    MLPDenoiser,
    TextConvDenoiser,
    VESchedule,
    VPSchedule,
    denoising_loss,
    sample,
)
from amlab.diffusion.networks import ModulatedNormConv
from amlab.errors import AmlabError
from amlab.tasks.diffusion import train_denoiser
from amlab.training import TrainConfig


def mlp(schedule=None, **kw):
    torch.manual_seed(0)
    return MLPDenoiser(3, schedule or VESchedule(0.02, 5.0), hidden=16, layers=2, **kw).double()


def conv(schedule=None, **kw):
    torch.manual_seed(0)
    return ConvDenoiser((4, 4), schedule or VESchedule(0.02, 5.0), channels=8, blocks=1, **kw)


def states(model, b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, model.dim, generator=g, dtype=model._reference().dtype)


MODELS = [
    ("mlp-ve", lambda **kw: mlp(**kw)),
    ("mlp-vp", lambda **kw: mlp(VPSchedule(), **kw)),
    ("conv-ve", lambda **kw: conv(**kw).double()),
]


@pytest.mark.parametrize("name,make", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("classes", [0, 3])
def test_energy_model_score_is_minus_grad_energy(name, make, classes):
    model = make(energy=True, num_classes=classes)
    labels = None if classes == 0 else torch.tensor([0, 2, -1, 1, 0])
    schedule = model.schedule
    for t in (max(schedule.t_end, 0.05), 0.5, 1.0):
        x = states(model).requires_grad_(True)
        e = model.energy(x, t, labels, guidance=1.5)
        (grad,) = torch.autograd.grad(e.sum(), x)
        s2 = schedule.noise_level(t) ** 2
        score = model.score(x.detach(), t, labels, guidance=1.5)
        assert torch.allclose(score, -grad / s2, rtol=1e-9, atol=1e-9)
        # and the denoiser is one descent step of size 1 on the energy in y = x / alpha
        alpha = schedule.alpha(t)
        denoised = model.denoise(x.detach(), t, labels, guidance=1.5)
        assert torch.allclose(denoised, x.detach() / alpha - grad * alpha, atol=1e-9)


def test_direct_model_has_no_energy():
    model = mlp()
    with pytest.raises(AmlabError, match="no energy"):
        model.energy(states(model), 0.5)


@pytest.mark.parametrize("energy", [False, True])
def test_guidance_scale_zero_and_one_are_the_unconditional_and_conditional_models(energy):
    model = mlp(num_classes=4, energy=energy)
    x, t = states(model), 0.3
    y, s = x, model.schedule.noise_level(t)  # VE: y = x
    labels = torch.tensor([0, 1, 2, 3, 1])
    unconditional = model.denoise(x, t)
    conditional = model.denoise_scaled(y, s, labels)
    assert not torch.allclose(unconditional, conditional, atol=1e-6)  # the class matters
    assert torch.equal(model.denoise(x, t, labels, guidance=0.0), unconditional)
    assert torch.allclose(model.denoise(x, t, labels, guidance=1.0), conditional, atol=1e-12)
    guided = model.denoise(x, t, labels, guidance=3.0)
    assert torch.allclose(guided, unconditional + 3 * (conditional - unconditional), atol=1e-12)
    # the score follows the denoiser
    assert torch.allclose(
        model.score(x, t, labels, guidance=0.0), model.score(x, t), atol=1e-12, rtol=0
    )


def test_save_and_load_round_trip(tmp_path):
    model = conv(num_classes=2, energy=True)
    model.save(tmp_path / "m")
    loaded = ConvDenoiser.load(tmp_path / "m")
    assert loaded.config == model.config
    x = states(model)
    assert torch.equal(
        loaded.denoise(x, 0.4, [1, 0, 1, 1, 0]), model.denoise(x, 0.4, [1, 0, 1, 1, 0])
    )
    with pytest.raises(AmlabError, match="not a MLPDenoiser|holds a"):
        MLPDenoiser.load(tmp_path / "m")


def old_layout(state: dict, blocks: int) -> dict:
    """A ConvDenoiser's tensors in the layout before its FiLM conditioning (amlab 42a42e6^):
    per block a Linear ``emb.i`` of the embedding added before the second block, which was
    GroupNorm (with affine), SiLU and a conv (``second.i.0``, ``second.i.2``)."""
    old = {k: v for k, v in state.items() if not k.startswith("second.")}
    for i in range(blocks):
        conv_w, conv_b = state[f"second.{i}.conv.weight"], state[f"second.{i}.conv.bias"]
        channels, embed_dim = conv_w.shape[0], state[f"second.{i}.modulation.weight"].shape[1]
        old[f"emb.{i}.weight"] = torch.zeros(channels, embed_dim)
        old[f"emb.{i}.bias"] = torch.zeros(channels)
        old[f"second.{i}.0.weight"], old[f"second.{i}.0.bias"] = (
            torch.ones(channels),
            torch.zeros(channels),
        )
        old[f"second.{i}.2.weight"], old[f"second.{i}.2.bias"] = conv_w, conv_b
    return old


def test_a_file_of_the_layout_before_film_says_to_retrain_not_to_re_save(tmp_path):
    """The saved tensors of a ConvDenoiser (or TextConvDenoiser) from before its conditioning
    moved after the GroupNorm cannot be converted: the error says to train it again. A
    config and tensors that merely disagree (an edited ``blocks``) still say to re-save."""
    from safetensors.torch import save_file

    model = ConvDenoiser((4, 4), VESchedule(0.02, 5.0), channels=8, blocks=2, num_classes=2)
    model.save(tmp_path / "old")
    save_file(old_layout(model.state_dict(), 2), tmp_path / "old" / "tensors.safetensors")
    with pytest.raises(AmlabError, match="earlier layout") as caught:
        ConvDenoiser.load(tmp_path / "old")
    message = str(caught.value)
    assert "FiLM" in message and "Train the model again" in message
    assert "re-save the model" not in message
    text = TextConvDenoiser((4, 4), VESchedule(0.02, 5.0), WORDS, channels=8, blocks=1)
    text.save(tmp_path / "text")
    save_file(old_layout(text.state_dict(), 1), tmp_path / "text" / "tensors.safetensors")
    with pytest.raises(AmlabError, match="TextConvDenoiser of an earlier layout"):
        TextConvDenoiser.load(tmp_path / "text")
    model.save(tmp_path / "edited")
    config = tmp_path / "edited" / "config.json"
    config.write_text(config.read_text().replace('"blocks": 2', '"blocks": 1'))
    with pytest.raises(AmlabError, match="do not fit ConvDenoiser") as caught:
        ConvDenoiser.load(tmp_path / "edited")
    assert str(caught.value).endswith("re-save the model.")


def two_points():
    return torch.tensor([[1.0, 0.0], [-1.0, 0.0]])


def small_mlp(energy=True):
    torch.manual_seed(1)
    return MLPDenoiser(2, VESchedule(0.02, 3.0), hidden=32, layers=2, energy=energy)


def test_training_resumes_exactly_and_learns(tmp_path):
    config = TrainConfig(steps=12, lr=3e-3, checkpoint_every=4, seed=3)
    straight = small_mlp()
    train_denoiser(straight, two_points(), config, batch_size=32, out=tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_at_6(done, total, metrics):
        if done == 6:
            raise Stop

    interrupted = small_mlp()
    with pytest.raises(Stop):
        train_denoiser(
            interrupted, two_points(), config, batch_size=32, out=tmp_path / "b", on_step=stop_at_6
        )
    resumed = small_mlp()
    result = train_denoiser(
        resumed, two_points(), config, batch_size=32, out=tmp_path / "b", resume=True
    )
    assert result.resumed_from == 4
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_trained_energy_model_samples_the_two_points():
    model = small_mlp(energy=True)
    config = TrainConfig(steps=400, lr=1e-2, warmup=20, checkpoint_every=1000, seed=0)
    result = train_denoiser(model, two_points(), config, batch_size=64)
    assert sum(result.losses[-50:]) < 0.5 * sum(result.losses[:50])
    g = torch.Generator().manual_seed(0)
    out = sample(model.score_fn(), model.schedule, model.schedule.prior(200, 2, g), steps=40)
    dist = torch.cdist(out.states, two_points()).min(1).values
    assert (dist < 0.25).float().mean() > 0.9, dist
    assert 0.25 < (out.states[:, 0] > 0).float().mean() < 0.75  # both points, not one


def test_loss_draws_everything_from_the_generator():
    model = small_mlp(energy=False)
    for log_normal in (None, (-1.2, 1.2)):
        loss = denoising_loss(two_points(), batch_size=8, log_normal=log_normal)
        first = loss(model, 0, torch.Generator().manual_seed(5))[0]
        again = loss(model, 0, torch.Generator().manual_seed(5))[0]
        other = loss(model, 0, torch.Generator().manual_seed(6))[0]
        assert torch.equal(first, again) and not torch.equal(first, other)
        assert torch.isfinite(first)


def test_loss_and_model_input_checks():
    model = mlp(num_classes=2)
    x = states(model)
    with pytest.raises(AmlabError, match="labels must lie"):
        model.denoise(x, 0.5, torch.tensor([0, 1, 2, 0, 0]))
    with pytest.raises(AmlabError, match="integers"):
        model.denoise(x, 0.5, torch.zeros(5))
    with pytest.raises(AmlabError, match=r"shape \(5,\)"):
        model.denoise(x, 0.5, torch.zeros(3, dtype=torch.long))
    with pytest.raises(AmlabError, match="unconditional"):
        mlp().denoise(x, 0.5, torch.zeros(5, dtype=torch.long))
    with pytest.raises(AmlabError, match="D = 3"):
        denoising_loss(torch.zeros(4, 2))(model, 0, torch.Generator())
    with pytest.raises(AmlabError, match="labels must have shape"):
        denoising_loss(torch.zeros(4, 3), torch.zeros(3))
    with pytest.raises(AmlabError, match="label_dropout"):
        denoising_loss(torch.zeros(4, 3), label_dropout=2.0)
    with pytest.raises(AmlabError, match="shape must be"):
        ConvDenoiser((4,), VESchedule())


# -- the text-conditioned conv net ---------------------------------------------------------------
WORDS = ("a", "thin", "thick", "7")


def text_conv(seed=0, **kw):
    return TextConvDenoiser((4, 4), VESchedule(0.02, 5.0), WORDS, channels=16, blocks=1, seed=seed)


def test_text_guidance_and_the_empty_prompt():
    model = text_conv().double()
    x, t = states(model, b=3), 0.3
    ids = torch.tensor([[0, 2, 3], [1, 3, -1], [3, -1, -1]])
    empty = torch.full_like(ids, -1)
    unconditional = model.denoise(x, t)
    assert torch.equal(model.denoise(x, t, empty), unconditional)  # all padding: no prompt
    conditional = model.denoise(x, t, ids)
    assert not torch.allclose(conditional, unconditional, atol=1e-6)
    assert torch.equal(model.denoise(x, t, ids, guidance=0.0), unconditional)
    guided = model.denoise(x, t, ids, guidance=2.5)
    assert torch.allclose(guided, unconditional + 2.5 * (conditional - unconditional), atol=1e-12)
    # padding and word order do not change a prompt (the encoder sums its words)
    same = torch.tensor([[3, 2, 0, -1], [3, 1, -1, -1], [-1, 3, -1, -1]])
    assert torch.allclose(model.denoise(x, t, same), conditional, atol=1e-12)
    # one prompt (L,) is shared by the batch
    assert torch.equal(model.denoise(x, t, ids[0]), model.denoise(x, t, ids[:1].expand(3, -1)))


def test_text_net_keeps_the_conv_nets_weights_and_checks_its_tokens():
    text = text_conv(seed=4)
    plain = ConvDenoiser((4, 4), VESchedule(0.02, 5.0), channels=16, blocks=1, seed=4)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(text.state_dict()[name], tensor)
    x = states(text, b=2)
    with pytest.raises(AmlabError, match="token ids must lie in \\[-1, 3\\]"):
        text.denoise(x, 0.3, torch.tensor([[0, 4], [0, 1]]))
    with pytest.raises(AmlabError, match="token ids"):
        text.denoise(x, 0.3, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(AmlabError, match="shape \\(2, L\\)"):
        text.denoise(x, 0.3, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(AmlabError, match="not classes"):
        TextConvDenoiser((4, 4), VESchedule(), WORDS, num_classes=3)
    with pytest.raises(AmlabError, match="twice"):
        TextConvDenoiser((4, 4), VESchedule(), ("a", "a"))


def test_a_text_net_learns_what_its_prompts_ask_for():
    """Two images, captioned "a thin 7" and "a thick 7": prompted at a high noise level, the
    trained net returns the prompted image; unprompted, their mean (the labels dropped)."""
    thin, thick = torch.zeros(16), torch.zeros(16)
    thin[[1, 5, 9, 13]] = 1.0
    thick[[1, 2, 5, 6, 9, 10, 13, 14]] = 1.0
    data = torch.stack([thin, thick])
    ids = torch.tensor([[0, 1, 3], [0, 2, 3]])
    model = text_conv(seed=2)
    config = TrainConfig(steps=500, lr=1e-2, warmup=20, seed=0)
    train_denoiser(model, data, config, labels=ids, batch_size=32, label_dropout=0.3)
    y = torch.zeros(2, 16)
    with torch.no_grad():
        prompted = model.denoise_scaled(y, 3.0, ids)
        unprompted = model.denoise_scaled(y, 3.0)
    assert (prompted - data).abs().max() < 0.2
    assert (unprompted - data.mean(0)).abs().max() < 0.2


@pytest.mark.parametrize("channels", [8, 32])
def test_the_conv_nets_conditioning_reaches_the_output(channels):
    """The noise level and the class reach the output at any width. (Added before a
    GroupNorm, as a constant per channel, they vanished where a group holds one channel.)"""
    torch.manual_seed(0)
    model = ConvDenoiser((8, 8), VESchedule(0.02, 5.0), channels=channels, blocks=2, num_classes=10)
    model = model.double()
    u = states(model, b=4)
    with torch.no_grad():
        low = model.noise_embedding(torch.full((4,), 0.1, dtype=torch.float64))
        high = model.noise_embedding(torch.full((4,), 2.0, dtype=torch.float64))
        assert (model.body(u, low) - model.body(u, high)).abs().max() > 1e-3
        three = model.denoise_scaled(u, 0.7, torch.full((4,), 3))
        five = model.denoise_scaled(u, 0.7, torch.full((4,), 5))
        assert (three - five).abs().max() > 1e-3
    text = TextConvDenoiser((4, 4), VESchedule(0.02, 5.0), WORDS, channels=channels, blocks=1)
    x = states(text.double(), b=2)
    with torch.no_grad():
        prompted = text.denoise_scaled(x, 0.7, torch.tensor([[0, 1], [0, 1]]))
        other = text.denoise_scaled(x, 0.7, torch.tensor([[2, 3], [2, 3]]))
    assert (prompted - other).abs().max() > 1e-3


def test_modulated_norm_conv_is_a_scale_and_shift_after_a_group_norm():
    torch.manual_seed(0)
    block = ModulatedNormConv(2, 4, 3).double()
    emb = torch.randn(3, 3, dtype=torch.float64)
    scale, shift = torch.split(block.modulation(emb).detach(), 4, dim=1)
    assert torch.equal(scale, torch.zeros(3, 4, dtype=torch.float64))  # starts as identity
    assert shift.abs().min() > 0
    with torch.no_grad():
        block.modulation.weight.normal_()  # as training moves the scale
    h = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    groups = h.reshape(3, 2, -1)  # two groups of two channels
    mean, var = groups.mean(-1, keepdim=True), groups.var(-1, unbiased=False, keepdim=True)
    normed = ((groups - mean) / (var + 1e-5).sqrt()).reshape_as(h)
    film = emb @ block.modulation.weight.T + block.modulation.bias
    scale, shift = film[:, :4, None, None], film[:, 4:, None, None]
    expected = block.conv(torch.nn.functional.silu(normed * (1 + scale) + shift))
    assert torch.allclose(block(h, emb), expected, atol=1e-12)


def test_a_checkpoint_of_the_layout_before_film_says_to_start_afresh(tmp_path):
    """A training checkpoint of a ConvDenoiser from before its FiLM conditioning cannot be
    resumed: the error says so (delete it, start afresh), not to resume with the same
    settings, which it already has."""
    from safetensors.torch import save_file

    from amlab.training import MODEL_FILE, latest_checkpoint, load_checkpoint, train

    def make():
        return ConvDenoiser((4, 4), VESchedule(0.02, 5.0), channels=8, blocks=2, seed=0)

    model = make()
    train(
        model,
        lambda m, step, g: sum((p**2).sum() for p in m.parameters()),
        TrainConfig(steps=1, checkpoint_every=1),
        tmp_path,
    )
    ckpt = latest_checkpoint(tmp_path)
    save_file(old_layout(model.state_dict(), 2), ckpt / MODEL_FILE)
    with pytest.raises(AmlabError, match="ConvDenoiser of an earlier layout") as caught:
        load_checkpoint(ckpt, make())
    message = str(caught.value)
    assert "FiLM" in message and "delete the checkpoint to start afresh" in message
    assert "resume with the same model settings" not in message
