"""Files replaced in one step: a reader (or a run resumed after a crash) sees the old content or the new,
never a part. Every file omnigpt writes for later reading goes through `write_atomic`."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to a temporary file beside `path`, flush it to disk, then rename it over
    `path` (making its folder). On any failure (a full disk, say) the temporary file is removed and `path`
    keeps what it held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
