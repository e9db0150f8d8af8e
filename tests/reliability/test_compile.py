"""torch.compile of every registered encoding's forward, against eager.

Each example (``posenc.testing.examples``) is compiled with ``fullgraph=True`` unless it is listed in
:data:`GRAPH_BREAKS` with the reason; the README's Guarantees section carries the same table.
"""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.testing import build, example

NAMES = [info.name for info in posenc.available()]

#: Encodings whose forward cannot be captured in one graph, and why.
GRAPH_BREAKS: dict[str, str] = {
    "flow_index": "the step index is checked against the learned table's range on the host (no row past it)",
    "timestep": "with num_steps, steps are checked to lie in [0, num_steps] on the host",
}


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", NAMES)
def test_forward_compiles_and_matches_eager(name, cases):
    torch._dynamo.reset()
    module, inputs, forward = example(name)
    module.eval()
    compiled = torch.compile(lambda *a: forward(module, *a), fullgraph=name not in GRAPH_BREAKS)
    with torch.no_grad():
        want = forward(module, *inputs)
        got = compiled(*inputs)
    cases["torch.compile"] += 1
    for g, w in zip(_outputs(got), _outputs(want), strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_timestep_without_num_steps_is_one_graph(cases):
    torch._dynamo.reset()
    module = posenc.create("timestep", dim=8, hidden=16).eval()
    compiled = torch.compile(module, fullgraph=True)
    t = torch.tensor([0, 7, 999_999])
    with torch.no_grad():
        torch.testing.assert_close(compiled(t), module(t), atol=1e-5, rtol=1e-5)
    cases["torch.compile"] += 1


@pytest.mark.parametrize("name", ["alibi", "t5", "kerple", "sandwich", "dynamic_bias", "cpb", "fire"])
def test_bias_called_on_its_own_keeps_compiling_when_n_changes(name, cases):
    # bias(n) formed the memory check's message, an f-string of n, before checking: once n changed,
    # dynamo traced it as a symbol and fullgraph=True failed ('BUILD_STRING type error')
    torch._dynamo.reset()
    module = build(name).eval()
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        for n in (5, 7, 9):
            torch.testing.assert_close(compiled(n), module(n), atol=0, rtol=0)
    cases["torch.compile"] += 1
