"""``extrapolation``: which encodings keep working past the trained length (survey 1.4; Press et al. 2021).

A byte-level causal LM on Python's own standard-library sources (``.py`` files under
``sysconfig.get_paths()["stdlib"]``, read in sorted order; nothing is downloaded), trained on windows
of length L and evaluated on non-overlapping held-out windows of L, 2L, 4L and 8L, in bits per
character (the sources are almost all ASCII, so a byte is a character). Every causal sequence
encoding in the registry is trained (RoPE's scalings as extra rows in the full run). A learned table
has no rows past its length: it is reported as not applicable there, not silently extended.
A synthetic copy-at-a-lag task, where accuracy is exact, is the second task of the full run.
"""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from posenc.experiments.common import position_kwargs, sequence_encodings
from posenc.experiments.harness import Context, Experiment
from posenc.experiments.plotting import curves_panel
from posenc.models import Transformer

#: Extra rows: RoPE with a context-extension scaling (name -> registry name and keyword arguments).
ROPE_ROWS = {"rope_dynamic_ntk": {"scaling": "dynamic_ntk", "factor": 8.0}}


def stdlib_corpus(max_bytes: int) -> torch.Tensor:
    """The first ``max_bytes`` bytes of the standard library's ``.py`` files (sorted paths), ``(max_bytes,)`` uint8."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    data = b"".join(chunks)[:max_bytes]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def copy_batch(batch: int, n: int, lag: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """Random symbols where every token from ``lag`` on repeats the one ``lag`` earlier: ``(batch, n)``."""
    seed = torch.randint(1, vocab, (batch, lag), generator=generator)
    return seed.repeat(1, math.ceil(n / lag))[:, :n]


def _build(ctx: Context, row: str, vocab: int, max_len: int) -> Transformer:
    c = ctx.config
    name, extra = (("rope", dict(ROPE_ROWS[row])) if row in ROPE_ROWS else (row, position_kwargs(row, max_len=max_len)))
    if row in ROPE_ROWS:
        extra["original_max_len"] = max_len
    ctx.manual_seed("init", row)
    return Transformer(vocab, c["dim"], c["depth"], c["heads"], position=name, causal=True, **extra)


@torch.no_grad()
def evaluate(model: Transformer, windows: torch.Tensor, *, batch: int, lag: int | None = None) -> float:
    """Mean bits per token over ``windows`` ``(k, n)`` (or accuracy past the first ``lag`` tokens)."""
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        x = windows[i : i + batch].to(next(model.parameters()).device)
        logits = model(x[:, :-1]).float()
        if lag is None:
            total += F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum").item() / math.log(2)
            count += x[:, 1:].numel()
        else:
            right = logits[:, lag - 1 :].argmax(-1) == x[:, lag:]
            total += right.float().sum().item()
            count += right.numel()
    return total / count


def train_row(ctx: Context, task: str, row: str, train: torch.Tensor, held_out: torch.Tensor) -> dict[str, Any]:
    """Train ``row`` on ``task`` ("text" or "copy") at length L; score it at every multiple of L."""
    c = ctx.config
    L, lag = c["length"], c["copy_lag"]
    vocab = 256 if task == "text" else c["copy_vocab"]
    model = _build(ctx, row, vocab, L)

    def step_loss(m, step, generator, shard):
        if task == "text":
            starts = torch.randint(0, train.numel() - L - 1, (c["batch"],), generator=generator)
            x = torch.stack([train[s : s + L + 1] for s in starts.tolist()]).long()
        else:
            x = copy_batch(c["batch"], L + 1, lag, vocab, generator)
        x = x[shard].to(ctx.device)
        return F.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())

    ctx.train(f"{task}:{row}", model, step_loss, steps=c["steps"], lr=c["lr"], warmup=c["warmup"], schedule="cosine")
    out: dict[str, float | None] = {}
    for mult in c["multiples"]:
        n = L * mult
        if row == "learned" and n > L:
            out[str(mult)] = None  # no table rows past max_len: not applicable
        elif task == "text":
            # the same held-out span for every length, cut into non-overlapping windows of n + 1 bytes
            k = c["eval_tokens"] // n
            windows = held_out[: k * (n + 1)].view(k, n + 1).long()
            out[str(mult)] = evaluate(model, windows, batch=c["eval_batch"])
        else:
            windows = copy_batch(c["copy_eval"], n + 1, lag, vocab, ctx.generator("copy-eval", n))
            out[str(mult)] = evaluate(model, windows, batch=c["eval_batch"], lag=lag)
    return out


def run(ctx: Context) -> dict[str, Any]:
    c = ctx.config
    corpus = stdlib_corpus(c["corpus_bytes"])
    split = int(0.9 * corpus.numel())
    train, held_out = corpus[:split], corpus[split:]
    rows = c["encodings"] or sequence_encodings(causal=True) + list(ROPE_ROWS)
    metrics: dict[str, Any] = {"corpus_bytes": corpus.numel(), "trained_length": c["length"], "multiples": c["multiples"]}
    for task in c["tasks"]:
        per = {}
        for row in rows:
            per[row] = ctx.unit(f"{task}:{row}", lambda row=row, task=task: train_row(ctx, task, row, train, held_out))
        metrics["bits_per_char" if task == "text" else "copy_accuracy"] = per
    text = metrics.get("bits_per_char", {})
    ratio = {r: (v["4"] / v["1"] if v.get("4") is not None else None) for r, v in text.items()} if 4 in c["multiples"] else {}
    metrics["ratio_4L_to_L"] = ratio
    metrics["headline_name"] = "bits/char at 4L divided by bits/char at L"
    metrics["headline"] = ratio
    return metrics


def plot(result: dict[str, Any], fig, images) -> None:  # noqa: ARG001
    m = result["metrics"]
    tables = [(k, m[k]) for k in ("bits_per_char", "copy_accuracy") if k in m]
    axes = fig.subplots(1, len(tables) + 1)
    for ax, (key, table) in zip(axes, tables):
        for row, values in table.items():
            xs = [int(k) * m["trained_length"] for k, v in values.items() if v is not None]
            ys = [v for v in values.values() if v is not None]
            ax.plot(xs, ys, marker="o", label=row, linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("evaluation length (trained at %d)" % m["trained_length"])
        ax.set_ylabel("bits per character" if key == "bits_per_char" else "copy accuracy")
        ax.legend(fontsize=6)
    curves_panel(axes[-1], result["curves"])


EXPERIMENT = Experiment(
    name="extrapolation",
    claim="encodings differ in how far past the trained length they keep working (ALiBi does, sinusoidal does not)",
    paper="Press et al. 2021, arXiv:2108.12409 (Figure 1); Kazemnejad et al. 2023, arXiv:2305.19466",
    section="1.4",
    quick=dict(
        length=32, multiples=[1, 2, 4, 8], dim=64, depth=2, heads=4, batch=32, steps=300, lr=3e-3, warmup=30,
        corpus_bytes=400_000, eval_tokens=8192, eval_batch=16, tasks=["text"], copy_lag=8, copy_vocab=16,
        copy_eval=64, encodings=["none", "sinusoidal", "learned", "rope", "alibi", "t5"],
    ),
    full=dict(
        length=128, multiples=[1, 2, 4, 8], dim=256, depth=6, heads=8, batch=64, steps=6000, lr=1e-3, warmup=300,
        corpus_bytes=20_000_000, eval_tokens=262_144, eval_batch=16, tasks=["text", "copy"], copy_lag=16,
        copy_vocab=32, copy_eval=256, encodings=[],
    ),
    reference={
        "wikitext103_ppl_trained_1024": {
            "sinusoidal": {"1024": 19.34, "2048": 51.09},
            "rope": {"1024": 19.33, "2048": 31.17},
            "t5": {"1024": 18.80, "2048": 18.34},
            "alibi": {"1024": 18.66, "2048": 18.05},
        },
        "note": "Press et al. 2021, Figure 1 / Table: word-level perplexity, 247M-parameter models",
    },
    run=run,
    plot=plot,
)
