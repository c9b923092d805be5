"""Downloading a base model from the Hugging Face Hub into its cache, with byte progress, and errors that say
what to do (a gated licence not accepted, a token refused, the Hub out of reach).

huggingface_hub does the downloading (resumable, locked against a second process downloading the same files);
this module only measures it and words its failures. The endpoint and token are read when called (`HF_ENDPOINT`,
`HF_TOKEN` or `hf auth login`'s file), not when huggingface_hub was imported, so a worker picks up a token set
after it started, and the tests can point it at a local stand-in of the Hub.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub.utils import tqdm as hf_tqdm

# (bytes done, bytes total): called once with done=0 before the first byte, then as bytes arrive (from
# huggingface_hub's download threads, serialised here), last with done == total. What it raises ends the
# download and reaches the caller as it is (the files fetched so far stay, and a later download resumes them).
DownloadProgress = Callable[[int, int], None]

_TRUTHY = {"1", "on", "yes", "true"}


class HubDownloadFailed(Exception):
    """The download did not happen; the message says why and what to do, and never holds the token."""


def offline() -> bool:
    """HF_HUB_OFFLINE, read now; also true when huggingface_hub read it set at its import (it would refuse)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY or bool(constants.HF_HUB_OFFLINE)


def token_configured() -> bool:
    """Whether a Hugging Face token is configured for this process (HF_TOKEN or `hf auth login`'s file)."""
    from huggingface_hub import get_token

    return get_token() is not None


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def _counting_bar(counter: _ByteCounter) -> type[hf_tqdm]:
    """A tqdm class for snapshot_download that forwards the bytes written to disk to `counter`.

    snapshot_download makes its byte bars with this class, the one named "huggingface_hub.snapshot_download"
    counting bytes written (every file's own progress is folded into it); the per-file count bar and the
    network-transfer bar (Xet) are shown as usual and not counted, or bytes would be counted twice.
    """

    class CountingBar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._counts = kwargs.get("name") == "huggingface_hub.snapshot_download"
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if self._counts and n:
                counter.add(int(n))
            return super().update(n)

    return CountingBar


class _ByteCounter:
    def __init__(self, total: int, report: DownloadProgress | None) -> None:
        self.total, self.report = total, report
        self.done = 0
        self.raised: BaseException | None = None
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done = min(self.total, self.done + n)
            if self.report is not None:
                try:
                    self.report(self.done, self.total)
                except BaseException as exc:  # the caller's own (a cancel): it ends the download as it is
                    self.raised = exc
                    raise


def download_snapshot(
    repo_id: str,
    *,
    cache_dir: Path,
    allow_patterns: Sequence[str],
    progress: DownloadProgress | None = None,
) -> Path:
    """Download what `allow_patterns` select of `repo_id` into the hub cache and return its snapshot directory.

    Files already in the cache are not fetched again. `progress` gets the bytes still to fetch (a dry run
    first lists them), so a 3.4 GB model reports a real fraction, not a count of files.
    """
    from huggingface_hub import snapshot_download

    cache, patterns, hub = str(cache_dir), list(allow_patterns), endpoint()
    counter = _ByteCounter(0, progress)
    try:
        plan = snapshot_download(
            repo_id, cache_dir=cache, allow_patterns=patterns, endpoint=hub, dry_run=True
        )
        total = counter.total = sum(f.file_size or 0 for f in plan if f.will_download)
        if progress is not None:
            progress(0, total)
        snapshot = snapshot_download(
            repo_id, cache_dir=cache, allow_patterns=patterns, endpoint=hub, tqdm_class=_counting_bar(counter)
        )
    # Said in words with its kind; the Hub's own text may hold the URL, never the token.
    except Exception as exc:
        if counter.raised is not None:  # `progress` raised (a cancel): the caller's, not a download failure
            raise counter.raised from None
        raise HubDownloadFailed(_why(repo_id, exc)) from None
    if progress is not None and counter.done < total:  # files another process fetched meanwhile
        progress(total, total)
    return Path(snapshot)


def _why(repo_id: str, exc: BaseException) -> str:
    """What went wrong, in terms of what to do. The dry run wraps the Hub's refusal (DryRunError), so the
    chain of causes is searched for the error that tells."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, GatedRepoError) for e in chain):
        return _gated(repo_id)
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        # The Hub answers 401 "not found" both for a repo that does not exist and for one the token may not see.
        return f"{endpoint()} did not let this worker see {repo_id!r}: " + (
            "its Hugging Face token was refused or has no access to it; check the token (HF_TOKEN or "
            "`hf auth login` on the worker) and that its account accepted the model's licence"
            if token_configured()
            else "no Hugging Face token is configured on the worker; set HF_TOKEN (or run `hf auth login`)"
        )
    retry = (
        "retry the job later, or copy the model to the worker and set SAMTUNE_SAM3_PATH (docs/base-models.md)"
    )
    http = next((e for e in chain if isinstance(e, HfHubHTTPError)), None)
    if http is not None and http.response is not None:
        return f"downloading {repo_id!r} from {endpoint()} failed (HTTP {http.response.status_code}); {retry}"
    # The Hub out of reach, a full disk, a half-written cache: said with its kind.
    return f"downloading {repo_id!r} from {endpoint()} failed ({type(exc).__name__}: {_without_token(str(exc))}); {retry}"


def _gated(repo_id: str) -> str:
    page = f"{endpoint()}/{repo_id}"
    if not token_configured():
        return (
            f"{repo_id} is gated on the Hugging Face Hub and no token is configured on the worker: accept its "
            f"licence at {page} while signed in, create a read token, set HF_TOKEN on the worker (or run "
            "`hf auth login` there), then start the job again"
        )
    return (
        f"{repo_id} is gated on the Hugging Face Hub and the account of the worker's token has not been granted "
        f"access: sign in to {page} with that account, accept the licence (Meta reviews requests; wait until the "
        "page says access is granted), then start the job again"
    )


def _without_token(text: str) -> str:
    from huggingface_hub import get_token

    token = get_token()
    return text.replace(token, "***") if token else text
