"""The list of cases at full and quick sizes, and the table they print."""

from __future__ import annotations

import platform
from collections.abc import Callable

import torch

from posenc.bench.cases import (
    Case,
    Row,
    bias_cases,
    hash_grid_cases,
    rope_case,
    shaw_case,
    sinusoidal_case,
    training_step_case,
    transformer_xl_case,
)
from posenc.core.registry import available

#: Sequence encodings timed in a full training step (those registered; relative ones when present).
TRAINING_ENCODINGS = ("sinusoidal", "learned", "rope", "alibi", "t5", "shaw", "transformer_xl")


def suite(*, quick: bool = False, device: torch.device | str = "cpu") -> list[Case]:
    device = torch.device(device)
    registered = {info.name for info in available()}
    if quick:
        cases = [rope_case(1, 4, 256, 64, torch.float32, device), rope_case(1, 4, 256, 64, torch.bfloat16, device)]
        cases += [sinusoidal_case((256,), 64, device), sinusoidal_case((16, 16), 64, device), sinusoidal_case((4, 8, 8), 48, device)]
        cases += bias_cases(4, 256, device)
        cases += [shaw_case(128, device=device)] if "shaw" in registered else []
        cases += [transformer_xl_case(128, device=device)] if "transformer_xl" in registered else []
        cases += hash_grid_cases(2**12, levels=8, log2_table=14, device=device) if "hash_grid" in registered else []
        train = dict(batch=2, n=32, dim=32, depth=1, heads=2, device=device)
    else:
        cases = [rope_case(4, 8, 2048, 64, torch.float32, device), rope_case(4, 8, 2048, 64, torch.bfloat16, device)]
        cases += [
            sinusoidal_case((2048,), 256, device),
            sinusoidal_case((64, 64), 256, device),
            sinusoidal_case((16, 32, 32), 192, device),
        ]
        cases += bias_cases(8, 2048, device)
        cases += [shaw_case(n, device=device) for n in (512, 1024, 2048, 4096)] if "shaw" in registered else []
        lengths = (512, 1024, 2048, 4096)
        cases += [transformer_xl_case(n, device=device) for n in lengths] if "transformer_xl" in registered else []
        cases += hash_grid_cases(2**18, device=device) if "hash_grid" in registered else []
        train = dict(batch=8, n=256, dim=128, depth=2, heads=4, device=device)
    cases += [training_step_case(name, **train) for name in TRAINING_ENCODINGS if name in registered]
    return cases


def run_suite(
    *, quick: bool = False, device: torch.device | str = "cpu", rounds: int | None = None, progress: Callable | None = None
) -> dict:
    """Run every case; returns ``{"machine": ..., "rows": [...]}`` ready for JSON."""
    rounds = rounds or (3 if quick else 15)
    cases = suite(quick=quick, device=device)
    rows: list[Row] = []
    iterator = progress(cases) if progress else cases
    for case in iterator:
        rows.extend(case.run(rounds=rounds))
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device) if torch.device(device).type != "cuda" else torch.cuda.get_device_name(device),
        "quick": quick,
        "rounds": rounds,
    }
    return {"machine": machine, "rows": [r.as_dict() for r in rows]}


def format_table(result: dict) -> str:
    lines = [f"{'case':<44} {'implementation':<30} {'median ms':>10} {'ratio':>7} {'peak MiB':>9}  vs / note"]
    for r in result["rows"]:
        ms = f"{r['median_ms']:.3f}" if r["median_ms"] is not None else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        note = r["note"] or (r["reference"] if r["ratio"] is not None else "")
        if r["agrees"] is True:
            note += " (output agrees)"
        peak = f"{r['peak_mb']:.1f}" if r.get("peak_mb") is not None else "-"
        lines.append(f"{r['case']:<44} {r['impl']:<30} {ms:>10} {ratio:>7} {peak:>9}  {note}")
    m = result["machine"]
    lines.append(f"machine: {m['device']} | {m['platform']} | torch {m['torch']} | {m['threads']} threads | rounds {m['rounds']}")
    return "\n".join(lines)
