"""Packed sequences: a packed batch gives each document's outputs as if it ran alone, for every
sequence encoding in the registry; encodings that cannot be packed say why."""

import pytest
import torch

import posenc
from posenc.core.positions import document_runs
from posenc.experiments.common import sequence_encodings
from posenc.models import Transformer

SEQUENCE = sequence_encodings()
CAUSAL = sequence_encodings(causal=True)
LENGTHS = (3, 4, 2)


def _model(name, causal, attention="auto"):
    torch.manual_seed(0)
    return Transformer(40, 16, 2, 2, position=name, causal=causal, attention=attention)


def _packable(name, causal):
    return _model(name, causal).position.packing_unsupported is None


def test_positions_from_documents():
    ids = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    want = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    assert torch.equal(posenc.positions_from_documents(ids), want)
    assert torch.equal(posenc.positions_from_documents(ids[0]), want[0])
    # a document id that comes back later is a new document (runs, not ids, delimit documents)
    assert posenc.positions_from_documents(torch.tensor([1, 1, 2, 1])).tolist() == [0, 1, 0, 0]
    assert document_runs(torch.tensor([[7, 7, 3, 7, 7], [0, 0, 0, 0, 0]])).tolist() == [[0, 0, 1, 2, 2], [0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="document_ids"):
        posenc.positions_from_documents(torch.zeros(4))
    with pytest.raises(ValueError, match="document_ids"):
        posenc.positions_from_documents(torch.zeros(1, 2, 3, dtype=torch.long))


@pytest.mark.parametrize("backend", ["auto", "eager", "sdpa", "flex"])
@pytest.mark.parametrize("name", SEQUENCE)
def test_packed_batch_equals_each_document_alone(name, backend, monkeypatch):
    monkeypatch.setattr("posenc.attention.flex.COMPILE", False)
    causal = name in CAUSAL
    if not _packable(name, causal):
        pytest.skip("not packable (tested below)")
    net = _model(name, causal, backend)
    if backend in ("sdpa", "flex") and "value" in net.position.hooks:
        pytest.skip("value term: attention='sdpa'/'flex' refuse it (tests/attention/test_backends.py)")
    gen = torch.Generator().manual_seed(1)
    docs = [torch.randint(0, 40, (1, n), generator=gen) for n in LENGTHS]
    # the third document reuses the first one's id: runs, not ids, delimit documents
    ids = torch.cat([torch.full((1, n), i % 2) for i, n in enumerate(LENGTHS)], dim=1)
    with torch.no_grad():
        packed = net(torch.cat(docs, dim=1), document_ids=ids)
        alone = torch.cat([net(doc) for doc in docs], dim=1)
        cu = net(torch.cat(docs, dim=1), cu_seqlens=torch.tensor([0, 3, 7, 9]))
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cu, packed)


@pytest.mark.parametrize("name", [n for n in SEQUENCE if not _packable(n, n in CAUSAL)])
def test_unpackable_encodings_say_why(name):
    net = _model(name, name in CAUSAL)
    with pytest.raises(ValueError, match="packed"):
        net(torch.zeros(1, 4, dtype=torch.long), document_ids=torch.tensor([[0, 0, 1, 1]]))


def test_bad_document_ids():
    net = _model("alibi", True)
    x = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="document_ids"):
        net(x, document_ids=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="document_ids"):
        net(x, document_ids=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="cu_seqlens"):
        net(x, cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        net(x[:1], cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="cache"):
        net(x, document_ids=torch.zeros(2, 4, dtype=torch.long), cache=net.new_cache())
    with pytest.raises(TypeError, match="cu_seqlens"):
        net(x[:1], cu_seqlens=[0, 2, 4])
    with pytest.raises(ValueError, match="`cu_seqlens` is on meta"):
        net(x[:1], cu_seqlens=torch.tensor([0, 2, 4], device="meta"))


def test_cu_seqlens_compile_without_reading_their_values():
    torch.manual_seed(0)
    net = _model("alibi", True)
    tokens = torch.randint(0, 5, (1, 6))
    cu_seqlens = torch.tensor([0, 2, 5, 6])
    compiled = torch.compile(net, fullgraph=True)
    torch.testing.assert_close(compiled(tokens, cu_seqlens=cu_seqlens), net(tokens, cu_seqlens=cu_seqlens))
    torch.testing.assert_close(net(tokens, cu_seqlens=cu_seqlens),
                               net(tokens, document_ids=torch.tensor([[0, 0, 1, 1, 1, 2]])))
