"""What the explainer needs from the Python package, written as JSON and raw float32.

- :func:`export_app_data`: the data the app computes with (the embedded digits, the
  DrDAM random projections, the trained Energy Transformer and the trained denoisers as ONNX,
  the digits' principal axes), so the browser and the Python models share their numbers.
- :func:`export_test_vectors`: energies, gradients, one descent step, LSR minima, DrDAM
  features, the diffusion schedules, the empirical denoiser and its sampler, prompts'
  tokens and a text-prompted run computed here, against which the app's TypeScript is
  tested (vitest).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from amlab.analysis.minima import lsr_minima
from amlab.data.captions import request, tokenize, unknown_words
from amlab.data.images import digits, digits_split
from amlab.diffusion import (
    EmpiricalDenoiser,
    Schedule,
    TextConvDenoiser,
    VESchedule,
    VPSchedule,
    sample,
)
from amlab.energy.random_features import draw_projections, features
from amlab.errors import AmlabError, check_positive_int
from amlab.explain.diffusion_onnx import (
    SHIPPED_DENOISER,
    SHIPPED_TEXT_DENOISER,
    export_denoiser_onnx,
    export_text_denoiser_onnx,
    prompt_words,
)
from amlab.explain.et_onnx import export_et_onnx
from amlab.explain.fairness import export_fairness, fairness_vectors
from amlab.explain.listops import (
    digit_embeddings,
    export_listops,
    listops_vectors,
    load_shipped,
    sampling_vectors,
)
from amlab.explain.onnx_graph import require_onnx
from amlab.explain.pca import map_coordinates, principal_axes
from amlab.io import atomic_write_bytes, atomic_write_text, read_json
from amlab.models import DenseAM, RandomFeatureAM

#: DrDAM projections shipped with the app; the feature slider uses the first Y rows of S.
MAX_FEATURES = 4096
PROJECTION_SEED = 0


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    atomic_write_text(path, text)


def export_app_data(out: str | Path, *, max_features: int = MAX_FEATURES) -> list[Path]:
    """Write ``digits.json``, ``projections.bin`` and ``manifest.json`` into ``out``.

    Also ``et-digits.onnx``: the shipped trained MaskedImageET (:mod:`amlab.explain.et_onnx`),
    and ``diffusion-digits.onnx``: the shipped class-conditional denoiser
    (:mod:`amlab.explain.diffusion_onnx`), its manifest entry carrying its training metrics
    and the digits' two principal axes (the diffusion view's 2-D projection);
    ``text-digits.onnx``: the shipped text-prompted denoiser, its entry carrying its
    vocabulary, the digits' captions and its training metrics; and
    ``listops-joint.bin``/``listops-sum.bin``/``listops-causal.bin``: the shipped ListOps
    transformers (:mod:`amlab.explain.listops`), each with the principal axes of its digit
    embeddings; and ``fairness-data.json`` with ``fairness-<model>.bin``: the fairness view's
    token groups, balanced test set and shipped text classifiers (:mod:`amlab.explain.fairness`).
    digits.json: the 1797 embedded 8x8 digits as pixel counts 0..16 (the app divides by 16,
    as :func:`amlab.data.digits` does). projections.bin: S ~ N(0, I) (max_features, 64) of
    :func:`amlab.energy.random_features.draw_projections` with seed 0, float32 little-endian.
    """
    max_features = check_positive_int(max_features, "max_features")
    require_onnx()  # before anything is written: no half-exported directory
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = digits(dtype=torch.float64)
    counts = torch.round(data.images * 16).to(torch.int64)
    _write_json(
        out / "digits.json",
        {
            "shape": list(data.shape),
            "scale": 16,
            "labels": data.labels.tolist(),
            "pixels": counts.reshape(-1).tolist(),
        },
    )
    S, _ = draw_projections(data.images.shape[1], max_features, PROJECTION_SEED)
    raw = S.numpy().astype("<f4").tobytes()
    atomic_write_bytes(out / "projections.bin", raw)
    manifest = {
        "digits": {"file": "digits.json", "count": len(data), "shape": list(data.shape)},
        "projections": {
            "file": "projections.bin",
            "rows": max_features,
            "dim": int(S.shape[1]),
            "seed": PROJECTION_SEED,
            "dtype": "float32",
            "kernel": "sincos",
        },
    }
    et = export_et_onnx(out / "et-digits.onnx")
    # the digits the ET never saw in training (amlab train et's held-out fifth)
    et["held_out"] = sorted(digits_split(len(data))[1].tolist())
    manifest["et"] = et
    diffusion = export_denoiser_onnx(out / "diffusion-digits.onnx")
    diffusion["metrics"] = read_json(SHIPPED_DENOISER / "metrics.json", "train the model again")
    diffusion["pca"] = principal_axes(data.images)
    manifest["diffusion"] = diffusion
    manifest["diffusion_text"] = export_text_denoiser_onnx(out / "text-digits.onnx")
    listops = export_listops(out)
    for name, info in listops["models"].items():
        info["digit_pca"] = principal_axes(digit_embeddings(load_shipped(name)[0]))
    manifest["listops"] = listops
    manifest["fairness"] = export_fairness(out)
    from amlab.explain.gallery import copy_shipped_gallery  # pyarrow: only when exporting

    copy_shipped_gallery(out / "gallery")
    _write_json(out / "manifest.json", manifest)
    names = (
        "digits.json",
        "projections.bin",
        "et-digits.onnx",
        "diffusion-digits.onnx",
        "text-digits.onnx",
        *(info["file"] for info in listops["models"].values()),
        manifest["fairness"]["data"],
        *(info["file"] for info in manifest["fairness"]["models"].values()),
        "gallery",
        "manifest.json",
    )
    return [out / name for name in names]


def _finite_or_none(t: torch.Tensor) -> list:
    """Energies as a list, +inf (LSR outside every support) as None."""
    return [v if math.isfinite(v) else None for v in t.tolist()]


def _dense_case(mem: torch.Tensor, x: torch.Tensor, energy: str, beta: float) -> dict:
    am = DenseAM(mem, energy=energy, beta=beta)
    e, g = am.energy_and_grad(x)
    case = {
        "memories": mem.tolist(),
        "beta": beta,
        "x": x.tolist(),
        "energy": _finite_or_none(e),
        "grad": g.tolist(),
        "gd_step_size": 0.1,
        "gd_next": am.retrieve(x, method="gd", steps=1, step_size=0.1).states.tolist(),
    }
    if energy == "lse":
        case["attention_next"] = am.retrieve(x, method="attention", steps=1).states.tolist()
    else:
        case["fixed_point_next"] = am.retrieve(x, method="fixed_point", steps=1).states.tolist()
        # the whole exact solve: it stops when the state repeats exactly
        run = am.retrieve(x, method="fixed_point", steps=100)
        case["fixed_point_steps"] = run.steps.tolist()
        case["fixed_point_end"] = run.states.tolist()
    return case


def export_test_vectors(path: str | Path, *, seed: int = 0) -> Path:
    """Write the test vectors (one JSON file) for the app's math; float64 throughout."""
    from amlab.explain.gallery import gallery_vectors  # pyarrow: only when exporting

    g = torch.Generator().manual_seed(check_positive_int(seed, "seed", allow_zero=True))
    f64 = torch.float64

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, dtype=f64)

    dense = {"lse": [], "lsr": []}
    for m, d, beta in ((5, 2, 8.0), (12, 2, 30.0), (20, 7, 2.0), (40, 64, 3.0)):
        mem = uniform(m, d)
        x = torch.cat([mem[:2] + 0.05 * uniform(2, d), uniform(4, d)])
        dense["lse"].append(_dense_case(mem, x, "lse", beta))
        dense["lsr"].append(_dense_case(mem, x, "lsr", beta))

    minima = []
    for m, beta in ((6, 10.0), (10, 25.0), (14, 40.0), (18, 60.0), (25, 30.0)):
        mem = uniform(m, 2)
        found = lsr_minima(mem, beta)
        order = sorted(range(len(found)), key=lambda i: found.points[i].tolist())
        minima.append(
            {
                "memories": mem.tolist(),
                "beta": beta,
                "points": [found.points[i].tolist() for i in order],
                "supports": [found.supports[i].nonzero().squeeze(1).tolist() for i in order],
                "stored": found.num_stored,
                "emergent": found.num_emergent,
            }
        )

    drdam = []
    for m, d, num_features, beta in ((6, 3, 16, 2.0), (30, 64, 256, 3.0)):
        mem = uniform(m, d)
        x = torch.cat([mem[:2] + 0.05 * uniform(2, d), uniform(2, d)])
        rf = RandomFeatureAM(d, num_features, beta, seed=seed, dtype=f64).add(mem)
        e, grad = rf.energy_and_grad(x)
        drdam.append(
            {
                "memories": mem.tolist(),
                "beta": beta,
                "kernel": rf.kernel,
                "eps": rf.eps,
                "S": rf.S.tolist(),
                "x": x.tolist(),
                "features": features(x, rf.S, rf.b, beta, rf.kernel).tolist(),
                "T": rf.T.tolist(),
                "energy": e.tolist(),
                "grad": grad.tolist(),
                "gd_step_size": 0.1,
                "gd_next": rf.retrieve(x, steps=1, step_size=0.1).states.tolist(),
            }
        )
    diffusion = {
        "schedules": [_schedule_case(VESchedule(0.01, 10.0)), _schedule_case(VPSchedule())],
        "empirical": [_empirical_case(uniform(m, d), uniform, s) for m, d, s in _EMPIRICAL],
        "sampler": [
            _sampler_case(uniform(12, 5), VESchedule(0.01, 10.0), 6, g),
            _sampler_case(uniform(30, 64), VESchedule(0.01, 10.0), 8, g),
            _sampler_case(uniform(12, 5), VPSchedule(), 6, g),
        ],
    }
    mem = digits(dtype=f64).images
    pca = principal_axes(mem)
    x = mem[:5]
    pca["x"] = x.tolist()
    pca["coords"] = map_coordinates(x, pca).tolist()
    diffusion["pca"] = pca
    diffusion["prompts"] = {
        **prompt_words(),
        "cases": [_prompt_case(prompt) for prompt in _PROMPTS],
    }
    diffusion["text_run"] = _text_run_case(g)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(
        path,
        {
            "seed": seed,
            **dense,
            "lsr_minima": minima,
            "drdam": drdam,
            "diffusion": diffusion,
            "listops": listops_vectors(),
            "sampling": sampling_vectors(seed),
            "erf": _erf_case(),
            "fairness": fairness_vectors(),
            "gallery": gallery_vectors(),
        },
    )
    return path


