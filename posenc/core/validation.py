"""Argument checks shared by every encoding.

Each check raises ``ValueError`` (or ``TypeError`` for a wrong kind of object) whose message names
the argument and the values it may take, so that bad input fails at the public boundary instead of
as a shape error deep inside torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import torch

from posenc.core.memory import format_bytes

HALF_DTYPES = (torch.float16, torch.bfloat16)


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int after checking its type and range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1)


def check_even(name: str, value: Any, *, why: str = "it is split into (sin, cos) pairs") -> int:
    value = check_positive_int(name, value)
    if value % 2:
        raise ValueError(f"`{name}` must be a positive even int because {why}, got {value}")
    return value


def check_batch(name: str, value: Any) -> int:
    """A batch size: an int >= 0 (0 gives an empty batch) or a tensor of rank >= 1 whose first axis is the batch."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            raise ValueError(f"`{name}` must be an int or a tensor whose first axis is the batch, got a 0-d tensor")
        return value.shape[0]
    return check_int(name, value, minimum=0)


def check_float(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Return ``value`` as a finite float after checking its type and range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__} {value!r}")
    if isinstance(value, int):
        try:
            value = float(value)
        except OverflowError:
            raise ValueError(f"`{name}` must be finite, got an int of {value.bit_length()} bits, past float64's range") from None
    value = float(value)
    # comparisons rather than math.isfinite, which torch.compile cannot trace for a float it makes
    # symbolic (dynamic=True): NaN fails both
    if not -math.inf < value < math.inf:
        raise ValueError(f"`{name}` must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` after checking it is ``True`` or ``False`` (a string such as ``"no"`` is not)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}")
    return value


