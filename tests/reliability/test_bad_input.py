"""Bad input, fuzzed, for every registered encoding: constructors and forwards fail loudly and by name.

What "named" means: the error is a ``ValueError`` or ``TypeError`` whose message contains the
argument's name in backticks (the house style of ``posenc.core.validation``): `` `dim` ``, or an
element of it such as `` `grid[1]` ``. Never an ``IndexError``/``RuntimeError`` from inside torch,
never a silent result.

Policy for non-finite values: arguments saying *where* (positions, coordinates, steps, noise levels)
reject NaN/inf with ``ValueError`` in eager mode; activations that an encoding merely adds to or
transforms (``x``, ``q``, ``k``) may carry NaN through, as any layer does.

Constructor cases are derived from each class's signature (ints, floats, flags, choices, grids, sizes,
``dtype``); forward cases from its example's argument descriptions (``posenc.testing.examples``).
"""

from __future__ import annotations

import inspect
import math
import re
import typing

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import posenc
from posenc.testing import SPECS, MissingExample, build, example, spec

NAMES = [info.name for info in posenc.available()]
FUZZ = settings(max_examples=6)

#: int sizes for which 0 is meaningful (no prefix tokens, no frequencies, ...).
ZERO_OK = {"num_prefix_tokens", "after_block", "num_frequencies", "upsamples", "seed"}
#: ints for which any value is meaningful.
ANY_INT = {"seed"}
#: floats that must be > 0.
POSITIVE = {"base", "sigma"}
#: flags still converted with bool() rather than checked (a string such as "no" reads as True).
UNCHECKED_FLAGS: set[tuple[str, str]] = set()


def assert_names(excinfo: pytest.ExceptionInfo, name: str) -> None:
    message = str(excinfo.value)
    assert re.search(rf"`{re.escape(name)}(`|\[)", message), f"message does not name `{name}`: {message!r}"


def raises_named(name: str, fn, *args, **kwargs) -> None:
    with pytest.raises((ValueError, TypeError)) as excinfo:
        out = fn(*args, **kwargs)
        pytest.fail(f"accepted bad `{name}` silently, returned {type(out).__name__}")
    assert_names(excinfo, name)


# --- every registered encoding has an example ------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_encoding_has_an_example(name):
    try:
        spec(name)
    except MissingExample as err:
        pytest.fail(str(err))


def test_missing_example_is_reported(monkeypatch):
    monkeypatch.delitem(SPECS, "sinusoidal")
    with pytest.raises(MissingExample, match="no example for the registered encoding 'sinusoidal'"):
        example("sinusoidal")


def test_unknown_encoding_name_is_named():
    raises_named("name", posenc.create, "sinusoidal_typo", dim=8)


# --- constructors ----------------------------------------------------------------------------------


def _constructor_params(name: str) -> list[tuple[str, str, inspect.Parameter]]:
    """``(param, kind, parameter)`` for each fuzzable constructor argument of ``name``."""
    cls = posenc.core.registry.get(name).cls
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to their strings
        hints = {}
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        ann = hints.get(p.name, p.annotation)
        text = ann if isinstance(ann, str) else repr(ann)
        if typing.get_origin(ann) is typing.Literal:
            kind = "choice"
        elif p.name == "dtype":
            kind = "dtype"
        elif ann is bool or text in ("bool", "<class 'bool'>"):
            if (cls.registry_name, p.name) in UNCHECKED_FLAGS:
                continue
            kind = "flag"
        elif p.name == "device":
            continue
        elif "tuple" in text and "int" in text and "Sequence" not in text:
            kind = "grid"
        elif "Sequence" in text:
            kind = "sizes"
        elif ann is int or text in ("int", "<class 'int'>") or ann == (int | None):
            kind = "int"
        elif ann is float or text in ("float", "<class 'float'>") or ann == (float | None):
            kind = "float"
        else:
            continue
        out.append((p.name, kind, p))
    return out


CONSTRUCTOR_CASES = [(name, param, kind) for name in NAMES for param, kind, _ in _constructor_params(name)]
CONSTRUCTOR_IDS = [f"{n}-{p}" for n, p, _ in CONSTRUCTOR_CASES]


