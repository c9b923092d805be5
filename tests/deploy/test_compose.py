"""docker-compose.yml, .env.example, the Dockerfile and docs/deploy.md, checked by reading them (no Docker
engine runs here): every command the services run exists with the options given, every SAMTUNE_ name is a
real setting and every setting is documented, healthchecks and depends_on agree, volumes are declared, and
the image is multi-stage, non-root, probed, and copies only paths that exist."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from alembic.config import CommandLine

from app.cli import main as samtune_cli
from app.core.tasks import CPU_QUEUE, GPU_QUEUE
from app.settings import Settings
from tests.deploy.files import (
    REPO,
    SETTINGS_ENV,
    command,
    copies,
    dockerfile_stages,
    env_example,
    interpolate,
    json_or_shell,
    load_compose,
    samtune_services,
    seconds,
    service_environment,
    services,
    variables,
)

BIN = Path(sys.executable).parent
# Code that reads a SAMTUNE_ variable itself, outside Settings (set by the Dockerfile): the trainer, which
# never imports app/.
CODE_ENV = {"SAMTUNE_EMBEDDED_BASE_DIR", "SAMTUNE_TOKENIZER_CACHE"}


# An image pinned to one release: a tag of at least major.minor (an optional -variant after it), or a digest.
PINNED_IMAGE = re.compile(r"[a-z0-9./_-]+(:\d+\.\d+(\.\d+)*(-[a-z0-9.]+)?|@sha256:[0-9a-f]{64})")


def check_samtune_argv(argv: list[str]) -> click.Context:
    """Parse `samtune ...` with the real click group: an unknown subcommand or option, a missing required
    option or a bad value raises."""
    assert argv[0] == "samtune", argv
    cmd: click.Command = samtune_cli
    name, rest = "samtune", argv[1:]
    while isinstance(cmd, click.Group):
        assert rest, f"{argv}: names no subcommand"
        sub = cmd.get_command(click.Context(cmd), rest[0])
        assert sub is not None, f"{argv}: `{name}` has no subcommand {rest[0]!r}"
        cmd, name, rest = sub, rest[0], rest[1:]
    return cmd.make_context(name, list(rest))


def check_image_argv(argv: list[str]) -> None:
    """A command the samtune image runs: `samtune ...`, `alembic ...`, `celery ...` or `python -c ...`."""
    exe = argv[0]
    if exe == "samtune":
        check_samtune_argv(argv)
    elif exe == "alembic":
        assert (BIN / "alembic").exists()
        CommandLine().parser.parse_args(argv[1:])  # exits on an unknown command or option
    elif exe == "celery":
        assert (BIN / "celery").exists()
        app_module = argv[argv.index("-A") + 1]
        assert importlib.util.find_spec(app_module) is not None, app_module
    elif exe == "python":
        assert argv[1] == "-c"
        compile(argv[2], "<healthcheck>", "exec")
    else:
        raise AssertionError(f"{argv}: {exe!r} is not installed in the samtune image")


def healthcheck_argv(test: list[str] | str) -> list[str]:
    if isinstance(test, str):
        return shlex.split(test)
    if test[0] == "CMD":
        return test[1:]
    assert test[0] == "CMD-SHELL", test
    return shlex.split(test[1].replace("$$", "$"))


def dockerfile_healthcheck() -> list[str]:
    final = dockerfile_stages()[-1]
    (probe,) = final.all("HEALTHCHECK")
    return json_or_shell(probe.args.split(" CMD ", 1)[1])


def has_healthcheck(name: str, svc: dict[str, Any]) -> bool:
    check = svc.get("healthcheck")
    if check is not None:
        return not check.get("disable", False)
    return "build" in svc and bool(dockerfile_healthcheck())


# --- commands --------------------------------------------------------------------------------------------


def test_every_service_names_an_image() -> None:
    for name, svc in services().items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        if "build" in svc:
            assert svc["build"] == "." and image == "samtune:latest", name
        else:
            assert PINNED_IMAGE.fullmatch(image), (
                f"{name}: {image} is not pinned to an exact version (name a release tag such as postgres:16.10, "
                "or a digest); a moving tag changes what runs under the same file"
            )


@pytest.mark.parametrize(
    ("image", "pinned"),
    [("postgres:16.10", True), ("redis:7.4.5", True), ("chrislusf/seaweedfs:3.97", True),
     ("postgres:16.10-bookworm", True), ("redis@sha256:" + "a" * 64, True), ("redis:7", False),
     ("postgres:16", False), ("minio/minio:latest", False), ("redis", False), ("redis:stable", False),
     ("redis:7-alpine", False)],
)  # fmt: skip
def test_the_pinned_image_rule(image: str, pinned: bool) -> None:
    assert bool(PINNED_IMAGE.fullmatch(image)) is pinned


def test_samtune_services_run_commands_that_exist() -> None:
    run = {name: command(name) for name in samtune_services()}
    assert set(run) == {"s3-bucket", "migrate", "api", "inference", "worker", "worker-cpu", "beat"}, set(run)
    for argv in run.values():
        check_image_argv(argv)
    assert run["migrate"] == ["alembic", "upgrade", "head"]
    assert check_samtune_argv(run["api"]).params["workers"] >= 2
    # Every queue the code sends to has a consumer; training workers hold one job per process.
    consumed: set[str] = set()
    for name in ("worker", "worker-cpu"):
        params = check_samtune_argv(run[name]).params
        consumed |= set(params["queues"].split(","))
    assert consumed == {CPU_QUEUE, GPU_QUEUE}
    assert check_samtune_argv(run["worker"]).params == {
        "queues": GPU_QUEUE,
        "concurrency": 1,
        "celery_args": (),
    }
    assert run["inference"][:2] == ["samtune", "inference"]
    assert check_samtune_argv(run["inference"]).params == {"host": "0.0.0.0", "port": 8001}
    # Exactly one beat: two would run every periodic task twice.
    assert [n for n, argv in run.items() if argv[:2] == ["samtune", "beat"]] == ["beat"]


def test_the_image_default_command_is_the_api() -> None:
    (cmd,) = dockerfile_stages()[-1].all("CMD")
    assert json_or_shell(cmd.args) == command("api")


def test_the_bucket_job_creates_the_bucket_samtune_is_given() -> None:
    """The one-shot job runs samtune's own storage client with the services' settings (so it creates exactly
    the bucket of SAMTUNE_STORAGE_URL at SAMTUNE_S3_ENDPOINT_URL); tests/docker/ runs it against a real S3
    endpoint."""
    env = load_compose()["x-samtune"]["environment"]
    assert re.fullmatch(r"s3://[a-z0-9-]+", env["SAMTUNE_STORAGE_URL"]), env["SAMTUNE_STORAGE_URL"]
    argv = command("s3-bucket")
    assert argv[:2] == ["python", "-c"]
    assert "make_storage(Settings())" in argv[2] and "create_bucket(Bucket=s.bucket)" in argv[2]
    assert services()["s3-bucket"]["restart"] == "no"
    # The endpoint is the S3 service's gateway port, as its command sets it.
    s3 = services()["s3"]
    assert env["SAMTUNE_S3_ENDPOINT_URL"] == "http://s3:8333" and "-s3.port=8333" in s3["command"]
    assert services()["s3-bucket"]["depends_on"]["s3"]["condition"] == "service_healthy"


def test_the_s3_server_knows_samtune_s_credentials() -> None:
    """SeaweedFS's identities file (a compose config) holds the key and secret samtune's services are given."""
    compose = load_compose()
    s3 = compose["services"]["s3"]
    (config,) = s3["configs"]
    assert f"-s3.config={config['target']}" in s3["command"]
    text = interpolate(compose["configs"][config["source"]]["content"], env_example().values)
    (identity,) = json.loads(text)["identities"]
    env = service_environment("api", env_example().values)
    assert identity["credentials"] == [
        {"accessKey": env["SAMTUNE_S3_ACCESS_KEY_ID"], "secretKey": env["SAMTUNE_S3_SECRET_ACCESS_KEY"]}
    ]
    assert {"Read", "Write", "List"} <= set(identity["actions"])


def test_the_first_key_command_in_the_docs_exists() -> None:
    text = (REPO / "docs" / "deploy.md").read_text()
    lines = [
        line.strip()
        for line in text.splitlines()
        if "samtune keys create" in line and "docker compose" in line
    ]
    assert lines, "docs/deploy.md shows no `docker compose ... samtune keys create` command"
    for line in lines:
        words = shlex.split(line.split("#")[0])
        at = words.index("samtune")
        assert words[:2] == ["docker", "compose"] and words[2] in ("exec", "run"), line
        service = next(w for w in words[3:at] if not w.startswith("-"))
        assert service in samtune_services(), line
        ctx = check_samtune_argv(words[at:])
        assert ctx.params["workspace"], line


# --- settings --------------------------------------------------------------------------------------------


def compose_samtune_names() -> set[str]:
    names: set[str] = set()
    for svc in services().values():
        names |= {k for k in (svc.get("environment") or {}) if k.startswith("SAMTUNE_")}
    names |= {v for v in variables((REPO / "docker-compose.yml").read_text()) if v.startswith("SAMTUNE_")}
    return names


def test_samtune_names_in_compose_and_env_example_are_settings() -> None:
    example = env_example()
    unknown = (
        compose_samtune_names() | {n for n in example.names if n.startswith("SAMTUNE_")}
    ) - SETTINGS_ENV
    assert not unknown, f"not fields of app/settings.py Settings: {sorted(unknown)}"


def test_env_example_lists_every_setting_with_a_comment() -> None:
    example = env_example()
    missing = SETTINGS_ENV - example.names
    assert not missing, f".env.example does not mention {sorted(missing)}"
    lines = (REPO / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^#?\s*(SAMTUNE_[A-Z0-9_]+)=", line)
        if m:
            assert lines[i - 1].startswith("#"), f"{m.group(1)} has no comment above it"


def test_env_example_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    example = env_example()
    for name in list(SETTINGS_ENV):
        monkeypatch.delenv(name, raising=False)
    # What a copied .env sets, and each documented example on its own: all accepted by Settings.
    for name, value in example.values.items():
        if name.startswith("SAMTUNE_"):
            monkeypatch.setenv(name, value)
    Settings()
    for name, value in example.documented.items():
        with monkeypatch.context() as m:
            m.setenv(name, value)
            Settings()


def test_compose_variables_are_defined_in_env_example() -> None:
    used = variables((REPO / "docker-compose.yml").read_text())
    undefined = used - set(env_example().values)
    assert not undefined, f"docker-compose.yml uses {sorted(undefined)}, which .env.example does not set"


def test_the_samtune_environment_interpolates_to_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    example = env_example().values
    for name in list(SETTINGS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name in samtune_services():
        env = {k: v for k, v in example.items() if k.startswith("SAMTUNE_")} | service_environment(
            name, example
        )
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        s = Settings()
        assert (
            s.database_url.startswith("postgresql+psycopg://samtune:") and "@postgres:5432/" in s.database_url
        )
        assert s.broker_url.startswith("redis://") and s.redis_url and s.redis_url.startswith("redis://")
        assert s.broker_url != s.redis_url  # the broker and the live feed use separate Redis databases
        assert s.storage_url.startswith("s3://") and s.secret_key == example["SAMTUNE_SECRET_KEY"]
    # A missing password stops `docker compose` with a message, rather than starting with an empty one.
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        service_environment("api", {k: v for k, v in example.items() if k != "POSTGRES_PASSWORD"})
    assert interpolate("$${A} ${B:-x}", {}) == "${A} x"


# --- health, order, volumes ------------------------------------------------------------------------------


def test_healthchecks_run_commands_that_exist() -> None:
    check_image_argv(dockerfile_healthcheck())
    for svc in samtune_services().values():
        check = svc.get("healthcheck")
        if check and not check.get("disable"):
            check_image_argv(healthcheck_argv(check["test"]))
    api_probe = healthcheck_argv(services()["api"]["healthcheck"]["test"])
    # The API's is readiness (its dependencies answer), what depends_on and a load balancer wait for.
    assert "http://127.0.0.1:8000/readyz" in api_probe[-1]
    assert check_samtune_argv(command("api")).params["port"] == 8000
    # The inference service is probed on its own port (the image's HEALTHCHECK probes the API's).
    inference_probe = healthcheck_argv(services()["inference"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8001/healthz" in inference_probe[-1]
    assert check_samtune_argv(command("inference")).params["port"] == 8001


def test_depends_on_is_consistent() -> None:
    svcs = services()
    for name, svc in svcs.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: give depends_on conditions"
        for dep, spec in deps.items():
            assert dep in svcs, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert has_healthcheck(dep, svcs[dep]), (
                    f"{name} waits for {dep} to be healthy; it has no check"
                )
            elif condition == "service_completed_successfully":
                assert svcs[dep].get("restart") == "no", f"{dep} is waited for to finish: it must not restart"
            else:
                assert condition == "service_started", condition
    # No cycles: a topological order exists.
    order: list[str] = []
    pending = dict(svcs)
    while pending:
        ready = [n for n, s in pending.items() if set(s.get("depends_on") or {}) <= set(order)]
        assert ready, f"a depends_on cycle among {sorted(pending)}"
        order += ready
        for n in ready:
            del pending[n]
    # Every process that uses the database starts after the migration; those that store objects after the bucket.
    for name in ("api", "inference", "worker", "worker-cpu", "beat"):
        assert svcs[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("api", "inference", "worker", "worker-cpu"):
        assert "s3-bucket" in svcs[name]["depends_on"]
    assert svcs["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_volumes_are_declared_and_used() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for svc in compose["services"].values():
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if not source.startswith((".", "/", "~", "$")):
                used.add(source)
    assert used == declared, (used, declared)
    for name in ("postgres", "redis", "s3"):
        assert compose["services"][name].get("volumes"), f"{name} keeps its data in a volume"


def test_hugging_face_weights_survive_a_rebuild() -> None:
    """Meta's weights, downloaded once with HF_TOKEN into a named volume at the image user's cache; the
    image creates that directory, owned by the user, so that the new volume is writable by it."""
    for name, svc in samtune_services().items():
        assert "hf-cache:/home/samtune/.cache/huggingface" in svc["volumes"], name
    assert "hf-cache" in load_compose()["volumes"]
    runs = " ".join(i.args for i in dockerfile_stages()[-1].all("RUN"))
    assert "/home/samtune/.cache/huggingface" in runs and "chown" in runs
    assert "HF_TOKEN" in env_example().documented
    assert "SAMTUNE_SAM3_PATH" in env_example().documented


def test_only_the_gpu_services_reserve_gpus() -> None:
    for name, svc in services().items():
        devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
            "devices"
        )
        assert bool(devices) == (name in ("worker", "inference")), name


def reserved_gpu(name: str) -> dict[str, Any]:
    """The one NVIDIA GPU a service reserves."""
    (device,) = services()[name]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], (name, device)
    assert device.get("count") == 1 or len(device.get("device_ids", [])) == 1, (name, device)
    return device


def test_the_gpu_worker_reserves_one_gpu_and_has_time_to_checkpoint() -> None:
    worker = services()["worker"]
    reserved_gpu("worker")
    # Docker SIGKILLs after the grace period; a job's checkpoint upload and the worker's warm shutdown need
    # minutes, not Docker's default 10 s.
    assert seconds(worker["stop_grace_period"]) >= 120
    assert "deploy" not in services()["worker-cpu"]


def test_the_inference_service_holds_a_gpu_and_the_api_forwards_to_it() -> None:
    reserved_gpu("inference")
    svcs = samtune_services()
    # The API, the CPU worker and beat hold no GPU: every model the API serves is loaded by the inference tier.
    for name in ("api", "worker-cpu", "beat", "migrate"):
        assert "deploy" not in svcs[name], f"{name} reserves a device"
    example = env_example().values
    api_env = service_environment("api", example)
    urls = api_env["SAMTUNE_INFERENCE_URLS"].split(",")
    assert urls == ["http://inference:8001"], urls
    for url in urls:
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
        assert m, url
        service, port = m.group(1), int(m.group(2))
        assert command(service)[:2] == ["samtune", "inference"], service
        assert check_samtune_argv(command(service)).params["port"] == port, url
        assert "ports" not in svcs[service], f"{service}: reached by the API only, not published"
    # The API's environment is the shared one plus the URLs (the merge kept every other setting), and only
    # the API is told where the inference tier is.
    shared = {k: interpolate(str(v), example) for k, v in load_compose()["x-samtune"]["environment"].items()}
    assert api_env == shared | {"SAMTUNE_INFERENCE_URLS": "http://inference:8001"}
    for name in svcs:
        if name != "api":
            assert "SAMTUNE_INFERENCE_URLS" not in service_environment(name, example), name


# --- the Dockerfile -------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_the_final_stage_is_lean() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 3 and all(s.name for s in stages), [(s.base, s.name) for s in stages]
    final = stages[-1]
    run_lines = " ".join(i.args for i in final.all("RUN"))
    for tool in ("build-essential", "gcc", "g++", "npm", "apt-get install"):
        assert tool not in run_lines, f"the final stage installs or runs {tool}"
    assert final.base == stages[1].base, "build and runtime share the Python image (the venv is copied)"


def test_dockerfile_runs_as_a_non_root_user_and_probes_health() -> None:
    final = dockerfile_stages()[-1]
    users = final.all("USER")
    assert users, "the final stage sets no USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    assert final.all("HEALTHCHECK"), "the final stage has no HEALTHCHECK"
    # The user's home exists (the tokenizer and Hugging Face caches live there) and /data belongs to it.
    adds = " ".join(i.args for i in final.all("RUN"))
    assert "useradd --create-home" in adds and f"chown {user}:{user} /data" in adds


def test_dockerfile_copies_paths_that_exist_and_are_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for stage in dockerfile_stages():
        for copy in copies(stage):
            if copy.from_stage is not None:
                continue
            for source in copy.sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert source.split("/")[0] not in ignored, f"COPY {source}: excluded by .dockerignore"
    assert {".venv", "node_modules", "data", ".git", ".env"} <= ignored


def test_dockerfile_installs_the_ui_files_and_the_bundled_model() -> None:
    stages = dockerfile_stages()
    by_name = {s.name: s for s in stages}
    ui = next(s for s in stages if s.base.startswith("node:"))
    assert any("npm ci --omit=dev" in i.args for i in ui.all("RUN"))
    final = stages[-1]
    env = final.env()
    (modules,) = [c for c in copies(final) if c.from_stage == ui.name]
    assert modules.sources == ["/ui/node_modules"] and ui.workdir_at(len(ui.instructions)) == "/ui"
    assert env["SAMTUNE_UI_VENDOR_DIR"] == modules.dest
    (model,) = [c for c in copies(final) if c.sources == ["models/sam3-tiny-shapes"]]
    assert (REPO / "models/sam3-tiny-shapes/model.safetensors").exists()
    assert env["SAMTUNE_EMBEDDED_BASE_DIR"] == model.dest
    assert env["SAMTUNE_DATA_DIR"] == "/data"
    # The venv comes from the build stage, which installed the code in place at the path it is copied to.
    build = by_name[next(c.from_stage for c in copies(final) if c.sources == ["/opt/samtune"])]
    code_dir = build.workdir_at(len(build.instructions))
    assert any(re.search(r"pip install (-c \S+ )?-e \.", i.args) for i in build.all("RUN"))
    for package in ("app", "worker", "trainer", "migrations"):
        assert any(c.sources == [package] and c.dest == f"{code_dir}/{package}" for c in copies(final)), (
            package
        )
    assert any("alembic.ini" in c.sources and c.dest == code_dir for c in copies(final))
    assert final.workdir_at(len(final.instructions)) == code_dir  # `alembic upgrade head` finds alembic.ini
    # The SAMTUNE_ names it sets are settings, or read by the code itself.
    for name in env:
        if name.startswith("SAMTUNE_"):
            assert name in SETTINGS_ENV or name in CODE_ENV, name
    for name in CODE_ENV:
        assert any(name in p.read_text() for p in (REPO / "trainer").glob("*.py")), name


def test_dockerfile_installs_from_the_lock_file() -> None:
    """Every pip install in the image is constrained by requirements/lock.txt, as `make install` is."""
    copies_lock = [c for s in dockerfile_stages() for c in copies(s) if "requirements/lock.txt" in c.sources]
    assert copies_lock, "the Dockerfile does not copy requirements/lock.txt"
    lock_in_image = copies_lock[0].dest
    installs = [
        cmd
        for s in dockerfile_stages()
        for i in s.all("RUN")
        for cmd in re.split(r"&&|;", i.args)
        if re.search(r"\bpip install\b", cmd)
    ]
    assert installs
    # torch's own layer is constrained by the lock's lines for pip, torch and its CUDA libraries, which a
    # stage of their own takes from the lock (so that the layer outlives other changes of the lock).
    (pins_stage,) = [s for s in dockerfile_stages() if s.name == "torch-pins"]
    (pins_copy,) = copies(pins_stage)
    (grep,) = pins_stage.all("RUN")
    assert pins_copy.sources == ["requirements/lock.txt"] and grep.args.startswith("grep -E '^(pip|torch|")
    pins_file = grep.args.rsplit(">", 1)[1].strip()
    pins_in_image = [c.dest for s in dockerfile_stages() for c in copies(s) if c.sources == [pins_file]]
    assert pins_in_image, f"{pins_file} is not copied into the build stage"
    for cmd in installs:
        constraint = re.search(r"-[cr] (\S+)", cmd)
        assert constraint and constraint.group(1) in (lock_in_image, *pins_in_image), cmd
        if constraint.group(1) != lock_in_image:
            assert re.fullmatch(r"\s*pip install -c \S+ (--upgrade pip|torch torchvision)\s*", cmd), cmd
    # ... and the layer after it brings every package to the lock's version.
    assert any(f"-c {lock_in_image} -e ." in cmd for cmd in installs), installs


def test_python_of_the_image_is_one_the_project_supports() -> None:
    text = (REPO / "Dockerfile").read_text()
    version = re.search(r"ARG PYTHON_IMAGE=python:(\d+)\.(\d+)", text)
    required = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text())
    assert version and required
    assert (int(version.group(1)), int(version.group(2))) >= (int(required.group(1)), int(required.group(2)))
