"""``length_generalization``: the algorithmic length-generalisation benchmark of Ruoss et al. 2023
(arXiv:2305.16843) on the tasks of Delétang et al. 2023 (arXiv:2207.02098).

Every sequence encoding in the registry, and its randomized-positions version (``+rand``: trained with
ordered random positions from ``[0, L)``, evaluated with the plain ones), is trained as the encoder of
the papers: the model reads the input followed by one placeholder token per output token and predicts
the output at the placeholders. Training lengths are drawn uniformly from ``1..train_max`` (one length
per batch); the model is then scored at every length ``train_max + 1 .. test_max``. The score at a
length is the per-token accuracy over the output (up to the termination token where the task has one)
averaged over sequences; the headline is its mean over the test lengths, with the mean, spread and
best over seeds (the papers report the best of their seeds).

Sweeps: each (task, encoding, seed) is one unit, and every finished unit is written as JSON under
``units`` (default ``<out>/length_generalization/units``); a unit whose JSON exists is read back, never
trained again, so an interrupted sweep resumes where it stopped. Each unit records the ``--seed`` and
configuration it was trained with (``trained_with``); one trained with others is refused, not read back
(``--force`` does not clear the folder). Two ways to split a sweep, with no code change:

- ``torchrun --nproc_per_node=K -m posenc run length_generalization ...`` (any number of nodes): rank
  ``r`` trains units ``r, r + K, ...`` alone (no DDP), on ``cuda:LOCAL_RANK`` when CUDA is present;
  the ranks then exchange their results and rank 0 writes the merged result (and every unit's JSON
  into its own ``units`` folder, so hosts need no shared disk).
- ``--set shard=i/k`` runs the i-th of k interleaved shares of the units; k separate processes (each
  with its own ``--out`` and the same ``--set units=DIR``) split the sweep, and a final run without
  ``shard`` and the same ``units`` merges them (training whatever is missing). A shard may itself be
  run under torchrun.

An interrupted process also resumes its unfinished unit from the harness checkpoint with ``--resume``.
"""

from __future__ import annotations

import json
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from posenc.core.files import atomic_write_bytes
from posenc.core.positions import POSITION_FREE
from posenc.core.validation import check_choice
from posenc.experiments.algorithmic_tasks import TASKS, Task, get_task
from posenc.experiments.common import position_kwargs, sequence_encodings
from posenc.experiments.harness import Context, Experiment
from posenc.models import Transformer

#: Suffix of the randomized-positions rows.
RAND = "+rand"


def rows_for(encodings: list[str], randomized: bool) -> tuple[list[str], dict[str, str]]:
    """The rows to train (each encoding, then its ``+rand`` version where it has positions) and the
    ``+rand`` rows skipped, with the reason."""
    rows, skipped = [], {}
    for name in encodings:
        rows.append(name)
        if not randomized:
            continue
        if name == "none":
            skipped[name + RAND] = "no positions to randomize (the model is unaffected)"
        elif name in POSITION_FREE:
            skipped[name + RAND] = POSITION_FREE[name]
        else:
            rows.append(name + RAND)
    return rows, skipped


def total_length(task: Task, n: int) -> int:
    """Tokens the model reads for nominal length ``n``: the input, then one placeholder per output token."""
    return task.input_length(n) + task.output_length(n)


def random_range(task: Task, c: dict[str, Any]) -> int:
    """``L`` of the ``+rand`` rows: ``random_range`` when set, else the longest evaluation sequence."""
    L = c["random_range"] or total_length(task, c["test_max"])
    if L < total_length(task, c["train_max"]):
        raise ValueError(
            f"`random_range` ({L}) must be at least the longest training sequence of {task.name} "
            f"({total_length(task, c['train_max'])} tokens)"
        )
    return L


def check_tables_cover_the_tests(tasks: list[Task], encodings: list[str], c: dict[str, Any]) -> None:
    """Refuse, before any training, an encoding built with a table of ``random_range`` positions
    (``max_len``) that the longest test sequence of a task would run past."""
    tabled = [name for name in encodings if "max_len" in position_kwargs(name, max_len=1)]
    for task in tasks if tabled else []:
        L, longest = random_range(task, c), total_length(task, c["test_max"])
        if L < longest:
            raise ValueError(
                f"`random_range` ({L}) is also the table length (max_len) of {tabled[0]!r}, but the longest test "
                f"sequence of {task.name} has {longest} tokens; raise `random_range` to at least {longest} "
                "(0 takes the longest test sequence) or leave that encoding out"
            )


