"""A local stand-in for the Hugging Face Hub: a real HTTP server (in a thread, on 127.0.0.1) answering the
part of the Hub's HTTP API that `huggingface_hub.snapshot_download` uses, for one model repository read from a
directory. The Hub itself is out of reach here; this lets the real huggingface_hub client code run against
HTTP, gating included (the Hub's 401/403 answers with `X-Error-Code: GatedRepo`).

Answered: `GET /api/models/{repo}/revision/{rev}` (the repo's info and commit), `GET /api/models/{repo}/tree/
{rev}` (its files, `.safetensors` as LFS entries), `HEAD` and `GET /{repo}/resolve/{rev}/{path}` (a file, with the
`X-Repo-Commit` and `ETag` headers the client reads, `Range` honoured). Files are sent in chunks, optionally
slowed, so that a download is seen in progress.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest


@dataclass
class _File:
    path: str
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()  # noqa: S324 (git's own)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class HubStandIn:
    """Serves `directory` as the model repository `repo_id`. `granted`: the tokens whose account has been
    granted access to the gated repository (None: not gated). `chunk_delay`: seconds between 256 KiB chunks."""

    repo_id: str
    directory: Path
    granted: set[str] | None = None
    chunk_delay: float = 0.0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, token)
    url: str = ""

    def start(self) -> HubStandIn:
        self.files = {
            p.relative_to(self.directory).as_posix(): _File(
                p.relative_to(self.directory).as_posix(), p.read_bytes(), p.suffix == ".safetensors"
            )
            for p in sorted(self.directory.rglob("*"))
            if p.is_file()
        }
        self.commit = hashlib.sha1("".join(f.git_oid for f in self.files.values()).encode()).hexdigest()  # noqa: S324
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                hub._answer(self, head=True)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def total_bytes(self) -> int:
        return sum(len(f.data) for f in self.files.values())

    # --- answers ---

    def _answer(self, req: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = unquote(urlsplit(req.path).path)
        auth = req.headers.get("Authorization") or ""
        token = auth.removeprefix("Bearer ").strip() or None
        self.requests.append((req.command, path, token))
        api = f"/api/models/{self.repo_id}/"
        files = f"/{self.repo_id}/resolve/"
        if not (path.startswith(api) or path.startswith(files)):
            return self._error(req, 401, "RepoNotFound", "Repository Not Found", head=head)
        if self.granted is not None:
            if token is None:
                return self._error(req, 401, "GatedRepo", f"Access to model {self.repo_id} is restricted. You "
                                   "must have access to it and be authenticated to access it.", head=head)  # fmt: skip
            if token not in self.granted:
                return self._error(req, 403, "GatedRepo", f"Access to model {self.repo_id} is restricted and you "
                                   "are not in the authorized list.", head=head)  # fmt: skip
        if path.startswith(api + "revision/"):
            info = {
                "id": self.repo_id,
                "sha": self.commit,
                "private": False,
                "gated": "manual" if self.granted is not None else False,
                "siblings": [{"rfilename": name} for name in self.files],
            }
            return self._json(req, info, head=head)
        if path.startswith(api + "tree/"):
            entries = [
                {"type": "file", "oid": f.git_oid, "size": len(f.data), "path": f.path}
                | ({"lfs": {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}} if f.lfs else {})
                for f in self.files.values()
            ]
            return self._json(req, entries, head=head)
        # /{repo}/resolve/{revision}/{file path}
        _, _, name = path[len(files) :].partition("/")
        found = self.files.get(name)
        if found is None:
            return self._error(req, 404, "EntryNotFound", f"{name} does not exist", head=head)
        self._file(req, found, head=head)

    def _file(self, req: BaseHTTPRequestHandler, f: _File, *, head: bool) -> None:
        start = 0
        wanted = req.headers.get("Range") or ""
        if wanted.startswith("bytes=") and not head:
            start = int(wanted[6:].split("-", 1)[0] or 0)
        body = f.data[start:]
        req.send_response(206 if start else 200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("ETag", f'"{f.etag}"')
        req.send_header("X-Repo-Commit", self.commit)
        if start:
            req.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
        req.end_headers()
        if head:
            return
        chunk = 256 * 1024
        for i in range(0, len(body), chunk):
            req.wfile.write(body[i : i + chunk])
            if self.chunk_delay:
                time.sleep(self.chunk_delay)

    def _json(self, req: BaseHTTPRequestHandler, data: Any, *, head: bool) -> None:
        body = json.dumps(data).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)

    def _error(
        self, req: BaseHTTPRequestHandler, status: int, code: str, message: str, *, head: bool
    ) -> None:
        body = json.dumps({"error": message}).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.send_header("X-Error-Code", code)
        req.send_header("X-Error-Message", message)
        req.end_headers()
        if not head:
            req.wfile.write(body)


def point_the_hub_client_at(hub: HubStandIn, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's huggingface_hub asks `hub` (HF_ENDPOINT), caches into `cache`, may download
    (HF_HUB_OFFLINE unset) and sends no telemetry; the token is each test's to set."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
