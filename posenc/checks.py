"""Quick self-checks of every registered sequence encoding, behind ``posenc check``.

Each check builds the reference Transformer with the encoding, configured by its example in
:mod:`posenc.testing.examples` (the one the test suites use; the model fills in its own sizes), and
verifies, on a tiny random input:
finite outputs, explicit positions equal to implicit ones, and (for causal-capable encodings)
incremental decoding with the key/value cache equal to one full forward pass. An encoding the
Transformer takes that cannot be built from its example fails the check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posenc.core.registry import SEQUENCE_FAMILIES, get, transformer_encodings  # noqa: F401


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str

    def render(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<16} {self.detail}"


#: The constructor arguments ``Transformer(position=name)`` fills in from its own sizes.
TRANSFORMER_ARGUMENTS = ("dim", "heads", "head_dim", "causal")


def example_arguments(name: str) -> dict:
    """The constructor arguments of ``name``'s example, less the ones the Transformer fills in."""
    from posenc.testing.examples import spec

    return {k: v for k, v in spec(name).kwargs.items() if k not in TRANSFORMER_ARGUMENTS}


def check_one(name: str, *, seed: int = 0, label: str | None = None, cached: bool = True, **options) -> CheckResult:
    """``options``: keyword arguments of the encoding (a RoPE scaling, say), shown under ``label``;
    ``cached=False`` for encodings whose tables follow the sequence length (dynamic NTK, LongRoPE):
    decoding from a cache then sees other lengths than one full pass, by design (as transformers)."""
    from posenc.models import Transformer

    torch.manual_seed(seed)
    name_shown = label or name
    causal = get(name).cls.supports_causal  # encoder-only encodings: no cache to compare
    try:
        model = Transformer(32, 32, 2, 4, position=name, causal=causal, **{**example_arguments(name), **options}).eval()
    except (TypeError, ValueError) as err:  # an encoding the model takes must build from its example
        return CheckResult(name_shown, False, f"cannot be built: {err}")
    tokens = torch.randint(0, 32, (2, 12))
    with torch.no_grad():
        full = model(tokens)
        explicit = model(tokens, positions=torch.arange(12))
        if causal:
            cache = model.new_cache()
            steps = torch.cat([model(tokens[:, i : i + 1], cache=cache) for i in range(12)], dim=1)
    finite = bool(torch.isfinite(full).all())
    d_explicit = (full - explicit).abs().max().item()
    d_cache = (full - steps).abs().max().item() if causal else 0.0
    ok = finite and d_explicit < 1e-5 and (d_cache < 1e-4 or not cached)
    decoding = (f"{d_cache:.1e}" if cached else "follows the length (not compared)") if causal else "encoder only (no cache)"
    return CheckResult(name_shown, ok, f"finite={finite} explicit-vs-implicit={d_explicit:.1e} cached-decoding={decoding}")


#: The RoPE variants checked beside the registry's entries: (label, encoding, options, cached decoding = full pass).
#: Sizes fit check_one's model (head_dim 8: 4 pairs) and its 12 tokens (trained length 4 or 8).
ROPE_VARIANTS = (
    ("rope linear", "rope", {"scaling": "linear", "factor": 2.0}, True),
    ("rope ntk", "rope", {"scaling": "ntk", "factor": 2.0}, True),
    ("rope dynamic_ntk", "rope", {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 4}, False),
    ("rope dyn. grow", "rope", {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 4,
                                "dynamic_update": "grow_only"}, False),
    ("rope yarn", "rope", {"scaling": "yarn", "factor": 4.0, "original_max_len": 4}, True),
    ("rope yarn dsv3", "rope", {"scaling": "yarn", "factor": 4.0, "original_max_len": 4, "mscale": 0.7,
                                "mscale_all_dim": 0.7, "truncate": False}, True),
    ("rope llama3", "rope", {"scaling": "llama3", "factor": 8.0, "original_max_len": 8}, True),
    ("rope longrope", "rope", {"scaling": "longrope", "original_max_len": 8, "max_len": 16,
                               "short_factor": [1.0, 1.1, 1.2, 1.3], "long_factor": [1.0, 2.0, 4.0, 8.0]}, False),
    ("rope p=0.5", "rope", {"p": 0.5}, True),
)


def check_rope_variants() -> list[CheckResult]:
    """The scalings and options of ``rope`` that the registry holds under one name."""
    return [check_one(name, label=label, cached=cached, **options) for label, name, options, cached in ROPE_VARIANTS]


def check_sequence_encodings() -> list[CheckResult]:
    names = transformer_encodings()
    return [check_one(name) for name in names] + (check_rope_variants() if "rope" in names else [])
