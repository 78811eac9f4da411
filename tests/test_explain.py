"""amlab.explain: the exported data and test vectors, the server, the CLI commands.

The app itself is tested in the browser (web/e2e, `make test`) and its math by vitest against
the vectors checked here."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from amlab.analysis.minima import lsr_minima_brute_force
from amlab.cli import app
from amlab.data import digits
from amlab.data.captions import VOCABULARY, CaptionScheme
from amlab.diffusion import ConvDenoiser, MLPDenoiser, TextConvDenoiser, VESchedule
from amlab.energy.lse import lse_energy
from amlab.energy.random_features import draw_projections
from amlab.errors import AmlabError
from amlab.explain import STATIC_DIR, export_app_data, export_test_vectors, serve
from amlab.explain.diffusion_onnx import (
    SHIPPED_DENOISER,
    SHIPPED_TEXT_DENOISER,
    denoiser_onnx_bytes,
    export_denoiser_onnx,
    export_text_denoiser_onnx,
)
from amlab.explain.et_onnx import OUTPUTS, SHIPPED_ET, et_onnx_bytes, export_et_onnx
from amlab.explain.export import MAX_FEATURES, PROJECTION_SEED, principal_axes
from amlab.explain.fairness import SHIPPED_FAIRNESS
from amlab.explain.fairness import file_name as fairness_file
from amlab.explain.gallery import SHIPPED_GALLERY
from amlab.io import model_hash
from amlab.models.masked_image_et import MaskedImageET

# tracing to ONNX writes through the onnx package (the onnx extra, which make setup installs)
needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None, reason="needs the onnx extra"
)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    path = export_test_vectors(tmp_path_factory.mktemp("vectors") / "vectors.json")
    return json.loads(path.read_text())


@needs_onnx
def test_app_data_is_the_packages_data(tmp_path):
    export_app_data(tmp_path, max_features=64)
    raw = json.loads((tmp_path / "digits.json").read_text())
    images = torch.tensor(raw["pixels"], dtype=torch.float64).reshape(-1, 64) / raw["scale"]
    data = digits(dtype=torch.float64)
    assert torch.equal(images, data.images) and raw["labels"] == data.labels.tolist()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    info = manifest["projections"]
    assert (info["rows"], info["dim"], info["seed"]) == (64, 64, PROJECTION_SEED)
    S = np.frombuffer((tmp_path / info["file"]).read_bytes(), dtype="<f4").reshape(64, 64)
    assert np.array_equal(S, draw_projections(64, 64, PROJECTION_SEED)[0].numpy())


@needs_onnx
def test_shipped_data_matches_an_export(tmp_path):
    """The committed build carries the data the current package exports. The ONNX graphs are
    compared byte for byte under the torch that traced them: another release traces the same
    model to other (equivalent) nodes, and stamps its own version in the file."""
    import onnx

    export_app_data(tmp_path)
    shipped = ("digits.json", "manifest.json", "projections.bin")
    listops = tuple(f"listops-{name}.bin" for name in ("joint", "sum", "causal"))
    fairness = ("fairness-data.json", *(fairness_file(name) for name in SHIPPED_FAIRNESS))
    for name in shipped + listops + fairness:
        assert (STATIC_DIR / "data" / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert json.loads((tmp_path / "manifest.json").read_text())["projections"]["rows"] == (
        MAX_FEATURES
    )
    for name in ("et-digits.onnx", "diffusion-digits.onnx", "text-digits.onnx"):
        shipped = (STATIC_DIR / "data" / name).read_bytes()
        producer = onnx.load_from_string(shipped).producer_version
        if producer != torch.__version__.split("+")[0]:
            pytest.skip(f"{name} was traced by torch {producer}, this is {torch.__version__}")
        assert shipped == (tmp_path / name).read_bytes(), name


def test_onnx_export_without_onnx_is_a_clean_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the onnx extra were not installed
    with pytest.raises(AmlabError, match=r"amlab\[onnx\]"):
        denoiser_onnx_bytes(ConvDenoiser.load(SHIPPED_DENOISER))
    out = tmp_path / "data"
    result = CliRunner().invoke(app, ["export", "--out", str(out)])
    assert result.exit_code == 2 and "pip install 'amlab[onnx]'" in result.output
    assert not out.exists()  # refused before anything was written


def test_vectors_lse_gradients_are_autograd(vectors):
    for case in vectors["lse"]:
        mem = torch.tensor(case["memories"], dtype=torch.float64)
        x = torch.tensor(case["x"], dtype=torch.float64, requires_grad=True)
        energy = lse_energy(x, mem, case["beta"])
        (grad,) = torch.autograd.grad(energy.sum(), x)
        np.testing.assert_allclose(case["energy"], energy.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(case["grad"], grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            case["gd_next"], (x - 0.1 * grad).detach().numpy(), rtol=1e-9, atol=1e-12
        )


def test_vectors_lsr_minima_are_the_brute_force_ones(vectors):
    assert sum(case["emergent"] for case in vectors["lsr_minima"]) > 0
    for case in vectors["lsr_minima"][:4]:  # M <= 18: 2^M subsets
        oracle = lsr_minima_brute_force(case["memories"], case["beta"])
        assert (case["stored"], case["emergent"]) == (oracle.num_stored, oracle.num_emergent)
        want = sorted(tuple(s.nonzero().squeeze(1).tolist()) for s in oracle.supports)
        assert sorted(tuple(s) for s in case["supports"]) == want


def test_vectors_lsr_cover_both_sides_of_the_supports(vectors):
    energies = [e for case in vectors["lsr"] for e in case["energy"]]
    assert None in energies and any(e is not None for e in energies)


def test_vectors_drdam_energy_is_the_feature_formula(vectors):
    for case in vectors["drdam"]:
        phi = torch.tensor(case["features"], dtype=torch.float64)
        T = torch.tensor(case["T"], dtype=torch.float64)
        expected = -torch.log((phi @ T).clamp_min(case["eps"])) / case["beta"]
        np.testing.assert_allclose(case["energy"], expected.numpy(), rtol=1e-10)


def test_serve_serves_the_built_app():
    server = serve(0, background=True)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(url) as response:
            assert b'<div id="app">' in response.read()
        with urllib.request.urlopen(url + "data/manifest.json") as response:
            assert response.headers["Content-Type"] == "application/json"
        scripts = list((STATIC_DIR / "assets").glob("*.js"))
        with urllib.request.urlopen(url + f"assets/{scripts[0].name}") as response:
            assert response.headers["Content-Type"] == "text/javascript"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("port", [-1, 70000, "http"])
def test_serve_rejects_bad_ports(port):
    with pytest.raises(AmlabError, match="port"):
        serve(port)


def test_serve_needs_a_build(tmp_path):
    with pytest.raises(AmlabError, match="make web"):
        serve(0, tmp_path)


def test_serve_reports_a_taken_port():
    first = serve(0, background=True)
    try:
        with pytest.raises(AmlabError, match="--port"):
            serve(first.server_address[1])
    finally:
        first.shutdown()
        first.server_close()


def test_cli_explain_serves_until_stopped():
    proc = subprocess.Popen(
        [sys.executable, "-m", "amlab.cli", "explain", "--port", "0", "--no-browser"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "serving http://127.0.0.1:" in line
        url = line.split("serving ")[1].split()[0]
        with urllib.request.urlopen(url) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@needs_onnx
def test_cli_export_writes_data_and_vectors(tmp_path):
    result = CliRunner().invoke(
        app, ["export", "--out", str(tmp_path / "data"), "--vectors", str(tmp_path / "v.json")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "projections.bin").stat().st_size == MAX_FEATURES * 64 * 4
    assert set(json.loads((tmp_path / "v.json").read_text())) >= {"lse", "lsr", "lsr_minima"}


def test_cli_explain_bad_port_is_a_clean_error():
    result = CliRunner().invoke(app, ["explain", "--port", "70000", "--no-browser"])
    assert result.exit_code == 2 and "port" in result.output


@pytest.fixture(scope="module")
def et_session():
    onnxruntime = pytest.importorskip("onnxruntime")  # the onnx extra

    return onnxruntime.InferenceSession(et_onnx_bytes(MaskedImageET.load(SHIPPED_ET)))


def test_et_onnx_is_the_python_model(et_session):
    """ONNX Runtime's run of the exported graph equals MaskedImageET: the completed image,
    both energy parts at every step, and the image after every step t (the model run for t
    steps); attention rows are distributions over the other tokens."""
    model = MaskedImageET.load(SHIPPED_ET)
    images = digits().images[[0, 7, 500]].float()
    g = torch.Generator().manual_seed(0)
    masks = [torch.arange(16) >= 8, torch.rand(16, generator=g) < 0.4, torch.ones(16).bool()]
    for image, masked in zip(images, masks, strict=True):
        image, masked = image[None], masked[None]
        run = dict(
            zip(
                OUTPUTS,
                et_session.run(None, {"image": image.numpy(), "masked": masked.numpy()}),
                strict=True,
            )
        )
        with torch.no_grad():
            out = model.complete(image, masked)
        parts = out.trajectory.parts
        np.testing.assert_allclose(run["completed"][-1], out.images[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run["attention_energy"], parts["attention"][:, 0], rtol=1e-5)
        np.testing.assert_allclose(run["hopfield_energy"], parts["hopfield"][:, 0], rtol=1e-5)
        pixels = model.pixel_mask(masked)[0]
        np.testing.assert_allclose(
            run["decoded"][-1][pixels], out.images[0][pixels], rtol=1e-5, atol=1e-6
        )
        probs = run["attention"]  # (T+1, H, N+1, N+1)
        assert probs.shape == (13, 4, 17, 17)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        assert (np.diagonal(probs, axis1=-2, axis2=-1) == 0).all()
    for t in (1, 5):  # the image after step t is the model's run of t steps
        model.block.steps = t
        with torch.no_grad():
            completed = model(image, masked)
        np.testing.assert_allclose(run["completed"][t], completed[0], rtol=1e-5, atol=1e-6)


def test_et_onnx_bad_inputs(tmp_path):
    with pytest.raises(AmlabError):
        export_et_onnx(tmp_path / "et.onnx", tmp_path)  # no saved model there
    model = MaskedImageET((8, 8))
    with pytest.raises(AmlabError, match="float32"):
        et_onnx_bytes(model.double())


# -- the diffusion view: the trained denoiser as ONNX, the vectors of its math -----------------
def onnx_session(model):
    """The model and an ONNX Runtime session of its exported graph."""
    onnxruntime = pytest.importorskip("onnxruntime")  # the onnx extra
    return model, onnxruntime.InferenceSession(denoiser_onnx_bytes(model))


@pytest.fixture(scope="module")
def denoiser_session():
    return onnx_session(ConvDenoiser.load(SHIPPED_DENOISER))


def test_denoiser_onnx_is_the_python_model(denoiser_session):
    """ONNX Runtime's run of the exported graph equals ConvDenoiser.denoise_scaled at noise
    levels across the schedule, for class labels and "no class" (-1) in one batch, at batch
    sizes 1 and 6; and guided combinations of its rows equal Denoiser.denoise with guidance."""
    model, session = denoiser_session
    g = torch.Generator().manual_seed(1)
    clean = digits().images[:6].float()
    for s in (0.01, 0.1, 0.5, 2.0, 10.0):
        y = clean + s * torch.randn(clean.shape, generator=g)
        labels = torch.tensor([3, -1, 0, 9, -1, 7])
        for rows in (slice(0, 1), slice(0, 6)):
            feeds = {
                "y": y[rows].numpy(),
                "s": np.full(len(labels[rows]), s, dtype=np.float32),
                "labels": labels[rows].numpy(),
            }
            (out,) = session.run(None, feeds)
            with torch.no_grad():
                expected = model.denoise_scaled(y[rows], s, labels[rows])
            np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)
    # guidance as the page does it: conditional and unconditional rows in one batch
    x, t, w = y[:2], 0.6, 2.5
    s = model.schedule.noise_level(t)
    feeds = {"y": torch.cat([x, x]).numpy(), "s": np.full(4, s, dtype=np.float32)}
    feeds["labels"] = np.array([4, 8, -1, -1])
    cond, uncond = np.split(session.run(None, feeds)[0], 2)
    with torch.no_grad():
        expected = model.denoise(x, t, torch.tensor([4, 8]), guidance=w)
    np.testing.assert_allclose(uncond + w * (cond - uncond), expected.numpy(), atol=2e-5)


@needs_onnx
def test_denoiser_onnx_export_is_deterministic_and_checks_the_model(tmp_path):
    entry = export_denoiser_onnx(tmp_path / "d.onnx")
    assert (tmp_path / "d.onnx").read_bytes() == denoiser_onnx_bytes(
        ConvDenoiser.load(SHIPPED_DENOISER)
    )
    assert entry["config"]["schedule"]["name"] == "ve" and entry["sampler"]["method"] == "heun"
    with pytest.raises(AmlabError):
        export_denoiser_onnx(tmp_path / "x.onnx", tmp_path)  # no saved model there
    schedule = VESchedule()
    with pytest.raises(AmlabError, match="float32"):
        denoiser_onnx_bytes(MLPDenoiser(4, schedule, num_classes=2).double())
    with pytest.raises(AmlabError, match="no-energy"):
        denoiser_onnx_bytes(MLPDenoiser(4, schedule, num_classes=2, energy=True))
    with pytest.raises(AmlabError, match="class-conditional"):
        denoiser_onnx_bytes(MLPDenoiser(4, schedule))


@pytest.fixture(scope="module")
def text_session():
    return onnx_session(TextConvDenoiser.load(SHIPPED_TEXT_DENOISER))


def test_text_denoiser_onnx_is_the_python_model(text_session):
    """ONNX Runtime's run of the text model's graph (text encoder inside, token ids in)
    equals TextConvDenoiser.denoise_scaled for prompts of different lengths padded with -1,
    the empty prompt among them, at batch sizes 1 and 4; more padding changes nothing; and
    the guided combination of a conditional and an unconditional row is Denoiser.denoise's."""
    model, session = text_session
    g = torch.Generator().manual_seed(2)
    clean = digits().images[:4].float()
    tokens = torch.tensor([[0, 2, 6, 14], [8, -1, -1, -1], [-1, -1, -1, -1], [1, 3, 5, 16]])
    for s in (0.01, 0.3, 2.0, 10.0):
        y = clean + s * torch.randn(clean.shape, generator=g)
        with torch.no_grad():
            expected = model.denoise_scaled(y, s, tokens).numpy()
        for rows in (slice(0, 1), slice(0, 4)):
            n = len(tokens[rows])
            feeds = {"y": y[rows].numpy(), "s": np.full(n, s, dtype=np.float32)}
            (out,) = session.run(None, {**feeds, "tokens": tokens[rows].numpy()})
            np.testing.assert_allclose(out, expected[rows], rtol=1e-5, atol=1e-5)
            padded = torch.cat([tokens[rows], torch.full((n, 3), -1)], 1).numpy()
            (longer,) = session.run(None, {**feeds, "tokens": padded})
            np.testing.assert_array_equal(longer, out)
    x, t, w = y[:2], 0.6, 2.5
    feeds = {"y": torch.cat([x, x]).numpy()}
    feeds["s"] = np.full(4, model.schedule.noise_level(t), dtype=np.float32)
    feeds["tokens"] = np.array([[0, 9, -1], [2, 4, 12], [-1, -1, -1], [-1, -1, -1]])
    cond, uncond = np.split(session.run(None, feeds)[0], 2)
    with torch.no_grad():
        expected = model.denoise(x, t, torch.tensor([[0, 9, -1], [2, 4, 12]]), guidance=w)
    np.testing.assert_allclose(uncond + w * (cond - uncond), expected.numpy(), atol=2e-5)


