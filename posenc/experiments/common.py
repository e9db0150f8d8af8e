"""Pieces shared by the sequence experiments: which registry entries fit the reference Transformer,
and evaluation helpers."""

from __future__ import annotations

import torch

from posenc.core.registry import SEQUENCE_FAMILIES, transformer_encodings  # noqa: F401


def sequence_encodings(*, causal: bool | None = None) -> list[str]:
    """Registry names usable as ``Transformer(position=...)`` on token sequences; ``causal=True``
    keeps the decoder-capable ones (:func:`posenc.core.registry.transformer_encodings`)."""
    return transformer_encodings(causal=causal)


def position_kwargs(name: str, *, max_len: int) -> dict:
    """Constructor arguments an experiment passes for ``name`` beyond the model's own sizes."""
    if name == "learned":
        # at the scale of the reference model's N(0, 1) token embeddings (0.02 would start it invisible)
        return {"max_len": max_len, "init_std": 1.0}
    if name == "wav2vec2_conv":
        # the paper's 128-tap kernel is for 50 Hz audio frames; a short symbol sequence wants a short one
        return {"kernel_size": 7, "groups": 4}
    return {}


@torch.no_grad()
def accuracy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Fraction of correct arg-max predictions, over ``mask`` (True = counted) when given."""
    right = logits.argmax(-1) == targets
    if mask is not None:
        right = right[mask]
    return right.float().mean().item()
