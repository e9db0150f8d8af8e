"""Interleaved timing: every implementation of a case runs once per round, in turn, so that machine
noise (other processes, frequency changes) hits all of them alike; medians and ratios are reported."""

from __future__ import annotations

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
    """Median seconds per call of each function, measured round-robin."""
    device = device or torch.device("cpu")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


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