@needs_onnx
def test_text_denoiser_export_carries_the_words_and_captions(tmp_path):
    entry = export_text_denoiser_onnx(tmp_path / "t.onnx")
    model = TextConvDenoiser.load(SHIPPED_TEXT_DENOISER)
    assert (tmp_path / "t.onnx").read_bytes() == denoiser_onnx_bytes(model)
    assert entry["inputs"] == ["y", "s", "tokens"]
    assert tuple(entry["config"]["vocabulary"]) == VOCABULARY == model.vocabulary
    assert entry["vocabulary"] == list(VOCABULARY)
    assert entry["attribute_words"]["slant"] == ["upright", "slanted"]
    # each embedded digit's caption under the terciles saved with the model
    edges = json.loads((SHIPPED_TEXT_DENOISER / "captions.json").read_text())["edges"]
    data = digits()
    scheme = CaptionScheme({k: tuple(v) for k, v in edges.items()})
    assert entry["captions"] == scheme.captions(data.images, data.shape, data.labels)
    assert entry["captions"][0] == "a thin large slanted 0" and data.labels[0] == 0
    assert entry["metrics"]["text"] is True
    # the model's hash, which the shipped gallery's rows name: the gallery view can tell a
    # gallery that the diffusion view redraws from one of another model
    assert entry["model_hash"] == model_hash(SHIPPED_TEXT_DENOISER)
    gallery = pq.read_table(SHIPPED_GALLERY / "metadata.parquet", columns=["model_hash"])
    assert set(gallery["model_hash"].to_pylist()) == {entry["model_hash"]}
    with pytest.raises(AmlabError):
        export_text_denoiser_onnx(tmp_path / "x.onnx", tmp_path)  # no saved model there