def _erf_case() -> dict:
    """math.erf on a grid over [-7, 7] (the app's GELU needs erf, which JavaScript lacks)."""
    x = [i / 16 for i in range(-112, 113)] + [0.3e-3, -1e-9, 2.4999, 2.5, 2.5001, 30.0]
    return {"x": x, "erf": [math.erf(v) for v in x]}


#: the empirical denoiser's cases: (memories K, dimension D, noise levels s)
_EMPIRICAL = ((5, 2, (0.05, 0.3, 2.0)), (40, 64, (0.02, 0.5, 10.0)))


def _schedule_case(schedule: Schedule, steps: int = 8) -> dict:
    times = schedule.times(steps).tolist()
    return {
        "config": schedule.config(),
        "steps": steps,
        "times": times,
        "alpha": [schedule.alpha(t) for t in times],
        "sigma": [schedule.sigma(t) for t in times],
        "noise_level": [schedule.noise_level(t) for t in times],
        "drift": [schedule.drift(t) for t in times],
        "diffusion_sq": [schedule.diffusion_sq(t) for t in times],
        "prior_scale": schedule.prior_scale(),
    }


def _empirical_case(mem: torch.Tensor, uniform, levels) -> dict:
    """EmpiricalDenoiser's D(y) and E_t(y) at scaled states y near and far from the memories."""
    denoiser = EmpiricalDenoiser(mem, VESchedule())
    y = torch.cat([mem[:2] + 0.05 * uniform(2, mem.shape[1]), 3 * uniform(2, mem.shape[1])])
    return {
        "memories": mem.tolist(),
        "y": y.tolist(),
        "levels": [
            {
                "s": s,
                "denoised": denoiser.denoise_scaled(y, s).tolist(),
                "energy": denoiser.energy_scaled(y, s).tolist(),
            }
            for s in levels
        ],
    }


