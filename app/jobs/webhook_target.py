"""Where a webhook may go: a public address, unless the operator's allow-list names the host or its network.

Any API key may set a webhook URL, and the worker that posts to it sits inside the deployment's network; without
this check a key could make the worker call the cloud metadata service (169.254.169.254), a database's HTTP port
on 127.0.0.1 or any 10.x host. The host is resolved and every address it resolves to must be public. The check
runs when the URL is set and again at each delivery, and the delivery connects to the very address that was
checked (`Target.connect_url`), so a DNS answer that changes in between (rebinding) cannot move it inside.
Numeric spellings of an address (`2130706433`, `0x7f000001`) resolve to the address they spell and are refused
as it is; IPv6 forms that carry an IPv4 address (`::ffff:127.0.0.1`, 6to4) are judged by that address.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.core.errors import Unprocessable

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], list[str]]

# Said the same way for every refused address: the answer must not tell a caller which internal hosts exist.
NOT_PUBLIC = (
    "resolves to an address that is not public (loopback, private, link-local, multicast or reserved); "
    "an operator may allow it with SAMTUNE_WEBHOOK_ALLOWED_HOSTS"
)


SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A job's webhook secret in the Standard Webhooks form: `whsec_` and the base64 of 24 random bytes, which
    are the HMAC key (receivers' Standard Webhooks libraries take it as it is)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


class DestinationRefused(Unprocessable):
    """The URL's host is not one a webhook may reach (a 422 when the webhook is set)."""

    kind = "webhook-refused"


class HostUnresolved(Unprocessable):
    """The host has no address now (DNS down or a name that does not exist); a delivery retries it."""

    kind = "webhook-refused"


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str]
    networks: tuple[IpNetwork, ...]

    @classmethod
    def parse(cls, setting: str) -> AllowList:
        """Comma-separated host names and addresses or networks (`hooks.internal, 10.0.5.0/24, ::1`)."""
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for item in (part.strip() for part in setting.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: IpAddress) -> bool:
        return host in self.hosts or any(address in net for net in self.networks)


@dataclass(frozen=True)
class Target:
    url: httpx.URL  # as the user gave it
    address: str  # the checked address the delivery connects to

    @property
    def connect_url(self) -> httpx.URL:
        return self.url.copy_with(host=self.address)

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def server_name(self) -> str:
        """The name TLS must present a certificate for (sent as SNI): the URL's, not the address's."""
        return self.url.raw_host.decode("ascii")


def system_resolver(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address.sixtofour
    return None


def is_public(address: IpAddress) -> bool:
    inner = _embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_unspecified
    )


def resolve(url: str, allowed: str, resolver: Resolver = system_resolver) -> Target:
    """The address to deliver `url` to, once every address its host resolves to has passed the check."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise DestinationRefused("webhook_url is not a valid URL", source="webhook_url") from exc
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise DestinationRefused("webhook_url must be an http:// or https:// URL", source="webhook_url")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    try:
        found = resolver(host)
    except (OSError, UnicodeError):
        found = []
    if not found:
        raise HostUnresolved(f"webhook_url's host {host!r} does not resolve", source="webhook_url")
    allow = AllowList.parse(allowed)
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
    # Every address, not only the first: a client may connect to any of them, and so could we on a retry.
    for address in addresses:
        if not is_public(address) and not allow.allows(host, address):
            raise DestinationRefused(f"webhook_url's host {host!r} {NOT_PUBLIC}", source="webhook_url")
    return Target(parsed, str(addresses[0]))
