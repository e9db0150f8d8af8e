"""The list of cases at full and quick sizes, and the table they print."""

from __future__ import annotations

import platform
from collections.abc import Callable
from functools import partial

import torch

from posenc.bench.cases import (
    Case,
    Row,
    bias_cases,
    flex_cpu_case,
    flex_training_case,
    hash_grid_cases,
    hash_grid_memory_cases,
    long_context_case,
    rope_cos_sin_case,
    shaw_case,
    sinusoidal_case,
    training_step_case,
    transformer_xl_case,
)
from posenc.bench.mrope import mrope_case
from posenc.bench.rope_cases import rope_backward_case, rope_case
from posenc.core.registry import available
from posenc.rotary import cpu_kernel
from posenc.rotary.fused import compile_seconds

#: Sequence encodings timed in a full training step (those registered; relative ones when present).
TRAINING_ENCODINGS = ("sinusoidal", "learned", "rope", "alibi", "t5", "shaw", "transformer_xl")
#: RoPE scalings whose cos/sin construction is timed against transformers'.
ROPE_SCALINGS = ("llama3", "longrope", "yarn")
_DTYPES = (torch.float32, torch.bfloat16)
#: Encodings timed in one causal attention layer at a long context (b1 h8 d64), on the blocked kernel.
LONG_CONTEXT = ("alibi", "t5", "shaw", "transformer_xl")
#: Encodings whose score_mod compiled FlexAttention runs on CPU: timed against the blocked kernel for
#: CPU inference (prompts and decoding steps; the measurement behind ``attention="auto"`` on CPU).
FLEX_CPU = ("alibi", "t5", "shaw", "kerple")
#: issue 14's GPU rows: training through FlexAttention against SDPA with a bias tensor
FLEX_TRAINING = ("alibi", "t5", "shaw")


class NoSuchCase(ValueError):
    """``only`` matched no case name (the message lists them)."""


#: A zero-argument function building one or more cases (with their inputs).
CaseBuilder = Callable[[], list[Case]]


def _one(make_case: Callable[..., Case], *args, **kwargs) -> CaseBuilder:
    return lambda: [make_case(*args, **kwargs)]


def _many(make_cases: Callable[..., list[Case]], *args, **kwargs) -> CaseBuilder:
    return partial(make_cases, *args, **kwargs)


def suite(*, quick: bool = False, device: torch.device | str = "cpu") -> list[CaseBuilder]:
    """Every case at full or quick size, as builders: a case allocates its inputs only when built, so
    a run holds one case's tensors at a time."""
    device = torch.device(device)
    registered = {info.name for info in available()}
    if quick:
        cases = _rope_cases((1, 4, 256, 64), device)
        cases += [_one(rope_cos_sin_case, kind, 1, 256, 64, device, dt) for kind in ROPE_SCALINGS for dt in _DTYPES]
        cases += [_one(sinusoidal_case, (256,), 64, device), _one(sinusoidal_case, (16, 16), 64, device), _one(sinusoidal_case, (4, 8, 8), 48, device)]
        cases += [_many(bias_cases, 4, 256, device)]
        cases += [_one(shaw_case, 128, device=device)] if "shaw" in registered else []
        cases += [_one(transformer_xl_case, 128, device=device)] if "transformer_xl" in registered else []
        cases += [_one(long_context_case, name, 256, device=device) for name in LONG_CONTEXT if name in registered]
        cases += [_many(hash_grid_cases, 2**12, levels=8, log2_table=14, device=device)] if "hash_grid" in registered else []
        memory = [(2**12, 4), (2**12, 8), (2**13, 8)]
        cases += [_many(hash_grid_memory_cases, memory, device=device)] if "hash_grid" in registered else []
        train = {"batch": 2, "n": 32, "dim": 32, "depth": 1, "heads": 2, "device": device}
    else:
        # GPU: the size of a large model's attention (32 heads of 128); CPU: the size of the goals
        cases = _rope_cases((4, 32, 4096, 128) if device.type == "cuda" else (4, 8, 2048, 64), device)
        cases += [_one(rope_cos_sin_case, kind, 4, 2048, 128, device, dt) for kind in ROPE_SCALINGS for dt in _DTYPES]
        cases += [
            _one(sinusoidal_case, (2048,), 256, device),
            _one(sinusoidal_case, (64, 64), 256, device),
            _one(sinusoidal_case, (16, 32, 32), 192, device),
        ]
        cases += [_many(bias_cases, 8, 2048, device)]
        cases += [_one(shaw_case, n, device=device) for n in (512, 1024, 2048, 4096)] if "shaw" in registered else []
        lengths = (512, 1024, 2048, 4096)
        cases += [_one(transformer_xl_case, n, device=device) for n in lengths] if "transformer_xl" in registered else []
        cases += [_one(long_context_case, name, 16384, device=device) for name in LONG_CONTEXT if name in registered]
        if device.type == "cpu":
            cases += [
                _one(flex_cpu_case, name, n, decode=decode, device=device)
                for name in FLEX_CPU if name in registered
                for decode in (False, True)
                for n in (1024, 4096)
            ]
        if device.type == "cuda":  # FlexAttention has no backward on CPU
            cases += [
                _one(flex_training_case, name, n, device=device)
                for name in FLEX_TRAINING if name in registered
                for n in (4096, 16384)
            ]
        cases += [_many(hash_grid_cases, 2**18, device=device)] if "hash_grid" in registered else []
        memory = [(2**16, 8), (2**16, 16), (2**17, 16), (2**18, 16)]
        cases += [_many(hash_grid_memory_cases, memory, device=device)] if "hash_grid" in registered else []
        train = {"batch": 8, "n": 256, "dim": 128, "depth": 2, "heads": 4, "device": device}
    # multimodal RoPE against transformers' Qwen2-VL (chunked) and Qwen3-VL (interleaved)
    mrope_size = (1, 4, 256, 128) if quick else (4, 8, 2048, 128)
    cases += [
        _one(mrope_case, *mrope_size, layout, dtype, device)
        for layout in ("chunked", "interleaved")
        for dtype in (torch.float32, torch.bfloat16)
    ]
    cases += [_one(training_step_case, name, **train) for name in TRAINING_ENCODINGS if name in registered]
    cases += [_one(training_step_case, "rope", **train, dtype=torch.bfloat16)] if "rope" in registered else []
    return cases


