"""Two printers of a Diagram: Graphviz DOT (through PyPI's graphviz) and a Mermaid flowchart.

Every text that comes from the spec is escaped for its printer: HTML entities in Graphviz's HTML-like
labels, Mermaid's `#code;` entities inside quoted Mermaid labels.
"""

from __future__ import annotations

import html

import graphviz

from deploystack.diagram.model import Diagram, Edge, Group, Link, Node

# The seed's colours: the public network orange, the private one green.
COLOURS = {"public": ("#e8710a", "#fff3e6"), "private": ("#2e8b3a", "#eef8ef")}
LINK_COLOURS = {Link.PUBLIC: "#e8710a", Link.PRIVATE: "#2e8b3a", Link.EGRESS: "#757575",
                Link.CONTROL: "#c62828", Link.ORDER: "#9e9e9e"}
FONT = "Helvetica"


# ---- Graphviz DOT ----------------------------------------------------------------------------------

def _html(text: str) -> str:
    return html.escape(text, quote=False)


def _node_label(node: Node) -> str:
    label = f"<B>{_html(node.title)}</B>"
    if node.detail:
        label += f'<BR/><FONT POINT-SIZE="9" COLOR="#555555">{_html(node.detail)}</FONT>'
    return f"<{label}>"


def _group_label(group: Group) -> str:
    return f"<<B>{_html(group.title)}</B> · {_html(group.subtitle)}>"


def _hub(group: Group) -> str:
    """An invisible point inside a group's box: edges of the whole group start there, clipped at the box."""
    return f"{group.id}_hub"


def _endpoint(diagram: Diagram, ref: str) -> tuple[str, str | None]:
    """A node id as it is; a group as its hub, with the cluster the edge is clipped at."""
    group = diagram.group(ref)
    return (_hub(group), f"cluster_{group.id}") if group else (ref, None)


def _one_column(diagram: Diagram, group: Group) -> bool:
    """A role is drawn as one column unless its services talk to each other (replicas to the primary):
    then those edges run left to right, as the others do, instead of looping around the column."""
    inside = {n.id for n in group.nodes}
    return not any(e.source in inside and e.target in inside and e.link is not Link.ORDER for e in diagram.edges)


def _dot_edge(graph: graphviz.Digraph, diagram: Diagram, edge: Edge) -> None:
    tail, ltail = _endpoint(diagram, edge.source)
    head, lhead = _endpoint(diagram, edge.target)
    colour = LINK_COLOURS[edge.link]
    attrs = {"color": colour, "fontcolor": colour}
    if edge.label:
        attrs["label"] = f"<{_html(edge.label)}>"
    if ltail:
        attrs["ltail"] = ltail
    if lhead:
        attrs["lhead"] = lhead
    if edge.link in (Link.ORDER, Link.EGRESS):
        attrs["style"] = "dashed"
    if edge.link is Link.CONTROL:
        attrs["penwidth"] = "2"
    graph.edge(tail, head, **attrs)


def _dot_group(box: graphviz.Digraph, diagram: Diagram, group: Group) -> None:
    box.attr(label=_group_label(group), color="#9e9e9e", fontcolor="#333333", fillcolor="#ffffffb0",
             style="filled,rounded", penwidth="1", fontsize="11")
    if _one_column(diagram, group):
        box.attr(rank="same")
    hub = any(group.id in (e.source, e.target) for e in diagram.edges)
    for number, node in enumerate(group.nodes):
        if hub and number == len(group.nodes) // 2:  # mid-column: the group's edges fan out evenly
            box.node(_hub(group), "", shape="point", style="invis", width="0")
        extra = {"style": "rounded,dashed", "color": "#757575"} if node.job else {}
        box.node(node.id, _node_label(node), **extra)


def to_dot(diagram: Diagram) -> str:
    graph = graphviz.Digraph(
        diagram.project,
        graph_attr={"rankdir": "LR", "compound": "true", "newrank": "true", "fontname": FONT,
                    "nodesep": "0.25", "ranksep": "0.7", "labelloc": "t", "fontsize": "16",
                    "label": f"<<B>{_html(diagram.project)}</B>: deploystack>"},
        node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "white", "fontname": FONT,
                   "fontsize": "12", "margin": "0.15,0.06"},
        edge_attr={"fontname": FONT, "fontsize": "9", "arrowsize": "0.7"},
    )
    for node in diagram.outside:
        graph.node(node.id, _node_label(node), shape="ellipse", fillcolor="#f5f5f5")
    for area in diagram.areas:
        line, fill = COLOURS[area.network]
        with graph.subgraph(name=f"cluster_net_{area.network}") as net:
            net.attr(label=f"<<B>{_html(area.title)}</B>>", color=line, fontcolor=line, fillcolor=fill,
                     style="filled,rounded", penwidth="2", fontsize="13")
            for group in area.groups:
                with net.subgraph(name=f"cluster_{group.id}") as box:
                    _dot_group(box, diagram, group)
    for edge in diagram.edges:
        _dot_edge(graph, diagram, edge)
    return str(graph.source)


# ---- Mermaid ---------------------------------------------------------------------------------------

ARROWS = {Link.PUBLIC: "-->", Link.PRIVATE: "-->", Link.EGRESS: "-.->", Link.CONTROL: "==>", Link.ORDER: "-.->"}


def mermaid_text(text: str) -> str:
    """Text for inside a quoted Mermaid label: its own `#code;` entities for what it would parse."""
    out = text.replace("#", "#35;")
    for char, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("`", "#96;")):
        out = out.replace(char, code)
    return out


def _mermaid_label(node: Node) -> str:
    label = mermaid_text(node.title)
    if node.detail:
        label += "<br/><small>" + mermaid_text(node.detail) + "</small>"
    return f'"{label}"'


def to_mermaid(diagram: Diagram) -> str:
    lines = [f"%% {diagram.project}: drawn by `deploystack diagram` from the spec", "flowchart LR"]
    for node in diagram.outside:
        lines.append(f"    {node.id}([{_mermaid_label(node)}])")
    for area in diagram.areas:
        lines.append(f'    subgraph net_{area.network}["{mermaid_text(area.title)}"]')
        for group in area.groups:
            title = mermaid_text(f"{group.title} · {group.subtitle}")
            lines.append(f'        subgraph {group.id}["{title}"]')
            for node in group.nodes:
                shape = "([{}])" if node.job else "[{}]"
                lines.append(f"            {node.id}{shape.format(_mermaid_label(node))}")
            lines.append("        end")
        lines.append("    end")
    by_link: dict[Link, list[str]] = {}
    for number, edge in enumerate(diagram.edges):
        label = f'|"{mermaid_text(edge.label)}"|' if edge.label else ""
        lines.append(f"    {edge.source} {ARROWS[edge.link]}{label} {edge.target}")
        by_link.setdefault(edge.link, []).append(str(number))
    for area in diagram.areas:
        line, fill = COLOURS[area.network]
        lines.append(f"    style net_{area.network} fill:{fill},stroke:{line},stroke-width:2px,color:{line}")
        lines += [f"    style {g.id} fill:#ffffff,stroke:#9e9e9e" for g in area.groups]
    jobs = [n.id for a in diagram.areas for g in a.groups for n in g.nodes if n.job]
    if jobs:
        lines.append("    classDef job stroke-dasharray:4 3")
        lines.append(f"    class {','.join(jobs)} job")
    for link, numbers in by_link.items():
        colour = LINK_COLOURS[link]
        lines.append(f"    linkStyle {','.join(numbers)} stroke:{colour},color:{colour}")
    return "\n".join(lines) + "\n"
