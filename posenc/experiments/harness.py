"""The experiment harness: seeding, resumable training, progress, and atomic JSON/PNG results.

An experiment is a function ``run(ctx: Context) -> dict`` (see :mod:`posenc.experiments`). It splits
its work into named *units* (one training per encoding, say) with :meth:`Context.unit`; a unit's
result is kept in a checkpoint as soon as it finishes, and a unit that trains uses
:meth:`Context.train`, which checkpoints the model and optimiser every ``checkpoint_every`` steps
and when the process receives SIGINT or SIGTERM. ``resume=True`` reloads that checkpoint, skips the
finished units and continues the interrupted training from its last saved step.

Determinism: every random draw comes from a generator seeded by ``(seed, unit, step)`` (see
:meth:`Context.generator`), never from a global stream, so a resumed run sees exactly the batches an
uninterrupted one would and reaches the same final metrics.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) an experiment runs in one of two ways:

- a *sweep* (``Experiment(sweep=True)``: its units are independent trainings, such as task x encoding
  x seed): the ranks split the units, rank ``r`` of ``K`` taking ``r, r + K, ...`` (see
  :meth:`Context.share`), each trained in its own process without DDP, on ``cuda:LOCAL_RANK`` when
  CUDA is present; :meth:`Context.gather` then hands every rank all units' results and loss curves
  (through a gloo process group, so hosts need no shared disk) and rank 0 writes the merged result.
  Each rank keeps its own checkpoint (``checkpoint.rank<r>.pt`` past rank 0), so ``--resume``
  continues every rank's interrupted unit.
- otherwise *data parallelism*: :meth:`Context.train` joins a process group (NCCL on GPUs, gloo
  otherwise), wraps the model in ``DistributedDataParallel`` and gives each rank its slice of every
  batch, for experiments whose units depend on each other or that train one large model.

Only rank 0 writes the result files.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import pickle
import platform
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from posenc.core.devices import resolve_device
from posenc.core.files import atomic_write_bytes
from posenc.core.suggest import did_you_mean

log = logging.getLogger("posenc.experiments")

#: Where ``posenc run`` writes, one folder per experiment: ``<out>/<name>/result.json`` and ``plot.png``.
DEFAULT_OUT = Path("posenc-out") / "experiments"
RESULT_FILE, PLOT_FILE, CHECKPOINT_FILE = "result.json", "plot.png", "checkpoint.pt"
#: The tensors an experiment's plot shows beside its numbers (reconstructions, samples), kept for ``replot``.
IMAGES_FILE = "images.pt"
#: Configuration keys whose value may be 0 (every other number must stay positive, like its default).
NON_NEGATIVE_KEYS = frozenset({"warmup", "checkpoint_every", "random_range"})


class Interrupted(RuntimeError):
    """Raised when SIGINT/SIGTERM stopped a run after its checkpoint was written."""


class ResultExists(RuntimeError):
    """Raised instead of overwriting an earlier result (pass ``force=True``)."""


@dataclass(frozen=True)
class Experiment:
    """One registered experiment."""

    name: str
    claim: str  #: the survey's claim the experiment tests
    paper: str  #: the paper whose figure or table it echoes
    section: str  #: the survey section, e.g. "2.1"
    quick: dict[str, Any]  #: small configuration (about a minute or less on 2 CPU cores)
    full: dict[str, Any]  #: configuration closer to the paper's setup
    reference: dict[str, Any]  #: the paper's numbers, reported beside ours
    run: Callable[[Context], dict[str, Any]]  #: returns the metrics (JSON-serialisable)
    plot: Callable[..., None] | None = None  #: ``plot(result, figure, images)`` draws the PNG
    requires: tuple[str, ...] = ()  #: registry names the experiment needs
    #: its units are independent trainings: under torchrun the ranks split them (no DDP); see the module doc
    sweep: bool = False


# ---------------------------------------------------------------------------------------------
# distributed helpers


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from the torchrun environment; ``(0, 1)`` for a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


#: How long the ranks of a sweep wait for each other at the end: they finish their shares at different times.
SWEEP_TIMEOUT = datetime.timedelta(days=7)


def _init_distributed(device: torch.device) -> None:
    import torch.distributed as dist

    if world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def _gloo_group() -> Any:
    """A gloo process group over all ranks (the default one when that is gloo), for exchanging objects."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=SWEEP_TIMEOUT)
    if dist.get_backend() == "gloo":
        return None  # the default group
    return dist.new_group(backend="gloo", timeout=SWEEP_TIMEOUT)


