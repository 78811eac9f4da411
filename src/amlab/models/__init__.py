"""User-facing models, all following one protocol (:class:`Model`).

Configuration
    Every model has a frozen dataclass ``<Model>Config`` (``DenseAMConfig``,
    ``EnergyTransformerConfig``, ...; ``GCN`` and ``MLP`` share ``BaselineConfig``) holding
    every non-tensor constructor argument, defaults resolved, ``seed`` where the initial
    weights are random, and ``dtype`` as its name ("float32" or "float64"). ``model.config``
    (a property) returns it, with the dtype the model has now; ``type(model).Config`` is the
    class. ``ListOpsTransformer`` is built from its config; the others take its fields as
    arguments (``DenseAM`` and ``EmpiricalDenoiser`` take their memories/data besides).

Saving and loading
    ``model.save(dir)`` writes ``tensors.safetensors`` (``model.state_dict()``) and
    ``config.json`` (exactly ``{"kind": <class name>, **asdict(model.config)}``);
    ``Cls.load(dir, device=None)`` reads them back, in eval mode. Both go through the one
    pair :func:`amlab.io.save_model` / :func:`amlab.io.load_model`: a config.json with an
    unknown or missing key, or a value of the wrong type, raises AmlabError naming the file,
    as do tensors that do not fit the config. A model whose constructor takes more than its
    config's fields builds itself in ``from_saved(config, tensors)``.

Seed
    A model with random initial weights takes ``seed: int = 0``. It draws them from a
    generator seeded by it and never touches the global random state: the Energy
    Transformer and DrDAM from their own ``torch.Generator``; modules with PyTorch's default
    initialisation (denoisers, ListOps, GCN, MLP, GraphET's encoder) inside
    :func:`~amlab.models.model.seeded`, which gives exactly the weights that
    ``torch.manual_seed(seed)`` followed by the same construction gives.

dtype and device
    float32 by default, float64 on request (``dtype=``, a dtype or its name). ``model.dtype``
    and ``model.device`` are those of its tensors; inputs are checked against them in one
    place (``Model._as_input``): a torch tensor must already have the model's device and, if
    floating, its dtype, else AmlabError says so (the same message for every model); lists
    and arrays are converted. Move a model with ``model.to(...)`` or ``load(dir, device=)``.

The verbs (an energy model's states: (B, D) for the memories and denoisers, tokens (B, N, D)
for the Energy Transformer)
    - ``energy(x)``: the energy per sample (B,), differentiable by autograd.
    - ``grad(x)``: dE/dx, the shape of x. ``energy_and_grad(x)``: both in one pass.
    - ``retrieve(x, steps=, step_size=, ...)``: descent on the energy through
      :func:`amlab.dynamics.descend`, returning its :class:`~amlab.dynamics.Trajectory`
      (final states, energy per step, its named parts where the model has them, converged,
      steps). The Energy Transformer descends along dE/dg (``direction(x)``), which is not
      dE/dx but a descent direction.
    - ``forward(x)`` (``model(x)``): the model's output for the task it is built for.
      DenseAM, RandomFeatureAM: the retrieved states, ``retrieve(x).states`` with every
      default. EnergyTransformer: the final tokens. MaskedImageET: the completed images
      (``complete`` returns patches, images and the trajectory). GraphET, GCN, MLP: anomaly
      logits per node. ListOpsTransformer: class logits; CausalListOpsTransformer: the next
      token's logits at every position. The text classifiers (BagOfWordsClassifier,
      TextTransformer): one toxicity logit per text, read from token ids. Denoisers (in
      :mod:`amlab.diffusion`): the denoised states ``denoise(x, t)``; their ``energy``,
      ``grad``, ``energy_and_grad`` and ``retrieve`` take the time t after x.
"""

from amlab.models.base import AssociativeMemory
from amlab.models.baselines import GCN, MLP, BaselineConfig
from amlab.models.dense_am import DenseAM, DenseAMConfig
from amlab.models.energy_transformer import EnergyTransformer, EnergyTransformerConfig
from amlab.models.graph_et import GraphET, GraphETConfig
from amlab.models.listops import (
    CausalListOpsTransformer,
    ListOpsTransformer,
    ListOpsTransformerConfig,
)
from amlab.models.masked_image_et import Completion, MaskedImageET, MaskedImageETConfig
from amlab.models.model import Model
from amlab.models.random_feature_am import RandomFeatureAM, RandomFeatureAMConfig
from amlab.models.text_classifier import (
    BagOfWordsClassifier,
    BagOfWordsConfig,
    TextTransformer,
    TextTransformerConfig,
)

__all__ = [
    "AssociativeMemory",
    "BagOfWordsClassifier",
    "BagOfWordsConfig",
    "BaselineConfig",
    "CausalListOpsTransformer",
    "Completion",
    "DenseAM",
    "DenseAMConfig",
    "EnergyTransformer",
    "EnergyTransformerConfig",
    "GCN",
    "GraphET",
    "GraphETConfig",
    "ListOpsTransformer",
    "ListOpsTransformerConfig",
    "MLP",
    "MaskedImageET",
    "MaskedImageETConfig",
    "Model",
    "RandomFeatureAM",
    "RandomFeatureAMConfig",
    "TextTransformer",
    "TextTransformerConfig",
]
