"""render/blockyaml.py writes the generated YAML files itself, faster than ruamel.yaml's emitter: its text
must be ruamel.yaml's, byte for byte, for every document the renderers make from the blueprints and
fixtures, and for text chosen to need care; what it leaves to ruamel.yaml, it must answer None for."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from deploystack.errors import DeployError
from deploystack.render import compose, offsite, project
from deploystack.render.blockyaml import block_yaml
from deploystack.render.compose import ruamel_yaml_text
from deploystack.spec import load_stack
from tests.conftest import BLUEPRINTS, REPO

SPECS = sorted([*BLUEPRINTS.glob("*/deploystack.yaml"), *REPO.glob("tests/fixtures/projects/*.yaml"),
                *REPO.glob("tests/fixtures/projects/*/deploystack.yaml")])


def rendered_documents(spec: Path, output: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every document dump_yaml is given while rendering `spec` (compose.yaml, YAML config files and,
    where the spec allows a swarm, the stack file)."""
    documents: list[dict[str, Any]] = []

    def keep(data: dict[str, Any], header: str = compose.GENERATED) -> str:
        documents.append(data)
        return compose.dump_yaml(data, header)

    for module in (project, offsite):
        monkeypatch.setattr(module, "dump_yaml", keep)
    stack = load_stack(spec)
    rendered = project.render_project(stack, spec, output, b"")
    with contextlib.suppress(DeployError):  # a spec the swarm refuses (tls: files)
        project.render_swarm(stack, spec, rendered)
    return documents


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name if p.name == "deploystack.yaml" else p.stem)
def test_every_generated_document_is_ruamels_text(spec: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    documents = rendered_documents(spec, tmp_path / "stack", monkeypatch)
    assert documents
    for data in documents:
        assert block_yaml(data) == ruamel_yaml_text(data)  # written here, not left to ruamel.yaml


TRICKY = [
    # read back as something else than text: numbers, booleans, null, dates, YAML 1.1 words
    "1.2", "0x10", "0o17", "0b101", "1e3", "+1", "-1", "1_000", ".5", "5.", ".inf", ".nan", "NaN", "007", "0",
    "null", "Null", "~", "true", "True", "yes", "on", "off", "no", "y", "n", "2001-12-14", "12:30:00", "1:20",
    "=", "<<",
    # indicators first, inside or last
    "-", "- a", "-a", "?", "?a", ":", ":a", "a:", "a: b", "a:b", "#x", "a #b", "a#b", "a# b", "!tag", "&a", "*a",
    "%x", "@x", "`x", "|x", ">x", "{x}", "[x]", "x,y", "a|b", "a>b", "a -b", "'", "a'b", '"x', 'a"b',
    "---", "--- a", "...", "...a", "..", ".a",
    # spaces, breaks, tabs, other characters
    " a", "a ", "a  b", "x\ny", "x\ty", "é", "\x07", "",
    # ordinary values
    "$x", "${X}", "$$", "/path/with spaces/x", "c:\\win", "a\\b", "x=y z", "x;y", "json-file", "./config/db",
    "no-new-privileges:true", "postgres://u@db:5432/x", "host all all all reject", "a" * 999, "a" * 1001,
]


@pytest.mark.parametrize("text", TRICKY, ids=repr)
@pytest.mark.parametrize("shape", ["value", "item", "quoted", "key", "nested"])
def test_tricky_text_is_ruamels_text_or_left_to_it(text: str, shape: str) -> None:
    data: dict[str, Any] = {
        "value": {"k": text},
        "item": {"k": [text, "b"]},
        "quoted": {"k": SingleQuotedScalarString(text)},
        "key": {text: 1, "b": [text]},
        "nested": {"k": [{"a": text, "b": [text], "c": {"d": text}}, {"e": {}}]},
    }[shape]
    written = block_yaml(data)
    assert written is None or written == ruamel_yaml_text(data)


def test_shapes_other_than_the_renderers_are_left_to_ruamel() -> None:
    for data in ({}, {"a": None}, {"a": 1.5}, {"a": [[1]]}, {1: "a"}, {"a": ("t",)}, {"k" * 128: 1}):
        assert block_yaml(data) is None
    mixed: dict[str, Any] = {"a": {}, "b": [], "c": [{}], "d": [[]], "e": -4, "f": False,
                             "g": [{"x": {"y": [1, {"z": True}]}}, 3], "h": {"i": {"j": []}}}
    assert block_yaml(mixed) == ruamel_yaml_text(mixed)


def test_most_text_is_written_here() -> None:
    """The fast writer earns its keep only if ordinary text (not the tricky cases) stays on it."""
    assert block_yaml({"k": ["a b", "x=y", "${X}", SingleQuotedScalarString("3"), "80"]}) is not None
