"""Per-encoding measurements for the atlas: what each registered encoding does, found from its hooks.

Every function here takes a registry entry (or a built module) and returns plain JSON-ready data;
nothing assumes an encoding is one this library knows: the properties and pictures are chosen from
the hooks and attributes the module exposes, and anything that cannot be measured is reported as
such instead of raising.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posenc.analysis.addition import fit_shift_map, fit_shift_map_at
from posenc.analysis.equivariance import permutation_deviation
from posenc.analysis.similarity import absolute_table, score_vs_offset, shift_invariance_error
from posenc.core.base import EncodingModule, PositionEncoding
from posenc.core.positions import Positions
from posenc.models.interfaces import GridBound, ModelWidth, prefix_tokens

#: Relative-error level below which a property counts as holding.
TOLERANCE = 1e-4
#: Extrapolation holds when the accuracy at 4x the trained length keeps this share of the accuracy at it.
EXTRAPOLATION_RATIO = 0.85

log = logging.getLogger("posenc.atlas")


@dataclass
class Reference:
    """Sizes of the reference models the atlas measures with."""

    vocab: int = 16
    dim: int = 32
    heads: int = 4
    n: int = 12  #: tokens in the equivariance test
    table_len: int = 64  #: positions drawn in pictures
    train_len: int = 16  #: extrapolation: trained length (evaluated at 4x)
    train_steps: int = 150
    seed: int = 0


def prop(
    key: str, label: str, value: float | None, passed: bool | None, verdict: str, note: str = "", **details: float
) -> dict:
    """One row of an entry's property table; ``details`` are further numbers shown in its note."""
    return {"key": key, "label": label, "value": value, "passed": passed, "verdict": verdict, "note": note,
            "details": details}


