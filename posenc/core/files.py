"""Writing result files so that an interruption never leaves a torn or half-written one."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file-creation mask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then move it into place.

    The file gets the mode an ordinary ``open(path, "w")`` would give it (0o666 less the umask,
    0o644 under the usual 022), not ``mkstemp``'s private 0o600, so results can be shared and served.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None:  # name the file asked for, not the temporary
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
