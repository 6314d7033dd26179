"""Docker Swarm: deploy a stack file, scale its services, take it down, wait until tasks are healthy.

`docker stack deploy` (the docker CLI, which honours DOCKER_HOST like the SDK does) turns the stack file
into services, networks, configs and secrets; everything after that (waiting, scaling, removing) goes
through the SDK.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import docker
import docker.errors
from ruamel.yaml import YAML

from deploystack import labels
from deploystack.engine.client import engine_errors
from deploystack.engine.report import Reporter
from deploystack.errors import EngineError, StackError, UsageError
from deploystack.plan.model import ProjectPlan
from deploystack.plan.names import PRIMARY, is_replica, service_name, unscoped
from deploystack.render.project import SwarmRendered
from deploystack.render.swarm import CONSTRAINT, registry_image

NAMESPACE = "com.docker.stack.namespace"  # the label `docker stack deploy` puts on what it makes
SERVICE_LABEL = "com.docker.swarm.service.name"  # on each task's container
CONVERGE_TIMEOUT_S = 900.0
POLL_S = 2.0


def require_manager(client: docker.DockerClient) -> None:
    with engine_errors("reading the engine's swarm state"):
        info = client.info()
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        raise EngineError("this Docker engine is not in a swarm: run `docker swarm init` (or join one), "
                          "then label the nodes (docs/swarm.md)")
    if not swarm.get("ControlAvailable"):
        raise EngineError("this node is a swarm worker: run deploystack against a manager (DOCKER_HOST)")


def require_node_labels(client: docker.DockerClient, wanted: set[str]) -> None:
    """Every placement label the stack uses is on some node: otherwise its tasks wait forever, silently."""
    with engine_errors("listing the swarm's nodes"):
        nodes = client.nodes.list()
    present = {key for node in nodes for key, value in (node.attrs["Spec"].get("Labels") or {}).items()
               if value == "true"}
    missing = sorted(wanted - present)
    if missing:
        adds = " ".join(f"--label-add {label}=true" for label in missing)
        raise UsageError(f"no node of the swarm is labelled {', '.join(missing)}: the services placed there "
                         f"would never start; label a node: docker node update {adds} NODE (docs/swarm.md)")


def labels_used(stack_yaml: dict[str, Any]) -> set[str]:
    constraints = [c for service in stack_yaml["services"].values()
                   for c in service["deploy"].get("placement", {}).get("constraints", [])]
    return {match.group(1) for c in constraints if (match := CONSTRAINT.fullmatch(c))}


def push_images(client: docker.DockerClient, images: list[str], registry: str, report: Reporter) -> None:
    """Tag each image with the registry's name and push it, so that every node can pull it."""
    for image in images:
        remote = registry_image(image, registry)
        repo, tag = remote.rsplit(":", 1)
        with engine_errors(f"pushing {remote}"):
            client.images.get(image).tag(repo, tag)
            for line in client.images.push(repo, tag, stream=True, decode=True):
                if "error" in line:
                    raise EngineError(f"pushing {remote}: {line['error']}")
        report.step(f"pushed {remote}")


def docker_cli(*args: str) -> str:
    if shutil.which("docker") is None:
        raise EngineError("the docker command-line client is needed for `docker stack deploy` "
                          "(Debian package docker.io or docker-cli)")
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise EngineError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def stack_services(client: docker.DockerClient, project: str) -> set[str]:
    """The services the swarm runs for `project`, by their name in the spec (`db-primary`, not `shop_db-primary`)."""
    require_manager(client)
    with engine_errors("listing the stack's services"):
        found = client.api.services(filters={"label": f"{NAMESPACE}={project}"})
    return {str(s["Spec"]["Name"]).removeprefix(f"{project}_") for s in found}


def deploy(client: docker.DockerClient, rendered: SwarmRendered, report: Reporter, registry: bool = False,
           alongside: Alongside | None = None) -> None:
    """`registry`: the images come from the spec's registry; the nodes get this client's login for it.
    `alongside`: started once the stack is made, checked while it converges (the provisioning job)."""
    project = rendered.plan.project
    require_manager(client)
    require_node_labels(client, labels_used(YAML(typ="safe").load(rendered.stack_yaml)))
    report.step(f"docker stack deploy {project} ({rendered.stack_file})")
    since = engine_time(client)
    # Images are on the nodes already or in the spec's registry: no digest lookup in a registry.
    # We wait ourselves (below); clients before 26.0 have no --detach and never wait.
    detach = ["--detach=true"] if "--detach" in docker_cli("stack", "deploy", "--help") else []
    docker_cli("stack", "deploy", "--compose-file", str(rendered.stack_file), "--resolve-image", "never",
               "--prune", *detach, *(["--with-registry-auth"] if registry else []), project)
    if alongside is not None:
        alongside.start()
    wait_converged(client, project, report, since, check=alongside.check if alongside is not None else None)


