"""NanoFlow's flow-indication embedding (Lee et al. 2020, arXiv:2006.06280, section 3.3).

NanoFlow shares one density estimator across all ``K`` steps of a normalizing flow and tells the
steps apart with a learned embedding per flow index ``k``, fed to the shared network alongside its
input. The embedding is a learned table ``(K, d)``; looking up an index outside ``[0, K)`` is an
error, not a wrap-around. :class:`posenc.step.nanoflow.NanoFlow` shows it conditioning a small
shared-parameter affine-coupling flow.

Verified as a table lookup against an element-by-element float64 copy of the table
(``tests/step/test_flow_index.py``) and by training the flow in ``tests/step/test_nanoflow.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from posenc.core.base import EncodingModule
from posenc.core.registry import register
from posenc.core.validation import (
    can_read_values,
    check_finite,
    check_float,
    check_positive_int,
    check_table_fits,
    check_tensor,
)


def flow_indices(flow_index: torch.Tensor | float, num_flows: int) -> torch.Tensor:
    """Validate flow indices and return them as int64: ``(*,)`` integers (or integral floats) in ``[0, K)``."""
    check_positive_int("num_flows", num_flows)
    allowed = f"`flow_index` must lie in [0, num_flows - 1] = [0, {num_flows - 1}]"
    if isinstance(flow_index, int) and not isinstance(flow_index, bool) and not 0 <= flow_index < num_flows:
        raise ValueError(f"{allowed}, got {flow_index}")  # before torch.tensor, which cannot hold one past int64
    if isinstance(flow_index, (int, float)) and not isinstance(flow_index, bool):
        flow_index = torch.tensor(flow_index)
    flow_index = check_tensor("flow_index", flow_index)
    if flow_index.dtype == torch.bool:
        raise ValueError("`flow_index` must be an integer tensor, got torch.bool")
    if flow_index.is_floating_point():
        check_finite("flow_index", flow_index)  # inf would pass the whole-number test and wrap in .long()
        if can_read_values(flow_index) and not torch.equal(flow_index, flow_index.round()):
            raise ValueError("`flow_index` must hold whole numbers: a learned table has no entry between steps")
    # the range is read before .long(), which would wrap a float past int64 into a value never given
    outside = can_read_values(flow_index) and flow_index.numel() and (flow_index.min() < 0 or flow_index.max() >= num_flows)
    if outside:
        raise ValueError(f"{allowed}, got range [{int(flow_index.min())}, {int(flow_index.max())}]")
    return flow_index.long()


@register(
    "flow_index",
    paper="Lee et al. 2020, arXiv:2006.06280",
    summary="NanoFlow's learned embedding of the flow step, conditioning a parameter-shared flow.",
)
class FlowIndexEmbedding(EncodingModule):
    """A learned ``(num_flows, dim)`` embedding of the flow index.

    Args:
        num_flows: ``K``, the number of flow steps sharing the network.
        dim: width of the embedding.
        init_std: standard deviation of the normal initialisation.
    """

    model_arguments = ("dim",)

    def __init__(
        self,
        num_flows: int = 8,
        dim: int = 16,
        *,
        init_std: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_flows = check_positive_int("num_flows", num_flows)
        self.dim = check_positive_int("dim", dim)
        self.init_std = check_float("init_std", init_std, minimum=0.0)
        check_table_fits({"num_flows": num_flows, "dim": dim}, (num_flows, dim), dtype, device)
        self.weight = nn.Parameter(torch.empty(num_flows, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_std)

    @property
    def out_dim(self) -> int:
        return self.dim

    def forward(self, flow_index: torch.Tensor | float) -> torch.Tensor:
        """flow_index: ``(*,)`` -> ``(*, dim)``."""
        index = flow_indices(flow_index, self.num_flows).to(self.weight.device)
        return self.weight[index]

    def extra_repr(self) -> str:
        return f"num_flows={self.num_flows}, dim={self.dim}"
