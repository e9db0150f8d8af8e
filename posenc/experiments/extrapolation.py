"""``extrapolation``: which encodings keep working past the trained length (survey 1.4; Press et al. 2021).

A byte-level causal LM on Python's own standard-library sources (``.py`` files under
``sysconfig.get_paths()["stdlib"]``, read in sorted order; nothing is downloaded), trained on windows
of length L and evaluated on non-overlapping held-out windows of L, 2L, 4L and 8L, in bits per
character (the sources are almost all ASCII, so a byte is a character); and a synthetic
copy-at-a-lag LM (every token repeats the one ``copy_lag`` earlier), where next-token accuracy past
the first lag is exact. Every causal sequence encoding in the registry is trained on each task with
``seeds`` seeds (means and standard deviations are reported). RoPE's context-extension scalings
(position interpolation, NTK-aware, YaRN, dynamic NTK) are extra rows: the trained RoPE model is
evaluated at length m L with the scaling stretched by m, without further training, which is how
they are used to stretch a trained model (the factor is m, except for dynamic NTK, which reads the
stretch from the length itself: :func:`scaling_factor`). A learned table has no rows past its length: it is
reported as not applicable there, not silently extended.
"""

from __future__ import annotations

import math
import statistics
import sysconfig
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from posenc.core.validation import check_choice
from posenc.experiments.common import position_kwargs, sequence_encodings
from posenc.experiments.harness import Context, Experiment
from posenc.experiments.plotting import curves_panel
from posenc.models import Transformer

#: Extra rows: the trained RoPE model evaluated with a context-extension scaling of its frequencies,
#: with no further training, stretched by the evaluation length over the trained length (:func:`scaling_factor`).
ROPE_SCALINGS = ("linear", "ntk", "yarn", "dynamic_ntk")
#: The tasks: a byte-level LM on the standard library's sources, and the synthetic copy-at-a-lag LM.
TASKS = ("text", "copy")


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


def _build(ctx: Context, row: str, vocab: int, max_len: int, seed_index: int) -> Transformer:
    c = ctx.config
    ctx.manual_seed("init", row, seed_index)
    extra = position_kwargs(row, max_len=max_len)
    return Transformer(vocab, c["dim"], c["depth"], c["heads"], position=row, causal=True, **extra)


def scaling_factor(kind: str, multiple: int) -> float:
    """The ``factor`` that stretches RoPE scaling ``kind`` by ``multiple`` at ``multiple`` times the
    trained length.

    Every scaling but dynamic NTK stretches by its factor. Dynamic NTK stretches by
    ``factor * n / L0 - (factor - 1)`` at length ``n`` (transformers' rule), so the length ratio already
    supplies the stretch: its factor is 1 (a factor of m would stretch by m² - m + 1 at m L0)."""
    return 1.0 if kind == "dynamic_ntk" else float(multiple)


def _rescaled(model: Transformer, kind: str, factor: float, trained_length: int) -> Transformer:
    """A copy of the trained RoPE ``model`` whose rotation uses scaling ``kind`` with ``factor``."""
    scaled = Transformer(
        model.embed.num_embeddings, model.dim, model.depth, model.heads, position="rope", causal=True,
        scaling=kind, factor=factor, original_max_len=trained_length,
    ).to(next(model.parameters()).device)  # fmt: skip
    scaled.load_state_dict(model.state_dict())
    return scaled.eval()


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


def _windows(ctx: Context, task: str, n: int, held_out: torch.Tensor, vocab: int) -> torch.Tensor:
    c = ctx.config
    if task == "text":
        # the same held-out span for every length, cut into non-overlapping windows of n + 1 bytes
        k = c["eval_tokens"] // n
        return held_out[: k * (n + 1)].view(k, n + 1).long()
    return copy_batch(c["copy_eval"], n + 1, c["copy_lag"], vocab, ctx.generator("copy-eval", n))