def check_tensor(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Check that ``value`` is a real tensor of the given rank(s)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex():
        raise ValueError(f"`{name}` must be a real tensor, got complex dtype {value.dtype}")
    if value.layout != torch.strided:
        raise ValueError(f"`{name}` must be a dense (strided) tensor, got layout {value.layout}; pass `.to_dense()`")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ValueError(f"`{name}` must have rank {want}, got shape {tuple(value.shape)}")
    return value


def check_float_tensor(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    value = check_tensor(name, value, ndim=ndim)
    if not value.is_floating_point():
        raise ValueError(f"`{name}` must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_positions(name: str, positions: Any) -> torch.Tensor:
    """Positions may be integer or float32/float64, never half precision.

    A bf16 position vector cannot represent every integer past 256 (fp16: past 2048), so half-precision
    positions would silently collapse neighbouring tokens onto one position.
    """
    positions = check_tensor(name, positions)
    if positions.dtype in HALF_DTYPES:
        raise ValueError(
            f"`{name}` must be an integer, float32 or float64 tensor, got {positions.dtype}: "
            "half precision cannot count positions exactly (bf16 past 256, fp16 past 2048)"
        )
    if positions.dtype == torch.bool:
        raise ValueError(f"`{name}` must be an integer or float tensor, got torch.bool")
    check_finite(name, positions)
    return positions


def check_nonnegative_positions(name: str, value: Any) -> torch.Tensor:
    """Positions (see :func:`check_positions`) that are distances: no entry below 0 (eager mode only)."""
    value = check_positions(name, value)
    if value.numel() and can_read_values(value) and bool((value < 0).any()):
        raise ValueError(f"`{name}` must be >= 0 (a distance), got a minimum of {value.min().item()}")
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Reject NaN/inf in a floating tensor of positions, coordinates or steps (eager mode only).

    The check reads the tensor on the host, so it is skipped where :func:`can_read_values` says no
    (while ``torch.compile`` traces, on the meta device, inside ``torch.func`` transforms such as
    ``vmap``) and for integer tensors (which cannot hold NaN or inf).
    """
    if value.is_floating_point() and can_read_values(value) and not bool(torch.isfinite(value).all()):
        raise ValueError(f"`{name}` must be finite, got NaN or inf")
    return value


def can_read_values(value: torch.Tensor) -> bool:
    """Whether an eager range check may read ``value`` on the host: not while ``torch.compile`` traces,
    not on the meta device, which holds shapes only, and not for a tensor wrapped by a ``torch.func``
    transform (``vmap`` has no value per call): in those a range check would raise from ``Tensor.item()``."""
    return (
        value.device.type != "meta"
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(value)
    )


def check_dtype(name: str, value: Any) -> torch.dtype | None:
    """None or a floating-point ``torch.dtype`` (the dtype of learned parameters)."""
    if value is None:
        return None
    if not isinstance(value, torch.dtype):
        raise TypeError(f"`{name}` must be a torch.dtype or None, got {type(value).__name__} {value!r}")
    if not value.is_floating_point:
        raise ValueError(f"`{name}` must be a floating-point dtype for learned parameters, got {value}")
    return value


def check_dtype_matches(
    name: str, value: torch.Tensor, module: torch.nn.Module, *, owner: str = "the encoding"
) -> torch.Tensor:
    """``value`` must have the dtype of ``module``'s parameters when it feeds their layers.

    Skipped under ``torch.autocast``, which casts per operation; modules without parameters pass.
    """
    param = next(module.parameters(), None)
    if param is None or value.dtype == param.dtype or torch.is_autocast_enabled(value.device.type):
        return value
    raise ValueError(
        f"`{name}` has dtype {value.dtype} but {owner}'s parameters are {param.dtype}; "
        "cast one of them (module.to(dtype) or tensor.to(dtype))"
    )


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise when the given tensors live on different devices."""
    present = {k: t for k, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"`{k}` on {t.device}" for k, t in present.items())
        raise ValueError(f"tensors must be on one device, got {listing}")


def check_on_device(name: str, value: torch.Tensor, device: torch.device, *, owner: str = "the encoding") -> torch.Tensor:
    """``value`` must be on ``device``, the device of ``owner``'s parameters or tables."""
    if value.device != device:
        raise ValueError(f"`{name}` is on {value.device} but {owner} is on {device}; move one of them")
    return value


def check_float_dtype(name: str, value: Any) -> torch.dtype:
    """A floating-point ``torch.dtype`` for a computed output (an integer dtype would truncate it to zeros)."""
    if not isinstance(value, torch.dtype):
        raise TypeError(f"`{name}` must be a torch.dtype, got {type(value).__name__} {value!r}")
    if not value.is_floating_point:
        raise ValueError(f"`{name}` must be a floating-point dtype (float32, float64, ...), got {value}")
    return value


def check_precise_float_tensor(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """A float32 or float64 tensor: angles, cos/sin tables and coordinates lose their meaning in half precision."""
    value = check_tensor(name, value, ndim=ndim)
    if value.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"`{name}` must be a float32 or float64 tensor, got {value.dtype}")
    return value


def check_shape(name: str, value: torch.Tensor, shape: tuple[int | None, ...], *, why: str = "") -> torch.Tensor:
    """``value.shape`` must equal ``shape`` (``None`` entries match any size); ``why`` names the other argument."""
    ok = value.ndim == len(shape) and all(s is None or s == v for s, v in zip(shape, value.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        because = f" {why}" if why else ""
        raise ValueError(f"`{name}` must have shape {want}{because}, got {tuple(value.shape)}")
    return value


def device_memory(device: torch.device | str | None) -> int | None:
    """Bytes of memory on ``device`` (host RAM for the CPU); None where unknown or unbounded (meta)."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    return None


def check_fits(
    name: str, given: Any, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str | None
) -> None:
    """Refuse a tensor of ``shape`` that cannot fit in ``device``'s memory, naming the argument that asked for it.

    Skipped while ``torch.compile`` traces (the shapes were checked by the eager calls before).
    """
    if torch.compiler.is_compiling():
        return
    limit = device_memory(device)
    nbytes = math.prod(shape) * dtype.itemsize
    where = torch.device("cpu" if device is None else device)
    if limit is not None and nbytes > limit:
        raise ValueError(
            f"`{name}`={given!r} needs a {tuple(shape)} {dtype} tensor of {format_bytes(nbytes)}, "
            f"more than the {format_bytes(limit)} of memory on {where}"
        )
    if nbytes >= 2**63:  # past torch's int64 storage size, on any device (meta included)
        raise ValueError(
            f"`{name}`={given!r} needs a {tuple(shape)} {dtype} tensor of {format_bytes(nbytes)}, "
            f"more than a tensor can hold (2**63 bytes) on {where}"
        )


def check_table_fits(
    sizes: dict[str, Any], shape: tuple[int, ...], dtype: torch.dtype | None, device: torch.device | str | None
) -> None:
    """:func:`check_fits` for a table of ``shape`` set by the constructor arguments ``sizes`` (ints or
    tuples of ints), naming the largest of them; ``dtype`` None is the default dtype. Skipped while
    ``torch.compile`` traces, as :func:`check_fits` is (dynamo cannot trace ``max`` with ``key=``)."""
    if torch.compiler.is_compiling():
        return
    name = max(sizes, key=lambda k: math.prod(sizes[k]) if isinstance(sizes[k], tuple) else sizes[k])
    check_fits(name, sizes[name], shape, dtype or torch.get_default_dtype(), device)


def check_layers_fit(
    sizes: dict[str, Any], count: int, dtype: torch.dtype | None, device: torch.device | str | None
) -> None:
    """The ``count`` parameters of the layers that the constructor arguments ``sizes`` set must fit in
    memory: checked before any layer is built, so that a width past memory is refused by the largest
    of ``sizes`` instead of reaching the allocator, and a layer count past it before a loop builds them."""
    check_table_fits(sizes, (count,), dtype, device)


def check_broadcasts(name: str, value: torch.Tensor, shape: tuple[int, ...], *, to: str) -> torch.Tensor:
    """``value`` must broadcast to ``shape`` (the shape of the argument named ``to``) without growing it."""
    ok = value.ndim <= len(shape) and all(v == 1 or v == s for v, s in zip(reversed(value.shape), reversed(shape)))
    if not ok:
        raise ValueError(f"`{name}` must broadcast to the shape {tuple(shape)} of `{to}`, got {tuple(value.shape)}")
    return value
