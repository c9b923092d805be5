"""The `samtune` command line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from app.settings import Settings


@click.group()
@click.version_option(package_name="samtune", message="samtune %(version)s")
def main() -> None:
    """samtune: fine-tune and serve SAM 3 on your own data."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations (alembic upgrade)."""
    from app.core import migrate

    settings = Settings()
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at revision {revision}")


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--workspace", required=True, help="Workspace name; created if it does not exist.")
@click.option("--name", default="", help="A label for the key.")
def keys_create(workspace: str, name: str) -> None:
    """Create an API key; the key is the last line printed. Migrates the database first (a no-op when it is
    current), so it also works on a fresh data directory before `samtune up` has ever run."""
    from app.core import migrate
    from app.core.db import make_engine, make_sessionmaker, transaction
    from app.core.errors import AppError
    from app.keys.service import create_key_for_workspace

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            row, secret = create_key_for_workspace(session, workspace, name)
            click.echo(f"created key {row.prefix}... in workspace {workspace!r}", err=True)
    except AppError as exc:  # a workspace name refused (a reserved word, too long): say so, not a traceback
        raise click.ClickException(exc.detail) from None
    finally:
        engine.dispose()
    click.echo(secret)


@main.command()
@click.option("--workspace", default="default", show_default=True)
def bootstrap(workspace: str) -> None:
    """Migrate the database and, on a fresh installation, create a first API key."""
    from sqlalchemy import func, select

    from app.core import migrate
    from app.core.db import make_engine, make_sessionmaker, transaction
    from app.keys.service import create_key_for_workspace
    from app.keys.tables import ApiKey

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    secret = None
    with transaction(make_sessionmaker(engine)) as session:
        if not session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))):
            _, secret = create_key_for_workspace(session, workspace, "first key")
    engine.dispose()
    click.echo(f"data directory: {settings.data_dir}")
    if secret:
        click.echo(f"your first API key (workspace {workspace!r}), shown only once:\n{secret}")
    else:
        click.echo("API keys already exist; make another with: samtune keys create --workspace NAME")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="API worker processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Run the API server (uvicorn)."""
    import uvicorn

    from app.core.logging import logging_config

    settings = Settings()
    _enable_metrics(settings)
    uvicorn.run(
        "app.asgi:app",
        host=host,
        port=port,
        workers=workers,
        # Applied by uvicorn itself, in this process and in each worker process it spawns.
        log_config=logging_config(settings.log_level),
        log_level=settings.log_level,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
        # Longer than the idle keep-alive of the clients and proxies in front (httpx 5 s, nginx 60 s), so that
        # they close an idle connection first: when the server closes it as a client reuses it, that request
        # fails (bench/load.py saw it at uvicorn's default of 5 s, which equals httpx's).
        timeout_keep_alive=75,
        # uvicorn's supervisor kills a worker process that does not answer its ping within this time; a process
        # still importing torch does not answer, and on a busy machine (or a cold disk) that import takes longer
        # than the default 5 s, so the workers were killed and restarted in a loop that never served (seen with
        # the image under load in tests/docker/). A hung worker is still replaced, a minute later.
        timeout_worker_healthcheck=60,
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
def inference(host: str, port: int) -> None:
    """Run an inference service: one process owning one device (SAMTUNE_INFERENCE_DEVICE), its models loaded
    from object storage, predictions batched across clients. The API forwards to the URLs in
    SAMTUNE_INFERENCE_URLS; clients may call it directly with their API key."""
    import uvicorn

    from app.core.logging import logging_config

    settings = Settings()
    _enable_metrics(settings)
    uvicorn.run(
        "app.inference.asgi:app",
        host=host,
        port=port,
        workers=1,  # one process per device: a second would load every model twice into the same memory
        log_config=logging_config(settings.log_level),
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=75,  # longer than the API's pooled connections keep idle (see `serve`)
    )


# Options samtune does not know go to Celery's command line as they are (`-n gpu0@%h`, `--autoscale`, ...).
_CELERY_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def _celery_log_level(settings: Settings) -> str:
    from app.core.logging import level_number

    # Celery's -l knows the standard names only; uvicorn's `trace` is DEBUG there.
    return logging.getLevelName(max(level_number(settings.log_level), logging.DEBUG))


def _enable_metrics(settings: Settings, *, wipe: bool = False) -> None:
    """Before anything imports prometheus-client: this process and its children (uvicorn's workers, Celery's pool)
    write their samples where /metrics adds them up (app/metrics/multiprocess.py)."""
    from app.metrics.multiprocess import enable

    enable(settings, wipe=wipe)


def _run_celery(settings: Settings, argv: list[str]) -> None:
    from celery.bin.celery import celery as celery_cli
    from celery.signals import setup_logging

    from app.core.logging import configure_logging

    def _configure(loglevel: int | str | None = None, **_: object) -> None:
        # A receiver of this signal takes over from Celery, which then installs no handler of its own (forked
        # pool children inherit the result). Celery's level is -l's, which the user may have passed through.
        configure_logging(loglevel or settings.log_level)

    setup_logging.connect(_configure, weak=False, dispatch_uid="samtune.configure_logging")
    celery_cli.main(args=["-A", "worker.celery_app", *argv], prog_name="celery", standalone_mode=True)


@main.command(context_settings=_CELERY_PASSTHROUGH)
@click.option("--queues", "-Q", default="cpu,gpu", show_default=True)
@click.option("--concurrency", "-c", default=1, show_default=True, type=int)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str, concurrency: int, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (one job per child process; the parent never touches CUDA).

    Further options go to `celery worker` as they are, e.g. `-n gpu0@%h`."""
    settings = Settings()
    _enable_metrics(settings)
    argv = [
        "worker",
        "-Q", queues,
        "-c", str(concurrency),
        "--prefetch-multiplier=1",
        "--max-tasks-per-child=1",
        "-l", _celery_log_level(settings),
        *celery_args,
    ]  # fmt: skip
    from app.workers.registry import connect_to_celery

    # Registers this worker and its device count in the database while it runs (a job's `gpus` is checked
    # against it); only a worker that takes training jobs.
    if "gpu" in queues.split(","):
        connect_to_celery(settings)
    _run_celery(settings, argv)


@main.command(context_settings=_CELERY_PASSTHROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run Celery beat (the periodic reaper and housekeeping).

    Further options go to `celery beat` as they are."""
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule file there
    _enable_metrics(settings)  # as every samtune process, though beat itself records nothing yet
    _run_celery(settings, ["beat", "-l", _celery_log_level(settings), *celery_args])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--inference-port", default=None, type=int, help="The inference service's port (default: a free one)."
)
def up(host: str, port: int, inference_port: int | None) -> None:
    """Run everything on one machine: an inference service, the API, one worker and beat, supervised (a dead
    child is restarted). With SAMTUNE_INFERENCE_URLS set, the API uses those services and none is started."""
    from app.core import migrate
    from app.core.logging import configure_logging
    from app.supervise import Child, samtune_argv, supervise

    settings = Settings()
    configure_logging(settings.log_level)  # the supervisor's own; each child configures its own
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    os.environ.setdefault("SAMTUNE_DATA_DIR", str(settings.data_dir))
    # Every process of this installation starts here, so last run's samples (of processes now gone) go.
    _enable_metrics(settings, wipe=True)
    click.echo(f"samtune on http://{host}:{port}  (data in {settings.data_dir})")
    children = []
    api_env: dict[str, str] = {}
    if not settings.inference_urls_list:
        # Reached by the API only, on loopback; its token comes from the secret key every child shares.
        port_inference = inference_port or _free_port()
        url = f"http://127.0.0.1:{port_inference}"
        children.append(
            Child(
                "inference",
                samtune_argv("inference", "--host", "127.0.0.1", "--port", str(port_inference)),
                ready_url=url + "/healthz",
            )  # fmt: skip
        )
        api_env["SAMTUNE_INFERENCE_URLS"] = url
    children += [
        Child("api", samtune_argv("serve", "--host", host, "--port", str(port)), env=api_env),
        Child("worker", samtune_argv("worker")),
        Child("beat", samtune_argv("beat")),
    ]
    raise SystemExit(supervise(children))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@main.command()
