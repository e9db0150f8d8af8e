"""The meta device for every registered encoding: a forward on meta tensors infers the output shapes,
and ``posenc.core.meta.materialize`` gives the values a normal build with the same seed has."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.core.meta import initialize, materialize
from posenc.testing import build, example

NAMES = [info.name for info in posenc.available()]


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _tensors(item)] if isinstance(out, (tuple, list)) else []


def _to_meta(value):
    return value.to("meta") if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("name", NAMES)
def test_forward_on_meta_infers_the_shapes(name, cases):
    module, inputs, forward = example(name, device="meta")
    assert all(t.is_meta for t in [*module.parameters(), *module.buffers()])
    with torch.no_grad():
        got = _tensors(forward(module, *map(_to_meta, inputs)))
        want = _tensors(forward(build(name), *inputs))
    cases["meta"] += 1
    assert got and len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.is_meta and (g.shape, g.dtype) == (w.shape, w.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_materialize_equals_a_normal_build_with_the_same_seed(name, cases):
    torch.manual_seed(7)
    normal, inputs, forward = example(name)
    meta = build(name, device="meta")
    torch.manual_seed(7)
    built = materialize(meta, "cpu")
    cases["meta"] += 1
    want = {**dict(normal.named_parameters()), **dict(normal.named_buffers())}
    got = {**dict(built.named_parameters()), **dict(built.named_buffers())}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key].device.type == "cpu", key
        torch.testing.assert_close(got[key], value, atol=0, rtol=0, msg=f"{name}: {key}")
    normal.eval(), built.eval()
    with torch.no_grad():
        for g, w in zip(_tensors(forward(built, *inputs)), _tensors(forward(normal, *inputs)), strict=True):
            torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_initialize_redraws_children_before_their_parent():
    # T5's table: nn.Embedding's own draw, then T5's narrower one, exactly as the constructor does
    torch.manual_seed(3)
    t5 = posenc.create("t5", heads=2)
    with torch.no_grad():
        t5.bias.weight.fill_(float("nan"))
    torch.manual_seed(3)
    initialize(t5)
    torch.manual_seed(3)
    torch.testing.assert_close(t5.bias.weight, posenc.create("t5", heads=2).bias.weight, atol=0, rtol=0)
    assert t5.bias.weight.std() < 0.1  # T5's std=0.02, not the embedding's std=1