def check_evaluation_fits(c: dict[str, Any], train_bytes: int, held_out_bytes: int) -> None:
    """Refuse, before any training, a configuration whose windows the corpus or the copy task cannot fill."""
    L = c["length"]
    if "text" in c["tasks"]:
        if train_bytes < L + 2:
            raise ValueError(
                f"`corpus_bytes` ({c['corpus_bytes']}) leaves {train_bytes} training bytes (the first 90% of the "
                f"corpus read), too few for one training window of `length` + 1 = {L + 1} bytes"
            )
        for mult in c["multiples"]:
            n = L * mult
            windows = c["eval_tokens"] // n
            if windows == 0:
                raise ValueError(
                    f"`eval_tokens` ({c['eval_tokens']}) must be at least the longest evaluation window, "
                    f"`length` * `multiples` = {L} * {mult} = {n}"
                )
            if held_out_bytes < windows * (n + 1):
                raise ValueError(
                    f"`corpus_bytes` ({c['corpus_bytes']}) leaves {held_out_bytes} held-out bytes (the last 10% of the "
                    f"corpus read), fewer than the {windows * (n + 1)} that `eval_tokens` ({c['eval_tokens']}) needs "
                    f"at length {n}; raise `corpus_bytes` or lower `eval_tokens`"
                )
    if "copy" in c["tasks"]:
        if c["copy_lag"] >= L:
            raise ValueError(
                f"`copy_lag` ({c['copy_lag']}) must be less than `length` ({L}): only tokens past the first lag "
                "can be predicted and scored"
            )
        if c["copy_vocab"] < 2:
            raise ValueError(f"`copy_vocab` must be >= 2 (symbols 1 .. copy_vocab - 1 are copied), got {c['copy_vocab']}")


def train_row(
    ctx: Context, key: str, task: str, row: str, seed_index: int, train: torch.Tensor, held_out: torch.Tensor
) -> dict[str, Any]:
    """Train ``row`` on ``task`` ("text" or "copy") at length L as the run ``key``; score it at every
    multiple of L.

    Returns ``{row: {multiple: score}}``; for ``rope`` also one row per scaling in :data:`ROPE_SCALINGS`."""
    c = ctx.config
    L, lag = c["length"], c["copy_lag"]
    vocab = 256 if task == "text" else c["copy_vocab"]
    model = _build(ctx, row, vocab, L, seed_index)

    def step_loss(m, step, generator, shard):
        if task == "text":
            starts = torch.randint(0, train.numel() - L - 1, (c["batch"],), generator=generator)
            x = torch.stack([train[s : s + L + 1] for s in starts.tolist()]).long()
        else:
            x = copy_batch(c["batch"], L + 1, lag, vocab, generator)
        x = x[shard].to(ctx.device)
        return F.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())

    ctx.train(key, model, step_loss, steps=c["steps"], lr=c["lr"], warmup=c["warmup"], schedule="cosine")
    model.eval()
    score = partial(evaluate, batch=c["eval_batch"], lag=lag if task == "copy" else None)
    rows: dict[str, dict[str, float | None]] = {row: {}}
    scalings = c["rope_scalings"] if row == "rope" else ()
    rows |= {f"rope+{kind}": {} for kind in scalings}
    for mult in c["multiples"]:
        n = L * mult
        if row == "learned" and n > L:
            rows[row][str(mult)] = None  # no table rows past max_len: not applicable
            continue
        windows = _windows(ctx, task, n, held_out, vocab)
        rows[row][str(mult)] = plain = score(model, windows)
        for kind in scalings:  # factor 1 leaves every scaling equal to plain RoPE
            stretched = _rescaled(model, kind, scaling_factor(kind, mult), L) if mult > 1 else None
            rows[f"rope+{kind}"][str(mult)] = score(stretched, windows) if stretched is not None else plain
    return rows


def _summarise(per_seed: list[dict[str, dict[str, float | None]]]) -> tuple[dict, dict]:
    """Mean and standard deviation over seeds, per row and multiple (None where not applicable)."""
    mean: dict[str, dict[str, float | None]] = {}
    spread: dict[str, dict[str, float | None]] = {}
    for row, values in per_seed[0].items():
        mean[row], spread[row] = {}, {}
        for mult in values:
            xs = [seed[row][mult] for seed in per_seed]
            ok = all(x is not None for x in xs)
            mean[row][mult] = sum(xs) / len(xs) if ok else None
            spread[row][mult] = statistics.pstdev(xs) if ok else None
    return mean, spread


