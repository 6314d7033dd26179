"""`deploystack doctor`: what `up` needs, one Check each, with a fix for every failure.

Each check is a small function returning a Check; the Docker engine is asked only through
deploystack.engine.doctor. A failing check never stops the others: doctor reports everything at once.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from deploystack.backupinfo import Archiver
from deploystack.engine import doctor as probe
from deploystack.engine.client import DockerClient, connect, host, is_local
from deploystack.engine.doctor import EngineFacts, Published
from deploystack.errors import EngineError, SpecError
from deploystack.plan import build_plan
from deploystack.plan.backups import enabled as backups_enabled
from deploystack.plan.bases import ALL_BASES, PYTHON_RELEASES, ROLE_BASE, base_image, slim_image
from deploystack.render.project import DEFAULT_CA_BUNDLE
from deploystack.spec import Stack, load_stack

Status = Literal["ok", "warn", "FAIL"]
LOW_DISK = 10 * 1024**3
WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Engine:
    """What the engine check found, for the checks after it (all None when it is unreachable)."""

    client: DockerClient | None = None
    facts: EngineFacts | None = None


def spec_check(path: Path) -> tuple[Check, Stack | None]:
    try:
        stack = load_stack(path)
    except SpecError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        return Check("spec", "FAIL", f"{path} is not valid:\n{problems}",
                     f"correct the fields named above; `deploystack validate -f {path}` checks again"), None
    plan = build_plan(stack)
    containers = sum(s.replicas for s in plan.services)
    return Check("spec", "ok", f"{path}: project {stack.project}, {len(plan.services)} services "
                               f"({containers} containers)"), stack


def engine_check() -> tuple[Check, Engine]:
    try:
        client = connect(timeout=probe.TIMEOUT_S, hint=False)
        facts = probe.facts(client)
    except EngineError as exc:
        return Check("engine", "FAIL", str(exc), probe.engine_fix()), Engine()
    return (Check("engine", "ok", f"Docker {facts.version}, API {facts.api_version}, at {facts.host}"),
            Engine(client, facts))


def disk_check(engine: Engine) -> Check:
    where = engine.facts.root_dir if engine.facts else "/var/lib/docker"
    address = engine.facts.host if engine.facts else host()
    if not is_local(address):
        return Check("disk", "warn", f"the engine at {address} is not on this machine: free space not checked",
                     f"check free space in {where} on the engine's machine (≥ 10 GB for the images)")
    path = Path(where)
    while not path.exists():  # no engine yet: the folder it would make, on the disk it would use
        path = path.parent
    free = shutil.disk_usage(path).free
    assumed = "" if engine.facts else " (engine not reached: Docker's default folder)"
    detail = f"{free / 1024**3:.1f} GB free in {where}{assumed}"
    if free < LOW_DISK:
        return Check("disk", "warn", detail + ": the images need several GB",
                     f"free space on the disk of {where}, or prune old images: docker image prune")
    return Check("disk", "ok", detail)


def base_images(stack: Stack | None) -> list[str]:
    """The bases `up` needs: the roles' release and each app's (all of them when the spec is not valid)."""
    if stack is None:
        return list(ALL_BASES)
    apps = (base_image(PYTHON_RELEASES[app.python]) for app in stack.apc.apps.values())
    return list(dict.fromkeys([ROLE_BASE, *apps]))


def base_image_check(engine: Engine, base: str = ROLE_BASE) -> Check:
    release = base.rsplit(":", 1)[1]
    name, slim = f"base image {release}", slim_image(release)
    if engine.client is None:
        return Check(name, "warn", f"{base}: not checked, the engine is not reachable", "fix the engine first")
    try:
        if probe.has_image(engine.client, base):
            return Check(name, "ok", f"{base} present")
        refusal = probe.registry_refusal(engine.client, slim)
    except EngineError as exc:
        return Check(name, "warn", f"{base}: not checked ({exc})")
    if refusal is None:
        return Check(name, "ok", f"{base} missing: up pulls {slim} (a registry answers)")
    debootstrap = shutil.which("debootstrap")
    if debootstrap and os.geteuid() == 0:
        return Check(name, "ok", f"{base} missing, no registry: up makes it with {debootstrap} (about a minute)")
    missing = "debootstrap is not installed" if not debootstrap else "debootstrap needs root"
    return Check(name, "FAIL", f"{base} missing, no registry ({refusal}), and {missing}",
                 "as root: apt-get install debootstrap and run up as root; or `docker load -i FILE.tar` a "
                 f"Debian {release} image and `docker tag` it {base}")


def ca_bundle_check(path: Path = DEFAULT_CA_BUNDLE) -> Check:
    try:
        data = path.read_bytes()
    except OSError as exc:
        data, why = b"", exc.strerror or str(exc)
    else:
        why = "empty"
    if not data:
        return Check("CA bundle", "warn", f"{path}: {why}; builds behind an intercepting proxy cannot reach PyPI",
                     "apt-get install ca-certificates, or pass --ca-bundle PATH to build/up")
    return Check("CA bundle", "ok", f"{path} ({data.count(b'BEGIN CERTIFICATE')} certificates)")


def bind_error(address: str, port: int) -> OSError | None:
    """None when a TCP listener could take `address:port` now; else the error binding it gave."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is no listener
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc
    return None