def build_sequence_model(cls: type, ref: Reference, *, causal: bool, example: dict | None = None):
    """The reference Transformer with an encoding of class ``cls``, or None when it is not a sequence encoding.

    The encoding is built from its example (``example``: the constructor arguments of its entry in
    :mod:`posenc.testing.examples`, the ones the tests and ``posenc check`` use), less the sizes the
    model fills in itself (``dim``, ``heads``, ``head_dim``, ``causal``, given from ``ref`` when the
    encoding declares them, as ``Transformer(position=name)`` does), with a patch grid of 8 x 8 where
    it has one. An encoding without an example gets its constructor's defaults.
    """
    from posenc.checks import TRANSFORMER_ARGUMENTS
    from posenc.models import Transformer

    model_args = {"dim": ref.dim, "heads": ref.heads, "head_dim": ref.dim // ref.heads, "causal": causal}
    declared = cls.model_arguments if issubclass(cls, EncodingModule) else ()
    arguments = {k: v for k, v in (example or {}).items() if k not in TRANSFORMER_ARGUMENTS}
    arguments.update({"grid": 8} if "grid" in arguments else {})
    arguments.update({k: v for k, v in model_args.items() if k in declared})
    torch.manual_seed(ref.seed)
    try:
        encoding = cls(**arguments)
        if not isinstance(encoding, PositionEncoding):
            return None
        model = Transformer(ref.vocab, ref.dim, 2, ref.heads, position=encoding, causal=causal).eval()
        with torch.no_grad():
            model(torch.zeros(1, sequence_length(encoding, ref.n), dtype=torch.long))
        return model
    except (TypeError, ValueError, NotImplementedError, IndexError):
        return None


def sequence_length(encoding: nn.Module, n: int) -> int:
    """``n``, or the token count of the patch grid an encoding is tied to (its prefix tokens included)."""
    grid = _grid(encoding)
    if grid is None:
        return n
    return prefix_tokens(encoding) + grid[0] * grid[1]


def equivariance_row(model: nn.Module, family: str, ref: Reference) -> dict:
    n = sequence_length(model.position, ref.n)
    tokens = torch.randint(0, ref.vocab, (2, n), generator=torch.Generator().manual_seed(ref.seed))
    deviation = permutation_deviation(model, tokens, trials=2, seed=ref.seed)
    equivariant = deviation < 1e-5
    expected_equivariant = family == "none"
    return prop(
        "equivariance",
        "permutation deviation of the reference encoder",
        deviation,
        equivariant == expected_equivariant,
        "equivariant" if equivariant else "order-aware",
        "expected equivariant (no position information)" if expected_equivariant else "expected order-aware",
    )


def _varies(table: torch.Tensor) -> bool:
    """Whether the rows of ``table`` differ away from the ends (borders of a zero-padded convolution)."""
    rows = table[4:-4] if table.shape[0] > 16 else table
    spread = (rows - rows.mean(dim=0)).abs().max()
    return bool(torch.isfinite(table).all()) and bool(spread > 1e-6 * table.abs().max().clamp_min(1e-12))


def input_table(encoding: nn.Module, n: int) -> torch.Tensor | None:
    """The encoding's table when its input hook adds position information, else None."""
    try:
        table = absolute_table(encoding, n)
    except Exception:  # noqa: BLE001 - any encoding may refuse; the atlas reports what it can
        return None
    # None: no position information from zero content (a convolution or a product with its input)
    return table if _varies(table) else None


@torch.no_grad()
def content_response(
    encoding: nn.Module, n: int, kind: str, seed: int = 0, centre: int | None = None
) -> torch.Tensor | None:
    """``(n, d)`` output of the input hook for content ``kind``: ``"ones"`` (all-ones embeddings; None
    when its rows do not vary) or ``"impulse"`` (one random token at position n // 2 among zeros,
    minus the output for zeros: how a token reaches its neighbours)."""
    dim = encoding.dim if isinstance(encoding, ModelWidth) else None
    if not isinstance(dim, int):
        return None
    concat = encoding.concat_dim if isinstance(encoding, PositionEncoding) else 0
    width = dim - concat if concat < dim else dim
    zeros = torch.zeros(1, n, width)
    if kind == "ones":
        out = encoding.encode_input(torch.ones(1, n, width), positions=Positions(n))[0].float()
        return out if _varies(out) else None
    x = zeros.clone()
    x[0, n // 2 if centre is None else centre] = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    out = encoding.encode_input(x, positions=Positions(n)) - encoding.encode_input(zeros, positions=Positions(n))
    return out[0].float()


def addition_row(encoding: nn.Module, table: torch.Tensor, ref: Reference) -> tuple[dict, dict]:
    """Fit M_1 at spread positions when the encoding takes explicit ones, else over the table."""
    d = table.shape[1]
    fit = None
    positions = torch.arange(4 * d + 8) * 389
    dim = encoding.dim if isinstance(encoding, ModelWidth) and isinstance(encoding.dim, int) else d
    concat = encoding.concat_dim if isinstance(encoding, PositionEncoding) else 0

    def encode(p: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(1, len(p), dim - concat if concat < dim else dim)
        out = encoding.encode_input(zeros, positions=Positions(len(p), explicit=p.unsqueeze(0)))
        return (out[0, :, -concat:] if concat else out[0]).double()

    try:
        with torch.no_grad():
            fit = fit_shift_map_at(encode, positions, 1)
        where = "positions 0, 389, 778, ... and the same + 1"
    except Exception:  # noqa: BLE001 - a table that stops at max_len: fit over its rows
        fit = None
    if fit is None:
        if table.shape[0] <= d + 1:
            raise ValueError(f"table of {table.shape[0]} rows is too short for a fit in d={d}")
        fit = fit_shift_map(table, 1)
        where = f"consecutive positions 0..{table.shape[0] - 1}"
    holds = fit.residual < TOLERANCE
    shape = "a block rotation" if fit.is_block_rotation else ("orthogonal" if fit.is_orthogonal else "not orthogonal")
    note = f"least squares over {where}; M is {shape}"
    if not fit.well_posed:
        note = f"least squares over {where}: rows nearly dependent, M not identifiable"
    row = prop(
        "addition",
        "addition theorem: residual of PE(p+1) = M PE(p)",
        fit.residual,
        holds if fit.well_posed else None,
        ("holds" if holds else "does not hold") if fit.well_posed else "not identifiable",
        note,
        condition_number=fit.condition_number,
    )
    return row, fit.as_dict()


def relative_row(encoding: nn.Module, ref: Reference) -> dict:
    grid = _grid(encoding)
    if grid is not None and not prefix_tokens(encoding):
        # on a patch grid a shift by one row of patches keeps every 2-D offset
        n, shift, where = (grid[0] - 1) * grid[1], grid[1], "by one row of the patch grid"
    else:
        n, shift, where = ref.n, 7, "by 7"
    error = shift_invariance_error(encoding, n, shift, seed=ref.seed)
    holds = error < TOLERANCE
    return prop(
        "relative",
        f"shift invariance: change of the position terms when all positions move {where}",
        error,
        holds,
        "relative" if holds else "absolute",
        "relative error of logits / biases / value terms",
    )


EXTRAPOLATION_LABEL = "copy-previous-token accuracy at 4x the trained length (quick check)"


def extrapolation_budget(ref: Reference) -> str:
    return f"quick check: {ref.train_steps} Adam steps, batch 32, at length {ref.train_len}"


def extrapolation_row(cls: type, ref: Reference, example: dict | None = None) -> tuple[dict, dict | None]:
    """Train the causal reference model to copy the previous token at length L; test at L, 2L, 3L, 4L.

    Returns the property row and the accuracy curve (``{"lengths", "accuracy"}``, None when n/a).
    """
    label, budget = EXTRAPOLATION_LABEL, extrapolation_budget(ref)
    model = build_sequence_model(cls, ref, causal=True, example=example)
    if model is None:
        return prop("extrapolation", label, None, None, "n/a", "not usable in a causal model"), None
    grid = _grid(model.position)
    if grid is not None:
        return prop("extrapolation", label, None, None, "n/a",
                    f"tied to its {grid[0]}x{grid[1]} patch grid: there are no longer sequences"), None
    length, lag, vocab = ref.train_len, 1, 8
    generator = torch.Generator().manual_seed(ref.seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(ref.train_steps):
        x = torch.randint(0, vocab, (32, length), generator=generator)
        logits = model(x)[:, lag:, :vocab]
        loss = F.cross_entropy(logits.reshape(-1, vocab), x[:, :-lag].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    lengths, accuracy = [], []
    with torch.no_grad():
        for n in (length, 2 * length, 3 * length, 4 * length):
            x = torch.randint(0, vocab, (32, n), generator=generator)
            try:
                pred = model(x)[:, lag:, :vocab].argmax(-1)
            except (ValueError, IndexError) as err:
                if n == length:
                    raise
                first = str(err).split("\n")[0][:120]
                return prop("extrapolation", label, None, None, "n/a",
                            f"cannot run at {n // length}x the trained length ({first})", length=n), None
            lengths.append(n)
            accuracy.append((pred == x[:, :-lag]).float().mean().item())
    curve = {"lengths": lengths, "accuracy": accuracy, "budget": budget, "trained_length": length}
    at_l, at_4l = accuracy[0], accuracy[-1]
    details = {"trained_length": length, "train_steps": ref.train_steps, "accuracy_at_trained_length": at_l}
    if at_l < 0.6:
        return prop("extrapolation", label, at_4l, None, "not learned (quick)",
                    f"{budget}: the task was not learned in this budget", **details), curve
    holds = at_4l >= EXTRAPOLATION_RATIO * at_l
    return prop("extrapolation", label, at_4l, holds, "extrapolates (quick)" if holds else "degrades (quick)",
                f"{budget}; holds when the accuracy keeps this share of the accuracy at the trained length",
                required_share=EXTRAPOLATION_RATIO, **details), curve


def bias_curves(encoding: nn.Module, n: int) -> tuple[list[int], list[list[float]]]:
    return score_vs_offset(encoding, n, query="ones")


# -- encodings outside the sequence Transformer: probed through their examples ----------------------

def _grid(module: nn.Module) -> tuple[int, int] | None:
    grid = module.grid if isinstance(module, GridBound) else None
    if isinstance(grid, int) and grid > 0:
        return grid, grid
    if isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(g, int) for g in grid):
        return int(grid[0]), int(grid[1])
    return None


class NotApplicable(Exception):
    """A measurement or picture does not apply; the message is the reason shown on the page."""


@dataclass
class Probe:
    """What an encoding produced for the input the atlas chose from its example.

    kind: ``"sweep"`` (a range of coordinates or steps, one output row each), ``"image"`` (a zero
    feature map: the position signal a layer adds), ``"map"`` (a map made from a batch size or a
    latent) or ``"output"`` (the example's own inputs). run: the output for another first input
    (``"image"`` only, for the shift test).
    """

    kind: str
    label: str
    x: torch.Tensor | None
    out: torch.Tensor
    run: Any = None


def example_spec(name: str):
    """The entry of ``name`` in :data:`posenc.testing.examples.SPECS`, else :class:`NotApplicable`."""
    from posenc.testing.examples import SPECS

    if name not in SPECS:
        raise NotApplicable(f"no example for {name!r} in posenc.testing.examples.SPECS, which the atlas builds "
                            "and draws every encoding from")
    return SPECS[name]


def build_example(name: str, cls: type) -> nn.Module:
    torch.manual_seed(0)
    return cls(**example_spec(name).kwargs)


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.numel() < 2:
        raise NotApplicable(f"its output is not a float tensor with several values ({type(out).__name__})")
    if not torch.isfinite(out).all():
        raise NotApplicable("its output holds NaN or infinity for the example's inputs")
    return out.detach().float()


@torch.no_grad()
def probe(name: str, module: nn.Module) -> Probe:
    """Run ``module`` on an input chosen from the roles of its example's arguments.

    The chosen input stays inside the example's own value range; when the module refuses it, the
    example's own inputs are used (any new encoding with an example can be drawn this way).
    """
    s = example_spec(name)
    module.eval()
    inputs = s.inputs()
    try:
        return _chosen_probe(s, module, inputs)
    except (ValueError, TypeError, RuntimeError, IndexError) as err:
        # the refusal goes to the log, not the page: the page says only what is drawn
        log.info("atlas: %s refused the generic probe (%s); drawing its example's inputs", name, str(err).split("\n")[0])
        out = _first_tensor(s.forward(module, *inputs))
        described = ", ".join(str(tuple(v.shape)) if isinstance(v, torch.Tensor) else repr(v) for v in inputs)
        return Probe("map" if out.ndim == 4 else "output",
                     f"its example's inputs ({described}; its input domain is narrower than the generic probe's)",
                     inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None, out)


def _chosen_probe(s, module: nn.Module, inputs: tuple) -> Probe:
    roles = [a.role for a in s.args]
    forward = s.forward
    if roles and roles[0] in ("coordinates", "steps") and len(inputs) == 1:
        x0 = inputs[0]
        if roles[0] == "coordinates":
            flat = x0.reshape(-1, x0.shape[-1]).double()
            lo, hi = flat[:, 0].min().item(), flat[:, 0].max().item()
            x = flat[:1].repeat(128, 1).to(x0.dtype)
            x[:, 0] = torch.linspace(lo, hi, 128, dtype=x0.dtype)
            label = "the first coordinate swept over the example's range (the others fixed)"
            return Probe("sweep", label, x[:, 0], _first_tensor(forward(module, x)).reshape(128, -1))
        if x0.is_floating_point():
            x = torch.linspace(float(x0.min().clamp_max(0)), float(x0.max().clamp_min(1)), 128, dtype=x0.dtype)
            out = _first_tensor(forward(module, x)).reshape(128, -1)
            return Probe("sweep", "values swept from min(0, example) to max(1, example)", x, out)
        for k in (128, 64, 32, 16, 8, 4, 2):
            try:
                out = forward(module, torch.arange(k, dtype=x0.dtype))
            except (ValueError, IndexError):
                continue  # past the module's table: a shorter range
            return Probe("sweep", f"steps 0 to {k - 1}", torch.arange(k).float(), _first_tensor(out).reshape(k, -1))
        raise ValueError("it accepts no range of steps starting at 0")
    first = s.args[0] if s.args else None
    if first is not None and first.role == "activation" and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim == 4:
        shape = inputs[0].shape
        act = [i for i, a in enumerate(s.args) if a.role == "activation"]

        def run(x: torch.Tensor) -> torch.Tensor:
            args = [x if i in act else v for i, v in enumerate(inputs)]
            return _first_tensor(forward(module, *args))

        for size in ((16, 16), tuple(shape[2:])):
            zero = torch.zeros(1, shape[1], *size)
            try:
                out = run(zero)
            except (ValueError, RuntimeError, IndexError):
                continue
            return Probe("image", f"a zero feature map of shape {tuple(zero.shape)}", zero, out, run)
        raise ValueError(f"it accepts no zero feature map of {shape[1]} channels")
    if first is not None and first.role == "activation" and isinstance(inputs[0], torch.Tensor):
        zeros = [torch.zeros_like(v) if a.role == "activation" else v for a, v in zip(s.args, inputs)]
        try:
            out = _first_tensor(forward(module, *zeros))
            return Probe("map" if out.ndim == 4 else "output", f"zero inputs of shape {tuple(inputs[0].shape)}",
                         zeros[0], out)
        except (ValueError, RuntimeError, IndexError, NotApplicable):
            pass
    out = _first_tensor(forward(module, *inputs))
    described = ", ".join(str(tuple(v.shape)) if isinstance(v, torch.Tensor) else repr(v) for v in inputs)
    return Probe("map" if out.ndim == 4 else "output", f"its example's inputs ({described})",
                 inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None, out)


def spread_row(out: torch.Tensor, label: str) -> dict:
    """How much a map varies over its positions: the position signal of a layer fed a constant."""
    maps = out[0].double()  # (c, h, w)
    spread = (maps.std(dim=(-2, -1)).mean() / maps.abs().mean().clamp_min(1e-12)).item()
    varies = spread > 1e-6
    return prop("spread", f"position signal: spread of the output over the map for {label}", spread, None,
                "varies with position" if varies else "uniform",
                "standard deviation over the map (mean over channels) / mean magnitude")


def shift_row(p: Probe) -> dict:
    """Relative change of the interior when a random input is shifted by one pixel in each direction."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(p.x.shape, generator=g)
    out = p.run(x)
    moved = p.run(torch.roll(x, (1, 1), (-2, -1)))
    if moved.shape != out.shape or out.ndim != 4 or min(out.shape[-2:]) < 8:
        raise NotApplicable(f"its output {tuple(out.shape)} is not a map of the input's size")
    expected = torch.roll(out, (1, 1), (-2, -1))
    inner = (..., slice(3, -3), slice(3, -3))  # away from padding and from the wrapped rows
    error = ((moved[inner] - expected[inner]).norm() / expected[inner].norm().clamp_min(1e-12)).item()
    aware = error > 1e-5
    return prop("shift", "translation equivariance: change of the output's interior when the input moves one pixel",
                error, None, "position-aware" if aware else "translation-equivariant",
                "a plain convolution gives 0 away from the borders")


def distinct_row(table: torch.Tensor) -> dict:
    distances = torch.cdist(table.double(), table.double())
    distances.fill_diagonal_(float("inf"))
    nearest = distances.min().item()
    return prop("distinct", "smallest distance between the encodings of two inputs", nearest,
                nearest > 1e-6, "distinct" if nearest > 1e-6 else "collisions")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
