"""Quick self-checks of every registered sequence encoding, behind ``posenc check``.

Each check builds the reference Transformer with the encoding, configured by its example in
:mod:`posenc.testing.examples` (the one the test suites use; the model fills in its own sizes), and
verifies, on a tiny random input:
finite outputs, explicit positions equal to implicit ones, and (for causal-capable encodings)
incremental decoding with the key/value cache equal to one full forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posenc.core.base import PositionEncoding
from posenc.core.registry import SEQUENCE_FAMILIES, transformer_encodings  # noqa: F401


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


def check_one(name: str, *, seed: int = 0) -> CheckResult:
    from posenc.models import Transformer

    torch.manual_seed(seed)
    try:
        model = Transformer(32, 32, 2, 4, position=name, causal=True, **example_arguments(name)).eval()
    except (TypeError, ValueError) as err:  # not a causal sequence encoding
        return CheckResult(name, True, f"skipped: {err}")
    if not isinstance(model.position, PositionEncoding):
        return CheckResult(name, True, "skipped: not a sequence encoding")
    tokens = torch.randint(0, 32, (2, 12))
    with torch.no_grad():
        full = model(tokens)
        explicit = model(tokens, positions=torch.arange(12))
        cache = model.new_cache()
        steps = torch.cat([model(tokens[:, i : i + 1], cache=cache) for i in range(12)], dim=1)
    finite = bool(torch.isfinite(full).all())
    d_explicit = (full - explicit).abs().max().item()
    d_cache = (full - steps).abs().max().item()
    ok = finite and d_explicit < 1e-5 and d_cache < 1e-4
    return CheckResult(name, ok, f"finite={finite} explicit-vs-implicit={d_explicit:.1e} cached-decoding={d_cache:.1e}")


def check_sequence_encodings() -> list[CheckResult]:
    return [check_one(name) for name in transformer_encodings()]
