"""Stack -> every file of the output directory, in memory; nothing is written here, and nothing of the output
folder is read: what a render keeps from it comes in an `OutputState` (render/state.py). The apps' sources
(build contexts; a git app's checkout, which is in the output folder) are still read here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploystack import history
from deploystack.errors import UsageError
from deploystack.gitsource import checkout_dir
from deploystack.plan import ProjectPlan, build_plan
from deploystack.plan.backups import TARGET_KEYS
from deploystack.plan.backups import enabled as backups_enabled
from deploystack.plan.cdc import HOST_ENV_FROM_OUTPUT, OUTPUT_PATH, PROJECT_PATH, SPEC_PATH
from deploystack.plan.model import Build, ConfigFile
from deploystack.plan.secrets import app_secret
from deploystack.render.compose import compose_data, dump_yaml, quoted
from deploystack.render.contexts import content_hash, context_files
from deploystack.render.envfile import complete_secrets, env_text
from deploystack.render.sourcetree import FileData
from deploystack.render.state import ENV_FILE as ENV_FILE
from deploystack.render.state import OutputState
from deploystack.render.swarm import Settings, secret_files, stack_data
from deploystack.render.templates import render_template
from deploystack.spec.appenv import ENV_FILE as ENV_FILE_SOURCE
from deploystack.spec.appenv import AppEnv, parse_env_text, resolve_app_env
from deploystack.spec.models import Stack

COMPOSE_FILE = "compose.yaml"
SWARM_DIR = "swarm"  # the stack file's configs and secrets, and the stack file unless `-o` says otherwise
SWARM_STACK_FILE = "stack.yaml"
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class BuildJob:
    image: str  # repo:tag
    context: str  # relative to the output directory
    args: dict[str, str]
    stages: tuple[str, ...] = ()  # named stages tagged after the build (their layers are the next cache)
    dockerfile: str | None = None  # inside the context, when not its `Dockerfile`
    app: str | None = None  # the app whose image this is

    def stage_image(self, stage: str) -> str:
        repo, tag = self.image.rsplit(":", 1)
        return f"{repo}:{stage}-{tag}"


@dataclass(frozen=True)
class Rendered:
    plan: ProjectPlan
    output: Path
    files: dict[str, FileData]  # path relative to output -> content
    images: dict[str, str]  # service name -> image reference
    builds: tuple[BuildJob, ...]  # one per distinct build context
    secrets: dict[str, str]  # generated secrets and the apps' values from outside the spec, by .env name
    source_images: dict[str, str]  # app -> the image its source builds (differs from images when pinned)
    retained: frozenset[str]  # images of recent deploys, kept for a quick rollback
    app_env: AppEnv  # the apps' values from outside the spec, with where each came from


def read_ca_bundle(path: Path | None) -> bytes:
    """The CA bundle handed to pip in builds: the one named, else the host's, else none."""
    if path is not None:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise UsageError(f"--ca-bundle {path}: {exc.strerror}") from None
    # Inside the CDC container: the bundle its image was built with, i.e. the host's, so that a deploy
    # from there renders the same build contexts (and image tags) as the host does.
    image_bundle = Path(os.environ.get("DEPLOYSTACK_CA_BUNDLE", ""))
    if image_bundle.name and image_bundle.is_file():
        return image_bundle.read_bytes()
    return DEFAULT_CA_BUNDLE.read_bytes() if DEFAULT_CA_BUNDLE.is_file() else b""


def check_output_project(output: Path, project: str) -> None:
    """Refuse an output folder generated for another project: a wrong -o (or a DEPLOYSTACK_OUTPUT left
    set for another stack) would otherwise overwrite that stack's files with this one's. Callers check
    before rendering (Session.render, scale), so that nothing is fetched into such a folder either."""
    try:
        with (output / COMPOSE_FILE).open(encoding="utf-8") as compose:
            found = next((line[len("name:"):].strip().strip("'\"") for line in compose if line.startswith("name:")),
                         None)
    except (FileNotFoundError, NotADirectoryError):  # nothing generated there yet
        return
    if found is not None and found != project:
        raise UsageError(f"{output} holds the generated project {found!r}, and this spec is project {project!r}: "
                         "give this stack's own -o (check DEPLOYSTACK_OUTPUT); to rename a project, "
                         f"`deploystack down` it under its old name first and remove {output}")


