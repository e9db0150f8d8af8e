"""RoPE benchmark cases: the rotation of q and k against its memory floor and the peer libraries.

Floors: ``clone`` of q and k (a fresh buffer, which page-faults on some machines) and
``empty_like`` + ``copy_`` into buffers allocated once (the pure read-and-write cost). posenc's rows:
the module (cached cos/sin, q and k in one fused call), ``apply_rope`` with explicit positions (the
functional path, one call for q and one for k), ``apply_rope_qk`` (q and k in one call), the eager
fallback (``fused=False``), per-token ``(b, n)`` positions, ``inplace=True`` and, on CPU, the module's call on inductor's kernel instead of the C++
function. Peers are compared with the same pair
layout and only timed when their outputs agree.
"""

from __future__ import annotations

import os

import torch

from posenc.bench import peers
from posenc.bench.cases import Case
from posenc.core.positions import Positions
from posenc.rotary import RotaryPositionEncoding, apply_rope, apply_rope_qk
from posenc.rotary.fused import CPU_KERNEL_ENV, rotate_qk

_LAYOUTS = {True: "adjacent pairs", False: "split halves"}


def _inputs(b: int, h: int, n: int, d: int, dtype: torch.dtype, device, *, grad: bool = False):
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(b, h, n, d, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    return q.requires_grad_(grad), k.requires_grad_(grad)


def _module_rotation(q, k, interleaved: bool, *, fused: bool | None = None):
    n, d = q.shape[-2], q.shape[-1]
    rope = RotaryPositionEncoding(d, interleaved=interleaved, cache_len=n, device=q.device)
    pos = Positions(n)
    if fused is None:
        return lambda: rope.rotate(q, k, q_positions=pos, k_positions=pos)
    cos, sin = rope.cos_sin(pos)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (1, 1, n, d/2)
    return lambda: rotate_qk(q, k, cos, sin, interleaved=interleaved, fused=fused)


def _functional_rotation(q, k, interleaved: bool, *, together: bool = False):
    positions = torch.arange(q.shape[-2], device=q.device)
    if together:
        return lambda: apply_rope_qk(q, k, positions, interleaved=interleaved)

    def call():
        return apply_rope(q, positions, interleaved=interleaved), apply_rope(k, positions, interleaved=interleaved)

    return call


def _per_token_rotation(q, k, interleaved: bool):
    """apply_rope_qk with ``(b, n)`` positions, one row per sequence (as packed batches give them):
    angles per token instead of one shared row. The rows here repeat ``0 .. n-1`` (materialised, not
    an expanded view) so that the output can be checked against the module's."""
    positions = torch.arange(q.shape[-2], device=q.device).repeat(q.shape[0], 1)
    return lambda: apply_rope_qk(q, k, positions, interleaved=interleaved)


def _inplace_rotation(q, k, interleaved: bool):
    """apply_rope_qk(inplace=True) on copies owned by this row (the first call is the one checked;
    later calls rotate the copies further, which costs the same)."""
    q, k = q.clone(), k.clone()
    positions = torch.arange(q.shape[-2], device=q.device)
    return lambda: apply_rope_qk(q, k, positions, interleaved=interleaved, inplace=True)


def _on_inductor(call):
    """``call`` with the inductor kernel as the CPU mechanism instead of the C++ function (the two
    environment writes around it cost a few microseconds)."""

    def run():
        before = os.environ.get(CPU_KERNEL_ENV)
        os.environ[CPU_KERNEL_ENV] = "inductor"
        try:
            return call()
        finally:
            if before is None:
                del os.environ[CPU_KERNEL_ENV]
            else:
                os.environ[CPU_KERNEL_ENV] = before

    return run


def _copy_floor(q, k):
    out_q, out_k = torch.empty_like(q), torch.empty_like(k)
    return lambda: (out_q.copy_(q), out_k.copy_(k))


def rope_case(b: int, h: int, n: int, d: int, dtype: torch.dtype, device) -> Case:
    """Forward rotation of q and k, both layouts, every posenc path and every installed peer."""
    device = torch.device(device)
    q, k = _inputs(b, h, n, d, dtype, device)
    impls = {
        "clone q, k": lambda: (lambda: (q.clone(), k.clone())),
        "empty_like + copy_ q, k": lambda: _copy_floor(q, k),
    }
    agree = {}
    for interleaved, layout in _LAYOUTS.items():
        ours = f"posenc ({layout})"
        impls[ours] = lambda il=interleaved: _module_rotation(q, k, il)
        functional, eager = f"posenc apply_rope (explicit positions, {layout})", f"posenc eager, fusion off ({layout})"
        together = f"posenc apply_rope_qk (explicit positions, {layout})"
        impls[functional] = lambda il=interleaved: _functional_rotation(q, k, il)
        impls[together] = lambda il=interleaved: _functional_rotation(q, k, il, together=True)
        impls[eager] = lambda il=interleaved: _module_rotation(q, k, il, fused=False)
        per_token, inplace = f"posenc apply_rope_qk (per-token (b, n) positions, {layout})", f"posenc apply_rope_qk in place ({layout})"
        impls[per_token] = lambda il=interleaved: _per_token_rotation(q, k, il)
        impls[inplace] = lambda il=interleaved: _inplace_rotation(q, k, il)
        agree |= {functional: ours, together: ours, eager: ours, per_token: ours, inplace: ours}
        if device.type == "cpu":
            inductor = f"posenc, inductor kernel instead of C++ ({layout})"
            impls[inductor] = lambda il=interleaved: _on_inductor(_module_rotation(q, k, il, fused=True))
            agree[inductor] = ours
        layout_peers = _PEERS_PAIRS if interleaved else _PEERS_HALVES
        for name, peer in layout_peers.items():
            if device.type == "cuda" or name not in _GPU_ONLY:
                impls[name] = lambda peer=peer: peer(q, k)
                agree[name] = ours
    # the peers form angles in float32: at position 2047 that alone moves outputs by up to ~1e-3
    atol = 2e-3 if dtype == torch.float32 else 3e-2
    name = f"rope b{b} h{h} n{n} d{d} {str(dtype).removeprefix('torch.')}"
    return Case(name, "clone q, k", impls, agree_with=agree, atol=atol)


def _with_backward(forward, q, k):
    grads = (torch.randn_like(q), torch.randn_like(k))

    def step():
        q.grad = k.grad = None
        torch.autograd.backward(forward(), grads)
        return q.grad, k.grad

    return step


def _projection_with_backward(b: int, h: int, n: int, d: int, dtype: torch.dtype, device, interleaved: bool):
    """Forward and backward of the Transformer's path: q and k of one projection's ``(3, b, h, n, d)``
    stack rotated (``rotate_qkv``), the gradient formed for the whole stack, v's included."""
    gen = torch.Generator().manual_seed(0)
    stacked = torch.randn(b, n, 3, h, d, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    rope = RotaryPositionEncoding(d, interleaved=interleaved, cache_len=n, device=device)
    pos = Positions(n)
    grads = tuple(torch.randn(b, h, n, d, generator=gen).to(device=device, dtype=dtype) for _ in range(3))

    def step():
        stacked.grad = None
        out = rope.rotate_qkv(stacked.permute(2, 0, 3, 1, 4), q_positions=pos, k_positions=pos)
        torch.autograd.backward(out, grads)
        return stacked.grad

    return step


def _twice(forward):
    return lambda: (forward(), forward())


def rope_backward_case(b: int, h: int, n: int, d: int, dtype: torch.dtype, device, *, interleaved: bool) -> Case:
    """Forward and backward of the rotation of q and k, relative to posenc's forward alone.

    The backward is the forward kernel at the opposite angle, so forward + backward moves twice the
    forward's bytes; the "forward, twice" row (two forward calls, no autograd) is that cost measured,
    the control for the ratio."""
    device = torch.device(device)
    q, k = _inputs(b, h, n, d, dtype, device)
    qg, kg = _inputs(b, h, n, d, dtype, device, grad=True)
    layout = _LAYOUTS[interleaved]
    peer_name, peer = next(iter((_PEERS_PAIRS if interleaved else _PEERS_HALVES).items()))
    return Case(
        f"rope fwd+bwd b{b} h{h} n{n} d{d} {str(dtype).removeprefix('torch.')} {layout}",
        "posenc forward",
        {
            "posenc forward": lambda: _module_rotation(q, k, interleaved),
            "posenc forward, twice (the bytes of forward + backward)": lambda: _twice(_module_rotation(q, k, interleaved)),
            "posenc forward + backward": lambda: _with_backward(_module_rotation(qg, kg, interleaved), qg, kg),
            "posenc forward + backward, q, k, v of one projection (the Transformer's path)": lambda: (
                _projection_with_backward(b, h, n, d, dtype, device, interleaved)
            ),
            "posenc eager, fusion off, forward + backward": lambda: _with_backward(
                _module_rotation(qg, kg, interleaved, fused=False), qg, kg
            ),
            f"{peer_name} forward + backward": lambda: _with_backward(peer(qg, kg), qg, kg),
        },
    )


_PEERS_PAIRS = {
    "x-transformers": peers.rope_x_transformers,
    "rotary-embedding-torch": peers.rope_rotary_embedding_torch,
}
_PEERS_HALVES = {
    "HF rotate_half (plain torch)": peers.rope_rotate_half,
    "flash-attn apply_rotary_emb": peers.rope_flash_attn,
    "Liger RoPE kernel": peers.rope_liger,
}
_GPU_ONLY = {"flash-attn apply_rotary_emb", "Liger RoPE kernel"}