def _sampler_case(mem: torch.Tensor, schedule: Schedule, steps: int, g) -> dict:
    """The probability-flow sampler (Heun, as the explainer's) with the empirical denoiser of
    mem: every state from the prior to t_end, and the final denoising step."""
    denoiser = EmpiricalDenoiser(mem, schedule)
    start = schedule.prior(3, mem.shape[1], g, dtype=torch.float64)
    run = sample(denoiser.score_fn(), schedule, start, steps=steps, method="heun", record=True)
    return {
        "memories": mem.tolist(),
        "schedule": schedule.config(),
        "steps": steps,
        "method": "heun",
        "start": start.tolist(),
        "path": run.path.tolist(),
        "final": denoiser.denoise(run.states, schedule.t_end).tolist(),
    }


#: prompts for the tokeniser's vectors: known words in any case and spacing, unknown words
#: (one twice), conflicting requests, and the white space Python's str.split knows and
#: JavaScript's \s does not (U+001C..U+001F, U+0085) and the other way round (U+FEFF)
_PROMPTS = (
    "a thick slanted 7",
    "A  Thin\tSMALL\n2 ",
    "",
    "   ",
    "7",
    "slanted a 4 a",
    "a 3 7",
    "a 7 7",
    "thin thick 1",
    "a large small upright slanted 0",
    "a purple 7 dragon Purple",
    "a thick 10",
    "slanted\u00a0a\u20034\u3000",
    "a\u00857\x1cthin\x1f",
    "a\ufeff7",
    "\u0130 7",
    "\u039f\u0394\u039f\u03a3 2",
)


