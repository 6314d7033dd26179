"""Write a rendered project: compare first (that gives --dry-run), then replace file by file.

All rendering happens in memory before the first write, so a failing template or spec leaves the
previous output untouched. Files are replaced one by one with os.replace rather than by swapping
the whole folder, because running containers bind-mount folders of the output (config/lbc) and a
swapped folder would leave them reading the old one.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from deploystack.atomicfile import write_atomically
from deploystack.render.sourcetree import FileData, entries_below

# Folders that generate owns entirely: files there that the new render lacks are removed.
MANAGED = ("build", "config")
_NO_FILE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)  # Path.is_file's "no file here"


@dataclass
class Changes:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    identical: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.created or self.changed or self.removed)


def compare(files: dict[str, FileData], output: Path) -> Changes:
    changes = Changes()
    for name in sorted(files):
        differ = differs(os.path.join(output, name), files[name])
        if differ is None:
            changes.created.append(name)
        elif differ:
            changes.changed.append(name)
        else:
            changes.identical.append(name)
    for folder in MANAGED:
        if (output / folder).is_dir():
            gone = [f"{folder}/{rel}" for rel, entry in entries_below(output / folder)
                    if (entry.is_symlink() or entry.is_file()) and f"{folder}/{rel}" not in files]
            changes.removed += sorted(gone, key=lambda rel: rel.split("/"))  # as paths sort: a/b before a-c
    return changes


def differs(path: str, content: FileData, *, mode: bool = True) -> bool | None:
    """The one comparison of a rendered file with the disk (`compare`'s, and engine/reload.py's for a service's
    config files): None when no file is at `path`, else whether its bytes differ from `content`'s, or its
    permission bits unless `mode=False` (bytes only: what a container reads, reload's question)."""
    on_disk = _file_at(path)
    if on_disk is None:
        return None
    data, bits = on_disk
    return data != content.data or (mode and bits != content.mode)


def _file_at(path: str) -> tuple[bytes, int] | None:
    """The bytes and permission bits of the file at `path`; None when no file is there (as Path.is_file, which
    this replaces with one stat call instead of two, and strings instead of Path objects)."""
    try:
        status = os.stat(path)
    except OSError as exc:
        if exc.errno in _NO_FILE:
            return None
        raise
    if not stat.S_ISREG(status.st_mode):
        return None
    with open(path, "rb") as handle:
        return handle.read(), status.st_mode & 0o777


def write(files: dict[str, FileData], output: Path, changes: Changes) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for name in changes.created + changes.changed:
        replace_file(output / name, files[name])
    for name in changes.removed:
        (output / name).unlink()
    for folder in MANAGED:
        _remove_empty_dirs(output / folder)


def replace_file(path: Path, content: FileData) -> None:
    write_atomically(path, content.data, content.mode)


def _remove_empty_dirs(root: Path) -> None:
    """Folders below `root` left empty, deepest first (so a folder that held only empty ones goes too)."""
    if not root.is_dir():
        return
    for folder, _, _ in os.walk(root, topdown=False):
        if folder != str(root) and not os.listdir(folder):
            os.rmdir(folder)
