"""Every Docker SDK call lives in this package (ruff bans `docker` imports elsewhere)."""
