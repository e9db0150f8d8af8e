"""The RoPE rotation on CPU as one small C++ function (``cpu_kernel.cpp``), built once per machine with
the system compiler and called through :mod:`ctypes`.

Why not only inductor: a ``torch.compile``d rotation costs 85-120 µs of dispatch per call before any
work (dynamo's frame, AOT-autograd's wrappers) and reads q and k through a canonical copy where they
are strided views of a packed projection; in a small training step, where every call runs with cold
caches, that overhead was most of RoPE's cost (docs/performance.md). This function reads any strides
directly (q, k as views of a ``(b, n, 3, h, d)`` projection, gradients in any layout), writes in place
or into a new tensor in the input's memory order; a q-and-k call on a tiny input costs 55-85 µs, Python
included (inductor's: about 270 µs). Arithmetic and
rounding are those of the plain expression: float32 (float64 for float64 input), no contraction into
fused multiply-adds, round to nearest even into bfloat16, so results equal the plain expression's.

Built with ``$CXX`` (else ``c++``, ``g++`` or ``clang++``) as ``-O3 -march=native -fopenmp`` (falling
back to fewer options where the compiler refuses one) into ``$POSENC_CACHE_DIR`` (else
``$XDG_CACHE_HOME/posenc`` or ``~/.cache/posenc``), under a name hashed from the source, the options,
the compiler and the processor, so a later process only loads it (milliseconds); a cache directory
that cannot be written is still read, and a machine without a compiler loads a library built there
for its processor by any compiler (a prebuilt cache shipped in an image). Where nothing works,
:func:`library` returns None and the caller uses inductor's kernel.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_kernel.cpp")
#: The environment variable naming the directory the built library is kept in.
CACHE_ENV = "POSENC_CACHE_DIR"
#: Compiler options, most wanted first; the first set the compiler accepts is used. GCC (12) ignores
#: -ffp-contract=off where its straight-line vectoriser recognises a complex multiply: the pairs of a
#: float64 row of adjacent pairs left over past a multiple of four were rotated with vfmaddsub, a fused
#: multiply-add; hence -fno-tree-slp-vectorize (loops are still vectorised), and the set without it
#: next for a compiler that refuses that option.
OPTION_SETS = (
    ("-O3", "-march=native", "-ffp-contract=off", "-fno-tree-slp-vectorize", "-fopenmp"),
    ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp"),
    ("-O3", "-ffp-contract=off", "-fopenmp"),
    ("-O3", "-ffp-contract=off", "-fopenmp-simd"),
    ("-O2", "-ffp-contract=off"),
)
#: dtypes the library rotates (the arithmetic dtype of each is :func:`posenc.rotary.rotation.work_dtype`)
DTYPES = (torch.bfloat16, torch.float32, torch.float64)
#: leading dimensions the function takes (more are merged where memory allows)
LEAD_DIMS = 4
#: Out-of-place results of at least this many bytes are written with streaming (non-temporal) stores,
#: which skip reading each output cache line before overwriting it, as a large memcpy() does: about
#: 20% less time for a 16 MiB q on a 32 MiB last-level cache (docs/performance.md). Smaller results are
#: stored normally and stay in the cache for attention to read. -1 never streams. Rows are streamed
#: where they are a whole number of 32-byte (AVX) or 16-byte (SSE2) stores wide, aligned, and at most
#: 4 KiB; x86-64 only.
STREAM_MIN_BYTES = 8 << 20

_lock = threading.Lock()
#: None: not tried yet; False: unavailable; else (the loaded library, seconds its build took or 0.0)
_state: tuple[ctypes.CDLL, float] | bool | None = None
#: sizes and the strides of x, out and the tables, as the C function reads them
_Layout = ctypes.c_int64 * (4 * LEAD_DIMS)
#: the smallest and largest position, as :func:`int64_bounds` reads them
_Bounds = ctypes.c_int64 * 2
#: (dtype, interleaved) -> the library's function
_functions: dict[tuple[torch.dtype, bool], ctypes._CFuncPtr] = {}


def cache_dir() -> Path:
    """Where the built library is kept."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "posenc"


def _writable(directory: Path) -> Path:
    """``directory`` (created), or a private temporary directory where it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if os.access(directory, os.W_OK):
            return directory
    except OSError:
        pass
    return _private_temp_dir()


def _private_temp_dir() -> Path:
    """``$TMPDIR/posenc-<uid>`` where it is a directory of this user's that nobody else can write (a
    library found in it is loaded and run), else a new private directory for this process."""
    if not hasattr(os, "getuid"):  # no owner to check
        return Path(tempfile.mkdtemp(prefix="posenc-"))
    uid = os.getuid()
    shared = Path(tempfile.gettempdir()) / f"posenc-{uid}"
    try:
        shared.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(shared)
        if (
            stat.S_ISDIR(info.st_mode)  # not a link planted in its place
            and info.st_uid == uid
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            return shared
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="posenc-"))


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _processor_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags where Linux lists them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(keep))  # each distinct line once (one per core otherwise)


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]


def _build(compiler: str | None, *, unusable: Path | None = None) -> tuple[Path, float]:
    """Compile (or find in the cache) the library; its path and the seconds spent compiling (0.0 when
    it was cached). The file name is ``rope_cpu_<source, options, processor>_<compiler>.so``. A library
    already in the cache directory is used even where that directory is read-only, and without a
    compiler (``compiler=None``) one built for this source and processor by any compiler is; ``unusable``:
    a cached file that failed to load, built afresh instead. Raises RuntimeError with the compiler's
    message where no option set works, or where there is no compiler and nothing cached."""
    source = SOURCE.read_bytes()
    processor = b"\0".join([_processor_id().encode(), platform.machine().encode()])
    stems = [f"rope_cpu_{_digest(source, ' '.join(options).encode(), processor)}" for options in OPTION_SETS]
    if compiler is None:
        for stem in stems:
            for cached in sorted(cache_dir().glob(f"{stem}_*.so")):
                if cached != unusable and cached.is_file():
                    return cached, 0.0
        raise RuntimeError("no C++ compiler found ($CXX, c++, g++, clang++) and no library built for this "
                           f"processor in {cache_dir()}")
    toolchain = _digest(_run([compiler, "--version"]).stdout.encode())
    names = [f"{stem}_{toolchain}.so" for stem in stems]
    for name in names:
        cached = cache_dir() / name
        if cached != unusable and cached.is_file():
            return cached, 0.0
    directory = _writable(cache_dir())
    errors = []
    for options, name in zip(OPTION_SETS, names):
        target = directory / name
        if target != unusable and target.is_file():
            return target, 0.0
        # another process may build the same file at the same time: each writes its own, then renames
        fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        start = time.perf_counter()
        done = _run([compiler, *options, "-std=c++17", "-fPIC", "-shared", str(SOURCE), "-o", partial])
        if done.returncode == 0:
            os.chmod(partial, 0o755)
            os.replace(partial, target)
            return target, time.perf_counter() - start
        os.unlink(partial)
        # a compiler that fails without a word (CXX=false, a broken wrapper) is named by its exit status
        errors.append(f"{' '.join(options)}: {done.stderr.strip()[-300:] or f'exit status {done.returncode}'}")
    raise RuntimeError(f"{compiler} failed: " + "; ".join(errors))


def _truncated(path: Path) -> bool:
    """Whether ``path`` is an ELF file shorter than its headers say: loading one maps pages past its end,
    and the process dies of SIGBUS at the first read (other formats are left to the loader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return False
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    header = struct.Struct(f"{order}16x2HI3{'Q' if wide else 'I'}I6H")
    if len(data) < header.size:
        return True
    *_, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = header.unpack_from(data)
    if max(phoff + phnum * phentsize, shoff + shnum * shentsize) > len(data):
        return True
    # each segment's (offset, size in the file)
    segment, fields = (struct.Struct(f"{order}2I6Q"), (2, 5)) if wide else (struct.Struct(f"{order}8I"), (1, 4))
    for i in range(phnum):
        values = segment.unpack_from(data, phoff + i * phentsize)
        if values[fields[0]] + values[fields[1]] > len(data):
            return True
    return False


def _load(path: Path) -> ctypes.CDLL:
    if _truncated(path):
        raise OSError(f"{path} is shorter than its ELF headers say (truncated)")
    lib = ctypes.CDLL(str(path))
    for dtype in DTYPES:
        for interleaved in (False, True):
            fn = getattr(lib, _entry(dtype, interleaved))
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p] * 4 + [
                _Layout, ctypes.c_int64, ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_int64
            ]
            _functions[dtype, interleaved] = fn
    lib.posenc_int64_bounds.restype = ctypes.c_int
    lib.posenc_int64_bounds.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    return lib


def _entry(dtype: torch.dtype, interleaved: bool) -> str:
    return f"posenc_rope_{str(dtype).removeprefix('torch.')}_{'pairs' if interleaved else 'halves'}"


def library() -> ctypes.CDLL | None:
    """The built library, building it on the first call; None (with one warning) where it cannot be
    built or loaded here."""
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                compiler = _compiler()
                try:
                    path, seconds = _build(compiler)
                    try:
                        lib = _load(path)
                    except (OSError, AttributeError):
                        if seconds or compiler is None:
                            raise
                        # a cached file that does not load (truncated, damaged): built afresh
                        path, seconds = _build(compiler, unusable=path)
                        lib = _load(path)
                    _state = (lib, seconds)
                except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as err:
                    _state = False
                    warnings.warn(f"posenc: the C++ RoPE kernel for CPU could not be built ({err}); RoPE on "
                                  "CPU uses inductor's kernel, or the eager rotation where that cannot be "
                                  "compiled either", RuntimeWarning, stacklevel=3)
    return _state[0] if _state else None


def build_seconds() -> float | None:
    """Seconds this process spent compiling the library (0.0: it was in the cache); None where it
    was not built (not needed yet, or unavailable)."""
    return _state[1] if _state else None


def _merged(shape: list[int], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Leading dimensions with size-1 ones dropped and neighbours merged where every tensor's memory
    allows (stride of the outer = stride of the inner × its size), while there are more than four."""
    if 1 in shape:
        keep = [i for i, s in enumerate(shape) if s != 1]
        shape, strides = [shape[i] for i in keep], [[st[i] for i in keep] for st in strides]
    i = 0
    while len(shape) > LEAD_DIMS and i < len(shape) - 1:
        if all(st[i] == st[i + 1] * shape[i + 1] for st in strides):
            shape[i + 1] *= shape[i]
            del shape[i]
            for st in strides:
                del st[i]
        else:
            i += 1
    return shape, strides


@functools.lru_cache(maxsize=64)
def _layout(
    x_shape: torch.Size, x_stride: tuple[int, ...], out_stride: tuple[int, ...], cos_shape: torch.Size,
    cos_stride: tuple[int, ...],
) -> ctypes.Array | bool:
    """The kernel's layout argument for x, out and the tables of these shapes and strides, or False
    where more than four leading dimensions do not merge (cached: building it costs more than the
    kernel call on a small input)."""
    lead = x_shape[:-1]
    rank = len(lead)
    # the tables' strides over x's leading dimensions (0 where they broadcast)
    offset = rank - (len(cos_shape) - 1)
    if offset < 0 or cos_shape[-1] > x_shape[-1] // 2 or any(
        cos_shape[i - offset] not in (1, lead[i]) for i in range(offset, rank)
    ):
        raise ValueError(f"angle tables of shape {tuple(cos_shape)} do not broadcast onto x of shape {tuple(x_shape)}")
    table = [0] * rank
    for i in range(offset, rank):
        if cos_shape[i - offset] != 1:
            table[i] = cos_stride[i - offset]
    shape, (xs, os_, ts) = _merged(list(lead), [list(x_stride[:-1]), list(out_stride[:-1]), table])
    if len(shape) > LEAD_DIMS:
        return False
    pad = LEAD_DIMS - len(shape)
    return _Layout(*([1] * pad + shape), *([0] * pad + xs), *([0] * pad + os_), *([0] * pad + ts))


def int64_bounds(positions: torch.Tensor) -> tuple[int, int, bool] | None:
    """``(low, high, consecutive)`` of non-empty, contiguous int64 CPU ``positions`` read in one pass by
    the library, or None where it is not loaded yet (this never builds it) or the positions are of
    another dtype or layout. ``consecutive``: a single row whose every step is +1."""
    if not _state or positions.dtype != torch.int64 or not positions.is_contiguous():
        return None
    bounds = _Bounds()
    consecutive = _state[0].posenc_int64_bounds(positions.data_ptr(), positions.numel(), bounds)
    one_row = positions.shape[-1] == positions.numel()
    return bounds[0], bounds[1], bool(consecutive) and one_row and bounds[1] - bounds[0] + 1 == positions.numel()


def rotate_into(x: torch.Tensor, out: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                interleaved: bool, sign: float = 1.0) -> bool:
    """Write the rotation of ``x`` ``(..., d)`` (unit last stride) into ``out`` (same shape and dtype,
    unit last stride; may be ``x`` itself). cos, sin: ``(..., r/2)`` tables of one shape and strides,
    unit last stride, in the arithmetic dtype, broadcastable to x's leading shape. ``sign=-1`` rotates
    by the opposite angle. False (nothing written) where the library is unavailable or x has more than
    four leading dimensions that memory does not let merge."""
    if library() is None:
        return False
    layout = _layout(x.shape, x.stride(), out.stride(), cos.shape, cos.stride())
    if layout is False:
        return False
    _functions[x.dtype, interleaved](
        x.data_ptr(), out.data_ptr(), cos.data_ptr(), sin.data_ptr(), layout, x.shape[-1], cos.shape[-1], sign,
        torch.get_num_threads(), STREAM_MIN_BYTES,
    )
    return True
