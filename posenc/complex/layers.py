"""Complex-valued layers that consume complex word-order embeddings (Wang et al. 2019,
arXiv:1912.12333, section 3.3), on torch complex dtypes.

- :class:`ComplexLinear`: ``W z + b`` with complex ``W = A + iB`` (real and imaginary parts held as
  two real parameters, so every optimiser treats them as ordinary real weights).
- :func:`complex_attention` / :class:`ComplexSelfAttention`: queries, keys and values are complex
  linear maps of the input; the logit is the real part of the Hermitian product,
  ``Re(q_i . conj(k_j)) / sqrt(d)``, which for two order embeddings equals
  ``sum r r' cos(omega p - omega' p' + theta - theta')``, so it sees the phase difference (and hence,
  for shared frequencies, the distance ``p - p'``); the real softmax weights then mix complex values.
- :class:`ComplexRMSNorm`, :func:`crelu` (ReLU on real and imaginary parts separately) and
  :class:`ComplexToReal` (the readout: real and imaginary parts concatenated, or the modulus).

Verified in tests/complex/test_layers.py against the real-arithmetic expansions
``(A + iB)(x + iy) = (Ax - By) + i(Ay + Bx)`` and ``Re(q conj k) = q_r k_r + q_i k_i``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from posenc.core.validation import (
    check_bool,
    check_choice,
    check_float,
    check_layers_fit,
    check_positive_int,
    check_same_device,
    check_tensor,
)


def check_complex(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise unless ``value`` is a complex tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_complex():
        raise ValueError(f"`{name}` must be a complex tensor (complex64/complex128), got {value.dtype}")
    return value


def check_key_mask(name: str, mask: torch.Tensor | None, b: int, n: int) -> None:
    """None, or a bool ``(b, n)`` tensor (True for real tokens)."""
    if mask is None:
        return
    check_tensor(name, mask)
    if mask.dtype != torch.bool or tuple(mask.shape) != (b, n):
        raise ValueError(
            f"`{name}` must be a bool tensor of shape (b, n) = ({b}, {n}), got {mask.dtype} {tuple(mask.shape)}"
        )


def crelu(z: torch.Tensor) -> torch.Tensor:
    """ReLU applied to the real and the imaginary part separately."""
    check_complex("z", z)
    return torch.complex(z.real.relu(), z.imag.relu())


def complex_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Re(q k^H) / sqrt(d)) v for complex q ``(b, h, n, d)``, k, v ``(b, h, m, d)`` -> ``(b, h, n, d)``.

    mask: bool, broadcastable to ``(b, h, n, m)``, True where a key may be attended to. A causal call
    places the ``n`` queries at the last ``n`` of the ``m`` keys, so it needs ``n <= m``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if check_complex(name, t).ndim != 4:
            raise ValueError(f"`{name}` must have rank 4 (b, h, n | m, d), got shape {tuple(t.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"`q`, `k` and `v` must have one complex dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    check_same_device(q=q, k=k, v=v, mask=mask)
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            "`q` (b, h, n, d), `k` (b, h, m, d) and `v` (b, h, m, d_v) must share b and h, `k` and `v` m and "
            f"`q` and `k` d, got {tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}"
        )
    n, m = q.shape[-2], k.shape[-2]
    if check_bool("causal", causal) and n > m:
        raise ValueError(
            f"a causal call places the n queries at the last n of the m keys: n ({n}) must be at most m ({m})"
        )
    if mask is not None:
        check_tensor("mask", mask)
        target = (*q.shape[:-1], m)
        try:
            fits = mask.ndim <= 4 and torch.broadcast_shapes(mask.shape, target) == target
        except RuntimeError:
            fits = False
        if mask.dtype != torch.bool or not fits:
            raise ValueError(
                f"`mask` must be a bool tensor broadcastable to (b, h, n, m) = {target}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
    logits = (q @ k.conj().transpose(-1, -2)).real / math.sqrt(q.shape[-1])
    if causal:
        later = torch.arange(m, device=q.device) > torch.arange(n, device=q.device).unsqueeze(1) + (m - n)
        logits = logits.masked_fill(later, float("-inf"))
    if mask is not None:
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    weights = logits.softmax(dim=-1)
    return weights.to(v.dtype) @ v


class ComplexLinear(nn.Module):
    """``z (..., in) -> W z + b (..., out)`` with complex weight and bias."""

    def __init__(
        self, in_features: int, out_features: int, *, bias: bool = True, device=None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        sizes = {"in_features": in_features, "out_features": out_features}
        check_layers_fit(sizes, 2 * (in_features + 1) * out_features, dtype, device)
        kw = {"device": device, "dtype": dtype}
        self.weight_real = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.weight_imag = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias_real = nn.Parameter(torch.zeros(out_features, **kw)) if bias else None
        self.bias_imag = nn.Parameter(torch.zeros(out_features, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The constructor's initialisation (see :mod:`posenc.core.meta`); nothing to draw on meta."""
        if self.weight_real.device.type == "meta":
            return
        # each part gets half the variance of a real layer, so |W z| keeps the scale of |z|
        std = (2 * self.in_features) ** -0.5
        nn.init.normal_(self.weight_real, std=std)
        nn.init.normal_(self.weight_imag, std=std)
        if self.bias_real is not None:
            nn.init.zeros_(self.bias_real)
            nn.init.zeros_(self.bias_imag)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_complex("z", z)
        if z.shape[-1] != self.in_features:
            raise ValueError(f"`z` must have last dimension in_features={self.in_features}, got {z.shape[-1]}")
        # formed in the input's real dtype: torch has no complex bfloat16, so bf16 weights act in complex64
        real = z.real.dtype
        weight = torch.complex(self.weight_real.to(real), self.weight_imag.to(real))
        out = z @ weight.transpose(0, 1)
        if self.bias_real is not None:
            out = out + torch.complex(self.bias_real.to(real), self.bias_imag.to(real))
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias_real is not None}"