def _bad_values(name: str, param: str, kind: str) -> st.SearchStrategy:
    wrong_type = st.sampled_from(["3", [3], object()])
    if kind == "int":
        bad = [wrong_type, st.floats(0.5, 100.5).filter(lambda v: v != int(v))]
        if param not in ANY_INT:
            bad.append(st.integers(-(10**6), -1 if param in ZERO_OK else 0))
        if param in spec(name).even:
            bad.append(st.integers(0, 50).map(lambda v: 2 * v + 1))
        return st.one_of(*bad)
    if kind == "float":
        bad = [wrong_type, st.sampled_from([math.nan, math.inf, -math.inf])]
        if param in POSITIVE:
            bad.append(st.floats(-1e6, 0.0))
        return st.one_of(*bad)
    if kind == "flag":  # True or False only: bool("no") would be True
        return st.sampled_from(["no", "False", 0, 1, None])
    if kind == "choice":
        return st.one_of(st.text(min_size=1, max_size=8).map(lambda s: "bogus_" + s), st.sampled_from([3, None]))
    if kind == "grid":
        return st.one_of(
            st.integers(-5, 0),
            st.tuples(st.integers(1, 4), st.integers(-5, 0)),
            st.sampled_from([(3,), "3", (3, 3, 3)]),
        )
    if kind == "sizes":
        return st.one_of(st.just(()), st.just([(0, 4)]), st.just([(4, -1)]), st.just(["4"]))
    if kind == "dtype":
        return st.sampled_from([torch.int64, torch.bool, torch.complex64, "float32", 32])
    raise AssertionError(kind)


@pytest.mark.parametrize(("name", "param", "kind"), CONSTRUCTOR_CASES, ids=CONSTRUCTOR_IDS)
def test_constructor_rejects_bad_argument_by_name(name, param, kind, cases):
    @FUZZ
    @given(value=_bad_values(name, param, kind))
    def check(value):
        cases["bad input (constructors)"] += 1
        raises_named(param, build, name, **{param: value})

    check()


# --- forwards --------------------------------------------------------------------------------------

FORWARD_CASES = [(name, i) for name in NAMES for i in range(len(SPECS[name].args) if name in SPECS else 0)]
FORWARD_IDS = [f"{n}-{SPECS[n].args[i].name}" for n, i in FORWARD_CASES]


def _mutations(arg, value) -> list[str]:
    muts = ["not a tensor"]
    if arg.role == "count":
        return ["not an int", "float", "negative"]
    if arg.ranks:
        muts += ["rank up"] + (["rank down"] if min(arg.ranks) > 0 else [])
    muts.append("on meta")
    if arg.role == "activation":
        muts += ["integer dtype"]
        if arg.feature_axis is not None:
            muts.append("feature size")
    else:
        muts += ["non-finite"]
        if arg.role == "positions":
            muts += ["half precision", "bool"]
    return muts


def _mutate(mutation: str, arg, value, data):
    if mutation == "not an int":
        return data.draw(st.sampled_from(["5", [5], None]), label="value")
    if mutation == "float":
        return value + 0.5
    if mutation == "negative":
        return data.draw(st.integers(-(10**6), -1), label="value")
    if mutation == "not a tensor":
        return data.draw(st.sampled_from(["x", object(), [[1, 2]]]), label="value")
    if mutation == "rank up":
        extra = data.draw(st.integers(1, 3), label="extra")
        while value.ndim <= max(arg.ranks):
            value = value.unsqueeze(0).expand(extra, *value.shape)
        return value
    if mutation == "rank down":
        while value.ndim >= min(arg.ranks):
            value = value.flatten(0, 1) if value.ndim > 1 else value[0]
        return value
    if mutation == "on meta":
        return value.to("meta")
    if mutation == "integer dtype":
        return value.round().to(data.draw(st.sampled_from([torch.int64, torch.int32, torch.bool]), label="dtype"))
    if mutation == "feature size":
        return _grow(value, arg.feature_axis, data)
    if mutation == "non-finite":
        bad = value.double().clone()
        idx = data.draw(st.integers(0, bad.numel() - 1), label="index")
        bad.view(-1)[idx] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label="value")
        return bad
    if mutation == "half precision":
        return value.to(data.draw(st.sampled_from([torch.float16, torch.bfloat16]), label="dtype"))
    if mutation == "bool":
        return value > 0
    raise AssertionError(mutation)


