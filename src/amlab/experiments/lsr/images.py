"""The LSR paper's images: exact retrieval at a finite beta and emergent memories.

The run's images (duplicates removed) are stored at r just below the smallest distance
between two of them, where every image is an exact fixed point; emergent memories are
searched around fixed-point images there and at a wider radius (the paper's beta = 0.11
for MNIST, r = the median nearest-neighbour distance for the digits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from amlab.analysis import lsr_neighbour_minima
from amlab.analysis.minima import first_unique
from amlab.energy.distances import nearest_memory, nearest_other_distances
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.models import DenseAM
from amlab.tasks.figures import image_grid

#: (figure file, setting) of the two emergent-memory searches
GALLERIES = (("emergent_exact_beta.png", "tight"), ("emergent_wide_beta.png", "wide"))


@dataclass
class Emergent:
    """Emergent minima found around searched fixed-point images at one beta.

    gallery: [(point (D,), support: sorted memory indices)], distinct supports only.
    candidates: fixed-point images with another image within 2r; searched: how many of them
    were searched; sizes: {support size: count}; median_novelty: median distance from an
    emergent minimum to its nearest image (nan if none).
    """

    beta: float
    gallery: list[tuple[torch.Tensor, tuple[int, ...]]]
    candidates: int
    searched: int
    sizes: dict[int, int]
    median_novelty: float


@dataclass
class ImagesResult:
    """The stored images (M, D) with labels (M,), what retrieval did at the exact-retrieval
    beta, and the emergent minima there (``tight``) and at the wide beta (``wide``)."""

    data_name: str
    shape: tuple[int, ...]
    mem: torch.Tensor
    labels: torch.Tensor
    n_images: int
    nn_dist: torch.Tensor
    r: float
    exact_fraction: float
    from_half_r: float
    wide_r: float
    fixed_wide: float
    tight: Emergent
    wide: Emergent


# -- compute ------------------------------------------------------------------------------------
def compute(ctx: Context, progress: Progress) -> ImagesResult:
    """Store the run's distinct images at r just below their smallest pair distance, check
    exact retrieval, and search emergent minima there and at the wide beta."""
    data, per_search = ctx.images, ctx.grid.images_per_search
    images = data.images.double()
    _, keep = first_unique(images)
    mem, labels = images[keep], data.labels[keep]
    progress("nearest neighbours", 0.1)
    nn_dist = nearest_other_distances(mem)
    r = float(nn_dist.min()) * (1 - 1e-9)  # just below the smallest distance between images
    beta = 2.0 / r**2
    am = DenseAM(mem, energy="lsr", beta=beta)
    progress("exact retrieval", 0.25)
    exact = am.retrieve(mem, method="fixed_point", steps=20)
    exact_fraction = (exact.states == mem).all(1).double().mean().item()
    g = torch.Generator().manual_seed(ctx.seed)
    direction = torch.randn(mem.shape, generator=g, dtype=torch.float64)
    # a start at distance 0.5 r from each image: inside its support, maybe inside others'
    starts = mem + 0.5 * r * direction / direction.norm(dim=1, keepdim=True)
    from_noise = am.retrieve(starts, method="fixed_point", steps=50).states == mem
    # the paper's beta for MNIST (pixels in [0, 1]); for digits, r = median NN distance
    wide_beta = 0.11 if data.name == "mnist" else 2.0 / float(nn_dist.median()) ** 2
    wide_r = math.sqrt(2.0 / wide_beta)
    progress("emergent memories", 0.45)
    tight = emergent_search(mem, beta, nn_dist, per_search, g)
    progress("emergent memories (wide)", 0.7)
    wide = emergent_search(mem, wide_beta, nn_dist, per_search, g)
    progress("done", 1.0)
    return ImagesResult(
        data_name=data.name,
        shape=data.shape,
        mem=mem,
        labels=labels,
        n_images=images.shape[0],
        nn_dist=nn_dist,
        r=r,
        exact_fraction=exact_fraction,
        from_half_r=from_noise.all(1).double().mean().item(),
        wide_r=wide_r,
        fixed_wide=(nn_dist >= wide_r).double().mean().item(),
        tight=tight,
        wide=wide,
    )


def emergent_search(
    mem: torch.Tensor, beta: float, nn_dist: torch.Tensor, n: int, g: torch.Generator
) -> Emergent:
    """Emergent minima around up to n random images that are fixed points (no other image
    within r) and have a neighbour within 2r, read off ``nn_dist`` (M,), each image's
    distance to its nearest other image; distinct supports only."""
    r = math.sqrt(2.0 / beta)
    candidates = ((nn_dist >= r) & (nn_dist < 2 * r)).nonzero().squeeze(1)
    searched = candidates[torch.randperm(candidates.numel(), generator=g)][:n]
    gallery: list[tuple[torch.Tensor, tuple[int, ...]]] = []
    seen: set[tuple[int, ...]] = set()
    for index in searched.tolist():
        found = lsr_neighbour_minima(mem, beta, index, max_size=3, max_neighbours=32)
        for point, support in zip(
            found.points[~found.stored], found.supports[~found.stored], strict=True
        ):
            key = tuple(support.nonzero().squeeze(1).tolist())
            if key not in seen:
                seen.add(key)
                gallery.append((point, key))
    sizes = [len(key) for _, key in gallery]
    novelty = (
        nearest_memory(torch.stack([p for p, _ in gallery]), mem)[1]
        if gallery
        else torch.zeros(0, dtype=mem.dtype)
    )
    return Emergent(
        beta=beta,
        gallery=gallery,
        candidates=int(candidates.numel()),
        searched=int(searched.numel()),
        sizes={s: sizes.count(s) for s in sorted(set(sizes))},
        median_novelty=float(novelty.median()) if len(novelty) else float("nan"),
    )


# -- figure -------------------------------------------------------------------------------------
def figure(result: ImagesResult, ctx: Context, report: Report) -> None:
    """A gallery per setting with emergent minima: the minima above their supports."""
    for name, setting in GALLERIES:
        found: Emergent = getattr(result, setting)
        if not found.gallery:
            continue
        shown = _diverse(found.gallery, result.labels, 8)
        rows = [("emergent", torch.stack([p for p, _ in shown]))]
        for j in range(max(len(key) for _, key in shown)):
            members = [
                result.mem[key[j]] if j < len(key) else torch.zeros(result.mem.shape[1])
                for _, key in shown
            ]
            rows.append((f"member {j + 1}", torch.stack(members)))
        image_grid(
            rows,
            result.shape,
            report.path(name),
            title=f"{result.data_name}, beta = {found.beta:.3g}: emergent LSR memories (top) "
            "and the stored images they average",
        )


def _diverse(
    gallery: list[tuple[torch.Tensor, tuple[int, ...]]], labels: torch.Tensor, n: int
) -> list[tuple[torch.Tensor, tuple[int, ...]]]:
    """Up to n gallery entries, larger supports first, one per class while classes last."""
    ranked = sorted(gallery, key=lambda entry: -len(entry[1]))
    chosen, classes = [], set()
    for entry in ranked:
        label = int(labels[entry[1][0]])
        if label not in classes:
            chosen.append(entry)
            classes.add(label)
    taken = {entry[1] for entry in chosen}
    chosen += [entry for entry in ranked if entry[1] not in taken]
    return chosen[:n]


# -- report -------------------------------------------------------------------------------------
def write(result: ImagesResult, ctx: Context, report: Report) -> dict:
    """Prose, the search table, the galleries and the claims. Returns
    {"exact_retrieval_fraction", "images"}."""
    res, m = result, result.mem.shape[0]
    nn_min, nn_median = res.nn_dist.min().item(), res.nn_dist.median().item()
    report.section(
        "Images: exact retrieval and emergent memories",
        f"{res.data_name}: {res.n_images} images ({res.n_images - m} exact duplicates removed, "
        f"{m} stored). The smallest distance between two stored images is {nn_min:.4g} (median "
        f"nearest-neighbour distance {nn_median:.3g}); storing at r just below it (r = "
        f"{res.r:.4g}, beta = 2/r^2 = {res.tight.beta:.4g}) leaves no other image inside any "
        "image's support. Starting the exact solver at each image returned it bit for bit for "
        f"{res.exact_fraction:.2%} of the images; starting at distance 0.5 r in a random "
        f"direction returned the image exactly for {res.from_half_r:.2%}.\n\n"
        "Emergent memories are searched as in the paper: around an image that is itself a "
        "fixed point, every support of up to 3 images among its 32 nearest neighbours "
        "within 2r is checked exactly (`amlab.analysis.lsr_neighbour_minima`).",
    )
    _write_table(res, report)
    for name, setting in GALLERIES:
        if getattr(res, setting).gallery:
            report.figure(
                name,
                "Emergent memories (top row) and the stored images whose "
                "centroid they are (below).",
            )
    report.text(
        f"At the wide beta = {res.wide.beta:.3g} (r = {res.wide_r:.3g}) an image is an exact "
        f"fixed point only if no other image lies within r of it: {res.fixed_wide:.2%} of the "
        f"{m} images are."
    )
    _write_claims(res, report)
    return {
        "exact_retrieval_fraction": res.exact_fraction,
        "images": {
            "data": res.data_name,
            "stored": m,
            "duplicates_removed": res.n_images - m,
            "beta": res.tight.beta,
            "r": res.r,
            "min_pair_distance": nn_min,
            "retrieved_from_half_r": res.from_half_r,
            "wide_beta": res.wide.beta,
            "fixed_point_fraction_at_wide_beta": res.fixed_wide,
            "emergent_at_exact_beta": _summary(res.tight),
            "emergent_at_wide_beta": _summary(res.wide),
        },
    }


def _summary(found: Emergent) -> dict:
    return {
        "beta": found.beta,
        "searched": found.searched,
        "emergent_found": len(found.gallery),
        "support_sizes": found.sizes,
        "median_distance": found.median_novelty,
    }


def _write_table(res: ImagesResult, report: Report) -> None:
    wide = " (paper's 0.11)" if res.data_name == "mnist" else " (r = median NN distance)"
    rows = [
        [
            label,
            f"{found.beta:.4g}",
            f"{math.sqrt(2 / found.beta):.3g}",
            found.candidates,
            found.searched,
            len(found.gallery),
            found.sizes,
            f"{found.median_novelty:.3g}",
        ]
        for label, found in (("exact-retrieval beta", res.tight), ("wide beta" + wide, res.wide))
    ]
    report.table(
        [
            "setting",
            "beta",
            "r",
            "fixed-point images with a neighbour within 2r",
            "searched",
            "emergent minima",
            "support sizes",
            "median distance to nearest image",
        ],
        rows,
    )


def _write_claims(res: ImagesResult, report: Report) -> None:
    m = res.mem.shape[0]
    report.claim(
        "All stored images are exact fixed points at a finite beta",
        f"{res.exact_fraction:.2%} of {m} {res.data_name} images are exact fixed points at "
        f"beta = {res.tight.beta:.4g} (r just below the smallest pair distance)",
        "reproduced" if res.exact_fraction == 1.0 else "not reproduced",
    )
    if res.data_name == "mnist":
        report.claim(
            "All 60k MNIST training images are retrieved exactly at beta = 0.11",
            f"on the 10k MNIST test images (sparser than the 60k training set) only "
            f"{res.fixed_wide:.2%} have no other image within r = {res.wide_r:.3g}, so only "
            f"they can be fixed points at beta = 0.11; all are at beta >= {res.tight.beta:.3g}",
            "reproduced" if res.fixed_wide == 1.0 else "not reproduced",
        )
    tight, wide = res.tight, res.wide
    report.claim(
        "Emergent memories appear among a stored image's neighbours",
        f"{len(tight.gallery)} (exact-retrieval beta) and {len(wide.gallery)} (wide beta)"
        f" emergent minima around {tight.searched} and {wide.searched} searched images",
        "reproduced" if tight.gallery or wide.gallery else "not reproduced",
    )


SECTION = Section("images", 0.20, compute, write, figure)
