"""Projects shaped like real ones deploy as they are (issue #12), checked as their users would: the page
through the LBC, the static files, the Python and Django that run, and what is (not) in the images.

The fixtures under tests/fixtures/projects/ are written for these tests: `shop` (Django 6.1 on Python 3.13,
uv.lock, an npm asset build), `legacy` (Python 3.11, a requirements/ tree, psycopg2 and pycurl built from
source, uWSGI), `custom` (its own Dockerfile) and `inplace` (poetry, with deploystack.yaml, stack/ and its
TLS files inside the project's own folder).
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploystack.engine.report import Silent
from deploystack.operations import Session
from deploystack.operations import stack as stack_ops
from deploystack.testing import StackUnderTest

pytestmark = pytest.mark.docker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "projects"


def get(stack: StackUnderTest, path: str) -> requests.Response:
    reply = requests.get(stack.url(path), verify=False, timeout=10)
    assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text[:300]}"
    return reply


def run_in_image(image: str, script: str) -> tuple[int, str]:
    """Run `script` with sh in a throwaway container of `image` (no network): (exit code, output)."""
    client = docker.from_env()
    container = client.containers.create(image, entrypoint=["sh", "-c", script], network_disabled=True)
    try:
        container.start()
        code = int(container.wait(timeout=60)["StatusCode"])
        return code, container.logs().decode()
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def realworld() -> Iterator[StackUnderTest]:
    with StackUnderTest(FIXTURES / "realworld.yaml") as stack:
        yield stack


def image_of(stack: StackUnderTest, app: str) -> str:
    return Session(stack.target).rendered.images[app]


def test_django_6_on_python_3_13_from_a_uv_lock(realworld: StackUnderTest) -> None:
    about = get(realworld, "/shop/about/").json()
    assert about["python"].startswith("3.13.") and about["django"].startswith("6.1.")
    assert about["db"] is True and about["executable"].startswith("/opt/venv/bin/python")
    # The lock's dev group stays out; its exact versions are what runs.
    code, listing = run_in_image(image_of(realworld, "shop"), "pip list --format=freeze")
    assert code == 0 and "pytest" not in listing.lower()
    lock = (FIXTURES / "shop" / "uv.lock").read_text()
    django_pin = listing.split("Django==")[1].split()[0]
    assert f'name = "django"\nversion = "{django_pin}"' in lock


def test_the_npm_asset_build_is_served_as_a_static_file(realworld: StackUnderTest) -> None:
    script = get(realworld, "/shop/static/shop.js").text
    assert "isNumber(42) = true" in script  # written by `npm run build` with a package `npm ci` fetched


def test_a_requirements_tree_with_c_extensions_on_python_3_11(realworld: StackUnderTest) -> None:
    about = get(realworld, "/legacy/about/").json()
    assert about["python"].startswith("3.11.") and about["django"].startswith("5.2.")
    assert about["pycurl"].startswith("PycURL/") and "libcurl/" in about["pycurl"]
    assert about["psycopg2"].startswith("2.9")
    assert about["users"] == 0  # the migrations ran, through psycopg2, and the table answers
    css = get(realworld, "/legacy/static/admin/css/base.css")  # the admin's static files, under its route
    assert "text/css" in css.headers["Content-Type"]


def test_the_runtime_images_have_no_compiler_and_only_production_requirements(realworld: StackUnderTest) -> None:
    for app in ("shop", "legacy"):
        code, found = run_in_image(image_of(realworld, app), "command -v gcc cc c++ make || true")
        assert code == 0 and found.strip() == "", f"{app}: {found}"
    code, listing = run_in_image(image_of(realworld, "legacy"), "pip list --format=freeze")
    assert code == 0 and "psycopg2==" in listing and "pycurl==" in listing
    assert "django-debug-toolbar" not in listing.lower()  # requirements/local.txt is not included


def test_an_app_with_its_own_dockerfile(realworld: StackUnderTest) -> None:
    assert get(realworld, "/custom/about/").json() == {"built_by": "custom-dockerfile"}
    assert "custom image" in get(realworld, "/custom/static/custom/site.css").text


def test_dockerignore_is_honoured_in_the_image(realworld: StackUnderTest) -> None:
    code, found = run_in_image(image_of(realworld, "shop"), "cd /app && find . -type f | sort")
    assert code == 0
    files = set(found.split())
    assert "./notes/KEEP.md" in files and "./notes/todo.md" not in files and "./debug.log" not in files
    assert not any("node_modules" in name for name in files)


# -- source: . with stack/ and the TLS files inside the project --------------------------------------


def self_signed(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir()
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (folder / "key.pem").chmod(0o600)


def test_source_dot_converges_and_no_key_enters_the_image(tmp_path: Path) -> None:
    project = tmp_path / "blog"
    shutil.copytree(FIXTURES / "inplace", project)
    self_signed(project / "tls")
    (project / ".env.production").write_text("STRIPE_KEY=sk_live_never_in_an_image\n")
    with StackUnderTest(project / "deploystack.yaml", output=project / "stack") as stack:
        about = get(stack, "/about/").json()  # poetry.lock's versions, Django 6.1 on 3.13
        assert about["django"].startswith("6.1.") and about["markdown"].startswith("3.")
        assert "blog's own stylesheet" in get(stack, "/static/blog/blog.css").text
        again = subprocess.run([sys.executable, "-m", "deploystack", "generate", "-f", str(stack.spec),
                                "-o", str(project / "stack")], capture_output=True, text=True, timeout=120,
                               env=os.environ | {"NO_COLOR": "1"})
        assert again.returncode == 0 and ": 0 created, 0 changed, 0 removed," in again.stdout, again.stdout
        code, found = run_in_image(image_of(stack, "blog"), "cd /app && find . -type f | sort")
        assert code == 0
        files = set(found.split())
        assert "./manage.py" in files and "./poetry.lock" in files
        leaked = [name for name in files if name.startswith(("./stack/", "./tls/", "./.env"))
                  or name.endswith(".pem")]
        assert leaked == []
        # Where a copied file could land (libraries elsewhere hold the words "PRIVATE KEY" themselves).
        code, grep = run_in_image(image_of(stack, "blog"), "grep -rl 'PRIVATE KEY\\|sk_live' /app /opt/deploystack "
                                  "/home /root /tmp /etc/deploystack 2>/dev/null || true")
        assert grep.strip() == "", grep


# -- build failures name the app and the cause ----------------------------------------------------------


BROKEN = """\
project: broken{suffix}
apc:
  apps:
    shop:
      source: {source}
      wsgi: shop.wsgi:application
      routes: [/shop/]
{extra}
"""


def build_broken(tmp_path: Path, extra: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "deploystack.yaml"
    spec.write_text(BROKEN.format(suffix=os.getpid(), source=FIXTURES / "shop", extra=extra))
    try:
        return subprocess.run([sys.executable, "-m", "deploystack", "build", "-f", str(spec)], capture_output=True,
                              text=True, timeout=1200, env=os.environ | {"NO_COLOR": "1"})
    finally:
        stack_ops.remove_project_images(f"broken{os.getpid()}", Silent())


def test_an_unknown_debian_package_fails_the_build_naming_it(tmp_path: Path) -> None:
    result = build_broken(tmp_path, "      packages: {runtime: [libcurl4t64, no-such-package-here]}")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "app shop: building broken" in result.stderr
    assert "no Debian package named no-such-package-here in Debian GNU/Linux 13 (trixie)" in result.stderr


def test_a_failing_asset_build_fails_the_build_naming_the_app(tmp_path: Path) -> None:
    result = build_broken(tmp_path, "      assets: {command: npm run no-such-script, output: frontend/dist}")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "app shop: building broken" in result.stderr and 'Missing script: "no-such-script"' in result.stderr
