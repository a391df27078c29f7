"""Files replaced in one step: a reader (or a run resumed after a crash) sees the old content or the new,
never a part. Every file omnigpt writes for later reading goes through `write_atomic`, and a write that
fails (a full disk, a read-only folder, an output path under a file) raises a `WriteError` whose message
is one line naming the path and what was being written."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Optional


class WriteError(OSError):
    """A file or folder could not be written: an `OSError` with the cause's errno, whose message reads
    'could not write WHAT to PATH: REASON' (make one with `write_error`)."""

    reason: str = ""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def write_error(what: Optional[str], path: str | Path, cause: BaseException) -> WriteError:
    """The `WriteError` for a failure `cause` (an `OSError`, or a library's error wrapping one) while
    writing `what` ('the checkpoint', say; None names the path alone) to `path`."""
    code = cause.errno if isinstance(cause, OSError) else _rust_errno(cause)
    reason = cause.reason if isinstance(cause, WriteError) and cause.reason else _reason(cause, code, Path(path))
    target = f"{what} to {path}" if what else str(path)
    exc = WriteError(code, f"could not write {target}: {reason}", str(path))
    exc.reason = reason
    return exc


def _file_in_the_way(path: Path) -> Optional[Path]:
    """The nearest folder of `path` that is a file instead."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return parent if not parent.is_dir() else None
    return None


def _reason(cause: BaseException, code: Optional[int], path: Path) -> str:
    """The cause in words, on one line ('No space left on device'), without Python's '[Errno N]' or path."""
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(path)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    if code == errno.EISDIR:
        return "it is a folder"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied (a read-only folder?)"
    if code == errno.EROFS:
        return "the file system is read-only"
    if code is not None:
        return os.strerror(code)
    return " ".join(str(cause).split()) or type(cause).__name__


def _rust_errno(cause: BaseException) -> Optional[int]:
    """The errno inside a safetensors error ('I/O error: No space left on device (os error 28)'), if any."""
    found = re.search(r"\(os error (\d+)\)", str(cause))
    return int(found.group(1)) if found else None


def is_write_failure(exc: BaseException) -> bool:
    """Whether `exc` is a failure of the file system: an `OSError`, or a library's error wrapping one (the
    safetensors writer reports 'I/O error: ... (os error N)' in its own exception type)."""
    return isinstance(exc, OSError) or _rust_errno(exc) is not None


def write_atomic(path: str | Path, data: str | bytes, what: Optional[str] = None) -> Path:
    """Write `data` (text as UTF-8) to a temporary file beside `path`, flush it to disk, then rename it over
    `path` (making its folder). On any failure the temporary file is removed and `path` keeps what it held;
    a failure of the file system is raised as a `WriteError` naming `path` and `what` ('the plot', say)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise write_error(what, path, exc) from exc
        raise
    return path