def _rope_cases(size: tuple[int, int, int, int], device: torch.device) -> list[CaseBuilder]:
    cases = [_one(rope_case, *size, dtype, device) for dtype in (torch.float32, torch.bfloat16)]
    return cases + [
        _one(rope_backward_case, *size, dtype, device, interleaved=interleaved)
        for dtype in (torch.float32, torch.bfloat16)
        for interleaved in (True, False)
    ]


def run_suite(
    *,
    quick: bool = False,
    device: torch.device | str = "cpu",
    rounds: int | None = None,
    progress: Callable | None = None,
    only: str | None = None,
) -> dict:
    """Run every case (or those whose name contains ``only``); returns ``{"machine": ..., "rows": [...]}``
    ready for JSON."""
    rounds = rounds or (3 if quick else 15)
    builders = suite(quick=quick, device=device)
    rows: list[Row] = []
    names: list[str] = []
    for build in progress(builders) if progress else builders:
        for case in build():  # built here and dropped after its run: one case's inputs live at a time
            names.append(case.name)
            if only is None or only in case.name:
                rows.extend(case.run(rounds=rounds, device=device))
            del case
    if only is not None and not rows:
        raise NoSuchCase(f"only={only!r} names no case; the cases are:\n  " + "\n  ".join(names))
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device) if torch.device(device).type != "cuda" else torch.cuda.get_device_name(device),
        "quick": quick,
        "rounds": rounds,
    }
    compiled = [
        {"kernel": f"{dev} {str(dtype).removeprefix('torch.')} {'adjacent pairs' if il else 'split halves'} x{count}"
         + (" partial" if partial else "") + (" in place" if inplace else ""), "seconds": s}
        for (dev, dtype, il, inplace, count, partial), s in compile_seconds().items()
    ]
    if cpu_kernel.build_seconds() is not None:
        # the C++ function rotating on CPU: seconds compiling it in this process (0.0: loaded from the cache)
        compiled.append({"kernel": "cpu C++ function (every dtype and layout)", "seconds": cpu_kernel.build_seconds()})
    return {"machine": machine, "rows": [r.as_dict() for r in rows], "fused_rope_compile": compiled}


def format_table(result: dict) -> str:
    """The rows as text: wall-clock median and ratio, then process CPU time and its ratio (steadier on a
    shared machine), peak memory and the reference or a note."""
    lines = [
        (
            f"{'case':<44} {'implementation':<52} {'median ms':>10} {'ratio':>7} {'CPU ms':>9} {'CPU ratio':>9}"
            f" {'peak MiB':>9}  vs / note"
        )
    ]
    for r in result["rows"]:
        ms = f"{r['median_ms']:.3f}" if r["median_ms"] is not None else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        cpu_ms = f"{r['cpu_ms']:.3f}" if r.get("cpu_ms") is not None else "-"
        cpu_ratio = f"{r['cpu_ratio']:.2f}x" if r.get("cpu_ratio") is not None else "-"
        note = r["note"] or (r["reference"] if r["ratio"] is not None else "")
        if r["agrees"] is True:
            note += " (output agrees)"
        peak = f"{r['peak_mb']:.1f}" if r.get("peak_mb") is not None else "-"
        first = r.get("first_call_s")
        if first is not None and r["median_ms"] is not None and first > 0.5 and first * 1e3 > 20 * r["median_ms"]:
            note += f" [first call {first:.1f} s: compiles]"
        lines.append(f"{r['case']:<44} {r['impl']:<52} {ms:>10} {ratio:>7} {cpu_ms:>9} {cpu_ratio:>9} {peak:>9}  {note}")
    for k in result.get("fused_rope_compile", []):
        lines.append(f"fused RoPE kernel compiled: {k['kernel']}: first call {k['seconds']:.1f} s"
                     + (" (loaded from the cache)" if k["seconds"] == 0.0 else ""))
    m = result["machine"]
    lines.append(f"machine: {m['device']} | {m['platform']} | torch {m['torch']} | {m['threads']} threads | rounds {m['rounds']}")
    return "\n".join(lines)
