"""Build contexts, assembled in memory: compose/<role>/ + shared helpers + CA bundle (+ app source).

Each context's content hash becomes its image tag, so an unchanged context is never rebuilt and a
changed one gives a new tag (and so a new config hash for the services that run it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from deploystack.errors import UsageError
from deploystack.plan.model import Build
from deploystack.resources import compose_root, package_root

# Never copied from a user's source tree into an image.
SKIP_NAMES = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache",
                        ".pytest_cache", ".ruff_cache", "staticfiles", "db.sqlite3", ".DS_Store",
                        "_data", ".env"})


@dataclass(frozen=True)
class FileData:
    data: bytes
    mode: int = 0o644


def tree(root: Path, prefix: str) -> dict[str, FileData]:
    """Every file below `root` as prefix/relative-path, skipping caches and VCS folders."""
    files: dict[str, FileData] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in SKIP_NAMES or part.endswith(".pyc") for part in rel.parts):
            continue
        if path.is_file():
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            files[f"{prefix}/{rel.as_posix()}" if prefix else rel.as_posix()] = FileData(path.read_bytes(), mode)
    return files


def context_files(build: Build, app_source: Path | None, ca_bundle: bytes) -> dict[str, FileData]:
    """The files of one build context, keyed by path inside the context (`app_source`: an app's folder)."""
    role_dir = compose_root() / build.role
    files = tree(role_dir, "")
    files |= tree(compose_root() / "_sourced", "_sourced")
    files["ca-bundle.crt"] = FileData(ca_bundle)
    if app_source is not None:
        source = app_source
        if not (source / "manage.py").is_file():
            raise UsageError(f"app source {source} is not a Django project (no manage.py there)")
        files |= tree(source, "app")
        package = package_root()
        files["deploystack/deploystack/__init__.py"] = FileData((package / "__init__.py").read_bytes())
        files |= tree(package / "contrib", "deploystack/deploystack/contrib")
    if build.with_package:
        files |= package_source()
    return files


def package_source() -> dict[str, FileData]:
    """deploystack itself, installable with pip, for the CDC image that runs `deploystack deploy`."""
    package = package_root()
    checkout = package.parent
    if not (checkout / "pyproject.toml").is_file():
        raise UsageError("the CDC image needs deploystack's source checkout (pyproject.toml not found)")
    files = tree(package, "deploystack-src/deploystack")
    for name in ("pyproject.toml", "README.md"):
        files[f"deploystack-src/{name}"] = FileData((checkout / name).read_bytes())
    # `deploy` inside CDC regenerates, so it needs compose/; the wheel's force-include wants blueprints/.
    files |= tree(compose_root(), "deploystack-src/compose")
    files["deploystack-src/blueprints/.keep"] = FileData(b"")
    return files


def content_hash(files: dict[str, FileData]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + oct(files[name].mode).encode() + b"\0")
        digest.update(hashlib.sha256(files[name].data).digest())
    return digest.hexdigest()[:12]
