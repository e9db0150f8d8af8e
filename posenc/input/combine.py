"""Adding or concatenating an absolute encoding to token embeddings, with shape checks."""

from __future__ import annotations

import torch

from posenc.core.validation import check_float_tensor


def combine_with_input(x: torch.Tensor, encoding: torch.Tensor, combine: str, *, name: str = "x") -> torch.Tensor:
    """x: ``(b, n, d)``; encoding: ``(b | 1, n, e)``. ``"add"`` needs ``e == d``; ``"concat"`` gives ``d + e``.

    The encoding is computed in float32 and cast to ``x``'s dtype only here, at the very end.
    """
    check_float_tensor(name, x, ndim=3)
    e = encoding.shape[-1]
    if combine == "add":
        if x.shape[-1] != e:
            raise ValueError(f"`{name}` must have last dimension {e} (the encoding's `dim`) to add to it, got {x.shape[-1]}")
        return x + encoding.to(x.dtype)
    return torch.cat([x, encoding.to(x.dtype).expand(x.shape[0], -1, -1)], dim=-1)
