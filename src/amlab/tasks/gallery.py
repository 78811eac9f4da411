"""The gallery behind ``amlab gallery``: generated images of a text model in DiffusionDB's
layout, with DiffusionDB's metadata table plus our own columns.

Layout (that of DiffusionDB 2M)::

    OUT/images/part-000001/<uuid>.png ... part-000001.json    {image name: {p, se, c, st, sa}}
    OUT/metadata.parquet                                      one row per image
    OUT/.amlab/gallery.json, part-000001.parquet, ...         the run's settings, finished parts

``metadata.parquet`` has DiffusionDB's 13 columns with its dtypes (:data:`DIFFUSIONDB_SCHEMA`;
``sampler`` in its codes, ``user_name``, ``image_nsfw`` and ``prompt_nsfw`` null: there is no
user and no NSFW detector here) followed by ours (:data:`AMLAB_SCHEMA`): the model's hash and
training-set size, the training set's energy at the image, its nearest training image and the
distance to it, the measured class and attributes and whether each is what the prompt asks
(null where the prompt names no digit), and the memorisation audit's class
(:mod:`amlab.analysis.memorisation`). Everything is measured on the stored picture (the PNG's
bytes / 255), so a row can be checked from its file alone.

Each image is drawn alone (a batch of one) from its settings: seed s means the start noise
``normals(D, s)`` times the prior's scale (:func:`amlab.diffusion.rng.seeded_prior`, the
explainer's own generator, so the browser's diffusion view starts from the same noise and
its Heun or Euler run ends on the same image up to float32 rounding); Euler-Maruyama's
per-step noise comes from a torch generator seeded with ``seed`` (the browser cannot draw
that). :func:`regenerate` draws any row again bit for bit (on the same PyTorch build). A part's
``.amlab/part-XXXXXX.parquet`` is written last, atomically: a killed run keeps the parts it
finished, and ``--resume`` draws only the rest.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from amlab.analysis.memorisation import AUDIT_CLASSES, Audit, audit
from amlab.data.attributes import ATTRIBUTES
from amlab.data.captions import request, tokenize
from amlab.diffusion import SAMPLERS
from amlab.diffusion.rng import seeded_prior
from amlab.distributed.group import refuse_torchrun
from amlab.errors import AmlabError, check_choice, check_positive, check_positive_int
from amlab.io import atomic_write, atomic_write_bytes, atomic_write_text, read_json, read_text
from amlab.tasks.prompts import JUDGED, TextModel, adherence, judge, load_text_model

#: DiffusionDB's metadata table, column by column (its README's "Metadata Schema")
DIFFUSIONDB_SCHEMA = pa.schema(
    [
        ("image_name", pa.string()),
        ("prompt", pa.string()),
        ("part_id", pa.uint16()),
        ("seed", pa.uint32()),
        ("step", pa.uint16()),
        ("cfg", pa.float32()),
        ("sampler", pa.uint8()),
        ("width", pa.uint16()),
        ("height", pa.uint16()),
        ("user_name", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("image_nsfw", pa.float32()),
        ("prompt_nsfw", pa.float32()),
    ]
)
#: our columns after DiffusionDB's
AMLAB_SCHEMA = pa.schema(
    [
        ("model_hash", pa.string()),
        ("training_images", pa.uint32()),
        ("final_energy", pa.float32()),
        ("nearest_train", pa.uint32()),
        ("nearest_distance", pa.float32()),
        ("class", pa.uint8()),
        *((name, pa.float32()) for name in ATTRIBUTES),
        ("class_match", pa.bool_()),
        *((f"{name}_match", pa.bool_()) for name in ATTRIBUTES),
        ("audit", pa.string()),
    ]
)
GALLERY_SCHEMA = pa.schema([*DIFFUSIONDB_SCHEMA, *AMLAB_SCHEMA])
#: DiffusionDB's sampler codes (its README)
SAMPLER_CODES = {
    1: "ddim",
    2: "plms",
    3: "k_euler",
    4: "k_euler_ancestral",
    5: "k_heun",
    6: "k_dpm_2",
    7: "k_dpm_2_ancestral",
    8: "k_lms",
    9: "others",
}
#: our samplers as DiffusionDB names them in a part JSON (Euler-Maruyama has no code: 9)
SAMPLER_LABELS = {"euler": "k_euler", "heun": "k_heun", "euler_maruyama": "euler_maruyama"}
#: our samplers' codes in the metadata table (9, "others", where DiffusionDB has none)
SAMPLER_CODE = {
    name: next((code for code, known in SAMPLER_CODES.items() if known == label), 9)
    for name, label in SAMPLER_LABELS.items()
}
STATE_DIR = ".amlab"


@dataclass(frozen=True)
class GallerySpec:
    """What to draw: every combination of ``prompts`` x ``seeds`` x ``guidance`` x
    ``steps`` x ``samplers`` (in that order, the last varying fastest), ``part_size`` images
    per part folder."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    guidance: tuple[float, ...] = (2.0,)
    steps: tuple[int, ...] = (30,)
    samplers: tuple[str, ...] = ("heun",)
    part_size: int = 1000

    def __post_init__(self) -> None:
        if not self.prompts:
            raise AmlabError("the gallery needs at least one prompt.")
        for seed in self.seeds:
            if not check_positive_int(seed, "each seed", allow_zero=True) < 2**32:
                raise AmlabError(f"seeds must lie in [0, 2^32) (DiffusionDB's uint32); got {seed}.")
        for w in self.guidance:
            check_positive(w, "guidance", allow_zero=True)
        for n in self.steps:
            if not check_positive_int(n, "each number of steps") < 2**16:
                raise AmlabError(f"steps must lie in [1, 65535]; got {n}.")
        for name in self.samplers:
            check_choice(name, "sampler", SAMPLERS)
        check_positive_int(self.part_size, "part_size")
        if not (self.seeds and self.guidance and self.steps and self.samplers):
            raise AmlabError("seeds, guidance, steps and samplers each need a value.")

    def rows(self) -> list[dict[str, Any]]:
        """Each image's settings: prompt, seed, cfg, steps, sampler. cfg is the guidance as
        the table's float32 column gives it back (:func:`float32_decimal`), so that an image
        is drawn with the cfg that :func:`regenerate` reads from its row."""
        grid = itertools.product(self.prompts, self.seeds, self.guidance, self.steps, self.samplers)
        return [
            {"prompt": p, "seed": int(s), "cfg": float32_decimal(c), "steps": int(n), "sampler": m}
            for p, s, c, n, m in grid
        ]


