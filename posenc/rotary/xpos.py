"""xPos, the length-extrapolatable rotary embedding (Sun et al. 2022, arXiv:2212.10554).

RoPE with an exponential decay per feature pair: pair i of a query at position n is rotated by
``n * theta_i`` and scaled by ``zeta_i ** (n / scale_base)``, the same pair of a key at position m by
``m * theta_i`` and ``zeta_i ** (-m / scale_base)``, with ``zeta_i = (2i / d + gamma) / (1 + gamma)``
(gamma = 0.4). The logit then carries ``zeta_i ** ((n - m) / scale_base)``: it still depends on
``n - m`` only, and distant pairs decay, fast bands (small zeta) most. Each side is scaled at its own
absolute position (no per-call centring), so cached decoding and explicit positions agree with a full
pass.

Reference position: only ``zeta_i ** ((n - m) / scale_base)`` reaches the logit, so both sides may
be measured from any common position ``c`` (``reference``): queries scaled by
``zeta_i ** ((n - c) / scale_base)``, keys by ``zeta_i ** (-(m - c) / scale_base)``. The logits do not
depend on ``c``; ``c`` only decides which positions the float32 scales can hold.

Range: each side's scale must fit in float32, so ``|n - c| <= max_position`` with
``max_position = 80 * scale_base / |ln zeta_0|`` (about 64 * scale_base: 32,700 for scale_base 512).
float16 queries and keys hold far less: the same share of float16's range bounds the exponent by
8.9 instead of 80 (about 7 * scale_base: 3,630 for scale_base 512); past it the keys would overflow
to inf and the queries flush to zero in float16, so such positions raise for float16 input.
The bound is inherent to scaling queries and keys separately (the decay between two positions
``2 * max_position`` apart is below float32's smallest normal number); what it limits is the spread
of the positions around ``c``, not how large they are. Positions near 10^6 work with
``reference=10**6``. Keep ``reference`` fixed while a key/value cache is in use (cached keys carry
the scale of the ``reference`` they were made with), so cached decoding and explicit positions agree
with a full pass. Positions outside ``c ± max_position`` raise ``ValueError``; raise ``scale_base``
or move ``reference`` to cover them. Angles follow RoPE's policy (float64, reduced mod 2π); the
scales are formed in float64 and held in float32.

Verified against a float64 transcription of the paper's equations (tests/rotary/test_xpos.py) and, for
the scores q·k, against rotary-embedding-torch's ``use_xpos`` (which centres each call's positions;
the centre cancels in q·k) and x-transformers' (partial rotation and interpolation included). Its
``rotate_queries_with_cached_keys`` centres queries and keys on different positions, so its cached
scores differ from its own full pass; cached decoding here equals the full pass.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from posenc.core.base import PositionEncoding
from posenc.core.frequencies import angle_dtype, cos_sin, inverse_frequencies
from posenc.core.positions import Positions, resolve_positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import check_bool, check_even, check_float, check_float_tensor, check_same_device
from posenc.rotary.rope import RotaryPositionEncoding, apply_rotary, check_head_width, check_token_count

GAMMA = 0.4


def xpos_zeta(rot_dim: int, *, device=None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(rot_dim // 2,)`` per-pair decay bases ``(2i / d + 0.4) / 1.4`` (float64 by default)."""
    dtype = dtype or angle_dtype(device)
    return (torch.arange(0, rot_dim, 2, device=device, dtype=dtype) / rot_dim + GAMMA) / (1 + GAMMA)


#: the largest ``|ln|`` of a per-side scale: ``e ** 80`` in float32 (below its ``e ** 88.7``, above its smallest
#: normal ``e ** -87.3``, leaving room for the features); float16 gets the same share of its exponent range
_SCALE_EXPONENT = 80.0
_FLOAT16_SCALE_EXPONENT = 80.0 * math.log(torch.finfo(torch.float16).tiny) / math.log(torch.finfo(torch.float32).tiny)


def xpos_max_position(rot_dim: int, scale_base: float, dtype: torch.dtype = torch.float32) -> int:
    """The largest ``|position - reference|`` whose per-side scale ``zeta_0 ** (±n / scale_base)``
    fits ``dtype`` (``e ** 80`` for float32 and wider, below float32's ``e ** 88.7``, leaving room for the
    features; ``e ** 8.9`` for float16, the same share of its range); capped at the largest int64
    position, which a ``scale_base`` near float64's largest would overflow."""
    exponent = _FLOAT16_SCALE_EXPONENT if dtype == torch.float16 else _SCALE_EXPONENT
    limit = exponent * scale_base / abs(math.log(GAMMA / (1 + GAMMA)))
    return int(limit) if limit < 2**63 else 2**63 - 1