def _grow(value, axis: int, data):
    """``value`` with ``1 .. 3`` more entries along ``axis`` (the width the module fixes)."""
    extra = data.draw(st.integers(1, 3), label="extra")
    pad = value.narrow(axis, 0, 1).expand(*[extra if a == axis % value.ndim else s for a, s in enumerate(value.shape)])
    return torch.cat([value, pad], dim=axis)


@pytest.mark.parametrize(("name", "index"), FORWARD_CASES, ids=FORWARD_IDS)
def test_forward_rejects_bad_argument_by_name(name, index, cases):
    s = spec(name)
    arg = s.args[index]
    module, inputs, forward = example(name)
    muts = _mutations(arg, inputs[index])

    @settings(max_examples=4 * len(muts))
    @given(data=st.data())
    def check(data):
        mutation = data.draw(st.sampled_from(muts), label="mutation")
        bad = list(inputs)
        bad[index] = _mutate(mutation, arg, inputs[index], data)
        cases["bad input (forwards)"] += 1
        raises_named(arg.name, forward, module, *bad)

    check()


@pytest.mark.parametrize("name", [n for n in NAMES if n in SPECS and SPECS[n].bad_calls()])
def test_explicit_bad_calls(name, cases):
    module = build(name)
    for argname, call in spec(name).bad_calls():
        cases["bad input (explicit)"] += 1
        raises_named(argname, call, module)


