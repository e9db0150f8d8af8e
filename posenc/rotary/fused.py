"""One fused pass for the RoPE rotation of q and k: load, rotate in float32 registers, store.

Mechanisms (chosen with ``posenc bench``, see docs/performance.md). On CPU, for bfloat16, float32 and
float64: the C++ function of :mod:`posenc.rotary.cpu_kernel`, which reads every strided layout as it
is and costs 55-85 µs per q-and-k call on a tiny input (``_CppRotation``, ``_cpp_rotate``); ``POSENC_CPU_KERNEL=inductor``
or a machine without a working C++ compiler falls back to the next mechanism. Elsewhere: the plain expression of
:func:`posenc.rotary.rotation.rotate_expr` compiled by ``torch.compile`` (inductor: a vectorised C++
loop on CPU, a Triton kernel on CUDA), lazily, once per pair layout, dtype, device type, number of
tensors, in-place flag and full/partial rotation, with dynamic shapes. Every call is first put in one
canonical form (:func:`_canonical`: x as contiguous ``(R, d)`` rows, the angles as ``(T, r/2)`` tables
in the arithmetic dtype, an int32 row index), so the rank of x, the broadcasting of the angles
(shared, per batch, per head, per token), strides, storage offsets, the angles' dtype and grad mode
never compile a second variant; calls with a dimension of size 0 or 1 there (which dynamo would
specialise) are too small to matter and take the eager path.
Inductor keeps the generated code in its on-disk cache, so later processes skip most of the
compilation. The backward is the same kernel with the opposite angle (a rotation's inverse is its
transpose), so no backward graph is compiled.

Switch: ``POSENC_FUSED=0`` (or ``off``) turns fusion off, ``POSENC_FUSED=1`` (``on``) uses it for
every size, unset (``auto``) uses it from :data:`MIN_FUSED_NUMEL` elements per call, below which a
compiled call's dispatch costs more than it saves, except for float16 and float32 adjacent pairs on
CPU, where the eager complex multiply measured as fast or faster; bfloat16 pairs are rotated as
int32 words there (:func:`posenc.rotary.rotation.rotate_expr`), which vectorises, and float32
pairs as int64 words when the kernel is forced on. Every rotating function also takes
``fused=True/False`` which wins over the variable. Where compilation fails (no C++ compiler, an
unsupported platform) a warning is issued once and the eager path is used.

Under an outer ``torch.compile`` the plain expression is inlined and fused into the caller's graph.
"""

from __future__ import annotations

import contextlib
import os
import time
import types
import warnings
from collections.abc import Callable, Sequence

import torch

from posenc.core.transforms import under_transform
from posenc.rotary import cpu_kernel
from posenc.rotary.rotation import rotate_eager, rotate_expr, words_ok, work_dtype

#: The environment variable that switches fusion: ``0``/``off``, ``1``/``on`` or ``auto`` (the default).
FUSED_ENV = "POSENC_FUSED"
#: In ``auto`` mode, the elements (all tensors of one call together) from which the fused kernel is used.
MIN_FUSED_NUMEL = 1 << 16
#: The environment variable choosing the CPU mechanism: ``cpp`` (the default: the C++ function of
#: :mod:`posenc.rotary.cpu_kernel`, inductor where it cannot be built or for other dtypes) or ``inductor``.
CPU_KERNEL_ENV = "POSENC_CPU_KERNEL"
_CPU_MECHANISMS = ("cpp", "inductor")

_MODES = {"0": "off", "off": "off", "false": "off", "1": "on", "on": "on", "true": "on", "auto": "auto", "": "auto"}

#: (device type, dtype, interleaved, inplace, tensor count, partial) -> compiled kernel, or None where compiling failed
_kernels: dict[tuple, Callable | None] = {}
#: the same keys -> seconds the first (compiling) call took
_first_call_seconds: dict[tuple, float] = {}
#: keys whose kernel refused a later input layout (warned once)
_warned: set[tuple] = set()


def fusion_mode() -> str:
    """``"off"``, ``"on"`` or ``"auto"`` from ``POSENC_FUSED``."""
    raw = os.environ.get(FUSED_ENV, "auto")
    mode = _MODES.get(raw.strip().lower())
    if mode is None:
        raise ValueError(f"environment variable {FUSED_ENV} must be one of 0, off, false (fusion off), 1, on, true (on at every size) or auto "
                         f"(the default); got {raw!r}")
    return mode


def cpu_mechanism() -> str:
    """``"cpp"`` or ``"inductor"`` from ``POSENC_CPU_KERNEL``."""
    raw = os.environ.get(CPU_KERNEL_ENV, "cpp").strip().lower() or "cpp"
    if raw not in _CPU_MECHANISMS:
        raise ValueError(f"environment variable {CPU_KERNEL_ENV} must be one of {', '.join(_CPU_MECHANISMS)}; "
                         f"got {os.environ[CPU_KERNEL_ENV]!r}")
    return raw


def compile_seconds() -> dict[tuple, float]:
    """Seconds taken by the first (compiling) call of each kernel built in this process."""
    return dict(_first_call_seconds)


def _kernel(xs, cos, sin, rows, interleaved: bool, words: bool):
    """xs: each ``(R, d)``; cos, sin: ``(T, r/2)`` tables; rows: each ``(R,)`` int32, the table row of
    every row of x."""
    return tuple(rotate_expr(x, cos[r], sin[r], interleaved, words) for x, r in zip(xs, rows))


def _kernel_inplace(xs, cos, sin, rows, interleaved: bool, words: bool) -> None:
    for x, r in zip(xs, rows):
        x.copy_(rotate_expr(x, cos[r], sin[r], interleaved, words))


def _own_code(fn: Callable, tag: str) -> Callable:
    """A copy of ``fn`` with its own code object: dynamo keeps its compiled variants (and their
    recompilation limit) per code object, so each kernel key gets its own."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name)


#: inductor options per device type. CPU: inductor decides whether a loop runs in parallel, and on
#: how many threads, from the sizes and ``torch.get_num_threads()`` of the compiling call, and its
#: on-disk cache keys on neither sizes nor (with this option) threads; a kernel first compiled at a
#: small size would then run single-threaded at every size, in every later process. With
#: ``dynamic_threads`` the row loop is always an OpenMP loop sized at run time.
_INDUCTOR_OPTIONS = {"cpu": {"cpp.dynamic_threads": True}}


def _build(key: tuple) -> Callable:
    device_type, dtype, interleaved, inplace, count, partial = key
    layout = "pairs" if interleaved else "halves"
    tag = f"{device_type}_{str(dtype).removeprefix('torch.')}_{layout}_{count}{'_partial' if partial else ''}"
    return torch.compile(
        _own_code(_kernel_inplace if inplace else _kernel, tag + ("_inplace" if inplace else "")),
        dynamic=True,
        fullgraph=True,
        options=_INDUCTOR_OPTIONS.get(device_type),
    )


#: (x rows shape, table rows shape, device) -> the table row of every row of x, int32 (R,)
_row_index: dict[tuple, torch.Tensor] = {}
_MAX_ROW_INDICES = 32


def _rows(x_lead: torch.Size, table_lead: torch.Size, device: torch.device) -> torch.Tensor | None:
    """None where the angles do not broadcast onto x's rows (the caller uses the eager path)."""
    key = (x_lead, table_lead, device)
    if key in _row_index:
        return _row_index[key]
    broadcasts = len(table_lead) <= len(x_lead) and all(
        t == 1 or t == s for t, s in zip(reversed(table_lead), reversed(x_lead))
    )
    rows = None
    if broadcasts:
        count = table_lead.numel()
        # (T,) numbered in table order, broadcast like the angles onto x's rows, flattened
        rows = torch.arange(count, dtype=torch.int32, device=device).view(table_lead).expand(x_lead).reshape(-1)
        rows = rows.contiguous().detach()  # not a view of the arange: the kernel's guards see one kind of input
    if len(_row_index) >= _MAX_ROW_INDICES:
        _row_index.pop(next(iter(_row_index)))
    _row_index[key] = rows
    return rows


def _angle_table(cos: torch.Tensor, sin: torch.Tensor, work: torch.dtype):
    """cos, sin broadcastable to each other ``(..., n', r/2)`` -> two ``(T, r/2)`` tables in ``work``
    with ``T >= 2`` rows, and the shape of their rows. Broadcast (stride-0) dimensions are narrowed to
    one entry first, so shared angles are not copied per batch or head."""
    if cos.shape != sin.shape:
        cos, sin = torch.broadcast_tensors(cos, sin)
    shared = [i for i in range(cos.dim() - 1) if cos.shape[i] > 1 and cos.stride(i) == 0 and sin.stride(i) == 0]
    if shared:
        index = tuple(slice(0, 1) if i in shared else slice(None) for i in range(cos.dim() - 1))
        cos, sin = cos[index], sin[index]
    lead, half = cos.shape[:-1], cos.shape[-1]
    cos, sin = cos.reshape(-1, half).to(work), sin.reshape(-1, half).to(work)
    if cos.shape[0] == 1:
        # a table of one row would compile a variant of its own (sizes 0 and 1 are specialised)
        cos, sin = cos.expand(2, half), sin.expand(2, half)
    return cos.contiguous().detach(), sin.contiguous().detach(), lead


def _memory_order(x: torch.Tensor) -> tuple[int, ...] | None:
    """The order of the leading (all but the feature) dimensions of ``x`` in memory (largest stride
    first), where that is not their own order: e.g. ``(b, h, n, d)`` viewed from ``(b, n, h, d)`` or
    ``(b, n, 3, h, d)`` memory, as attention projections are usually viewed and as attention backwards
    return gradients. The rows are taken in that order: read in place where x is dense in it, copied
    in memory order otherwise, and the result has that layout too (as torch's elementwise operations
    lay out theirs). None for x's own order, and for broadcast (stride-0) x, which is copied as before."""
    if x.is_contiguous() or 0 in x.stride():
        return None
    lead = x.dim() - 1
    order = tuple(sorted(range(lead), key=lambda i: -x.stride(i)))
    return None if order == tuple(range(lead)) else order


def _table_lead(lead: torch.Size, order: tuple[int, ...] | None, rank: int) -> torch.Size:
    """The angles' row shape ``lead`` (broadcast from the right onto ``rank`` leading dimensions)
    taken in the memory ``order`` of x's leading dimensions."""
    if order is None or len(lead) > rank:
        return lead  # (a lead longer than x's does not broadcast: _rows refuses it)
    padded = (1,) * (rank - len(lead)) + tuple(lead)
    return torch.Size(padded[i] for i in order)


def _flat_rows(xs: tuple[torch.Tensor, ...], d: int) -> tuple[torch.Tensor, ...]:
    """Each x ``(..., n, d)`` as contiguous ``(R, d)`` rows (a view where x is contiguous)."""
    # detached after the reshape: an alias, not a view, whether or not the reshape copied (dynamo
    # guards on whether an input is a view)
    flat = tuple(x.reshape(-1, d).contiguous().detach() for x in xs)
    # an odd storage offset would split bfloat16 pairs across int32 words
    return tuple(f if f.storage_offset() % 2 == 0 else f.clone() for f in flat)


def _layout(xs: tuple[torch.Tensor, ...], lead: torch.Size):
    """For each x: its ``(R, d)`` rows (read in place where x is dense in some order of its leading
    dimensions), the int32 table row of each row, and that order (None: x's own). None where the
    angles of row shape ``lead`` do not broadcast onto some x."""
    orders = tuple(_memory_order(x) for x in xs)
    views = tuple(x if o is None else x.permute(*o, x.dim() - 1) for x, o in zip(xs, orders))
    rows = tuple(_rows(v.shape[:-1], _table_lead(lead, o, v.dim() - 1), v.device) for v, o in zip(views, orders))
    if any(r is None for r in rows):
        return None
    return _flat_rows(views, xs[0].shape[-1]), rows, orders


def _canonical(xs: tuple[torch.Tensor, ...], cos: torch.Tensor, sin: torch.Tensor):
    """The one input form every call is given to the compiled kernel in, whatever the rank,
    broadcasting, strides or angle dtype: each x ``(..., n, d)`` as ``(R, d)`` rows (a view where x is
    dense), the angles as ``(T, r/2)`` tables with ``T >= 2``, and for each x the int32 table row of
    each of its rows; also the order each x's rows are read in and the angles' row shape. None where
    that form does not apply (the caller uses the eager path)."""
    half = cos.shape[-1]
    if half < 2 or any(x.shape[:-2].numel() * x.shape[-2] < 2 for x in xs):
        return None  # a dimension of size 0 or 1 would compile its own variant; too small to matter
    cos_t, sin_t, lead = _angle_table(cos, sin, work_dtype(xs[0]))
    layout = _layout(xs, lead)
    if layout is None:
        return None
    flat, rows, orders = layout
    return flat, cos_t, sin_t, rows, orders, lead


