"""torch.compile(fullgraph=True) of the reference model with each foundation encoding, against eager."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.models import Transformer


@pytest.mark.parametrize("position", ["none", "sinusoidal", "learned", "rope", "alibi", "t5"])
def test_compiled_model_matches_eager(position):
    torch._dynamo.reset()
    model = Transformer(16, 32, 1, 4, position=position, causal=True).eval()
    compiled = torch.compile(model, fullgraph=True)
    tokens = torch.randint(0, 16, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens), model(tokens), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(compiled(tokens, positions=torch.arange(3, 10)), model(tokens, positions=torch.arange(3, 10)), atol=1e-5, rtol=1e-5)


def test_dynamic_ntk_compiles_without_host_sync():
    torch._dynamo.reset()
    rope = posenc.create("rope", head_dim=16, scaling="dynamic_ntk", factor=2.0, original_max_len=8)
    x, p = torch.randn(1, 2, 20, 16), torch.arange(20)
    explicit = torch.compile(lambda x, p: rope(x, positions=p), fullgraph=True)
    torch.testing.assert_close(explicit(x, p), rope(x, positions=p))
    implicit = torch.compile(lambda x: rope(x, offset=3), fullgraph=True)
    torch.testing.assert_close(implicit(x), rope(x, offset=3))


@pytest.mark.parametrize(("position", "attention"), [("alibi", "sdpa"), ("kerple", "eager"), ("t5", "blocked")])
def test_dynamic_compile_does_not_recompile_for_each_length(position, attention):
    # dynamo alone (backend="eager"): the guards decide recompilation, inductor adds nothing to that
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = Transformer(16, 16, 1, 2, position=position, causal=True, attention=attention).eval()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    lengths = (5, 9, 13, 70)  # 70: past one block of the blocked kernel
    with torch.no_grad():
        model(torch.randint(0, 16, (2, max(lengths))))  # the encoding's tables grown to the longest first
        for n in lengths:
            tokens = torch.randint(0, 16, (2, n))
            torch.testing.assert_close(compiled(tokens), model(tokens), atol=1e-5, rtol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
