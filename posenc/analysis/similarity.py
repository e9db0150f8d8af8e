"""Similarity structure of encodings: how the score between two positions depends on their offset.

For an absolute encoding the matrix ``S[i, j] = PE(i) . PE(j)`` shows whether nearby positions look
alike, whether the similarity depends on ``|i - j|`` only (a Toeplitz matrix), is symmetric in the
offset and decays monotonically. For a bias or rotary encoding the analogue is the attention score
as a function of the offset ``j - i`` (key minus query), e.g. RoPE's long-range decay (Su et al.
2021, arXiv:2104.09864, section 3.4.3 and its figure 2), whose upper bound
:func:`roformer_decay_bound` computes from the frequencies.

The functions take any module that implements the hooks of
:class:`posenc.core.base.PositionEncoding` (``encode_input``, ``rotate``, ``score_bias``,
``value_term``), or a plain ``(n, d)`` table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.validation import check_bool, check_finite, check_fits, check_float_tensor, check_int, check_tensor
from posenc.models.interfaces import HeadCount, HeadWidth, ModelWidth


def similarity_matrix(table: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
    """``(n, n)`` float64 dot products ``table[i] . table[j]`` (cosines when ``normalize``).

    table: ``(n, d)``, the encodings of positions ``0 .. n - 1``.
    """
    check_float_tensor("table", table, ndim=2)
    check_finite("table", table)
    check_bool("normalize", normalize)
    t = table.detach().to(device="cpu", dtype=torch.float64)
    if normalize:
        t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return t @ t.T


def offset_profile(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and spread (max - min) of ``matrix[..., i, j]`` along each diagonal ``j - i``.

    matrix: ``(..., n, m)``; the mean is over the leading axes too, the spread is the largest one
    within a single leading index (a head, say). Returns offsets ``(n + m - 1,)`` from
    ``-(n - 1)`` to ``m - 1``, and the mean and spread per offset, float64.
    """
    check_tensor("matrix", matrix)
    if matrix.ndim < 2:
        raise ValueError(f"`matrix` must have rank >= 2, got shape {tuple(matrix.shape)}")
    if matrix.numel() == 0:
        raise ValueError(f"`matrix` must not be empty, got shape {tuple(matrix.shape)}")
    check_finite("matrix", matrix)
    mat = matrix.detach().to(device="cpu", dtype=torch.float64)
    n, m = mat.shape[-2:]
    flat = mat.reshape(-1, n, m)
    offsets = torch.arange(-(n - 1), m)
    means, spreads = [], []
    for k in offsets.tolist():
        # (L, length of diagonal k): one row per leading index
        diag = torch.diagonal(flat, offset=k, dim1=-2, dim2=-1)
        means.append(diag.mean())
        spreads.append((diag.max(dim=-1).values - diag.min(dim=-1).values).max())
    return offsets, torch.stack(means), torch.stack(spreads)


@dataclass(frozen=True)
class SimilarityStructure:
    """How a similarity (or score) matrix depends on the offset between positions."""

    toeplitz_error: float  #: largest spread along a diagonal / largest |entry|: 0 when it depends on j - i only
    symmetry_error: float  #: largest |profile(k) - profile(-k)| / largest |entry|: 0 when symmetric in the offset
    monotone_until: int  #: the profile does not increase for offsets 0 .. monotone_until (both directions)
    monotone: bool  #: monotone over every offset
    offsets: list[int] = field(repr=False)
    profile: list[float] = field(repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "toeplitz_error": self.toeplitz_error,
            "symmetry_error": self.symmetry_error,
            "monotone_until": self.monotone_until,
            "monotone": self.monotone,
        }


def _monotone_until(values: torch.Tensor, tol: float) -> int:
    """Largest K with values[0] >= values[1] >= ... >= values[K] (within ``tol``)."""
    steps = values[1:] - values[:-1]
    rising = (steps > tol).nonzero()
    return int(rising[0, 0]) if len(rising) else len(values) - 1


def similarity_structure(matrix: torch.Tensor) -> SimilarityStructure:
    """Toeplitz, symmetry and monotone-decay measures of a square ``(n, n)`` (or ``(..., n, n)``) matrix.

    With leading axes (heads) each measure is the worst over them.

    Use :func:`similarity_matrix` on an absolute table, or a score/bias matrix of a relative encoding.
    """
    check_tensor("matrix", matrix)
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"`matrix` must be square in its last two axes, got shape {tuple(matrix.shape)}")
    n = matrix.shape[-1]
    offsets, mean, spread = offset_profile(matrix)
    scale = matrix.detach().double().abs().max().clamp_min(1e-300).item()
    tol = 1e-9 * scale
    symmetry, until = 0.0, n - 1
    for single in matrix.detach().double().cpu().reshape(-1, n, n):
        _, profile, _ = offset_profile(single)
        forward, backward = profile[n - 1 :], profile[:n].flip(0)  # offsets 0, 1, ... and 0, -1, ...
        symmetry = max(symmetry, ((forward - backward).abs().max() / scale).item())
        until = min(until, _monotone_until(forward, tol), _monotone_until(backward, tol))
    return SimilarityStructure(
        toeplitz_error=(spread.max() / scale).item(),
        symmetry_error=symmetry,
        monotone_until=until,
        monotone=until == n - 1,
        offsets=offsets.tolist(),
        profile=mean.tolist(),
    )


