"""Who may read `/metrics`: a request from a network of SAMTUNE_METRICS_ALLOW (loopback by default), or one
that presents SAMTUNE_METRICS_TOKEN as a bearer token. The series name routes, queues and job ids, not data, but
they describe the installation's load and are no business of its API users."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from fastapi import Request

from app.core.errors import AppError, Unauthorized
from app.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """SAMTUNE_METRICS_ALLOW's networks; a wrong entry stops the process at start-up, naming it."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"SAMTUNE_METRICS_ALLOW: {item!r} is not an address or a network") from None
    return tuple(networks)


@dataclass(frozen=True)
class MetricsAccess:
    token: str
    networks: tuple[Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> MetricsAccess:
        return cls(settings.metrics_token, parse_networks(settings.metrics_allow))

    def _from_allowed_network(self, request: Request) -> bool:
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # not an address (a Unix socket, a test client)
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def _token_presented(self, request: Request) -> bool:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        return (
            bool(self.token)
            and scheme.lower() == "bearer"
            and hmac.compare_digest(presented.strip().encode(), self.token.encode())
        )

    def check(self, request: Request) -> None:
        """Returns when the request may read the metrics; raises 401 (a token would open it) or 403."""
        if self._token_presented(request) or self._from_allowed_network(request):
            return
        if self.token:
            raise Unauthorized("/metrics needs SAMTUNE_METRICS_TOKEN as a bearer token from this address")
        raise AppError(
            "/metrics answers only the networks in SAMTUNE_METRICS_ALLOW (and SAMTUNE_METRICS_TOKEN is not set)",
            status_code=403,
        )