def test_vectors_prompts_are_split_words_of_the_vocabulary(vectors):
    """The tokeniser's vectors by hand: Python's lower() and split(), each word's index."""
    cases = vectors["diffusion"]["prompts"]["cases"]
    for case in cases:
        found = case["prompt"].lower().split()
        unknown = [w for i, w in enumerate(found) if w not in VOCABULARY and w not in found[:i]]
        assert case["unknown"] == unknown
        if not unknown:
            assert case["ids"] == [VOCABULARY.index(w) for w in found]
    assert any(c["unknown"] for c in cases) and any(c.get("request") is None for c in cases)
    assert any(c["unknown"] == [] and c["request"] is None for c in cases)


def test_vectors_empirical_denoiser_is_the_brute_force_posterior_mean(vectors):
    for case in vectors["diffusion"]["empirical"]:
        mem = torch.tensor(case["memories"], dtype=torch.float64)
        y = torch.tensor(case["y"], dtype=torch.float64)
        d2 = ((y[:, None] - mem[None]) ** 2).sum(-1)
        for level in case["levels"]:
            s = level["s"]
            weights = torch.softmax(-d2 / (2 * s * s), 1)
            np.testing.assert_allclose(level["denoised"], (weights @ mem).numpy(), atol=1e-12)
            energy = -(s * s) * torch.logsumexp(-d2 / (2 * s * s), 1)
            np.testing.assert_allclose(level["energy"], energy.numpy(), rtol=1e-12)


