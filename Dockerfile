# One image for every samtune process: api, worker, beat and the migration (docker-compose.yml picks the
# command). PyPI's Linux torch wheels are CUDA builds that carry their CUDA libraries (nvidia-* wheels), so the
# same image trains and predicts on a GPU when the container is given one (NVIDIA driver on the host recent
# enough for the wheel's CUDA, 13.0 for torch 2.14.1) and on the CPU otherwise.
# tests/deploy/test_compose.py checks what can be checked without building it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- the web UI's third-party browser files, exactly as package-lock.json pins them -----------------------
FROM node:22-bookworm-slim AS ui
WORKDIR /ui
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- the lock file's lines for pip, torch and its CUDA libraries, alone ------------------------------------
# The layer that installs torch (gigabytes) is keyed on this file, so it is rebuilt when one of these pins
# changes, not on every change of the lock file.
FROM ${PYTHON_IMAGE} AS torch-pins
COPY requirements/lock.txt /tmp/lock.txt
RUN grep -E '^(pip|torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==' /tmp/lock.txt >/torch-pins.txt

# --- a virtual environment with torch and samtune's dependencies (compilers stay in this stage) ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/samtune
ENV PATH=/opt/samtune/bin:$PATH
# torch first, in its own layer: its few pure-Python dependencies may come out newer here, and the next
# layer brings every package to the lock's version, as `make install` does.
COPY --from=torch-pins /torch-pins.txt /tmp/torch-pins.txt
RUN pip install -c /tmp/torch-pins.txt --upgrade pip \
 && pip install -c /tmp/torch-pins.txt torch torchvision
COPY requirements/lock.txt /tmp/lock.txt
WORKDIR /srv/samtune
# Installed in place (editable) at the path the runtime stage puts the code at: the code keeps its checkout
# layout (models/, node_modules/ and the UI's templates beside it, as in `make run`). Empty packages stand
# in for the code here, and an empty README for the one pyproject.toml names (its text is only the package's
# description), so that a change of either does not reinstall the dependencies.
COPY pyproject.toml ./
RUN mkdir app worker trainer migrations \
 && touch README.md app/__init__.py worker/__init__.py trainer/__init__.py migrations/__init__.py \
 && pip install -c /tmp/lock.txt -e . \
 && rm -rf README.md app worker trainer migrations

# --- what runs: Python, the environment, the code, the bundled base model; no compilers, no node ---------
FROM ${PYTHON_IMAGE} AS runtime
# /data and the Hugging Face cache exist in the image, owned by the user, so that the named volumes that
# docker-compose.yml mounts there start out writable by it.
RUN useradd --create-home --uid 10001 --user-group samtune \
 && mkdir -p /data /home/samtune/.cache/huggingface \
 && chown samtune:samtune /data /home/samtune/.cache /home/samtune/.cache/huggingface
COPY --from=build /opt/samtune /opt/samtune
WORKDIR /srv/samtune
# The code belongs to root: the service can read it, not change it.
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY trainer ./trainer
COPY migrations ./migrations
COPY models/sam3-tiny-shapes ./models/sam3-tiny-shapes
COPY --from=ui /ui/node_modules ./node_modules
# Compiled once here: the code is read-only to the service, which could not write its bytecode cache.
RUN python -m compileall -q app worker trainer migrations
ENV PATH=/opt/samtune/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SAMTUNE_DATA_DIR=/data \
    SAMTUNE_UI_VENDOR_DIR=/srv/samtune/node_modules \
    SAMTUNE_EMBEDDED_BASE_DIR=/srv/samtune/models/sam3-tiny-shapes
USER samtune
# The CLIP tokenizer files, built from the shipped merges into ~/.cache/samtune at build time (a first job
# would otherwise build them); this also proves the installation imports.
RUN python -c "from trainer.tokenizer import load_tokenizer; load_tokenizer()" && samtune --help >/dev/null
EXPOSE 8000
# The API's probe; docker-compose.yml gives the worker its own and turns it off for beat.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["samtune", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
