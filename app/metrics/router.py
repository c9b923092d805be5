"""`GET /metrics`: Prometheus's text format, for the processes of this machine (multiprocess mode) plus, on the
API, the scrape-time facts of the database and the broker."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from app.metrics import series as _series  # noqa: F401  (the series exist before the first scrape)
from app.metrics.access import MetricsAccess
from app.metrics.middleware import RequestMetrics
from app.metrics.multiprocess import enabled, locked, sweep_dead
from app.settings import Settings

router = APIRouter(tags=["health"])


def exposition(collectors: list[Collector]) -> bytes:
    """Every sample this machine's processes wrote (or this process's alone, outside multiprocess mode), then
    `collectors'`."""
    path = enabled()
    if path is None:
        own = generate_latest(REGISTRY)
    else:
        sweep_dead(path)
        files = CollectorRegistry()
        MultiProcessCollector(files, str(path))
        with locked(path, exclusive=False):
            own = generate_latest(files)
    extra = CollectorRegistry()
    for collector in collectors:
        extra.register(collector)
    return own + generate_latest(extra)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    operation_id="metrics",
    response_class=Response,
    # Its 401 and 403 are the app's documented 4XX problem+json.
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus's text format.",
        }
    },
)
def metrics(request: Request) -> Response:
    """The series of docs/operations.md ("Metrics"): requests, queues, jobs, predictions, the model cache and
    uploads. Open to SAMTUNE_METRICS_ALLOW's networks (loopback by default) and to SAMTUNE_METRICS_TOKEN as a
    bearer token; an API key does not open it."""
    state = request.app.state
    state.metrics_access.check(request)
    return Response(exposition(state.metrics_collectors), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, settings: Settings, service: str, collectors: list[Collector]) -> None:
    """`/metrics` and the request middleware on `app`; call after the other middlewares, so that this one is
    outermost and times them too."""
    app.state.metrics_access = MetricsAccess.from_settings(settings)
    app.state.metrics_collectors = collectors
    app.add_middleware(RequestMetrics, service=service)
    app.include_router(router)
