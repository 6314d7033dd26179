"""The Debian releases images are built on, and the Python each one brings.

The role images (LBC, database, caches, media, CDC) are built on one release; each app chooses its
Python, and so its release: Debian packages Python, so the Python version is the Debian release.
"""

from __future__ import annotations

ROLE_RELEASE = "bookworm"  # the database's data volumes belong to its PostgreSQL major (15 here)
# Every value of the spec's `apc.apps.<app>.python` (a Literal there) has its release here.
PYTHON_RELEASES = {"3.13": "trixie", "3.11": "bookworm"}  # Debian 13, Debian 12
BASE_REPOSITORY = "deploystack/base"


def slim_image(release: str) -> str:
    """Debian's own slim image of a release, which a base image may be tagged from."""
    return f"debian:{release}-slim"


def base_image(release: str) -> str:
    return f"{BASE_REPOSITORY}:{release}"


ROLE_BASE = base_image(ROLE_RELEASE)
ALL_BASES = tuple(base_image(release) for release in dict.fromkeys([ROLE_RELEASE, *PYTHON_RELEASES.values()]))
