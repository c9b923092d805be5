"""Reading the deployment files the way Docker reads them, for the tests of this folder: docker-compose.yml
(merge keys, `${VAR}` interpolation), .env.example, the Dockerfile (stages, instructions) and the Makefile's
`run` recipe. Parsing only: nothing here needs Docker."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
MAKEFILE = REPO / "Makefile"

SETTINGS_ENV = {f"SAMTUNE_{name.upper()}" for name in Settings.model_fields}


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def command(service: str) -> list[str]:
    """A service's command as an argv list (the compose file writes every one as a list)."""
    cmd = services()[service]["command"]
    assert isinstance(cmd, list), f"{service}: write the command as a list"
    return [str(part) for part in cmd]


def samtune_services() -> dict[str, dict[str, Any]]:
    """The services that run the image this repository builds."""
    return {name: svc for name, svc in services().items() if "build" in svc}


# --- .env.example ------------------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass
class EnvExample:
    values: dict[str, str] = field(default_factory=dict)  # uncommented: what a copied .env sets
    documented: dict[str, str] = field(default_factory=dict)  # commented out: defaults and examples

    @property
    def names(self) -> set[str]:
        return set(self.values) | set(self.documented)


def env_example() -> EnvExample:
    out = EnvExample()
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = _ENV_LINE.match(line.strip())
        if m:
            (out.documented if m.group(1) else out.values)[m.group(2)] = m.group(3)
    return out


# --- interpolation ---------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def variables(text: str) -> set[str]:
    """The names `${...}` / `$NAME` refer to in a compose string (`$$` is a literal dollar)."""
    return {m.group(1) or m.group(4) for m in _VAR.finditer(text) if m.group(0) != "$$"}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${V}, ${V:-default}, ${V-default}, ${V:?error}, ${V?error}, $V and $$."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        present = name in env and (env[name] != "" or op not in (":-", ":?"))
        if present:
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise ValueError(f"{name}: {arg}")
        return ""

    return _VAR.sub(one, value)


def service_environment(service: str, env: dict[str, str]) -> dict[str, str]:
    """The environment block of a service, interpolated with `env` (what `docker compose` would pass)."""
    block = services()[service].get("environment") or {}
    assert isinstance(block, dict), f"{service}: write the environment as a mapping"
    return {k: interpolate(str(v), env) for k, v in block.items()}


# --- durations -------------------------------------------------------------------------------------------

_UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}


def seconds(duration: str) -> float:
    """A compose duration (`5m`, `1m30s`, `90s`) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * _UNITS[u] for n, u in parts)


# --- the Dockerfile --------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                name, _, value = token.partition("=")
                out[name] = value
        return out

    def workdir_at(self, index: int) -> str:
        """The WORKDIR in force at instruction `index`."""
        wd = "/"
        for ins in self.instructions[:index]:
            if ins.keyword == "WORKDIR":
                wd = ins.args if ins.args.startswith("/") else f"{wd.rstrip('/')}/{ins.args}"
        return wd


def dockerfile_stages() -> list[Stage]:
    text = DOCKERFILE.read_text()
    # Join continuation lines; drop comments and the parser directive.
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


@dataclass
class Copy:
    sources: list[str]
    dest: str
    from_stage: str | None


def copies(stage: Stage) -> list[Copy]:
    out = []
    for index, ins in enumerate(stage.instructions):
        if ins.keyword != "COPY":
            continue
        words = shlex.split(ins.args)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        dest = paths[-1]
        if not dest.startswith("/"):
            dest = f"{stage.workdir_at(index).rstrip('/')}/{dest.removeprefix('./')}".rstrip("/")
        out.append(Copy(paths[:-1], dest, source_stage))
    return out


def json_or_shell(args: str) -> list[str]:
    """CMD/HEALTHCHECK CMD arguments: the exec (JSON) form as a list, the shell form as `sh -c`."""
    import json

    args = args.strip()
    if args.startswith("["):
        return json.loads(args)
    return ["/bin/sh", "-c", args]


# --- the Makefile ----------------------------------------------------------------------------------------


def make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target, as written."""
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe
