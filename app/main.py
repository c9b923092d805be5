"""The FastAPI application, built from explicit settings (no import-time engine or config)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI

from app.core.db import make_engine, make_sessionmaker
from app.core.deps import authenticate_key, presented_key
from app.core.errors import PROBLEM_RESPONSES, install_error_handlers
from app.core.limits import BodyLimit, BodySizeLimit, KeyBeforeBody, RateLimitBeforeBody
from app.core.logging import install_redaction
from app.core.openapi import operation_id
from app.core.queue import CeleryQueue
from app.core.rate_limits import RateLimiter
from app.core.security_headers import SecurityHeaders
from app.core.short_cache import ShortCache
from app.core.storage import make_storage
from app.core.tasks import make_celery
from app.datasets.router import router as datasets_router
from app.health.router import router as health_router
from app.inference.calls import ModelSpec
from app.inference.tier import make_inference
from app.jobs.feed import make_publisher
from app.jobs.router import router as jobs_router
from app.keys.router import router as keys_router
from app.keys.service import Principal
from app.metrics.collector import ScrapeTimeCollector
from app.metrics.multiprocess import mark_dead
from app.metrics.router import install_metrics
from app.models.roboflow import hosted_router as roboflow_hosted_router
from app.models.roboflow import router as roboflow_router
from app.models.router import router as models_router
from app.roboflow_api.router import router as roboflow_api_router
from app.settings import Settings
from app.ui.install import install_ui
from app.versions.router import router as versions_router


def _version() -> str:
    """The installed package's version, as `samtune --version` prints it."""
    try:
        return version("samtune")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def body_limits(settings: Settings) -> dict[str, Any]:
    """BodySizeLimit's rules: multi-gigabyte bodies only where a dataset zip is uploaded, tens of megabytes where
    an image is predicted on (native, Roboflow v1 and its hosted form `/{project}/{version}`), a little elsewhere."""
    predict = settings.max_predict_bytes, "SAMTUNE_MAX_PREDICT_BYTES"
    return {
        "default": BodyLimit(".*", settings.max_request_bytes, "SAMTUNE_MAX_REQUEST_BYTES"),
        "routes": [
            BodyLimit(
                r"/api/v1/datasets/[^/]+/uploads", settings.max_upload_bytes, "SAMTUNE_MAX_UPLOAD_BYTES"
            ),
            BodyLimit(r"/api/v1/models/[^/]+/predict", *predict),
            BodyLimit(r"/api/v1/base-models/[^/]+/[^/]+/predict", *predict),
            BodyLimit(r"/infer/instance_segmentation", *predict),
            BodyLimit(r"/model/add", settings.max_request_bytes, "SAMTUNE_MAX_REQUEST_BYTES"),
            # Roboflow's one-image upload and its annotation (a COCO file may list a whole project).
            BodyLimit(r"/dataset/[^/]+/upload", *predict),
            BodyLimit(r"/dataset/[^/]+/annotate/[^/]+", *predict),
            BodyLimit(r"/[^/]+/projects", settings.max_request_bytes, "SAMTUNE_MAX_REQUEST_BYTES"),
            # Roboflow's hosted form; the route is registered last, so any other two-segment path is its too.
            BodyLimit(r"/[^/]+/[^/]+", *predict),
        ],
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        install_redaction()
        yield
        await app.state.inference.aclose()
        engine.dispose()
        mark_dead()  # this process's live gauges stop counting (app/metrics/multiprocess.py)

    app = FastAPI(
        title="samtune",
        version=_version(),
        description="Fine-tune SAM 3 on your own instance-segmentation data, then serve it.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
        generate_unique_id_function=operation_id,
        # FastAPI's own pages load Swagger UI and ReDoc from CDNs with inline scripts; /docs is served by
        # app/ui/api_docs.py from node_modules instead, so it works offline under the UI's CSP.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    # Checked keys and looked-up models, remembered for seconds (app/core/short_cache.py).
    app.state.principals = ShortCache[Principal](settings.auth_cache_seconds)
    app.state.model_specs = ShortCache[ModelSpec](settings.auth_cache_seconds)
    app.state.storage = make_storage(settings)
    app.state.tasks = CeleryQueue(make_celery(settings))
    app.state.publisher = make_publisher(settings)
    app.state.inference = make_inference(settings, app.state.storage)

    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, **body_limits(settings))
    # Inside KeyBeforeBody, whose checked key it counts; a request over its rate reads none of its body.
    app.add_middleware(RateLimitBeforeBody, limiter=RateLimiter.from_settings(settings), presented=presented_key,
                       authenticate=authenticate_key)  # fmt: skip
    # Outside BodySizeLimit: a wrong key is told so (401) before the size of what it sends matters.
    app.add_middleware(KeyBeforeBody, presented=presented_key, authenticate=authenticate_key)
    app.add_middleware(SecurityHeaders)
    # Outermost of the middlewares: a request's latency includes what they add, its status what they answer.
    install_metrics(app, settings, "api", [ScrapeTimeCollector(settings, engine)])
    app.include_router(health_router)
    app.include_router(keys_router)
    app.include_router(datasets_router)
    app.include_router(versions_router)
    app.include_router(jobs_router)
    app.include_router(models_router)
    install_ui(app)
    app.include_router(roboflow_router)
    # Roboflow's REST API (`/{workspace}/...`) after every fixed path, so it never shadows a page or /api/v1.
    app.include_router(roboflow_api_router)
    # Last: its `/{project}/{version}` route would otherwise catch other two-segment POSTs.
    app.include_router(roboflow_hosted_router)
    return app
