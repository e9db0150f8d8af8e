"""``equivariance``: the survey's "Alice likes oranges" example made concrete (survey 1.1).

The reference encoder (random initialisation, no training) reads the token ids of
"Alice likes oranges" and of its reordering "oranges likes Alice". Without an encoding the two
outputs are the same rows in permuted order (the same multiset); with any encoding they differ.
Measured per encoding: the largest ``|f(P x) - P f(x)|`` for that reordering and for random
permutations of a longer random sentence (:func:`posenc.analysis.equivariance.permutation_deviation`).
"""

from __future__ import annotations

from typing import Any

import torch

from posenc.analysis.equivariance import permutation_deviation
from posenc.experiments.common import position_kwargs, sequence_encodings
from posenc.experiments.harness import Context, Experiment
from posenc.experiments.plotting import bar_panel
from posenc.models import Transformer

WORDS = ("Alice", "likes", "oranges")


def measure(ctx: Context, name: str) -> dict[str, float]:
    c = ctx.config
    ctx.manual_seed("init", name)
    # a table (learned) must hold the 3-word sentence as well as the random one of n tokens
    extra = position_kwargs(name, max_len=max(c["n"], len(WORDS)))
    model = Transformer(c["vocab"], c["dim"], c["depth"], c["heads"], position=name, **extra)
    model = model.to(ctx.device).eval()
    sentence = torch.tensor([[0, 1, 2]], device=ctx.device)  # Alice likes oranges
    swapped = torch.tensor([[2, 1, 0]], device=ctx.device)  # oranges likes Alice
    with torch.no_grad():
        a, b = model(sentence).double(), model(swapped).double()
        # undo the reordering: row j of f(swapped) should be row (2 - j) of f(sentence)
        alice = (b.flip(1) - a).abs().max().item()
        tokens = torch.randint(0, c["vocab"], (c["batch"], c["n"]), generator=ctx.generator("tokens")).to(ctx.device)
        random = permutation_deviation(model, tokens, dim=1, trials=c["trials"], seed=ctx.seed)
    return {"alice": alice, "random": random}


def run(ctx: Context) -> dict[str, Any]:
    per = {name: ctx.unit(name, lambda name=name: measure(ctx, name)) for name in sequence_encodings()}
    return {
        "sentence": " ".join(WORDS),
        "note": "a bidirectional ALiBi bias depends on |i - j| only, so reversing a sentence (which keeps every "
        "distance) leaves it equivariant; random permutations do not",
        "deviation_alice": {k: v["alice"] for k, v in per.items()},
        "deviation_random": {k: v["random"] for k, v in per.items()},
        "headline_name": "max |f(Px) - P f(x)| (Alice likes oranges)",
        "headline": {k: v["alice"] for k, v in per.items()},
    }


def plot(result: dict[str, Any], fig, images) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    m = result["metrics"]
    floor = 1e-12
    bar_panel(ax1, {k: max(v, floor) for k, v in m["deviation_alice"].items()}, title="Alice likes oranges vs oranges likes Alice")
    bar_panel(ax2, {k: max(v, floor) for k, v in m["deviation_random"].items()}, title="random permutations of a random sentence")
    for ax in (ax1, ax2):
        ax.set_yscale("log")


EXPERIMENT = Experiment(
    name="equivariance",
    claim="without an encoding attention is permutation-equivariant: reordered words give the same multiset of outputs",
    paper="Vaswani et al. 2017, arXiv:1706.03762 (survey 1.1's Alice/oranges example)",
    section="1.1",
    quick={"vocab": 16, "dim": 32, "depth": 2, "heads": 2, "n": 12, "batch": 4, "trials": 3},
    full={"vocab": 64, "dim": 128, "depth": 4, "heads": 4, "n": 64, "batch": 8, "trials": 10},
    reference={"survey": "(1,2,3) -> (a,b,c) implies (1,3,2) -> (a,c,b) without an encoding: deviation 0 up to rounding"},
    run=run,
    plot=plot,
)