def test_vectors_sampler_is_heuns_method_on_the_flow(vectors):
    """Each recorded step of the VE cases is Heun's step of dx/dt = log(max/min) (x - D)."""
    for case in vectors["diffusion"]["sampler"]:
        if case["schedule"]["name"] != "ve":
            continue
        mem = torch.tensor(case["memories"], dtype=torch.float64)
        schedule = VESchedule(case["schedule"]["sigma_min"], case["schedule"]["sigma_max"])
        rate = math.log(schedule.sigma_max / schedule.sigma_min)

        def velocity(x, t, mem=mem, schedule=schedule, rate=rate):
            d2 = ((x[:, None] - mem[None]) ** 2).sum(-1)
            weights = torch.softmax(-d2 / (2 * schedule.sigma(t) ** 2), 1)
            return rate * (x - weights @ mem)

        path = torch.tensor(case["path"], dtype=torch.float64)
        assert torch.equal(path[0], torch.tensor(case["start"], dtype=torch.float64))
        times = torch.linspace(1, 0, case["steps"] + 1, dtype=torch.float64).tolist()
        for k in range(case["steps"]):
            x, t, t1 = path[k], times[k], times[k + 1]
            v = velocity(x, t)
            moved = x + v * (t1 - t)
            expected = x + 0.5 * (v + velocity(moved, t1)) * (t1 - t)
            np.testing.assert_allclose(path[k + 1], expected, rtol=1e-10, atol=1e-12)


def test_principal_axes_are_the_covariance_eigenvectors():
    x = digits(dtype=torch.float64).images
    pca = principal_axes(x)
    axes = torch.tensor(pca["axes"], dtype=torch.float64)
    np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-6)
    values, vectors = np.linalg.eigh(np.cov(x.numpy().T))
    top = vectors[:, ::-1][:, :2].T
    np.testing.assert_allclose(np.abs(axes.numpy() @ top.T), np.eye(2), atol=1e-5)
    np.testing.assert_allclose(pca["explained"], values[::-1][:2] / values.sum(), atol=1e-4)
    assert all(a[int(np.abs(a).argmax())] > 0 for a in pca["axes"])
    np.testing.assert_allclose(pca["mean"], x.mean(0).numpy(), atol=1e-7)