def _model_sizes(encoding: nn.Module, heads: int | None, head_dim: int | None) -> tuple[int, int]:
    if heads is None:
        heads = encoding.heads if isinstance(encoding, HeadCount) else 1
    if head_dim is None and isinstance(encoding, HeadWidth):
        head_dim = encoding.head_dim
    if head_dim is None:
        dim = encoding.dim if isinstance(encoding, ModelWidth) else None
        head_dim = dim // heads if isinstance(dim, int) else 16
    return check_int("heads", heads, minimum=1), check_int("head_dim", head_dim, minimum=1)


@torch.no_grad()
def absolute_table(encoding: nn.Module, n: int, *, dim: int | None = None, offset: int = 0) -> torch.Tensor:
    """The ``(n, d)`` encodings of positions ``offset .. offset + n - 1`` of an ``"input"``-hook encoding.

    Read off by encoding zero embeddings: for an added encoding ``encode_input(0) = PE``, for a
    concatenated one its last ``concat_dim`` columns. ``dim`` defaults to ``encoding.dim``.
    """
    check_int("n", n, minimum=1)
    check_int("offset", offset, minimum=0)
    if "input" not in _hooks(encoding):
        raise ValueError(f"`encoding` {type(encoding).__name__} has no 'input' hook: it adds no table to the tokens")
    if dim is not None:
        check_int("dim", dim, minimum=1)
    elif isinstance(encoding, ModelWidth):
        dim = encoding.dim
    if not isinstance(dim, int):
        raise ValueError("`dim` is needed: the encoding has no integer attribute `dim`")  # noqa: TRY004 - a missing size, not a wrong type
    concat = encoding.concat_dim if isinstance(encoding, PositionEncoding) else 0
    device = next((t.device for t in [*encoding.parameters(), *encoding.buffers()]), torch.device("cpu"))
    # the embeddings an input hook with layers (complex_order, conv_context) takes: its parameters' dtype
    dtype = next((p.dtype for p in encoding.parameters() if p.is_floating_point()), torch.float32)
    check_fits("n", n, (n, dim), dtype, device)
    zeros = torch.zeros(1, n, dim - concat if concat < dim else dim, device=device, dtype=dtype)
    out = encoding.encode_input(zeros, positions=Positions(n, offset))
    table = out[0, :, -concat:] if concat else out[0]
    return table.detach().float().cpu()


def _hooks(encoding: nn.Module) -> frozenset[str]:
    """The hooks a :class:`PositionEncoding` declares (none for any other module)."""
    return encoding.hooks if isinstance(encoding, PositionEncoding) else frozenset()


def _random_qk(heads: int, head_dim: int, n: int, m: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, n, head_dim, generator=g).to(device)
    k = torch.randn(1, heads, m, head_dim, generator=g).to(device)
    return q, k


def _device(encoding: nn.Module) -> torch.device:
    return next((t.device for t in [*encoding.parameters(), *encoding.buffers()]), torch.device("cpu"))


@torch.no_grad()
def score_matrix(
    encoding: nn.Module,
    n: int,
    *,
    offset: int = 0,
    heads: int | None = None,
    head_dim: int | None = None,
    query: str = "ones",
    seed: int = 0,
) -> torch.Tensor:
    """The position part of the attention logits of a rotary and/or bias encoding, ``(h, n, n)``.

    Queries at ``offset + i``, keys at ``offset + j``. Rotary: ``q'_i . k'_j`` for rotated queries and
    keys, all ones (``query="ones"``, the content-free score of RoFormer's analysis) or random
    (``"random"``). Bias: ``score_bias`` with random queries and keys (for content-dependent biases).
    Both are summed when an encoding uses both hooks.
    """
    check_int("n", n, minimum=1)
    check_int("offset", offset, minimum=0)
    check_int("seed", seed)
    if query not in ("ones", "random"):
        raise ValueError(f"`query` must be 'ones' or 'random', got {query!r}")
    hooks = _hooks(encoding)
    if not {"rotary", "bias"} & set(hooks):
        raise ValueError(f"`encoding` {type(encoding).__name__} has neither a 'rotary' nor a 'bias' hook")
    heads, head_dim = _model_sizes(encoding, heads, head_dim)
    device = _device(encoding)
    for where in (device, None):  # the logits on the encoding's device, the matrix returned on the host
        check_fits("n", n, (heads, n, n), torch.float64, where)
    q, k = _random_qk(heads, head_dim, n, n, seed, device)
    pos = Positions(n, offset)
    scores = torch.zeros(heads, n, n, dtype=torch.float64)
    if "rotary" in hooks:
        rq, rk = (torch.ones_like(q), torch.ones_like(k)) if query == "ones" else (q, k)
        rq, rk = encoding.rotate(rq, rk, q_positions=pos, k_positions=pos)
        scores = scores + (rq.double() @ rk.double().transpose(-1, -2))[0].cpu()
    if "bias" in hooks:
        bias = encoding.score_bias(q, k, q_positions=pos, k_positions=pos)
        if bias is not None:
            bias = bias.double().cpu()
            # (b | 1, h | 1, n, n) -> (h, n, n): first batch entry, heads broadcast
            scores = scores + bias[0].expand(heads, n, n)
    return scores


