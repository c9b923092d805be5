"""Webhooks cannot be aimed inside the deployment (issue 20): the host is resolved and checked when the job is
created and again at each delivery, the delivery connects to the address checked, an operator's allow-list
opens named hosts or networks, and what is recorded of a failure tells no port scanner anything."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.jobs import webhook_target
from app.jobs.tables import TrainingJob
from app.jobs.webhooks import WebhookRejected, deliver
from tests.support.jobs import JobKit
from tests.support.ports import free_port
from tests.support.webhooks import WebhookReceiver

# Every spelling the issue found accepted, and the private and reserved ranges around them.
REFUSED_URLS = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/hook",
    "http://[::1]/hook",
    "http://0.0.0.0/hook",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://0177.0.0.1/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[fe80::1]/hook",
    "http://[fd00::1]/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://100.64.0.1/hook",
    "http://localhost:9/hook",
]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    yield r
    r.stop()


def _webhook_events(kit: JobKit, job_id: str) -> list[dict]:
    return [e for e in kit.get(job_id)["events"] if e["kind"] == "webhook"]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_internal_addresses_are_refused_by_the_check(url: str) -> None:
    # httpx calls 0177.0.0.1 invalid (the API's URL validation first rewrites it as 127.0.0.1): refused either way
    with pytest.raises(webhook_target.DestinationRefused, match="not public|not a valid URL"):
        webhook_target.resolve(url, "")


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    """metadata.google.internal resolves to 169.254.169.254 inside Google Cloud (this machine has no such DNS,
    so the resolver answers as GCP's would); a name with one public and one private address is refused too."""
    gcp = {"metadata.google.internal": ["169.254.169.254"], "mixed.example": ["93.184.215.14", "10.1.2.3"]}
    for host in gcp:
        with pytest.raises(webhook_target.DestinationRefused, match="not public"):
            webhook_target.resolve(f"http://{host}/hook", "", lambda h: gcp[h])
    public = webhook_target.resolve("https://hooks.example:8443/x?y=1", "", lambda h: ["93.184.215.14"])
    assert str(public.connect_url) == "https://93.184.215.14:8443/x?y=1"
    assert (public.host_header, public.server_name) == ("hooks.example:8443", "hooks.example")
    # An answer the refusal gives for every internal host alike: it names no address.
    with pytest.raises(webhook_target.DestinationRefused) as caught:
        webhook_target.resolve("http://db.internal/", "", lambda h: ["10.9.8.7"])
    assert "10.9.8.7" not in caught.value.detail


def test_the_allow_list_names_hosts_and_networks() -> None:
    resolver = {"hooks.internal": ["10.0.5.7"], "other.internal": ["10.0.6.1"]}.__getitem__
    assert webhook_target.resolve("http://hooks.internal/", "hooks.internal", resolver).address == "10.0.5.7"
    assert webhook_target.resolve("http://hooks.internal/", "10.0.5.0/24", resolver).address == "10.0.5.7"
    with pytest.raises(webhook_target.DestinationRefused):
        webhook_target.resolve("http://other.internal/", "hooks.internal, 10.0.5.0/24", resolver)
    assert webhook_target.resolve("http://[::1]:8/", "::1", lambda h: ["::1"]).address == "::1"


def test_creating_a_job_with_an_internal_webhook_is_a_422(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    strict = kit.make_client(kit.make_settings(webhook_allowed_hosts=""))
    for url in REFUSED_URLS:
        r = strict.post("/api/v1/jobs", json=kit.job_body(webhook_url=url), headers=kit.auth)
        assert r.status_code == 422, (url, r.text)
        problem = r.json()
        assert problem["source"] == "webhook_url" and "not public" in problem["detail"], (url, problem)
    # The operator's allow-list (the kit's settings name 127.0.0.1) lets a local receiver through.
    created = kit.create(webhook_url="http://127.0.0.1:9/hook")
    assert created["webhook_secret"].startswith("whsec_")


def test_delivery_checks_again_and_connects_to_the_address_checked(
    jobs_kit: JobKit, receiver: WebhookReceiver
) -> None:
    """The job was created while the host was allowed; by delivery it is not (as when DNS has come to answer
    with an internal address): nothing is sent, the refusal is recorded, and no retry is asked for."""
    kit = jobs_kit
    job = kit.create(webhook_url=receiver.url)
    kit.update(TrainingJob, job["id"], status="succeeded")
    strict = kit.make_settings(webhook_allowed_hosts="")
    assert deliver(strict, uuid.UUID(job["id"]), 0) == 0
    assert receiver.deliveries == []
    last = _webhook_events(kit, job["id"])[-1]
    assert last["data"] == {"delivered": False, "attempt": 1} and "not public" in last["message"]

    # A name: resolved once per delivery, and the connection goes to that answer (no second lookup that a
    # rebinding DNS server could answer differently). "receiver.test" exists in no DNS: only the checked
    # address can have reached the receiver.
    port = receiver.url.split(":")[2].split("/")[0]
    kit.update(TrainingJob, job["id"], webhook_url=f"http://receiver.test:{port}/hook")
    lookups: list[str] = []
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])

    def rebinding(host: str) -> list[str]:
        lookups.append(host)
        return next(answers)

    allowed = kit.make_settings(webhook_allowed_hosts="receiver.test")
    assert deliver(allowed, uuid.UUID(job["id"]), 1, resolver=rebinding) == 200
    assert lookups == ["receiver.test"]
    (delivery,) = receiver.deliveries
    assert delivery.headers["host"] == f"receiver.test:{port}"


def test_failures_are_recorded_without_the_network_error(jobs_kit: JobKit) -> None:
    """Refused, timed out or reset: one wording, so the events cannot be used to map ports."""
    kit = jobs_kit
    job = kit.create(webhook_url=f"http://127.0.0.1:{free_port()}/closed")
    kit.update(TrainingJob, job["id"], status="failed")
    with pytest.raises(WebhookRejected, match="^no HTTP answer$"):
        deliver(kit.settings, uuid.UUID(job["id"]), 0)
    message = _webhook_events(kit, job["id"])[-1]["message"]
    assert message == "webhook delivery attempt 1 failed (no HTTP answer)"
    for leak in ("refused", "Errno", "ConnectError", "111"):
        assert leak not in message
