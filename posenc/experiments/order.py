"""``order``: attention without an encoding cannot use order; convolutional context can (survey 1.1, 3.4).

Task: a sequence of ``n`` distinct symbols (drawn without replacement from ``vocab``); at every
position i >= 1 the bidirectional reference encoder must output the symbol at i - 1 (the survey's
"copy the sequence in order" toy, one step at a time). An order-blind model sees only the token and
the set of tokens, and the left neighbour is uniform over the other ``n - 1`` symbols, so chance is
exactly ``1 / (n - 1)``. Every sequence encoding in the registry is trained, plus ``none``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from posenc.core.validation import check_choice
from posenc.experiments.common import accuracy, position_kwargs, sequence_encodings
from posenc.experiments.harness import Context, Experiment
from posenc.experiments.plotting import bar_panel, curves_panel
from posenc.models import Transformer


def make_batch(batch: int, n: int, vocab: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens ``(batch, n)`` of distinct symbols and targets ``(batch, n)``: the left neighbour (-100 at 0).

    ``2 <= n <= vocab``: position 0 has no left neighbour, and a sequence holds ``n`` distinct symbols.
    """
    if n < 2:
        raise ValueError(f"`n` must be at least 2 (every position but the first outputs its left neighbour), got {n}")
    if n > vocab:
        raise ValueError(f"`n` ({n}) must be at most `vocab` ({vocab}): a sequence holds n distinct symbols")
    tokens = torch.rand(batch, vocab, generator=generator).argsort(dim=-1)[:, :n]
    targets = torch.full_like(tokens, -100)
    targets[:, 1:] = tokens[:, :-1]
    return tokens, targets


def train_one(ctx: Context, name: str, **position) -> dict[str, Any]:
    """Train the encoder with ``position`` (a registry name and its kwargs) and score it on fresh data."""
    c = ctx.config
    ctx.manual_seed("init", name)
    model = Transformer(c["vocab"], c["dim"], c["depth"], c["heads"], causal=False, **position)
    return train_and_score(ctx, name, model)


def train_and_score(ctx: Context, name: str, model: Transformer) -> dict[str, Any]:
    """Train ``model`` on the left-neighbour task under the run ``name``; held-out accuracy and size."""
    c = ctx.config

    def step_loss(m, step, generator, shard):
        tokens, targets = make_batch(c["batch"], c["n"], c["vocab"], generator)
        tokens, targets = tokens[shard].to(ctx.device), targets[shard].to(ctx.device)
        return F.cross_entropy(m(tokens).flatten(0, 1), targets.flatten(), ignore_index=-100)

    ctx.train(name, model, step_loss, steps=c["steps"], lr=c["lr"], warmup=c["warmup"], schedule="cosine")
    tokens, targets = make_batch(c["eval_batch"], c["n"], c["vocab"], ctx.generator("eval"))
    with torch.no_grad():
        logits = model(tokens.to(ctx.device)).cpu()
    return {"accuracy": accuracy(logits, targets, targets >= 0), "parameters": sum(p.numel() for p in model.parameters())}


def run(ctx: Context) -> dict[str, Any]:
    c = ctx.config
    for i, name in enumerate(c["encodings"]):  # before any row trains
        check_choice(f"encodings[{i}]", name, sequence_encodings())
    names = c["encodings"] or sequence_encodings()
    per = {}
    for name in names:
        kwargs = {"position": name, **position_kwargs(name, max_len=c["n"])}
        per[name] = ctx.unit(name, lambda name=name, kwargs=kwargs: train_one(ctx, name, **kwargs))
    chance = 1.0 / (c["n"] - 1)
    return {
        "task": f"output the left neighbour in a sequence of {c['n']} distinct symbols out of {c['vocab']}",
        "chance": chance,
        "accuracy": {k: v["accuracy"] for k, v in per.items()},
        "parameters": {k: v["parameters"] for k, v in per.items()},
        "headline_name": "accuracy (left-neighbour task)",
        "headline": {k: v["accuracy"] for k, v in per.items()},
    }


def plot(result: dict[str, Any], fig, images) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    curves_panel(ax1, result["curves"])
    m = result["metrics"]
    bar_panel(ax2, m["accuracy"], title="held-out accuracy (dashed: chance)", reference=m["chance"])


EXPERIMENT = Experiment(
    name="order",
    claim="attention without an encoding cannot use order; convolutional context (and every encoding) can",
    paper="Vaswani et al. 2017, arXiv:1706.03762; Mohamed et al. 2019, arXiv:1904.11660",
    section="1.1, 3.4",
    quick={"n": 8, "vocab": 16, "dim": 32, "depth": 2, "heads": 2, "batch": 64, "steps": 250, "lr": 3e-3, "warmup": 20, "eval_batch": 512, "encodings": [], "checkpoint_every": 50},
    full={"n": 16, "vocab": 32, "dim": 64, "depth": 2, "heads": 4, "batch": 64, "steps": 600, "lr": 2e-3, "warmup": 50, "eval_batch": 2048, "encodings": [], "checkpoint_every": 100},
    reference={
        "survey": "without an encoding a Transformer cannot copy a 5-symbol sequence in order; with a kernel-3 "
        "convolution first it can (the article's toy, no numbers given)",
    },
    run=run,
    plot=plot,
)
