"""Malformed input, fuzzed, for every public function in ``posenc.functional``.

Each call either gives a correct result or raises ``ValueError``/``TypeError`` whose message names
the argument in backticks (`` `x` ``): never an error from inside torch, never an allocator error,
never a silent wrong result (a NaN from finite input, a changed value when only the dtype changed).
Empty inputs must work; lengths no device can hold must be refused with a ``ValueError`` naming the
length. The calls are derived from ``posenc.testing.functional_examples``; a public function without
an entry there fails :func:`test_every_function_has_a_spec`.
"""

from __future__ import annotations

import inspect
import math
import re
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import posenc.functional as F
from posenc.testing.examples import MissingExample
from posenc.testing.functional_examples import FUNCTIONAL_SPECS, FnArg, functional_spec

NAMES = sorted(F.__all__)
SPECCED = [n for n in NAMES if n in FUNCTIONAL_SPECS]


def _named(err: BaseException, name: str) -> bool:
    return re.search(rf"`{re.escape(name)}(`|\[|\.)", str(err)) is not None


def raises_named(name: str | tuple[str, ...], fn, **kwargs) -> None:
    """``fn(**kwargs)`` raises naming ``name`` (or one of several arguments that must agree)."""
    names = (name,) if isinstance(name, str) else name
    try:
        out = fn(**kwargs)
    except (ValueError, TypeError) as err:
        assert any(_named(err, n) for n in names), f"message does not name {' or '.join(f'`{n}`' for n in names)}: {err!r}"
        return
    pytest.fail(f"accepted bad `{name}` silently, returned {type(out).__name__} {getattr(out, 'shape', '')}")


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [torch.view_as_real(value) if value.is_complex() else value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _finite(kwargs: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for v in kwargs.values() for t in _tensors(v) if t.device.type != "meta")


def works_or_raises_named(name: str, fn, kwargs: dict, ref, *, tol: float | None = None) -> None:
    """A correct result (same shape as ``ref``, finite from finite input, close to ``ref`` within ``tol``)
    or a ``ValueError``/``TypeError`` naming ``name``."""
    try:
        out = fn(**kwargs)
    except (ValueError, TypeError) as err:
        assert _named(err, name), f"message does not name `{name}`: {err!r}"
        return
    outs, refs = _tensors(out), _tensors(ref)
    assert [o.shape for o in outs] == [r.shape for r in refs]
    on_meta = any(t.device.type == "meta" for v in kwargs.values() for t in _tensors(v))
    if on_meta:
        assert all(o.device.type == "meta" for o in outs), "meta input gave a result on another device"
        return
    if _finite(kwargs):
        assert all(bool(torch.isfinite(o).all()) for o in outs), "finite input gave a non-finite result"
    if tol is not None:
        for o, r in zip(outs, refs):
            torch.testing.assert_close(o.double(), r.double(), atol=tol, rtol=tol)


# --- coverage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_function_has_a_spec(name):
    try:
        functional_spec(name)
    except MissingExample as err:
        pytest.fail(str(err))


@pytest.mark.parametrize("name", SPECCED)
def test_valid_call_works(name):
    out = getattr(F, name)(**FUNCTIONAL_SPECS[name].valid())
    assert all(bool(torch.isfinite(o).all()) for o in _tensors(out))


# --- mutations of one argument ----------------------------------------------------------------------

TENSOR_ROLES = {"activation", "weights", "table", "positions", "coordinates", "levels"}
#: roles whose values say *where* (NaN/inf refused) and may not be half precision.
WHERE = {"positions", "levels"}


def _mutations(arg: FnArg, value, others: bool) -> list[str]:
    if arg.role == "int":
        return ["not an int", "float", "negative"]
    if arg.role == "dtype":
        return ["bad dtype", "float64 dtype"]
    muts = ["not a tensor", "bool", "integer", "half", "float64", "on meta"]
    if torch.cuda.is_available() and others:
        muts.append("on cuda")  # the other tensors stay on the CPU
    if arg.ranks:
        muts.append("rank up")
        if min(arg.ranks) > 0:
            muts.append("rank down")
    if arg.role in WHERE or arg.role == "coordinates":
        muts.append("non-finite")
    if arg.role == "levels":
        muts.append("non-finite number")
    if arg.feature_axis is not None:
        muts.append("feature size")
    if arg.batch_axis is not None:
        muts.append("batch size")
    return muts


def _grow(value: torch.Tensor, axis: int, data) -> torch.Tensor:
    extra = data.draw(st.integers(1, 3), label="extra")
    pad = value.narrow(axis, 0, 1).expand(*[extra if a == axis % value.ndim else s for a, s in enumerate(value.shape)])
    return torch.cat([value, pad], dim=axis)


def _mutate(mutation: str, arg: FnArg, value, data):
    """``(bad value, outcome)``: outcome is "raise", "work" (exact) or a tolerance for a dtype change."""
    if mutation == "not an int":
        return data.draw(st.sampled_from(["5", [5], None, 5.0]), label="value"), "raise"
    if mutation == "float":
        return value + 0.5, "raise"
    if mutation == "negative":
        return data.draw(st.integers(-(10**6), -1), label="value"), "raise"
    if mutation == "bad dtype":
        return data.draw(st.sampled_from([torch.int64, torch.int32, torch.bool, torch.complex64, "float32", 32])), "raise"
    if mutation == "float64 dtype":
        return torch.float64, 1e-6
    if mutation == "not a tensor":
        return data.draw(st.sampled_from(["x", object(), [[1, 2]]]), label="value"), "raise"
    if mutation == "bool":
        return value > 0, "work" if arg.role == "scores" else "raise"
    if mutation == "integer":
        dtype = data.draw(st.sampled_from([torch.int64, torch.int32]), label="dtype")
        if arg.role == "scores":
            return value.round().to(dtype), "work"
        if arg.role in WHERE:
            exact = not value.is_floating_point() or bool((value == value.round()).all())
            return value.to(dtype), 1e-6 if exact else "work"
        return value.round().to(dtype), "raise"
    if mutation == "half":
        half = value.to(data.draw(st.sampled_from([torch.float16, torch.bfloat16]), label="dtype"))
        return half, ("raise" if arg.role in WHERE or arg.role == "table" else 0.1)
    if mutation == "float64":
        return value.double(), 1e-5
    if mutation == "on meta":
        return value.to("meta"), "meta"
    if mutation == "on cuda":
        return value.to("cuda"), "raise"
    if mutation == "rank up":
        extra = data.draw(st.integers(2, 3), label="extra")
        while value.ndim <= max(arg.ranks):
            value = value.unsqueeze(0).expand(extra, *value.shape)
        return value, "raise"
    if mutation == "rank down":
        while value.ndim >= min(arg.ranks):
            value = value.flatten(0, 1) if value.ndim > 1 else value[0]
        return value, "raise"
    if mutation == "non-finite":
        bad = value.double().clone()
        idx = data.draw(st.integers(0, bad.numel() - 1), label="index")
        bad.view(-1)[idx] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label="value")
        return bad, "raise"
    if mutation == "non-finite number":
        return data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label="value"), "raise"
    if mutation == "feature size":
        return _grow(value, arg.feature_axis, data), "raise"
    if mutation == "batch size":
        return _grow(value, arg.batch_axis, data), "raise"
    raise AssertionError(mutation)


