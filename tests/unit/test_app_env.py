"""App values from outside the spec: `${NAME}` from the host environment and env files, resolved at
generate into the 0600 .env (compose.yaml only refers to them), `deploystack env APP`, and the config hash
that changes only for the apps that use a changed value."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from deploystack import labels
from deploystack.engine.containers import container_spec
from deploystack.errors import SpecError
from deploystack.render.envfile import quote
from deploystack.render.project import render_project
from deploystack.render.state import read_output_state
from deploystack.render.swarm import Settings, stack_data
from deploystack.render.writer import compare, write
from deploystack.spec import load_stack
from deploystack.spec.appenv import parse_env_text, resolve_app_env
from deploystack.testing import derive_spec
from tests.conftest import write_spec

SPEC = """\
project: shop
apc:
  env_file: shared.env
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
      routes: [/]
      env_file: [secrets/backend.env]
      env:
        PLAIN: "a$$b$c"
        STRIPE_KEY: ${STRIPE_KEY}
        SENTRY_DSN: "https://${SENTRY_TOKEN}@sentry.example/1"
    shop:
      source: apps/shop
      wsgi: shop.wsgi:application
      routes: [/shop/]
acc: {redis: false, memcached: false, rabbitmq: false}
mmc: {enabled: false}
dbc: {replicas: 0}
"""
HOST = {"STRIPE_KEY": "sk_live_$ecret", "SENTRY_TOKEN": "tok3n"}
SMTP = "smtp-pa'ss \"word\" #1 $HOME\\x"


def layout(folder: Path, spec: str = SPEC) -> Path:
    path = write_spec(folder, spec, apps=("backend", "shop"))
    (folder / "shared.env").write_text("REGION=eu-west-1\n")
    (folder / "secrets").mkdir()
    (folder / "secrets" / "backend.env").write_text(
        "# mail\nSMTP_PASSWORD='" + SMTP.replace("\\", "\\\\").replace("'", "\\'") + "'\nREGION=us-east-1\n")
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in HOST and k != "DEPLOYSTACK_OUTPUT"}
    return subprocess.run([sys.executable, "-m", "deploystack", *args], capture_output=True, text=True,
                          env=clean | (env or {}), timeout=120)


def test_values_from_the_host_and_env_files_resolve_in_order(tmp_path: Path) -> None:
    spec = layout(tmp_path)
    resolved = resolve_app_env(load_stack(spec), spec, HOST)
    backend = {name: (v.value, v.source, v.origin) for name, v in resolved["backend"].items()}
    assert backend == {
        "REGION": ("us-east-1", "env_file", "secrets/backend.env"),  # the app's own file wins
        "SMTP_PASSWORD": (SMTP, "env_file", "secrets/backend.env"),
        "STRIPE_KEY": ("sk_live_$ecret", "host", "$STRIPE_KEY"),
        "SENTRY_DSN": ("https://tok3n@sentry.example/1", "host", "$SENTRY_TOKEN"),  # partial interpolation
    }
    assert {n: v.value for n, v in resolved["shop"].items()} == {"REGION": "eu-west-1"}


def test_generate_writes_references_only_and_the_values_into_the_0600_env(tmp_path: Path) -> None:
    spec = layout(tmp_path)
    rendered = render_project(load_stack(spec), spec, tmp_path / "stack", b"", environ=HOST,
                              state=read_output_state(tmp_path / "stack", load_stack(spec)))
    compose = rendered.files["compose.yaml"].data.decode()
    for value in (*HOST.values(), "tok3n@sentry", SMTP, "smtp-pa", "us-east-1", "eu-west-1"):
        assert value not in compose
    assert "STRIPE_KEY: ${APP_BACKEND__STRIPE_KEY}" in compose
    assert "SMTP_PASSWORD: ${APP_BACKEND__SMTP_PASSWORD}" in compose
    assert "REGION: ${APP_SHOP__REGION}" in compose
    assert "PLAIN: a$$b$$c" in compose  # `$$` in the spec is one literal `$`; a lone `$` is literal too
    env = rendered.files[".env"]
    assert env.mode == 0o600
    assert "APP_BACKEND__SMTP_PASSWORD=\"smtp-pa'ss \\\"word\\\" #1 $$HOME\\\\x\"" in env.data.decode()
    assert "APP_BACKEND__STRIPE_KEY='sk_live_$ecret'" in env.data.decode()
    assert rendered.plan.app_secrets == ("APP_BACKEND__SMTP_PASSWORD", "APP_BACKEND__REGION",
                                         "APP_BACKEND__STRIPE_KEY", "APP_BACKEND__SENTRY_DSN", "APP_SHOP__REGION")
    backend = container_spec(rendered, rendered.plan.service("backend"), 1)
    assert backend.environment["SMTP_PASSWORD"] == SMTP
    assert backend.environment["SENTRY_DSN"] == "https://tok3n@sentry.example/1"
    assert backend.environment["PLAIN"] == "a$b$c"


@pytest.mark.parametrize("value", ["plain", "with $dollar and ${BRACES}", "hash # and \"double\"",
                                   "two\nlines", "", "trailing space "])
def test_quote_single_quoted_values_read_back_as_written(value: str) -> None:
    assert quote(value).startswith("'")
    assert dotenv_values(stream=io.StringIO(f"K={quote(value)}\n"), interpolate=False) == {"K": value}


def test_quote_falls_back_to_compose_double_quotes_for_quotes_and_backslashes() -> None:
    assert quote("it's") == '"it\'s"'
    assert quote('a\\b"c$d\ne') == '"a\\\\b\\"c$$d\\ne"'


def test_a_changed_value_changes_only_the_hash_of_the_app_using_it(tmp_path: Path) -> None:
    spec = layout(tmp_path)
    stack = load_stack(spec)
    before = render_project(stack, spec, tmp_path / "stack", b"", environ=HOST,
                            state=read_output_state(tmp_path / "stack", stack))
    write(before.files, before.output, compare(before.files, before.output))  # the generated secrets stay
    (tmp_path / "secrets" / "backend.env").write_text("SMTP_PASSWORD=rotated-value\nREGION=us-east-1\n")
    after = render_project(stack, spec, tmp_path / "stack", b"", environ=HOST,
                           state=read_output_state(tmp_path / "stack", stack))

    def hashes(rendered: object) -> dict[str, str]:
        return {s.name: container_spec(rendered, s, 1).config_hash  # type: ignore[arg-type]
                for s in rendered.plan.services}  # type: ignore[attr-defined]

    old, new = hashes(before), hashes(after)
    assert {name for name in old if old[name] != new[name]} == {"backend", "backend-migrate"}  # its services
    label_values = " ".join(container_spec(after, after.plan.service("backend"), 1).labels.values())
    assert "rotated-value" not in label_values and labels.CONFIG_HASH
    # A host variable changes only its app too.
    host = render_project(stack, spec, tmp_path / "stack", b"", environ=HOST | {"SENTRY_TOKEN": "other"},
                          state=read_output_state(tmp_path / "stack", stack))
    assert {name for name, h in hashes(host).items() if new[name] != h} == {"backend", "backend-migrate"}


def test_generated_secrets_are_kept_and_stale_app_values_dropped(tmp_path: Path) -> None:
    spec = layout(tmp_path)
    stack = load_stack(spec)
    output = tmp_path / "stack"
    output.mkdir()
    (output / ".env").write_text("DJANGO_SECRET_KEY=kept\nAPP_GONE__X='old\nvalue='\n")
    rendered = render_project(stack, spec, output, b"", environ=HOST, state=read_output_state(output, stack))
    text = rendered.files[".env"].data.decode()
    assert "DJANGO_SECRET_KEY=kept" in text and "APP_GONE__X" not in text and "value=" not in text


def test_an_env_file_inside_the_app_source_stays_out_of_its_build_context(tmp_path: Path) -> None:
    spec = layout(tmp_path, SPEC.replace("env_file: [secrets/backend.env]", "env_file: [apps/backend/prod.env]"))
    (tmp_path / "apps" / "backend" / "prod.env").write_text("SMTP_PASSWORD=inside-the-source\n")
    (tmp_path / "apps" / "backend" / "keep.txt").write_text("kept\n")
    stack = load_stack(spec)
    assert stack.env_file_paths() == ("shared.env", "apps/backend/prod.env")
    rendered = render_project(stack, spec, tmp_path / "stack", b"", environ=HOST,
                              state=read_output_state(tmp_path / "stack", stack))
    assert "build/apps/backend/app/keep.txt" in rendered.files
    assert "build/apps/backend/app/prod.env" not in rendered.files
    assert all(b"inside-the-source" not in f.data for name, f in rendered.files.items() if name.startswith("build/"))


def test_swarm_gets_app_values_as_secrets_not_in_the_stack_file(tmp_path: Path) -> None:
    spec = layout(tmp_path)
    rendered = render_project(load_stack(spec), spec, tmp_path / "stack", b"", environ=HOST,
                              state=read_output_state(tmp_path / "stack", load_stack(spec)))
    data = stack_data(rendered.plan, rendered.images, Settings(), {}, rendered.secrets)
    backend = data["services"]["backend"]
    assert backend["environment"]["STRIPE_KEY"] == "$${APP_BACKEND__STRIPE_KEY}"
    assert {"source": next(k for k in data["secrets"] if k.startswith("app-backend--stripe-key")),
            "target": "APP_BACKEND__STRIPE_KEY"} in backend["secrets"]
    assert "sk_live" not in str(data)


def test_derived_test_specs_point_at_the_same_env_files(tmp_path: Path) -> None:
    spec = layout(tmp_path)
    (tmp_path / "derived").mkdir()
    derived = derive_spec(spec, tmp_path / "derived", "shop-x", 1080, 1443)
    stack = load_stack(derived)
    assert stack.apc.env_file == [str(tmp_path / "shared.env")]
    assert stack.apc.apps["backend"].env_file == [str(tmp_path / "secrets" / "backend.env")]
    assert resolve_app_env(stack, derived, HOST)["backend"]["SMTP_PASSWORD"].value == SMTP


# -- bad input: exit 2, the field and its line, nothing written ---------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ("STRIPE_KEY: ${STRIPE_KEY}", "apc.apps.backend.env.STRIPE_KEY (line 12): '${STRIPE_KEY:-x}': only "
     "${NAME} references to the host environment are supported (letters, digits and '_'); write $$ for a "
     "literal $"),
    ("env_file: [secrets/backend.env]", "apc.apps.backend.env_file (line 9): must be a list (got 3)"),
    ("env_file: shared.env", "apc.env_file (line 3): a file is listed twice"),
    ("PLAIN: ", "apc.apps.backend.env.1BAD (line 11): '1BAD' is not a valid environment variable name"),
])
def test_bad_env_values_are_refused_with_field_and_line(tmp_path: Path, change: str, message: str) -> None:
    replacement = {"STRIPE_KEY: ${STRIPE_KEY}": "STRIPE_KEY: ${STRIPE_KEY:-x}",
                   "env_file: [secrets/backend.env]": "env_file: 3",
                   "env_file: shared.env": "env_file: [shared.env, shared.env]",
                   "PLAIN: ": "1BAD: x\n        PLAIN: "}[change]
    spec = layout(tmp_path, SPEC.replace(change, replacement))
    with pytest.raises(SpecError) as caught:
        load_stack(spec)
    assert [str(p) for p in caught.value.problems] == [message]


def test_a_missing_host_variable_or_env_file_is_exit_2_naming_app_and_variable(tmp_path: Path) -> None:
    spec = layout(tmp_path, SPEC.replace("secrets/backend.env", "secrets/missing.env"))
    result = cli("generate", "-f", str(spec), env={"STRIPE_KEY": "x"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"{spec}: invalid spec",
        f"apc.apps.backend.env_file[0] (line 9): app backend: env file {tmp_path}/secrets/missing.env not found",
        "apc.apps.backend.env.SENTRY_DSN (line 13): app backend: host environment variable SENTRY_TOKEN is not set",
    ]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stack").exists()


def test_env_file_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    values, errors = parse_env_text("OK=1\n# comment\nNOVALUE\n1BAD=x\nexport GOOD='two'\n")
    assert values == {"OK": "1", "GOOD": "two"}
    assert errors == ["line 3: NOVALUE has no value (write NOVALUE= for an empty one)",
                      "line 4: '1BAD' is not a valid environment variable name"]
    spec = layout(tmp_path)
    (tmp_path / "shared.env").write_text("A=1\nB='unterminated\n")
    result = cli("generate", "-f", str(spec), env=HOST)
    assert result.returncode == 2
    assert (f"apc.env_file[0] (line 3): env file {tmp_path}/shared.env line 2: cannot parse "
            "\"B='unterminated\"") in result.stderr
    assert not (tmp_path / "stack").exists()


def test_env_lists_names_and_sources_masked_unless_shown(tmp_path: Path) -> None:
    spec = layout(tmp_path)
    assert cli("generate", "-f", str(spec), env=HOST).returncode == 0
    masked = cli("env", "backend", "-f", str(spec), env=HOST)
    assert masked.returncode == 0, masked.stderr
    rows = {line.split()[0]: line for line in masked.stdout.splitlines()}
    assert rows["SMTP_PASSWORD"].split() == ["SMTP_PASSWORD", "env_file", "secrets/backend.env", "********"]
    assert rows["REGION"].split() == ["REGION", "env_file", "secrets/backend.env", "********"]
    assert rows["STRIPE_KEY"].split() == ["STRIPE_KEY", "host", "environment", "($STRIPE_KEY)", "********"]
    assert rows["DJANGO_SECRET_KEY"].split() == [
        "DJANGO_SECRET_KEY", "generated", "secret", "(DJANGO_SECRET_KEY_BACKEND)", "********"]
    assert rows["DB_HOST"].split() == ["DB_HOST", "deploystack", "db-primary"]
    assert rows["PLAIN"].split() == ["PLAIN", "spec", "a$b$c"]
    assert "sk_live" not in masked.stdout and "smtp-pa" not in masked.stdout
    shown = cli("env", "backend", "--show", "--json", "-f", str(spec), env=HOST)
    by_name = {row["name"]: row for row in json.loads(shown.stdout)}
    assert by_name["SMTP_PASSWORD"]["value"] == SMTP and by_name["STRIPE_KEY"]["value"] == "sk_live_$ecret"
    secret_key = dotenv_values(tmp_path / "stack" / ".env")["DJANGO_SECRET_KEY_BACKEND"]
    assert by_name["DJANGO_SECRET_KEY"] == {
        "name": "DJANGO_SECRET_KEY", "source": "generated secret (DJANGO_SECRET_KEY_BACKEND)", "value": secret_key}
    unknown = cli("env", "nope", "-f", str(spec), env=HOST)
    assert unknown.returncode == 2 and "no app 'nope' in this stack (apps: backend, shop)" in unknown.stderr


def test_in_the_cdc_an_unset_host_variable_keeps_the_value_the_host_resolved(tmp_path: Path) -> None:
    """A push-to-deploy renders inside the CDC container, which has none of the shell's variables."""
    spec = layout(tmp_path)
    stack = load_stack(spec)
    host = render_project(stack, spec, tmp_path / "stack", b"", environ=HOST,
                          state=read_output_state(tmp_path / "stack", stack))
    write(host.files, host.output, compare(host.files, host.output))
    with pytest.raises(SpecError):  # on the host, a variable that is not set is an error
        render_project(stack, spec, tmp_path / "stack", b"", environ={},
                       state=read_output_state(tmp_path / "stack", stack))
    cdc = render_project(stack, spec, tmp_path / "stack", b"", environ={"DEPLOYSTACK_HOST_ENV_FROM_OUTPUT": "1"},
                         state=read_output_state(tmp_path / "stack", stack))
    assert cdc.files[".env"].data == host.files[".env"].data
    assert cdc.secrets["APP_BACKEND__SENTRY_DSN"] == "https://tok3n@sentry.example/1"
    assert cdc.app_env["backend"]["STRIPE_KEY"].origin == "$STRIPE_KEY (kept)"
