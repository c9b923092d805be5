# syntax=docker/dockerfile:1
# One image for api, worker and beat. PyPI's Linux torch wheels are CUDA builds: the same image trains
# on a GPU when the container is given one (compose reserves it for the worker) and on the CPU otherwise.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/samtune
ENV PATH=/opt/samtune/bin:$PATH
RUN pip install torch==2.14.1 torchvision==0.29.1
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY trainer ./trainer
COPY migrations ./migrations
RUN pip install .

FROM python:3.11-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 samtune \
 && mkdir -p /data && chown samtune:samtune /data
COPY --from=build /opt/samtune /opt/samtune
COPY --from=build /src/alembic.ini /srv/samtune/alembic.ini
COPY --from=build /src/migrations /srv/samtune/migrations
COPY models/sam3-tiny-shapes /srv/samtune/models/sam3-tiny-shapes
ENV PATH=/opt/samtune/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SAMTUNE_DATA_DIR=/data \
    SAMTUNE_EMBEDDED_BASE_DIR=/srv/samtune/models/sam3-tiny-shapes
WORKDIR /srv/samtune
USER samtune
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["samtune", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
