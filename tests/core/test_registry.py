"""The registry, and one contract test over every registered sequence encoding."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

import posenc
from posenc import functional as PF
from posenc.checks import SEQUENCE_FAMILIES
from posenc.core import registry
from posenc.core.base import PositionEncoding
from posenc.core.registry import MODEL_ARGUMENTS, create_for_model
from posenc.models import Transformer

FOUNDATION = {"none": "none", "sinusoidal": "input", "learned": "input", "rope": "rotary", "alibi": "bias", "t5": "bias"}
SEQUENCE = [info.name for info in posenc.available() if info.family in SEQUENCE_FAMILIES]


def test_available_lists_the_foundation_encodings_with_family_and_paper():
    infos = {info.name: info for info in posenc.available()}
    for name, family in FOUNDATION.items():
        assert infos[name].family == family
        assert "arXiv:" in infos[name].paper
    assert posenc.available("bias") and all(i.family == "bias" for i in posenc.available("bias"))


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="known encodings: .*sinusoidal"):
        posenc.create("sinusoid")


def test_create_builds_the_registered_class():
    assert type(posenc.create("rope", head_dim=8)).__name__ == "RotaryPositionEncoding"
    assert posenc.get("alibi").cls is type(posenc.create("alibi", heads=2))


def test_public_functional_signatures_are_stable():
    sig = {name: str(inspect.signature(getattr(PF, name))) for name in ("sinusoidal", "apply_rope", "alibi_slopes", "t5_relative_bucket")}
    assert sig["sinusoidal"].startswith("(positions: 'torch.Tensor | int', dim: 'int', *, base: 'float' = 10000.0, interleaved: 'bool' = True")  # keywords may be added after these
    assert sig["apply_rope"].startswith("(x: 'torch.Tensor', positions: 'torch.Tensor', *, base: 'float' = 10000.0, interleaved: 'bool' = False")  # keywords may be added after these
    assert sig["alibi_slopes"].startswith("(num_heads: 'int'")
    assert sig["t5_relative_bucket"].startswith(
        "(relative_position: 'torch.Tensor', *, bidirectional: 'bool' = True, num_buckets: 'int' = 32, max_distance: 'int' = 128)"
    )


@pytest.mark.parametrize("name", SEQUENCE)
def test_contract_every_sequence_encoding(name):
    """Shape, dtype, device, state_dict round trip and meta construction through the reference model."""
    torch.manual_seed(0)
    model = Transformer(16, 32, 1, 4, position=name)
    assert isinstance(model.position, PositionEncoding)
    tokens = torch.randint(0, 16, (2, 6))
    out = model.eval()(tokens)
    assert out.shape == (2, 6, 16) and out.dtype == torch.float32 and torch.isfinite(out).all()
    twin = Transformer(16, 32, 1, 4, position=name)
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(twin.eval()(tokens), out)
    with torch.device("meta"):
        meta = Transformer(16, 32, 1, 4, position=name)
    meta = meta.to_empty(device="cpu")
    meta.load_state_dict(model.state_dict())
    torch.testing.assert_close(meta.eval()(tokens), out)
    half = Transformer(16, 32, 1, 4, position=name).to(torch.bfloat16).eval()
    assert half(tokens).dtype == torch.bfloat16


@pytest.mark.parametrize("name", [info.name for info in posenc.available()])
def test_declared_model_arguments_match_the_constructor(name):
    """``model_arguments`` is every model-filled argument the constructor takes, and nothing else."""
    cls = posenc.get(name).cls
    params = inspect.signature(cls.__init__).parameters
    declared = cls.model_arguments
    assert len(set(declared)) == len(declared), declared
    assert set(declared) <= set(MODEL_ARGUMENTS), f"not a model argument: {set(declared) - set(MODEL_ARGUMENTS)}"
    assert set(declared) == {p for p in MODEL_ARGUMENTS if p in params}


def test_create_for_model_fills_declared_arguments_and_explicit_ones_win():
    model_args = {"dim": 64, "heads": 4, "head_dim": 16, "causal": True, "grid": (3, 3)}
    alibi = create_for_model("alibi", model_args=model_args)  # takes heads and causal, not dim
    assert alibi.slopes.shape[0] == 4 and alibi.causal
    rope = create_for_model("rope", model_args=model_args, head_dim=8)
    assert rope.head_dim == 8


@pytest.mark.parametrize("name", [info.name for info in posenc.available()])
def test_family_is_the_package_folder(name):
    """The family is stated once, by where the file lives: ``posenc/<family>/`` (``posenc/none.py``)."""
    path = Path(inspect.getfile(posenc.get(name).cls))
    folder = path.stem if path.parent.name == "posenc" else path.parent.name
    assert path.parent.name == "posenc" or path.parent.parent.name == "posenc", path
    assert posenc.get(name).family == folder
    assert name in [info.name for info in posenc.available(folder)]


def test_family_is_given_only_outside_the_package(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    inside = type("Inside", (PositionEncoding,), {"__module__": "posenc.bias.example"})
    with pytest.raises(ValueError, match="`family`='input' given for Inside, whose family is its package folder"):
        registry.register("inside", family="input", paper="-")(inside)
    assert registry.register("inside", paper="-")(inside) is inside and registry.get("inside").family == "bias"
    outside = type("Outside", (PositionEncoding,), {"__module__": "my_project.encodings"})
    with pytest.raises(ValueError, match="`family` must name how Outside enters a model"):
        registry.register("outside", paper="-")(outside)
    registry.register("outside", family="bias", paper="-")(outside)
    assert [info.name for info in registry.available("bias")] == ["inside", "outside"]


def test_an_unknown_family_is_refused_with_the_families():
    # an empty list read as "this family has no encodings"
    with pytest.raises(ValueError, match=r"unknown family 'biass' for `family` \(did you mean 'bias'\?\); families: .*rotary"):
        posenc.available("biass")


def test_the_registry_lists_families_in_the_documented_order():
    # posenc/__init__.py imports the family packages in this order and each registers as it is imported;
    # the atlas, the comparison table and `posenc list` show encodings in this order (an import sorter
    # reordering those imports would change it)
    families = []
    for info in posenc.available():
        if info.family not in families:
            families.append(info.family)
    assert families == [
        "none", "input", "rotary", "bias", "relative", "complex", "context", "spatial", "vision", "coordinate",
        "step", "hyper",
    ]
    names = [info.name for info in posenc.available()]
    assert names[:4] == ["none", "learned", "sinusoidal", "rope"]
