#!/usr/bin/env bash
# Build the offline base image procgen-rl-base:bookworm without any container registry:
# debootstrap a minimal Debian bookworm (Python 3.11) from a Debian mirror, add what the
# procgen-rl image needs, and `docker import` it. CI passes it to docker/Dockerfile as
# --build-arg BASE_IMAGE=procgen-rl-base:bookworm (users build from python:3.11-slim-bookworm).
#
# Usage: scripts/build-base-image.sh [--force]      (run as root; ~1 min, ~290 MB)
#   --force            rebuild even if the image exists (default: skip when it exists)
#   BASE_TAG=...       image name (default procgen-rl-base:bookworm)
#   DEBIAN_MIRROR=...  default: the first Debian mirror in this host's apt sources,
#                      else http://deb.debian.org/debian
# Needs: a running Docker engine (scripts/install-docker.sh) and debootstrap.
set -euo pipefail

BASE_TAG=${BASE_TAG:-procgen-rl-base:bookworm}
SUITE=bookworm
DOCKER=${DOCKER:-/usr/bin/docker}
# python3-dev + gcc: sagemaker-training compiles a C extension when pip builds it.
# libgl1 + libglib2.0-0: envpool's procgen links against libGL and glib.
PACKAGES=python3,python3-venv,python3-dev,gcc,libc6-dev,libgl1,libglib2.0-0,ca-certificates

die() { echo "build-base-image: error: $*" >&2; exit 1; }

force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) die "unknown argument '$1' (usage: $0 [--force])" ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap needs it)"
[ -x "$DOCKER" ] || die "$DOCKER not found; run scripts/install-docker.sh first"
"$DOCKER" info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/install-docker.sh first"
command -v debootstrap >/dev/null || die "debootstrap not found; run scripts/install-docker.sh first"

if [ "$force" = 0 ] && "$DOCKER" image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "build-base-image: $BASE_TAG exists; skipping (--force rebuilds)"
    exit 0
fi

if [ -z "${DEBIAN_MIRROR:-}" ]; then
    # deb822 (.sources: "URIs: ...") or one-line ("deb URL suite ...") apt sources.
    DEBIAN_MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -nE 's/^URIs:[[:space:]]+([^[:space:]]+\/debian)\/?$/\1/p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+\/debian)\/?[[:space:]].*/\2/p' \
        | head -n 1) || true
    DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi

old_id=$("$DOCKER" image inspect "$BASE_TAG" --format '{{.Id}}' 2>/dev/null || true)
root=$(mktemp -d /tmp/procgen-rl-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
echo "build-base-image: debootstrap $SUITE from $DEBIAN_MIRROR into $root"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 \
    || die "debootstrap failed; see $root.log"
rm -f "$root.log"

# Same sources as the official debian:bookworm image, so `apt-get update` works in builds.
cat >"$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
EOF
# Trim what an image does not need: package lists, the .deb cache, docs, man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/tmp/*
# The host's resolver must not end up in the image; Docker mounts its own at run time.
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"

tar -C "$root" --numeric-owner -c . \
    | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $SUITE + $PACKAGES" \
        - "$BASE_TAG" >/dev/null \
    || die "docker import failed"
new_id=$("$DOCKER" image inspect "$BASE_TAG" --format '{{.Id}}')
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    "$DOCKER" rmi "$old_id" >/dev/null 2>&1 || true  # the replaced image, unless a build still uses it
fi
size=$("$DOCKER" image inspect "$BASE_TAG" --format '{{.Size}}')
echo "build-base-image: built $BASE_TAG ($((size / 1000000)) MB) in $(( $(date +%s) - start )) s"
"$DOCKER" run --rm "$BASE_TAG" python3 --version