def scale(client: docker.DockerClient, project: str, replicas: dict[str, int], report: Reporter) -> None:
    """A service scale for each app: new tasks join the LBC through Docker's DNS once healthy."""
    require_manager(client)
    since = engine_time(client)
    for name, count in replicas.items():
        with engine_errors(f"scaling {name}"):
            service = client.services.get(service_name(project, name))
            service.scale(count)
        report.step(f"{name}: {count} replica(s)")
    wait_converged(client, project, report, since)


def remove_gone_replicas(client: docker.DockerClient, plan: ProjectPlan, secrets: dict[str, str], report: Reporter,
                         timeout_s: float = 120.0) -> None:
    """After a deploy that pruned database replicas (`scale dbc=N` down): once their tasks have stopped,
    drop their slots on the primary (a slot left behind pins WAL until the disk fills), on any node: by
    `docker exec` on this one, else by a job on the private network; and remove their volumes where this
    engine reaches them (this node's)."""
    from deploystack.engine import db, provision
    from deploystack.plan.dbc import wanted_slots

    project = plan.project
    replicas, slots = wanted_slots(plan)
    keep = {service_name(project, r) for r in replicas}
    label = {"label": f"{NAMESPACE}={project}"}

    def leaving() -> list[str]:
        return [name for c in client.api.containers(all=True, filters=label)
                if is_replica(unscoped(project, name := c["Labels"].get(SERVICE_LABEL, "")))
                and name not in keep]

    deadline = time.monotonic() + timeout_s
    with engine_errors("waiting for the removed database replicas to stop"):
        while leaving():  # their walreceivers hold the slots active until then
            if time.monotonic() > deadline:
                raise StackError(f"removed database replicas still run after {timeout_s:.0f}s: {leaving()}")
            time.sleep(1)
        primaries = client.containers.list(filters={"label": f"{SERVICE_LABEL}={service_name(project, PRIMARY)}",
                                                    "status": "running"})
    if primaries:
        db.drop_slots_except(client, primaries[0], slots, report)
    else:
        # The replicas' tasks ran on other nodes too: the job waits until their walsenders are gone.
        sql = (f"\\pset tuples_only on\n\\pset format unaligned\n{db.await_slots_released_sql(slots, 60)};\n"
               f"{db.drop_slots_sql(slots)};\n")
        out = provision.run_sql_job(client, plan, secrets, sql, [], "dropping the removed replicas' slots")
        for slot in re.findall(r"^((?:replica|offsite)_\w+)\|$", out, re.MULTILINE):  # a row each, among retries
            report.step(f"dropped replication slot {slot} (its replica is gone)")
    db.remove_stale_replica_volumes(client, project, replicas, report, project_label=NAMESPACE)


class Alongside(Protocol):
    """Work that runs while a deployed stack converges (a thread)."""

    def start(self) -> None: ...

    def check(self) -> None: ...


@dataclass
class ServiceState:
    name: str
    done: bool
    why: str  # what it waits for, or why it failed


def moment(stamp: str) -> tuple[str, float]:
    """An engine time stamp (RFC 3339, UTC), comparable: the engine trims trailing zeros of the fraction."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return whole, float("0." + (fraction.split("+")[0] or "0"))


def engine_time(client: docker.DockerClient) -> str:
    """The engine's clock, so that what it stamps later compares without skew."""
    with engine_errors("reading the engine's time"):
        return str(client.info()["SystemTime"])


def created(task: dict[str, Any]) -> tuple[str, float]:
    return moment(task["CreatedAt"])


def service_state(client: docker.DockerClient, service: Any, project: str, one_shot: bool,
                  since: str) -> ServiceState:
    name = unscoped(project, service.name)
    spec = service.attrs["Spec"]
    status = service.attrs.get("UpdateStatus") or {}
    update = status.get("State", "")
    # A rollback of an earlier run stays in UpdateStatus until the next update: only this run's counts.
    if update.startswith("rollback") or update == "paused":
        if moment(status.get("StartedAt", since)) >= moment(since):
            raise StackError(f"{name}: the rolling update failed and was rolled back ({update}): "
                             f"{status.get('Message', '')}")
        update = ""
    tasks = client.api.tasks(filters={"service": service.id})
    latest: dict[Any, dict[str, Any]] = {}
    for task in tasks:  # the newest task of each slot (replicated) or node (global)
        slot = task.get("Slot") or task.get("NodeID")
        if slot not in latest or created(task) > created(latest[slot]):
            latest[slot] = task
    states = [t["Status"]["State"] for t in latest.values()]
    errors = [t["Status"].get("Err", "") for t in latest.values() if t["Status"].get("Err")]
    if one_shot:
        done = bool(states) and all(s == "complete" for s in states)
        return ServiceState(name, done, "; ".join(errors) or f"job {', '.join(states) or 'not started'}")
    running = [t for t in tasks if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]
    wanted = [t for t in tasks if t["DesiredState"] == "running"]
    want = spec["Mode"]["Replicated"]["Replicas"] if "Replicated" in spec["Mode"] else max(len(wanted), 1)
    # Tasks on their way out still finish the requests they hold: done once they stopped too.
    leaving = [t for t in tasks if t["DesiredState"] != "running" and t["Status"]["State"] == "running"]
    done = len(running) == want == len(wanted) and not leaving and update not in ("updating",)
    why = f"{len(running)}/{want} healthy" + (f", {len(leaving)} stopping" if leaving else "")
    return ServiceState(name, done, why + (f" ({errors[-1]})" if errors else ""))


