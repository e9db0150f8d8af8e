"""Per-encoding measurements for the atlas: what each registered encoding does, found from its hooks.

Every function here takes a registry entry (or a built module) and returns plain JSON-ready data;
nothing assumes an encoding is one this library knows: the properties and pictures are chosen from
the hooks and attributes the module exposes, and anything that cannot be measured is reported as
such instead of raising.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posenc.analysis.addition import fit_shift_map, fit_shift_map_at
from posenc.analysis.equivariance import patch_permutation_deviation, permutation_deviation
from posenc.analysis.similarity import absolute_table, score_vs_offset, shift_invariance_error
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import EncodingInfo

#: Small values for constructor arguments a generic entry must fill in (by parameter name).
SMALL_ARGUMENTS: dict[str, Any] = {
    "dim": 16, "d_model": 16, "embed_dim": 16, "out_dim": 16, "hidden": 16, "hidden_dim": 16, "width": 16,
    "heads": 2, "num_heads": 2, "head_dim": 8,
    "channels": 4, "in_channels": 4, "out_channels": 4, "c": 4,
    "in_dim": 2, "in_features": 2, "input_dim": 2, "coord_dim": 2, "num_axes": 2, "ndim": 2,
    "num_frequencies": 4, "num_bands": 4, "mapping_size": 8, "num_features": 8,
    "num_steps": 16, "steps": 16, "max_steps": 16, "num_flows": 4, "max_len": 64,
    "height": 8, "width_px": 8, "h": 8, "w": 8, "size": 8, "grid_size": 8, "grid": (8, 8), "resolution": 8,
    "latent_dim": 8, "z_dim": 8, "latent": 8, "style_dim": 8, "kernel_size": 3, "vocab_size": 16,
}

#: Relative-error level below which a property counts as holding.
TOLERANCE = 1e-4
#: Extrapolation holds when the accuracy at 4x the trained length keeps this share of the accuracy at it.
EXTRAPOLATION_RATIO = 0.85


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


def build_sequence_model(cls: type, ref: Reference, *, causal: bool):
    """The reference Transformer with an encoding of class ``cls``, or None when it is not a sequence encoding.

    The constructor gets the model's sizes (``dim``, ``heads``, ``head_dim``, ``causal``) it accepts,
    as ``Transformer(position=name)`` would fill them in.
    """
    from posenc.models import Transformer

    model_args = {"dim": ref.dim, "heads": ref.heads, "head_dim": ref.dim // ref.heads, "causal": causal}
    params = inspect.signature(cls.__init__).parameters
    torch.manual_seed(ref.seed)
    try:
        encoding = cls(**{k: v for k, v in model_args.items() if k in params})
        if not isinstance(encoding, PositionEncoding):
            return None
        return Transformer(ref.vocab, ref.dim, 2, ref.heads, position=encoding, causal=causal).eval()
    except (TypeError, ValueError, NotImplementedError):
        return None


def equivariance_row(model: nn.Module, family: str, ref: Reference) -> dict:
    tokens = torch.randint(0, ref.vocab, (2, ref.n), generator=torch.Generator().manual_seed(ref.seed))
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


def input_table(encoding: nn.Module, n: int) -> torch.Tensor | None:
    """The encoding's table when its input hook adds position information, else None."""
    try:
        table = absolute_table(encoding, n)
    except Exception:  # noqa: BLE001 - any encoding may refuse; the atlas reports what it can
        return None
    spread = (table - table.mean(dim=0)).abs().max()
    if not torch.isfinite(table).all() or spread <= 1e-6 * table.abs().max().clamp_min(1e-12):
        return None  # no position information from zero content (a convolution of its input, say)
    return table


def addition_row(encoding: nn.Module, table: torch.Tensor, ref: Reference) -> tuple[dict, dict]:
    """Fit M_1 at spread positions when the encoding takes explicit ones, else over the table."""
    d = table.shape[1]
    fit = None
    positions = torch.arange(4 * d + 8) * 389
    dim = getattr(encoding, "dim", d)
    concat = int(getattr(encoding, "concat_dim", 0))

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
    if grid is not None and not getattr(encoding, "num_prefix_tokens", 0):
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


def extrapolation_row(cls: type, ref: Reference) -> dict:
    """Train the causal reference model to copy the previous token at length L; test at L and 4L."""
    model = build_sequence_model(cls, ref, causal=True)
    if model is None:
        return prop("extrapolation", "copy-previous-token accuracy at 4x the trained length", None, None, "n/a",
                    "not usable in a causal model")
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
    accuracy = []
    with torch.no_grad():
        for n in (length, 4 * length):
            x = torch.randint(0, vocab, (32, n), generator=generator)
            try:
                pred = model(x)[:, lag:, :vocab].argmax(-1)
            except (ValueError, IndexError) as err:
                return prop("extrapolation", "copy-previous-token accuracy at 4x the trained length", None, None,
                            "n/a", f"cannot run at 4x the trained length: {str(err)[:120]}", length=n)
            accuracy.append((pred == x[:, :-lag]).float().mean().item())
    at_l, at_4l = accuracy
    label = "copy-previous-token accuracy at 4x the trained length"
    details = {"trained_length": length, "train_steps": ref.train_steps, "accuracy_at_trained_length": at_l}
    if at_l < 0.6:
        return prop("extrapolation", label, at_4l, False, "not learned", "the task was not learned", **details)
    holds = at_4l >= EXTRAPOLATION_RATIO * at_l
    return prop("extrapolation", label, at_4l, holds, "extrapolates" if holds else "degrades",
                "holds when the accuracy keeps this share of the accuracy at the trained length",
                required_share=EXTRAPOLATION_RATIO, **details)