def render_project(stack: Stack, spec_path: Path, output: Path, ca_bundle: bytes,
                   environ: Mapping[str, str] | None = None, *, state: OutputState) -> Rendered:
    """Every file of `output` (a path: nothing is read there) from the spec and `state`, what the folder
    held (render/state.read_output_state). `environ`: where `${NAME}` in apps' env comes from (default:
    this process's environment)."""
    spec_dir = spec_path.resolve().parent
    output = output.resolve()
    environ = os.environ if environ is None else environ
    previous = state.env
    app_env = resolve_app_env(stack, spec_path, environ,
                              (lambda app, name: previous.get(app_secret(app, name)))
                              if environ.get(HOST_ENV_FROM_OUTPUT) == "1" else None)
    plan = build_plan(stack, project_dir=os.path.relpath(spec_dir, output), env_files=env_file_names(app_env))
    app_values = app_secret_values(app_env)
    files: dict[str, FileData] = {}
    for config in plan.configs:
        files[config.path] = FileData(config_text(config).encode())
    if stack.dbc.offsite is not None:
        from deploystack.render.dbtls import offsite_tls  # cryptography: only a stack with an offsite replica

        files |= offsite_tls(stack.project, stack.dbc.offsite.host, state.tls, patroni=stack.dbc.ha == "patroni")
    if backups_enabled(stack):
        from deploystack.render.backuptls import backup_tls  # cryptography: only a stack with backups

        files |= backup_tls(stack.project, state.tls)

    records = list(state.history)
    images: dict[str, str] = {}
    builds: dict[str, BuildJob] = {}
    source_images: dict[str, str] = {}
    for service in plan.services:
        if service.build is None:
            images[service.name] = service.image or ""
            continue
        build = service.build
        if build.context not in builds:
            context = context_files(build, _app_source(build, spec_dir, output), ca_bundle,
                                    never_in_images(stack, spec_path, output))
            tag = content_hash(context | _args_file(dict(build.args)))
            if build.from_git and build.app is not None:
                tag = f"{state.heads.get(build.app, 'unknown')[:12]}-{tag}"  # the commit, readable in `docker ps`
            image = f"{build.repo}:{tag}"
            builds[build.context] = BuildJob(image, build.context, dict(build.args), build.stages, build.dockerfile,
                                             build.app)
            files |= {f"{build.context}/{name}": data for name, data in context.items()}
        images[service.name] = builds[build.context].image
        if build.app is not None:
            source_images[build.app] = images[service.name]
            pinned = history.pinned_image(records, build.app, images[service.name])
            images[service.name] = pinned or images[service.name]

    kept = {k: v for k, v in previous.items() if not k.startswith(APP_SECRET_PREFIX)}
    secrets = complete_secrets(plan.secrets, kept) | backup_target_keys(stack, spec_dir, environ)
    if stack.cdc.enabled:
        secrets |= {PROJECT_PATH: str(spec_dir), SPEC_PATH: str(spec_path.resolve()),
                    OUTPUT_PATH: str(output.resolve())}
    files[ENV_FILE] = FileData(env_text(secrets, app_values).encode(), 0o600)
    secrets |= app_values
    files[COMPOSE_FILE] = FileData(dump_yaml(compose_data(plan, images)).encode())
    return Rendered(plan, output, files, images, tuple(builds.values()), secrets, source_images,
                    frozenset(history.recent_images(records)), app_env)


