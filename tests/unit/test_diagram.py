"""diagram: every blueprint drawn in DOT and Mermaid names each service of its plan (with replica counts),
the public and private networks are separate boxes in the seed's colours, published ports are shown,
labels from the spec are escaped, and SVG comes from Graphviz's `dot` (or a one-line error without it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploystack.diagram import Format, choose_format, diagram_of, produce, to_dot, to_mermaid
from deploystack.diagram.model import node_id, port_text
from deploystack.diagram.printers import COLOURS
from deploystack.errors import UsageError
from deploystack.plan import ProjectPlan, build_plan
from deploystack.spec import Stack, load_stack
from tests.conftest import BLUEPRINTS, REPO, write_spec

BLUEPRINT_SPECS = sorted(BLUEPRINTS.glob("*/deploystack.yaml"))
DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="Graphviz's dot is not installed (apt-get install graphviz)")
ORANGE, GREEN = COLOURS["public"][0], COLOURS["private"][0]

# Every role part switched the other way from the default blueprint, and labels that need escaping.
VARIANT = """\
project: shop
lbc: {bind: 0.0.0.0, ports: {http: 8081, https: 8444}}
apc:
  apps:
    end:
      source: apps/end
      wsgi: end.wsgi:application
      replicas: 3
      routes: ['/', '/a-b/']
      migrate: false