MUTATION_CASES = [(n, a.name) for n in SPECCED for a in FUNCTIONAL_SPECS[n].args]


@pytest.mark.parametrize(("name", "argname"), MUTATION_CASES, ids=[f"{n}-{a}" for n, a in MUTATION_CASES])
def test_bad_argument_is_refused_by_name_or_handled(name, argname, cases):
    spec = FUNCTIONAL_SPECS[name]
    fn = getattr(F, name)
    arg = next(a for a in spec.args if a.name == argname)
    valid = spec.valid()
    ref = fn(**valid)
    value = valid.get(argname)
    others = any(isinstance(v, torch.Tensor) for k, v in valid.items() if k != argname)
    muts = _mutations(arg, value, others)

    @settings(max_examples=3 * len(muts), deadline=None, database=None, derandomize=True)
    @given(data=st.data())
    def check(data):
        mutation = data.draw(st.sampled_from(muts), label="mutation")
        if value is None and arg.role == "dtype":
            base = torch.float32
        else:
            base = value
        bad, outcome = _mutate(mutation, arg, base, data)
        kwargs = {**valid, argname: bad}
        cases["bad input (functional)"] += 1
        if outcome == "raise" or (outcome == "meta" and others):
            # a disagreement between arguments may be reported under any of them
            agree = mutation in ("feature size", "batch size", "on meta", "on cuda")
            raises_named(tuple(k for k, v in valid.items() if isinstance(v, torch.Tensor)) if agree else argname, fn, **kwargs)
        elif outcome == "meta":
            works_or_raises_named(argname, fn, kwargs, ref)
        else:
            works_or_raises_named(argname, fn, kwargs, ref, tol=None if outcome == "work" else outcome)

    check()


