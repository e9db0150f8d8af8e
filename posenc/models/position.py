"""Turning a model's ``position=`` argument into the encoding instance(s) its blocks use."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from posenc.core.base import PositionEncoding
from posenc.core.registry import EncodingInfo, create_for_model, get


def build_layer_encodings(
    position: str | PositionEncoding,
    kwargs: dict[str, Any],
    *,
    model_args: dict[str, Any],
    depth: int,
    model: str,
    fits: Callable[[EncodingInfo], bool] | None = None,
) -> list[PositionEncoding]:
    """One encoding shared by every block, or ``depth`` of them when the encoding is ``per_layer``.

    position: a registry name (built with ``kwargs``, the model filling in the ``model_args`` the
    encoding's constructor takes) or a :class:`PositionEncoding` instance (copied per block when
    per-layer). ``model`` names the model in error messages; ``fits`` (a registry entry -> whether the
    model takes it) refuses the registry names the model does not take.
    """
    if isinstance(position, str):
        info = get(position)
        if not issubclass(info.cls, PositionEncoding):
            raise TypeError(f"`position`={position!r} is not an encoding usable by the {model} (no attention hooks)")
        if fits is not None and not fits(info):
            raise TypeError(
                f"`position`={position!r} is a {info.family} encoding, not one the {model} takes "
                "(posenc.available() says which encodings fit each model)"
            )
        first = create_for_model(position, model_args=model_args, **kwargs)
    elif isinstance(position, PositionEncoding):
        if kwargs:
            raise ValueError(f"position keyword arguments {sorted(kwargs)} need `position` to be a registry name")
        first = position
    else:
        raise TypeError(f"`position` must be a registry name or a PositionEncoding, got {type(position).__name__}")
    if not first.per_layer:
        return [first]
    if isinstance(position, str):
        return [first] + [create_for_model(position, model_args=model_args, **kwargs) for _ in range(depth - 1)]
    return [first] + [copy.deepcopy(first) for _ in range(depth - 1)]


def encoding_for_layer(shared: PositionEncoding, per_layer: list[PositionEncoding], layer: int) -> PositionEncoding:
    """The encoding of block ``layer``: ``shared`` is block 0's, ``per_layer`` holds blocks 1.. (if any)."""
    return shared if layer == 0 or not len(per_layer) else per_layer[layer - 1]