acc: {rabbitmq: false, elasticsearch: true}
mmc: {backend: minio}
dbc: {replicas: 2}
"""


def variant(folder: Path) -> Path:
    return write_spec(folder, VARIANT, apps=("end",))


@pytest.fixture(params=[*BLUEPRINT_SPECS, "variant"], ids=lambda p: p if isinstance(p, str) else p.parent.name)
def stack_and_plan(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Stack, ProjectPlan]:
    spec = variant(tmp_path) if request.param == "variant" else request.param
    stack = load_stack(spec)
    return stack, build_plan(stack)


def expected_title(plan: ProjectPlan, name: str) -> str:
    service = plan.service(name)
    return f"{name} ×{service.replicas}" if service.scalable else name


def test_there_is_a_blueprint_to_draw() -> None:
    assert BLUEPRINT_SPECS, "no blueprints/*/deploystack.yaml found"


def test_dot_names_every_service_with_its_replicas(stack_and_plan: tuple[Stack, ProjectPlan]) -> None:
    stack, plan = stack_and_plan
    dot = to_dot(diagram_of(stack, plan))
    titles = dict(re.findall(r"^\s*(svc_\w+) \[label=<<B>(.*?)</B>", dot, re.MULTILINE))
    assert titles == {node_id(s.name): expected_title(plan, s.name) for s in plan.services}


def test_mermaid_names_every_service_with_its_replicas(stack_and_plan: tuple[Stack, ProjectPlan]) -> None:
    stack, plan = stack_and_plan
    text = to_mermaid(diagram_of(stack, plan))
    assert text.startswith("%% ") and "\nflowchart LR\n" in text
    titles = dict(re.findall(r'^\s*(svc_\w+)\(?\["(.*?)(?:<br/>|")', text, re.MULTILINE))
    assert titles == {node_id(s.name): expected_title(plan, s.name) for s in plan.services}


def test_published_ports_are_drawn_from_the_client(stack_and_plan: tuple[Stack, ProjectPlan]) -> None:
    stack, plan = stack_and_plan
    drawing = diagram_of(stack, plan)
    dot, mermaid = to_dot(drawing), to_mermaid(drawing)
    ports = [port_text(p) for s in plan.services for p in s.ports]
    assert ports, "the LBC publishes ports"
    for port in ports:
        assert f"client -> svc_lbc [label=<{port}>" in dot
        assert f'client -->|"{port}"| svc_lbc' in mermaid


def test_default_blueprint_edges() -> None:
    stack = load_stack(BLUEPRINTS / "default" / "deploystack.yaml")
    mermaid = to_mermaid(diagram_of(stack))
    for line in ('client -->|"127.0.0.1:8443 → 443"| svc_lbc', 'svc_lbc -->|"/api/"| svc_backend',
                 'svc_lbc -->|"/_cdc/"| svc_cdc', 'role_apc -->|"writes"| svc_db_primary',
                 'role_apc -->|"reads"| svc_db_replica_1', "role_apc --> svc_redis", "role_apc --> svc_media",
                 'svc_db_replica_1 -->|"replication"| svc_db_primary', "svc_cdc_runner ==>", "| docker",
                 'svc_cdc -->|"queue (volume)"| svc_cdc_runner'):
        assert line in mermaid


def mermaid_blocks(text: str) -> dict[str, list[str]]:
    """Subgraph id -> the node ids declared anywhere inside it."""
    blocks: dict[str, list[str]] = {}
    open_ids: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("subgraph "):
            open_ids.append(line.split()[1].split("[")[0])
            blocks[open_ids[-1]] = []
        elif line == "end":
            open_ids.pop()
        elif (match := re.match(r"(svc_\w+)[\[(]", line)) is not None:
            for block in open_ids:
                blocks[block].append(match.group(1))
    return blocks


def test_mermaid_networks_are_separate_subgraphs_in_the_seed_colours(
        stack_and_plan: tuple[Stack, ProjectPlan]) -> None:
    stack, plan = stack_and_plan
    text = to_mermaid(diagram_of(stack, plan))
    blocks = mermaid_blocks(text)
    public = {node_id(s.name) for s in plan.services if "public" in s.networks}
    assert set(blocks["net_public"]) == public == {"svc_lbc"}
    assert set(blocks["net_private"]) == {node_id(s.name) for s in plan.services} - public
    assert f"style net_public fill:{COLOURS['public'][1]},stroke:{ORANGE}" in text
    assert f"style net_private fill:{COLOURS['private'][1]},stroke:{GREEN}" in text


def test_dot_networks_are_separate_clusters_in_the_seed_colours(stack_and_plan: tuple[Stack, ProjectPlan]) -> None:
    stack, plan = stack_and_plan
    dot = to_dot(diagram_of(stack, plan))
    for network, colour in (("public", ORANGE), ("private", GREEN)):
        match = re.search(rf"subgraph cluster_net_{network} {{\n\s*(.*)\n", dot)
        assert match is not None, network
        assert f'color="{colour}"' in match.group(1).split()


@needs_dot
def test_graphviz_lays_the_networks_out_apart(stack_and_plan: tuple[Stack, ProjectPlan]) -> None:
    """Graphviz's own reading of the DOT text: which nodes each network cluster holds, and its colour."""
    stack, plan = stack_and_plan
    assert DOT is not None
    laid_out = json.loads(subprocess.run([DOT, "-Tjson"], input=to_dot(diagram_of(stack, plan)),
                                         capture_output=True, text=True, check=True).stdout)
    objects = laid_out["objects"]
    names = {o["_gvid"]: o["name"] for o in objects}
    clusters = {o["name"]: o for o in objects if o["name"].startswith("cluster_net_")}
    members = {name: {names[n] for n in c.get("nodes", [])} for name, c in clusters.items()}
    assert members["cluster_net_public"] == {"svc_lbc"}
    assert members["cluster_net_private"] >= {node_id(s.name) for s in plan.services if s.role != "lbc"}
    assert not members["cluster_net_public"] & members["cluster_net_private"]
    assert clusters["cluster_net_public"]["color"] == ORANGE
    assert clusters["cluster_net_private"]["color"] == GREEN


