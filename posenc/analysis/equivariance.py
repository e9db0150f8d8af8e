"""Permutation equivariance (survey 1.1): does a module notice the order of its inputs?

Self-attention without a position encoding is permutation-equivariant: permuting the input tokens
permutes the outputs the same way, so the largest deviation between ``f(P x)`` and ``P f(x)`` is 0
up to rounding. Any position information makes it positive. The same test applies to images cut
into patches (a ViT without position embeddings is equivariant to shuffling its patches).

The functions take any callable module, not only this library's; put the module in ``eval()`` mode
first (dropout is not equivariant).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange

from posenc.core.validation import check_bool, check_finite, check_int, check_tensor

Module = Callable[[torch.Tensor], torch.Tensor]


def _permutations(n: int, trials: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    perms = []
    for _ in range(trials):
        perm = torch.randperm(n, generator=generator)
        if n > 1 and torch.equal(perm, torch.arange(n)):  # the identity tests nothing
            perm = perm.roll(1)
        perms.append(perm)
    return perms


def _as_tensor(out: object) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"`module` must return a tensor (or a tuple starting with one), got {type(out).__name__}")
    if (out.is_floating_point() or out.is_complex()) and not bool(torch.isfinite(out).all()):
        # max() below would pass over NaN and report an equivariant module
        raise ValueError("`module` returned NaN or inf, so its deviation is undefined")
    # a complex output stays complex (its deviation is a modulus): .double() would drop the imaginary part
    return out.detach().to(torch.complex128 if out.is_complex() else torch.float64)


def _reference_output(out: object, given: str) -> torch.Tensor:
    """The unpermuted output, which must hold something to compare (max() of nothing raises in torch)."""
    reference = _as_tensor(out)
    if reference.numel() == 0:
        raise ValueError(f"the output of `module` for {given} is empty, of shape {tuple(reference.shape)}: nothing to compare")
    return reference


@torch.no_grad()
def permutation_deviation(
    module: Module, x: torch.Tensor, *, dim: int = 1, trials: int = 3, seed: int = 0, invariant: bool = False
) -> float:
    """Largest ``|f(P x) - P f(x)|`` over ``trials`` random permutations ``P`` along ``dim``.

    module: any callable; x: its input, e.g. token ids ``(b, n)`` or embeddings ``(b, n, d)``, permuted
    along ``dim`` (the sequence axis). The output is permuted along the same axis, so it must have the
    input's length there; with ``invariant=True`` it is compared unpermuted (pooled outputs).
    Returns 0.0 (up to rounding) for an equivariant module.
    """
    check_tensor("x", x)
    check_finite("x", x)
    check_int("trials", trials, minimum=1)
    check_bool("invariant", invariant)  # 'no' would be truthy: an unpermuted comparison, a wrong verdict
    check_int("seed", seed)
    check_int("dim", dim)
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"`dim` must lie in [{-x.ndim}, {x.ndim - 1}] for x of shape {tuple(x.shape)}, got {dim}")
    dim = dim % x.ndim
    n = x.shape[dim]
    if n < 2:
        raise ValueError(f"`x` needs at least 2 entries along `dim`={dim} to permute, got shape {tuple(x.shape)}")
    reference = _reference_output(module(x), f"`x` of shape {tuple(x.shape)}")
    if not invariant and (reference.ndim <= dim or reference.shape[dim] != n):
        raise ValueError(
            f"the output of `module` has shape {tuple(reference.shape)}, without length {n} along `dim`={dim}; "
            "pass invariant=True for pooled outputs"
        )
    worst = 0.0
    for perm in _permutations(n, trials, seed):
        out = _as_tensor(module(x.index_select(dim, perm.to(x.device))))
        expected = reference if invariant else reference.index_select(dim, perm.to(reference.device))
        worst = max(worst, (out - expected).abs().max().item())
    return worst


def _shuffle_patches(images: torch.Tensor, perm: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    gh, gw = images.shape[-2] // ph, images.shape[-1] // pw
    # (b, c, gh*ph, gw*pw) -> (b, gh*gw, c, ph, pw): one entry per patch
    patches = rearrange(images, "b c (gh ph) (gw pw) -> b (gh gw) c ph pw", ph=ph, pw=pw)
    patches = patches[:, perm.to(images.device)]
    return rearrange(patches, "b (gh gw) c ph pw -> b c (gh ph) (gw pw)", gh=gh, gw=gw)


@torch.no_grad()
def patch_permutation_deviation(
    module: Module,
    images: torch.Tensor,
    *,
    patch_size: int,
    trials: int = 3,
    seed: int = 0,
    invariant: bool = False,
) -> float:
    """Largest deviation when the ``patch_size`` patches of ``images`` ``(b, c, h, w)`` are shuffled.

    The output may be a feature map ``(b, c', h', w')`` whose size is a multiple of the patch grid
    (its patches are shuffled the same way), patch tokens ``(b, N, d)`` with ``N = (h/p)(w/p)``, or
    tokens with extra leading tokens (a class token) ``(b, N + e, d)`` whose extra tokens stay in
    place. ``invariant=True`` compares the outputs unpermuted (pooled outputs).
    """
    check_tensor("images", images, ndim=4)
    check_finite("images", images)
    check_int("patch_size", patch_size, minimum=1)
    check_int("trials", trials, minimum=1)
    check_bool("invariant", invariant)
    check_int("seed", seed)
    h, w = images.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(f"`patch_size`={patch_size} must divide the image size {h}x{w}")
    gh, gw = h // patch_size, w // patch_size
    count = gh * gw
    if count < 2:
        raise ValueError(f"`images` of size {h}x{w} give {count} patches of `patch_size`={patch_size}: nothing to shuffle")
    reference = _reference_output(module(images), f"`images` of shape {tuple(images.shape)}")
    worst = 0.0
    for perm in _permutations(count, trials, seed):
        out = _as_tensor(module(_shuffle_patches(images, perm, patch_size, patch_size)))
        if invariant:
            expected = reference
        elif reference.ndim == 4 and reference.shape[-2] % gh == 0 and reference.shape[-1] % gw == 0:
            expected = _shuffle_patches(reference, perm, reference.shape[-2] // gh, reference.shape[-1] // gw)
        elif reference.ndim == 3 and reference.shape[1] >= count:
            extra = reference.shape[1] - count
            expected = torch.cat([reference[:, :extra], reference[:, extra:][:, perm.to(reference.device)]], dim=1)
        else:
            raise ValueError(
                f"cannot match the output of `module` of shape {tuple(reference.shape)} to a {gh}x{gw} patch grid; "
                "pass invariant=True for pooled outputs"
            )
        worst = max(worst, (out - expected).abs().max().item())
    return worst