#: the default prompts: every digit, plain and with each attribute word
DEFAULT_PROMPTS = tuple(
    f"a {word} {digit}".replace("  ", " ")
    for digit in range(10)
    for word in ("", "thin", "thick", "small", "large", "upright", "slanted")
)
#: ``amlab gallery generate``'s grid: 70 prompts x 4 seeds x guidance 1, 3 (560 images)
DEFAULT_SPEC = GallerySpec(DEFAULT_PROMPTS, seeds=(0, 1, 2, 3), guidance=(1.0, 3.0), steps=(30,))
#: ``--quick``: 4 prompts x 2 seeds x 2 guidance scales x 2 samplers, 20 steps, 2 parts
QUICK_SPEC = GallerySpec(
    ("a 0", "a thick 3", "a thin slanted 7", "a large 8"),
    seeds=(0, 1),
    guidance=(1.0, 3.0),
    steps=(20,),
    samplers=("heun", "euler"),
    part_size=16,
)


def read_prompts(path: str | Path) -> tuple[str, ...]:
    """The prompts of a text file, one a line (blank lines and lines starting with #, after
    any indentation, skipped)."""
    path = Path(path)
    if not path.is_file():
        raise AmlabError(
            f"the prompts file {path} does not exist; pass a text file, one prompt a line."
        )
    lines = read_text(path, "pass a text file, one prompt a line").splitlines()
    stripped = (line.strip() for line in lines)
    prompts = tuple(line for line in stripped if line and not line.startswith("#"))
    if not prompts:
        raise AmlabError(f"{path} holds no prompt; write one prompt a line.")
    return prompts


def sample_image(model: TextModel, settings: dict[str, Any]) -> torch.Tensor:
    """The image (D,) float32, before it is stored, that ``settings`` (prompt, seed, cfg,
    steps, sampler) draw from ``model``: one image from the seed's start noise
    (:func:`~amlab.diffusion.rng.seeded_prior`), the sampler (Euler-Maruyama's noise from a
    torch generator seeded with ``seed``), then the final denoising step."""
    from amlab.tasks.diffusion import draw_samples  # it brings matplotlib, which a query needs not

    net = model.network
    tokens = tokenize([settings["prompt"]], net.vocabulary)
    start = seeded_prior(net.schedule, net.dim, settings["seed"])
    final = draw_samples(
        net,
        1,
        settings["steps"],
        settings["seed"],
        tokens,
        settings["cfg"],
        settings["sampler"],
        start=start,
    )
    return final[0]


