#!/usr/bin/env bash
# Base images for a machine that cannot pull from a registry: the Dockerfiles of this stack take
# their bases as build arguments (PYTHON_IMAGE, POSTGRES_IMAGE; public defaults python:3.11-slim
# and postgres:16.4), and this script makes stand-ins for them from Debian's archive:
#
#   hpo-local/debian:bookworm   debootstrap --variant=minbase bookworm, imported with docker import
#   hpo-local/python:3.11       Debian's Python 3.11 in a virtual environment on PATH (python, pip), like python:3.11-slim
#   hpo-local/postgres:15       Debian's PostgreSQL 15 with an entry point that honours POSTGRES_USER,
#                               POSTGRES_PASSWORD, POSTGRES_DB, PGDATA and /docker-entrypoint-initdb.d like the official image
#
# It prints the lines that point the stack at them, for .env:
#   docker/build-local-bases.sh >> .env
# Progress goes to stderr. Needs root (debootstrap), docker and debootstrap; an existing image is kept
# (--rebuild makes them again). DEBIAN_MIRROR overrides the archive (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${HPO_LOCAL_PREFIX:-hpo-local}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
REBUILD=0
[ "${1:-}" = "--rebuild" ] && REBUILD=1

say() { echo "build-local-bases: $*" >&2; }
have() { [ "$REBUILD" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$PREFIX/debian:bookworm"; then
  command -v debootstrap >/dev/null || { say "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }
  root=$(mktemp -d /tmp/hpo-bookworm.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  say "debootstrap --variant=minbase bookworm ($MIRROR) ..."
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >&2
  # the security and point-release updates too, as Debian's own images have them
  cat > "$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["bash"]' \
    - "$PREFIX/debian:bookworm" >/dev/null
  rm -rf "$root"
  trap - EXIT
  say "imported $PREFIX/debian:bookworm"
fi

build() {  # build TAG DOCKERFILE
  if have "$1"; then say "have $1"; return; fi
  say "building $1 ..."
  docker build -q --build-arg "DEBIAN_IMAGE=$PREFIX/debian:bookworm" -t "$1" -f "$2" docker/local >&2
}
build "$PREFIX/python:3.11" docker/local/python.Dockerfile
build "$PREFIX/postgres:15" docker/local/postgres.Dockerfile

echo "PYTHON_IMAGE=$PREFIX/python:3.11"
echo "POSTGRES_IMAGE=$PREFIX/postgres:15"
