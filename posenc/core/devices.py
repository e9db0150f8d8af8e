"""Device names checked against what this torch build can use, with an error naming the argument."""

from __future__ import annotations

import torch


def usable_devices() -> list[str]:
    """The device types this torch build can run on here: always ``cpu``, then any accelerator found."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def _build_summary() -> str:
    cuda = torch.version.cuda
    return f"torch {torch.__version__} ({'CUDA ' + cuda if cuda else 'built without CUDA'})"


def resolve_device(name: str | torch.device, *, argument: str = "--device") -> torch.device:
    """``name`` as a ``torch.device`` this process can use; otherwise a ``ValueError`` naming ``argument``.

    ``"auto"`` picks the first GPU when CUDA is available, else the CPU.
    """
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    allowed = ", ".join(usable_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"{argument} {name!r} is not a device name torch knows; this build can use: {allowed} (or auto)"
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{argument} {str(name)!r}: no CUDA device can be used by {_build_summary()}; "
                f"this build can use: {allowed} (or auto)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"{argument} {str(name)!r}: only {torch.cuda.device_count()} CUDA device(s) are visible; "
                f"allowed: {allowed}"
            )
        return device
    if device.type == "mps" and "mps" in usable_devices():
        return device
    raise ValueError(f"{argument} {str(name)!r} cannot be used by {_build_summary()}; this build can use: {allowed}")
