"""The atlas builds each sequence encoding from its example in posenc.testing.examples, the one the
tests and ``posenc check`` use (the reference model filling in its own sizes)."""

import pytest
import torch

from posenc.analysis.measure import Reference, build_sequence_model, sequence_length
from posenc.core.registry import get, transformer_encodings
from posenc.testing.examples import build, spec

REF = Reference()
MODEL_SIZES = {"dim": REF.dim, "heads": REF.heads, "head_dim": REF.dim // REF.heads}


def atlas_model(name):
    info, kwargs = get(name), spec(name).kwargs
    return build_sequence_model(info.cls, REF, causal=False, example=kwargs) or build_sequence_model(
        info.cls, REF, causal=True, example=kwargs
    )


@pytest.mark.parametrize("name", transformer_encodings())
def test_the_atlas_model_holds_the_example_encoding_at_the_model_sizes(name):
    model = atlas_model(name)
    assert model is not None, name
    encoding = model.position
    # the same encoding as the example built with the model's sizes (and the atlas's 8 x 8 patch grid)
    declared = type(encoding).model_arguments
    overrides = {k: v for k, v in MODEL_SIZES.items() if k in declared}
    overrides |= {"causal": model.causal} if "causal" in declared else {}
    overrides |= {"grid": 8} if "grid" in spec(name).kwargs else {}
    torch.manual_seed(REF.seed)
    want = build(name, **overrides)
    assert repr(encoding) == repr(want)
    got_state, want_state = encoding.state_dict(), want.state_dict()
    assert got_state.keys() == want_state.keys()
    for key in got_state:
        torch.testing.assert_close(got_state[key], want_state[key], rtol=0, atol=0)
    # and it covers the lengths the atlas draws and evaluates
    tokens = torch.zeros(1, sequence_length(encoding, REF.table_len), dtype=torch.long)
    with torch.no_grad():
        assert torch.isfinite(model(tokens)).all()


def test_the_example_arguments_win_over_the_paper_defaults():
    # T5's example has 8 buckets over 16 positions (the paper: 32 over 128); Shaw's clips at 3
    assert atlas_model("t5").position.num_buckets == spec("t5").kwargs["num_buckets"] != 32
    assert atlas_model("shaw").position.max_distance == spec("shaw").kwargs["max_distance"]
