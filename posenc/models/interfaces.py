"""The declared side channels between an encoding and a reference model, one small protocol per
model kind (checked with ``isinstance``; an encoding opts in by having the attribute).

* :class:`ViTPlaced`: an ``"input"`` encoding the ViT applies after block ``after_block`` instead of
  before the first (CPVT's PEG); ``None`` keeps the default place.
* :class:`GridBound`: an encoding built for one ``(h, w)`` patch grid, which must be the ViT's.
* :class:`CNNEncoding`: a spatial encoding's place in the CNN (``cnn_role``: ``"stem"``,
  ``"features"`` or ``"attention"``); a ``"features"`` encoding also declares :class:`CNNFeatures`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ViTPlaced(Protocol):
    after_block: int | None


@runtime_checkable
class GridBound(Protocol):
    grid: tuple[int, int] | None


@runtime_checkable
class CNNEncoding(Protocol):
    cnn_role: str


@runtime_checkable
class CNNFeatures(Protocol):
    concat_channels: int


def cnn_role(encoding: object) -> str | None:
    """The encoding's (or encoding class's) declared CNN role, or None."""
    return encoding.cnn_role if isinstance(encoding, CNNEncoding) else None
