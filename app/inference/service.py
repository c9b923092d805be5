"""`samtune inference`: the inference service, an ASGI app of its own that owns one device.

It answers the API's internal calls (app/inference/internal_router.py), and the public predict routes too
(native, base-model and Roboflow's), checked with the caller's API key, so it can be exposed on its own port to
clients that call it directly, as Roboflow's self-hosted inference server is. It reads the database only to
check keys and look models up; everything else it needs comes from object storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.db import make_engine, make_sessionmaker
from app.core.deps import authenticate_key, presented_key
from app.core.errors import install_error_handlers
from app.core.limits import BodyLimit, BodySizeLimit, KeyBeforeBody, RateLimitBeforeBody
from app.core.logging import install_redaction
from app.core.rate_limits import RateLimiter
from app.core.security_headers import SecurityHeaders
from app.core.short_cache import ShortCache
from app.core.storage import make_storage
from app.health.router import router as health_router
from app.inference.calls import ModelSpec
from app.inference.internal_router import InternalPredict
from app.inference.internal_router import router as internal_router
from app.inference.local import LocalInference
from app.inference.remote import INTERNAL_PREDICT
from app.keys.service import Principal
from app.metrics.middleware import RequestMetrics
from app.metrics.multiprocess import mark_dead
from app.metrics.router import install_metrics
from app.models.predict_router import router as predict_router
from app.models.roboflow import router as roboflow_router
from app.settings import Settings

# The internal call carries the image as sent plus a line of options: at most the prompts' and boxes' worth.
_CALL_OVERHEAD_BYTES = 1 << 20


class InferenceApp(FastAPI):
    """The service's app: the API's internal predict call goes straight to `internal_predict`, past the
    middleware stack and the router (app/inference/internal_router.py, InternalPredict); everything else
    takes FastAPI's way."""

    internal_predict: ASGIApp
    internal_route: Route  # what the request metrics read the route's name from, as a router would leave it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == INTERNAL_PREDICT:
            scope["route"] = self.internal_route
            await self.internal_predict(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_inference_app(settings: Settings | None = None) -> InferenceApp:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    inference = LocalInference(settings, make_storage(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        install_redaction()
        yield
        engine.dispose()
        mark_dead()  # its model cache's bytes stop counting (app/metrics/multiprocess.py)

    app = InferenceApp(
        title="samtune inference", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    # Checked keys and looked-up models, remembered for seconds (app/core/short_cache.py).
    app.state.principals = ShortCache[Principal](settings.auth_cache_seconds)
    app.state.model_specs = ShortCache[ModelSpec](settings.auth_cache_seconds)
    app.state.storage = inference.cache.storage
    app.state.inference = inference

    from app.main import body_limits  # the API's per-route limits hold here too

    limits = body_limits(settings)
    predict = BodyLimit(
        INTERNAL_PREDICT, settings.max_predict_bytes + _CALL_OVERHEAD_BYTES, "SAMTUNE_MAX_PREDICT_BYTES"
    )
    internal_predict = InternalPredict(settings.internal_token, inference)
    app.internal_route = Route(INTERNAL_PREDICT, internal_predict, methods=["POST"])
    app.internal_predict = RequestMetrics(
        SecurityHeaders(BodySizeLimit(internal_predict, default=predict)), "inference"
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, **limits)
    # Its public predict routes count against the same rates as the API's (the same Redis).
    app.add_middleware(RateLimitBeforeBody, limiter=RateLimiter.from_settings(settings), presented=presented_key,
                       authenticate=authenticate_key)  # fmt: skip
    app.add_middleware(KeyBeforeBody, presented=presented_key, authenticate=authenticate_key)
    app.add_middleware(SecurityHeaders)
    # Its own requests, predictions and model cache; the API's /metrics adds the database's facts.
    install_metrics(app, settings, "inference", [])
    app.include_router(health_router)
    app.include_router(internal_router)
    app.include_router(predict_router)
    app.include_router(roboflow_router)  # last: its `/{project}/{version}` route catches two-segment POSTs
    return app
