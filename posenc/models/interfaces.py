"""The declared side channels between an encoding and a reference model, one small protocol per
model kind (checked with ``isinstance``; an encoding opts in by having the attribute).

* :class:`ViTPlaced`: an ``"input"`` encoding the ViT applies after block ``after_block`` instead of
  before the first (CPVT's PEG); ``None`` keeps the default place.
* :class:`GridBound`: an encoding built for one ``(h, w)`` patch grid, which must be the ViT's.
* :class:`CNNEncoding`: a spatial encoding's place in the CNN (``cnn_role``: ``"stem"``,
  ``"features"`` or ``"attention"``); a ``"features"`` encoding also declares :class:`CNNFeatures`.
* :class:`PrefixTokens`: a patch-grid encoding's count of tokens before the patches (the class token).
* :class:`ModelWidth`, :class:`HeadCount`, :class:`HeadWidth`: the sizes an encoding was built for
  (``dim``, ``heads``, ``head_dim``), which the analyses read to feed it inputs of the right shape
  and the ViT compares, with the prefix tokens, to its own when given an encoding module.
* :class:`PositionTable`: an encoding with a row per position, for positions ``0 .. max_len - 1``
  only, which the Transformer's randomized positions must stay within.
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


@runtime_checkable
class PrefixTokens(Protocol):
    num_prefix_tokens: int


@runtime_checkable
class ModelWidth(Protocol):
    dim: int


@runtime_checkable
class HeadCount(Protocol):
    heads: int


@runtime_checkable
class HeadWidth(Protocol):
    head_dim: int


@runtime_checkable
class PositionTable(Protocol):
    max_len: int


def prefix_tokens(encoding: object) -> int:
    """The tokens before the patches an encoding declares (0 when it declares none)."""
    return int(encoding.num_prefix_tokens or 0) if isinstance(encoding, PrefixTokens) else 0