def score_vs_offset(encoding: nn.Module, n: int, **kwargs) -> tuple[list[int], list[list[float]]]:
    """Offsets ``j - i`` from ``-(n-1)`` to ``n-1`` and, per head, the mean score along each offset.

    Keywords as :func:`score_matrix`. For ALiBi the curve is ``-slope * |j - i|`` (``causal=False``;
    the causal form gives ``slope * (j - i)``, the same on the keys it attends to, ``j <= i``); for
    RoPE with ``query="ones"`` it is ``sum_i 2 cos((j - i) theta_i)``.
    """
    scores = score_matrix(encoding, n, **kwargs)
    curves = []
    for head in scores:
        offsets, mean, _ = offset_profile(head)
        curves.append(mean.tolist())
    return offsets.tolist(), curves


@torch.no_grad()
def shift_invariance_error(
    encoding: nn.Module,
    n: int,
    shift: int,
    *,
    heads: int | None = None,
    head_dim: int | None = None,
    seed: int = 0,
) -> float:
    """Largest change of the position-dependent attention terms when every position moves by ``shift``.

    Rotary: logits of random rotated queries/keys; bias: ``score_bias``; value: ``value_term`` with
    random attention weights. Relative to the largest magnitude; 0 for a relative encoding.
    """
    check_int("shift", shift, minimum=1)
    check_int("n", n, minimum=1)
    check_int("seed", seed)
    hooks = set(_hooks(encoding))
    if not {"rotary", "bias", "value"} & hooks:
        raise ValueError(f"`encoding` {type(encoding).__name__} has no 'rotary', 'bias' or 'value' hook")
    heads, head_dim = _model_sizes(encoding, heads, head_dim)
    device = _device(encoding)
    check_fits("n", n, (heads, n, n), torch.float64, device)  # the logits of each offset
    q, k = _random_qk(heads, head_dim, n, n, seed, device)
    g = torch.Generator().manual_seed(seed + 1)
    weights = torch.randn(1, heads, n, n, generator=g).softmax(-1).to(device)

    def terms(offset: int) -> list[torch.Tensor]:
        pos = Positions(n, offset)
        out = []
        if "rotary" in hooks:
            rq, rk = encoding.rotate(q, k, q_positions=pos, k_positions=pos)
            out.append(rq.double() @ rk.double().transpose(-1, -2))
        if "bias" in hooks:
            bias = encoding.score_bias(q, k, q_positions=pos, k_positions=pos)
            if bias is not None:
                out.append(bias.double())
        if "value" in hooks:
            value = encoding.value_term(weights, q_positions=pos, k_positions=pos)
            if value is not None:
                out.append(value.double())
        return out

    worst = 0.0
    for a, b in zip(terms(0), terms(shift)):
        if not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
            # max() below would pass over NaN and report a shift-invariant (relative) encoding
            raise ValueError(f"`encoding` {type(encoding).__name__} gave NaN or inf attention terms, so their shift is undefined")
        scale = max(a.abs().max().item(), 1e-12)
        worst = max(worst, (a - b).abs().max().item() / scale)
    return worst


def roformer_decay_bound(inv_freq: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """RoFormer's relative upper bound of the RoPE score at each offset (arXiv:2104.09864, eq. 37).

    ``(1 / (d/2)) sum_{j=1}^{d/2} |S_j|`` with ``S_j = sum_{l=0}^{j-1} exp(i r theta_l)`` for offset
    ``r``. inv_freq: ``(d/2,)`` the frequencies theta_l; offsets: ``(K,)``. Returns ``(K,)`` float64.
    """
    check_float_tensor("inv_freq", inv_freq, ndim=1)
    check_tensor("offsets", offsets, ndim=1)
    if not len(inv_freq):
        raise ValueError("`inv_freq` must hold at least one frequency, got an empty tensor")
    check_finite("inv_freq", inv_freq)
    check_finite("offsets", offsets)
    # (K, 1) * (1, d/2) -> (K, d/2) angles r * theta_l
    phase = offsets.double().unsqueeze(-1) * inv_freq.double().unsqueeze(0)
    partial = torch.polar(torch.ones_like(phase), phase).cumsum(dim=-1)
    return partial.abs().mean(dim=-1)
