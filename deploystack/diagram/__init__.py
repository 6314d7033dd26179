"""`deploystack diagram`: the seed's picture of a stack, drawn from its spec.

model.py is pure (ProjectPlan -> Diagram); printers.py prints DOT and Mermaid text; output.py renders
SVG/PNG with Graphviz's `dot` and writes files.
"""

from deploystack.atomicfile import write_atomically
from deploystack.diagram.model import Diagram, diagram_of
from deploystack.diagram.output import Format, choose_format, produce
from deploystack.diagram.printers import to_dot, to_mermaid

__all__ = ["Diagram", "Format", "choose_format", "diagram_of", "produce", "to_dot", "to_mermaid",
           "write_atomically"]