@dataclass(frozen=True)
class Listener:
    """A port the stack publishes: the spec fields that set it, and the service that holds it once up."""

    name: str
    address: str
    port: int
    service: str
    owner: str  # as the user knows it: "LBC", "primary"
    bind_field: str
    port_field: str


def port_check(listener: Listener, own: Sequence[Published] | None) -> Check:
    """`own`: what this project's `listener.service` containers publish (None: the engine was not reached)."""
    name, address, port = listener.name, listener.address, listener.port
    where = f"{address}:{port}"
    error = bind_error(address, port)
    if error is None:
        return Check(name, "ok", f"{where} free")
    holder = next((p.container for p in own or ()
                   if p.host_port == port and (p.host_ip == address or {p.host_ip, address} & set(WILDCARDS))),
                  None)
    if holder is not None:
        return Check(name, "ok", f"{where} is this project's own {listener.owner} ({holder})")
    if error.errno == errno.EACCES:
        return Check(name, "warn", f"{where}: not checked, ports below 1024 need root to bind",
                     "run doctor as root to check it; the engine binds it as root")
    if error.errno == errno.EADDRNOTAVAIL:
        return Check(name, "FAIL", f"{where}: {address} is not an address of this machine",
                     f"set {listener.bind_field} in the spec to an address of this machine "
                     "(127.0.0.1, or 0.0.0.0 for all)")
    if error.errno != errno.EADDRINUSE:
        return Check(name, "FAIL", f"{where} cannot be bound: {error.strerror}",
                     f"choose another address ({listener.bind_field}) or port ({listener.port_field}) in the spec")
    unknown = f"; the engine was not reached, so it may be this project's own {listener.owner}"
    return Check(name, "FAIL", f"{where} is in use" + (" by another program" if own is not None else unknown),
                 f"stop what listens there (`ss -ltnp 'sport = :{port}'` names it), or choose another "
                 f"port in the spec: {listener.port_field}")


def listeners(stack: Stack) -> list[Listener]:
    """The LBC's two ports, and the primary's (Patroni: the offsite proxy's) when an offsite replica is declared."""
    lbc = stack.lbc
    found = [Listener(f"lbc {scheme} port", lbc.bind, port, "lbc", "LBC", "lbc.bind", "lbc.ports")
             for scheme, port in (("http", lbc.ports.http), ("https", lbc.ports.https))]
    offsite = stack.dbc.offsite
    if offsite is not None:
        # With Patroni the port is the offsite proxy's (it leads to whichever node leads).
        service, owner = ("db-offsite", "offsite proxy") if stack.dbc.ha == "patroni" else ("db-primary", "primary")
        found.append(Listener("db offsite port", offsite.bind, offsite.port, service, owner,
                              "dbc.offsite.bind", "dbc.offsite.port"))
    return found


def port_checks(stack: Stack, engine: Engine) -> list[Check]:
    checks = []
    for listener in listeners(stack):
        own: list[Published] | None = None
        if engine.client is not None:
            with contextlib.suppress(EngineError):  # the bind test alone still says whether the port is taken
                own = probe.published_ports(engine.client, stack.project, listener.service)
        checks.append(port_check(listener, own))
    return checks


ENCRYPTION_OPTIONS = ("CONFIG_INET_ESP", "CONFIG_CRYPTO_GCM")  # an encrypted overlay's IPsec: ESP, AES-GCM


def kernel_config() -> dict[str, str] | None:
    """This machine's kernel build options (y, m), when the kernel says them."""
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{os.uname().release}")):
        with contextlib.suppress(OSError):
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            return dict(line.split("=", 1) for line in raw.decode(errors="replace").splitlines()
                        if line.startswith("CONFIG_") and "=" in line)
    return None


