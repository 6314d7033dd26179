"""Images: the base image, builds of every context (skipped when its tag exists), registry-only checks."""

from __future__ import annotations

import re
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
from deploystack.plan.bases import ALL_BASES, ROLE_BASE, slim_image
from deploystack.render.project import BuildJob, Rendered

DEBIAN_MIRROR = "http://deb.debian.org/debian"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the classic builder colours what a step writes to stderr
STAGE_LABEL = "io.deploystack.build-stage"  # on the earlier stages of multi-stage Dockerfiles
# Trimmed from a debootstrapped root before import (manuals, translations, apt's lists and caches):
# 199 MB -> about 75 MB. The dpkg rule keeps later installs (apt-install) as lean.
TRIMMED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
           "var/lib/apt/lists", "var/cache/apt")
KEPT = ("copyright", "locale.alias")  # licences stay, as the dpkg rule below keeps them
NODOC = """path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
"""


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def needed_bases(rendered: Rendered) -> list[str]:
    """The base images the project's builds start from (the role release's, and each app's)."""
    return list(dict.fromkeys(job.args.get("BASE_IMAGE", ROLE_BASE) for job in rendered.builds))


def ensure_base_images(client: docker.DockerClient, rendered: Rendered, report: Reporter) -> None:
    for base in needed_bases(rendered):
        ensure_base_image(client, report, base)


def ensure_base_image(client: docker.DockerClient, report: Reporter, base: str = ROLE_BASE) -> None:
    """deploystack/base:<release> from, in order: present; debian:<release>-slim pulled; debootstrap."""
    release = base.rsplit(":", 1)[1]
    with engine_errors("checking the base image"):
        if image_exists(client, base):
            return
    report.step(f"base image {base} missing: trying to pull {slim_image(release)}")
    try:
        repository, tag = slim_image(release).split(":")
        image = client.images.pull(repository, tag=tag)
        image.tag(base)
        return
    except docker.errors.DockerException as exc:
        report.detail(f"pull failed: {exc}")
    report.step(f"no registry: making {base} with debootstrap (about a minute)")
    debootstrap_base(client, base, release, report)


def debootstrap_base(client: docker.DockerClient, base: str, release: str, report: Reporter) -> None:
    if shutil.which("debootstrap") is None:
        raise StackError(
            f"cannot make {base}: no registry answered and debootstrap is not installed "
            f"(apt-get install debootstrap, as root), or `docker load` a Debian {release} image and "
            f"tag it {base}"
        )
    with tempfile.TemporaryDirectory(prefix="deploystack-rootfs-") as tmp:
        rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        _run(["debootstrap", "--variant=minbase", release, str(rootfs), DEBIAN_MIRROR], report)
        trim_rootfs(rootfs)
        _run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], report)
        repo, tag = base.split(":")
        with engine_errors("importing the base image"):
            client.api.import_image_from_file(str(tarball), repository=repo, tag=tag)
    report.step(f"made {base}")


def trim_rootfs(rootfs: Path) -> None:
    for name in TRIMMED:
        for path in sorted((rootfs / name).rglob("*"), reverse=True):  # files before their folders
            if path.is_symlink() or path.is_file():
                if path.name not in KEPT:
                    path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    (rootfs / "etc/dpkg/dpkg.cfg.d/01-deploystack-nodoc").write_text(NODOC)


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
                 force: bool = False, nocache: bool = False) -> list[str]:
    """Build every context the plan's services use whose tag is missing (every one with `force`, and
    from scratch with `nocache`); returns the images built."""
    built = []
    needed = {rendered.images[s.name] for s in rendered.plan.services}
    for job in (j for j in rendered.builds if j.image in needed):
        with engine_errors(f"checking image {job.image}"):
            if not force and image_exists(client, job.image):
                report.detail(f"{job.image} is up to date")
                continue
        report.step(f"building {job.image}")
        _build(client, rendered.output / job.context, job, report, nocache=nocache)
        for stage in job.stages:  # from the cache just made: tagged, so its layers stay for the next build
            _build(client, rendered.output / job.context, job, report, stage)
        if job.dockerfile is not None:
            check_own_image(client, job)
        built.append(job.image)
    if built:
        prune_superseded(client, rendered, report)
        with engine_errors("pruning build stages"):
            # The classic builder leaves each multi-stage build's earlier stages as untagged images.
            client.images.prune(filters={"dangling": True, "label": STAGE_LABEL})
    return built


