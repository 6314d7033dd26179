"""The one atomic file writer: a reader of the path sees the old file or the new one, never half of one.

The content goes to a hidden temporary file beside the path (`.<name>.<random>.partial`, its mode set
before the first byte: `.env` and backups are never world-readable) and is renamed over the path only
when the block ends without an exception; on one, the temporary file is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_writer(path: Path, mode: int = 0o644, durable: bool = False) -> Iterator[BinaryIO]:
    """`durable`: fsync before the rename (a backup must survive a crash right after we report it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as handle:
        handle.write(data)
