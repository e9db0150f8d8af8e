"""FlexAttention on a GPU: forward and backward equal the eager reference, and learned tables (T5,
Shaw) receive their gradients through the score_mod. Skipped without a CUDA device."""

import pytest
import torch

from posenc.models import Transformer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", ["alibi", "t5", "shaw", "transformer_xl", "rope", "none"])
def test_flex_training_equals_eager_on_cuda(name):
    torch.manual_seed(0)
    # Shaw's value term cannot enter FlexAttention (attention="flex" refuses it): its key term alone
    kwargs = {"values": False} if name == "shaw" else {}
    flex = Transformer(64, 64, 2, 4, position=name, causal=True, attention="flex", **kwargs).cuda()
    eager = Transformer(64, 64, 2, 4, position=name, causal=True, attention="eager", **kwargs).cuda()
    eager.load_state_dict(flex.state_dict())
    tokens = torch.randint(0, 64, (2, 130), device="cuda")
    document_ids = torch.cat([torch.zeros(2, 70), torch.ones(2, 60)], dim=1).long().cuda()
    for net in (flex, eager):
        net(tokens, document_ids=document_ids).square().mean().backward()
    for (key, p), q in zip(flex.named_parameters(), eager.parameters()):
        assert p.grad is not None, key
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3, msg=lambda m, key=key: f"{key}: {m}")
