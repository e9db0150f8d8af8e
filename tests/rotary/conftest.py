"""``fusion_on_and_off``: runs a test with the fused RoPE kernel forced on and with fusion off."""

from __future__ import annotations

import pytest

from posenc.rotary.fused import FUSED_ENV


@pytest.fixture(params=["1", "0"], ids=["fused", "eager"])
def fusion_on_and_off(request, monkeypatch):
    monkeypatch.setenv(FUSED_ENV, request.param)
    return request.param == "1"

