"""Every container/network/volume label name in one place (Compose's and our own)."""

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
ONEOFF = "com.docker.compose.oneoff"
SLUG = "com.docker.compose.slug"  # a one-off container's random id; its name ends in the first 12 characters
COMPOSE_HASH = "com.docker.compose.config-hash"
WORKING_DIR = "com.docker.compose.project.working_dir"
CONFIG_FILES = "com.docker.compose.project.config_files"
NETWORK = "com.docker.compose.network"
VOLUME = "com.docker.compose.volume"
COMPOSE_VERSION = "com.docker.compose.version"
# Compose v2's: the services this one depends on, `name:condition:restart` joined by commas. `down` reads it to
# stop the services in reverse dependency order (engine/teardown.py).
DEPENDS_ON = "com.docker.compose.depends_on"

# Our own drift label: Compose recreates containers whose Compose hash differs from its own, so
# drift detection must not depend on that one (DESIGN.md, "The source of truth").
CONFIG_HASH = "io.deploystack.config-hash"
ROLE = "io.deploystack.role"
# On a swarm service: it runs to completion (a migration job); waiting for it means waiting for "complete".
ONE_SHOT = "io.deploystack.one-shot"
