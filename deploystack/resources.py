"""Where the files that ship with deploystack live: compose/<role>/ and blueprints/.

In a wheel they are package data under deploystack/_data; in a source checkout (editable install) they
sit at the repository's top, next to this package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data(name: str) -> Path:
    shipped = _PACKAGE / "_data" / name
    return shipped if shipped.is_dir() else _PACKAGE.parent / name


def compose_root() -> Path:
    return _data("compose")


def blueprints_root() -> Path:
    return _data("blueprints")


def package_root() -> Path:
    """The deploystack package itself (copied into APC and CDC build contexts)."""
    return _PACKAGE