def test_labels_from_the_spec_are_escaped(tmp_path: Path) -> None:
    # The spec refuses such a route (it would reach nginx.conf); the diagram escapes its labels anyway.
    stack = load_stack(variant(tmp_path))
    app = stack.apc.apps["end"].model_copy(update={"routes": ["/", '/a"b<c>&\\/']})
    stack = stack.model_copy(update={"apc": stack.apc.model_copy(update={"apps": {"end": app}})})
    drawing = diagram_of(stack)
    dot, mermaid = to_dot(drawing), to_mermaid(drawing)
    assert '/a"b&lt;c&gt;&amp;\\/' in dot  # HTML-like label: entities; the quote is fine inside <...>
    assert "/a#quot;b#lt;c#gt;#amp;\\/" in mermaid
    route_line = next(line for line in mermaid.splitlines() if "svc_lbc -->" in line)
    assert route_line.count('"') == 2  # only the label's own quotes
    assert "svc_end[" in mermaid and "\n    end\n" in mermaid  # an app named `end` is no keyword


@needs_dot
def test_svg_and_png_render(tmp_path: Path) -> None:
    drawing = diagram_of(load_stack(variant(tmp_path)))  # escaped labels must not upset dot either
    svg = produce(drawing, Format.svg)
    assert svg.startswith(b"<?xml") and b"</svg>" in svg and b"replica&#45;2" in svg
    assert produce(drawing, Format.png).startswith(b"\x89PNG")


def test_format_from_the_option_or_the_suffix() -> None:
    assert choose_format(None, None) is Format.mermaid
    assert choose_format(None, Path("docs/x.SVG")) is Format.svg
    assert choose_format(None, Path("x.png")) is Format.png
    assert choose_format("dot", Path("x.svg")) is Format.dot
    with pytest.raises(UsageError, match="cannot tell the format"):
        choose_format(None, Path("x.txt"))
    with pytest.raises(UsageError, match="choose one of dot, mermaid, svg, png"):
        choose_format("jpg", None)
    with pytest.raises(UsageError, match="png is binary"):
        choose_format("png", None)


def run_cli(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "deploystack", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


def test_cli_prints_mermaid_by_default() -> None:
    result = run_cli("diagram", "-f", str(BLUEPRINTS / "default" / "deploystack.yaml"))
    assert result.returncode == 0, result.stderr
    assert "flowchart LR" in result.stdout and "backend ×2" in result.stdout


@needs_dot
def test_cli_writes_svg(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "stack.svg"
    result = run_cli("diagram", "-f", str(BLUEPRINTS / "default" / "deploystack.yaml"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b"<?xml")
    assert [p.name for p in out.parent.iterdir()] == ["stack.svg"]  # no temporary file left


def test_cli_without_dot_fails_svg_in_one_line_but_draws_text(tmp_path: Path) -> None:
    spec = str(BLUEPRINTS / "default" / "deploystack.yaml")
    no_dot = str(tmp_path)  # a PATH with no programs at all
    result = run_cli("diagram", "-f", spec, "-o", str(tmp_path / "x.svg"), path=no_dot)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "apt-get install graphviz" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.svg").exists()
    for fmt, first in (("dot", "digraph demo {"), ("mermaid", "%% demo")):
        result = run_cli("diagram", "-f", spec, "--format", fmt, path=no_dot)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(first)


def test_docs_show_the_default_blueprint_as_it_is() -> None:
    """docs/diagram.md carries the default blueprint's Mermaid text; docs/diagram.svg is drawn beside it."""
    docs = REPO / "docs" / "diagram.md"
    block = docs.read_text().split("```mermaid\n", 1)[1].split("```", 1)[0]
    stack = load_stack(BLUEPRINTS / "default" / "deploystack.yaml")
    assert block == to_mermaid(diagram_of(stack)), (
        "redraw: deploystack diagram -f blueprints/default/deploystack.yaml (into docs/diagram.md's block) "
        "and -o docs/diagram.svg")
    svg = (REPO / "docs" / "diagram.svg").read_text()
    assert all(f">{s.name.replace('-', '&#45;')}" in svg for s in build_plan(stack).services if not s.scalable)