def _shaped_like(out: torch.Tensor, x: torch.Tensor, order: tuple[int, ...] | None) -> torch.Tensor:
    """Kernel output rows ``(R, d)`` as ``x``'s shape, in the memory order the rows were read in."""
    if order is None:
        return out.view(x.shape)
    lead = x.dim() - 1
    inverse = sorted(range(lead), key=order.__getitem__)
    return out.view(*(x.shape[i] for i in order), x.shape[-1]).permute(*inverse, lead)


def _launch(xs, flat, cos_t, sin_t, rows, orders, interleaved: bool, inplace: bool):
    """Rotate the canonical rows ``flat`` of ``xs`` with the compiled kernel (built on first use):
    the rotated tensors shaped like ``xs`` (written into them where ``inplace``), or None where the
    kernel cannot be used here."""
    # in place only where every flattened x is a view of its tensor; otherwise rotate and copy back
    direct = inplace and all(f.data_ptr() == x.data_ptr() and x.is_contiguous() for f, x in zip(flat, xs))
    words = interleaved and all(words_ok(f) for f in flat)
    key = (xs[0].device.type, xs[0].dtype, interleaved, direct, len(xs), 2 * cos_t.shape[-1] != xs[0].shape[-1])
    kernel = _kernels.get(key, False)
    if kernel is None:
        return None
    # grad mode is part of what the compiled kernel is specialised for; inside an autograd.Function it
    # is already off, so the context is entered only where needed
    with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
        if kernel is False:
            start = time.perf_counter()
            try:
                kernel = _build(key)
                out = kernel(flat, cos_t, sin_t, rows, interleaved, words)
            except Exception as err:  # noqa: BLE001 - any compiler failure means: use the eager path
                _kernels[key] = None
                warnings.warn(f"posenc: the fused RoPE kernel could not be compiled ({type(err).__name__}: {err}); "
                              f"using the eager rotation (set {FUSED_ENV}=0 to silence)", RuntimeWarning, stacklevel=4)
                return None
            _first_call_seconds[key] = time.perf_counter() - start
            _kernels[key] = kernel
        else:
            try:
                out = kernel(flat, cos_t, sin_t, rows, interleaved, words)
            except Exception as err:  # noqa: BLE001 - e.g. dynamo's recompile limit for one more input layout
                # the kernels compiled so far stay in use; this layout takes the eager path
                if key not in _warned:
                    _warned.add(key)
                    warnings.warn(f"posenc: the fused RoPE kernel could not be used for one input layout "
                                  f"({type(err).__name__}); that layout uses the eager rotation",
                                  RuntimeWarning, stacklevel=4)
                return None
        if direct:
            return xs
        out = tuple(_shaped_like(o, x, order) for o, x, order in zip(out, xs, orders))
        if inplace:
            return tuple(x.copy_(o) for x, o in zip(xs, out))
        return out


def _call_kernel(xs: tuple[torch.Tensor, ...], cos, sin, interleaved: bool, inplace: bool):
    """Rotated tensors from the compiled kernel, or None where it cannot be compiled here."""
    canonical = _canonical(xs, cos, sin)
    if canonical is None:
        return None
    flat, cos_t, sin_t, rows, orders, _ = canonical
    return _launch(xs, flat, cos_t, sin_t, rows, orders, interleaved, inplace)


def _uses_cpp(xs: Sequence[torch.Tensor]) -> bool:
    """Whether these tensors are rotated by the C++ function (built here on first use)."""
    return (
        xs[0].is_cpu  # (not .device.type: a device object is built per call, a cost with cold caches)
        and xs[0].dtype in cpu_kernel.DTYPES
        and cpu_mechanism() == "cpp"
        and cpu_kernel.library() is not None
    )


