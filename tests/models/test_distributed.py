"""DistributedDataParallel on 2 CPU processes (gloo): the reference Transformer with one encoding of
each family trains 3 steps; parameters agree across ranks and with single-process training on the
concatenated batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from posenc.models import Transformer

ENCODINGS = ["none", "sinusoidal", "rope", "t5"]  # one per family: none, input, rotary, bias
STEPS, BATCH, LENGTH = 3, 4, 8


def _model(position: str) -> Transformer:
    torch.manual_seed(0)
    return Transformer(16, 16, 1, 2, position=position, causal=True)


def _data() -> torch.Tensor:
    return torch.randint(0, 16, (STEPS, 2 * BATCH, LENGTH + 1), generator=torch.Generator().manual_seed(1))


def _train(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for tokens in batches:
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def _worker(rank: int, world: int, out: str) -> None:
    # file rendezvous: no TCP port to pick (a freed port can be taken by another process meanwhile)
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    results = {}
    data = _data()
    for position in ENCODINGS:
        ddp = DistributedDataParallel(_model(position))
        # each rank takes its own half of every batch
        _train(ddp, [batch[rank * BATCH : (rank + 1) * BATCH] for batch in data])
        results[position] = {k: v.detach().clone() for k, v in ddp.module.state_dict().items()}
    torch.save(results, f"{out}/rank{rank}.pt")
    # no rank tears its connections down while the other may still be using them
    dist.barrier()
    dist.destroy_process_group()
    # the results are on disk: skip interpreter teardown, where a still-joinable C++ thread of the
    # gloo/OpenMP runtime once aborted a worker ("terminate called without an active exception")
    os._exit(0)


@pytest.mark.timeout(120)
def test_ddp_two_processes_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    data = _data()
    for position in ENCODINGS:
        single = _model(position)
        _train(single, list(data))
        for name, value in single.state_dict().items():
            torch.testing.assert_close(ranks[0][position][name], ranks[1][position][name], atol=0, rtol=0)
            torch.testing.assert_close(ranks[0][position][name], value, atol=1e-5, rtol=1e-4)
