"""Files read into build contexts: deploystack's own folders, and a user's source with Docker's own
.dockerignore semantics (docker-py's matcher: a pure function, no engine involved)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Never copied from a user's source into an image, whatever .dockerignore says (they come last, so a
# `!` line cannot bring them back): version control, virtualenvs, caches, node_modules (the asset
# stage runs npm ci itself), local databases, and dotenv files, which hold secrets.
_NEVER = (".git", ".hg", ".svn", "__pycache__", "*.pyc", ".venv", "venv", ".tox", ".nox", "node_modules",
          ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store", "db.sqlite3", ".env", ".env.*", ".envs",
          ".deploystack", "staticfiles")
# At any depth, and everything below (a later `!` pattern could otherwise bring a folder's files back).
ALWAYS_EXCLUDED = tuple(pattern for name in _NEVER for pattern in (f"**/{name}", f"**/{name}/**"))
# deploystack's own folders: caches skipped, and _data (compose/ and blueprints/ inside an installed wheel).
OWN_SKIPPED = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store", "_data"})


@dataclass(frozen=True)
class FileData:
    data: bytes
    mode: int = 0o644


def tree(root: Path, prefix: str) -> dict[str, FileData]:
    """Every file below one of deploystack's own folders as prefix/relative-path, caches skipped."""
    files: dict[str, FileData] = {}
    for rel, entry in sorted(entries_below(root, _own_skipped), key=lambda found: found[0].split("/")):
        if entry.is_file():
            with open(entry.path, "rb") as handle:
                files[_join(prefix, rel)] = FileData(handle.read(), entry.stat().st_mode & 0o777)
    return files


def _own_skipped(name: str) -> bool:
    return name in OWN_SKIPPED or name.endswith(".pyc")


def entries_below(folder: Path | str, skipped: Callable[[str], bool] = lambda name: False,
                  rel: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path relative to `folder`, entry) of everything below it but folders, not looking into linked
    folders and leaving out names `skipped` says (and all below them), in no order. os.scandir tells a
    file from a folder without the stat calls of Path.rglob and is_file (half of generate's reading)."""
    try:
        found = list(os.scandir(folder))
    except PermissionError:  # as Path.rglob: what cannot be listed is left out
        return
    for entry in found:
        if skipped(entry.name):
            continue
        name = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from entries_below(entry.path, skipped, name)
        else:
            yield name, entry


def source_tree(source: Path, prefix: str, excluded: tuple[Path, ...] = (),
                dockerfile: str = ".dockerignore") -> dict[str, FileData]:
    """A user's source as Docker would send it: its .dockerignore applied, ALWAYS_EXCLUDED, the paths in
    `excluded` (the output folder, key and secret files) and any generated output folder left out.
    `dockerfile` is kept even when ignored, as Docker keeps it."""
    root = source.resolve()
    patterns = [*_dockerignore(root), *ALWAYS_EXCLUDED]
    for path in excluded:
        inside = _relative(root, path.resolve())
        if inside is not None:
            patterns.append(inside if inside != "." else "**")
    kept = sorted(_exclude_paths()(str(root), patterns, dockerfile=dockerfile))
    outputs = {os.path.dirname(name) for name in kept if os.path.basename(name) == "compose.yaml"
               and (root / os.path.dirname(name) / ".env").is_file()}
    files: dict[str, FileData] = {}
    for name in kept:
        path = root / name
        if path.is_file() and not any(name.startswith(f"{folder}/") or not folder for folder in outputs):
            files[_join(prefix, name)] = FileData(path.read_bytes(), _mode(path))
    return files


def _dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _relative(root: Path, path: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _mode(path: Path) -> int:
    """The file's own permission bits, as `docker build` keeps them (a 0600 file stays 0600)."""
    return path.stat().st_mode & 0o777


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


_MATCHER_PACKAGE = "_deploystack_dockerpy"  # docker-py's folders under a name of our own, with no __init__


def _exclude_paths() -> Callable[..., set[str]]:
    """docker-py's .dockerignore matcher (`docker.utils.build.exclude_paths`, which needs only
    `docker.constants` and `docker.utils.fnmatch`), loaded from docker-py's own files without running
    `docker/__init__.py`: that imports the whole client (requests, urllib3, http.client), most of what
    `generate` would otherwise spend starting up, for a pure function. When the engine side has imported
    docker already, its module is used."""
    if "docker" in sys.modules:
        return importlib.import_module("docker.utils.build").exclude_paths  # type: ignore[no-any-return]
    if f"{_MATCHER_PACKAGE}.utils.build" not in sys.modules:
        spec = importlib.util.find_spec("docker")  # finds the package without importing it
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError("docker")
        locations = list(spec.submodule_search_locations)
        for name, paths in ((_MATCHER_PACKAGE, locations),
                            (f"{_MATCHER_PACKAGE}.utils", [os.path.join(p, "utils") for p in locations])):
            package = types.ModuleType(name)
            package.__path__ = paths
            sys.modules.setdefault(name, package)
    return importlib.import_module(f"{_MATCHER_PACKAGE}.utils.build").exclude_paths  # type: ignore[no-any-return]
