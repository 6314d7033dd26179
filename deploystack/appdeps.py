"""How an app declares its Python dependencies, read from its folder (or named in the spec).

The files found here are copied on their own into the build context's `deps/`, keeping their layout,
so that the image's dependency layer is rebuilt only when they change, not on every code change.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from deploystack.errors import UsageError

Kind = Literal["uv", "poetry", "pyproject", "requirements", "none"]

# Found in this order when the spec names no file: a lock file is the most exact statement of a project.
REQUIREMENTS_CANDIDATES = ("requirements.txt", "requirements/production.txt", "requirements/prod.txt")
# -r/--requirement and -c/--constraint lines name other files, relative to the file they are in.
_INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+|(?=\S))(\S+)")


@dataclass(frozen=True)
class Dependencies:
    kind: Kind
    manifest: str  # the file the installer reads, relative to the app ("" for none)
    files: tuple[str, ...]  # every file the installer needs, relative to the app
    requires_python: str | None = None  # the project's own pin, when it states one


def detect(app: str, source: Path, declared: str | None) -> Dependencies:
    """The app's dependency files: the one the spec names, else uv.lock, poetry.lock, a requirements
    file, a pyproject.toml with [project] dependencies, or none."""
    if declared is not None:  # the spec's word
        if not (source / declared).is_file():
            raise UsageError(f"app {app}: dependencies file {declared} not found in {source}")
        return _of_file(app, source, declared)
    for name in ("uv.lock", "poetry.lock", *REQUIREMENTS_CANDIDATES):
        if (source / name).is_file():
            return _of_file(app, source, name)
    if _pyproject(app, source).get("project", {}).get("dependencies"):
        return _of_file(app, source, "pyproject.toml")
    return Dependencies("none", "", (), _requires_python(_pyproject(app, source)))


def _of_file(app: str, source: Path, name: str) -> Dependencies:
    path = PurePosixPath(name)
    pyproject = _pyproject(app, source)
    pin = _requires_python(pyproject)
    if path.name in ("uv.lock", "poetry.lock"):
        if not (source / path.parent / "pyproject.toml").is_file():
            raise UsageError(f"app {app}: {name} needs the pyproject.toml beside it")
        kind: Kind = "uv" if path.name == "uv.lock" else "poetry"
        return Dependencies(kind, name, (name, str(path.parent / "pyproject.toml")), pin)
    if path.name == "pyproject.toml":
        if not pyproject.get("project", {}).get("dependencies"):
            raise UsageError(f"app {app}: {name} has no [project] dependencies")
        return Dependencies("pyproject", name, (name,), pin)
    return Dependencies("requirements", name, requirement_files(app, source, name), pin)


def requirement_files(app: str, source: Path, name: str) -> tuple[str, ...]:
    """`name` and every file its -r/-c lines include, at any depth, relative to `source`."""
    found: list[str] = []
    pending = [name]
    while pending:
        current = pending.pop(0)
        if current in found:
            continue
        path = source / current
        if not path.is_file():
            raise UsageError(f"app {app}: {current}, included by the requirements, not found in {source}")
        found.append(current)
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _INCLUDE.match(line)
            if match is None:
                continue
            included = _inside(source, PurePosixPath(current).parent / shlex.split(match.group(1))[0])
            if included is None:
                raise UsageError(f"app {app}: {current} includes {match.group(1)}, outside the app's folder "
                                 f"{source}; keep requirement files inside it")
            pending.append(included)
    return tuple(found)


def _inside(source: Path, relative: PurePosixPath) -> str | None:
    resolved = (source / relative).resolve()
    try:
        return resolved.relative_to(source.resolve()).as_posix()
    except ValueError:
        return None


def pyproject_requirements(source: Path, manifest: str) -> str:
    """A pyproject.toml's [project] dependencies as a requirements file, for pip."""
    data = tomllib.loads((source / manifest).read_text(encoding="utf-8"))
    return "".join(f"{requirement}\n" for requirement in data["project"]["dependencies"])


def _pyproject(app: str, source: Path) -> dict[str, Any]:
    path = source / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"app {app}: {path} is not valid TOML: {exc}") from None


def _requires_python(pyproject: dict[str, Any]) -> str | None:
    project = pyproject.get("project")
    if isinstance(project, dict):
        pin = project.get("requires-python")
        if isinstance(pin, str):
            return pin
    return None


def requires_python(app: str, source: Path) -> str | None:
    """The project's own `requires-python` (pyproject.toml's [project]), if it states one."""
    return _requires_python(_pyproject(app, source))
