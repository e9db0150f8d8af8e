"""Shared test utilities: short training runs and the float64 helpers the references use."""

from __future__ import annotations

from collections.abc import Callable

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