def build(ctx: Context, task: Task, row: str, seed: int) -> Transformer:
    c = ctx.config
    name, randomized = (row[: -len(RAND)], True) if row.endswith(RAND) else (row, False)
    L = random_range(task, c)
    ctx.manual_seed("init", task.name, row, seed)
    vocab = max(task.input_vocab + 1, task.classes)
    extra = position_kwargs(name, max_len=L)
    return Transformer(
        vocab, c["dim"], c["depth"], c["heads"], position=name, causal=False,
        randomize_positions=L if randomized else None, **extra,
    )  # fmt: skip


def model_inputs(task: Task, inputs: torch.Tensor, out_len: int) -> torch.Tensor:
    """``(b, n_in)`` inputs followed by ``out_len`` placeholder tokens (id ``task.input_vocab``)."""
    placeholders = torch.full((inputs.shape[0], out_len), task.input_vocab, dtype=torch.long)
    return torch.cat([inputs, placeholders], dim=1)


def output_logits(model, task: Task, tokens: torch.Tensor, out_len: int, **kwargs) -> torch.Tensor:
    """``(b, out_len, classes)``: the logits at the placeholders."""
    return model(tokens, **kwargs)[:, -out_len:, : task.classes]


@torch.no_grad()
def accuracy_at(model, task: Task, n: int, *, batch: int, generator: torch.Generator, device) -> float:
    """Per-token output accuracy at length ``n`` (up to the termination token), averaged over sequences."""
    inputs, targets = task.batch(batch, n, generator)
    out_len = targets.shape[1]
    pred = output_logits(model, task, model_inputs(task, inputs, out_len).to(device), out_len).argmax(-1).cpu()
    mask = task.accuracy_mask(targets)
    per_sequence = ((pred == targets) & mask).sum(-1).float() / mask.sum(-1).float()
    return per_sequence.mean().item()


def train_unit(ctx: Context, key: str, task: Task, row: str, seed: int) -> dict[str, Any]:
    """Train ``row`` on ``task`` (seed index ``seed``) and score it at every length ``1 .. test_max``."""
    c = ctx.config
    model = build(ctx, task, row, seed)

    def step_loss(m, step, generator, shard):
        n = int(torch.randint(1, c["train_max"] + 1, (1,), generator=generator))
        inputs, targets = task.batch(c["batch"], n, generator)
        inputs, targets = inputs[shard], targets[shard]
        out_len = targets.shape[1]
        tokens = model_inputs(task, inputs, out_len).to(ctx.device)
        logits = output_logits(m, task, tokens, out_len, generator=generator)
        return F.cross_entropy(logits.flatten(0, 1), targets.to(ctx.device).flatten())

    ctx.train(key, model, step_loss, steps=c["steps"], lr=c["lr"], warmup=c["warmup"], schedule="cosine")
    model.eval()
    gen = ctx.generator("eval", task.name, seed)  # the same test sequences for every row (per seed index)
    per_length = {
        str(n): accuracy_at(model, task, n, batch=c["eval_batch"], generator=gen, device=ctx.device)
        for n in range(1, c["test_max"] + 1)
    }
    test = [per_length[str(n)] for n in range(c["train_max"] + 1, c["test_max"] + 1)]
    train = [per_length[str(n)] for n in range(1, c["train_max"] + 1)]
    return {"test_accuracy": sum(test) / len(test), "train_accuracy": sum(train) / len(train), "per_length": per_length}


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/k"`` -> ``(i, k)`` with ``0 <= i < k``; ``""`` -> ``(0, 1)``."""
    if not text:
        return 0, 1
    try:
        i, k = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"`shard` must look like 'i/k' (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < k:
        raise ValueError(f"`shard` i/k needs 0 <= i < k, got {text!r}")
    return i, k


def units_dir(ctx: Context) -> Path | None:
    c = ctx.config
    if c["units"]:
        return Path(c["units"])
    return None if ctx.out_dir is None else ctx.out_dir / "units"


def unit_key(task: str, row: str, seed: int) -> str:
    return f"{task}:{row}:seed{seed}"


def unit_path(folder: Path, key: str) -> Path:
    return folder / (key.replace(":", "__").replace("+", "_plus_") + ".json")


#: Configuration keys that choose which units run, not how a unit trains (left out of its ``trained_with``).
UNIT_SELECTION = ("tasks", "encodings", "randomized", "seeds", "shard", "units")


