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


def _join(rank: int, world: int, out: str) -> None:
    # file rendezvous: no TCP port to pick (a freed port can be taken by another process meanwhile)
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)


def _save_and_leave(results: dict, rank: int, out: str) -> None:
    torch.save(results, f"{out}/rank{rank}.pt")
    # no rank tears its connections down while the other may still be using them
    dist.barrier()
    dist.destroy_process_group()
    # the results are on disk: skip interpreter teardown, where a still-joinable C++ thread of the
    # gloo/OpenMP runtime once aborted a worker ("terminate called without an active exception")
    os._exit(0)


def _worker(rank: int, world: int, out: str) -> None:
    _join(rank, world, out)
    results = {}
    data = _data()
    for position in ENCODINGS:
        ddp = DistributedDataParallel(_model(position))
        # each rank takes its own half of every batch
        _train(ddp, [batch[rank * BATCH : (rank + 1) * BATCH] for batch in data])
        results[position] = {k: v.detach().clone() for k, v in ddp.module.state_dict().items()}
    _save_and_leave(results, rank, out)


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


# --- ranks whose sequences differ in length ---------------------------------------------------------

#: per step, the sequence length of rank 0 and of rank 1: rank 1 grows its derived tables first
RAGGED = [(8, 300), (8, 300)]


def _ragged_batch(step: int, rank: int) -> torch.Tensor:
    return torch.randint(0, 16, (2, RAGGED[step][rank]), generator=torch.Generator().manual_seed(10 * step + rank))


def _ragged_worker(rank: int, world: int, out: str, positions: list[str]) -> None:
    _join(rank, world, out)
    grads = {}
    for position in positions:
        ddp = DistributedDataParallel(_model(position))
        for step in range(len(RAGGED)):  # gradients accumulate: the sum of the steps' rank averages
            ddp(_ragged_batch(step, rank)).pow(2).mean().backward()
        grads[position] = {k: p.grad.clone() for k, p in ddp.module.named_parameters()}
    _save_and_leave(grads, rank, out)


@pytest.mark.timeout(120)
def test_ddp_ranks_with_sequences_of_different_lengths(tmp_path):
    # DDP broadcasts rank 0's buffers before every forward; a derived table that rank 1 had grown for
    # its longer sequence was overwritten by rank 0's shorter one, and rank 1 went on rotating with it
    positions = ["rope", "t5"]
    mp.spawn(_ragged_worker, args=(2, str(tmp_path), positions), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for position in positions:
        single = _model(position)
        for step in range(len(RAGGED)):
            for rank in range(2):
                (single(_ragged_batch(step, rank)).pow(2).mean() / 2).backward()
        for name, p in single.named_parameters():
            for r in range(2):
                torch.testing.assert_close(ranks[r][position][name], p.grad, atol=1e-6, rtol=1e-4, msg=f"{position} {name}")