@dataclass(frozen=True)
class TaskRow:
    """`ps --engine swarm`: the current task of each slot of a service (each node, for a global one)."""

    service: str
    task: str  # <service>.<slot>, or <service>.<node> for a global service
    node: str
    state: str  # the task's: `starting` until its health check passes, then `running`; a job's `complete`
    desired: str
    error: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ps(client: docker.DockerClient, project: str) -> list[TaskRow]:
    """Which task runs where: the newest task of every slot, through a manager, whatever node it is on."""
    with engine_errors("listing the stack's tasks"):
        services = {s.id: unscoped(project, s.name)
                    for s in client.services.list(filters={"label": f"{NAMESPACE}={project}"})}
        nodes = {n.id: n.attrs["Description"]["Hostname"] for n in client.nodes.list()}
        tasks = client.api.tasks(filters={"service": list(services)}) if services else []
    latest: dict[tuple[str, Any], dict[str, Any]] = {}
    for task in tasks:
        if task["ServiceID"] not in services:
            continue
        key = (task["ServiceID"], task.get("Slot") or task.get("NodeID"))
        if key not in latest or created(task) > created(latest[key]):
            latest[key] = task
    rows = [TaskRow(service=services[service_id], node=nodes.get(task.get("NodeID", ""), "-"),
                    task=f"{services[service_id]}.{slot if task.get('Slot') else nodes.get(slot, slot)}",
                    state=task["Status"]["State"], desired=task["DesiredState"], error=task["Status"].get("Err", ""))
            for (service_id, slot), task in latest.items()]
    return sorted(rows, key=lambda r: (r.service, r.task))


def stack_states(client: docker.DockerClient, project: str, since: str) -> list[ServiceState]:
    """The state of each of the stack's services. One removed while it is read is no longer the stack's:
    skipped (the provisioning job carries the stack's label and is removed once it completed)."""
    states = []
    for service in client.services.list(filters={"label": f"{NAMESPACE}={project}"}):
        one_shot = labels.ONE_SHOT in (service.attrs["Spec"].get("Labels") or {})
        with contextlib.suppress(docker.errors.NotFound):
            states.append(service_state(client, service, project, one_shot, since))
    return states


def wait_converged(client: docker.DockerClient, project: str, report: Reporter, since: str,
                   timeout_s: float = CONVERGE_TIMEOUT_S, check: Callable[[], None] | None = None) -> None:
    """Until every service runs its wanted number of healthy tasks and every job completed. `check`
    raises when something the stack waits for has failed (it would wait for it in vain)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        if check is not None:
            check()
        with engine_errors("listing the stack's services"):
            states = stack_states(client, project, since)
        waiting = [s for s in states if not s.done]
        if states and not waiting:
            report.step(f"all {len(states)} services of {project} are up")
            return
        summary = ", ".join(f"{s.name} {s.why}" for s in sorted(waiting, key=lambda s: s.name))
        if summary != last:
            report.detail(f"waiting: {summary}")
            last = summary
        if time.monotonic() > deadline:
            raise StackError(f"the swarm stack {project} did not converge in {timeout_s:.0f}s: {summary}")
        time.sleep(POLL_S)


def down(client: docker.DockerClient, project: str, volumes: bool, report: Reporter,
         timeout_s: float = 120.0) -> None:
    """`docker stack rm`, then wait for its containers and networks to go (removal is asynchronous), then
    the volumes with `volumes`. Configs and secrets go with the stack."""
    label = {"label": f"{NAMESPACE}={project}"}
    with engine_errors("listing the stack's services"):
        present = client.services.list(filters=label)
    if present:
        docker_cli("stack", "rm", project)
        report.step(f"removed the swarm stack {project}")
    deadline = time.monotonic() + timeout_s
    with engine_errors("waiting for the stack's containers to stop"):
        # One list call (the SDK's containers.list inspects each one, which fails for one just removed).
        while client.api.containers(all=True, filters=label):
            if time.monotonic() > deadline:
                raise StackError(f"the swarm stack {project}'s containers are still there after {timeout_s:.0f}s")
            time.sleep(1)
        for network in client.networks.list(filters=label):  # stack rm removes them, unless a task lagged
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
        if volumes:
            for volume in client.volumes.list(filters=label):
                volume.remove(force=True)
                report.step(f"removed volume {volume.name}")