def bias_curves(encoding: nn.Module, n: int) -> tuple[list[int], list[list[float]]]:
    return score_vs_offset(encoding, n, query="ones")


# -- generic fallback for encodings outside the sequence Transformer --------------------------------

def build_generic(info: EncodingInfo) -> nn.Module:
    """Build ``info.cls`` with :data:`SMALL_ARGUMENTS` for every required parameter it names."""
    params = inspect.signature(info.cls.__init__).parameters
    kwargs = {}
    missing = []
    for pname, p in list(params.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not inspect.Parameter.empty:
            continue
        if pname in SMALL_ARGUMENTS:
            kwargs[pname] = SMALL_ARGUMENTS[pname]
        else:
            missing.append(pname)
    if missing:
        raise ValueError(f"needs constructor arguments the atlas cannot guess: {', '.join(missing)}")
    torch.manual_seed(0)
    return info.cls(**kwargs)


def _attr(module: nn.Module, names: tuple[str, ...], default: int) -> int:
    for n in names:
        v = getattr(module, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default


def _grid(module: nn.Module) -> tuple[int, int] | None:
    grid = getattr(module, "grid", None) or getattr(module, "grid_size", None)
    if isinstance(grid, int) and grid > 0:
        return grid, grid
    if isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(g, int) for g in grid):
        return int(grid[0]), int(grid[1])
    return None


def _candidate_inputs(module: nn.Module, family: str) -> list[tuple[str, tuple, dict]]:
    """``(label, args, kwargs)`` calls to try, the most plausible for the family first."""
    channels = _attr(module, ("in_channels", "channels", "c", "dim"), 4)
    dim = _attr(module, ("dim", "embed_dim", "d_model", "channels"), 16)
    in_dim = _attr(module, ("in_dim", "in_features", "input_dim", "coord_dim"), 2)
    latent = _attr(module, ("latent_dim", "z_dim", "latent", "style_dim"), 8)
    count = min(_attr(module, ("num_flows", "num_steps", "max_steps", "num_embeddings"), 16), 64)
    prefix = _attr(module, ("num_prefix_tokens",), 0)
    gh, gw = _grid(module) or (8, 8)
    g = torch.Generator().manual_seed(0)
    image = ("feature map (1, c, 16, 16)", (torch.randn(1, channels, 16, 16, generator=g),), {})
    tokens = (f"patch tokens (1, {prefix + gh * gw}, d)", (torch.randn(1, prefix + gh * gw, dim, generator=g),), {})
    tokens_grid = ("patch tokens (1, 64, d) on an 8x8 grid", (torch.randn(1, 64, dim, generator=g),), {"grid": (8, 8)})
    coords = (
        "coordinates (64, in_dim) in [0, 1]",
        (torch.linspace(0, 1, 64).unsqueeze(1).expand(64, in_dim).contiguous(),),
        {},
    )
    steps_int = (f"steps 0..{count - 1}", (torch.arange(count),), {})
    steps_float = (f"steps 0..{count - 1} (float)", (torch.arange(count).float(),), {})
    latent_in = ("latent (1, z) on a 16x16 grid", (torch.randn(1, latent, generator=g), (16, 16)), {})
    latent_only = ("latent (1, z)", (torch.randn(1, latent, generator=g),), {})
    batch = ("batch size 1", (1,), {})
    return {
        "coordinate": [coords, steps_float, image, tokens],
        "step": [steps_int, steps_float, coords],
        "spatial": [image, latent_in, latent_only, batch, tokens, tokens_grid],
        "vision": [tokens, tokens_grid, image],
        "hyper": [image, coords, steps_int],
    }.get(family, [image, tokens, tokens_grid, coords, steps_int, latent_in, latent_only, batch])


@torch.no_grad()
def generic_output(module: nn.Module, family: str) -> tuple[str, Any, torch.Tensor]:
    """The first candidate call the module accepts: its label, first argument and output tensor."""
    module.eval()
    errors = []
    for label, args, kwargs in _candidate_inputs(module, family):
        try:
            out = module(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - trying inputs until one fits
            errors.append(f"{label}: {type(err).__name__}")
            continue
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel() > 1 and torch.isfinite(out).all():
            x = args[0] if len(args) == 1 and not kwargs else None
            return label, x, out.detach().float()
        errors.append(f"{label}: output is not a finite float tensor")
    raise ValueError("no input the atlas tried was accepted (" + "; ".join(errors[:4]) + ")")


def generic_rows(module: nn.Module, x: Any, out: torch.Tensor) -> list[dict]:
    rows = []
    if isinstance(x, torch.Tensor) and x.ndim == 4 and out.ndim == 4 and x.shape[-1] % 4 == 0:
        try:
            deviation = patch_permutation_deviation(module, x, patch_size=x.shape[-1] // 4, trials=2)
            aware = deviation > 1e-5
            rows.append(prop("patch_shuffle", "deviation when the input's patches (a 4 by 4 grid) are shuffled", deviation,
                             None, "position-aware" if aware else "equivariant",
                             "a plain convolution with circular padding would give 0"))
        except Exception:  # noqa: BLE001 - outputs that cannot be matched to patches
            pass
    table = out.reshape(-1, out.shape[-1]) if out.ndim == 2 else None
    if table is not None and table.shape[0] > 1:
        distances = torch.cdist(table.double(), table.double())
        distances.fill_diagonal_(float("inf"))
        nearest = distances.min().item()
        rows.append(prop("distinct", "smallest distance between the encodings of two inputs", nearest,
                         nearest > 1e-6, "distinct" if nearest > 1e-6 else "collisions"))
    return rows
