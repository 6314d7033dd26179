"""Images: the base image, builds of every context (skipped when its tag exists), registry-only checks."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import deque
from pathlib import Path

import docker
import docker.errors

from deploystack.engine.client import engine_errors
from deploystack.engine.report import Reporter
from deploystack.errors import StackError
from deploystack.render.project import Rendered

BASE_IMAGE = "deploystack/base:bookworm"
SLIM_IMAGE = ("debian", "bookworm-slim")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
STAGE_LABEL = "io.deploystack.build-stage"  # on the earlier stages of multi-stage Dockerfiles


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(client: docker.DockerClient, report: Reporter) -> None:
    """deploystack/base:bookworm from, in order: present; debian:bookworm-slim pulled; debootstrap."""
    with engine_errors("checking the base image"):
        if image_exists(client, BASE_IMAGE):
            return
    report.step(f"base image {BASE_IMAGE} missing: trying to pull {SLIM_IMAGE[0]}:{SLIM_IMAGE[1]}")
    try:
        image = client.images.pull(SLIM_IMAGE[0], tag=SLIM_IMAGE[1])
        image.tag(BASE_IMAGE)
        return
    except docker.errors.DockerException as exc:
        report.detail(f"pull failed: {exc}")
    report.step("no registry: making the base image with debootstrap (about a minute)")
    debootstrap_base(client, report)


def debootstrap_base(client: docker.DockerClient, report: Reporter) -> None:
    if shutil.which("debootstrap") is None:
        raise StackError(
            f"cannot make {BASE_IMAGE}: no registry answered and debootstrap is not installed "
            "(apt-get install debootstrap, as root), or `docker load` a Debian bookworm image and "
            f"tag it {BASE_IMAGE}"
        )
    with tempfile.TemporaryDirectory(prefix="deploystack-rootfs-") as tmp:
        rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        _run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR], report)
        _run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], report)
        repo, tag = BASE_IMAGE.split(":")
        with engine_errors("importing the base image"):
            client.api.import_image_from_file(str(tarball), repository=repo, tag=tag)
    report.step(f"made {BASE_IMAGE}")


def _run(command: list[str], report: Reporter) -> None:
    tail: deque[str] = deque(maxlen=15)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            report.detail(line.rstrip())
    if proc.returncode != 0:
        raise StackError(f"{command[0]} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def require_registry_images(client: docker.DockerClient, rendered: Rendered, report: Reporter) -> None:
    """Images we cannot build (Elasticsearch, MinIO) must be present or pullable before anything starts."""
    for service in rendered.plan.services:
        if service.build is not None or not service.image:
            continue
        with engine_errors(f"checking image {service.image}"):
            if image_exists(client, service.image):
                continue
        try:
            report.step(f"pulling {service.image} for {service.name}")
            client.images.pull(service.image)
        except docker.errors.DockerException:
            raise StackError(
                f"service {service.name} needs image {service.image}, which is not on this engine and "
                f"cannot be pulled (no registry). Either turn it off in the spec "
                f"({_spec_switch(service.name)}), or `docker load -i FILE.tar` that image on this machine "
                "and run up again. Nothing was started."
            ) from None


def _spec_switch(service: str) -> str:
    return {"elasticsearch": "acc.elasticsearch.enabled: false",
            "media": "mmc.backend: seaweedfs"}.get(service, f"disable {service}")


def build_images(client: docker.DockerClient, rendered: Rendered, report: Reporter,
                 force: bool = False) -> list[str]:
    """Build every context the plan's services use whose tag is missing; returns the images built."""
    built = []
    needed = {rendered.images[s.name] for s in rendered.plan.services}
    for job in (j for j in rendered.builds if j.image in needed):
        with engine_errors(f"checking image {job.image}"):
            if not force and image_exists(client, job.image):
                report.detail(f"{job.image} is up to date")
                continue
        report.step(f"building {job.image}")
        _build(client, rendered.output / job.context, job.image, job.args, report)
        built.append(job.image)
    if built:
        prune_superseded(client, rendered, report)
        with engine_errors("pruning build stages"):
            # The classic builder leaves each multi-stage build's earlier stages as untagged images.
            client.images.prune(filters={"dangling": True, "label": STAGE_LABEL})
    return built


def _build(client: docker.DockerClient, context: Path, image: str, args: dict[str, str],
           report: Reporter) -> None:
    tail: deque[str] = deque(maxlen=25)
    with engine_errors(f"building {image}"):
        stream = client.api.build(path=str(context), tag=image, buildargs={"BASE_IMAGE": BASE_IMAGE, **args},
                                  rm=True, forcerm=True, decode=True, pull=False)
        for chunk in stream:
            if "stream" in chunk:
                for line in str(chunk["stream"]).splitlines():
                    if line.strip():
                        tail.append(line)
                        report.detail(line)
            if "error" in chunk:
                tail.append(str(chunk["error"]).strip())
                raise StackError(f"building {image} failed; last lines:\n" + "\n".join(tail))


ROLE_REPOSITORY = "deploystack/"  # the role images every project on the engine shares


def prune_superseded(client: docker.DockerClient, rendered: Rendered, report: Reporter) -> None:
    """Remove older tags of this project's own app images, unless a container still uses them or a
    recent deploy did (rollbacks want those).

    Content-hash tags never move, so old builds stay tagged and would pile up. The role images
    (deploystack/lbc, ...) are shared by every project on the engine: another project may be about to
    start the tag this one no longer wants, so only `deploystack prune`, which a user runs, removes those.
    """
    stale = stale_images(client, wanted_images(rendered), (f"{rendered.plan.project}/",))
    remove_images(client, [tag for tag, _ in stale], report)


def wanted_images(rendered: Rendered) -> set[str]:
    """What the project runs or builds now, the images of its recent deploys, and the base image."""
    return {job.image for job in rendered.builds} | set(rendered.images.values()) | rendered.retained | {BASE_IMAGE}


def stale_images(client: docker.DockerClient, wanted: set[str], prefixes: tuple[str, ...]) -> list[tuple[str, int]]:
    """(tag, size) of the images tagged under `prefixes` that `wanted` does not name and no container
    (running or not) was made from."""
    with engine_errors("listing images"):
        in_use = {c.attrs["Image"] for c in client.containers.list(all=True)}
        return sorted((tag, int(image.attrs.get("Size", 0)))
                      for image in client.images.list() if image.id not in in_use
                      for tag in image.tags if tag.startswith(prefixes) and tag not in wanted)


def remove_images(client: docker.DockerClient, tags: list[str], report: Reporter) -> list[str]:
    """Untag each (the engine drops an image with its last tag); returns those it removed."""
    removed = []
    with engine_errors("removing images"):
        for tag in tags:
            try:
                client.images.remove(tag)
            except docker.errors.APIError as exc:  # a container made from it meanwhile, say
                report.detail(f"kept {tag}: {exc.explanation}")
            else:
                report.detail(f"removed image {tag}")
                removed.append(tag)
    return removed


def remove_project_images(client: docker.DockerClient, project: str, report: Reporter) -> None:
    """Untag this project's own app images (`<project>/<app>:<hash>`).

    For throwaway projects (deploystack.testing gives each run its own name): their images would
    otherwise pile up, one set per test run. An image another tag or a container still needs keeps its
    layers; the engine refuses to drop what a container uses, and that tag then stays.
    """
    with engine_errors("removing the project's images"):
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(f"{project}/"):
                    try:
                        client.images.remove(tag)
                        report.detail(f"removed image {tag}")
                    except docker.errors.APIError as exc:
                        report.detail(f"kept {tag}: {exc.explanation}")
