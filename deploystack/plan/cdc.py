"""CDC: adnanh/webhook that turns a signed push into `deploystack deploy`, reached only via LBC."""

from __future__ import annotations

from pathlib import PurePosixPath

from deploystack.plan import hardening as h
from deploystack.plan.model import Build, ConfigFile, HealthCheck, Mount, Service
from deploystack.plan.names import Role
from deploystack.plan.secrets import ref
from deploystack.spec.models import Stack

PORT = 9000
# Not secrets, but host paths that only rendering knows: .env carries them, like Compose variables.
PROJECT_PATH = "DEPLOYSTACK_PROJECT_DIR"
SPEC_PATH = "DEPLOYSTACK_SPEC"
OUTPUT_PATH = "DEPLOYSTACK_OUTPUT"  # also read by every CLI command that takes -o
# Set in the CDC only: it lacks the shell's variables, so an app's `${NAME}` value it cannot resolve is the
# one the last generate on the host wrote into .env (spec/appenv.py).
HOST_ENV_FROM_OUTPUT = "DEPLOYSTACK_HOST_ENV_FROM_OUTPUT"


def local_repositories(stack: Stack) -> list[str]:
    """Apps' git sources given as absolute local paths (or file:// URLs): the CDC needs to see them at
    the same path. Relative paths are inside the spec's folder, which it mounts anyway."""
    paths = []
    for app in stack.apc.apps.values():
        url = app.git.url if app.git is not None else ""
        path = url.removeprefix("file://")
        if path.startswith("/") and (url.startswith("file://") or "://" not in url):
            paths.append(str(PurePosixPath(path)))
    return sorted(set(paths))


def plan_cdc(stack: Stack, project_dir: str) -> tuple[list[Service], list[ConfigFile]]:
    """`project_dir`: the spec's folder, relative to the output directory."""
    if not stack.cdc.enabled:
        return [], []
    # An output folder outside the spec's folder (`up -o /srv/shop`) is mounted at its own path too.
    output_outside = any(part != ".." for part in PurePosixPath(project_dir).parts)
    config = "config/cdc"
    service = Service(
        name="cdc", role=Role.CDC,
        build=Build(role="cdc", repo="deploystack/cdc", context="build/cdc", with_package=True),
        environment=(("CDC_WEBHOOK_SECRET", ref("CDC_WEBHOOK_SECRET")),
                     ("CDC_BRANCH", stack.cdc.branch),
                     ("CDC_PROVIDER", stack.cdc.provider),
                     ("DEPLOYSTACK_PROJECT", stack.project),
                     ("DEPLOYSTACK_SPEC", ref(SPEC_PATH)),
                     ("DEPLOYSTACK_OUTPUT", ref(OUTPUT_PATH)),
                     (HOST_ENV_FROM_OUTPUT, "1")),
        # egress: fetching git sources needs the outside world, which `private` does not give.
        networks=("private", "egress"),
        # The Docker socket is root on the host: see docs/ARCHITECTURE.md, "CDC and the socket".
        # The spec's folder is mounted at its own host path: `deploy` inside creates containers whose
        # bind mounts (stack/config/...) the engine resolves on the host.
        mounts=(Mount("/var/run/docker.sock", "/var/run/docker.sock", bind=True),
                Mount(project_dir, ref(PROJECT_PATH), bind=True),
                *([Mount(".", ref(OUTPUT_PATH), bind=True)] if output_outside else []),
                *(Mount(path, path, bind=True, read_only=True) for path in local_repositories(stack))),
        healthcheck=HealthCheck(test=("cdc-health",), start_period_s=30),
        # Root, for the socket: a deploy writes the output folder and git checkouts, which the host's
        # user may own (DAC_OVERRIDE, FOWNER for chmod, CHOWN). Not read-only: deploys write caches and
        # git's state under its home.
        cap_add=(h.CHOWN, h.DAC_OVERRIDE, h.FOWNER),
        mem_limit=stack.cdc.memory, pids_limit=h.PIDS_RUNTIME,
        config_dir=config,
    )
    hooks = ConfigFile(f"{config}/hooks.json", "cdc/templates/hooks.json.j2",
                       {"project": stack.project, "provider": stack.cdc.provider})
    return [service], [hooks]
