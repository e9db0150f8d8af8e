"""Ragged decoding: left-padded prompts of different lengths, decoded with the key/value cache,
give each row's outputs of a full pass over that row alone, for every causal encoding."""

import pytest
import torch

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
