"""Tables built lazily under ``torch.inference_mode()`` stay ordinary tensors (posenc/core/tables.py):
an evaluation pass that grows an encoding's cache does not break the training step after it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from posenc.core.registry import get, transformer_encodings
from posenc.core.tables import building_tables
from posenc.models import Transformer
from posenc.rotary import RotaryPositionEncoding, angle_cache, apply_rope, apply_rope_qk


def test_building_tables_makes_ordinary_tensors_inside_inference_mode():
    with torch.inference_mode():
        with building_tables():
            t = torch.arange(4.0)
        assert torch.is_inference_mode_enabled()  # restored after the block
        inside = torch.arange(4.0)
    assert not t.is_inference() and inside.is_inference()
    with torch.enable_grad(), building_tables():
        assert not torch.is_grad_enabled()


@pytest.mark.parametrize("name", transformer_encodings())
def test_training_after_an_inference_pass_that_grew_the_tables(name):
    causal = get(name).cls.supports_causal
    torch.manual_seed(0)
    model = Transformer(64, 32, 1, 2, position=name, causal=causal)
    with torch.inference_mode():
        model.eval()
        model(torch.randint(0, 64, (2, 300)))  # past every default cache length below 512
    model.train()
    for n in (300, 16):
        tokens = torch.randint(0, 64, (2, n + 1))
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("fused", [False, True])
def test_functional_rope_after_an_inference_pass(fused):
    angle_cache.clear()
    positions = torch.arange(40)
    with torch.inference_mode():
        apply_rope(torch.randn(1, 2, 40, 8), positions, fused=fused)
        RotaryPositionEncoding(8, cache_len=16)(torch.randn(1, 2, 40, 8))
    q = torch.randn(1, 2, 40, 8, requires_grad=True)
    k = torch.randn(1, 2, 40, 8, requires_grad=True)
    (apply_rope(q, positions, fused=fused).sum() + sum(t.sum() for t in apply_rope_qk(q, k, positions, fused=fused))).backward()
    assert q.grad is not None and k.grad is not None
