"""An app's build: its dependency files, its build context and the Dockerfile rendered for it (no Docker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploystack import appdeps
from deploystack.errors import UsageError
from deploystack.operations import Session, Target
from deploystack.plan.apc import app_image
from deploystack.render.appimage import dockerfile
from deploystack.render.sourcetree import source_tree
from deploystack.spec import load_stack

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "projects"


def files(root: Path, tree: dict[str, str]) -> Path:
    for name, text in tree.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def django_project(root: Path, **extra: str) -> Path:
    return files(root, {"manage.py": "", **extra})


# -- dependencies ----------------------------------------------------------------------------------


def test_requirements_includes_are_followed_at_any_depth_keeping_their_layout() -> None:
    deps = appdeps.detect("legacy", FIXTURES / "legacy", None)
    assert deps.kind == "requirements" and deps.manifest == "requirements.txt"
    assert deps.files == ("requirements.txt", "requirements/production.txt", "requirements/base.txt",
                          "requirements/constraints.txt")  # local.txt is not included: not copied


@pytest.mark.parametrize("line", ["-r more.txt", "--requirement more.txt", "--requirement=more.txt",
                                  "-rmore.txt", "-c more.txt", "--constraint=more.txt"])
def test_every_spelling_of_an_include(tmp_path: Path, line: str) -> None:
    files(tmp_path, {"requirements.txt": f"django\n{line}  # a comment\n", "more.txt": "celery\n"})
    assert appdeps.detect("web", tmp_path, None).files == ("requirements.txt", "more.txt")


def test_an_include_outside_the_app_is_refused(tmp_path: Path) -> None:
    files(tmp_path, {"app/requirements.txt": "-r ../shared.txt\n", "shared.txt": ""})
    with pytest.raises(UsageError, match=r"app web: requirements.txt includes ../shared.txt, outside"):
        appdeps.detect("web", tmp_path / "app", None)


def test_a_missing_include_is_named(tmp_path: Path) -> None:
    files(tmp_path, {"requirements.txt": "-r requirements/prod.txt\n"})
    with pytest.raises(UsageError, match=r"app web: requirements/prod.txt, included by the requirements, not found"):
        appdeps.detect("web", tmp_path, None)


def test_detection_order_lock_files_first(tmp_path: Path) -> None:
    files(tmp_path, {"pyproject.toml": '[project]\nname = "x"\ndependencies = ["django"]\n',
                     "requirements.txt": "django\n"})
    assert appdeps.detect("web", tmp_path, None).kind == "requirements"
    (tmp_path / "poetry.lock").write_text("")
    assert appdeps.detect("web", tmp_path, None).kind == "poetry"
    (tmp_path / "uv.lock").write_text("")
    deps = appdeps.detect("web", tmp_path, None)
    assert (deps.kind, deps.files) == ("uv", ("uv.lock", "pyproject.toml"))
    assert appdeps.detect("web", tmp_path, "requirements.txt").kind == "requirements"  # the spec's word wins


def test_cookiecutter_layout_without_a_top_level_file(tmp_path: Path) -> None:
    files(tmp_path, {"requirements/production.txt": "-r base.txt\n", "requirements/base.txt": "django\n"})
    assert appdeps.detect("web", tmp_path, None).files == ("requirements/production.txt", "requirements/base.txt")


def test_pyproject_dependencies_and_none(tmp_path: Path) -> None:
    files(tmp_path, {"pyproject.toml": '[project]\nname = "x"\nrequires-python = ">=3.12"\n'
                                       'dependencies = ["django>=6", "celery[redis]"]\n'})
    deps = appdeps.detect("web", tmp_path, None)
    assert (deps.kind, deps.requires_python) == ("pyproject", ">=3.12")
    assert appdeps.pyproject_requirements(tmp_path, deps.manifest) == "django>=6\ncelery[redis]\n"
    (tmp_path / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")  # tooling only
    assert appdeps.detect("web", tmp_path, None).kind == "none"


def test_a_lock_file_needs_its_pyproject(tmp_path: Path) -> None:
    files(tmp_path, {"uv.lock": ""})
    with pytest.raises(UsageError, match="app web: uv.lock needs the pyproject.toml beside it"):
        appdeps.detect("web", tmp_path, None)


# -- the build context -----------------------------------------------------------------------------


def test_dockerignore_with_dockers_own_semantics() -> None:
    names = set(source_tree(FIXTURES / "shop", "app"))
    assert "app/notes/KEEP.md" in names  # brought back by a ! line
    assert "app/notes/todo.md" not in names and "app/debug.log" not in names
    assert "app/uv.lock" in names and "app/package.json" in names


def test_always_excluded_whatever_dockerignore_says(tmp_path: Path) -> None:
    django_project(tmp_path, **{
        ".dockerignore": "!.env\n!node_modules\n", ".env": "SECRET=1", ".env.production": "SECRET=2",
        ".git/config": "", "node_modules/x/index.js": "", ".venv/bin/python": "", "web/__pycache__/a.pyc": "",
        "web/views.py": ""})
    assert set(source_tree(tmp_path, "")) == {"manage.py", ".dockerignore", "web/views.py"}


def test_file_modes_are_kept(tmp_path: Path) -> None:
    django_project(tmp_path, **{"bin/run": "#!/bin/sh\n", "private.txt": "x"})
    (tmp_path / "bin/run").chmod(0o750)
    (tmp_path / "private.txt").chmod(0o600)
    tree = source_tree(tmp_path, "app")
    assert (tree["app/bin/run"].mode, tree["app/private.txt"].mode) == (0o750, 0o600)


def test_another_generated_output_inside_the_source_is_left_out(tmp_path: Path) -> None:
    django_project(tmp_path, **{"old-stack/compose.yaml": "", "old-stack/.env": "K=v",
                                "old-stack/offsite/ca.key": "KEY", "old-stack/build/x": ""})
    assert set(source_tree(tmp_path, "")) == {"manage.py"}


SOURCE_DOT = """\
project: dotproject
lbc:
  tls: files
  cert_file: tls/cert.pem
  key_file: tls/key.pem