def render(model: TextModel, settings: dict[str, Any]) -> np.ndarray:
    """The picture (H, W) uint8 of ``settings`` (:func:`sample_image`): ink clipped to [0, 1],
    times 255, rounded."""
    height, width = model.train.shape[-2:]
    final = sample_image(model, settings)
    pixels = (final.reshape(height, width).clamp(0, 1) * 255).round()
    return pixels.to(torch.uint8).numpy()


def float32_decimal(value: Any) -> float:
    """The shortest decimal that float32 rounds to as it rounds ``value`` (2.2 for 2.2 and
    for the float32 2.2000000476837158): a guidance as generate draws with it and as its
    row's float32 ``cfg`` gives it back."""
    return float(str(np.float32(value)))


def row_settings(row: dict[str, Any]) -> dict[str, Any]:
    """The settings (prompt, seed, cfg, steps, sampler) a metadata row (a dict of its
    columns) was drawn with. ``cfg`` is stored as float32: it is read back as the shortest
    decimal that float32 rounds to it (2.2, not 2.2000000476837158), as it was given
    (:func:`float32_decimal`, as :meth:`GallerySpec.rows` gives it)."""
    codes = {code: name for name, code in SAMPLER_CODE.items()}
    if row["sampler"] not in codes:
        ours = ", ".join(f"{code} {SAMPLER_LABELS[codes[code]]}" for code in sorted(codes))
        raise AmlabError(
            f"sampler code {row['sampler']} ({SAMPLER_CODES.get(row['sampler'], '?')}) is not "
            f"one of amlab's samplers ({ours})."
        )
    return {
        "prompt": row["prompt"],
        "seed": int(row["seed"]),
        "cfg": float32_decimal(row["cfg"]),
        "steps": int(row["step"]),
        "sampler": codes[row["sampler"]],
    }


