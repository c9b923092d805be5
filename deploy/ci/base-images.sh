#!/usr/bin/env bash
# The base images the product's Dockerfile names in FROM, made on this machine for CI, where Docker Hub
# cannot be reached: a Debian bookworm root made by debootstrap from this machine's Debian mirror, with
# Debian's Python 3.11, imported and tagged as the Python image; the Node image is the same root with Debian's
# nodejs and npm (the UI stage only runs `npm ci` in it). They carry this machine's certificate authorities
# and pip's setting to use them, so that builds reach PyPI and npm the way this machine does; the product's
# Dockerfile stays as a user builds it with Docker Hub's images. Made once: an image already there is kept.
#   deploy/ci/base-images.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON_IMAGE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
NODE_IMAGE=$(sed -n 's/^FROM \(node:[^ ]*\) AS ui$/\1/p' Dockerfile)
[ -n "$PYTHON_IMAGE" ] && [ -n "$NODE_IMAGE" ] || { echo "cannot read the base images from Dockerfile" >&2; exit 1; }
# The mirror this machine's apt uses (deb822 or one-line sources).
MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p; s/^deb \(http[^ ]*debian\) bookworm .*/\1/p' \
  /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null | head -1 || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
LABEL=org.samtune.ci-base=1

log() { printf '[base] %s\n' "$*" >&2; }
have() { [ "$(docker image inspect -f "{{index .Config.Labels \"org.samtune.ci-base\"}}" "$1" 2>/dev/null)" = 1 ]; }

if have "$PYTHON_IMAGE"; then
  log "$PYTHON_IMAGE is there"
else
  if docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1; then
    log "$PYTHON_IMAGE exists and was not made here: kept as it is"
  else
    root=$(mktemp -d /var/tmp/samtune-base.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    log "debootstrap bookworm from $MIRROR into $root"
    nice -n 10 debootstrap --variant=minbase \
      --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    # This machine's CA store (it holds the authority that its route to the registries presents).
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    log "importing it as $PYTHON_IMAGE"
    tar -C "$root" -c . | docker import \
      --change "LABEL $LABEL" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
      --change 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null
    rm -rf "$root"
    trap - EXIT
  fi
fi

if have "$NODE_IMAGE"; then
  log "$NODE_IMAGE is there"
elif docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
  log "$NODE_IMAGE exists and was not made here: kept as it is"
else
  log "building $NODE_IMAGE from $PYTHON_IMAGE with Debian's nodejs and npm"
  nice -n 10 docker build --network host -q -t "$NODE_IMAGE" - >/dev/null <<DOCKERFILE
FROM $PYTHON_IMAGE
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
LABEL $LABEL
DOCKERFILE
fi
