"""Checkpoints for every registered encoding: state_dict round trips, derived caches never saved,
learned tables resized on load only when asked, and construction on the ``meta`` device.
"""

from __future__ import annotations

import inspect
import io

import pytest
import torch

import posenc
from posenc.core.base import DerivedTablesMixin
from posenc.testing import build, example

NAMES = [info.name for info in posenc.available()]


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


def _run(module, inputs, forward):
    module.eval()
    with torch.no_grad():
        return _outputs(forward(module, *inputs))


def _perturbed(module):
    """Move every parameter away from its initial value, so a round trip that loses one shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.linspace(0.1, 0.9, p.numel()).view_as(p))
    return module


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_through_bytes(name, cases):
    torch.manual_seed(1)
    source, inputs, forward = example(name)
    _perturbed(source)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(2)
    target = build(name)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    cases["checkpoints"] += 1
    for got, want in zip(_run(target, inputs, forward), _run(source, inputs, forward), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_derived_caches_are_never_saved(name, cases):
    module = build(name)
    keys = set(module.state_dict())
    saved_kinds = {n for n, _ in module.named_parameters()}
    for prefix, sub in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        for buf_name in sub._non_persistent_buffers_set:
            assert f"{dot}{buf_name}" not in keys
        for buf_name, _ in sub.named_buffers(recurse=False):
            if buf_name not in sub._non_persistent_buffers_set:
                saved_kinds.add(f"{dot}{buf_name}")
        if isinstance(sub, DerivedTablesMixin):
            derived = {n for n, _ in sub.named_buffers(recurse=False)} - {*getattr(sub, "keep_dtype_buffers", ())}
            assert not {f"{dot}{n}" for n in derived} & keys, f"derived tables of {type(sub).__name__} saved"
    cases["checkpoints"] += 1
    assert {k for k in keys if not k.endswith("_extra_state")} <= saved_kinds


@pytest.mark.parametrize("name", NAMES)
def test_meta_build_materialises_to_the_same_outputs(name, cases):
    torch.manual_seed(1)
    reference, inputs, forward = example(name)
    _perturbed(reference)
    if "device" not in inspect.signature(posenc.core.registry.get(name).cls.__init__).parameters:
        pytest.skip("no device argument: the encoding holds no tensors")
    meta = build(name, device="meta")
    assert all(t.device.type == "meta" for t in [*meta.parameters(), *meta.buffers()])
    # The documented sequence: to_empty (which rebuilds derived tables on the new device), then load.
    meta.to_empty(device="cpu")
    if hasattr(meta, "reset_parameters"):
        meta.reset_parameters()
    meta.load_state_dict(reference.state_dict())
    cases["checkpoints"] += 1
    for got, want in zip(_run(meta, inputs, forward), _run(reference, inputs, forward), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


# --- learned tables at other lengths and grids ------------------------------------------------------


def test_learned_1d_table_resizes_on_load_only_when_asked():
    source = posenc.create("learned", dim=8, max_len=16)
    grown = posenc.create("learned", dim=8, max_len=32, resize_on_load=True)
    grown.load_state_dict(source.state_dict())
    assert grown.weight.shape[0] == 32
    # the first and last rows of a linearly interpolated table are the source's end rows
    torch.testing.assert_close(grown.weight[0], source.weight[0])
    torch.testing.assert_close(grown.weight[-1], source.weight[-1])
    strict = posenc.create("learned", dim=8, max_len=32)
    with pytest.raises(ValueError, match="max_len") as excinfo:
        strict.load_state_dict(source.state_dict())
    assert "resize_on_load=True" in str(excinfo.value)


@pytest.mark.parametrize("name", ["vit_learned", "rel_bias_2d"])
def test_learned_grid_tables_resize_on_load_only_when_asked(name):
    kw = {"dim": 8} if name == "vit_learned" else {"heads": 2}
    source = posenc.create(name, grid=3, **kw)
    grown = posenc.create(name, grid=(4, 5), resize_on_load=True, **kw)
    grown.load_state_dict(source.state_dict())
    out = grown(torch.randn(1, 20, 8)) if name == "vit_learned" else grown()
    assert torch.isfinite(out).all()
    strict = posenc.create(name, grid=(4, 5), resize_on_load=False, **kw)
    with pytest.raises(ValueError, match="resize_on_load=True"):
        strict.load_state_dict(source.state_dict())