FLAG_CASES = [
    (n, p.name) for n in SPECCED for p in inspect.signature(getattr(F, n)).parameters.values()
    if isinstance(p.default, bool)
]


@pytest.mark.parametrize(("name", "flag"), FLAG_CASES, ids=[f"{n}-{f}" for n, f in FLAG_CASES])
def test_a_flag_that_is_not_a_bool_is_refused_by_name(name, flag, cases):
    """A string such as "no" is truthy: ``interleaved="no"`` once gave the interleaved table silently
    (sinusoidal, t5_relative_bucket, shaw_attention, ... took any value as a flag)."""
    for bad in ("no", None, 1):
        cases["bad input (functional, flag)"] += 1
        raises_named(flag, getattr(F, name), **{**FUNCTIONAL_SPECS[name].valid(), flag: bad})


NUMBER_CASES = [
    (n, p.name) for n in SPECCED for p in inspect.signature(getattr(F, n)).parameters.values()
    if isinstance(p.default, float) and p.name not in FUNCTIONAL_SPECS[n].valid()
]


@pytest.mark.parametrize(("name", "keyword"), NUMBER_CASES, ids=[f"{n}-{k}" for n, k in NUMBER_CASES])
def test_a_non_finite_or_non_numeric_float_keyword_is_refused_by_name(name, keyword, cases):
    """adain(eps=nan) once returned NaN everywhere and eps="1e-5" failed inside torch's addition."""
    for bad in (math.nan, math.inf, "1e-5", None):
        cases["bad input (functional, number)"] += 1
        raises_named(keyword, getattr(F, name), **{**FUNCTIONAL_SPECS[name].valid(), keyword: bad})


# --- explicit bad calls, empty and oversized inputs ---------------------------------------------------


@pytest.mark.parametrize("name", [n for n in SPECCED if FUNCTIONAL_SPECS[n].bad_calls()])
def test_explicit_bad_calls(name, cases):
    for argname, kwargs in FUNCTIONAL_SPECS[name].bad_calls():
        cases["bad input (functional, explicit)"] += 1
        raises_named(argname, getattr(F, name), **kwargs)


@pytest.mark.parametrize("name", [n for n in SPECCED if FUNCTIONAL_SPECS[n].empty is not None])
def test_empty_input_gives_an_empty_result(name):
    out = getattr(F, name)(**FUNCTIONAL_SPECS[name].empty())
    assert all(o.numel() == 0 for o in _tensors(out))


@pytest.mark.parametrize("name", [n for n in SPECCED if FUNCTIONAL_SPECS[n].huge is not None])
def test_oversized_input_is_refused_by_name(name):
    spec = FUNCTIONAL_SPECS[name]
    start = time.perf_counter()
    try:
        getattr(F, name)(**spec.huge())
    except ValueError as err:
        assert _named(err, spec.huge_arg), f"message does not name `{spec.huge_arg}`: {err!r}"
        return
    assert time.perf_counter() - start < 5.0, "an oversized input neither raised nor finished quickly"


def test_a_function_without_a_spec_is_reported(monkeypatch):
    monkeypatch.delitem(FUNCTIONAL_SPECS, "sinusoidal")
    with pytest.raises(MissingExample, match=r"no fuzz spec for posenc\.functional\.sinusoidal"):
        functional_spec("sinusoidal")