def backup_target_keys(stack: Stack, spec_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The off-host backup target's keys (dbc.backups.target), by the names the spec gives, from its env file
    or deploystack's environment: written into .env at every generate, never into the spec."""
    target = stack.dbc.backups.target if stack.dbc.backups is not None else None
    if target is None:
        return {}
    source: Mapping[str, str] = environ
    where = "deploystack's environment"
    if target.env_file is not None:
        path = spec_dir / target.env_file
        try:
            source, errors = parse_env_text(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"dbc.backups.target.env_file: cannot read {path}: {exc}") from None
        if errors:
            raise UsageError(f"dbc.backups.target.env_file {path}: {errors[0]}")
        where = str(path)
    missing = [name for name in (target.access_key_env, target.secret_key_env) if not source.get(name)]
    if missing:
        raise UsageError(f"dbc.backups.target: {', '.join(missing)} not set in {where}")
    access, secret = TARGET_KEYS
    return {access: source[target.access_key_env], secret: source[target.secret_key_env]}


def env_file_names(app_env: AppEnv) -> dict[str, list[str]]:
    """app -> the variables its env files give it, for build_plan."""
    return {app: [k for k, v in values.items() if v.source == ENV_FILE_SOURCE] for app, values in app_env.items()}


APP_SECRET_PREFIX = "APP_"  # plan/secrets.app_secret's names; generated secrets never start so


def app_secret_values(app_env: AppEnv) -> dict[str, str]:
    """The apps' values from outside the spec by their .env name; two apps whose names and variables
    would share one name (`a--b`'s C and `a`'s B__C) are refused rather than mixed up."""
    values: dict[str, str] = {}
    owners: dict[str, str] = {}
    for app, variables in app_env.items():
        for name, external in variables.items():
            key = app_secret(app, name)
            if key in owners:
                raise UsageError(f"app {app}'s variable {name} and app {owners[key]}'s would both be {key} "
                                 "in .env: rename one")
            owners[key] = app
            values[key] = external.value
    return values


def never_in_images(stack: Stack, spec_path: Path, output: Path) -> tuple[Path, ...]:
    """What an app's source may hold but no image may: the output folder (wherever -o puts it: .env,
    keys, copies of the build contexts), the spec, its env files, and the folders of `tls: files`
    certificates."""
    spec_dir = spec_path.resolve().parent
    tls = [spec_dir / name for name in (stack.lbc.cert_file, stack.lbc.key_file) if name is not None]
    env_files = [spec_dir / name for name in stack.env_file_paths()]
    return (output.resolve(), spec_path.resolve(), *env_files, *dict.fromkeys(path.parent for path in tls))


def _app_source(build: Build, spec_dir: Path, output: Path) -> Path | None:
    if build.from_git:
        assert build.app is not None
        checkout = checkout_dir(output, build.app)
        if not checkout.is_dir():
            raise UsageError(f"app {build.app} comes from git and has not been fetched yet: "
                             "deploystack up (or deploy) fetches it")
        return checkout
    return spec_dir / build.app_source if build.app_source is not None else None


def _args_file(args: dict[str, str]) -> dict[str, FileData]:
    """Build args change the image as much as files do, so they count in the tag."""
    text = "".join(f"{k}={v}\n" for k, v in sorted(args.items()))
    return {".build-args": FileData(text.encode())}


@dataclass(frozen=True)
class SwarmRendered:
    plan: ProjectPlan  # the swarm variant: no CDC, the LBC finds apps through Docker's DNS
    folder: Path  # <output>/swarm
    files: dict[str, FileData]  # relative to folder: config/..., secrets/... (0600)
    stack_file: Path
    stack_yaml: bytes


def render_swarm(stack: Stack, spec_path: Path, rendered: Rendered, stack_file: Path | None = None) -> SwarmRendered:
    """The stack file for `docker stack deploy` and the files it names, from the same spec and images as
    `rendered` (the Compose project, whose build contexts make the images)."""
    if stack.dbc.backups is not None:
        # The TLS files between pgBackRest's servers (render/backuptls.py) are not Swarm configs yet: the
        # nodes' archive_command would fail on every segment and pg_wal fill their disks. Refused, not half-run.
        raise UsageError("dbc.backups does not run on a swarm yet (pgBackRest's TLS files are not Swarm configs): "
                         "remove dbc.backups from the spec to deploy it with --engine swarm (docs/db.md)")
    folder = rendered.output / SWARM_DIR
    stack_file = (stack_file or folder / SWARM_STACK_FILE).resolve()
    plan = build_plan(stack, project_dir=os.path.relpath(spec_path.resolve().parent, rendered.output), swarm=True,
                      env_files=env_file_names(rendered.app_env))
    configs = {config.path: config_text(config).encode() for config in plan.configs}
    settings = Settings(stack.swarm.endpoint_mode, stack.swarm.registry, stack.swarm.update_delay,
                        stack.swarm.encrypted)
    files_dir = os.path.relpath(folder, stack_file.parent)
    data = stack_data(plan, rendered.images, settings, configs, rendered.secrets,
                      "." if files_dir == "." else files_dir)
    files = {path: FileData(data) for path, data in configs.items()}
    files |= {path: FileData(value.encode(), 0o600) for path, value in secret_files(plan, rendered.secrets).items()}
    text = dump_yaml(data).replace("`deploystack generate`", "`deploystack export swarm`")
    return SwarmRendered(plan, folder, files, stack_file, text.encode())


def config_text(config: ConfigFile) -> str:
    """A config file's text: its template rendered, or its data dumped as YAML."""
    if config.yaml:
        return dump_yaml({key: quoted_tree(value) for key, value in config.context.items()})
    return render_template(config.template, config.context)


def quoted_tree(value: object) -> object:
    """`value` with every string a YAML 1.1 reader would take for a boolean or null quoted (PyYAML reads
    `on` as true)."""
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, dict):
        return {key: quoted_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [quoted_tree(item) for item in value]
    return value
