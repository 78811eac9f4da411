"""What every model in amlab shares (the protocol is described in :mod:`amlab.models`):
its configuration, saving and loading, dtype and device, the one input check, seeding."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from amlab.errors import AmlabError, as_float_tensor, check_scale, dtype_name
from amlab.io import load_model, save_model


class ScaledModule(nn.Module):
    """A module whose float attributes named in :attr:`scales` (an inverse temperature, an
    energy's floor) must lie within the range its dtype allows (:func:`amlab.errors.check_scale`):
    checked when built (:meth:`_scale`) and again before ``.float()``, ``.double()``,
    ``.half()`` or ``.to(dtype)`` converts the tensors. Every model is one, and so is every
    layer of :mod:`amlab.nn`."""

    #: float attributes that must lie within the range the module's dtype allows
    #: (:func:`amlab.errors.check_scale`), each with whether it may be 0; checked when built
    #: and again before the tensors change dtype
    scales: ClassVar[dict[str, bool]] = {}

    def _apply(self, fn, recurse: bool = True):
        """Before ``.float()``, ``.double()``, ``.half()`` or ``.to(dtype)`` converts the
        tensors, check that every scale of this module and of the modules inside it (an
        EnergyTransformer block, a Pooling's Retrieval) lies within the new dtype's range: a
        conversion that would overflow (beta = 1e60 into float32) is refused, and every module
        is left as it was. (Called on a torch container that holds it, the conversion reaches
        this module only after the container's earlier children have converted: see
        ``docs/api/io.md``.)"""
        for module in self.modules() if recurse else (self,):
            if isinstance(module, ScaledModule):
                module._check_scales_for(fn)
        return super()._apply(fn, recurse)

    def _scale(self, value: Any, name: str, dtype: torch.dtype) -> float:
        """``value`` checked as the scale ``name`` of :attr:`scales` for ``dtype`` (whether it
        may be 0 is the one :attr:`scales` says), for a constructor to set."""
        return check_scale(value, name, dtype, allow_zero=self.scales[name])

    def _check_scales_for(self, fn) -> None:
        """Refuse the tensor conversion ``fn`` if it changes the dtype to one whose range
        excludes one of :attr:`scales`."""
        if not self.scales:
            return
        ref = self._reference()
        dtype = fn(torch.empty(0, dtype=ref.dtype, device=ref.device)).dtype
        if dtype != ref.dtype:
            for name in self.scales:
                value = getattr(self, name)
                if isinstance(value, torch.Tensor):  # a learnable scale (a layer's beta)
                    value = value.detach()
                self._scale(value, name, dtype)

    def _reference(self) -> torch.Tensor:
        """The module's first floating parameter or buffer (all of them share dtype and
        device)."""
        for t in chain(self.parameters(), self.buffers()):
            if t.is_floating_point():
                return t
        raise AmlabError(f"{type(self).__name__} holds no floating tensor.")


class Model(ScaledModule):
    """Base class of every model: a subclass names its configuration dataclass ``Config``
    and builds it from its current state in :attr:`config`; its :attr:`scales` are checked
    as :class:`ScaledModule` says."""

    #: the frozen dataclass of the model's configuration
    Config: ClassVar[type]
    #: the constructor takes the ``Config`` itself (``cls(config)``), not its fields
    takes_config: ClassVar[bool] = False
    #: tensors that only files of an earlier layout of this model hold, each with what
    #: changed: such a file's weights cannot be loaded or converted, so
    #: :func:`~amlab.io.load_model` says to train the model again, not to re-save it (and
    #: :func:`~amlab.training.load_checkpoint` to start afresh: :func:`~amlab.io.former_layout`)
    former_tensors: ClassVar[dict[str, str]] = {}

    @property
    def config(self) -> Any:
        """The model's ``Config`` as it is now: every non-tensor constructor argument (the
        dtype the one its tensors have). :meth:`save` writes exactly this and the tensors.

        Each field is read from the model's attribute of the same name; a model whose state
        names a field otherwise overrides this."""
        names = [f.name for f in dataclasses.fields(self.Config) if f.name != "dtype"]
        return self.Config(**{n: getattr(self, n) for n in names}, dtype=dtype_name(self.dtype))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's floating tensors (float32 or float64)."""
        return self._reference().dtype

    @property
    def device(self) -> torch.device:
        """The device the model's tensors are on."""
        return self._reference().device

    # -- saving ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the tensors (``state_dict()``, safetensors) and the configuration
        (``{"kind": class name, **asdict(config)}``, JSON) into directory ``path``."""
        return save_model(path, self)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None):
        """The model :meth:`save` wrote into ``path`` (in eval mode), on ``device`` if given."""
        return load_model(path, cls, device=device)

    @classmethod
    def from_saved(cls, config: Any, tensors: dict[str, torch.Tensor]):
        """Build the model of the checked ``config`` (its weights are then loaded from
        ``tensors`` by :func:`~amlab.io.load_model`). Models whose constructor takes tensors
        or objects besides the config's fields override it and take them from ``tensors``."""
        return cls(config) if cls.takes_config else cls(**config_fields(config))

    # -- the one input check --------------------------------------------------------------
    def _as_input(self, x: Any, name: str = "x") -> torch.Tensor:
        """``x`` as a finite floating tensor of the model's dtype on its device: a torch tensor
        must already be there (:meth:`_check_placement`); other input (lists, numpy arrays,
        integer tensors) is converted."""
        if isinstance(x, torch.Tensor):
            self._check_placement(x, name)
        return as_float_tensor(x, name, dtype=self.dtype, device=self.device)

    def _check_placement(self, x: torch.Tensor, name: str) -> None:
        """Tensor x is on the model's device and, if floating, of its dtype; nothing is moved
        or cast behind the caller's back."""
        dtype, device = self.dtype, self.device
        if x.device != device or (x.is_floating_point() and x.dtype != dtype):
            to = "model.device, model.dtype" if x.is_floating_point() else "model.device"
            raise AmlabError(
                f"{name} is {x.dtype} on {x.device} but the {type(self).__name__} is {dtype} "
                f"on {device}; convert one of them, e.g. {name}.to({to})."
            )


def config_fields(config: Any) -> dict[str, Any]:
    """A config dataclass's fields by name (not converted, unlike ``dataclasses.asdict``)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def config_from(config_cls: type, source: Any, **own: Any) -> Any:
    """A ``config_cls`` of the fields ``own`` gives, the rest taken from the same-named
    fields of the config ``source`` (a task model's config from its block's)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    inherited = {k: v for k, v in config_fields(source).items() if k in names and k not in own}
    return config_cls(**inherited, **own)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from torch's default generator seeded with ``seed`` inside the block, leaving the
    global random state as it was: a model built inside draws exactly the initial weights that
    ``torch.manual_seed(seed)`` followed by the same construction would give."""
    with torch.random.fork_rng(devices=[]):  # the CPU generator, where models are built
        torch.default_generator.manual_seed(seed)
        yield
