"""Every series samtune processes record themselves (the scrape-time ones are in collector.py). One home, so that
the dashboard test and docs/operations.md can name them all.

In multiprocess mode (multiprocess.py) the values live in files named by `process_identity`, set up here before
the first metric is made, which is why this module, not its callers, imports prometheus-client's values."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, values

from app.metrics.multiprocess import enabled, process_identity

if enabled() is not None:
    # prometheus-client's own choice (ValueClass, made at its import) names files by PID alone.
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identity)

# Latency buckets from a health check (~1 ms) to a slow upload or a prediction on a cold model (minutes).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

HTTP_REQUESTS = Counter(
    "samtune_http_requests",
    "HTTP requests answered, by service (api, inference), method, route template and status.",
    ["service", "method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "samtune_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by service, method and route template.",
    ["service", "method", "route"],
    buckets=_SECONDS,
)
UPLOAD_BYTES = Histogram(
    "samtune_upload_bytes",
    "Sizes of uploaded dataset files (a zip, or Roboflow's one image); _sum is the bytes received.",
    ["kind"],
    buckets=(2**20, 2**24, 2**26, 2**28, 2**30, 2**32, 2**34),
)
PREDICTION_DURATION = Histogram(
    "samtune_prediction_duration_seconds",
    "One prediction in the process that computes it: decode, wait for its batch, forward, encode.",
    buckets=_SECONDS,
)
PREDICTION_BATCH_SIZE = Histogram(
    "samtune_prediction_batch_size",
    "Images in one batched forward: requests gathered by the dynamic batcher, or a batch prediction's chunk.",
    ["source"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
MODEL_CACHE_BYTES = Gauge(
    "samtune_model_cache_bytes",
    "Bytes of the models loaded for prediction (against SAMTUNE_MODEL_CACHE_BYTES), summed over live processes.",
    multiprocess_mode="livesum",
)
MODEL_CACHE_MODELS = Gauge(
    "samtune_model_cache_models",
    "Models loaded for prediction, summed over live processes.",
    multiprocess_mode="livesum",
)
TASKS = Counter(
    "samtune_tasks",
    "Background tasks a Celery worker finished, by task name and outcome (success, failure, retry).",
    ["task", "outcome"],
)
TASK_DURATION = Histogram(
    "samtune_task_duration_seconds",
    "Run time of a background task in its worker.",
    ["task"],
    buckets=(0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0),
)