def training_settings(ctx: Context) -> dict[str, Any]:
    """What a unit's training depends on beyond its key: the run's ``--seed`` and every configuration
    value except those choosing the units (:data:`UNIT_SELECTION`), as JSON would hold them."""
    settings = {"seed": ctx.seed} | {k: v for k, v in ctx.config.items() if k not in UNIT_SELECTION}
    return json.loads(json.dumps(settings))


def stored_unit(folder: Path | None, key: str, fn, settings: dict[str, Any] | None = None) -> Any:
    """``fn()``'s result, kept as ``folder/<key>.json`` (read back instead of training when present).

    settings: :func:`training_settings`, stored with the result as ``trained_with``; a stored unit
    trained with other settings is refused (reading it back would report another configuration's
    numbers under this one). Units written without ``trained_with`` are read back as they are.
    """
    path = None if folder is None else unit_path(folder, key)
    if path is not None and path.exists():
        try:
            unit = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"the units folder {folder} holds {path.name}, which is not valid JSON ({error}); "
                "delete it to train that unit again"
            ) from None
        if not isinstance(unit, dict):
            raise ValueError(
                f"the units folder {folder} holds {path.name}, which is not a unit's result (a JSON object); "
                "delete it to train that unit again"
            )
        stored = unit.get("trained_with")
        if settings is not None and stored is not None and stored != settings:
            differ = ", ".join(
                f"{name}={stored.get(name)!r} there, {settings.get(name)!r} here"
                for name in sorted(set(stored) | set(settings))
                if stored.get(name) != settings.get(name)
            )
            raise ValueError(
                f"the units folder {folder} holds {path.name}, trained with other settings ({differ}); "
                "give this configuration its own folder (`--set units=DIR` or another `--out`) or delete "
                "the folder to train again"
            )
        return unit
    result = fn()
    if settings is not None:
        result = result | {"trained_with": settings}
    if path is not None:
        atomic_write_bytes(path, (json.dumps(result) + "\n").encode())
    return result


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "mean": sum(values) / len(values),
        "std": statistics.pstdev(values),
        "best": max(values),
        "per_seed": values,
    }


def run(ctx: Context) -> dict[str, Any]:
    c = ctx.config
    if not 1 <= c["train_max"] < c["test_max"]:
        raise ValueError(f"need 1 <= train_max < test_max, got train_max={c['train_max']}, test_max={c['test_max']}")
    for i, name in enumerate(c["tasks"]):
        check_choice(f"tasks[{i}]", name, list(TASKS))
    for key in ("tasks", "encodings"):  # a repeated task would weigh twice in the mean over tasks
        repeated = [name for i, name in enumerate(c[key]) if name in c[key][:i]]
        if repeated:
            raise ValueError(f"`{key}` must name each entry once, got {repeated[0]!r} more than once in {c[key]}")
    tasks = [get_task(t) for t in (c["tasks"] or list(TASKS))]
    encodings = c["encodings"] or sequence_encodings()
    for i, name in enumerate(c["encodings"]):
        check_choice(f"encodings[{i}]", name, sequence_encodings())
    rows, skipped = rows_for(encodings, c["randomized"])
    check_tables_cover_the_tests(tasks, encodings, c)
    share, shares = parse_shard(c["shard"])
    folder = units_dir(ctx)
    plan = [(task, row, seed) for task in tasks for row in rows for seed in range(c["seeds"])]
    mine = [unit for index, unit in enumerate(plan) if index % shares == share]
    rank, ranks = ctx.share()  # the torchrun ranks split this shard's units
    done: dict[str, Any] = {}
    settings = training_settings(ctx)
    for task, row, seed in mine[rank::ranks]:
        key = unit_key(task.name, row, seed)
        train = partial(train_unit, ctx, key, task, row, seed)
        done[key] = ctx.unit(key, partial(stored_unit, folder, key, train, settings))
    done = ctx.gather(done)
    if ranks > 1 and rank == 0 and folder is not None:  # the other hosts' units, for a later merge or resume
        for key, result in done.items():
            if not unit_path(folder, key).exists():
                atomic_write_bytes(unit_path(folder, key), (json.dumps(result) + "\n").encode())
    metrics: dict[str, Any] = {
        "train_max": c["train_max"], "test_max": c["test_max"], "seeds": c["seeds"], "rows": rows, "skipped": skipped,
        "tasks": [t.name for t in tasks], "random_range": {t.name: random_range(t, c) for t in tasks},
        "shard": c["shard"], "units_done": len(done),
    }  # fmt: skip
    if shares > 1:
        metrics["headline"], metrics["headline_name"] = {}, f"shard {c['shard']}: {len(done)} units written"
        return metrics
    accuracy: dict[str, dict[str, Any]] = {}
    per_length: dict[str, dict[str, dict[str, float]]] = {}
    train_accuracy: dict[str, dict[str, float]] = {}
    for task in tasks:
        accuracy[task.name], per_length[task.name], train_accuracy[task.name] = {}, {}, {}
        for row in rows:
            units = [done[unit_key(task.name, row, s)] for s in range(c["seeds"])]
            accuracy[task.name][row] = summarise([u["test_accuracy"] for u in units])
            train_accuracy[task.name][row] = sum(u["train_accuracy"] for u in units) / len(units)
            lengths = units[0]["per_length"]
            per_length[task.name][row] = {n: sum(u["per_length"][n] for u in units) / len(units) for n in lengths}
    metrics |= {"accuracy": accuracy, "train_accuracy": train_accuracy, "per_length": per_length}
    metrics["headline_name"] = "mean test accuracy over tasks (mean over seeds)"
    metrics["headline"] = {row: sum(accuracy[t.name][row]["mean"] for t in tasks) / len(tasks) for row in rows}
    return metrics


