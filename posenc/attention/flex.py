"""PyTorch's FlexAttention: an encoding's ``score_mod`` and the mask's ``mask_mod`` in one fused kernel.

The kernel is compiled once per encoding and mask kind, with dynamic shapes (``COMPILE``); inside a
``torch.compile`` region the caller's compilation covers it. PyTorch 2.13 runs FlexAttention's
forward on CPU but not its backward: a CPU call that needs gradients raises a ``ValueError``.

On CPU (``COMPILE_ON_CPU``) the kernel is compiled when everything it reads can be: a score_mod that
declares its tables' static dimensions (:class:`~posenc.core.terms.ScoreMod` ``static``; inductor's
CPU template in torch 2.13 emits C++ that does not build, ``'cur_kvSplitSize7' was not declared``,
when a table is read at a computed index along a dynamic dimension), and a causal, windowed or full
mask, for float32/bfloat16/float16 queries at least ``CPU_MIN_HEAD_DIM`` wide. Other calls on CPU (an
undeclared score_mod, a materialised bias, padding or packed-document masks, float64, narrow heads)
run PyTorch's unfused FlexAttention, which forms the ``(n, m)`` scores.

Every mask reaches the kernel as a ``BlockMask`` built from summaries of its tiles
(:func:`tiled_block_mask`), never from the ``(b, n, m)`` grid ``create_block_mask`` evaluates. Measurements and the
backend ``"auto"`` picks from them: docs/performance.md.
"""

from __future__ import annotations

import functools
import warnings

import torch

from posenc.attention.inputs import check_bias, check_mask, check_qkv
from posenc.attention.masks import MaskSpec
from posenc.core.terms import ScoreMod
from posenc.core.validation import check_float

#: Compile the kernel (False runs PyTorch's unfused reference of the same computation: for tests).
COMPILE = True
#: Entries of the compiled kernel's cache (encodings x mask kinds x shape classes) before dynamo
#: gives up compiling new ones.
RECOMPILE_LIMIT = 64
#: Also compile on CPU where the score_mod and mask allow it (see the module docstring).
COMPILE_ON_CPU = True
#: The dtypes inductor's CPU FlexAttention lowers (float64 raises inside its lowering).
CPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: Head widths from which the compiled CPU kernel is used: in torch 2.13 it returned wrong values, some
#: NaN, for head widths 8 and 16 at some lengths (n = 8, 24, 40, causal and full; checked against the
#: unfused kernel for widths 8-64 and lengths 8-1,024, tests/attention/test_flex.py), never from 24 up.
CPU_MIN_HEAD_DIM = 32


def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover - PyTorch < 2.5
        return False
    return True


def compiles(q: torch.Tensor, score_mod: ScoreMod | None, bias: torch.Tensor | None, mask: MaskSpec | None) -> bool:
    """Whether :func:`flex_attention` runs the compiled kernel for queries ``q`` ``(b, h, n, d)`` and
    these arguments (outside a caller's compilation): always off CPU; on CPU for float32, bfloat16 or
    float16 queries of at least :data:`CPU_MIN_HEAD_DIM` features, a declared score_mod (or none), no
    materialised bias and a causal, windowed or full mask."""
    if not COMPILE:
        return False
    if q.device.type != "cpu":
        return True
    mask = mask or MaskSpec()
    return (
        COMPILE_ON_CPU
        and q.dtype in CPU_DTYPES
        and q.shape[-1] >= CPU_MIN_HEAD_DIM
        and bias is None
        and (score_mod is None or score_mod.static is not None)
        and mask.key_mask is None
        and mask.q_docs is None
    )


def _mark_static(score_mod: ScoreMod | None) -> None:
    """Keep the declared fixed-size dimensions of the score_mod's tables static in the compiled kernel."""
    if score_mod is None or score_mod.static is None:
        return
    for tensor, dims in zip(score_mod.tensors, score_mod.static):
        if dims:
            torch._dynamo.mark_static(tensor, list(dims))


@functools.cache
def _compiled():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def _bias_mod(bias: torch.Tensor, shape: tuple[int, int, int, int]) -> ScoreMod:
    full = bias.expand(shape)

    def fn(score, b, h, q_idx, kv_idx, table):
        return score + table[b, h, q_idx, kv_idx].to(score.dtype)

    return ScoreMod(fn, (full,))


#: FlexAttention's block size (rows and keys), which :func:`banded_block_mask` lays its blocks out in.
BLOCK = 128


