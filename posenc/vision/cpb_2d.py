"""Swin Transformer V2's log-spaced continuous position bias over a patch grid (Liu et al. 2022,
arXiv:2111.09883, section 3.3), beside the table of :mod:`posenc.vision.rel_bias_2d`.

The offset ``(dy, dx)`` between two patches is normalised by the trained grid (``h - 1``, ``w - 1``),
log-spaced per axis (``sign(x) log2(1 + 8|x|) / log2(8)``) and mapped by the meta network
``Linear(2, 512) -> ReLU -> Linear(512, heads)`` to ``16 sigmoid(.)``. Evaluated once per distinct
offset (``(2h-1)(2w-1)`` of them) and gathered with Swin's relative index. Prefix tokens get 0.
Because it is a function of the offset, a model trained on one grid runs on another without
resampling: build it with the new ``grid`` and ``pretrained_grid`` set to the old one.
Verified against a float64 double loop over patch pairs, and against transformers' (and, where
installed, timm's) Swin V2 attention with the weights copied, in ``tests/vision/test_cpb_2d.py``.
"""

from __future__ import annotations

import torch

from posenc.bias.cpb import CPBMLP, log_spaced
from posenc.core.base import DerivedTablesMixin, PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import register
from posenc.core.terms import ScoreMod, gathered_bias_mod
from posenc.core.validation import check_fits, check_float_dtype, check_int, check_positive_int
from posenc.vision.grid import check_grid, grid_call_positions, token_coords
from posenc.vision.rel_bias_2d import _relative_index_2d, check_bias_heads, relative_position_index_2d


def offset_table_2d(
    grid: tuple[int, int], pretrained_grid: tuple[int, int], *, device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``((2h-1)(2w-1), 2)`` log-spaced ``(dy, dx)`` of every offset, in Swin's index order, formed in
    float64 and returned in ``dtype``."""
    h, w = check_grid("grid", grid)
    ph, pw = check_grid("pretrained_grid", pretrained_grid)
    check_float_dtype("dtype", dtype)
    check_fits("grid", grid, ((2 * h - 1) * (2 * w - 1), 2), torch.float64, device)
    dy = torch.arange(-(h - 1), h, dtype=torch.float64, device=device)
    dx = torch.arange(-(w - 1), w, dtype=torch.float64, device=device)
    table = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)
    return torch.stack(
        (log_spaced(table[:, 0], max(ph - 1, 1)), log_spaced(table[:, 1], max(pw - 1, 1))), dim=-1
    ).to(dtype)


@register(
    "cpb_2d",
    paper="Liu et al. 2022, arXiv:2111.09883 (Swin Transformer V2)",
    summary="Swin V2's MLP of log-spaced 2-D patch offsets: a bounded bias per head that transfers across grids.",
)
class ContinuousPositionBias2d(DerivedTablesMixin, PositionEncoding):
    """Log-spaced continuous position bias over a ``(h, w)`` patch grid.

    Args:
        heads: attention heads.
        grid: ``(h, w)`` patch grid (a vision Transformer fills it in).
        pretrained_grid: the grid offsets are normalised by (default: ``grid``).
        num_prefix_tokens: tokens before the patches; they get zero bias.
        hidden: width of the meta network.
    """

    model_arguments = ("heads", "grid", "num_prefix_tokens")
    hooks = frozenset({"bias"})
    per_layer = True
    supports_causal = False

    def __init__(
        self,
        heads: int,
        grid: int | tuple[int, int] = 7,
        *,
        pretrained_grid: int | tuple[int, int] | None = None,
        num_prefix_tokens: int = 0,
        hidden: int = 512,
        device=None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.grid = check_grid("grid", grid)
        self.pretrained_grid = self.grid if pretrained_grid is None else check_grid("pretrained_grid", pretrained_grid)
        self.num_prefix_tokens = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        self.mlp = CPBMLP(2, heads, check_positive_int("hidden", hidden), device=device, dtype=dtype)
        self.register_buffer("offsets", torch.empty(0, 2, device=device), persistent=False)
        self.register_buffer("index", torch.empty(0, 0, dtype=torch.long, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        # float64, rounded by the meta network to its weights' dtype (a float64 network gets them exact)
        self.offsets = offset_table_2d(self.grid, self.pretrained_grid, device=device, dtype=torch.float64)
        self.index = relative_position_index_2d(self.grid, device=device)

    def bias(self, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        """``(b | 1, heads, n, m)`` bias between the tokens at ``q_positions`` and ``k_positions``."""
        table = self.mlp(self.offsets)  # ((2h-1)(2w-1), heads)
        kw = {"grid": self.grid, "num_prefix_tokens": self.num_prefix_tokens, "device": table.device}
        cq, pq = token_coords(q_positions, **kw)
        ck, pk = token_coords(k_positions, **kw)
        index = _relative_index_2d(cq, ck, self.grid)  # (b | 1, n, m)
        keep = pq.unsqueeze(-1) & pk.unsqueeze(-2)
        # (b | 1, n, m, heads) -> (b | 1, heads, n, m)
        return (table[index] * keep.unsqueeze(-1).to(table.dtype)).permute(0, 3, 1, 2)

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        return self.bias(q_positions, k_positions)

    def forward(self, n: int | None = None, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``(b | 1, heads, n, n)`` bias among ``n`` tokens (default: the whole grid with its prefix tokens)."""
        pos = grid_call_positions(n, positions, grid=self.grid, num_prefix_tokens=self.num_prefix_tokens)
        return self.bias(pos, pos)

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """The materialised bias, gathered by ``[b, h, q_idx, kv_idx]`` (it has no per-offset form)."""
        check_bias_heads(q, self.heads)
        return gathered_bias_mod(self.score_bias(q, k, q_positions=q_positions, k_positions=k_positions), q.shape[0])

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, grid={self.grid}, pretrained_grid={self.pretrained_grid}, "
            f"num_prefix_tokens={self.num_prefix_tokens}"
        )
