"""An app's build context: its source (.dockerignore applied, output and secrets left out), the files
that declare its dependencies, and the Dockerfile rendered for it (compose/apc/Dockerfile.j2)."""

from __future__ import annotations

import shlex
from pathlib import Path

from deploystack import appdeps
from deploystack.appdeps import Dependencies
from deploystack.errors import UsageError
from deploystack.plan.model import AppImage
from deploystack.render.sourcetree import FileData, source_tree
from deploystack.render.templates import render_template

# Always in the builder: a compiler, Python's headers and libpq's, so sdists such as psycopg2 build.
BUILD_PACKAGES = ("build-essential", "python3-dev", "python3-venv", "pkg-config", "libpq-dev")
# Always in the image the app runs in; the spec's runtime packages come on top.
RUNTIME_PACKAGES = ("nginx", "python3", "libpq5", "ca-certificates")
INSTALLERS = {"uv": "'uv>=0.5,<1'", "poetry": "'poetry>=2,<3'"}
PYPROJECT_REQUIREMENTS = ".deploystack-requirements.txt"  # in deps/: a pyproject's [project] dependencies


def app_context(app: str, image: AppImage, source: Path, excluded: tuple[Path, ...]) -> dict[str, FileData]:
    """`app/`, `deps/` and the Dockerfile of an app's build context (the role's files come on top)."""
    files = source_tree(source, "app", excluded)
    deps = appdeps.detect(app, source, image.dependencies)
    for name in deps.files:
        files[f"deps/{name}"] = files.get(f"app/{name}") or FileData((source / name).read_bytes())
    if deps.kind == "pyproject":
        files[f"deps/{PYPROJECT_REQUIREMENTS}"] = FileData(
            appdeps.pyproject_requirements(source, deps.manifest).encode())
    if image.assets_output is not None and "app/package.json" not in files:
        raise UsageError(f"app {app}: assets need a package.json in {source} (npm runs there)")
    files["Dockerfile"] = FileData(dockerfile(app, image, deps).encode())
    return files


def dockerfile(app: str, image: AppImage, deps: Dependencies) -> str:
    return render_template("apc/Dockerfile.j2", {
        "app": app,
        "base_image": image.base,
        "build_packages": [*BUILD_PACKAGES, *image.build_packages],
        "runtime_packages": [*RUNTIME_PACKAGES, *image.runtime_packages],
        "installer": INSTALLERS.get(deps.kind, ""),
        "install": install_command(deps),
        "server_packages": [shlex.quote(package) for package in image.server_packages],
        "assets": image.assets_output is not None,
        "assets_command": shlex.quote(image.assets_command or ""),
        "assets_output": (image.assets_output or "").rstrip("/"),
    })


def install_command(deps: Dependencies) -> str:
    """The builder's command that installs the dependencies into /opt/venv, run in deps/ (at /src)."""
    folder = shlex.quote(str(Path(deps.manifest).parent))
    match deps.kind:
        case "requirements":
            return f"pip install --quiet -r {shlex.quote(deps.manifest)}"
        case "pyproject":
            return f"pip install --quiet -r {PYPROJECT_REQUIREMENTS}"
        case "uv":
            # --frozen: the lock as it is, never re-resolved; --inexact: the server packages stay.
            return (f"/opt/installer/bin/uv sync --directory {folder} --frozen --no-dev --no-install-project "
                    "--inexact --python /opt/venv/bin/python")
        case "poetry":
            return f"/opt/installer/bin/poetry install --directory {folder} --only main --no-root --no-ansi"
    return ""
