"""The segment-recurrent Transformer-XL language model."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls

from posenc.relative import TransformerXL


def _model(mem_len):
    torch.manual_seed(0)
    return TransformerXL(16, 16, 2, 2, mem_len=mem_len).eval()


def test_segments_with_full_memory_equal_one_causal_pass():
    model = _model(mem_len=64)
    tokens = torch.randint(0, 16, (2, 23))
    with torch.no_grad():
        full, _ = model(tokens)
        segmented = model.forward_segments(tokens, segment_len=5)
    torch.testing.assert_close(segmented, full, atol=1e-5, rtol=1e-5)


def test_memory_is_used_and_bounded():
    tokens = torch.randint(0, 16, (1, 20))
    with torch.no_grad():
        no_memory = _model(mem_len=0).forward_segments(tokens, segment_len=5)
        short = _model(mem_len=3).forward_segments(tokens, segment_len=5)
        _, memory = _model(mem_len=3)(tokens[:, :5])
    assert not torch.allclose(no_memory[:, 5:], short[:, 5:])
    torch.testing.assert_close(no_memory[:, :5], short[:, :5])  # the first segment has no memory
    assert [tuple(mem.shape) for mem in memory] == [(1, 3, 16)] * 2


@pytest.mark.parametrize("mem_len", [0, 4, 50])
def test_causal_and_finite(mem_len):
    model = _model(mem_len)
    tokens = torch.randint(0, 16, (2, 18))
    changed = tokens.clone()
    changed[:, 11:] = (changed[:, 11:] + 1) % 16
    with torch.no_grad():
        a = model.forward_segments(tokens, segment_len=4)
        b = model.forward_segments(changed, segment_len=4)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a[:, :11], b[:, :11], atol=0, rtol=0)
    assert not torch.allclose(a[:, 11:], b[:, 11:])


def test_no_gradient_through_memory():
    model = _model(mem_len=8).train()
    tokens = torch.randint(0, 16, (2, 6))
    embedded = []
    handle = model.embed.register_forward_hook(lambda mod, inp, out: embedded.append(out))
    _, memory = model(tokens[:, :3])
    logits, _ = model(tokens[:, 3:], memory=memory)
    handle.remove()
    assert all(not mem.requires_grad for mem in memory)
    grads = torch.autograd.grad(logits.sum(), embedded, allow_unused=True)
    assert grads[0] is None  # the first segment's states receive nothing from the second's loss
    assert grads[1] is not None


def test_trains_segment_by_segment():
    torch.manual_seed(0)
    model = TransformerXL(8, 32, 1, 2, mem_len=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        x = torch.randint(0, 8, (16, 12))
        y = torch.roll(x, 1, dims=1)  # repeat the previous token
        memory = None
        for s in (0, 6):
            logits, memory = model(x[:, s : s + 6], memory=memory)
            loss = F.cross_entropy(logits[:, 1:].flatten(0, 1), y[:, s + 1 : s + 6].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert_loss_falls(losses, factor=0.7)


def test_meta_device_and_state_dict():
    model = TransformerXL(10, 8, 1, 2, mem_len=4, device="meta")
    model = model.to_empty(device="cpu")
    other = TransformerXL(10, 8, 1, 2, mem_len=4)
    other.load_state_dict(model.state_dict())
    assert other(torch.randint(0, 10, (1, 3)))[0].shape == (1, 3, 10)


def test_bad_input():
    with pytest.raises(ValueError, match="mem_len"):
        TransformerXL(10, 8, 1, 2, mem_len=-1)
    with pytest.raises(ValueError, match="dim"):
        TransformerXL(10, 9, 1, 2)
    model = TransformerXL(10, 8, 2, 2)
    with pytest.raises(ValueError, match="segment_len"):
        model.forward_segments(torch.zeros(1, 4, dtype=torch.long), segment_len=0)
    with pytest.raises(ValueError, match="memory"):
        model(torch.zeros(1, 4, dtype=torch.long), memory=[torch.zeros(1, 2, 8)])
    with pytest.raises(ValueError, match="tokens"):
        model(torch.zeros(4, dtype=torch.long))


def test_memory_shorter_than_mem_len_is_kept_whole():
    # 8 states seen and mem_len=10: the memory keeps all 8 (a negative slice start kept the last 2)
    model = _model(mem_len=10).double()
    tokens = torch.randint(0, 16, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model(tokens)
        _, memory = model(tokens[:, 4:8], memory=model(tokens[:, :4])[1])
        segmented = model.forward_segments(tokens, segment_len=4)
    assert [mem.shape[1] for mem in memory] == [8, 8]
    torch.testing.assert_close(segmented, full, atol=1e-12, rtol=0)


def test_bad_token_ids_are_refused_by_name():
    # meta ids into the CPU embedding read arbitrary memory and returned finite logits; out-of-range
    # and float ids failed inside nn.Embedding without naming `tokens`
    model = _model(mem_len=4)
    bad = [
        (torch.zeros(1, 3, dtype=torch.long, device="meta"), "`tokens` is on meta but the model is on cpu"),
        (torch.full((1, 3), 16), r"`tokens` must be ids in \[0, 16\).*\[16, 16\]"),
        (-torch.ones(1, 3, dtype=torch.long), r"`tokens` must be ids in \[0, 16\)"),
        (torch.zeros(1, 3), "`tokens` must be integer token ids, int64 or int32"),
    ]
    for tokens, said in bad:
        with pytest.raises(ValueError, match=said):
            model(tokens)
    assert model(torch.zeros(1, 3, dtype=torch.int32))[0].shape == (1, 3, 16)
