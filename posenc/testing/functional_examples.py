"""A valid call of every public function in ``posenc.functional``, for tests that must cover all of them.

``functional_spec(name)`` describes one function: valid keyword arguments, an empty-input call that
must work, an oversized call that must be refused (or finish quickly), and a description of each
argument (:class:`FnArg`) from which generic tests derive bad inputs. A name in
``posenc.functional.__all__`` without an entry raises :class:`MissingExample`, so a new public
function cannot escape the malformed-input fuzz.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from posenc.core.positions import Positions
from posenc.testing.examples import MissingExample

#: activation: features the function transforms (NaN may pass through, half precision may work);
#: scores: values only rearranged (any real dtype works);
#: weights: learned parameters (same rules); table: precomputed cos/sin (float32 or float64 only);
#: positions: integer or float32/float64, finite; coordinates: float, finite; levels: like positions,
#: a Python number allowed too; int: a Python int size; dtype: an output dtype (floating only).
FnRole = Literal["activation", "scores", "weights", "table", "positions", "coordinates", "levels", "int", "dtype"]


@dataclass(frozen=True)
class FnArg:
    """One fuzzed argument: its keyword, role, accepted tensor ranks (empty: any) and constrained axes.

    feature_axis: an axis whose size must agree with another argument or is fixed (a wrong size must be
    refused); batch_axis: the batch axis, which must agree with the other batched arguments.
    """

    name: str
    role: FnRole
    ranks: tuple[int, ...] = ()
    feature_axis: int | None = None
    batch_axis: int | None = None


@dataclass(frozen=True)
class FnSpec:
    """How to call one function on valid, empty and oversized inputs (keyword arguments)."""

    valid: Callable[[], dict[str, Any]]
    args: tuple[FnArg, ...]
    empty: Callable[[], dict[str, Any]] | None = None  #: a zero-length input: must return an empty result
    huge: Callable[[], dict[str, Any]] | None = None  #: lengths that cannot fit: ValueError (or quick)
    huge_arg: str | None = None  #: the argument the oversized call's error must name
    #: Explicit bad calls: ``(argument name, keyword arguments)`` that must raise naming the argument.
    bad_calls: Callable[[], list[tuple[str, dict[str, Any]]]] = field(default=list)


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape) + len(shape)))


def _pos(n: int, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + n)


def _unit(*shape: int) -> torch.Tensor:
    """Unit 3-D directions ``(*shape, 3)``."""
    d = _r(*shape, 3)
    return d / d.norm(dim=-1, keepdim=True)


def _hash_grid(x: torch.Tensor, **change: Any) -> dict[str, Any]:
    """A small 2-D hash grid (resolutions 2, 4, 8; the first level dense, the others hashed into 16 rows)."""
    from posenc.coordinate.hash_grid import axis_multipliers, level_layout, level_resolutions

    res = level_resolutions(3, 2, 8)
    sizes, hashed = level_layout(res, 2, 4)
    args = {
        "x": x,
        "table": _r(sum(sizes), 2),
        "resolutions": torch.tensor(res),
        "multipliers": axis_multipliers(res, hashed, 2),
        "num_dense": hashed.count(False),
        "sizes": torch.tensor(sizes),
        "offsets": torch.tensor([0, sizes[0], sizes[0] + sizes[1]]),
    }
    return {**args, **change}


def _planes(scales: int = 2, in_dim: int = 3, features: int = 2, res: int = 3) -> list[list[torch.Tensor]]:
    pairs = in_dim * (in_dim - 1) // 2
    return [[_r(features, res + s, res + k) for k in range(pairs)] for s in range(scales)]


HUGE = 10**12  #: a length no device holds a table for

X4 = FnArg("x", "activation", (4,), batch_axis=0)
TABLE = (FnArg("cos", "table", (), -1), FnArg("sin", "table", (), -1))

FUNCTIONAL_SPECS: dict[str, FnSpec] = {
    "adain": FnSpec(
        lambda: {"x": _r(2, 3, 4, 5), "scale": _r(2, 3), "bias": _r(2, 3)},
        (FnArg("x", "activation", (4,), 1, 0), FnArg("scale", "weights", (2,), 1, 0), FnArg("bias", "weights", (2,), 1, 0)),
        empty=lambda: {"x": _r(0, 3, 4, 5), "scale": _r(0, 3), "bias": _r(0, 3)},
    ),
    "add_coords": FnSpec(
        lambda: {"x": _r(2, 3, 4, 5)},
        (FnArg("x", "activation", (3, 4, 5)),),
        empty=lambda: {"x": _r(2, 3, 0, 5)},
    ),
    "alibi_bias": FnSpec(
        lambda: {"relative": _pos(5)[None, None, :] - _pos(4)[None, :, None], "slopes": torch.tensor([0.5, 0.25])},
        (FnArg("relative", "positions", (3,)), FnArg("slopes", "weights", (1,))),
        empty=lambda: {"relative": torch.zeros(1, 0, 5, dtype=torch.long), "slopes": torch.tensor([0.5, 0.25])},
        huge=lambda: {"relative": torch.zeros(1, 4, 5), "slopes": torch.ones(1).expand(HUGE)},
        huge_arg="slopes",
    ),
    "alibi_slopes": FnSpec(
        lambda: {"num_heads": 6},
        (FnArg("num_heads", "int"), FnArg("dtype", "dtype")),
        huge=lambda: {"num_heads": HUGE},
        huge_arg="num_heads",
    ),
    "apply_rope": FnSpec(
        lambda: {"x": _r(2, 2, 5, 8), "positions": _pos(5, 3).repeat(2, 1)},
        (X4, FnArg("positions", "positions", (1, 2), -1, 0)),
        empty=lambda: {"x": _r(2, 2, 0, 8), "positions": _pos(0)},
        bad_calls=lambda: [
            ("base", {"x": _r(1, 1, 2, 8), "positions": _pos(2), "base": -1.0}),
            ("x", {"x": _r(1, 1, 2, 7), "positions": _pos(2)}),
            ("randomize_positions", {"x": _r(1, 1, 3, 8), "positions": None, "randomize_positions": 2}),
            ("randomize_positions", {"x": _r(1, 1, 3, 8), "positions": _pos(3), "randomize_positions": 8}),
            ("randomize_positions", {"x": _r(1, 1, 3, 8), "positions": None, "randomize_positions": 8.0}),
        ],
    ),
    "apply_rope_qk": FnSpec(
        lambda: {"q": _r(2, 4, 5, 8), "k": _r(2, 2, 5, 8), "positions": _pos(5, 3).repeat(2, 1)},
        (
            FnArg("q", "activation", (4,), -1, 0),
            FnArg("k", "activation", (4,), -1, 0),
            FnArg("positions", "positions", (1, 2), -1, 0),
        ),
        empty=lambda: {"q": _r(2, 2, 0, 8), "k": _r(2, 1, 0, 8), "positions": _pos(0)},
        bad_calls=lambda: [
            ("base", {"q": _r(1, 1, 2, 8), "k": _r(1, 1, 2, 8), "positions": _pos(2), "base": -1.0}),
            ("q", {"q": _r(1, 1, 2, 7), "k": _r(1, 1, 2, 7), "positions": _pos(2)}),
            ("k", {"q": _r(1, 1, 2, 8), "k": _r(1, 1, 3, 8), "positions": _pos(2)}),
            ("k", {"q": _r(1, 1, 2, 8), "k": _r(1, 2, 8), "positions": _pos(2)}),
        ],
    ),
    "apply_rope_2d": FnSpec(
        lambda: {"x": _r(2, 2, 6, 8), "coords": torch.stack(torch.meshgrid(_pos(2), _pos(3), indexing="ij"), -1).flatten(0, 1)},
        (FnArg("x", "activation", (4,)), FnArg("coords", "positions", (2, 3), -2)),
        empty=lambda: {"x": _r(2, 2, 0, 8), "coords": torch.zeros(0, 2)},
        bad_calls=lambda: [
            ("coords", {"x": _r(1, 1, 2, 8), "coords": torch.zeros(2, 3)}),
            ("x", {"x": _r(1, 1, 2, 6), "coords": torch.zeros(2, 2)}),
        ],
    ),
    "apply_mrope": FnSpec(
        lambda: {"x": _r(2, 2, 5, 8), "position_ids": torch.stack([_pos(5), _pos(5) // 2, _pos(5) % 3])[:, None].repeat(1, 2, 1), "mrope_section": (2, 1, 1)},
        (X4, FnArg("position_ids", "positions", (3,), -1, 1)),
        empty=lambda: {"x": _r(2, 2, 0, 8), "position_ids": torch.zeros(3, 2, 0, dtype=torch.long), "mrope_section": (2, 1, 1)},
        bad_calls=lambda: [
            ("mrope_section", {"x": _r(1, 1, 2, 8), "position_ids": torch.zeros(3, 1, 2, dtype=torch.long), "mrope_section": (1, 1, 1)}),
            ("layout", {"x": _r(1, 1, 2, 8), "position_ids": torch.zeros(3, 1, 2, dtype=torch.long), "mrope_section": (2, 1, 1), "layout": "bogus"}),
            ("rotary_dim", {"x": _r(1, 1, 2, 8), "position_ids": torch.zeros(3, 1, 2, dtype=torch.long), "mrope_section": (2, 1, 1), "rotary_dim": 10}),
        ],
    ),
    "apply_rope_learned": FnSpec(
        lambda: {"x": _r(2, 2, 5, 8), "positions": _pos(5, 3).repeat(2, 1), "freqs": _r(2, 4).abs()},
        (X4, FnArg("positions", "positions", (1, 2), -1, 0), FnArg("freqs", "weights", (2,), -1)),
        empty=lambda: {"x": _r(2, 2, 0, 8), "positions": _pos(0), "freqs": _r(2, 4).abs()},
        bad_calls=lambda: [
            ("freqs", {"x": _r(1, 2, 2, 8), "positions": _pos(2), "freqs": _r(3, 4)}),
            ("randomize_positions", {"x": _r(1, 2, 3, 8), "positions": None, "freqs": _r(2, 4), "randomize_positions": 2}),
        ],
    ),
    "apply_rope_mixed": FnSpec(
        lambda: {"x": _r(2, 2, 6, 8), "coords": torch.stack(torch.meshgrid(_pos(2), _pos(3), indexing="ij"), -1).flatten(0, 1).repeat(2, 1, 1), "freqs": _r(2, 2, 4)},
        (X4, FnArg("coords", "positions", (2, 3), -2, 0), FnArg("freqs", "weights", (3,), -1)),
        empty=lambda: {"x": _r(2, 2, 0, 8), "coords": torch.zeros(0, 2), "freqs": _r(2, 2, 4)},
        bad_calls=lambda: [
            ("freqs", {"x": _r(1, 2, 2, 8), "coords": torch.zeros(2, 2), "freqs": _r(2, 3, 4)}),
            ("coords", {"x": _r(1, 1, 2, 8), "coords": torch.zeros(2, 3), "freqs": _r(2, 1, 4)}),
        ],
    ),
    "apply_rope_nd": FnSpec(
        lambda: {"x": _r(2, 2, 6, 8), "positions": torch.stack(torch.meshgrid(_pos(2), _pos(3), indexing="ij"), -1).flatten(0, 1).repeat(2, 1, 1), "axes_dim": (4, 4)},
        (X4, FnArg("positions", "positions", (2, 3), -2, 0)),
        empty=lambda: {"x": _r(2, 2, 0, 8), "positions": torch.zeros(0, 2), "axes_dim": (4, 4)},
        bad_calls=lambda: [
            ("axes_dim[0]", {"x": _r(1, 1, 2, 8), "positions": torch.zeros(2, 2), "axes_dim": (3, 4)}),
            ("axes_dim", {"x": _r(1, 1, 2, 8), "positions": torch.zeros(2, 2), "axes_dim": (4, 6)}),
            ("positions", {"x": _r(1, 1, 2, 8), "positions": torch.zeros(2, 3), "axes_dim": (4, 4)}),
            ("base", {"x": _r(1, 1, 2, 8), "positions": torch.zeros(2, 2), "axes_dim": (4, 4), "base": (1e4,)}),
        ],
    ),
    "apply_rotary": FnSpec(
        lambda: {"x": _r(2, 2, 5, 8), "cos": _r(5, 3).cos(), "sin": _r(5, 3).sin()},
        (FnArg("x", "activation", ()), *TABLE),
        empty=lambda: {"x": _r(2, 2, 0, 8), "cos": torch.ones(0, 3), "sin": torch.zeros(0, 3)},
        bad_calls=lambda: [("cos", {"x": _r(2, 2, 5, 4), "cos": torch.ones(5, 3), "sin": torch.zeros(5, 3)})],
    ),
    "apply_scaled_rope": FnSpec(
        lambda: {"x": _r(2, 2, 5, 8), "positions": _pos(5, 3).repeat(2, 1), "scaling": "linear", "factor": 2.0},
        (X4, FnArg("positions", "positions", (1, 2), -1, 0)),
        empty=lambda: {"x": _r(2, 2, 0, 8), "positions": _pos(0), "scaling": "linear", "factor": 2.0},
        bad_calls=lambda: [
            ("scaling", {"x": _r(1, 1, 2, 8), "positions": _pos(2), "scaling": "bogus"}),
            ("factor", {"x": _r(1, 1, 2, 8), "positions": _pos(2), "scaling": "linear", "factor": 0.5}),
            ("base", {"x": _r(1, 1, 2, 8), "positions": _pos(2), "base": -1.0}),
            ("x.shape[-1]", {"x": _r(1, 1, 2, 7), "positions": _pos(2)}),
            ("randomize_positions", {"x": _r(1, 1, 3, 8), "positions": None, "randomize_positions": 2}),
        ],
    ),
    "apply_xpos": FnSpec(
        lambda: {"x": _r(2, 2, 5, 8), "positions": _pos(5, 3).repeat(2, 1), "key": True},
        (X4, FnArg("positions", "positions", (1, 2), -1, 0)),
        empty=lambda: {"x": _r(2, 2, 0, 8), "positions": _pos(0), "key": False},
        bad_calls=lambda: [
            ("positions", {"x": _r(1, 1, 2, 8), "positions": _pos(2, 10**7), "key": True}),
            ("scale_base", {"x": _r(1, 1, 2, 8), "positions": _pos(2), "key": True, "scale_base": 0.0}),
            ("base", {"x": _r(1, 1, 2, 8), "positions": _pos(2), "key": True, "base": -1.0}),
        ],
    ),
    "complex_order": FnSpec(
        lambda: {"amplitude": _r(2, 5, 4), "frequency": _r(4), "phase": _r(4), "positions": _pos(5, 1).repeat(2, 1)},
        (
            FnArg("amplitude", "activation", (3,), -1, 0),
            FnArg("frequency", "weights", (), -1),
            FnArg("phase", "weights", (), -1),
            FnArg("positions", "positions", (2,), -1, 0),
        ),
        empty=lambda: {"amplitude": _r(2, 0, 4), "frequency": _r(4), "phase": _r(4), "positions": _pos(0)[None]},
    ),
    "context_conv1d": FnSpec(
        lambda: {"x": _r(2, 5, 4), "weight": _r(3, 4, 3), "bias": _r(3)},
        (FnArg("x", "activation", (3,), -1), FnArg("weight", "weights", (3,), 1), FnArg("bias", "weights", (1,), 0)),
        empty=lambda: {"x": _r(2, 0, 4), "weight": _r(3, 4, 3), "bias": _r(3)},
        bad_calls=lambda: [
            ("left_context", {"x": _r(2, 5, 4), "weight": _r(3, 4, 3), "causal": True, "left_context": _r(2, 5)}),
            ("left_context", {"x": _r(2, 5, 4), "weight": _r(3, 4, 3), "left_context": _r(2, 2, 4)}),
        ],
    ),
    "contextual_positions": FnSpec(
        lambda: {"q": _r(2, 2, 4, 4), "k": _r(2, 2, 5, 4), "max_positions": 8},
        (FnArg("q", "activation", (4,), -1, 0), FnArg("k", "activation", (4,), -1, 0), FnArg("max_positions", "int")),
        empty=lambda: {"q": _r(2, 2, 0, 4), "k": _r(2, 2, 0, 4), "max_positions": 8},
        bad_calls=lambda: [
            ("q", {"q": _r(1, 1, 6, 4), "k": _r(1, 1, 5, 4), "max_positions": 8}),
            ("max_positions", {"q": _r(1, 1, 2, 4), "k": _r(1, 1, 2, 4), "max_positions": 1}),
        ],
    ),
    "conv2d_per_position": FnSpec(
        lambda: {"x": _r(2, 2, 3, 4), "kernels": _r(3, 4, 3, 2, 3, 3)},
        (FnArg("x", "activation", (4,), 1), FnArg("kernels", "weights", (6,), 3)),
        empty=lambda: {"x": _r(0, 2, 3, 4), "kernels": _r(3, 4, 3, 2, 3, 3)},
    ),
    "fire_input": FnSpec(
        lambda: {
            "distance": (_pos(4)[:, None] - _pos(5)[None, :]).clamp(min=0).float(),
            "query_position": _pos(4)[:, None].float(),
            "c": torch.tensor(0.5),
            "threshold": torch.tensor(3.0),
        },
        (
            FnArg("distance", "positions", (), -2),
            FnArg("query_position", "positions", (), -2),
            FnArg("c", "weights"),
            FnArg("threshold", "weights"),
        ),
        empty=lambda: {"distance": torch.zeros(0, 5), "query_position": torch.zeros(0, 1), "c": torch.tensor(0.5), "threshold": torch.tensor(3.0)},
        bad_calls=lambda: [
            ("distance", {"distance": -torch.ones(2, 2), "query_position": torch.ones(2, 1), "c": torch.tensor(0.5), "threshold": torch.tensor(3.0)}),
            ("query_position", {"distance": torch.ones(2, 2), "query_position": torch.ones(3, 1), "c": torch.tensor(0.5), "threshold": torch.tensor(3.0)}),
        ],
    ),
    "forget_gate_bias": FnSpec(
        lambda: {"log_gates": -_r(2, 2, 5).abs(), "n": 4},
        (FnArg("log_gates", "activation", (3,)), FnArg("n", "int")),
        empty=lambda: {"log_gates": torch.zeros(2, 2, 0), "n": 0},
        huge=lambda: {"log_gates": torch.zeros(1, 1, 3), "n": HUGE},
        huge_arg="n",
        bad_calls=lambda: [("n", {"log_gates": torch.zeros(1, 1, 3), "n": 4})],
    ),
    "fourier_features": FnSpec(
        lambda: {"x": _r(3, 2), "B": _r(4, 2)},
        (FnArg("x", "coordinates", (), -1), FnArg("B", "weights", (2,), 1)),
        empty=lambda: {"x": _r(0, 2), "B": _r(4, 2)},
    ),
    "hash_grid_encoding": FnSpec(
        lambda: _hash_grid(torch.rand(2, 3, 2, generator=torch.Generator().manual_seed(0))),
        (
            FnArg("x", "coordinates", (), -1),
            FnArg("table", "weights", (2,)),
            FnArg("resolutions", "positions", (1,), 0),
            FnArg("multipliers", "positions", (2,), -1),
            FnArg("num_dense", "int"),
            FnArg("sizes", "positions", (1,), 0),
            FnArg("offsets", "positions", (1,), 0),
        ),
        empty=lambda: _hash_grid(torch.zeros(0, 2)),
        bad_calls=lambda: [
            ("x", _hash_grid(torch.tensor([[0.5, 1.5]]))),
            ("x", _hash_grid(torch.tensor([[-0.1, 0.5]]))),
            ("x", _hash_grid(torch.full((1, 3), 0.5))),
            ("num_dense", _hash_grid(torch.full((1, 2), 0.5), num_dense=4)),
            ("table", _hash_grid(torch.full((1, 2), 0.5), table=_r(20, 2))),
            ("sizes", _hash_grid(torch.full((1, 2), 0.5), sizes=torch.tensor([9, 12, 12]))),
            ("sizes", _hash_grid(torch.full((1, 2), 0.5), sizes=torch.tensor([4, 16, 16]))),
            ("resolutions", _hash_grid(torch.full((1, 2), 0.5), resolutions=torch.tensor([0, 4, 8]))),
            ("offsets", _hash_grid(torch.full((1, 2), 0.5), offsets=torch.tensor([-1, 9, 25]))),
        ],
    ),
    "inverse_frequencies": FnSpec(
        lambda: {"dim": 8},
        (FnArg("dim", "int"), FnArg("dtype", "dtype")),
        huge=lambda: {"dim": 2 * HUGE},
        huge_arg="dim",
        bad_calls=lambda: [("dim", {"dim": 7}), ("base", {"dim": 8, "base": 0.0})],
    ),
    "integrated_positional_encoding": FnSpec(
        lambda: {"mean": _r(2, 3, 3), "covariance_diagonal": _r(2, 3, 3).square() * 0.1, "num_frequencies": 3},
        (
            FnArg("mean", "coordinates", (), -1),
            FnArg("covariance_diagonal", "coordinates", (), -1),
            FnArg("num_frequencies", "int"),
        ),
        empty=lambda: {"mean": _r(0, 3), "covariance_diagonal": torch.zeros(0, 3), "num_frequencies": 3},
        huge=lambda: {"mean": _r(2, 3), "covariance_diagonal": torch.zeros(2, 3), "num_frequencies": HUGE},
        huge_arg="num_frequencies",
        bad_calls=lambda: [
            ("covariance_diagonal", {"mean": _r(2, 3), "covariance_diagonal": -torch.ones(2, 3), "num_frequencies": 2}),
            ("covariance_diagonal", {"mean": _r(2, 3), "covariance_diagonal": torch.ones(3, 3), "num_frequencies": 2}),
            ("num_frequencies", {"mean": _r(2, 3), "covariance_diagonal": torch.ones(2, 3), "num_frequencies": 0}),
        ],
    ),
    "interpolate_position_logits": FnSpec(
        lambda: {"logits": _r(2, 2, 4, 8), "positions": (_r(2, 2, 4, 5).abs() * 2).clamp(max=7)},
        (FnArg("logits", "activation", (4,), batch_axis=0), FnArg("positions", "positions", (4,), batch_axis=0)),
        empty=lambda: {"logits": _r(2, 2, 0, 8), "positions": torch.zeros(2, 2, 0, 5)},
        bad_calls=lambda: [
            ("positions", {"logits": _r(1, 1, 2, 4), "positions": torch.full((1, 1, 2, 3), 4.0)}),
            ("positions", {"logits": _r(1, 1, 2, 4), "positions": torch.full((1, 1, 2, 3), -0.5)}),
            ("positions", {"logits": _r(1, 1, 2, 4), "positions": torch.zeros(1, 1, 3, 3)}),
        ],
    ),
    "kerple_bias": FnSpec(
        lambda: {"distance": (_pos(4)[:, None] - _pos(5)[None, :]).clamp(min=0), "r1": torch.tensor([0.5, 1.0]), "r2": torch.tensor([0.25, 2.0])},
        (FnArg("distance", "positions"), FnArg("r1", "weights", (1,), 0), FnArg("r2", "weights", (1,), 0)),
        empty=lambda: {"distance": torch.zeros(0, 5), "r1": torch.tensor([0.5, 1.0]), "r2": torch.tensor([0.25, 2.0])},
        bad_calls=lambda: [
            ("kernel", {"distance": torch.zeros(2, 2), "r1": torch.ones(2), "r2": torch.ones(2), "kernel": "cubic"}),
            ("distance", {"distance": -torch.ones(2, 2), "r1": torch.ones(2), "r2": torch.full((2,), 0.5), "kernel": "power"}),
        ],
    ),
    "kplanes_features": FnSpec(
        lambda: {"x": torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(0)), "planes": _planes()},
        (FnArg("x", "coordinates", (), -1),),
        empty=lambda: {"x": torch.zeros(0, 3), "planes": _planes()},
        bad_calls=lambda: [
            ("x", {"x": torch.tensor([[0.5, 1.5, 0.5]]), "planes": _planes()}),
            ("x", {"x": torch.full((1, 4), 0.5), "planes": _planes()}),
            ("planes", {"x": torch.full((1, 3), 0.5), "planes": []}),
            ("planes", {"x": torch.full((1, 3), 0.5), "planes": [_planes()[0][:2]]}),
            ("planes", {"x": torch.full((1, 3), 0.5), "planes": [[_r(2, 3, 3), _r(3, 3, 3), _r(2, 3, 3)]]}),
            ("planes", {"x": torch.full((1, 3), 0.5), "planes": [[_r(2, 3, 3), _r(3, 3), _r(2, 3, 3)]]}),
            ("planes", {"x": torch.full((1, 3), 0.5), "planes": [[_r(2, 3, 3), _r(2, 3, 3).long(), _r(2, 3, 3)]]}),
            ("planes", {"x": torch.full((1, 3), 0.5), "planes": [[_r(2, 3, 3), "plane", _r(2, 3, 3)]]}),
            ("combine", {"x": torch.full((1, 3), 0.5), "planes": _planes(), "combine": "max"}),
        ],
    ),
    "log_distance": FnSpec(
        lambda: {"x": _pos(7) - 3},
        (FnArg("x", "positions"),),
        empty=lambda: {"x": _pos(0)},
    ),
    "log_spaced": FnSpec(
        lambda: {"offsets": (_pos(7) - 3).float(), "max_distance": 4},
        (FnArg("offsets", "positions"),),
        empty=lambda: {"offsets": torch.zeros(0, 3), "max_distance": 4},
        bad_calls=lambda: [
            ("max_distance", {"offsets": torch.zeros(3), "max_distance": 0}),
            ("max_distance", {"offsets": torch.zeros(3), "max_distance": "4"}),
        ],
    ),
    "nerf_encoding": FnSpec(
        lambda: {"x": _r(3, 2), "num_frequencies": 3},
        (FnArg("x", "coordinates", ()), FnArg("num_frequencies", "int")),
        empty=lambda: {"x": _r(0, 2), "num_frequencies": 3},
        huge=lambda: {"x": _r(3, 2), "num_frequencies": HUGE},
        huge_arg="num_frequencies",
        bad_calls=lambda: [("bands", {"x": _r(3, 2), "num_frequencies": 3, "bands": "bogus"})],
    ),
    "noise_level_embedding": FnSpec(
        lambda: {"noise_level": torch.tensor([0.1, 0.5, 0.9]), "dim": 8},
        (FnArg("noise_level", "levels"), FnArg("dim", "int")),
        empty=lambda: {"noise_level": torch.zeros(0), "dim": 8},
        huge=lambda: {"noise_level": torch.zeros(3), "dim": HUGE},
        huge_arg="dim",
    ),
    "offset_table_2d": FnSpec(
        lambda: {"grid": (2, 3), "pretrained_grid": (4, 4)},
        (),
        huge=lambda: {"grid": (10**6, 10**6), "pretrained_grid": (4, 4)},
        huge_arg="grid",
        bad_calls=lambda: [
            ("grid", {"grid": (0, 3), "pretrained_grid": (4, 4)}),
            ("pretrained_grid", {"grid": (2, 3), "pretrained_grid": "3"}),
            ("dtype", {"grid": (2, 3), "pretrained_grid": (4, 4), "dtype": torch.long}),
        ],
    ),
    "peg": FnSpec(
        lambda: {"x": _r(2, 7, 4), "weight": _r(4, 1, 3, 3), "bias": _r(4), "grid": (2, 3), "num_prefix_tokens": 1},
        (FnArg("x", "activation", (3,), -1), FnArg("weight", "weights", (4,), 0), FnArg("bias", "weights", (1,), 0)),
        empty=lambda: {"x": _r(0, 7, 4), "weight": _r(4, 1, 3, 3), "bias": _r(4), "grid": (2, 3), "num_prefix_tokens": 1},
        bad_calls=lambda: [
            ("grid", {"x": _r(2, 7, 4), "weight": _r(4, 1, 3, 3), "bias": None, "grid": (2, 2)}),
            ("num_prefix_tokens", {"x": _r(2, 6, 4), "weight": _r(4, 1, 3, 3), "bias": None, "grid": (2, 3), "num_prefix_tokens": -1}),
        ],
    ),
    "rel_shift": FnSpec(
        lambda: {"x": _r(2, 4, 6)},
        (FnArg("x", "scores", ()),),
        empty=lambda: {"x": _r(2, 0, 6)},
        bad_calls=lambda: [("x", {"x": _r(2, 6, 4)})],
    ),
    "relative_position_index_2d": FnSpec(
        lambda: {"grid": (2, 3)},
        (),
        huge=lambda: {"grid": (10**6, 10**6)},
        huge_arg="grid",
        bad_calls=lambda: [("grid", {"grid": (0, 3)}), ("grid", {"grid": "3"})],
    ),
    "relative_positions": FnSpec(
        lambda: {"q_positions": _pos(4, 1).repeat(2, 1), "k_positions": _pos(5).repeat(2, 1)},
        (FnArg("q_positions", "positions", (1, 2), batch_axis=0), FnArg("k_positions", "positions", (1, 2), batch_axis=0)),
        empty=lambda: {"q_positions": _pos(0), "k_positions": _pos(5)},
        huge=lambda: {"q_positions": Positions(10**7), "k_positions": Positions(10**7)},
        huge_arg="k_positions",
        bad_calls=lambda: [("q_positions", {"q_positions": [0, 1], "k_positions": _pos(2)})],
    ),
    "resample_pos_embed": FnSpec(
        lambda: {"table": _r(1, 5, 4), "new_shape": (3, 3), "num_prefix_tokens": 1},
        (FnArg("table", "weights", (3,)),),
        huge=lambda: {"table": _r(1, 4, 4), "new_shape": (10**7, 10**7)},
        huge_arg="new_shape",
        bad_calls=lambda: [
            ("old_shape", {"table": _r(1, 6, 4), "new_shape": (3, 3)}),
            ("table", {"table": _r(2, 4, 4), "new_shape": (3, 3)}),
        ],
    ),
    "resize_table": FnSpec(
        lambda: {"table": _r(5, 4), "new_len": 7},
        (FnArg("table", "weights", (2,)), FnArg("new_len", "int")),
        huge=lambda: {"table": _r(5, 4), "new_len": HUGE},
        huge_arg="new_len",
        bad_calls=lambda: [("table", {"table": _r(0, 4), "new_len": 3}), ("mode", {"table": _r(5, 4), "new_len": 3, "mode": "cubic"})],
    ),
    "rope_frequencies": FnSpec(
        lambda: {"rot_dim": 8, "scaling": "yarn", "factor": 4.0, "original_max_len": 16},
        (FnArg("rot_dim", "int"),),
        huge=lambda: {"rot_dim": 2 * HUGE},
        huge_arg="rot_dim",
        bad_calls=lambda: [
            ("rot_dim", {"rot_dim": 7}),
            ("scaling", {"rot_dim": 8, "scaling": "bogus"}),
            ("base", {"rot_dim": 8, "base": 0.0}),
            ("p", {"rot_dim": 8, "p": 2.0}),
        ],
    ),
    "rotate_pairs": FnSpec(
        lambda: {"x": _r(2, 2, 5, 6), "cos": _r(5, 3).cos(), "sin": _r(5, 3).sin()},
        (FnArg("x", "activation", (), -1), *TABLE),
        empty=lambda: {"x": _r(2, 2, 0, 6), "cos": torch.ones(0, 3), "sin": torch.zeros(0, 3)},
        bad_calls=lambda: [("x", {"x": _r(2, 2, 5, 8), "cos": torch.ones(5, 3), "sin": torch.zeros(5, 3)})],
    ),
    "sandwich_bias": FnSpec(
        lambda: {"offsets": _pos(5)[None, :] - _pos(4)[:, None], "heads": 3, "width": 8},
        (FnArg("offsets", "positions"), FnArg("heads", "int"), FnArg("width", "int")),
        empty=lambda: {"offsets": torch.zeros(0, 5, dtype=torch.long), "heads": 3, "width": 8},
        huge=lambda: {"offsets": torch.zeros(2, 2), "heads": HUGE, "width": 8},
        huge_arg="heads",
        bad_calls=lambda: [
            ("width", {"offsets": torch.zeros(2, 2), "heads": 3, "width": 7}),
            ("base", {"offsets": torch.zeros(2, 2), "heads": 3, "base": -1.0}),
            ("width", {"offsets": torch.zeros(2, 2), "heads": 3, "width": 2 * HUGE}),
        ],
    ),
    "shaw_attention": FnSpec(
        lambda: {"q": _r(2, 2, 4, 4), "k": _r(2, 2, 5, 4), "v": _r(2, 2, 5, 4), "rel_k": _r(7, 4), "rel_v": _r(7, 4), "max_distance": 3},
        (
            FnArg("q", "activation", (4,), -1, 0),
            FnArg("k", "activation", (4,), -1, 0),
            FnArg("v", "activation", (4,), -1, 0),
            FnArg("rel_k", "weights", (2, 3), -1),
            FnArg("rel_v", "weights", (2, 3), -1),
        ),
        empty=lambda: {"q": _r(2, 2, 0, 4), "k": _r(2, 2, 0, 4), "v": _r(2, 2, 0, 4), "rel_k": _r(7, 4), "max_distance": 3},
        bad_calls=lambda: [
            ("rel_k", {"q": _r(1, 1, 2, 4), "k": _r(1, 1, 2, 4), "v": _r(1, 1, 2, 4), "rel_k": _r(5, 4), "max_distance": 3}),
            # heads that disagree: between q and k, and between q and a per-head table
            ("k", {"q": _r(1, 2, 2, 4), "k": _r(1, 3, 2, 4), "v": _r(1, 3, 2, 4), "rel_k": _r(7, 4), "max_distance": 3}),
            ("rel_k", {"q": _r(1, 2, 2, 4), "k": _r(1, 2, 2, 4), "v": _r(1, 2, 2, 4), "rel_k": _r(3, 7, 4), "max_distance": 3}),
        ],
    ),
    "randomized_positions": FnSpec(
        lambda: {"n": 5, "max_len": 64, "batch": 2, "generator": torch.Generator().manual_seed(0)},
        (FnArg("n", "int"), FnArg("max_len", "int"), FnArg("batch", "int")),
        empty=lambda: {"n": 0, "max_len": 8},
        huge=lambda: {"n": 4, "max_len": HUGE},
        huge_arg="max_len",
        bad_calls=lambda: [
            ("max_len", {"n": 9, "max_len": 8}),
            ("generator", {"n": 2, "max_len": 8, "generator": 3}),
        ],
    ),
    "sinusoidal": FnSpec(
        lambda: {"positions": _pos(5, 2), "dim": 8},
        (FnArg("positions", "positions"), FnArg("dim", "int")),
        empty=lambda: {"positions": 0, "dim": 8},
        huge=lambda: {"positions": HUGE, "dim": 8},
        huge_arg="positions",
        bad_calls=lambda: [
            ("dim", {"positions": 3, "dim": 7}),
            ("positions", {"positions": -1, "dim": 8}),
            ("randomize_positions", {"positions": 3, "dim": 8, "randomize_positions": 2}),
            ("randomize_positions", {"positions": _pos(3), "dim": 8, "randomize_positions": 8}),
            ("generator", {"positions": 3, "dim": 8, "generator": torch.Generator()}),
        ],
    ),
    "sinusoidal_coords": FnSpec(
        lambda: {"coords": _r(5, 2), "dim": 8},
        (FnArg("coords", "positions", ()), FnArg("dim", "int")),
        empty=lambda: {"coords": _r(0, 2), "dim": 8},
        huge=lambda: {"coords": _r(5, 2), "dim": 2 * HUGE},
        huge_arg="dim",
        bad_calls=lambda: [("dim", {"coords": _r(5, 2), "dim": 6})],
    ),
    "sinusoidal_nd": FnSpec(
        lambda: {"shape": (2, 3), "dim": 8},
        (FnArg("dim", "int"), FnArg("dtype", "dtype")),
        empty=lambda: {"shape": (0, 3), "dim": 8},
        huge=lambda: {"shape": (10**6, 10**6), "dim": 8},
        huge_arg="shape",
        bad_calls=lambda: [("shape", {"shape": 3, "dim": 8}), ("shape[1]", {"shape": (2, -1), "dim": 8})],
    ),
    "spatial_broadcast": FnSpec(
        lambda: {"z": _r(2, 4), "size": (3, 5)},
        (FnArg("z", "activation", (2,)),),
        empty=lambda: {"z": _r(0, 4), "size": (3, 5)},
        huge=lambda: {"z": _r(2, 4), "size": (10**6, 10**6)},
        huge_arg="size",
        bad_calls=lambda: [("size", {"z": _r(2, 4), "size": (0, 3)})],
    ),
    "spherical_harmonics": FnSpec(
        lambda: {"directions": _unit(2, 5), "degree": 4},
        (FnArg("directions", "coordinates", (), -1), FnArg("degree", "int")),
        empty=lambda: {"directions": torch.zeros(0, 3), "degree": 4},
        huge=lambda: {"directions": _unit(2), "degree": HUGE},
        huge_arg="degree",
        bad_calls=lambda: [
            ("directions", {"directions": torch.ones(2, 3), "degree": 3}),
            ("directions", {"directions": torch.zeros(1, 3), "degree": 3}),
            ("directions", {"directions": _unit(2)[:, :2], "degree": 3}),
            ("degree", {"directions": _unit(2), "degree": 0}),
        ],
    ),
    "t5_relative_bucket": FnSpec(
        lambda: {"relative_position": _pos(7) - 3},
        (FnArg("relative_position", "positions"),),
        empty=lambda: {"relative_position": _pos(0)},
        bad_calls=lambda: [("relative_position", {"relative_position": torch.tensor([0.5])})],
    ),
    "timestep_embedding": FnSpec(
        lambda: {"t": torch.tensor([0, 5, 99]), "dim": 8},
        (FnArg("t", "levels"), FnArg("dim", "int")),
        empty=lambda: {"t": _pos(0), "dim": 8},
        huge=lambda: {"t": torch.zeros(3), "dim": HUGE},
        huge_arg="dim",
    ),
    "wav2vec2_conv_embedding": FnSpec(
        lambda: {"x": _r(2, 5, 4), "weight": _r(4, 2, 4), "bias": _r(4), "groups": 2},
        (FnArg("x", "activation", (3,), -1), FnArg("weight", "weights", (3,), 1), FnArg("bias", "weights", (1,), 0)),
        empty=lambda: {"x": _r(2, 0, 4), "weight": _r(4, 2, 4), "bias": _r(4), "groups": 2},
        bad_calls=lambda: [("groups", {"x": _r(2, 5, 4), "weight": _r(4, 2, 4), "groups": 3})],
    ),
}


def functional_spec(name: str) -> FnSpec:
    """The entry for ``posenc.functional.<name>``; a public name without one raises :class:`MissingExample`."""
    if name not in FUNCTIONAL_SPECS:
        raise MissingExample(
            f"no fuzz spec for posenc.functional.{name}: add an entry to "
            "posenc.testing.functional_examples.FUNCTIONAL_SPECS (valid keyword arguments, an empty input, "
            "an oversized input where a length is given, and a description of each argument)"
        )
    return FUNCTIONAL_SPECS[name]