def run(ctx: Context) -> dict[str, Any]:
    c = ctx.config
    # the scalings `_rescaled` builds from a factor alone (LongRoPE needs per-pair factors, "none" scales nothing)
    scalings = (*ROPE_SCALINGS, "llama3")
    allowed = {"tasks": TASKS, "encodings": sequence_encodings(causal=True), "rope_scalings": scalings}
    for key, choices in allowed.items():
        for i, value in enumerate(c[key]):
            check_choice(f"{key}[{i}]", value, choices)
    corpus = stdlib_corpus(c["corpus_bytes"])
    split = int(0.9 * corpus.numel())
    train, held_out = corpus[:split], corpus[split:]
    check_evaluation_fits(c, train.numel(), held_out.numel())
    rows = c["encodings"] or sequence_encodings(causal=True)
    metrics: dict[str, Any] = {
        "corpus_bytes": corpus.numel(), "trained_length": c["length"], "multiples": c["multiples"], "seeds": c["seeds"],
    }  # fmt: skip
    for task in c["tasks"]:
        merged: list[dict[str, dict[str, float | None]]] = []
        for seed_index in range(c["seeds"]):
            per: dict[str, dict[str, float | None]] = {}
            for row in rows:
                key = f"{task}:{row}" + (f":seed{seed_index}" if seed_index else "")
                fit = partial(train_row, ctx, key, task, row, seed_index, train, held_out)
                per |= ctx.unit(key, fit)
            merged.append(per)
        mean, spread = _summarise(merged)
        key = "bits_per_char" if task == "text" else "copy_accuracy"
        metrics[key], metrics[f"{key}_std"], metrics[f"{key}_per_seed"] = mean, spread, merged
    text = metrics.get("bits_per_char", {})
    ratio = {}
    if {1, 4} <= set(c["multiples"]):  # the headline compares 4L with L
        ratio = {r: (v["4"] / v["1"] if v.get("4") is not None else None) for r, v in text.items()}
    metrics["ratio_4L_to_L"] = ratio
    metrics["headline_name"] = "bits/char at 4L divided by bits/char at L"
    metrics["headline"] = ratio
    return metrics


def plot(result: dict[str, Any], fig, images) -> None:
    from posenc.analysis.figures import palette  # one colour per row, never repeated

    m = result["metrics"]
    tables = [(k, m[k]) for k in ("bits_per_char", "copy_accuracy") if k in m]
    axes = fig.subplots(1, len(tables) + 1)
    for ax, (key, table) in zip(axes, tables):
        colours = palette(len(table))
        for i, (row, values) in enumerate(table.items()):
            xs = [int(k) * m["trained_length"] for k, v in values.items() if v is not None]
            ys = [v for v in values.values() if v is not None]
            style = "--" if row.startswith("rope+") else "-"  # the scaled RoPE rows: dashed
            ax.plot(xs, ys, style, marker="o", label=row, linewidth=1, color=colours[i])
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"evaluation length (trained at {int(m['trained_length'])})")
        ax.set_ylabel("bits per character" if key == "bits_per_char" else "copy accuracy")
        ax.legend(fontsize=6)
    curves_panel(axes[-1], result["curves"])


EXPERIMENT = Experiment(
    name="extrapolation",
    claim="encodings differ in how far past the trained length they keep working (ALiBi does, sinusoidal does not)",
    paper="Press et al. 2021, arXiv:2108.12409 (Figure 1); Kazemnejad et al. 2023, arXiv:2305.19466",
    section="1.4",
    quick={
        "length": 32, "multiples": [1, 2, 4, 8], "dim": 64, "depth": 2, "heads": 4, "batch": 32, "steps": 300, "lr": 3e-3, "warmup": 30,
        "corpus_bytes": 400_000, "eval_tokens": 8192, "eval_batch": 16, "tasks": ["text"], "copy_lag": 8, "copy_vocab": 16,
        "copy_eval": 64, "encodings": ["none", "sinusoidal", "learned", "rope", "alibi", "t5"], "seeds": 1, "rope_scalings": [],
    },
    full={
        "length": 64, "multiples": [1, 2, 4, 8], "dim": 64, "depth": 2, "heads": 4, "batch": 32, "steps": 500, "lr": 2e-3, "warmup": 50,
        "corpus_bytes": 2_000_000, "eval_tokens": 16_384, "eval_batch": 16, "tasks": ["text", "copy"], "copy_lag": 16,
        "copy_vocab": 32, "copy_eval": 128, "encodings": [], "seeds": 3, "rope_scalings": list(ROPE_SCALINGS),
    },
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