def cpp_tables(cos: torch.Tensor, sin: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin as two contiguous tables of the same shape ``(..., r/2)`` in x's arithmetic dtype (shared,
    stride-0 dimensions narrowed to one entry), broadcastable to x's leading shape. Tables already in
    that form (the modules' cached windows) are used as they are: the kernel reads any leading strides."""
    work = work_dtype(x)
    if (
        cos.dtype == sin.dtype == work and cos.shape == sin.shape and cos.stride() == sin.stride()
        and cos.stride(-1) == 1 and not cos.requires_grad and not sin.requires_grad
    ):
        return cos, sin
    cos_t, sin_t, lead = _angle_table(cos, sin, work)
    rows, half = lead.numel(), cos_t.shape[-1]
    return cos_t[:rows].view(*lead, half), sin_t[:rows].view(*lead, half)


def _empty_in_memory_order(x: torch.Tensor) -> torch.Tensor:
    """A new tensor of x's shape laid out in the memory order of x's rows (see :func:`_memory_order`)."""
    order = _memory_order(x)
    if order is None:
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    return empty_in_order(x.shape, order, dtype=x.dtype, device=x.device)


def empty_in_order(shape: torch.Size, order: tuple[int, ...] | None, *, dtype: torch.dtype, device) -> torch.Tensor:
    """A new tensor of ``shape`` whose leading dimensions lie in memory in ``order`` (a
    :func:`_memory_order`; None: contiguous), the last one contiguous."""
    if order is None:
        return torch.empty(shape, dtype=dtype, device=device)
    lead = len(shape) - 1
    buffer = torch.empty((*(shape[i] for i in order), shape[-1]), dtype=dtype, device=device)
    return buffer.permute(*sorted(range(lead), key=order.__getitem__), lead)


def cpp_rotated(x: torch.Tensor, tables, interleaved: bool, sign: float = 1.0, *, into: torch.Tensor | None = None):
    """x rotated by the C++ function (``sign=-1``: by the opposite angle), written into ``into`` (x's
    shape and dtype, any strides; may be x itself) or else into a new tensor in x's memory order; returns
    the tensor written. Every strided layout is read as it is, except a last dimension that is not
    contiguous and more than four leading dimensions that memory does not let merge (copied first)."""
    cos, sin = tables
    if x.stride(-1) == 1 and (into is None or (into.stride(-1) == 1 and (into is not x or 0 not in x.stride()))):
        target = _empty_in_memory_order(x) if into is None else into
        if cpu_kernel.rotate_into(x, target, cos, sin, interleaved, sign):
            return target
    # everything contiguous, the tables too: the leading dimensions then merge into one
    source, out = x.contiguous(), torch.empty(x.shape, dtype=x.dtype, device=x.device)
    full = (*x.shape[:-1], cos.shape[-1])
    done = cpu_kernel.rotate_into(
        source, out, cos.expand(full).contiguous(), sin.expand(full).contiguous(), interleaved, sign
    )
    assert done, "contiguous tensors always merge into one leading dimension"
    return out if into is None else into.copy_(out)


def _cpp_rotate(xs, tables, interleaved: bool, inplace: bool, sign: float = 1.0) -> tuple[torch.Tensor, ...]:
    """Each x rotated by the C++ function (:func:`cpp_rotated`): written into x where ``inplace``, else
    into a new tensor in x's memory order."""
    return tuple(cpp_rotated(x, tables, interleaved, sign, into=x if inplace else None) for x in xs)


def _rotate_back_differentiably(grads, cos, sin, interleaved: bool) -> tuple[torch.Tensor | None, ...]:
    """The backward of a rotation (the rotation by the opposite angle) as plain torch operations, so
    that a second derivative (``create_graph=True``) flows through it."""
    return tuple(None if g is None else rotate_expr(g, cos, -sin, interleaved) for g in grads)


class _CppRotation(torch.autograd.Function):
    """The C++ rotation as one autograd node; its backward rotates the gradients back (the inverse of a
    rotation is its transpose) with the forward's tables, into new tensors."""

    @staticmethod
    def forward(ctx, cos, sin, interleaved, inplace, *xs):
        tables = cpp_tables(cos, sin, xs[0])
        ctx.interleaved = interleaved
        out = _cpp_rotate(xs, tables, interleaved, inplace)
        if inplace:
            ctx.mark_dirty(*xs)
        ctx.save_for_backward(*tables)  # saved: a table changed in place before the backward is an error
        return out

    @staticmethod
    def backward(ctx, *grads):
        tables = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the rotation back as differentiable operations
            return (None, None, None, None, *_rotate_back_differentiably(grads, *tables, ctx.interleaved))
        back = tuple(
            None if g is None else _cpp_rotate((g,), tables, ctx.interleaved, False, sign=-1.0)[0] for g in grads
        )
        return (None, None, None, None, *back)


class _FusedRotation(torch.autograd.Function):
    """The fused rotation as one autograd node; its backward rotates the gradients back with the same
    kernel, reusing the forward's canonical angle tables (only the sine is negated)."""

    @staticmethod
    def forward(ctx, cos, sin, interleaved, inplace, *xs):
        canonical = _canonical(xs, cos, sin)
        out = None
        if canonical is not None:
            flat, cos_t, sin_t, rows, orders, lead = canonical
            out = _launch(xs, flat, cos_t, sin_t, rows, orders, interleaved, inplace)
        # (cos (T, r/2), sin, their row shape) for the backward's kernel call; None: the backward is eager too
        ctx.tables = None if out is None else (cos_t, sin_t, lead)
        if out is None:
            out = tuple(rotate_eager(x, cos, sin, interleaved) for x in xs)
            if inplace:
                out = tuple(x.copy_(o) for x, o in zip(xs, out))
        if inplace:
            ctx.mark_dirty(*xs)
        ctx.save_for_backward(cos, sin)
        ctx.interleaved = interleaved
        return out

    @staticmethod
    def backward(ctx, *grads):
        cos, sin = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the rotation back as differentiable operations
            return (None, None, None, None, *_rotate_back_differentiably(grads, cos, sin, ctx.interleaved))
        back = None
        if ctx.tables is not None:
            cos_t, sin_t, lead = ctx.tables
            # the gradients' layout may differ from the inputs' (their rows are read in their own order)
            layout = _layout(grads, lead)
            if layout is not None:
                flat, rows, orders = layout
                back = _launch(grads, flat, cos_t, -sin_t, rows, orders, ctx.interleaved, False)
        if back is None:
            back = tuple(rotate_eager(g, cos, -sin, ctx.interleaved) for g in grads)
        return (None, None, None, None, *back)


def _kernel_choice(
    fused: bool | None, xs: Sequence[torch.Tensor], cos: torch.Tensor, sin: torch.Tensor, interleaved: bool
) -> str | None:
    """``"cpp"`` (the C++ function), ``"compiled"`` (inductor's kernel) or None (the eager rotation)
    for rotating ``xs``."""
    if fused is False or not (xs[0].is_cpu or xs[0].is_cuda) or cos.requires_grad or sin.requires_grad:
        return None
    if len(xs) > 1 and len({(x.dtype, x.device) for x in xs}) > 1:
        return None
    mode = fusion_mode()
    if mode == "off" and fused is not True:
        return None
    if _uses_cpp(xs):
        # level with or faster than the eager rotation at every size and in both layouts
        # (docs/performance.md)
        return "cpp"
    if fused is True or mode == "on":
        return "compiled"
    if sum(x.numel() for x in xs) < MIN_FUSED_NUMEL:
        return None
    # adjacent pairs on CPU: inductor's loop over interleaved elements is scalar; bfloat16 pairs
    # rotated as int32 words vectorise and beat the eager complex multiply by 3x, float32 pairs as
    # int64 words measured level with it on one thread and up to 1.2x slower on two (the word
    # packing costs instructions the complex multiply does not), float16 slower
    # (docs/performance.md); split halves vectorise
    if interleaved and xs[0].is_cpu and xs[0].dtype != torch.bfloat16:
        return None
    return "compiled"


def _check_flags(**flags: object) -> None:
    for name, value in flags.items():
        allowed = (True, False, None) if name == "fused" else (True, False)
        if not isinstance(value, bool) and not (value is None and None in allowed):
            raise TypeError(f"`{name}` must be {' or '.join(map(str, allowed))}, got {value!r}")


def _check_writable(xs: tuple[torch.Tensor, ...], *, memory: bool) -> None:
    """``inplace=True`` needs tensors whose elements are distinct memory, and distinct from each other
    (``memory``: whether their memory can be inspected, i.e. not traced, wrapped or on the meta device)."""
    if torch.is_grad_enabled() and any(x.is_leaf and x.requires_grad for x in xs):
        raise ValueError("`inplace=True` cannot overwrite a leaf tensor that requires grad; pass inplace=False")
    if not memory:
        return
    for i, x in enumerate(xs):
        if torch._debug_has_internal_overlap(x) == 1:
            raise ValueError(
                f"`inplace=True` cannot write into a tensor whose elements share memory (strides "
                f"{tuple(x.stride())}, e.g. an expand()ed view); pass inplace=False or a contiguous copy"
            )
        for other in xs[:i]:
            if x.data_ptr() == other.data_ptr() and x.stride() == other.stride() and x.numel():
                raise ValueError(
                    "`inplace=True` was given the same tensor twice (e.g. q and k are one tensor): it would be "
                    "rotated twice; pass inplace=False or two tensors"
                )


def _check_devices(xs: tuple[torch.Tensor, ...], cos: torch.Tensor) -> None:
    """Every tensor to rotate on the angles' device: a clear error instead of torch's from inside the
    rotation (an encoding's hooks, ``rotate`` and ``rotate_qkv``, are called without ``forward``'s
    device check)."""
    if all(x.device == cos.device for x in xs):
        return
    devices = ", ".join(str(x.device) for x in xs)
    raise ValueError(
        f"the tensors to rotate (q, k) are on {devices} and the angles (the encoding's tables) on {cos.device}: "
        f"move the encoding with .to({xs[0].device}) or the tensors with .to({cos.device})"
    )


def rotate_tensors(
    xs: Sequence[torch.Tensor],
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool = False,
    inplace: bool = False,
    fused: bool | None = None,
) -> tuple[torch.Tensor, ...]:
    """Rotate every tensor of ``xs`` (each ``(..., n, d)``) by the same angles, in one kernel.

    cos, sin: broadcastable to each ``(..., n, r/2)``, ``r <= d`` (features past ``r`` pass
    through). ``inplace`` writes the results into ``xs`` and returns them. ``fused`` overrides
    ``POSENC_FUSED`` (None follows it). Inputs are assumed validated by the caller.
    """
    xs = tuple(xs)
    _check_flags(interleaved=interleaved, inplace=inplace, fused=fused)
    plain = torch.compiler.is_compiling() or under_transform((*xs, cos, sin))
    if not plain:
        _check_devices(xs, cos)
    if inplace:
        _check_writable(xs, memory=not plain and xs[0].device.type != "meta")
    if plain:
        # traced code, or torch.func / forward-mode transforms, which need plain operations (their
        # wrapped tensors have no storage the kernels could read)
        out = tuple(rotate_expr(x, cos, sin, interleaved) for x in xs)
        return tuple(x.copy_(o) for x, o in zip(xs, out)) if inplace else out
    if inplace and torch.is_grad_enabled() and any(x.requires_grad and x._is_view() for x in xs):
        # an autograd node cannot mark several views dirty: rotate out of place, then copy_ records
        # the write into each view the way torch's own in-place operations do
        out = rotate_tensors(xs, cos, sin, interleaved=interleaved, fused=fused)
        return tuple(x.copy_(o) for x, o in zip(xs, out))
    choice = _kernel_choice(fused, xs, cos, sin, interleaved)
    if choice is not None:
        if choice == "cpp":
            if torch.is_grad_enabled() and any(x.requires_grad for x in xs):
                return _CppRotation.apply(cos, sin, interleaved, inplace, *xs)
            return _cpp_rotate(xs, cpp_tables(cos, sin, xs[0]), interleaved, inplace)
        if torch.is_grad_enabled() and any(x.requires_grad for x in xs):
            return _FusedRotation.apply(cos, sin, interleaved, inplace, *xs)
        out = _call_kernel(xs, cos, sin, interleaved, inplace)
        if out is not None:
            return out
    out = tuple(rotate_eager(x, cos, sin, interleaved) for x in xs)
    return tuple(x.copy_(o) for x, o in zip(xs, out)) if inplace else out


def rotate_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool = False,
    inplace: bool = False,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q: ``(b, h, n, d)``, k: ``(b, h_kv, n, d)`` rotated at the same positions in one call."""
    if q.dtype != k.dtype or q.device != k.device:
        return (
            rotate_tensors((q,), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)[0],
            rotate_tensors((k,), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)[0],
        )
    q, k = rotate_tensors((q, k), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)
    return q, k
