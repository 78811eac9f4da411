"""``amlab repro fairness``: group and individual fairness metrics of toxicity classifiers
side by side (Ashktorab et al., CHI 2023, arXiv 2303.00673).

A bag-of-words logistic regression and a small transformer are trained on the corpus with
the planted bias, each as is and with the mitigations (reweighting for group fairness,
counterfactual data augmentation, counterfactual logit pairing for the transformer), and
audited on the balanced test set. One module per section: :mod:`.models` (train and audit
every model), :mod:`.group` (the planted bias found, per-term error rates, reweighting),
:mod:`.individual` (counterfactual gaps, swaps, CDA and CLP) and :mod:`.ranking` (the
study's point: do group and individual metrics rank the models differently?).
:class:`Grid` holds every size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amlab.data.fairness import PLANTED_BIAS
from amlab.experiments.fairness import group, individual, models, ranking
from amlab.experiments.report import Context, Paper


@dataclass(frozen=True)
class Grid:
    """Every size of the fairness reproduction; the defaults are the full run.

    corpus_size: training sentences (:class:`~amlab.data.fairness.CorpusConfig`; its other
        settings, the planted bias included, are the defaults). transformer_steps: the
        transformer's optimizer steps (batches of 64). models: the (kind, mitigation) pairs
        trained. resamples: bootstrap resamples of every interval.
    """

    corpus_size: int = 6000
    transformer_steps: int = 600
    models: tuple[tuple[str, str], ...] = (
        ("bow", "none"),
        ("bow", "reweight"),
        ("bow", "cda"),
        ("transformer", "none"),
        ("transformer", "reweight"),
        ("transformer", "cda"),
        ("transformer", "clp"),
    )
    resamples: int = 1000


FULL = Grid()
QUICK = Grid(corpus_size=3000, transformer_steps=250, resamples=200)


def _intro(ctx: Context) -> str:
    planted = ", ".join(f"{t} {r:g}" for t, r in PLANTED_BIAS.items())
    return f"""
The study showed practitioners group metrics (error rates per identity) or individual
metrics (score changes under identity-term swaps) of toxicity classifiers and found that
the two views led them to call different models fair. Here both views are computed for
the same models, on data whose bias is known in advance: a training corpus of
{ctx.grid.corpus_size} sentences in which the toxic rate of sentences mentioning some
identity terms is planted ({planted}; every other term 0.5), and a balanced test set in
which every term appears in the same 10 toxic and 10 non-toxic templates. All texts, word
lists and templates are amlab's own (`amlab.data.fairness`).
"""


PAPER = Paper(
    title="Fairness of text classifiers: group and individual metrics side by side",
    source="Ashktorab et al., *Fairness Evaluation in Text Classification: Machine Learning "
    "Practitioner Perspectives of Individual and Group Fairness*, CHI 2023, arXiv 2303.00673",
    full=FULL,
    quick=QUICK,
    sections=(models.SECTION, group.SECTION, individual.SECTION, ranking.SECTION),
    metrics=lambda ctx: {"quick": ctx.quick, "seed": ctx.seed, "grid": asdict(ctx.grid)},
    intro=_intro,
)

#: ``amlab repro fairness``: run(out, quick=False, seed=0, data_dir=None, progress=..., grid=None)
run = PAPER.run
