"""Interleaved timing: every implementation of a case runs once per round, so that machine noise (other
processes, frequency changes) hits all of them alike; medians and ratios are reported. The order is
shuffled each round (from a fixed seed): what one call leaves behind (a heap just returned to the
system, whose next large allocation page-faults; caches filled with other data) then falls on every
implementation alike instead of always on the one that follows it."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], *, rounds: int = 15, warmup: int = 2, device: torch.device | None = None
) -> dict[str, float]:
    """Median wall-clock seconds per call of each function, measured round-robin."""
    return {name: wall for name, (wall, _) in interleaved_times(fns, rounds=rounds, warmup=warmup, device=device).items()}


def interleaved_times(
    fns: dict[str, Callable[[], object]], *, rounds: int = 15, warmup: int = 2, device: torch.device | None = None
) -> dict[str, tuple[float, float]]:
    """Median ``(wall-clock, process CPU)`` seconds per call of each function, measured round-robin in
    a shuffled order.

    The CPU time (``time.process_time``: every thread of this process, on the CPU) leaves out the time
    the process waited for a core, so on a shared machine its ratios are the steadier ones; with one
    thread it is the work done. On CUDA it counts only the host's share (launches, synchronisation).
    """
    device = device or torch.device("cpu")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    walls: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            fn = fns[name]
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            cpus[name].append(time.process_time() - start_cpu)
            walls[name].append(time.perf_counter() - start)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in fns}


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | None = None) -> int:
    """Peak bytes allocated by ``fn`` beyond what was live before it (CUDA allocator stats, or the
    CPU profiler's memory accounting)."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live, peak = 0, 0
    events = sorted(
        (e for e in prof.events() if getattr(e, "self_cpu_memory_usage", 0)), key=lambda e: e.time_range.start
    )
    for event in events:  # self allocations (+) and frees (-) in time order
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak
