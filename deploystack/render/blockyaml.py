"""The generated YAML files written directly, byte for byte as ruamel.yaml dumps them with render/compose.py's
settings (block style, mappings indented by 2, sequences by 4 with the dash at 2), for the data the
renderers make: mappings with text keys, lists, text, whole numbers and booleans.

ruamel.yaml's emitter, pure Python, took about 0.05 s of generate's 0.5 s for compose.yaml alone; this takes
a twentieth of that. Whatever it cannot write exactly as ruamel.yaml would (text that needs double quotes,
spans lines or is not ASCII, a list in a list, another type) makes it answer None, and the caller dumps
with ruamel.yaml. tests/unit/test_blockyaml.py holds the two equal on every blueprint, fixture and on
text chosen to need care.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.scalarstring import SingleQuotedScalarString

# Text on one line, of printable ASCII: the only text written here (the rest is left to ruamel.yaml).
_PRINTABLE = re.compile(r"[ -~]*")
# Indicators that make text starting with them need quotes.
_INDICATORS = frozenset("#,[]{}&*!|>'\"%@`")
# Far under the line width ruamel.yaml is given, past which it would fold text over lines.
_LONGEST = 1000
_TEXT = "tag:yaml.org,2002:str"


class _Unusual(Exception):
    """A value this writer leaves to ruamel.yaml."""


def block_yaml(data: dict[str, Any]) -> str | None:
    """`data` as ruamel.yaml dumps it, or None when some value is one to leave to ruamel.yaml."""
    writer = _Writer()
    try:
        if not data:
            raise _Unusual
        writer.mapping(data, 0, "")
    except _Unusual:
        return None
    return "".join(writer.lines)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def mapping(self, data: dict[str, Any], indent: int, first_prefix: str) -> None:
        """Keys at column `indent`; the first one after `first_prefix` (a sequence's dash), when given."""
        prefix = first_prefix or " " * indent
        for key, value in data.items():
            if type(key) is not str or len(key) >= 128:
                raise _Unusual
            self._entry(f"{prefix}{self._scalar(key)}:", value, indent)
            prefix = " " * indent

    def _sequence(self, items: list[Any], indent: int) -> None:
        """Dashes at column `indent`, each item two columns further."""
        dash = " " * indent + "- "
        for item in items:
            if type(item) is dict and item:
                self.mapping(item, indent + 2, dash)
            elif type(item) in (dict, list):  # {} is one line; a list in a list is left to ruamel.yaml
                if item:
                    raise _Unusual
                self.lines.append(f"{dash}{'{}' if type(item) is dict else '[]'}\n")
            else:
                self.lines.append(f"{dash}{self._scalar(item)}\n")

    def _entry(self, head: str, value: Any, indent: int) -> None:
        if type(value) is dict and value:
            self.lines.append(head + "\n")
            self.mapping(value, indent + 2, "")
        elif type(value) is list and value:
            self.lines.append(head + "\n")
            self._sequence(value, indent + 2)
        elif type(value) in (dict, list):
            self.lines.append(f"{head} {'{}' if type(value) is dict else '[]'}\n")
        else:
            self.lines.append(f"{head} {self._scalar(value)}\n")

    def _scalar(self, value: Any) -> str:
        kind = type(value)
        if kind is bool:
            return "true" if value else "false"
        if kind is int:
            return str(value)
        if kind not in (str, SingleQuotedScalarString) or len(value) > _LONGEST or not _PRINTABLE.fullmatch(value):
            raise _Unusual
        text = str(value)
        if kind is str and _plain_allowed(text) and _reads_as_text(text):
            return text
        if kind is str and (not text or "'" in text):  # ruamel.yaml writes these otherwise
            raise _Unusual
        return "'" + text.replace("'", "''") + "'"


@lru_cache(maxsize=4096)  # ruamel.yaml's resolver is slow, and the same words come back often
def _reads_as_text(text: str) -> bool:
    """Plain `text` reads back as text, not as a number, boolean, null or date (ruamel.yaml's own rules)."""
    return bool(_resolver().resolve(ScalarNode, text, (True, False)) == _TEXT)


@cache
def _resolver() -> Any:
    return YAML(typ="rt").resolver


def _plain_allowed(text: str) -> bool:
    """ruamel.yaml's Emitter.analyze_scalar for one line of printable ASCII in block context: no space at
    either end, no indicator first (`-`, `?` and `:` only before a space or alone), no `: `, ` #` or final `:`."""
    if not text or text[0] == " " or text[-1] in " :" or text.startswith(("---", "...")):
        return False
    if text[0] in _INDICATORS or (text[0] in "?:-" and (len(text) == 1 or text[1] == " ")):
        return False
    return ": " not in text and " #" not in text