@click.option(
    "--url", help="A running samtune; default: start one for the demo in a temporary data directory."
)
@click.option("--api-key", envvar="SAMTUNE_API_KEY", help="A key for --url.")
@click.option("--keep", is_flag=True, help="Keep the temporary service's data directory afterwards.")
def demo(url: str | None, api_key: str | None, keep: bool) -> None:
    """Fine-tune the base model on concepts it has never seen, through the public API, and show the lift."""
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    import httpx

    from app.demo import DemoFailed, run_demo
    from app.supervise import samtune_argv

    if url:
        if not api_key:
            raise click.UsageError("--url needs --api-key (or SAMTUNE_API_KEY)")
        try:
            run_demo(url, api_key, say=click.echo)
        except DemoFailed as exc:
            raise click.ClickException(str(exc)) from None
        return
    data = Path(tempfile.mkdtemp(prefix="samtune-demo-data-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")} | {
        "SAMTUNE_DATA_DIR": str(data)
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    subprocess.run(samtune_argv("db", "upgrade"), env=env, check=True, capture_output=True)
    key_run = subprocess.run(samtune_argv("keys", "create", "--workspace", "demo"), env=env, check=True,
                             capture_output=True, text=True)  # fmt: skip
    api_key = key_run.stdout.strip().splitlines()[-1]
    log_path = data / "service.log"
    click.echo(f"starting samtune at {url} (data in {data}, its log in {log_path})")
    log = open(log_path, "wb")  # noqa: SIM115 (closed after the service stops)
    service = subprocess.Popen(samtune_argv("up", "--host", "127.0.0.1", "--port", str(port)), env=env,
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or service.poll() is not None:
                raise click.ClickException("the demo service did not start")
            time.sleep(0.5)
        run_demo(url, api_key, say=click.echo)
    except DemoFailed as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        service.terminate()
        try:
            service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.kill()
        log.close()
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