def _prompt_case(prompt: str) -> dict:
    """What amlab.data.captions makes of a prompt: its unknown words, or its token ids and
    request (or the request's refusal: two digits, both words of an attribute)."""
    unknown = unknown_words(prompt)
    if unknown:
        return {"prompt": prompt, "unknown": unknown}
    case = {"prompt": prompt, "unknown": [], "ids": tokenize([prompt])[0].tolist()}
    if not prompt.split():
        case["ids"] = []  # tokenize pads an empty prompt to one -1
    try:
        asked = request(prompt)
        case["request"] = {"digit": asked.digit, "levels": asked.levels}
    except AmlabError:
        case["request"] = None
    return case


def _text_run_case(g: torch.Generator) -> dict:
    """The shipped text model's guided Heun run (as the diffusion view's) for two prompts from
    one prior draw: the conditional, unconditional and guided denoiser at the start, every
    state, and the final denoising step; float32, as the model computes."""
    model = TextConvDenoiser.load(SHIPPED_TEXT_DENOISER)
    schedule = model.schedule
    prompts, guidance, steps = ["a thick slanted 7", "a thin 2"], 2.5, 12
    tokens = tokenize(prompts, model.vocabulary)
    start = schedule.prior(len(prompts), model.dim, g)
    run = sample(
        model.score_fn(tokens, guidance), schedule, start, steps=steps, method="heun", record=True
    )
    with torch.no_grad():
        cond = model.denoise(start, 1.0, tokens)
        uncond = model.denoise(start, 1.0)
        guided = model.denoise(start, 1.0, tokens, guidance)
        final = model.denoise(run.states, schedule.t_end, tokens, guidance)
    return {
        "prompts": prompts,
        "tokens": tokens.tolist(),
        "guidance": guidance,
        "steps": steps,
        "schedule": schedule.config(),
        "start": start.tolist(),
        "cond": cond.tolist(),
        "uncond": uncond.tolist(),
        "guided": guided.tolist(),
        "path": run.path.tolist(),
        "final": final.tolist(),
    }
