"""Choosing the format and rendering SVG/PNG with Graphviz's `dot` (deploystack.atomicfile writes the file)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import graphviz

from deploystack.diagram.model import Diagram
from deploystack.diagram.printers import to_dot, to_mermaid
from deploystack.errors import DeployError, UsageError

DOT_MISSING = ("{fmt} needs Graphviz's `dot`, which is not installed: apt-get install graphviz "
               "(--format dot or mermaid need nothing)")


class Format(StrEnum):
    dot = "dot"
    mermaid = "mermaid"
    svg = "svg"
    png = "png"


SUFFIXES = {".dot": Format.dot, ".gv": Format.dot, ".mmd": Format.mermaid, ".mermaid": Format.mermaid,
            ".svg": Format.svg, ".png": Format.png}


def choose_format(fmt: str | None, output: Path | None) -> Format:
    """--format wins; else -o's suffix; else Mermaid (text for a README). PNG only into a file."""
    if fmt is not None:
        try:
            chosen = Format(fmt.lower())
        except ValueError:
            raise UsageError(f"--format {fmt}: choose one of {', '.join(f.value for f in Format)}") from None
    elif output is None:
        chosen = Format.mermaid
    elif output.suffix.lower() in SUFFIXES:
        chosen = SUFFIXES[output.suffix.lower()]
    else:
        raise UsageError(f"-o {output}: cannot tell the format from {output.suffix or 'no suffix'!r} "
                         f"(known: {', '.join(SUFFIXES)}); add --format")
    if chosen is Format.png and output is None:
        raise UsageError("png is binary: write it to a file with -o FILE.png")
    return chosen


def produce(diagram: Diagram, fmt: Format) -> bytes:
    if fmt is Format.mermaid:
        return to_mermaid(diagram).encode()
    source = to_dot(diagram)
    if fmt is Format.dot:
        return source.encode()
    try:
        data: bytes = graphviz.Source(source).pipe(format=fmt.value, engine="dot")
    except graphviz.ExecutableNotFound:
        raise UsageError(DOT_MISSING.format(fmt=fmt.value.upper())) from None
    except graphviz.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace").strip() if isinstance(exc.stderr, bytes) else ""
        raise DeployError(f"Graphviz's dot failed to draw the {fmt.value}: {stderr or exc}") from None
    return data


