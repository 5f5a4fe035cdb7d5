#!/usr/bin/env bash
# Base images made from Debian packages, for a network that reaches a Debian mirror and a Python
# package index but no image registry. docker/compose.offline.yaml builds on these three:
#   wdrec-offline/python:bookworm    Debian's python3 (3.11) with venv and pip: base of the wdrec and mlflow images
#   wdrec-offline/postgres:bookworm  Debian's postgresql (15): base of docker/Dockerfile.postgres
#   wdrec-offline/wheels:local       the wheels in $WHEELS_DIR (torch's CPU build), mounted while torch installs
# Usage (as root: mmdebstrap unpacks the packages as their owners):
#   WHEELS_DIR=/opt/wheels docker/offline-images.sh
# Env: DOCKER (the client, default docker; DOCKER_HOST is honoured), WHEELS_DIR (default: pip's
# configured find-links), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, FORCE=1 (remake existing images).
set -euo pipefail

DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm  # the official python and postgres images used by default are bookworm too
PREFIX=${OFFLINE_IMAGE_PREFIX:-wdrec-offline}

die() { echo "offline-images.sh: $*" >&2; exit 1; }
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
"$DOCKER" version --format '{{.Server.Version}}' >/dev/null || die "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-unset})"

if [ -z "${WHEELS_DIR:-}" ]; then
  WHEELS_DIR=$(python3 -m pip config get global.find-links 2>/dev/null || true)
fi
[ -n "$WHEELS_DIR" ] && [ -d "$WHEELS_DIR" ] \
  || die "set WHEELS_DIR to a directory that holds torch's CPU wheel (torch-2.13.0+cpu-cp311-*.whl)"
compgen -G "$WHEELS_DIR/torch-*+cpu-cp311-*.whl" >/dev/null \
  || die "$WHEELS_DIR holds no torch CPU wheel for CPython 3.11 (torch-*+cpu-cp311-*.whl)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

exists() { [ -z "${FORCE:-}" ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# A root filesystem from Debian packages, imported as an image. Documentation, man pages and
# translations are left out: nothing in these images reads them, and they are a third of the size.
rootfs() {  # rootfs <tag> <packages> [extra mmdebstrap args...]
  local tag=$1 packages=$2; shift 2
  if exists "$tag"; then echo "$tag: exists (FORCE=1 remakes it)"; return; fi
  echo "$tag: mmdebstrap $SUITE ($packages)"
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "$@" "$SUITE" "$work/rootfs.tar" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main"
  # An imported image has no environment: without PATH, Dockerfiles' `ENV PATH=...:$PATH` would drop it.
  "$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$tag" >/dev/null
  rm -f "$work/rootfs.tar"
}

rootfs "$PREFIX/python:$SUITE" python3,python3-venv,python3-pip,ca-certificates
# The package's postinst creates a cluster (15/main) that the image never uses: Dockerfile.postgres
# initialises its own in the data volume, as the official image does.
rootfs "$PREFIX/postgres:$SUITE" postgresql \
  --customize-hook='rm -rf "$1"/var/lib/postgresql/*/main "$1"/etc/postgresql/*/main'

tag="$PREFIX/wheels:local"
if exists "$tag"; then
  echo "$tag: exists (FORCE=1 remakes it)"
else
  echo "$tag: the wheels in $WHEELS_DIR"
  (cd "$WHEELS_DIR" && tar --create --owner=0 --group=0 -- *.whl) | "$DOCKER" import - "$tag" >/dev/null
fi
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$PREFIX/*"
