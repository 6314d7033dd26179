"""One error hierarchy: every user-facing failure is a message and an exit code, never a traceback.

Exit codes (documented in the README):
  2  bad input: the spec, a command-line argument, a file the user named
  3  the Docker engine could not be reached or refused a request
  4  the stack did not become healthy, a build failed, or a rollout stopped
  5  another deploystack run holds the project's lock
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path


class DeployError(Exception):
    """Base class: `str(error)` is the whole message the user sees."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, at a field path and (when known) a line."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(top level)"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"


class SpecError(DeployError):
    """The spec is invalid; carries every problem found, one per line."""

    exit_code = 2

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SpecFileError(SpecError):
    """The spec file itself cannot be read (missing, a folder, unreadable): one line, not a list."""


class UsageError(DeployError):
    """A command-line argument or a named file is wrong."""

    exit_code = 2


class EngineError(DeployError):
    """The Docker engine is unreachable or refused a request."""

    exit_code = 3


class StackError(DeployError):
    """A build failed or a service did not become healthy."""

    exit_code = 4


class LockedError(DeployError):
    """Another run holds the project's lock."""

    exit_code = 5


# What a wrong path given by the user looks like to the OS: exit 2 (bad input), like any named file.
BAD_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES,
                             errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP})


def path_problem(exc: OSError) -> str:
    """One line naming the path and what is wrong with it, for an OSError nothing caught earlier."""
    reason = (exc.strerror or str(exc)).lower().replace("directory", "folder")
    if exc.filename is None:
        return reason
    path = Path(os.fsdecode(exc.filename))
    if exc.filename2 is None and not path.exists() and path.parent.is_dir():
        # writing a new file (or its temporary twin) in a folder that refuses it: name the folder
        return f"{path.parent}: cannot create files in this folder ({reason})"
    where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
    return f"{where}: {reason}"
