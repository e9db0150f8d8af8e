"""The registry of encodings: name -> class, with its family and paper.

Encodings register themselves with :func:`register` where they are defined; importing ``posenc``
imports every family package, so the registry is complete once the package is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from posenc.core.suggest import did_you_mean

#: Keyword arguments a reference model may fill in from its own shape when it builds an encoding by
#: name (the Transformer: dim, heads, head_dim, causal; the ViT adds grid, num_prefix_tokens; the CNN
#: gives in_channels, out_channels, kernel_size). Each encoding declares the ones its constructor
#: takes in ``model_arguments``.
MODEL_ARGUMENTS = (
    "dim", "heads", "head_dim", "causal", "grid", "num_prefix_tokens", "in_channels", "out_channels", "kernel_size"
)
#: Families whose encodings act on 1-D token sequences through the hooks of ``PositionEncoding``
#: (the image families need a patch grid).
SEQUENCE_FAMILIES = ("none", "input", "rotary", "bias", "relative", "complex", "context")


@dataclass(frozen=True)
class EncodingInfo:
    """One registry entry."""

    name: str
    family: str  #: how the encoding enters a model, the package folder it lives in
    paper: str  #: the reference, with its arXiv id
    summary: str  #: one line on what it is
    cls: type[nn.Module]

    @property
    def fits_transformer(self) -> bool:
        """Whether ``Transformer(position=name)`` takes it: a sequence family and the encoding protocol."""
        from posenc.core.base import PositionEncoding

        return self.family in SEQUENCE_FAMILIES and issubclass(self.cls, PositionEncoding)

    def as_row(self) -> dict[str, str]:
        return {"name": self.name, "family": self.family, "paper": self.paper, "summary": self.summary}


_REGISTRY: dict[str, EncodingInfo] = {}


def register(name: str, *, paper: str, summary: str = "", family: str | None = None) -> Callable[[type], type]:
    """Class decorator adding an encoding to the registry under ``name``; it records metadata only
    (the checks every encoding shares live in :class:`posenc.core.base.EncodingModule`).

    The family is the encoding's package folder (``posenc/<family>/``, ``posenc/none.py`` for
    ``"none"``), read from the class's module: it is stated once, by where the file lives. ``family``
    is for an encoding defined outside the posenc package, which has no family folder.
    """

    def decorator(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"encoding name {name!r} is already registered to {_REGISTRY[name].cls.__name__}")
        doc = summary or (inspect.getdoc(cls) or "").split("\n")[0]
        _REGISTRY[name] = EncodingInfo(name=name, family=_family(cls, family), paper=paper, summary=doc, cls=cls)
        cls.registry_name = name
        return cls

    return decorator


def _family(cls: type, given: str | None) -> str:
    """The family of ``cls``: its folder in the posenc package, or ``given`` for a class outside it."""
    parts = cls.__module__.split(".")
    if parts[0] == "posenc" and len(parts) > 1:
        if given is not None:
            raise ValueError(
                f"`family`={given!r} given for {cls.__name__}, whose family is its package folder "
                f"{parts[1]!r} ({cls.__module__}); leave `family` out"
            )
        return parts[1]
    if not isinstance(given, str) or not given:
        raise ValueError(
            f"`family` must name how {cls.__name__} enters a model (e.g. 'bias'), since it is defined "
            f"outside posenc's family folders (in {cls.__module__}); got {given!r}"
        )
    return given


def available(family: str | None = None) -> list[EncodingInfo]:
    """The registered encodings, in registration order, optionally only those of one family.

    A ``family`` no registered encoding has raises ``ValueError`` listing the families (an empty list
    would read as "this family has no encodings").
    """
    if family is not None:
        families = sorted({info.family for info in _REGISTRY.values()})
        if family not in families:
            raise ValueError(
                f"unknown family {family!r} for `family`{did_you_mean(family, families)}; families: {', '.join(families)}"
            )
    return [info for info in _REGISTRY.values() if family is None or info.family == family]


def transformer_encodings(*, causal: bool | None = None) -> list[str]:
    """Names usable as ``Transformer(position=...)``, in registration order; ``causal=True`` keeps
    the decoder-capable ones. The one place that answers which encodings fit the Transformer."""
    return [
        info.name
        for info in _REGISTRY.values()
        if info.fits_transformer and not (causal and not info.cls.supports_causal)
    ]


def get(name: str) -> EncodingInfo:
    """The registry entry for ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        hint = did_you_mean(name, _REGISTRY)
        raise ValueError(f"unknown encoding {name!r} for `name`{hint}; known encodings: {known}")
    return _REGISTRY[name]


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the encoding registered as ``name`` with its constructor's keyword arguments."""
    return get(name).cls(**kwargs)


def create_for_model(name: str, *, model_args: dict[str, Any], **kwargs: Any) -> nn.Module:
    """Build ``name``, filling in the model arguments it declares (``cls.model_arguments``) from ``model_args``.

    ``model_args`` holds the model's own sizes (``dim``, ``heads``, ``head_dim``, ...); arguments the
    user passed explicitly in ``kwargs`` win.
    """
    cls = get(name).cls  # every registered class is an EncodingModule (tests/core/test_base.py)
    filled = {k: v for k, v in model_args.items() if k in cls.model_arguments and k not in kwargs}
    return cls(**filled, **kwargs)

