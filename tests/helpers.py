"""Shared test utilities: short training runs and the float64 helpers the references use."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch


def train_losses(
    model: torch.nn.Module,
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int = 60,
    lr: float = 3e-3,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """Train ``model`` for ``steps`` Adam steps on ``batch()``; return the per-step losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        x, y = batch()
        out = forward(model, x) if forward else model(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_loss_falls(losses: list[float], *, factor: float = 0.7, window: int = 5) -> None:
    """The mean of the last ``window`` losses is below ``factor`` times the mean of the first."""
    first = sum(losses[:window]) / window
    last = sum(losses[-window:]) / window
    assert last < factor * first, f"loss did not fall enough: {first:.4f} -> {last:.4f} (need < {factor}x)"


def import_peer(module: str):
    """Import an optional peer library's ``module``, or skip the test when it cannot be used here.

    Wider than ``pytest.importorskip``: timm imports torchvision, which may be missing or built for
    another torch (it then fails with a RuntimeError while registering its operators).
    """
    package = module.split(".")[0]
    if package in _UNUSABLE_PEERS:  # a failed import can leave half the package behind: do not retry
        pytest.skip(_UNUSABLE_PEERS[package])
    try:
        return importlib.import_module(module)
    except (ImportError, RuntimeError, OSError) as err:
        _UNUSABLE_PEERS[package] = f"{module} is not usable here: {type(err).__name__}: {err}"
        pytest.skip(_UNUSABLE_PEERS[package])


_UNUSABLE_PEERS: dict[str, str] = {}



def bias_dtypes(enc: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, positions) -> set[torch.dtype]:
    """The floating-point dtypes of a bias encoding's terms on every path: its materialised
    ``score_bias``, the tables its ``score_mod`` closes over and its blocked kernel's ``block_bias``."""
    pos = {"q_positions": positions, "k_positions": positions}
    dtypes = {enc.score_bias(q, k, **pos).dtype}
    mod = enc.score_mod(q, k, **pos)
    term = enc.block_bias(q, k, **pos)
    for t in (*(mod.tensors if mod is not None else ()), *(term.tensors if term is not None else ())):
        if t.is_floating_point():
            dtypes.add(t.dtype)
    return dtypes


class _Attend(torch.nn.Module):
    """``attend`` with an encoding as a module, so that ``functional_call`` can swap its parameters."""

    def __init__(self, enc: torch.nn.Module, backend: str) -> None:
        super().__init__()
        self.enc, self.backend = enc, backend

    def forward(self, q, k, v, **kwargs):
        from posenc.attention import attend

        return attend(q, k, v, position=self.enc, backend=self.backend, **kwargs)


def assert_float64_attention_is_exact(enc: torch.nn.Module, positions, *, causal: bool = True) -> None:
    """A float64 bias encoding in attention: its terms are float64 on every path, the blocked kernel's
    output and gradients (of q, k, v and the encoding's parameters) match the eager path's to 1e-12,
    and ``gradcheck`` of the blocked kernel in the parameters passes (a bias rounded to float32 would
    move the finite differences by about 1e-7 / eps)."""
    from posenc.attention import MaskSpec

    enc = enc.double()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, positions.n, 4, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3))
    assert bias_dtypes(enc, q, k, positions) == {torch.float64}
    pos = {"q_positions": positions, "k_positions": positions, "mask": MaskSpec(causal=causal)}
    params = dict(enc.named_parameters())
    results = []
    for backend in ("eager", "blocked"):
        out = _Attend(enc, backend)(q, k, v, **pos)
        results.append((out, torch.autograd.grad(out.square().sum(), [q, k, v, *params.values()])))
    (want, want_grads), (got, got_grads) = results
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(got_grads, want_grads):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    if params:
        blocked, names = _Attend(enc, "blocked"), [f"enc.{name}" for name in params]
        qkv, probe = (q.detach(), k.detach(), v.detach()), torch.randn(want.shape, dtype=torch.float64, generator=g)

        def fn(*values):  # one scalar: one backward per check, whatever the output's size
            return (torch.func.functional_call(blocked, dict(zip(names, values)), qkv, pos) * probe).sum()

        inputs = tuple(p.detach().clone().requires_grad_(True) for p in params.values())
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def assert_float32_biases(enc: torch.nn.Module, positions, dtype: torch.dtype) -> None:
    """A float32 or half-precision bias encoding keeps its terms in float32 on every path."""
    enc = enc.to(dtype)
    q, k = (torch.randn(2, 2, positions.n, 4).to(dtype) for _ in range(2))
    assert bias_dtypes(enc, q, k, positions) == {torch.float32}
