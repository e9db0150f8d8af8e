"""A tiny, valid instance of every registered encoding, for tests that must cover all of them.

``example(name)`` builds the encoding registered as ``name`` at a tiny size together with valid
inputs and the callable that runs it::

    module, inputs, forward = example("rope")
    out = forward(module, *inputs)

Each entry also describes its inputs (:class:`Arg`: the argument's name, its role and its accepted
ranks) and which constructor sizes must be even, so that generic tests can derive bad inputs from it.
A registered name without an entry raises :class:`MissingExample`: a new encoding cannot silently
escape the suites that iterate over ``posenc.available()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from posenc.core.positions import Positions
from posenc.core.registry import get

Role = Literal["activation", "positions", "coordinates", "steps", "count"]


class MissingExample(LookupError):
    """A registered encoding has no entry in :data:`SPECS`."""


@dataclass(frozen=True)
class Arg:
    """One input of an example's forward callable.

    role: ``"activation"`` (features the encoding transforms or adds to; NaN may pass through),
    ``"positions"`` / ``"coordinates"`` / ``"steps"`` (where things are; must be finite),
    ``"count"`` (a Python int such as a sequence length or batch size).
    ranks: accepted tensor ranks (empty: any rank); feature_axis: the axis whose size the module fixes.
    """

    name: str
    role: Role
    ranks: tuple[int, ...] = ()
    feature_axis: int | None = None


@dataclass(frozen=True)
class Spec:
    """How to build one encoding at a tiny size and run it on valid inputs."""

    kwargs: dict[str, Any]
    inputs: Callable[[], tuple]
    forward: Callable[..., Any]
    args: tuple[Arg, ...]
    even: tuple[str, ...] = ()  #: constructor sizes that must be even
    #: Explicit bad calls: ``(argument name, callable(module))`` that must raise naming the argument.
    bad_calls: Callable[[], list[tuple[str, Callable[[nn.Module], Any]]]] = field(default=list)


class Example(NamedTuple):
    module: nn.Module
    inputs: tuple
    forward: Callable[..., Any]


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _call(**fixed: Any) -> Callable[..., Any]:
    return lambda module, *inputs: module(*inputs, **fixed)


X3 = Arg("x", "activation", (3,), -1)
X4 = Arg("x", "activation", (4,), -1)
POS = Arg("positions", "positions", (1, 2))

def _bias_spec(kwargs: dict[str, Any], **extra: Any) -> Spec:
    """A bias encoding called on its own as ``module(n, q_positions=p, k_positions=p)``."""
    return Spec(
        kwargs,
        lambda: (5, torch.arange(5)),
        lambda m, n, p: m(n, q_positions=p, k_positions=p),
        (Arg("n", "count"), Arg("q_positions", "positions", (1, 2))),
        **extra,
    )


SPECS: dict[str, Spec] = {
    "none": Spec(
        {},
        lambda: (_r(2, 5, 8),),
        lambda m, x: m.encode_input(x, positions=Positions(x.shape[-2])),
        (),
    ),
    "learned": Spec(
        # 64 positions: the atlas draws and evaluates the reference model at up to 64 tokens
        {"dim": 8, "max_len": 64},
        lambda: (_r(2, 5, 8), torch.arange(2, 7)),
        lambda m, x, p: m(x, positions=p),
        (X3, POS),
        bad_calls=lambda: [
            ("positions", lambda m: m(_r(1, 5, 8), positions=torch.arange(62, 67))),
            ("positions", lambda m: m(_r(1, 5, 8), offset=62)),
            ("positions", lambda m: m(_r(1, 5, 8), positions=torch.arange(-1, 4))),
            ("offset", lambda m: m(_r(1, 5, 8), positions=torch.arange(5), offset=2)),
        ],
    ),
    "sinusoidal": Spec(
        {"dim": 8},
        lambda: (_r(2, 5, 8), torch.arange(3, 8)),
        lambda m, x, p: m(x, positions=p),
        (X3, POS),
        even=("dim",),
        bad_calls=lambda: [
            ("offset", lambda m: m(_r(1, 5, 8), offset=-1)),
            ("offset", lambda m: m(_r(1, 5, 8), positions=torch.arange(5), offset=2)),
        ],
    ),
    "rope": Spec(
        {"head_dim": 8},
        lambda: (_r(2, 2, 5, 8), torch.arange(3, 8)),
        lambda m, x, p: m(x, positions=p),
        (X4, POS),
        bad_calls=lambda: [
            ("offset", lambda m: m(_r(1, 1, 5, 8), offset=-1)),
            ("offset", lambda m: m(_r(1, 1, 5, 8), positions=torch.arange(5), offset=2)),
        ],
    ),
    "rope_learned": Spec(
        {"head_dim": 8, "heads": 2},
        lambda: (_r(2, 2, 5, 8), torch.arange(3, 8)),
        lambda m, x, p: m(x, positions=p),
        (X4, POS),
        bad_calls=lambda: [
            ("offset", lambda m: m(_r(1, 2, 5, 8), offset=-1)),
            ("offset", lambda m: m(_r(1, 2, 5, 8), positions=torch.arange(5), offset=2)),
        ],
    ),
    "xpos": Spec(
        {"head_dim": 8, "scale_base": 64.0},
        lambda: (_r(2, 2, 5, 8), torch.arange(3, 8)),
        lambda m, x, p: m(x, positions=p),
        (X4, POS),
        bad_calls=lambda: [
            ("offset", lambda m: m(_r(1, 1, 5, 8), offset=-1)),
            ("positions", lambda m: m(_r(1, 1, 2, 8), positions=torch.tensor([0, 10**6]))),
            ("side", lambda m: m(_r(1, 1, 5, 8), side="value")),
            ("offset", lambda m: m(_r(1, 1, 5, 8), positions=torch.arange(5), offset=2)),
        ],
    ),
    "alibi": _bias_spec({"heads": 2}),
    "t5": _bias_spec({"heads": 2, "num_buckets": 8, "max_distance": 16}),
    "kerple": _bias_spec({"heads": 2}),
    "sandwich": _bias_spec({"heads": 2, "width": 8}, even=("width",)),
    "dynamic_bias": _bias_spec({"heads": 2, "hidden": 8}),
    "cpb": _bias_spec({"heads": 2, "hidden": 8, "max_distance": 8}),
    "fire": _bias_spec({"heads": 2, "hidden": 8}),
    "fox": Spec(
        {"head_dim": 4, "heads": 2},
        lambda: (_r(2, 2, 5, 4),),
        _call(),
        (Arg("k", "activation", (4,), -1),),
    ),
    "cope": Spec(
        {"head_dim": 4, "heads": 2, "max_positions": 8},
        lambda: (_r(2, 2, 5, 4), _r(2, 2, 6, 4)),
        _call(),
        (Arg("q", "activation", (4,), -1), Arg("k", "activation", (4,), -1)),
    ),
    "shaw": Spec(
        {"head_dim": 4, "heads": 2, "max_distance": 3},
        lambda: (_r(2, 2, 5, 4), _r(2, 2, 6, 4), _r(2, 2, 6, 4)),
        _call(),
        (Arg("q", "activation", (4,), -1), Arg("k", "activation", (4,), -1), Arg("v", "activation", (4,), -1)),
    ),
    "transformer_xl": Spec(
        {"dim": 8, "heads": 2, "head_dim": 4},
        lambda: (_r(2, 2, 5, 4), _r(2, 2, 5, 4)),
        lambda m, q, k: m.score_bias(q, k, q_positions=Positions(5), k_positions=Positions(5)),
        (Arg("q", "activation", (4,), -1), Arg("k", "activation", (4,), -1)),
        even=("dim",),
    ),
    "complex_order": Spec(
        {"dim": 8},
        lambda: (_r(2, 5, 8), torch.arange(3, 8)),
        lambda m, x, p: m(x, positions=p),
        (X3, POS),
        even=("dim",),
        bad_calls=lambda: [("offset", lambda m: m(_r(1, 5, 8), positions=torch.arange(5), offset=2))],
    ),
    "conv_context": Spec({"dim": 8, "kernel_size": 3, "layers": 1}, lambda: (_r(2, 5, 8),), _call(), (X3,)),
    "wav2vec2_conv": Spec({"dim": 8, "kernel_size": 4, "groups": 2}, lambda: (_r(2, 5, 8),), _call(), (X3,)),
    "constant_input": Spec(
        {"channels": 4, "size": 4},
        lambda: (2,),
        _call(),
        (Arg("batch", "count"),),
        bad_calls=lambda: [("size", lambda m: m(2, size=5))],
    ),
    "coordconv": Spec(
        {"in_channels": 2, "out_channels": 3, "kernel_size": 3},
        lambda: (_r(2, 2, 5, 6),),
        _call(),
        (Arg("x", "activation", (4,), 1),),
    ),
    "vit_learned": Spec(
        {"dim": 8, "grid": 3, "num_prefix_tokens": 1},
        lambda: (_r(2, 10, 8), torch.arange(10)),
        lambda m, x, p: m(x, positions=p),
        (X3, POS),
        bad_calls=lambda: [("positions", lambda m: m(_r(1, 2, 8), positions=torch.tensor([3, 10])))],
    ),
    "peg": Spec(
        {"dim": 8, "grid": 3},
        lambda: (_r(2, 9, 8),),
        _call(),
        (X3,),
        bad_calls=lambda: [("positions", lambda m: m(_r(1, 2, 8), positions=torch.tensor([0, 9])))],
    ),
    "rel_bias_2d": Spec(
        {"heads": 2, "grid": 3},
        lambda: (torch.arange(9),),
        lambda m, p: m(positions=p),
        (Arg("positions", "positions", (1, 2)),),
        bad_calls=lambda: [
            ("positions", lambda m: m(positions=torch.tensor([0, 9]))),
            ("positions", lambda m: m(10)),
        ],
    ),
    "cpb_2d": Spec(
        {"heads": 2, "grid": 3, "hidden": 8},
        lambda: (torch.arange(9),),
        lambda m, p: m(positions=p),
        (Arg("positions", "positions", (1, 2)),),
        bad_calls=lambda: [
            ("positions", lambda m: m(positions=torch.tensor([0, 9]))),
            ("positions", lambda m: m(10)),
        ],
    ),
    "rope_2d": Spec(
        {"head_dim": 8, "grid": 3},
        lambda: (_r(2, 2, 9, 8), torch.arange(9)),
        lambda m, x, p: m(x, positions=p),
        (X4, POS),
        bad_calls=lambda: [("positions", lambda m: m(_r(1, 1, 2, 8), positions=torch.tensor([0, 9])))],
    ),
    "rope_mixed": Spec(
        {"head_dim": 8, "grid": 3, "heads": 2},
        lambda: (_r(2, 2, 9, 8), torch.arange(9)),
        lambda m, x, p: m(x, positions=p),
        (X4, POS),
        bad_calls=lambda: [("positions", lambda m: m(_r(1, 2, 2, 8), positions=torch.tensor([0, 9])))],
    ),
    "sincos_2d": Spec(
        {"dim": 8, "grid": 3},
        lambda: (_r(2, 9, 8), torch.arange(9)),
        lambda m, x, p: m(x, positions=p),
        (Arg("x", "activation", (3, 4), -1), POS),
        bad_calls=lambda: [("positions", lambda m: m(_r(1, 2, 8), positions=torch.tensor([0, 9])))],
    ),
    "gan_multiscale": Spec(
        {"channels": 4, "sizes": ((4, 4),)}, lambda: (2,), lambda m, b: m(b, size=5), (Arg("batch", "count"),)
    ),
    "hanet": Spec(
        {"in_channels": 4, "out_channels": 4, "rows": 4, "reduction": 2},
        lambda: (_r(2, 4, 6, 5), _r(2, 4, 6, 5)),
        _call(),
        (Arg("x_low", "activation", (4,), 1), Arg("x_high", "activation", (4,), 1)),
    ),
    "spatial_broadcast": Spec(
        {"latent_dim": 4, "out_channels": 3, "hidden": 4, "layers": 2},
        lambda: (_r(2, 4),),
        lambda m, z: m(z, (5, 6)),
        (Arg("z", "activation", (2,), 1),),
        bad_calls=lambda: [("size", lambda m: m(_r(2, 4), (0, 6)))],
    ),
    "fourier_features": Spec(
        {"in_dim": 2, "num_features": 4, "sigma": 2.0},
        lambda: (_r(3, 2),),
        _call(),
        (Arg("x", "coordinates", (), -1),),
    ),
    "nerf": Spec({"in_dim": 3, "num_frequencies": 3}, lambda: (_r(3, 3),), _call(), (Arg("x", "coordinates", (), -1),)),
    "hash_grid": Spec(
        {"in_dim": 3, "num_levels": 3, "features_per_level": 2, "log2_hashmap_size": 6, "base_resolution": 2,
         "finest_resolution": 8},
        lambda: (torch.rand(4, 3, generator=torch.Generator().manual_seed(3)),),
        _call(),
        (Arg("x", "coordinates", (), -1),),
        bad_calls=lambda: [("x", lambda m: m(torch.full((2, 3), 1.5)))],
    ),
    "spherical_harmonics": Spec(
        {"degree": 3},
        lambda: (torch.nn.functional.normalize(_r(4, 3), dim=-1),),
        _call(),
        (Arg("directions", "coordinates", (), -1),),
        bad_calls=lambda: [("directions", lambda m: m(torch.ones(2, 3)))],
    ),
    "integrated_pe": Spec(
        {"in_dim": 3, "num_frequencies": 3},
        lambda: (_r(4, 3), _r(4, 3).abs()),
        _call(),
        (Arg("mean", "coordinates", (), -1), Arg("covariance_diagonal", "coordinates", (), -1)),
        bad_calls=lambda: [
            ("covariance_diagonal", lambda m: m(_r(4, 3), -_r(4, 3).abs())),
            ("covariance_diagonal", lambda m: m(_r(4, 3), _r(5, 3).abs())),
        ],
    ),
    "kplanes": Spec(
        {"in_dim": 4, "features": 3, "resolution": 4, "scales": (1, 2), "time_resolution": 3},
        lambda: (torch.rand(5, 4, generator=torch.Generator().manual_seed(4)),),
        _call(),
        (Arg("x", "coordinates", (), -1),),
        bad_calls=lambda: [("x", lambda m: m(torch.full((2, 4), -0.5)))],
    ),
    "triplane": Spec(
        {"features": 3, "resolution": 4},
        lambda: (torch.rand(5, 3, generator=torch.Generator().manual_seed(5)),),
        _call(),
        (Arg("x", "coordinates", (), -1),),
        bad_calls=lambda: [("x", lambda m: m(torch.full((2, 3), 1.5)))],
    ),
    "flow_index": Spec(
        {"num_flows": 4, "dim": 8},
        lambda: (torch.tensor([0, 3, 1]),),
        _call(),
        (Arg("flow_index", "steps"),),
        bad_calls=lambda: [
            ("flow_index", lambda m: m(torch.tensor([4]))),
            ("flow_index", lambda m: m(torch.tensor([-1]))),
        ],
    ),
    "noise_level": Spec(
        {"dim": 8}, lambda: (torch.tensor([0.1, 0.5, 0.9]),), _call(), (Arg("noise_level", "steps"),)
    ),
    "timestep": Spec(
        {"dim": 8, "hidden": 16, "num_steps": 100},
        lambda: (torch.tensor([0, 5, 99]),),
        _call(),
        (Arg("t", "steps"),),
        bad_calls=lambda: [("t", lambda m: m(torch.tensor([0, 101]))), ("t", lambda m: m(-1))],
    ),
    "hyper_conv": Spec(
        {"in_channels": 1, "out_channels": 2, "kernel_size": 3, "num_frequencies": 2, "hidden": 4},
        lambda: (_r(2, 1, 5, 6),),
        _call(),
        (Arg("x", "activation", (4,), 1),),
    ),
}


def spec(name: str) -> Spec:
    """The entry for ``name``; a registered name without one raises :class:`MissingExample`."""
    get(name)  # unknown names raise ValueError listing the known ones
    if name not in SPECS:
        raise MissingExample(
            f"no example for the registered encoding {name!r}: add an entry to posenc.testing.examples.SPECS "
            "(tiny constructor arguments, valid inputs, the forward callable)"
        )
    return SPECS[name]


def build(name: str, *, device: torch.device | str | None = None, **overrides: Any) -> nn.Module:
    """The encoding ``name`` built with its example's arguments (``overrides`` win)."""
    kwargs = {**spec(name).kwargs, **overrides}
    if device is not None:
        kwargs["device"] = device
    return get(name).cls(**kwargs)


def example(name: str, *, device: torch.device | str | None = None) -> Example:
    """``(module, inputs, forward)`` for the encoding ``name``: ``forward(module, *inputs)`` runs it."""
    s = spec(name)
    return Example(build(name, device=device), s.inputs(), s.forward)
