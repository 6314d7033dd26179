# shellcheck shell=bash
# Helpers sourced by every entrypoint and health check (installed as /usr/local/lib/deploystack/lib.sh).
# Their locals shadow the caller's variables: a caller's `readonly` of the same name would be fatal.

# log MESSAGE...: one line on stderr, which Docker keeps with the container's logs.
log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${0##*/}" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# require_env NAME...: fail with one message naming every missing variable.
require_env() {
    local name missing=()
    for name in "$@"; do
        [[ -n ${!name:-} ]] || missing+=("$name")
    done
    ((${#missing[@]} == 0)) || die "missing environment variable(s): ${missing[*]}"
}

# require_file PATH: the rendered config the generator mounts at /etc/deploystack.
require_file() {
    [[ -f $1 ]] || die "$1 not found: mount the rendered configuration folder at ${1%/*}"
}

# as_user USER COMMAND...: run (or, with exec, become) COMMAND as USER with its own HOME.
# Debian has no gosu; setpriv is in util-linux, which every Debian image has.
as_user() {
    local as_user_name=$1 as_user_home
    shift
    as_user_home=$(getent passwd "$as_user_name" | cut -d: -f6)
    setpriv --reuid="$as_user_name" --regid="$as_user_name" --init-groups \
        env HOME="$as_user_home" USER="$as_user_name" "$@"
}

# http_status HOST PORT PATH [HOST_HEADER] [TIMEOUT]: print the status code of a GET.
# Pure bash (/dev/tcp) so that images need neither curl nor python for their health checks.
# Fails when nothing listens or no HTTP status line comes back in time.
http_status() {
    local host=$1 port=$2 path=$3 vhost=${4:-localhost} timeout=${5:-5} line fd
    # The redirection is inside a subshell-free `{ }` group so that a refused connection is a
    # failed command, not a fatal redirection error of `exec`.
    { exec {fd}<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: deploystack-health\r\nConnection: close\r\n\r\n' \
        "$path" "$vhost" >&"$fd"
    if ! IFS= read -r -t "$timeout" line <&"$fd"; then
        exec {fd}>&-
        return 1
    fi
    exec {fd}>&-
    [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}"
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND once a second until it succeeds.
wait_until() {
    local limit=$1 what=$2 waited=0
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((waited < limit)) || { log "gave up waiting for $what after ${limit}s"; return 1; }
        ((waited % 10 == 0)) && log "waiting for $what"
        sleep 1
        waited=$((waited + 1))
    done
}

# Docker Swarm hands secrets over as files in /run/secrets, not as environment variables: export each
# one (a file named like a variable) unless the environment already has it, and fill in the `${NAME}`
# references that other variables hold for them (DB_PASSWORD=${POSTGRES_PASSWORD}, URLs with passwords).
# Without /run/secrets (Compose, the bridge-network engine) nothing changes. DEPLOYSTACK_SECRETS_DIR: tests.
secrets_from_files() {
    local dir=${DEPLOYSTACK_SECRETS_DIR:-/run/secrets} file name var value
    local -A found=()
    [[ -d $dir ]] || return 0
    for file in "$dir"/*; do
        name=${file##*/}
        [[ -f $file && -r $file && $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
        found[$name]=$(<"$file")
        [[ -n ${!name:-} ]] || export "$name=${found[$name]}"
    done
    ((${#found[@]} > 0)) || return 0
    for var in $(compgen -e); do
        value=${!var}
        [[ $value == *"\${"* ]] || continue
        for name in "${!found[@]}"; do
            value=${value//"\${$name}"/${found[$name]}}
        done
        [[ $value == "${!var}" ]] || export "$var=$value"
    done
}
secrets_from_files
