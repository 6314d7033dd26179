"""Writing to the output folder and the spec: what differs from the rendered project, atomically."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

from deploystack.render import writer
from deploystack.render.sourcetree import FileData

if TYPE_CHECKING:
    from deploystack.engine.report import Reporter
    from deploystack.render.project import Rendered, SwarmRendered


def write_rendered(rendered: Rendered, report: Reporter | None = None) -> None:
    """Write what differs between `rendered` and the output on disk (the caller holds the lock)."""
    changes = writer.compare(rendered.files, rendered.output)
    if changes.any:
        if report is not None:
            report.step(f"generating {rendered.output} ({len(changes.created)} new, "
                        f"{len(changes.changed)} changed, {len(changes.removed)} removed files)")
        writer.write(rendered.files, rendered.output, changes)


def write_swarm(swarm: SwarmRendered) -> None:
    """The stack file and the config and secret files it names, where they differ from what is there."""
    writer.write(swarm.files, swarm.folder, writer.compare(swarm.files, swarm.folder))
    swarm.stack_file.parent.mkdir(parents=True, exist_ok=True)
    if not swarm.stack_file.is_file() or swarm.stack_file.read_bytes() != swarm.stack_yaml:
        write_bytes_atomically(swarm.stack_file, swarm.stack_yaml)


def write_text_atomically(path: Path, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Replace `path` (keeping its mode when it exists) so that a reader sees the old or the new file."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    writer.replace_file(path, FileData(data, mode))
