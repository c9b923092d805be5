"""A base model named by its Hub repo id and missing from the cache is downloaded when the caller allows it, with
byte progress, over real HTTP from a local stand-in of the Hub (tests/support/hub.py) through huggingface_hub's
own client; a gated repository refused to the token is an error that says what to do and never shows the token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import HubStandIn, point_the_hub_client_at
from trainer.base_model import BaseModelNotFound, load_base_model

GOOD, REFUSED = "hf_granted_token_0123456789", "hf_refused_token_9876543210"


@pytest.fixture
def hub(tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    server = HubStandIn("facebook/sam3", tiny_base, granted={GOOD}, chunk_delay=0.002).start()
    point_the_hub_client_at(server, tmp_path / "hub-cache", monkeypatch)
    yield server
    server.stop()


def _weights_bytes(hub: HubStandIn) -> int:
    return sum(
        len(f.data) for name, f in hub.files.items() if name.endswith((".json", ".safetensors", ".txt"))
    )


def test_a_missing_repo_is_downloaded_with_byte_progress_then_read_from_the_cache(
    hub: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", GOOD)
    with pytest.raises(BaseModelNotFound, match="downloading is off"):
        load_base_model("facebook/sam3")  # the default: the cache only, and it is empty
    assert not hub.requests

    seen: list[tuple[int, int]] = []
    loaded = load_base_model(
        "facebook/sam3", local_files_only=False, download_progress=lambda d, t: seen.append((d, t))
    )
    assert loaded.num_parameters > 0
    total = _weights_bytes(hub)
    assert total > 1_000_000  # the tiny model's weights: enough chunks to be seen in progress
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert len(seen) > 5 and all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))
    assert all(token == GOOD for _, _, token in hub.requests)

    # Downloaded once: the next load (downloads allowed or not) reads the cache and asks the Hub nothing.
    asked = len(hub.requests)
    load_base_model("facebook/sam3")
    load_base_model(
        "facebook/sam3", local_files_only=False, download_progress=lambda d, t: seen.append((d, t))
    )
    assert len(hub.requests) == asked


@pytest.mark.parametrize("token", [REFUSED, None])
def test_a_gated_refusal_says_what_to_do_and_never_shows_the_token(
    hub: HubStandIn, monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        from huggingface_hub import constants

        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hub.directory / "no-login" / "token"))  # no login
    with pytest.raises(BaseModelNotFound) as caught:
        load_base_model("facebook/sam3", local_files_only=False)
    message = str(caught.value)
    assert "gated" in message and f"{hub.url}/facebook/sam3" in message and "licence" in message
    assert ("HF_TOKEN" in message) == (token is None)  # no token: says how to configure one
    assert REFUSED not in message and GOOD not in message
    assert hub.requests  # it asked the Hub (and was refused), it did not just give up


def test_hf_hub_offline_forbids_the_download(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", GOOD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelNotFound, match="HF_HUB_OFFLINE"):
        load_base_model("facebook/sam3", local_files_only=False)
    assert not hub.requests


def test_what_the_progress_callback_raises_ends_the_download_and_a_later_one_completes_it(
    hub: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled job raises from the progress callback: that reaches the caller as it is (not as a download
    failure), and the next job's download finishes the files."""
    monkeypatch.setenv("HF_TOKEN", GOOD)

    class Cancel(Exception):
        pass

    def cancel_midway(done: int, total: int) -> None:
        if done > total // 4:
            raise Cancel

    with pytest.raises(Cancel):
        load_base_model("facebook/sam3", local_files_only=False, download_progress=cancel_midway)
    with pytest.raises(BaseModelNotFound):
        load_base_model("facebook/sam3")  # not complete in the cache
    seen: list[tuple[int, int]] = []
    loaded = load_base_model(
        "facebook/sam3", local_files_only=False, download_progress=lambda d, t: seen.append((d, t))
    )
    assert loaded.num_parameters > 0 and seen[-1][0] == seen[-1][1] > 0