@pytest.mark.parametrize("name", NAMES)
def test_float64_activations_work_or_are_refused_by_name(name, cases):
    """A dtype other than the module's: computed correctly (finite, same shape) or refused by name."""
    module, inputs, forward = example(name)
    s = spec(name)
    ref = forward(module, *inputs)
    for i, arg in enumerate(s.args):
        if arg.role != "activation":
            continue
        cases["bad input (dtype mismatch)"] += 1
        bad = list(inputs)
        bad[i] = inputs[i].double()
        try:
            out = forward(module, *bad)
        except (ValueError, TypeError) as err:
            assert re.search(rf"`{re.escape(arg.name)}`", str(err)), str(err)
            continue
        out, ref_t = (out[0], ref[0]) if isinstance(out, tuple) else (out, ref)
        assert out.shape == ref_t.shape
        torch.testing.assert_close(out.float(), ref_t.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_activations_work_or_are_refused_by_name(name, dtype, cases):
    """Half-precision activations into a float32 module: close to the float32 result, or refused by name."""
    module, inputs, forward = example(name)
    ref = forward(module, *inputs)
    for i, arg in enumerate(spec(name).args):
        if arg.role != "activation":
            continue
        cases["bad input (half activations)"] += 1
        bad = list(inputs)
        bad[i] = inputs[i].to(dtype)
        try:
            out = forward(module, *bad)
        except (ValueError, TypeError) as err:
            assert re.search(rf"`{re.escape(arg.name)}`", str(err)), str(err)
            continue
        out, ref_t = (out[0], ref[0]) if isinstance(out, tuple) else (out, ref)
        assert out.shape == ref_t.shape
        assert bool(torch.isfinite(out).all()), "finite half-precision input gave a non-finite result"
        torch.testing.assert_close(out.double(), ref_t.double(), atol=0.1, rtol=0.1)


BATCHED = [
    (name, i, j)
    for name in NAMES
    if name in SPECS
    for i, x in enumerate(SPECS[name].args)
    if x.role == "activation" and x.ranks and min(x.ranks) >= 3
    for j, p in enumerate(SPECS[name].args)
    if p.role == "positions" and 2 in p.ranks
]


@pytest.mark.parametrize(("name", "xi", "pi"), BATCHED, ids=[f"{n}-{SPECS[n].args[j].name}" for n, _, j in BATCHED])
def test_mismatched_batch_is_refused_by_name(name, xi, pi, cases):
    """Positions ``(b', n)`` for an input of batch ``b != b'`` (and ``b' != 1``): refused, naming either."""
    module, inputs, forward = example(name)
    x, p = inputs[xi], inputs[pi]
    rows = p if p.ndim == 2 else p.unsqueeze(0)
    for extra in (1, 2):
        cases["bad input (mismatched batch)"] += 1
        bad = list(inputs)
        bad[pi] = rows[:1].expand(x.shape[0] + extra, -1)
        names = (SPECS[name].args[xi].name, SPECS[name].args[pi].name)
        with pytest.raises((ValueError, TypeError)) as excinfo:
            forward(module, *bad)
            pytest.fail("accepted positions of another batch size silently")
        assert any(re.search(rf"`{n}`", str(excinfo.value)) for n in names), str(excinfo.value)


# --- sizes past memory -----------------------------------------------------------------------------

#: constructor arguments that size a learned or cached table, each refused by name when the table
#: cannot fit in memory (it used to reach the allocator)
TABLE_SIZES = [
    ("learned", "max_len", 10**12),
    ("learned", "dim", 10**12),
    ("vit_learned", "num_prefix_tokens", 10**12),
    ("vit_learned", "grid", 10**6),
    ("rel_bias_2d", "heads", 10**12),
    ("alibi", "heads", 10**12),
    ("kerple", "heads", 10**12),
    ("t5", "heads", 10**12),
    ("cope", "max_positions", 10**12),
    ("fox", "heads", 10**12),
    ("flow_index", "num_flows", 10**12),
    ("constant_input", "size", 10**12),
    ("constant_input", "channels", 10**12),
    ("rope", "cache_len", 10**12),
    ("sinusoidal", "cache_len", 10**12),
    ("rope_2d", "num_prefix_tokens", 10**12),
    ("rope_learned", "heads", 10**12),
    ("rope_mixed", "heads", 10**12),
    ("nerf", "num_frequencies", 10**12),
    ("fourier_features", "num_features", 10**12),
    ("hash_grid", "features_per_level", 10**12),
    ("kplanes", "resolution", 10**12),
    ("triplane", "features", 10**12),
]


#: constructor arguments that size an encoding's layers (their widths, kernels and counts), each refused
#: by name before the layers are built when they cannot fit in memory (they used to reach the allocator,
#: or, for layer counts, loop for minutes building modules)
LAYER_SIZES = [
    (name, param, 10**12)
    for name, params in {
        "fire": ("hidden", "heads"),
        "cpb": ("hidden", "heads"),
        "cpb_2d": ("hidden", "heads"),
        "dynamic_bias": ("hidden", "heads", "depth"),
        "shaw": ("head_dim", "max_distance"),
        "transformer_xl": ("dim", "heads", "head_dim"),
        "complex_order": ("dim",),
        "conv_context": ("dim", "kernel_size", "layers"),
        "wav2vec2_conv": ("dim", "kernel_size"),
        "coordconv": ("in_channels", "out_channels", "kernel_size"),
        "peg": ("dim",),
        "hanet": ("in_channels", "out_channels", "rows"),
        "spatial_broadcast": ("latent_dim", "out_channels", "hidden", "layers"),
        "timestep": ("dim", "hidden"),
        "hyper_conv": ("in_channels", "out_channels", "num_frequencies", "hidden"),
    }.items()
    for param in params
]


@pytest.mark.parametrize(
    ("name", "param", "value"), TABLE_SIZES + LAYER_SIZES, ids=[f"{n}-{p}" for n, p, _ in TABLE_SIZES + LAYER_SIZES]
)
def test_a_table_larger_than_memory_is_refused_by_name(name, param, value):
    with pytest.raises(ValueError) as excinfo:
        build(name, **{param: value})
    assert_names(excinfo, param)
