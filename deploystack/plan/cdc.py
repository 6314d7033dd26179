"""CDC: push to deploy, as two services that share only a queue on a volume.

- `cdc`, the webhook **receiver** (adnanh/webhook): reached only by the LBC at /_cdc/, on a network it
  shares with the LBC alone (`hooks`, internal). It runs as a non-root user on a read-only root, holds no
  Docker socket and no secret but the webhook's, checks a push's signature and branch, and drops the
  push into the queue.
- `cdc-runner`, the deploy **runner**: holds the Docker socket and the spec's folder, joins only `egress`
  (out only, to fetch git sources), takes pushes from the queue, refuses replays (a delivery id seen
  before, a commit that is not a descendant of the deployed one) and runs `deploystack deploy`.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from deploystack.plan import hardening as h
from deploystack.plan.model import Build, ConfigFile, HealthCheck, Mount, Service
from deploystack.plan.names import Role
from deploystack.plan.secrets import ref
from deploystack.spec.models import Stack

PORT = 9000
RECEIVER = "cdc"
RUNNER = "cdc-runner"
HOOKS_NETWORK = "hooks"  # the receiver and the LBC, nothing else; internal
EGRESS_NETWORK = "egress"  # the runner alone; out only
QUEUE_VOLUME = "cdc-queue"
QUEUE_DIR = "/var/lib/deploystack-cdc"  # where both mount QUEUE_VOLUME (compose/cdc*/ use the same path)
RECEIVER_UID = 10001  # the `webhook` user of compose/cdc/Dockerfile
# The header naming each delivery of a webhook: the runner refuses one seen before. GitHub's and Gitea's
# stay the same on a redelivery; GitLab's (16.2 and later) is new on a retry, which the descendant check
# then refuses as the deployed commit.
DELIVERY_HEADERS = {"github": "X-GitHub-Delivery", "gitea": "X-Gitea-Delivery", "gitlab": "X-Gitlab-Webhook-UUID"}
RECEIVER_MEMORY = "64m"  # webhook and a bash script per push
# Not secrets, but host paths that only rendering knows: .env carries them, like Compose variables.
PROJECT_PATH = "DEPLOYSTACK_PROJECT_DIR"
SPEC_PATH = "DEPLOYSTACK_SPEC"
OUTPUT_PATH = "DEPLOYSTACK_OUTPUT"  # also read by every CLI command that takes -o
# Set in the runner only: it lacks the shell's variables, so an app's `${NAME}` value it cannot resolve is
# the one the last generate on the host wrote into .env (spec/appenv.py).
HOST_ENV_FROM_OUTPUT = "DEPLOYSTACK_HOST_ENV_FROM_OUTPUT"


def local_repositories(stack: Stack) -> list[str]:
    """Apps' git sources given as absolute local paths (or file:// URLs): the runner needs to see them at
    the same path. Relative paths are inside the spec's folder, which it mounts anyway."""
    paths = []
    for app in stack.apc.apps.values():
        url = app.git.url if app.git is not None else ""
        path = url.removeprefix("file://")
        if path.startswith("/") and (url.startswith("file://") or "://" not in url):
            paths.append(str(PurePosixPath(path)))
    return sorted(set(paths))


def plan_cdc(stack: Stack, project_dir: str) -> tuple[list[Service], list[ConfigFile]]:
    """The receiver and the runner. `project_dir`: the spec's folder, relative to the output directory."""
    if not stack.cdc.enabled:
        return [], []
    config = "config/cdc"
    queue = Mount(QUEUE_VOLUME, QUEUE_DIR)
    branch = (("CDC_BRANCH", stack.cdc.branch), ("CDC_PROVIDER", stack.cdc.provider))
    receiver = Service(
        name=RECEIVER, role=Role.CDC,
        build=Build(role=Role.CDC, repo="deploystack/cdc", context="build/cdc"),
        # The one secret it holds, alone in its environment: not the whole .env.
        environment=(("CDC_WEBHOOK_SECRET", ref("CDC_WEBHOOK_SECRET")), *branch),
        networks=(HOOKS_NETWORK,),
        mounts=(queue,),
        healthcheck=HealthCheck(test=("cdc-health",), start_period_s=30),
        # Its image's USER is not root; nothing to add back, nothing to write but the queue.
        read_only=True, tmpfs=(h.TMP,),
        mem_limit=RECEIVER_MEMORY, pids_limit=h.PIDS_SMALL,
        # The runner gives the queue's folder to the receiver's user before it starts.
        depends_on=(RUNNER,),
        config_dir=config,
    )
    runner = Service(
        name=RUNNER, role=Role.CDC_RUNNER,
        build=Build(role=Role.CDC_RUNNER, repo="deploystack/cdc-runner", context="build/cdc-runner",
                    with_package=True),
        environment=(*branch,
                     ("DEPLOYSTACK_PROJECT", stack.project),
                     ("DEPLOYSTACK_SPEC", ref(SPEC_PATH)),
                     ("DEPLOYSTACK_OUTPUT", ref(OUTPUT_PATH)),
                     (HOST_ENV_FROM_OUTPUT, "1")),
        # No network an app or the LBC is on: nothing but the engine's API reaches it.
        networks=(EGRESS_NETWORK,),
        mounts=(Mount("/var/run/docker.sock", "/var/run/docker.sock", bind=True), queue,
                *runner_project_mounts(stack, project_dir)),
        healthcheck=HealthCheck(test=("cdc-runner-health",), start_period_s=30),
        # Root, for the socket (which is root on the host anyway: docs/security.md): a deploy writes the
        # output folder and git checkouts, which the host's user may own (DAC_OVERRIDE, FOWNER for chmod,
        # CHOWN, also to give the queue's folder to the receiver's user). Not read-only: deploys write
        # caches and git's state under its home.
        cap_add=(h.CHOWN, h.DAC_OVERRIDE, h.FOWNER),
        mem_limit=stack.cdc.memory, pids_limit=h.PIDS_RUNTIME,
    )
    hooks = ConfigFile(f"{config}/hooks.json", "cdc/templates/hooks.json.j2",
                       {"project": stack.project, "provider": stack.cdc.provider,
                        "delivery_header": DELIVERY_HEADERS[stack.cdc.provider]})
    return [receiver, runner], [hooks]


def runner_project_mounts(stack: Stack, project_dir: str) -> list[Mount]:
    """The spec's folder at its own host path: `deploy` in the runner creates containers whose bind mounts
    (stack/config/...) the engine resolves on the host. So is an output folder outside the spec's folder
    (`up -o /srv/shop`), and local repositories (read-only)."""
    output_outside = any(part != ".." for part in PurePosixPath(project_dir).parts)
    return [Mount(project_dir, ref(PROJECT_PATH), bind=True),
            *([Mount(".", ref(OUTPUT_PATH), bind=True)] if output_outside else []),
            *(Mount(path, path, bind=True, read_only=True) for path in local_repositories(stack))]
