"""The attention layer of the reference models: its constructor's checks."""

from __future__ import annotations

import pytest

from posenc.models import Attention


@pytest.mark.parametrize("causal", ["no", 1, None])
def test_causal_is_refused_by_name_when_built(causal):
    # it was stored as given and refused only at the first forward (by the attention mask)
    with pytest.raises(TypeError, match="`causal` must be True or False"):
        Attention(8, 2, causal=causal)
