"""A pure render: `render_project` reads nothing of the output folder; what it keeps from there (the .env's
secrets, the deploy history's pins, the TLS material) comes in an `OutputState`, read once by
`read_output_state`."""

from __future__ import annotations

from pathlib import Path

from deploystack import history
from deploystack.render.envfile import read_env
from deploystack.render.project import Rendered, render_project
from deploystack.render.state import TLS_FILES, OutputState, read_output_state
from deploystack.render.writer import compare, write
from deploystack.spec import load_stack
from tests.conftest import write_spec

SPEC = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
dbc:
  ha: patroni
  replicas: 1
  backups:
    full: weekly
    diff: daily
"""
NODE_CERT = "config/patroni/backup-tls/node.crt"


def rendered(folder: Path, state: OutputState) -> tuple[Rendered, Path]:
    spec = write_spec(folder, SPEC)
    return render_project(load_stack(spec), spec, folder / "stack", b"", environ={}, state=state), spec


def test_a_render_from_a_given_state_needs_no_output_folder(tmp_path: Path) -> None:
    first, _ = rendered(tmp_path, OutputState())
    assert not (tmp_path / "stack").exists()
    env = read_env_text(first)
    kept = OutputState.of(env=env, tls={p: first.files[p].data for p in TLS_FILES if p in first.files})
    again, _ = rendered(tmp_path, kept)
    assert not (tmp_path / "stack").exists()
    assert again.files[".env"].data == first.files[".env"].data  # the generated secrets are kept
    assert again.files[NODE_CERT].data == first.files[NODE_CERT].data  # and the certificates
    fresh, _ = rendered(tmp_path, OutputState())
    assert fresh.files[".env"].data != first.files[".env"].data and fresh.files[NODE_CERT] != first.files[NODE_CERT]


def test_what_the_folder_holds_counts_only_through_the_state(tmp_path: Path) -> None:
    first, spec = rendered(tmp_path, OutputState())
    write(first.files, first.output, compare(first.files, first.output))
    ignored, _ = rendered(tmp_path, OutputState())  # a folder on disk, an empty state: nothing of it is read
    assert ignored.files[".env"].data != first.files[".env"].data
    state = read_output_state(first.output, load_stack(spec))
    assert dict(state.env) == read_env(first.output / ".env") and NODE_CERT in state.tls
    assert rendered(tmp_path, state)[0].files[".env"].data == first.files[".env"].data


def test_a_rollback_pin_in_the_state_picks_the_image(tmp_path: Path) -> None:
    first, _ = rendered(tmp_path, OutputState())
    source = first.source_images["backend"]
    pin = history.Deploy(app="backend", kind="rollback", ref="previous", image="shop/backend:older",
                         source_image=source, previous=source, started="2026-12-02T10:00:00+00:00", seconds=1.0,
                         trigger="cli", result=history.OK)
    pinned, _ = rendered(tmp_path, OutputState.of(records=[pin]))
    assert pinned.images["backend"] == "shop/backend:older" and pinned.source_images["backend"] == source
    assert {"shop/backend:older", source} <= pinned.retained
    assert first.images["backend"] == source and not first.retained


def read_env_text(result: Rendered) -> dict[str, str]:
    """The variables of a rendered .env, as read_output_state would read them back."""
    folder = result.output.parent / "env-only"
    folder.mkdir(exist_ok=True)
    (folder / ".env").write_bytes(result.files[".env"].data)
    return read_env(folder / ".env")
