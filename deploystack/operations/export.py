"""`deploystack export replica`: the offsite replica's folder for another host (render/offsite.py)."""

from __future__ import annotations

from pathlib import Path

from deploystack.errors import UsageError
from deploystack.operations.session import Session
from deploystack.render import writer


def export_replica(session: Session, folder: Path) -> writer.Changes:
    """Write the offsite replica's folder (render/offsite.py) into `folder`.

    The stack's output is generated first when stale: the password and CA in the folder must be the ones
    the primary gets at its next `up`, and they are made (once) by that generation.
    """
    from deploystack.render.offsite import BUNDLE_MARK, replica_bundle

    stack = session.stack
    if stack.dbc.offsite is None:
        raise UsageError(f"{session.spec}: dbc.offsite is not declared; declare the offsite replica there first "
                         "(see docs/db.md), then deploystack up")
    folder = folder.resolve()
    if folder.is_dir() and any(folder.iterdir()) and not (folder / BUNDLE_MARK).is_file():
        raise UsageError(f"--output {folder}: the folder is not empty and holds no earlier export; "
                         "choose an empty or new folder")
    with session.lock():
        rendered = session.generated()
    files = replica_bundle(stack, rendered)
    changes = writer.compare(files, folder)
    writer.write(files, folder, changes)
    return changes