@contextlib.contextmanager
def _own_process_group() -> Iterator[None]:
    """Destroy, on the way out, a process group started inside the block (a caller's own is kept).

    A rank that exits with a gloo group still alive can abort (SIGABRT) while the interpreter
    shuts down, so a torchrun run ends with every rank meeting at a barrier (rank 0 writes the
    result and the plot meanwhile) and then destroying the group. On an error there is no
    barrier: the other ranks may never reach it.
    """
    import torch.distributed as dist

    started_here = not (dist.is_available() and dist.is_initialized())
    ok = False
    try:
        yield
        ok = True
    finally:
        if started_here and dist.is_available() and dist.is_initialized():
            try:
                if ok:
                    dist.barrier(group=_gloo_group())
            finally:
                dist.destroy_process_group()


def checkpoint_name(sweep: bool) -> str:
    """The checkpoint file of this process: one per rank in a torchrun sweep, else one per run."""
    rank, size = world()
    return f"checkpoint.rank{rank}.pt" if sweep and size > 1 and rank > 0 else CHECKPOINT_FILE


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: the local rank's GPU when CUDA is available (ranks past the GPU count share them
    round-robin, as a sweep of small models may), else the CPU.

    A device this torch build cannot use raises ``ValueError`` naming ``--device`` and what it can use.
    """
    if name == "auto" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
    return resolve_device(name, argument="--device")


# ---------------------------------------------------------------------------------------------
# files


def atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy scalars, tuples and non-finite floats made JSON-safe (NaN/inf become None)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        with contextlib.suppress(Exception):
            value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# progress


class _Progress:
    """tqdm when it is installed and stderr is a terminal; otherwise silent."""

    def __init__(self, total: int, desc: str, initial: int = 0, enabled: bool = True) -> None:
        self.bar = None
        if enabled and world()[0] == 0:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, initial=initial, leave=False, disable=None, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# the context handed to an experiment


@dataclass
class Context:
    """What an experiment's ``run`` receives: its configuration and the harness services."""

    name: str
    config: dict[str, Any]
    seed: int
    quick: bool
    out_dir: Path | None  #: None: keep nothing on disk (no checkpoint)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_every: int = 50
    progress: bool = True
    sweep: bool = False  #: under torchrun, the ranks split the units instead of training each with DDP
    curves: dict[str, list[float]] = field(default_factory=dict)
    units: dict[str, Any] = field(default_factory=dict)  #: finished units' results
    _partial: dict[str, Any] | None = None  #: the interrupted training's state
    _stop: bool = False

    # -- randomness ---------------------------------------------------------------------------

    def generator(self, *keys: Any) -> torch.Generator:
        """A CPU generator seeded from ``(seed, *keys)``; the same keys give the same stream."""
        digest = hashlib.sha256(repr((self.seed, *keys)).encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))

    def manual_seed(self, *keys: Any) -> None:
        """Seed torch's global generator from ``(seed, *keys)`` (for module initialisation)."""
        torch.manual_seed(self.generator(*keys).initial_seed())

    # -- checkpoints ----------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / checkpoint_name(self.sweep)

    def _fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "config": to_jsonable(self.config)}

    def save_checkpoint(self) -> None:
        path = self.checkpoint_path
        if path is None or (world()[0] != 0 and not self.sweep):
            return
        state = {"fingerprint": self._fingerprint(), "units": self.units, "curves": self.curves, "partial": self._partial}
        atomic_torch_save(state, path)

    def load_checkpoint(self) -> bool:
        """Restore finished units and the interrupted training; False when there is no checkpoint."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            fingerprint = state["fingerprint"]
        # a damaged or foreign file: pickle, archive and lookup errors alike
        except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, IndexError, TypeError) as error:
            raise ValueError(
                f"the checkpoint in {path} cannot be read ({type(error).__name__}: {error}); "
                "pass `--force` to start over"
            ) from None
        if fingerprint != self._fingerprint():
            raise ValueError(
                f"the checkpoint in {path} was written with another configuration or seed; "
                "run again with the same `--seed` and `--quick`, or pass `--force` to start over"
            )
        self.units, self.curves, self._partial = state["units"], state["curves"], state["partial"]
        return True

    # -- units and training -----------------------------------------------------------------------

    def share(self) -> tuple[int, int]:
        """``(r, K)``: this process takes units ``r, r + K, ...`` of a sweep's independent units.

        Under torchrun with ``Experiment(sweep=True)``: ``(rank, world_size)``; otherwise ``(0, 1)``.
        """
        return world() if self.sweep else (0, 1)

    def gather(self, results: dict[str, Any]) -> dict[str, Any]:
        """Every rank's ``results`` (a unit key -> result dict) merged, on every rank; the loss curves
        of the units trained elsewhere join :attr:`curves`. Outside a torchrun sweep: ``results``.

        Waits (up to :data:`SWEEP_TIMEOUT`) until every rank has finished its share.
        """
        if self.share()[1] == 1:
            return results
        import torch.distributed as dist

        gathered: list[Any] = [None] * world()[1]
        dist.all_gather_object(gathered, (results, self.curves), group=_gloo_group())
        merged: dict[str, Any] = {}
        for part, curves in gathered:
            merged |= part
            for key, values in curves.items():
                if values or key not in self.curves:
                    self.curves[key] = values
        return merged

    def unit(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()``'s result, computed once per run: a resumed run returns the stored value."""
        if key in self.units:
            return self.units[key]
        result = fn()
        self.units[key] = result
        self._partial = None
        self.save_checkpoint()
        if self._stop:
            raise Interrupted(f"interrupted after unit {key!r}")
        return result

    def log_curve(self, key: str, value: float) -> None:
        self.curves.setdefault(key, []).append(float(value))

    def train(
        self,
        key: str,
        model: nn.Module,
        step_loss: Callable[[nn.Module, int, torch.Generator, slice], torch.Tensor],
        *,
        steps: int,
        lr: float,
        weight_decay: float = 0.0,
        clip: float | None = 1.0,
        warmup: int = 0,
        schedule: str = "constant",
        log_every: int = 1,
        state: dict[str, Any] | None = None,
    ) -> nn.Module:
        """Train ``model`` with Adam(W) for ``steps`` steps; resumable; returns the trained model.

        ``step_loss(model, step, generator, shard)`` builds the batch for ``step`` from ``generator``
        (seeded by ``(seed, key, step)``) and returns the mean loss; under torchrun it must index
        the batch with ``shard`` (``slice(rank, None, world_size)``). The loss is logged to the
        curve ``key`` every ``log_every`` steps. ``schedule``: ``"constant"`` or ``"cosine"``.
        ``state``: a dict that ``step_loss`` updates as it goes (the first step at which something
        happened, say); it is saved in the checkpoint with the model and restored on resume, so a
        resumed training sees what the steps before the interruption recorded.
        """
        rank, size = world()
        if self.sweep:  # each rank trains its own units alone
            rank, size = 0, 1
        model = model.to(self.device)
        if size > 1:
            _init_distributed(self.device)
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            wrapped = model
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

        def lr_at(step: int) -> float:
            scale = 1.0 if step >= warmup else (step + 1) / warmup
            if schedule == "cosine":
                scale *= 0.5 * (1 + math.cos(math.pi * step / steps))
            return lr * scale

        start = 0
        if self._partial is not None and self._partial.get("key") == key:
            model.load_state_dict(self._partial["model"])
            opt.load_state_dict(self._partial["optimizer"])
            start = self._partial["step"]
            if state is not None:
                state.clear()
                state.update(self._partial.get("state") or {})
            self.curves[key] = self.curves.get(key, [])[: start // log_every + (start % log_every > 0)]
        elif key in self.curves:
            self.curves[key] = []
        shard = slice(rank, None, size)
        bar = _Progress(steps, f"{self.name}:{key}", initial=start, enabled=self.progress)
        model.train()
        try:
            for step in range(start, steps):
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                loss = step_loss(wrapped, step, self.generator(key, step), shard)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                value = loss.item()
                if step % log_every == 0:
                    self.log_curve(key, value)
                bar.update({"loss": value})
                done = step + 1
                due = self.checkpoint_every and done % self.checkpoint_every == 0 and done < steps
                if self._stop or (due and self.checkpoint_path is not None):
                    self._partial = {
                        "key": key,
                        "step": done,
                        "model": _cpu_state(model.state_dict()),
                        "optimizer": _cpu_state(opt.state_dict()),
                        "state": None if state is None else dict(state),
                    }
                    self.save_checkpoint()
                if self._stop:
                    raise Interrupted(f"interrupted at step {done} of {key!r}")
        finally:
            bar.close()
        model.eval()
        return model


def _cpu_state(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_state(v) for v in obj]
    return obj


@contextlib.contextmanager
def _stop_on_signals(ctx: Context) -> Iterator[None]:
    """SIGINT/SIGTERM ask the run to checkpoint and stop at the next step boundary."""
    previous = {}

    def handler(signum, frame):
        ctx._stop = True

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------
# running


def versions() -> dict[str, str]:
    import posenc

    return {"posenc": posenc.__version__, "torch": torch.__version__, "python": platform.python_version()}


def check_experiment(experiment: Any) -> Experiment:
    """``experiment`` if it is an :class:`Experiment`; a name or anything else raises ``TypeError``."""
    if not isinstance(experiment, Experiment):
        raise TypeError(
            f"`experiment` must be an Experiment (posenc.experiments.get_experiment(name) gives one), "
            f"got {type(experiment).__name__} {experiment!r}"
        )
    return experiment


def run_experiment(
    experiment: Experiment,
    *,
    quick: bool = False,
    seed: int = 0,
    out: Path | str | None = DEFAULT_OUT,
    resume: bool = False,
    force: bool = False,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    progress: bool = True,
    checkpoint_every: int | None = None,
) -> dict[str, Any]:
    """Run ``experiment`` and return its result; with ``out`` set, write ``result.json`` and ``plot.png``.

    Raises :class:`ResultExists` when ``out/<name>/result.json`` exists and ``force`` is False, and
    :class:`Interrupted` (after checkpointing) on SIGINT/SIGTERM.
    """
    check_experiment(experiment)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    config = apply_overrides(experiment, dict(experiment.quick if quick else experiment.full), overrides or {})
    out_dir = None if out is None else Path(out) / experiment.name
    if out_dir is not None:
        if (out_dir / RESULT_FILE).exists() and not force:
            same = _written_by(out_dir / RESULT_FILE, quick=quick, seed=seed, config=config)
            if not (out_dir / PLOT_FILE).exists() and world()[0] == 0 and same is not False:
                log.warning("%s: the result exists but its plot does not; drawing the plot from it", experiment.name)
                return replot(experiment, out_dir)
            if same is False:
                raise ResultExists(
                    f"{out_dir / RESULT_FILE} holds a run with another configuration, seed or --quick; "
                    "pass --force to overwrite it or choose another --out"
                )
            raise ResultExists(f"{out_dir / RESULT_FILE} exists; pass --force to overwrite it or choose another --out")
        ckpt = out_dir / checkpoint_name(experiment.sweep)
        if ckpt.exists() and force:
            ckpt.unlink()
        elif ckpt.exists() and not resume:
            raise ResultExists(f"{ckpt} holds an interrupted run; pass --resume to continue it or --force to start over")
        if world()[0] == 0 or experiment.sweep:  # the folder the checkpoints and results go to: now, not after training
            out_dir.mkdir(parents=True, exist_ok=True)  # an OSError naming the folder (the CLI: 'cannot write')
    ctx = Context(
        name=experiment.name,
        config=config,
        seed=seed,
        quick=quick,
        out_dir=out_dir,
        device=pick_device(device),
        checkpoint_every=checkpoint_every if checkpoint_every is not None else int(config.get("checkpoint_every", 50)),
        progress=progress,
        sweep=experiment.sweep,
    )
    resumed = resume and ctx.load_checkpoint()
    if resumed:
        log.info("%s: resuming with %d finished units", experiment.name, len(ctx.units))
    with _own_process_group():
        return _run_and_write(experiment, ctx, quick=quick, seed=seed, config=config, resumed=resumed)


def _written_by(path: Path, *, quick: bool, seed: int, config: dict[str, Any]) -> bool | None:
    """Whether the result in ``path`` was written by a run with this ``quick``, ``seed`` and ``config``;
    None when the file cannot be read as a result (:func:`replot` says what is wrong with it)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(stored, dict):
        return None
    wanted = {"quick": quick, "seed": seed, "config": json.loads(json.dumps(to_jsonable(config)))}
    return all(stored.get(key) == value for key, value in wanted.items())


def _run_and_write(
    experiment: Experiment, ctx: Context, *, quick: bool, seed: int, config: dict[str, Any], resumed: bool
) -> dict[str, Any]:
    """Train ``experiment`` in ``ctx`` and (rank 0) write its result and plot into ``ctx.out_dir``."""
    out_dir = ctx.out_dir
    start = time.perf_counter()
    with _stop_on_signals(ctx):
        metrics = experiment.run(ctx)
    wall = time.perf_counter() - start  # this process's share when resumed
    result = {
        "name": experiment.name,
        "claim": experiment.claim,
        "paper": experiment.paper,
        "section": experiment.section,
        "quick": quick,
        "seed": seed,
        "config": config,
        "metrics": metrics,
        "reference": experiment.reference,
        "curves": ctx.curves,
        "wall_time_s": wall,
        "resumed": bool(resumed),
        "versions": versions(),
        "device": str(ctx.device),
        "world_size": world()[1],
        "parallel": "none" if world()[1] == 1 else "units" if experiment.sweep else "data",
    }
    images = metrics.get("_images") if isinstance(metrics, dict) else None
    result = to_jsonable(result)
    if out_dir is not None and world()[0] == 0:
        atomic_write_bytes(out_dir / RESULT_FILE, (json.dumps(result, indent=2) + "\n").encode())
        if images:
            atomic_torch_save(_cpu_state(images), out_dir / IMAGES_FILE)
        from posenc.experiments.plotting import save_plot

        save_plot(experiment, result, out_dir / PLOT_FILE, images=images)
    if out_dir is not None and (world()[0] == 0 or ctx.sweep):
        with contextlib.suppress(FileNotFoundError):
            ctx.checkpoint_path.unlink()
    return result


def replot(experiment: Experiment, out_dir: Path | str) -> dict[str, Any]:
    """Draw ``out_dir/plot.png`` again from ``out_dir/result.json`` (and its images), without training.

    Returns the stored result. Raises ``FileNotFoundError`` naming the missing ``result.json``, and
    ``ValueError`` naming one that is not valid JSON or not a result of ``experiment``.
    """
    check_experiment(experiment)
    out_dir = Path(out_dir)
    path = out_dir / RESULT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `posenc run {experiment.name}` first")
    rerun = f"run `posenc run {experiment.name} --force` to write it again"
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {rerun}") from None
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):  # a damaged file: a bad value
        raise ValueError(f"{path} is not a result of `posenc run {experiment.name}` (no 'metrics' object); {rerun}")  # noqa: TRY004
    if result.get("name", experiment.name) != experiment.name:
        raise ValueError(f"{path} holds a result of {result['name']!r}, not of {experiment.name!r}; {rerun}")
    images = None
    if (out_dir / IMAGES_FILE).exists():
        images = torch.load(out_dir / IMAGES_FILE, map_location="cpu", weights_only=True)
    from posenc.experiments.plotting import save_plot

    save_plot(experiment, result, out_dir / PLOT_FILE, images=images)
    return result


def _parse_text(key: str, text: str, default: Any) -> Any:
    """A ``--set`` value given as text, read as the type of the configuration's default."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"`{key}` takes true or false, got {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            pass
        try:  # 1e4 or 2000.0: an integer written as a float
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number.is_integer():
            return int(number)
        raise ValueError(f"`{key}` takes an integer, got {text!r}")
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"`{key}` takes a number, got {text!r}") from None
    if isinstance(default, (list, tuple)):
        import ast

        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):  # names without quotes: a,b,c or [a, b]
            inner = text.strip()
            if inner[:1] + inner[-1:] in ("[]", "()"):
                inner = inner[1:-1]
            value = [part.strip().strip("'\"") for part in inner.split(",") if part.strip()]
        return list(value) if isinstance(value, (list, tuple)) else [value]
    return text


