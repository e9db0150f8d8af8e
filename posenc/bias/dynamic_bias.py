"""Dynamic position bias: a small MLP of the relative offset gives each head's logit bias.

Introduced by CrossFormer (Wang et al. 2021, arXiv:2108.00154, section 3.3) and used by
x-transformers (``DynamicPositionBias``): the offset (optionally ``sign(x) log(1 + |x|)``, which
stretches the near offsets) goes through ``Linear(1, w) -> SiLU -> [Linear(w, w) -> SiLU] x (depth - 1)
-> Linear(w, heads)``. Because it is a function, not a table, it has a value at any offset, which is
what lets it extrapolate. The MLP is evaluated once per distinct offset (``n + m - 1`` of them).
It reads the offset ``j - i`` (key less query; ``-(i - j)`` for the past keys when causal), where
x-transformers (like CrossFormer) feeds ``i - j``: the same function once the first layer's weight
is negated, which is how x-transformers' weights (without its ``norm`` option) load here.
Verified against a float64 transcription, and x-transformers' module, in ``tests/bias/test_dynamic_bias.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from posenc.bias.offset_bias import OffsetBias, causal_distance
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import check_bool, check_layers_fit, check_positions, check_positive_int


def log_distance(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: near offsets spread out, far ones compressed."""
    check_positions("x", x)
    return torch.sign(x) * torch.log1p(x.abs())


@register(
    "dynamic_bias",
    paper="Wang et al. 2021, arXiv:2108.00154 (CrossFormer's dynamic position bias)",
    summary="An MLP of the (log-scaled) relative offset gives each head's logit bias, defined at every offset.",
)
class DynamicPositionBias(OffsetBias):
    """An MLP from the offset to a bias per head.

    Args:
        heads: attention heads.
        hidden: width of the MLP.
        depth: number of hidden layers (>= 1).
        log_distance: feed ``sign(x) log(1 + |x|)`` instead of the raw offset.
        causal: read the distance ``i - j`` (past keys) instead of the signed offset ``j - i``.
    """

    model_arguments = ("heads", "causal")

    def __init__(
        self,
        heads: int,
        *,
        hidden: int = 64,
        depth: int = 2,
        log_distance: bool = True,
        causal: bool = True,
        device=None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.hidden = check_positive_int("hidden", hidden)
        self.depth = check_positive_int("depth", depth)
        self.log_distance = check_bool("log_distance", log_distance)
        self.causal = check_bool("causal", causal)
        sizes = {"heads": heads, "hidden": hidden, "depth": depth}
        check_layers_fit(sizes, depth * hidden * (hidden + 1) + hidden * (heads + 2) + heads, dtype, device)
        layers: list[nn.Module] = [nn.Linear(1, hidden, device=device, dtype=dtype), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden, device=device, dtype=dtype), nn.SiLU()]
        layers.append(nn.Linear(hidden, heads, device=device, dtype=dtype))
        self.mlp = nn.Sequential(*layers)

    def mlp_input(self, offsets: torch.Tensor) -> torch.Tensor:
        """The MLP's scalar input for each offset ``j - i``."""
        x = -causal_distance(offsets, True) if self.causal else offsets
        return log_distance(x) if self.log_distance else x

    def offset_bias(self, offsets: torch.Tensor) -> torch.Tensor:
        weight = self.mlp[0].weight
        work = arithmetic_dtype(weight.dtype)  # float32, or float64 for float64 weights
        return self.mlp(self.mlp_input(offsets).unsqueeze(-1).to(weight.dtype)).to(work)

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, hidden={self.hidden}, depth={self.depth}, log_distance={self.log_distance}, "
            f"causal={self.causal}"
        )