def overlay_encryption_check(stack: Stack, facts: EngineFacts, config: dict[str, str] | None) -> Check:
    """Only asked of a swarm manager: an encrypted overlay on kernels without ESP carries no traffic."""
    name = "swarm encryption"
    nodes = f"swarm of {facts.swarm_nodes} node(s)"
    if not stack.swarm.encrypted:
        return Check(name, "ok", f"{nodes}; swarm.encrypted is false: the private network crosses the nodes' "
                                 "network unencrypted (keep them on a private link or VPN)")
    if not is_local(facts.host):
        return Check(name, "warn", f"{nodes}; the private network is encrypted: not checked on the nodes' kernels",
                     "on each node: zgrep -E 'INET_ESP=|CRYPTO_GCM=' /proc/config.gz (y or m); where missing, "
                     "the encrypted overlay carries no traffic between nodes: swarm.encrypted: false (docs/swarm.md)")
    missing = [option for option in ENCRYPTION_OPTIONS if config is not None and config.get(option) not in ("y", "m")]
    if config is None:
        return Check(name, "warn", f"{nodes}; this kernel does not say whether it has ESP and AES-GCM",
                     "docs/swarm.md says what an encrypted overlay needs and the fallback")
    if missing:
        return Check(name, "warn", f"{nodes}; this kernel lacks {', '.join(missing)}: the encrypted private "
                                   "network carries no traffic between nodes",
                     "a kernel with them on every node, or swarm.encrypted: false on a private link (docs/swarm.md)")
    return Check(name, "ok", f"{nodes}; this kernel has ESP and AES-GCM for the encrypted private network")


def patroni_placement_check(stack: Stack, nodes: dict[str, frozenset[str]]) -> Check:
    """Only asked of a swarm manager, for dbc.ha: patroni: one node per deploystack.db-member-K label, so
    that a lost node takes one etcd member and at most one PostgreSQL node with it (docs/swarm.md)."""
    from deploystack.plan.patroni import ETCD_MEMBERS
    from deploystack.render.swarm import LABEL_DB_MEMBER_PREFIX, member_labels

    name = "Patroni placement"
    wanted = member_labels(stack)
    fix = "one label on each of as many nodes: docker node update --label-add deploystack.db-member-K=true NODE " \
          "(docs/swarm.md)"
    holders = {label: sorted(node for node, labels in nodes.items() if label in labels) for label in wanted}
    if missing := [label for label, held in holders.items() if not held]:
        return Check(name, "FAIL", f"no node is labelled {', '.join(missing)}: the members (etcd-K, db-node-K) "
                                   "placed there would never start", fix)
    problems = []
    for node, labels in sorted(nodes.items()):
        mine = [label for label in wanted if label in labels]
        places = [int(label.removeprefix(LABEL_DB_MEMBER_PREFIX)) for label in mine]
        etcds, databases = sum(k <= ETCD_MEMBERS for k in places), sum(k <= stack.dbc.replicas + 1 for k in places)
        if len(mine) > 1:
            problems.append(f"{node} holds {', '.join(mine)}: losing it loses {databases} PostgreSQL node(s) and "
                            f"{etcds} of the {ETCD_MEMBERS} etcd members"
                            + (" (no quorum: no failover until it is back)" if 2 * etcds >= ETCD_MEMBERS else ""))
    problems += [f"{label} is on {', '.join(held)}: the member may start on either, where its volume is not"
                 for label, held in holders.items() if len(held) > 1]
    if problems:
        return Check(name, "warn", f"{len(wanted)} members for {len(nodes)} node(s): " + "; ".join(problems), fix)
    return Check(name, "ok", f"{len(wanted)} members on {len(wanted)} nodes, one each ({', '.join(wanted)}): losing "
                             f"a node loses one of the {ETCD_MEMBERS} etcd members and at most one PostgreSQL node")


