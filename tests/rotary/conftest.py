"""``fusion_on_and_off``: runs a test with the fused RoPE kernel forced on and with fusion off."""

from __future__ import annotations

import pytest

from posenc.rotary.fused import FUSED_ENV


@pytest.fixture(params=["1", "0"], ids=["fused", "eager"])
def fusion_on_and_off(request, monkeypatch):
    monkeypatch.setenv(FUSED_ENV, request.param)
    return request.param == "1"



@pytest.fixture
def inductor_on_cpu(monkeypatch):
    """The inductor kernel on CPU instead of the C++ function (for tests of inductor's kernel itself)."""
    from posenc.rotary.fused import CPU_KERNEL_ENV

    monkeypatch.setenv(CPU_KERNEL_ENV, "inductor")