def regenerate(row: dict[str, Any], model: TextModel) -> np.ndarray:
    """The picture of a metadata row (a dict of its columns), drawn again from its settings."""
    return render(model, row_settings(row))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def read_png(path: str | Path) -> np.ndarray:
    """The grey pixels (H, W) uint8 of a gallery PNG."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")).copy()


def _image_name(model_hash: str, index: int, settings: dict[str, Any]) -> str:
    """A UUID-4-shaped name made from the model, the row's place and settings (stable
    across runs, so a resumed gallery names its images as a straight one)."""
    key = json.dumps([model_hash, index, settings], sort_keys=True).encode()
    return f"{uuid.UUID(bytes=hashlib.sha256(key).digest()[:16], version=4)}.png"


def part_name(part: int) -> str:
    return f"part-{part:06d}"


#: progress(parts done, parts in all, images done in this run)
GalleryProgress = Callable[[int, int, int], None]


def refuse_torchrun_generate() -> None:
    """:func:`generate`'s refusal under torchrun with several ranks (the CLI asks before it
    reads the text model)."""
    refuse_torchrun(
        "amlab gallery generate",
        "its images are not spread over ranks: every rank would draw all of them into the "
        "same part folders and metadata.parquet",
    )


def generate(
    spec: GallerySpec,
    out: str | Path,
    model: TextModel,
    *,
    resume: bool = False,
    progress: GalleryProgress | None = None,
) -> dict[str, Any]:
    """Draw the gallery ``spec`` of ``model`` into ``out`` (module docstring); ``resume``
    continues a gallery of the same settings and model there. Returns its summary: images,
    parts, parts kept from before, seconds, the audit's fractions and the adherence per
    judged attribute against chance. Refused under torchrun with several ranks."""
    refuse_torchrun_generate()
    out = Path(out)
    tokenize(spec.prompts, model.network.vocabulary)  # unknown words fail before any work
    for prompt in spec.prompts:
        request(prompt)
    state = out / STATE_DIR
    settings = {"spec": asdict(spec), "model": str(model.path), "model_hash": model.hash}
    _check_resume(out, state, settings, resume)
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state / "gallery.json", json.dumps(settings, indent=2) + "\n")
    rows = spec.rows()
    parts = [rows[i : i + spec.part_size] for i in range(0, len(rows), spec.part_size)]
    scale = Audit.fit(model.train.images)
    started, kept, drawn = time.perf_counter(), 0, 0
    for number, part_rows in enumerate(parts, start=1):
        if (state / f"{part_name(number)}.parquet").is_file():
            kept += 1
        else:
            first = (number - 1) * spec.part_size
            drawn += _draw_part(out, number, first, part_rows, model, scale)
        if progress is not None:
            progress(number, len(parts), drawn)
    table = pa.concat_tables(
        [pq.read_table(state / f"{part_name(n)}.parquet") for n in range(1, len(parts) + 1)]
    )
    atomic_write(out / "metadata.parquet", lambda tmp: pq.write_table(table, tmp))
    prompts = table.column("prompt").to_pylist()
    matches = {f"{n}_match": table.column(f"{n}_match").to_pylist() for n in JUDGED}
    audits = table.column("audit").to_pylist()
    return {
        "images": table.num_rows,
        "parts": len(parts),
        "parts_kept": kept,
        "images_drawn": drawn,
        "seconds": time.perf_counter() - started,
        "model": str(model.path),
        "model_hash": model.hash,
        "training_images": len(model.train),
        "audit_scale": asdict(scale),
        "audit": {name: audits.count(name) / len(audits) for name in AUDIT_CLASSES},
        "adherence": adherence(prompts, matches, model),
        "metadata": str(out / "metadata.parquet"),
    }


def _check_resume(out: Path, state: Path, settings: dict[str, Any], resume: bool) -> None:
    recorded = state / "gallery.json"
    if recorded.is_file():
        if not resume:
            raise AmlabError(
                f"{out} already holds a gallery; pass --resume to continue it, or a new --out."
            )
        before = read_json(recorded, "start the gallery in a new --out")
        if before != json.loads(json.dumps(settings)):
            raise AmlabError(
                f"the gallery in {out} was drawn with other settings or another model; resume "
                "it with the same ones, or start a new --out."
            )
    elif resume:
        raise AmlabError(f"{out} holds no gallery to resume; drop --resume.")
    elif (out / "metadata.parquet").exists() or (out / "images").exists():
        raise AmlabError(
            f"{out} holds images or a metadata.parquet that amlab did not write; pass a new --out."
        )


def _draw_part(
    out: Path,
    number: int,
    first: int,
    rows: Sequence[dict[str, Any]],
    model: TextModel,
    scale: Audit,
) -> int:
    """Draw one part's images, write them and its JSON, then its metadata (the marker)."""
    folder = out / "images" / part_name(number)
    folder.mkdir(parents=True, exist_ok=True)
    names, pictures = [], []
    for i, settings in enumerate(rows):
        pixels = render(model, settings)
        name = _image_name(model.hash, first + i, settings)
        atomic_write_bytes(folder / name, _png(pixels))
        names.append(name)
        pictures.append(pixels)
    entries = {
        name: {
            "p": s["prompt"],
            "se": s["seed"],
            "c": s["cfg"],
            "st": s["steps"],
            "sa": SAMPLER_LABELS[s["sampler"]],
        }
        for name, s in zip(names, rows, strict=True)
    }
    atomic_write_text(folder / f"{part_name(number)}.json", json.dumps(entries, indent=2) + "\n")
    table = metadata_table(names, rows, pictures, number, model, scale)
    marker = out / STATE_DIR / f"{part_name(number)}.parquet"
    atomic_write(marker, lambda tmp: pq.write_table(table, tmp))
    return len(rows)


def metadata_table(
    names: Sequence[str],
    rows: Sequence[dict[str, Any]],
    pictures: Sequence[np.ndarray],
    part: int,
    model: TextModel,
    scale: Audit,
) -> pa.Table:
    """The metadata rows (:data:`GALLERY_SCHEMA`) of one part's pictures."""
    images = torch.from_numpy(np.stack(pictures).reshape(len(pictures), -1)).float() / 255
    prompts = [r["prompt"] for r in rows]
    judged = judge(images, prompts, model)
    audited = audit(images, model.train.images, scale)
    height, width = pictures[0].shape
    now = datetime.now(timezone.utc)
    columns = {
        "image_name": list(names),
        "prompt": prompts,
        "part_id": [part] * len(rows),
        "seed": [r["seed"] for r in rows],
        "step": [r["steps"] for r in rows],
        "cfg": [r["cfg"] for r in rows],
        "sampler": [SAMPLER_CODE[r["sampler"]] for r in rows],
        "width": [width] * len(rows),
        "height": [height] * len(rows),
        "user_name": [None] * len(rows),
        "timestamp": [now] * len(rows),
        "image_nsfw": [None] * len(rows),
        "prompt_nsfw": [None] * len(rows),
        "model_hash": [model.hash] * len(rows),
        "training_images": [len(model.train)] * len(rows),
        "final_energy": audited.energy.tolist(),
        "nearest_train": audited.nearest.tolist(),
        "nearest_distance": audited.distance.tolist(),
        "class": judged["class"].tolist(),
        **{name: judged[name].tolist() for name in ATTRIBUTES},
        **{f"{n}_match": judged[f"{n}_match"] for n in JUDGED},
        "audit": audited.names(),
    }
    return pa.table(columns, schema=GALLERY_SCHEMA)


