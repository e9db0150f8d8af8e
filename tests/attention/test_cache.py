"""Ragged decoding: left-padded prompts of different lengths, decoded with the key/value cache,
give each row's outputs of a full pass over that row alone, for every causal encoding."""

import pytest
import torch

from posenc.attention import KVCache
from posenc.core.positions import Positions
from posenc.experiments.common import sequence_encodings
from posenc.models import Transformer

CAUSAL = sequence_encodings(causal=True)


@pytest.mark.parametrize("name", CAUSAL)
def test_ragged_cached_decoding_equals_each_row_alone(name):
    torch.manual_seed(0)
    net = Transformer(30, 16, 2, 2, position=name, causal=True).eval()
    if net.position.packing_unsupported is not None:
        # it mixes neighbouring tokens outside attention, so padding would reach real tokens: refused
        with pytest.raises(ValueError, match="cannot run on padded rows"):
            net(torch.ones(2, 3, dtype=torch.long), key_padding_mask=torch.ones(2, 3, dtype=torch.bool))
        return
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, 30, (1, n), generator=gen) for n in (5, 3)]  # prompt + 2 decoded each
    prompts = [r[:, :-2] for r in rows]
    width = max(p.shape[1] for p in prompts)
    # left padding: the shorter prompt starts later
    batch = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        batch[i, width - p.shape[1] :], mask[i, width - p.shape[1] :] = p[0], True
    with torch.no_grad():
        cache = net.new_cache()
        steps = [net(batch, key_padding_mask=mask, cache=cache)[:, -1]]
        for t in (-2, -1):
            step = torch.stack([r[0, t] for r in rows]).unsqueeze(1)
            steps.append(net(step, cache=cache)[:, -1])
        for i, r in enumerate(rows):
            full = net(r)[0]
            got = torch.stack([s[i] for s in steps])
            torch.testing.assert_close(got, full[-3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"depth": 0}, ValueError, "depth"),
        ({"depth": -1}, ValueError, "depth"),
        ({"depth": "2"}, TypeError, "depth"),
        ({"depth": 2, "keys": [None]}, ValueError, "keys"),
        ({"depth": 1, "keys": (None,), "values": (None,)}, TypeError, "keys"),
        ({"depth": 1, "keys": [torch.zeros(1, 2, 3, 4)], "values": [None]}, ValueError, "values"),
        ({"depth": 1, "keys": [torch.zeros(1, 2, 3, 4)], "values": [torch.zeros(1, 2, 3, 4)]}, ValueError, "positions"),
        ({"depth": 1, "keys": [torch.zeros(2, 3, 4)], "values": [torch.zeros(2, 3, 4)]}, ValueError, r"keys\[0\]"),
        ({"depth": 1, "positions": 3}, TypeError, "positions"),
        ({"depth": 1, "key_mask": torch.ones(1, 0)}, ValueError, "key_mask"),
        ({"depth": 1, "lengths": torch.ones(2)}, ValueError, "lengths"),
    ],
)
def test_cache_checks_its_arguments(kwargs, error, name):
    # a negative depth built an empty cache that failed with an IndexError at the first step; keys
    # without positions decoded at position 0 again
    with pytest.raises(error, match=name):
        KVCache(**kwargs)


def test_a_filled_cache_can_be_built():
    k = torch.zeros(1, 2, 3, 4)
    cache = KVCache(1, keys=[k], values=[k], positions=Positions(3), key_mask=torch.ones(1, 3, dtype=torch.bool))
    assert cache.length == 3