def database_check(stack: Stack, volumes: Sequence[str] | None) -> Check:
    """Which PostgreSQL the spec runs and whether `db upgrade` applies (`volumes`: the project's on the
    engine, None when the engine did not answer)."""
    from deploystack.plan import upgrade

    if stack.dbc.ha == "patroni":
        if volumes is not None and upgrade.pending(stack.project, volumes):
            return Check("database", "FAIL", upgrade.pending_message(stack.project),
                         "deploystack db upgrade (docs/db.md)")
        return Check("database", "ok", f"PostgreSQL {upgrade.NEW_MAJOR} under Patroni (dbc.ha: patroni)")
    kept = volumes is not None and upgrade.old_volume(stack.project) in volumes
    return Check("database", "ok", f"PostgreSQL {upgrade.OLD_MAJOR}, streaming replicas (no dbc.ha)"
                 + ("; its data stays on it" if kept else "")
                 + f": `deploystack db upgrade` is available to move it to Patroni + PostgreSQL {upgrade.NEW_MAJOR} "
                   "(set dbc.ha: patroni first; docs/db.md)")


def media_isolation_check(stack: Stack) -> Check | None:
    """mmc.backend minio: every app holds the store's root key (per-app MinIO users and policies are not
    built: docs/security.md). None when the store gives each app its own identity, or there is none."""
    if not stack.mmc.enabled or stack.mmc.backend != "minio":
        return None
    return Check("media isolation", "warn",
                 f"mmc.backend minio: the apps ({', '.join(stack.apc.apps)}) share MinIO's root key, so each can "
                 "read, overwrite and delete every app's objects",
                 "mmc.backend: seaweedfs gives each app its own S3 identity (docs/security.md)")


def archive_check(found: Archiver | None, error: str | None) -> Check:
    """dbc.backups: PostgreSQL's archiver on the leader (pg_stat_archiver) and the WAL it holds back."""
    name = "WAL archive"
    if found is None:
        return Check(name, "warn", f"not checked: {error}", "deploystack up, then doctor again")
    held = f"{found.pending_segments} segments ({found.pending_bytes} bytes) held back in pg_wal"
    if found.failing:
        return Check(name, "FAIL", f"archive_command fails: {found.failed_count} failures, last "
                                   f"{found.last_failed_wal} at {found.last_failed_time:%Y-%m-%d %H:%M:%S}; {held}",
                     "see `docker logs` of the backup service and of the leader; the disk fills until it works")
    return Check(name, "ok", f"{found.archived_count} segments archived, last {found.last_archived_wal or '-'}; {held}")


def schedule_check(problem: str | None) -> Check:
    """dbc.backups: the backup service's own health check (a failed or missed backup, a stopped scheduler)."""
    if problem is None:
        return Check("backup schedule", "ok", "the backup service's health check passes")
    return Check("backup schedule", "FAIL", problem,
                 "see `deploystack db backups` and `docker logs` of the backup service")


def run(spec: Path) -> list[Check]:
    spec_result, stack = spec_check(spec)
    engine_result, engine = engine_check()
    checks = [spec_result, engine_result, disk_check(engine),
              *(base_image_check(engine, base) for base in base_images(stack)), ca_bundle_check()]
    if stack is not None:
        checks += port_checks(stack, engine)
        volumes = None
        if engine.client is not None:
            with contextlib.suppress(EngineError):
                volumes = probe.volume_names(engine.client, stack.project)
        checks.append(database_check(stack, volumes))
        if (isolation := media_isolation_check(stack)) is not None:
            checks.append(isolation)
        if engine.client is not None and backups_enabled(stack):
            from deploystack.engine.backups import archiver, scheduler_health

            checks.append(archive_check(*archiver(engine.client, stack.project)))
            checks.append(schedule_check(scheduler_health(engine.client, stack.project)))
        if engine.facts is not None and engine.facts.swarm_nodes:
            checks.append(overlay_encryption_check(stack, engine.facts, kernel_config()))
            if stack.dbc.ha == "patroni" and engine.client is not None:
                with contextlib.suppress(EngineError):
                    checks.append(patroni_placement_check(stack, probe.node_labels(engine.client)))
    else:
        checks.append(Check("ports", "warn", "not checked: the spec is not valid", "fix the spec first"))
    return checks


def report_lines(checks: list[Check]) -> list[str]:
    """One line per check (`ok`, `warn` or `FAIL`), more lines indented below it, then what to do."""
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        first, *more = check.detail.splitlines() or [""]
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {first}")
        indent = " " * (width + 8)
        lines += [indent + line for line in more]
        if check.status != "ok" and check.fix:
            lines.append(f"{indent}fix: {check.fix}")
    failed = sum(c.failed for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    lines.append(f"{failed} failed, {warned} warning(s): up would fail" if failed else
                 f"ready for up ({warned} warning(s))" if warned else "ready for up")
    return lines