def load_gallery(gallery: str | Path, data_dir: str | None = None) -> tuple[pa.Table, TextModel]:
    """A gallery's metadata table and its model (the one recorded in ``.amlab/gallery.json``,
    with its training set; ``data_dir`` replaces the data directory recorded with it)."""
    gallery = Path(gallery)
    recorded = gallery / STATE_DIR / "gallery.json"
    if not recorded.is_file() or not (gallery / "metadata.parquet").is_file():
        raise AmlabError(
            f"{gallery} holds no finished gallery (metadata.parquet and {STATE_DIR}/gallery.json); "
            "pass the --out of amlab gallery generate, run to its end (--resume finishes it)."
        )
    settings = read_json(recorded, "draw the gallery again")
    model = load_text_model(settings["model"], data_dir)
    if model.hash != settings["model_hash"]:
        raise AmlabError(
            f"the model in {settings['model']} has changed since the gallery was drawn (hash "
            f"{model.hash}, recorded {settings['model_hash']}); audit it with the same model."
        )
    try:
        table = pq.read_table(gallery / "metadata.parquet")
    except (pa.ArrowException, OSError) as exc:
        raise AmlabError(f"{gallery / 'metadata.parquet'} is not readable ({exc}).") from None
    return table, model


def gallery_pictures(gallery: str | Path, table: pa.Table) -> torch.Tensor:
    """The stored pictures of the table's rows (B, H*W), ink in [0, 1]."""
    folder = Path(gallery) / "images"
    parts = table.column("part_id").to_pylist()
    names = table.column("image_name").to_pylist()
    pictures = []
    for part, name in zip(parts, names, strict=True):
        path = folder / part_name(part) / name
        if not path.is_file():
            raise AmlabError(f"{path} is missing; draw the gallery again (or --resume it).")
        pictures.append(read_png(path).reshape(-1))
    return torch.from_numpy(np.stack(pictures)).float() / 255


def audit_gallery(
    gallery: str | Path,
    *,
    threshold: float | None = None,
    noise_level: float | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """The memorisation audit of a gallery's stored pictures against its model's training set,
    at the scale given (each default: :meth:`Audit.fit` of the training set). Returns the
    scale, the share of each class overall and per guidance scale, and ``examples``: per class
    up to 8 (picture, nearest training image, minimum reached) for a figure."""
    table, model = load_gallery(gallery, data_dir)
    fitted = Audit.fit(model.train.images)
    scale = Audit(
        threshold=fitted.threshold if threshold is None else threshold,
        noise_level=fitted.noise_level if noise_level is None else noise_level,
    )
    images = gallery_pictures(gallery, table)
    result = audit(images, model.train.images, scale)
    cfg = torch.tensor(table.column("cfg").to_pylist(), dtype=torch.float64)
    by_guidance = {}
    for w in sorted(set(cfg.tolist())):
        classes = result.classes[cfg == w]
        by_guidance[w] = {
            name: float((classes == i).float().mean()) for i, name in enumerate(AUDIT_CLASSES)
        }
    examples = {}
    for i, name in enumerate(AUDIT_CLASSES):
        rows = (result.classes == i).nonzero().reshape(-1)[:8]
        examples[name] = (
            images[rows],
            model.train.images[result.nearest[rows]],
            result.minimum[rows].float(),
        )
    return {
        "images": len(images),
        "scale": asdict(scale),
        "fractions": result.fractions(),
        "by_guidance": by_guidance,
        "mean_nearest_distance": float(result.distance.mean()),
        "examples": examples,
        "shape": model.train.shape,
    }
