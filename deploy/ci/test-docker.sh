#!/usr/bin/env bash
# make test-docker: the Docker engine (installed and started when missing: deploy/ci/engine.sh), the base
# images the Dockerfile names (deploy/ci/base-images.sh), the samtune image built from this checkout with the
# lock file, then tests/docker/ runs docker-compose.yml's samtune services from it (deploy/compose.ci.yml).
# Prints the build's time and the image's size (bench/RESULTS.md records them). A daemon this script
# started is stopped at the end; the build cache stays, so the next build redoes only what changed.
#   SAMTUNE_DOCKER_API_PORT / SAMTUNE_DOCKER_INFERENCE_PORT: the ports the API and the inference service
#   listen on (default: free ones).
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '[test-docker] %s\n' "$*"; }

bash deploy/ci/engine.sh install
bash deploy/ci/engine.sh start
trap 'bash deploy/ci/engine.sh stop' EXIT
bash deploy/ci/base-images.sh

# BuildKit builds the stages side by side; Debian's docker.io CLI has it built in, a newer CLI needs the
# buildx plugin for it and otherwise uses the classic builder (the same layers, one stage at a time).
if docker buildx version >/dev/null 2>&1; then
  build=(docker build)
elif /usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then
  build=(env DOCKER_BUILDKIT=1 /usr/bin/docker build)
else
  build=(docker build)
fi
log "building samtune:latest (host network; ${build[*]})"
start=$(date +%s)
nice -n 10 "${build[@]}" --network host --progress plain -t samtune:latest . >/tmp/samtune-docker-build.log 2>&1 \
  || { tail -40 /tmp/samtune-docker-build.log; exit 1; }
log "build: $(( $(date +%s) - start )) s (log in /tmp/samtune-docker-build.log)"
size=$(docker image inspect -f '{{.Size}}' samtune:latest)
log "image samtune:latest: $size bytes ($(( size / 1000000 )) MB)"
# The image a rebuild replaced, and build cache beyond 10 GB, oldest first: the current build's cache (7 GB,
# torch's layer most of it) stays, so the next build is still warm.
docker image prune -f >/dev/null
docker builder prune -f --keep-storage 10GB >/dev/null 2>&1 || true

log "tests/docker"
flock /tmp/samtune-tests.lock .venv/bin/python -m pytest -q -p no:cacheprovider -m docker tests/docker