def _build(client: docker.DockerClient, context: Path, job: BuildJob, report: Reporter,
           stage: str | None = None, nocache: bool = False) -> None:
    image = job.stage_image(stage) if stage else job.image
    tail: deque[str] = deque(maxlen=25)
    partial = ""  # the stream comes in chunks that need not end a line (stderr arrives piece by piece)
    with engine_errors(f"building {image}"):
        stream = client.api.build(path=str(context), tag=image, buildargs={"BASE_IMAGE": ROLE_BASE, **job.args},
                                  dockerfile=job.dockerfile, target=stage, nocache=nocache, rm=True,
                                  forcerm=True, decode=True, pull=False)
        for chunk in stream:
            if "stream" in chunk:
                *lines, partial = (partial + ANSI.sub("", str(chunk["stream"]))).split("\n")
                for line in lines:
                    if line.strip():
                        tail.append(line)
                        report.detail(line)
            if "error" in chunk:
                tail.extend(line for line in (partial, str(chunk["error"]).strip()) if line.strip())
                whose = f"app {job.app}: " if job.app else ""
                raise StackError(f"{whose}building {image} failed; last lines:\n" + "\n".join(tail))


def check_own_image(client: docker.DockerClient, job: BuildJob) -> None:
    """An image from an app's own Dockerfile must run what the generated services ask of it: an
    ENTRYPOINT taking serve, migrate and worker, and apc-health on PATH (docs/CONTRACTS.md)."""
    where = f"app {job.app}: the image of its own {job.dockerfile}"
    see = "see docs/CONTRACTS.md, 'An app's own Dockerfile'"
    with engine_errors(f"checking {job.image}"):
        config = client.images.get(job.image).attrs.get("Config") or {}
        if not config.get("Entrypoint"):
            raise StackError(f"{where} has no ENTRYPOINT: deploystack runs it with the commands serve, migrate "
                             f"and worker ({see})")
        try:
            client.containers.run(job.image, entrypoint=["sh", "-c", "command -v apc-health"], user="0",
                                  network_disabled=True, remove=True)
        except docker.errors.ContainerError:
            raise StackError(f"{where} has no apc-health on PATH, the health check every replica runs "
                             f"({see})") from None


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
    stages = {job.stage_image(stage) for job in rendered.builds for stage in job.stages}
    return ({job.image for job in rendered.builds} | stages | set(rendered.images.values()) | rendered.retained
            | set(ALL_BASES))


def stale_images(client: docker.DockerClient, wanted: set[str], prefixes: tuple[str, ...]) -> list[tuple[str, int]]:
    """(tag, size) of the images tagged under `prefixes` that `wanted` does not name and no container
    (running or not) was made from."""
    # One list call each, no inspect per object: on a shared engine a container or image removed by
    # someone else between a list and its inspect would fail the whole build ("No such container").
    with engine_errors("listing images"):
        in_use = {c["ImageID"] for c in client.api.containers(all=True)}
        return sorted((tag, int(image.get("Size") or 0))
                      for image in client.api.images() if image["Id"] not in in_use
                      for tag in image.get("RepoTags") or [] if tag.startswith(prefixes) and tag not in wanted)


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
        # Filtered by the engine: the SDK inspects every image it lists, one call each (seconds, on a busy engine).
        for image in client.images.list(filters={"reference": f"{project}/*"}):
            for tag in image.tags:
                if tag.startswith(f"{project}/"):
                    try:
                        client.images.remove(tag)
                        report.detail(f"removed image {tag}")
                    except docker.errors.APIError as exc:
                        report.detail(f"kept {tag}: {exc.explanation}")