def check_override(key: str, value: Any, default: Any) -> Any:
    """``value`` for configuration ``key``, of the default's type and in its range; ``ValueError`` otherwise.

    Numbers keep the sign of their default: a positive default (sizes, steps, rates) takes positive
    values only, except the keys in :data:`NON_NEGATIVE_KEYS`, which may be 0; a zero default takes
    values >= 0. Lists keep the type (and so the range) of their default's first element.
    """
    if isinstance(value, str) and not isinstance(default, str):
        value = _parse_text(key, value, default)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"`{key}` takes true or false, got {value!r}")  # noqa: TRY004 - a bad override is a bad value, however it is wrong
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"`{key}` takes a number, got {value!r}")  # noqa: TRY004 - a bad override is a bad value, however it is wrong
        if isinstance(default, int) and not float(value).is_integer():
            raise ValueError(f"`{key}` takes an integer, got {value!r}")
        value = type(default)(value)
        if not math.isfinite(value):
            raise ValueError(f"`{key}` must be finite, got {value!r}")
        if default > 0 and key.split("[")[0] not in NON_NEGATIVE_KEYS and value <= 0:
            raise ValueError(f"`{key}` must be > 0, got {value!r}")
        if default >= 0 and value < 0:
            raise ValueError(f"`{key}` must be >= 0, got {value!r}")
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"`{key}` takes a list, got {value!r}")  # noqa: TRY004 - a bad override is a bad value, however it is wrong
        kinds = {type(v) for v in default}
        if len(kinds) == 1:
            (kind,) = kinds
            value = [check_override(f"{key}[{i}]", v, default[0]) if kind in (int, float) else v for i, v in enumerate(value)]
            wrong = [v for v in value if not isinstance(v, kind)]
            if wrong:
                raise ValueError(f"`{key}` takes a list of {kind.__name__}, got {wrong[0]!r} in it")
        return list(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"`{key}` takes a string, got {value!r}")  # noqa: TRY004 - a bad override is a bad value, however it is wrong
    return value


def apply_overrides(experiment: Experiment, config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``overrides`` applied, each checked by :func:`check_override`."""
    for key, value in overrides.items():
        if key not in config:
            hint = did_you_mean(key, config)
            raise ValueError(
                f"unknown configuration key {key!r} in `overrides` (--set) of {experiment.name}{hint}; known: {', '.join(sorted(config))}"
            )
        config[key] = check_override(key, value, config[key])
    return config