apc:
  apps:
    web:
      source: .
      wsgi: web.wsgi:application
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploystack", *args], capture_output=True, text=True, cwd=cwd,
                          env=os.environ | {"NO_COLOR": "1"}, timeout=120)


def test_source_dot_converges_and_keeps_keys_and_output_out(tmp_path: Path) -> None:
    """The README's short spec: the spec, stack/ and the TLS folder all inside the app's own folder."""
    django_project(tmp_path, **{"deploystack.yaml": SOURCE_DOT, "web/__init__.py": "", "web/wsgi.py": "",
                                "tls/cert.pem": "CERT", "tls/key.pem": "PRIVATE KEY",
                                "requirements.txt": "django\n"})
    first = cli("generate", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = cli("generate", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert ": 0 created, 0 changed, 0 removed, " in second.stdout  # converged: nothing copied again
    context = tmp_path / "stack/build/apps/web/app"
    copied = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    assert copied == {"manage.py", "web/__init__.py", "web/wsgi.py", "requirements.txt"}


# -- the Dockerfile ----------------------------------------------------------------------------------


def test_no_compiler_where_the_app_runs_and_the_spec_packages_in_their_stage() -> None:
    stack = load_stack(FIXTURES / "realworld.yaml")
    legacy = stack.apc.apps["legacy"]
    text = dockerfile("legacy", app_image(legacy), appdeps.detect("legacy", FIXTURES / "legacy", None))
    builder, runtime = text.split("\nFROM ${BASE_IMAGE}\n")
    assert "build-essential" in builder and "libcurl4-openssl-dev" in builder
    assert "build-essential" not in runtime and "-dev" not in runtime and "libcurl4" in runtime
    assert "ARG BASE_IMAGE=deploystack/base:bookworm" in text  # python: "3.11"
    assert "pip install --quiet -r requirements.txt" in builder and "'uwsgi" in builder


def test_uv_and_asset_stages() -> None:
    stack = load_stack(FIXTURES / "realworld.yaml")
    shop = stack.apc.apps["shop"]
    text = dockerfile("shop", app_image(shop), appdeps.detect("shop", FIXTURES / "shop", None))
    assert "ARG BASE_IMAGE=deploystack/base:trixie" in text
    assert "uv sync --directory . --frozen --no-dev --no-install-project" in text
    assert "FROM ${BASE_IMAGE} AS assets" in text and "RUN with-ca sh -c 'npm run build'" in text
    assert "COPY --from=assets /src/frontend/dist /app/frontend/dist" in text


def test_rendered_contexts_hold_only_declared_dependency_files(tmp_path: Path) -> None:
    rendered = Session(Target(FIXTURES / "realworld.yaml", tmp_path / "out")).rendered
    deps = sorted(name for name in rendered.files if name.startswith("build/apps/legacy/deps/"))
    assert deps == ["build/apps/legacy/deps/requirements.txt", "build/apps/legacy/deps/requirements/base.txt",
                    "build/apps/legacy/deps/requirements/constraints.txt",
                    "build/apps/legacy/deps/requirements/production.txt"]
    custom = {name for name in rendered.files if name.startswith("build/apps/custom/")}
    assert "build/apps/custom/Dockerfile" in custom and "build/apps/custom/_deploystack/apc-health" in custom
    assert "build/apps/custom/_deploystack/deploystack/deploystack/contrib/django/conf.py" in custom


# -- the Python an app asks for ----------------------------------------------------------------------


def spec_with(tmp_path: Path, source: Path, python: str) -> Path:
    spec = tmp_path / "deploystack.yaml"
    spec.write_text(f"project: p\napc:\n  apps:\n    web:\n      source: {source}\n"
                    f"      wsgi: shop.wsgi:application\n      python: {python}\n")
    return spec


def test_an_unknown_python_names_the_versions_there_are(tmp_path: Path) -> None:
    result = cli("validate", "-f", str(spec_with(tmp_path, FIXTURES / "shop", '"3.12"')), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "apc.apps.web.python (line 7): must be one of '3.13' or '3.11' (got '3.12')" in result.stderr


def test_a_project_that_needs_a_newer_python_gets_a_hint(tmp_path: Path) -> None:
    result = cli("validate", "-f", str(spec_with(tmp_path, FIXTURES / "shop", "3.11")), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert ("apc.apps.web.python (line 7): Python 3.11 does not satisfy the project's requires-python '>=3.12' "
            '(pyproject.toml): use python: "3.13"') in result.stderr
    assert cli("validate", "-f", str(spec_with(tmp_path, FIXTURES / "shop", "3.13")), cwd=tmp_path).returncode == 0


def test_migrations_of_apps_sharing_the_database_run_one_after_another() -> None:
    from deploystack.plan import build_plan

    plan = build_plan(load_stack(FIXTURES / "realworld.yaml"))
    assert "shop-migrate" not in plan.service("shop-migrate").depends_on
    assert "shop-migrate" in plan.service("legacy-migrate").depends_on
    assert "legacy-migrate" in plan.service("custom-migrate").depends_on