def banded_block_mask(mask: MaskSpec, n: int, m: int, device, *, block: int = BLOCK):
    """The ``BlockMask`` of a causal and/or windowed mask (no key mask, no documents) for ``n`` queries
    that are the last of ``m`` keys, built from block indices: ``(n / block, m / block)`` entries, where
    ``create_block_mask`` evaluates the mask on the whole ``(n, m)`` grid (about 10 bytes an entry).
    The same tiles, partial and full, as ``create_block_mask`` (tested)."""
    if mask.key_mask is not None or mask.q_docs is not None:
        raise ValueError("banded_block_mask takes a causal and/or windowed mask; use tiled_block_mask for padding or documents")
    return tiled_block_mask(mask, n, m, device, block=block)


def tiled_block_mask(mask: MaskSpec, n: int, m: int, device, *, block: int = BLOCK):
    """The ``BlockMask`` of any :class:`MaskSpec` (causal order, a window, key padding ``(b, m)``,
    query/key documents ``(b, n)``/``(b, m)``) built from summaries of its tiles, ``(b, n / block,
    m / block)`` entries, never the ``(b, n, m)`` grid ``create_block_mask`` evaluates.

    A tile of rows ``i0 .. i1`` and keys ``k0 .. k1`` is skipped when one part of the mask rules out
    all its pairs (the band below; no key of the tile unpadded; the tile's query and key document ids
    in ranges that do not meet) and is full, its mask not evaluated, when every part allows all of
    them (a whole tile inside the band, every key unpadded, one document id on both sides); every
    other tile is partial and the mask is evaluated there, so the result is exact for any ids. For
    packed documents numbered 0, 1, 2, ... in order, these are the tiles of ``create_block_mask``
    (tested); ids out of order or with gaps may leave a tile partial where it has no visible pair.

    The band: row ``i`` sees keys ``lo(i) .. hi(i)`` (:class:`MaskSpec`), both non-decreasing in
    ``i``; a tile holds a visible pair when ``k0 <= hi(i1)`` and ``k1 >= lo(i0)``, and only visible
    ones when ``lo(i1) <= k0`` and ``k1 <= hi(i0)``. Tiles cut by the end of the rows or keys count
    as partial, as in ``create_block_mask``."""
    from torch.nn.attention.flex_attention import BlockMask

    shift, window = m - n, mask.window
    rows = torch.arange(0, n, block, device=device, dtype=torch.int64)
    keys = torch.arange(0, m, block, device=device, dtype=torch.int64)
    i0, i1 = rows, (rows + block).clamp(max=n) - 1
    k0, k1 = keys, (keys + block).clamp(max=m) - 1

    def lo(i):
        return (i + shift - window + 1).clamp(min=0) if window is not None else torch.zeros_like(i)

    def hi(i):
        if mask.causal:
            return i + shift
        return (i + shift + window - 1).clamp(max=m - 1) if window is not None else torch.full_like(i, m - 1)

    k0, k1 = k0.unsqueeze(0), k1.unsqueeze(0)  # (1, K)
    seen = (k0 <= hi(i1).unsqueeze(1)) & (k1 >= lo(i0).unsqueeze(1))  # (Q, K)
    # a full tile is a whole one (as create_block_mask counts them: a tile past n or m is partial)
    whole = (rows + block <= n).unsqueeze(1) & (keys + block <= m).unsqueeze(0)
    full = (k0 >= lo(i1).unsqueeze(1)) & (k1 <= hi(i0).unsqueeze(1)) & seen & whole
    seen, full = seen.unsqueeze(0), full.unsqueeze(0)  # (1 | b, Q, K)
    if mask.key_mask is not None:
        keys_in = _tiles(mask.key_mask, block)  # (b, K, block)
        seen = seen & keys_in.any(-1).unsqueeze(1)
        full = full & keys_in.all(-1).unsqueeze(1)
    if mask.q_docs is not None:
        q_docs, k_docs = _tiles(mask.q_docs, block), _tiles(mask.k_docs, block)  # (b, Q | K, block)
        q_lo, q_hi, k_lo, k_hi = q_docs.amin(-1), q_docs.amax(-1), k_docs.amin(-1), k_docs.amax(-1)
        seen = seen & (q_lo.unsqueeze(2) <= k_hi.unsqueeze(1)) & (k_lo.unsqueeze(1) <= q_hi.unsqueeze(2))
        one = (q_lo == q_hi).unsqueeze(2) & (k_lo == k_hi).unsqueeze(1) & (q_lo.unsqueeze(2) == k_lo.unsqueeze(1))
        full = full & one
    partial = seen & ~full

    def indexed(tiles):
        count = tiles.sum(-1, dtype=torch.int32)
        order = torch.argsort((~tiles).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # the tiles first
        return count[:, None], order[:, None]

    count, order = indexed(partial)
    full_count, full_order = indexed(full)
    return BlockMask.from_kv_blocks(
        count, order, full_count, full_order, BLOCK_SIZE=block, mask_mod=mask.mask_mod(n, m, device), seq_lengths=(n, m)
    )


def _tiles(values: torch.Tensor, block: int) -> torch.Tensor:
    """``(b, L)`` -> ``(b, ceil(L / block), block)``, the last tile filled up with the last value (which
    changes neither its minimum, maximum, any nor all)."""
    length = values.shape[-1]
    tiles = -(-length // block)
    index = torch.arange(tiles * block, device=values.device).clamp(max=length - 1)
    return values[:, index].view(values.shape[0], tiles, block)


def flex_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    score_mod: ScoreMod | None = None,
    bias: torch.Tensor | None = None,
    mask: MaskSpec | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """q ``(b, h, n, d)``, k/v ``(b, h, m, d)`` -> ``(b, h, n, dv)`` with ``score_mod`` and/or a
    materialised ``bias`` (read through a score_mod) and the mask as a block mask. A row whose keys
    are all masked (padding, a document with no key) gets zeros, as FlexAttention gives it, where
    eager, SDPA and the blocked kernel give uniform weights (the mean of the values they read)."""
    from torch.nn.attention.flex_attention import flex_attention as flex

    check_qkv(q, k, v)
    check_bias(bias, q, k)
    check_mask(mask, q, k)
    scale = None if scale is None else check_float("scale", scale)
    b, h, n, _ = q.shape
    m = k.shape[-2]
    if n == 0 or m == 0:  # no queries, or nothing to attend to: zeros (FlexAttention takes neither)
        return q.new_zeros(b, h, n, v.shape[-1]) + 0 * (q.sum() + k.sum() + v.sum())
    if q.device.type == "cpu" and torch.is_grad_enabled():
        tensors = (q, k, v, bias, *(score_mod.tensors if score_mod else ()))
        if any(t is not None and t.requires_grad for t in tensors):
            raise ValueError(
                "attention='flex' needs gradients here, but FlexAttention has no backward on CPU in this "
                "PyTorch; use attention='blocked' (or 'auto') for CPU training"
            )
    mods = [s for s in (score_mod, None if bias is None else _bias_mod(bias, (b, h, n, m))) if s is not None]
    combined = None
    if len(mods) == 1:
        combined = mods[0].bound()
    elif mods:
        first, second = mods[0].bound(), mods[1].bound()

        def combined(score, b_, h_, q_idx, kv_idx):
            return second(first(score, b_, h_, q_idx, kv_idx), b_, h_, q_idx, kv_idx)

    mask = mask or MaskSpec()
    mask_mod = mask.mask_mod(n, m, q.device)
    block_mask = None
    if mask_mod is not None:
        block_mask = tiled_block_mask(mask, n, m, q.device)  # from tile summaries, no (n, m) grid
    if torch.compiler.is_compiling():  # the caller's compilation covers the kernel
        if q.device.type == "cpu":
            raise ValueError(
                "attention='flex' cannot run inside torch.compile on CPU: inductor's CPU FlexAttention fails "
                "to lower the model's call in this PyTorch (NoValidChoicesError); use attention='blocked', "
                "'sdpa' or 'auto', which avoid flex in compiled CPU code"
            )
        return flex(q, k, v, score_mod=combined, block_mask=block_mask, scale=scale)
    if compiles(q, score_mod, bias, mask):
        _mark_static(score_mod)
        # one compiled function serves every encoding: each score_mod, mask kind and shape class
        # (one query row, as many queries as keys, fewer) is an entry of its cache, more than
        # dynamo's default limit (8) allows before it falls back to the unfused kernel in silence
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            return _compiled()(q, k, v, score_mod=combined, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():
        # the unfused path is chosen here on purpose (see the module docstring)
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex(q, k, v, score_mod=combined, block_mask=block_mask, scale=scale)
