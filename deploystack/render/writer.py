"""Write a rendered project: compare first (that gives --dry-run), then replace file by file.

All rendering happens in memory before the first write, so a failing template or spec leaves the
previous output untouched. Files are replaced one by one with os.replace rather than by swapping
the whole folder, because running containers bind-mount folders of the output (config/lbc) and a
swapped folder would leave them reading the old one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from deploystack.atomicfile import write_atomically
from deploystack.render.sourcetree import FileData

# Folders that generate owns entirely: files there that the new render lacks are removed.
MANAGED = ("build", "config")


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
        path = output / name
        if not path.is_file():
            changes.created.append(name)
        elif path.read_bytes() != files[name].data or (path.stat().st_mode & 0o777) != files[name].mode:
            changes.changed.append(name)
        else:
            changes.identical.append(name)
    for folder in MANAGED:
        root = output / folder
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(output).as_posix()
                if (path.is_file() or path.is_symlink()) and rel not in files:
                    changes.removed.append(rel)
    return changes


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
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path)
