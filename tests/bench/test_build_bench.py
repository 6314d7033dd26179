"""App image builds (issue #12): the demo backend built from scratch, rebuilt after a code-only change and
after a dependency change, and its image size, for the multi-stage image deploystack renders now and, as
the peer in the same run, the single-stage Dockerfile it used before (tests/bench/single_stage.Dockerfile,
on the same context and the base it was written for). Table on stdout, JSON in bench-results/build.json.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from ruamel.yaml import YAML

from deploystack.engine import images
from deploystack.engine.report import Silent
from deploystack.operations import Session, Target
from deploystack.render.project import Rendered
from deploystack.render.writer import compare, write
from tests.bench.conftest import publish
from tests.conftest import BLUEPRINTS

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
RESULTS_FILE = REPO / "bench-results" / "build.json"
PEER_DOCKERFILE = Path(__file__).with_name("single_stage.Dockerfile")
REBUILDS = 3  # code-only rebuilds measured per variant (median)


def generated(spec: Path, output: Path) -> Rendered:
    rendered = Session(Target(spec, output)).rendered
    write(rendered.files, output, compare(rendered.files, output))
    return dataclasses.replace(rendered, plan=dataclasses.replace(
        rendered.plan, services=(rendered.plan.service("backend"),)))


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def build_new(client: docker.DockerClient, spec: Path, output: Path, nocache: bool = False) -> str:
    rendered = generated(spec, output)
    images.ensure_base_images(client, rendered, Silent())
    images.build_images(client, rendered, Silent(), nocache=nocache)
    return rendered.images["backend"]


def build_peer(client: docker.DockerClient, spec: Path, output: Path, tag: str, nocache: bool = False) -> str:
    generated(spec, output)  # the same context as the multi-stage build's
    context = output / "build" / "apps" / "backend"
    shutil.copy(PEER_DOCKERFILE, context / "Dockerfile.single")
    images.ensure_base_image(client, Silent())  # the bookworm base it was written for
    client.images.build(path=str(context), dockerfile="Dockerfile.single", tag=tag, nocache=nocache, rm=True,
                        forcerm=True, pull=False, buildargs={"DJANGO_SETTINGS_MODULE": "backend.settings"})
    return tag


def size_mb(client: docker.DockerClient, image: str) -> float:
    return round(int(client.images.get(image).attrs["Size"]) / 1e6, 1)


def test_app_image_builds(tmp_path: Path) -> None:
    client = docker.from_env()
    source = tmp_path / "backend"
    shutil.copytree(BLUEPRINTS / "default" / "apps" / "backend", source)
    spec = tmp_path / "deploystack.yaml"
    yaml = YAML()
    data = yaml.load(BLUEPRINTS / "default" / "deploystack.yaml")
    data["project"] = f"buildbench{int(time.time())}"
    data["apc"]["apps"] = {"backend": data["apc"]["apps"]["backend"]}
    data["apc"]["apps"]["backend"]["source"] = str(source)
    yaml.dump(data, spec)
    views = source / "notes" / "views.py"
    requirements = source / "requirements.txt"
    results: dict[str, dict[str, Any]] = {}
    variants = {"multi-stage (now)": lambda nocache: build_new(client, spec, tmp_path / "new", nocache),
                "single-stage (before)": lambda nocache: build_peer(client, spec, tmp_path / "peer",
                                                                   f"{data['project']}/peer:single", nocache)}
    try:
        for name, build in variants.items():
            cold = timed(lambda: build(True))  # noqa: B023 (called at once)
            code_only = []
            for run in range(REBUILDS):
                views.write_text(views.read_text() + f"\n# code-only change {name} {run}\n")
                code_only.append(timed(lambda: build(False)))  # noqa: B023
            requirements.write_text(requirements.read_text() + f"\n# dependency change {name}\n")
            deps = timed(lambda: build(False))  # noqa: B023
            image = build(False)
            results[name] = {"cold_s": round(cold, 1), "code_only_s": round(statistics.median(code_only), 1),
                             "dependency_change_s": round(deps, 1), "image_mb": size_mb(client, image)}
    finally:
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(f"{data['project']}/"):
                    client.images.remove(tag)
    bases = {base: size_mb(client, base) for base in ("deploystack/base:trixie", "deploystack/base:bookworm")}
    new, old = results["multi-stage (now)"], results["single-stage (before)"]
    rows = [f"{'':24} {'multi-stage (now)':>18} {'single-stage (before)':>22} {'ratio':>6}"]
    for key, label in (("cold_s", "cold build (s)"), ("code_only_s", "code-only rebuild (s)"),
                       ("dependency_change_s", "dependency change (s)"), ("image_mb", "image size (MB)")):
        rows.append(f"{label:24} {new[key]:>18} {old[key]:>22} {new[key] / old[key]:>6.2f}")
    rows.append("base images (MB): " + ", ".join(f"{k} {v}" for k, v in bases.items()))
    publish({"results": results, "bases_mb": bases, "rebuilds": REBUILDS}, "\n".join(rows), RESULTS_FILE)
    assert new["image_mb"] <= 250
