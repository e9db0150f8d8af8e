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