class ComplexSelfAttention(nn.Module):
    """Multi-head self-attention on complex inputs, ``(b, n, dim) -> (b, n, dim)``."""

    def __init__(self, dim: int, heads: int, *, causal: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        check_positive_int("heads", heads)
        if check_positive_int("dim", dim) % heads:
            raise ValueError(f"`dim` must be divisible by `heads`, got dim={dim}, heads={heads}")
        self.heads, self.causal = heads, check_bool("causal", causal)
        self.qkv = ComplexLinear(dim, 3 * dim, bias=False, device=device, dtype=dtype)
        self.proj = ComplexLinear(dim, dim, device=device, dtype=dtype)

    def forward(self, z: torch.Tensor, *, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """z complex ``(b, n, dim)``; key_mask ``(b, n)`` bool, True for real tokens."""
        if check_complex("z", z).ndim != 3:
            raise ValueError(f"`z` must have rank 3 (b, n, dim), got shape {tuple(z.shape)}")
        b, n, dim = z.shape
        check_key_mask("key_mask", key_mask, b, n)
        # (b, n, 3 * dim) -> 3 x (b, h, n, dim / h)
        q, k, v = self.qkv(z).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask.view(b, 1, 1, n)
        out = complex_attention(q, k, v, causal=self.causal, mask=mask)
        # (b, h, n, dim / h) -> (b, n, dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))


class ComplexRMSNorm(nn.Module):
    """``z / sqrt(mean |z|^2 + eps) * g`` with a real gain ``g`` per feature (keeps every phase)."""

    def __init__(self, dim: int, *, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = check_float("eps", eps, positive=True)
        self.weight = nn.Parameter(torch.ones(check_positive_int("dim", dim), device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """The constructor's unit gains (see :mod:`posenc.core.meta`)."""
        nn.init.ones_(self.weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_complex("z", z)
        if z.ndim == 0 or z.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"`z` must have last dimension dim={self.weight.shape[0]}, got shape {tuple(z.shape)}")
        scale = torch.rsqrt(z.abs().square().mean(dim=-1, keepdim=True) + self.eps)
        return z * (scale * self.weight).to(z.dtype)


class ComplexToReal(nn.Module):
    """Readout: complex ``(..., d)`` -> real ``(..., 2d)`` (``"concat"``: real parts then imaginary
    parts) or ``(..., d)`` (``"abs"``: the modulus, which forgets every phase)."""

    def __init__(self, mode: Literal["concat", "abs"] = "concat") -> None:
        super().__init__()
        self.mode = check_choice("mode", mode, ("concat", "abs"))

    def out_dim(self, dim: int) -> int:
        return 2 * dim if self.mode == "concat" else dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_complex("z", z)
        return torch.cat([z.real, z.imag], dim=-1) if self.mode == "concat" else z.abs()

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
