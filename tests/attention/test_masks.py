"""The window's semantics, pinned: causal, each query's last ``window`` keys (``0 <= i - j < window``);
bidirectional, the keys less than ``window`` away (``|i - j| < window``); with a key/value cache the
query's own key index is ``i + m - n``. Every backend follows the same mask."""

import pytest
import torch

from posenc.attention import BACKENDS, MaskSpec, attend, attention_mask
from posenc.attention.blocked import row_blocks
from posenc.core.positions import Positions
from posenc.core.registry import create


@pytest.fixture(autouse=True)
def unfused_flex(monkeypatch):
    monkeypatch.setattr("posenc.attention.flex.COMPILE", False)


def written_out(n, m, window, causal):
    """The visible (query, key) pairs, one by one."""
    visible = torch.zeros(n, m, dtype=torch.bool)
    for i in range(n):
        at = i + m - n  # the query's own key index
        for j in range(m):
            distance = at - j
            visible[i, j] = (0 <= distance < window) if causal else (abs(distance) < window)
    return visible


@pytest.mark.parametrize("n,m", [(7, 7), (4, 9), (1, 6)])
@pytest.mark.parametrize("window", [1, 2, 3, 20])
@pytest.mark.parametrize("causal", [False, True])
def test_dense_and_block_masks_follow_the_stated_semantics(n, m, window, causal):
    spec = MaskSpec(causal=causal, window=window)
    want = written_out(n, m, window, causal)
    assert torch.equal(spec.dense(n, m, "cpu").view(n, m), want)
    # the blocked kernel's row blocks read only their key range, and mask inside it the same way
    for s, e, k0, k1 in row_blocks(n, m, spec, training=True):
        assert not want[s:e, :k0].any() and not want[s:e, k1:].any()
        if k1 > k0:
            assert torch.equal(spec.block(s, e, k0, k1, n, m, "cpu").view(e - s, k1 - k0), want[s:e, k0:k1])


def test_bidirectional_window_counts_keys_on_both_sides():
    visible = MaskSpec(window=3).dense(9, 9, "cpu").view(9, 9)
    assert visible[4].nonzero().flatten().tolist() == [2, 3, 4, 5, 6]  # 2 * 3 - 1 keys
    causal = MaskSpec(causal=True, window=3).dense(9, 9, "cpu").view(9, 9)
    assert causal[4].nonzero().flatten().tolist() == [2, 3, 4]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "auto"])
@pytest.mark.parametrize("causal", [False, True])
def test_every_backend_attends_within_the_window(backend, causal):
    n, m, window = 5, 8, 2
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, n, 4, generator=gen)
    k, v = (torch.randn(1, 2, m, 4, generator=gen) for _ in range(2))
    none = create("none")
    got = attend(
        q, k, v, position=none, q_positions=Positions(n, offset=m - n), k_positions=Positions(m),
        mask=MaskSpec(causal=causal, window=window), backend=backend,
    )
    logits = (q @ k.transpose(-1, -2)) / 2.0
    logits = logits.masked_fill(~written_out(n, m, window, causal), float("-inf"))
    torch.testing.assert_close(got, logits.softmax(-1) @ v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [2**63 - 1, 2**63, 2**64, 10**30])
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "auto"])
@pytest.mark.parametrize("causal", [False, True])
def test_a_window_wider_than_int64_sees_every_key(backend, causal, window):
    # i + window once wrapped around int64 (hiding every later key of a bidirectional row) or overflowed
    n, m = 5, 8
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, n, 4, generator=gen)
    k, v = (torch.randn(1, 2, m, 4, generator=gen) for _ in range(2))
    alibi = create("alibi", heads=2, causal=causal)
    kwargs = {"position": alibi, "q_positions": Positions(n, offset=m - n), "k_positions": Positions(m), "backend": backend}
    got = attend(q, k, v, mask=MaskSpec(causal=causal, window=window), **kwargs)
    torch.testing.assert_close(got, attend(q, k, v, mask=MaskSpec(causal=causal), **kwargs), atol=1e-5, rtol=1e-5)


def test_window_is_checked_by_the_mask():
    for window, error in ((0, ValueError), (-3, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(error, match="window"):
            MaskSpec(causal=True, window=window)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": -1}, ValueError, "`n`"),
        ({"n": 1.5}, TypeError, "`n`"),
        ({"m": -2}, ValueError, "`m`"),
        ({"n": 5, "m": 3, "causal": True}, ValueError, r"n \(5\) must be at most m \(3\)"),
        ({"key_mask": torch.ones(2, 4, dtype=torch.bool)}, ValueError, r"`key_mask`.*\(b, 5\)"),
        ({"key_mask": torch.ones(2, 5)}, ValueError, "`key_mask`"),
        ({"key_mask": [[True] * 5]}, TypeError, "`key_mask`"),
    ],
)
def test_attention_mask_refuses_bad_sizes_by_name(kwargs, error, match):
    # these failed in torch.arange or view, or (n > m, causal) gave rows that see no key
    args = {"n": 3, "m": 5, "causal": False, "key_mask": None, "device": "cpu", **kwargs}
    with pytest.raises(error, match=match):
        attention_mask(**args)


def test_attention_mask_places_the_queries_last():
    km = torch.tensor([[True, False, True, True, True]])
    got = attention_mask(2, 5, causal=True, key_mask=km, device="cpu")
    want = torch.tensor([[[[True, False, True, True, False], [True, False, True, True, True]]]])
    assert torch.equal(got, want)
    assert attention_mask(0, 0, causal=True, key_mask=None, device="cpu").shape == (1, 1, 0, 0)