def xpos_scale(
    positions: torch.Tensor,
    rot_dim: int,
    scale_base: float,
    *,
    key: bool,
    reference: float = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``zeta ** (±(positions - reference) / scale_base)``: positions ``(*p,)`` -> ``(*p, rot_dim // 2)``
    in ``dtype`` (``-`` for keys). Formed in float64 (float32 on devices without it)."""
    zeta = xpos_zeta(rot_dim, device=positions.device)
    power = (positions.to(zeta.dtype) - reference).unsqueeze(-1) * ((-1.0 if key else 1.0) / scale_base)
    return torch.exp(power * zeta.log()).to(dtype)


def _check_range(
    positions: torch.Tensor | tuple[int, int], reference: float, limit: int, dtype: torch.dtype = torch.float32
) -> None:
    """positions: a tensor, or the ``(first, last)`` of implicit positions; dtype: the queries' or keys'."""
    if isinstance(positions, tuple):
        lo, hi = positions
        if hi < lo:  # no positions
            return
    elif positions.device.type == "meta" or torch.compiler.is_compiling() or positions.numel() == 0:
        return
    else:
        lo, hi = (v.item() for v in positions.aminmax())
    if lo < reference - limit or hi > reference + limit:
        held = "float16" if dtype == torch.float16 else "float32"
        raise ValueError(
            f"`positions` must lie within reference ± {limit} for xPos (reference={reference:.12g}, scale_base "
            f"limits each side's scale zeta ** ((n - reference) / scale_base) to {held}), got positions "
            f"{lo:.12g} .. {hi:.12g}; set `reference` near the positions in use or raise `scale_base`"
            + (" (or rotate in bfloat16 or float32, whose range is far wider)" if dtype == torch.float16 else "")
        )


def _check_reference(reference) -> float:
    if isinstance(reference, bool) or not isinstance(reference, (int, float)) or not math.isfinite(reference):
        raise TypeError(f"`reference` must be a finite number (a position), got {reference!r}")
    return reference


def apply_xpos(
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    key: bool,
    scale_base: float = 512.0,
    base: float = 10000.0,
    interleaved: bool = False,
    reference: float = 0,
) -> torch.Tensor:
    """xPos on ``x`` ``(b, h, n, d)`` at positions ``(n,)`` or ``(b, n)``: queries (``key=False``)
    are scaled by ``zeta ** ((n - reference) / scale_base)``, keys (``key=True``) by its inverse.

    reference: the position both sides are measured from (give queries and keys the same one; it
    cancels in their product). Positions must lie within ``reference ± xpos_max_position(d, scale_base, x.dtype)``.

    Randomized positions (Ruoss et al. 2023): queries and keys are two calls here, so there is no
    ``randomize_positions`` keyword (two draws would place them at different positions); draw once with
    :func:`~posenc.core.positions.randomized_positions` and pass the same tensor to both calls."""
    check_float_tensor("x", x, ndim=4)
    check_bool("key", key)
    check_even("x.shape[-1]", x.shape[-1], why="xPos rotates feature pairs")
    check_float("scale_base", scale_base, positive=True)
    reference = _check_reference(reference)
    pos = resolve_positions(positions, n=x.shape[-2], batch=x.shape[0], name="positions")
    check_same_device(x=x, positions=pos)
    _check_range(pos, reference, xpos_max_position(x.shape[-1], scale_base, x.dtype), x.dtype)
    work = arithmetic_dtype(x.dtype)
    cos, sin = cos_sin(pos, inverse_frequencies(x.shape[-1], base, device=x.device), dtype=work)
    scale = xpos_scale(pos, x.shape[-1], scale_base, key=key, reference=reference, dtype=work)
    # (b | 1, n, d/2) -> (b | 1, 1, n, d/2): the same for every head
    return apply_rotary(x, (cos * scale).unsqueeze(1), (sin * scale).unsqueeze(1), interleaved=interleaved)


@register(
    "xpos",
    paper="Sun et al. 2022, arXiv:2212.10554",
    summary="RoPE whose pairs decay as zeta^((i - j)/scale_base): queries scaled up, keys down, by position.",
)
class XPos(RotaryPositionEncoding):
    """xPos: RoPE (any of its scalings, ``rope``'s keyword arguments) plus the per-pair decay.

    Args:
        head_dim: width of each head's queries and keys.
        scale_base: the decay's length scale (512 in the paper).
        reference: the position queries' and keys' scales are measured from (default 0; the logits do
            not depend on it). Positions must lie within ``reference ± max_position``: set it near
            the positions in use (``10**6`` for a context there), and keep it while a cache is in use.
        **rope_kwargs: ``base``, ``rotary_fraction``, ``interleaved``, ``scaling``, ... as for ``rope``.

    ``forward(x, *, positions=None, offset=0, side="query")`` applies one side; the model calls
    ``rotate(q, k, ...)``. The cos/sin cache is RoPE's; the scales are computed per call.
    """

    def __init__(
        self,
        head_dim: int,
        *,
        scale_base: float = 512.0,
        reference: float = 0,
        device: torch.device | str | None = None,
        **rope_kwargs,
    ) -> None:
        super().__init__(head_dim, device=device, **rope_kwargs)
        self.scale_base = check_float("scale_base", scale_base, positive=True)
        self.reference = _check_reference(reference)
        #: the largest ``|position - reference|`` (see the module docstring; float16 input holds less)
        self.max_position = xpos_max_position(self.rot_dim, self.scale_base)

    def scale_and_rotate(self, t: torch.Tensor, positions: Positions, *, key: bool, **kw) -> torch.Tensor:
        """t: ``(b, h, n, head_dim)`` rotated and scaled at ``positions`` as a query or a key (``kw``:
        ``seq_len``, the length a length-dependent scaling is computed for)."""
        reference = _check_reference(self.reference)
        span = (positions.offset, positions.end - 1) if positions.is_implicit else positions.explicit
        limit = self.max_position if t.dtype != torch.float16 else xpos_max_position(self.rot_dim, self.scale_base, t.dtype)
        _check_range(span, reference, limit, t.dtype)
        dtype = arithmetic_dtype(t.dtype)
        # float64 angles for float64 input, implicit positions included (the cached window is float32)
        cos, sin = self._cos_sin_for(t, positions, **kw)
        pos = positions.tensor(cos.device)
        scale = xpos_scale(pos, self.rot_dim, self.scale_base, key=key, reference=reference, dtype=dtype)
        # (b | 1, n, rot/2) -> (b | 1, 1, n, rot/2): the same for every head
        return apply_rotary(t, (cos * scale).unsqueeze(1), (sin * scale).unsqueeze(1), interleaved=self.interleaved)

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        offset: int = 0,
        side: Literal["query", "key"] = "query",
    ) -> torch.Tensor:
        """x: ``(b, h, n, head_dim)`` -> rotated and scaled as ``side``, same shape and dtype."""
        check_float_tensor("x", x, ndim=4)
        if side not in ("query", "key"):
            raise ValueError(f"`side` must be 'query' or 'key', got {side!r}")
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"`x` must have last dimension head_dim={self.head_dim}, got {x.shape[-1]}")
        pos = resolve_positions(positions, n=x.shape[-2], offset=offset, batch=x.shape[0], device=x.device)
        explicit = None if positions is None else pos
        return self.scale_and_rotate(x, Positions(x.shape[-2], offset, explicit), key=side == "key")

    def rotate(self, q, k, *, q_positions: Positions, k_positions: Positions):
        if q.shape[-1] != self.head_dim or k.shape[-1] != self.head_dim:
            check_head_width(self.head_dim, q=q, k=k)
        if q.shape[-2] != q_positions.n or k.shape[-2] != k_positions.n:
            check_token_count(q=(q, q_positions), k=(k, k_positions))
        q_positions, k_positions, kw = self._one_length(q_positions, k_positions)
        return self.scale_and_rotate(q, q_positions, key=False, **kw), self.scale_and_rotate(k, k_positions, key=True, **kw)

    def rotate_qkv(self, qkv, *, q_positions: Positions, k_positions: Positions):
        # queries and keys are scaled apart: the protocol's unbind, then rotate
        return PositionEncoding.rotate_qkv(self, qkv, q_positions=q_positions, k_positions=k_positions)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale_base={self.scale_base}, reference={self.reference}"
