"""The base class of every registered encoding: the boundary checks it shares, and that the registry adds none."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import posenc
from posenc.core import registry
from posenc.core.base import EncodingModule


class Scaled(EncodingModule):
    """A tiny encoding with one parameter: ``forward(x, *, positions)``."""

    def __init__(self, *, dtype: torch.dtype | None = None, device=None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor) -> torch.Tensor:
        return x * self.scale + positions[:, None]


@pytest.mark.parametrize("name", [info.name for info in posenc.available()])
def test_every_registered_encoding_shares_the_boundary_checks(name):
    assert issubclass(posenc.get(name).cls, EncodingModule)


@pytest.mark.parametrize("bad", [torch.int64, torch.bool, "float32"])
def test_dtype_keyword_is_checked_before_the_constructor_runs(bad):
    with pytest.raises((ValueError, TypeError), match="`dtype`"):
        Scaled(dtype=bad)
    assert Scaled(dtype=torch.float64).scale.dtype == torch.float64


@pytest.mark.parametrize("index", [0, 1])
def test_tensor_on_another_device_is_named(index):
    module = Scaled()
    inputs = [torch.ones(2, 3), torch.arange(2.0)]
    inputs[index] = inputs[index].to("meta")
    with pytest.raises(ValueError, match=f"`{('x', 'positions')[index]}` is on meta but the encoding is on cpu"):
        module(inputs[0], positions=inputs[1])


def test_meta_module_with_meta_inputs_runs():
    module = Scaled(device="meta")
    assert module(torch.ones(2, 3, device="meta"), positions=torch.arange(2.0, device="meta")).device.type == "meta"


def test_device_check_is_skipped_when_compiled():
    module = Scaled()
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    x, p = torch.randn(2, 3), torch.arange(2.0)
    torch.testing.assert_close(compiled(x, positions=p), module(x, positions=p))


def test_register_records_metadata_and_leaves_the_class_alone(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    init, forward = Scaled.__dict__["__init__"], Scaled.__dict__["forward"]
    monkeypatch.setattr(Scaled, "registry_name", "")
    cls = registry.register("scaled_test", family="input", paper="none")(Scaled)
    assert cls is Scaled and Scaled.__dict__["__init__"] is init and Scaled.__dict__["forward"] is forward
    assert registry.get("scaled_test").cls is Scaled and Scaled.registry_name == "scaled_test"