def plot(result: dict[str, Any], fig, images) -> None:
    from posenc.analysis.figures import palette  # one colour per row, never repeated

    m = result["metrics"]
    if "accuracy" not in m:  # a shard's partial result
        ax = fig.subplots(1, 1)
        ax.text(0.5, 0.5, m.get("headline_name", ""), ha="center")
        ax.axis("off")
        return
    tasks, rows = m["tasks"], m["rows"]
    fig.set_size_inches(16, 5 + 2.2 * ((len(tasks) + 3) // 4))
    grid = fig.add_gridspec(2 + (len(tasks) + 3) // 4, 4)
    heat = fig.add_subplot(grid[:2, :])
    table = [[m["accuracy"][t][r]["mean"] for r in rows] for t in tasks]
    image = heat.imshow(table, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i, line in enumerate(table):
        for j, value in enumerate(line):
            heat.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=6, color="w" if value < 0.6 else "k")
    heat.set_xticks(range(len(rows)), rows, rotation=60, ha="right", fontsize=7)
    heat.set_yticks(range(len(tasks)), tasks, fontsize=7)
    heat.set_title(f"mean accuracy (%) over test lengths {m['train_max'] + 1}..{m['test_max']}", fontsize=9)
    fig.colorbar(image, ax=heat, fraction=0.02).set_label("accuracy", fontsize=7)
    colours = palette(len(rows))
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(grid[2 + k // 4, k % 4])
        for i, row in enumerate(rows):
            values = m["per_length"][task][row]
            style = "--" if row.endswith(RAND) else "-"
            ax.plot([int(n) for n in values], list(values.values()), style, linewidth=0.8, color=colours[i], label=row)
        ax.axvline(m["train_max"], color="grey", linewidth=0.8)
        ax.set_title(task, fontsize=8)
        ax.set_xlabel(f"length n (trained on 1..{m['train_max']}, grey line)", fontsize=6)
        ax.set_ylabel("accuracy", fontsize=6)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
        if k == 0:
            ax.legend(fontsize=4, ncol=2)


EXPERIMENT = Experiment(
    name="length_generalization",
    claim="on algorithmic tasks, Transformers fit the trained lengths but fall towards chance past them; randomized positions are the papers' remedy",
    paper="Ruoss et al. 2023, arXiv:2305.16843 (Table 1); Delétang et al. 2023, arXiv:2207.02098",
    section="1.4",
    quick={
        "tasks": ["cycle_navigation", "parity_check", "bucket_sort"], "encodings": ["sinusoidal", "rope", "alibi"],
        "randomized": True, "train_max": 8, "test_max": 24, "random_range": 96, "dim": 64, "depth": 2, "heads": 4, "batch": 32, "steps": 300, "lr": 2e-3,
        "warmup": 30, "eval_batch": 32, "seeds": 1, "shard": "", "units": "",
    },
    full={
        "tasks": [], "encodings": [], "randomized": True, "train_max": 40, "test_max": 500, "random_range": 2048, "dim": 64, "depth": 5,
        "heads": 8, "batch": 128, "steps": 10_000, "lr": 1e-3, "warmup": 100, "eval_batch": 64, "seeds": 3, "shard": "", "units": "",
    },
    reference={
        "note": "Ruoss et al. 2023, Table 1: best of 10 seeds, accuracy (%) averaged over test lengths 41..500",
    },
    run=run,
    plot=plot,
    sweep=True,
)
