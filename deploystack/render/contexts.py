"""Build contexts, assembled in memory: compose/<role>/ + shared helpers + CA bundle (+ app source).

Each context's content hash becomes its image tag, so an unchanged context is never rebuilt and a
changed one gives a new tag (and so a new config hash for the services that run it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploystack.errors import UsageError
from deploystack.plan.model import Build
from deploystack.render.appimage import app_context
from deploystack.render.sourcetree import FileData, source_tree, tree
from deploystack.resources import compose_root, package_root

KIT = "_deploystack"  # deploystack's runtime files in the context of an app with its own Dockerfile

def context_files(build: Build, app_source: Path | None, ca_bundle: bytes,
                  excluded: tuple[Path, ...] = ()) -> dict[str, FileData]:
    """The files of one build context, keyed by path inside the context (`app_source`: an app's folder;
    `excluded`: paths never to copy from it, such as the output folder and key files)."""
    image = build.app_image
    if app_source is not None and not (app_source / "manage.py").is_file():
        raise UsageError(f"app source {app_source} is not a Django project (no manage.py there)")
    if image is not None and image.dockerfile is not None:
        return own_dockerfile_context(build, image.dockerfile, app_source, ca_bundle, excluded)
    role_dir = compose_root() / build.role
    files = {name: data for name, data in tree(role_dir, "").items() if not name.endswith(".j2")}
    files |= tree(compose_root() / "_sourced", "_sourced")
    files["ca-bundle.crt"] = FileData(ca_bundle)
    if app_source is not None and image is not None and build.app is not None:
        files |= app_context(build.app, image, app_source, excluded)
        files |= contrib_package("deploystack")
    if build.with_package:
        files |= package_source()
    return files


def own_dockerfile_context(build: Build, dockerfile: str, app_source: Path | None, ca_bundle: bytes,
                           excluded: tuple[Path, ...]) -> dict[str, FileData]:
    """An app with its own Dockerfile: its source is the context, with deploystack's runtime kit beside
    it in `_deploystack/` (entrypoint, health checks, nginx.conf, helpers, the contrib package) for the
    Dockerfile to copy (docs/CONTRACTS.md)."""
    assert app_source is not None, "an app with its own Dockerfile has a source"
    if not (app_source / dockerfile).is_file():
        raise UsageError(f"app {build.app}: dockerfile {dockerfile} not found in {app_source}")
    files = source_tree(app_source, "", excluded, dockerfile=dockerfile)
    kit = {name: data for name, data in tree(compose_root() / "apc", KIT).items() if not name.endswith(".j2")}
    kit |= tree(compose_root() / "_sourced", KIT)
    kit[f"{KIT}/ca-bundle.crt"] = FileData(ca_bundle)
    return files | kit | contrib_package(f"{KIT}/deploystack")


def contrib_package(prefix: str) -> dict[str, FileData]:
    """deploystack/__init__.py and deploystack/contrib/ (the settings helper and DB router) under prefix/,
    so that `import deploystack.contrib.django` works where prefix/ is on PYTHONPATH."""
    package = package_root()
    files = {f"{prefix}/deploystack/__init__.py": FileData((package / "__init__.py").read_bytes())}
    return files | tree(package / "contrib", f"{prefix}/deploystack/contrib")


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
