"""PyTorch's FlexAttention: an encoding's ``score_mod`` and the mask's ``mask_mod`` in one fused kernel.

The kernel is compiled once per encoding and mask kind, with dynamic shapes (``COMPILE``); inside a
``torch.compile`` region the caller's compilation covers it. PyTorch 2.13 runs FlexAttention's
forward on CPU but not its backward: a CPU call that needs gradients raises a ``ValueError``. On CPU
the compiled kernel is off by default (``COMPILE_ON_CPU``): with torch 2.13 and dynamic shapes,
inductor's CPU template for the score_mods here (ALiBi's and T5's per-offset tables read at
``kv_idx - q_idx``) emits C++ that does not build (``'cur_kvSplitSize7' was not declared in this
scope``); compiled with static shapes it builds and beats the blocked kernel, but recompiles for
every new length (20-100 s each on CPU), so CPU runs PyTorch's unfused FlexAttention, which forms
the ``(n, m)`` scores, and the blocked kernel is the CPU path without them (docs/performance.md).
"""

from __future__ import annotations

import functools
import warnings

import torch

from posenc.attention.masks import MaskSpec
from posenc.core.terms import ScoreMod

#: Compile the kernel (False runs PyTorch's unfused reference of the same computation: for tests).
COMPILE = True
#: Also compile on CPU (see the module docstring).
COMPILE_ON_CPU = False


def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover - PyTorch < 2.5
        return False
    return True


@functools.cache
def _compiled():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def _bias_mod(bias: torch.Tensor, shape: tuple[int, int, int, int]) -> ScoreMod:
    full = bias.expand(shape)

    def fn(score, b, h, q_idx, kv_idx, table):
        return score + table[b, h, q_idx, kv_idx].to(score.dtype)

    return ScoreMod(fn, (full,))


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
    materialised ``bias`` (read through a score_mod) and the mask as a block mask."""
    from torch.nn.attention.flex_attention import create_block_mask
    from torch.nn.attention.flex_attention import flex_attention as flex

    b, h, n, _ = q.shape
    m = k.shape[-2]
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
    mask_mod = mask.mask_mod(n, m)
    block_mask = None
    if mask_mod is not None:
        batch = None if mask.key_mask is None and mask.q_docs is None else b
        block_mask = create_block_mask(mask_mod, batch, None, n, m, device=q.device)
    if torch.compiler.is_compiling():  # the caller's compilation covers the kernel
        return flex(q, k, v, score_mod=combined, block_mask=block_mask, scale=scale)
    if COMPILE and (q.device.type != "cpu" or COMPILE_ON_CPU):
        return _compiled()(q, k, v, score_mod=combined, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():
        # the unfused path is chosen here on purpose (see the module docstring)
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex(q, k, v, score_mod=combined, block_mask=block_mask, scale=scale)
