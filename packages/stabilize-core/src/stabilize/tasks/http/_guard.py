"""The SSRF guard of :class:`~stabilize.tasks.http.HTTPTask`: which URLs and addresses it refuses.

This module is pure Python (``ipaddress`` and ``socket`` only): the connect-time half of the
guard, which needs httpcore, lives in :mod:`stabilize.tasks.http._transport`.

The policy (unless the worker's ``HTTPTask(allow_private_urls=True)`` turns it off):

* only ``http`` and ``https`` URLs;
* no cloud metadata host names (``metadata.google.internal``, ``metadata.goog``);
* every address the host name resolves to must be public: loopback, private (RFC 1918,
  unique-local ``fc00::/7``), link-local (``169.254.0.0/16``, ``fe80::/10``), multicast,
  unspecified, reserved, shared (CGNAT ``100.64.0.0/10``), other non-global ranges and the
  metadata addresses (``169.254.169.254``, ``fd00:ec2::254``, ...) are refused. IPv4 addresses
  embedded in IPv6 (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``) are judged as IPv4.

Name resolution and the address policy can be replaced (tests use this to play DNS).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from stabilize.errors import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver = Callable[[str, int], list[str]]
"""``resolver(host, port)`` -> the IP addresses (as text) that ``host`` resolves to."""

AddressPolicy = Callable[[IPAddress, int], str | None]
"""``policy(address, port)`` -> why connecting there is refused, or None when it is allowed."""

ALLOWED_SCHEMES = ("http", "https")

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})
"""Host names of cloud metadata services, refused whatever they resolve to."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

ENABLE_PRIVATE = 'registry.register("http", HTTPTask(allow_private_urls=True))'
"""How a worker's operator lets HTTP stages reach private addresses (a stage cannot)."""

PRIVATE_HINT = f"only the worker's operator can allow private addresses, with {ENABLE_PRIVATE}"


class BlockedURLError(PermanentError):
    """The SSRF guard refused a URL or an address (the task fails at once)."""


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = blocked_reason(embedded)
            return f"{reason} (embedded in {address})" if reason else None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "a CGNAT address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


def default_policy(address: IPAddress, port: int) -> str | None:
    """The default address policy: refuse every non-public address, whatever the port."""
    return blocked_reason(address)


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver (``getaddrinfo``), keeping the order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for *_, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def parse_address(text: str) -> IPAddress:
    """An IP address from text (an IPv6 zone such as ``%eth0`` is dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


class SSRFGuard:
    """Decides which URLs and addresses a request may reach.

    Args:
        allow_private: Allow every address (only the scheme check remains).
        resolver: Name resolution (default: the system resolver).
        policy: The address policy (default: :func:`default_policy`).
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        policy: AddressPolicy | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver: Resolver = resolver or system_resolver
        self.policy: AddressPolicy = policy or default_policy

    def check_url(self, url: str) -> None:
        """Refuse ``url`` unless its scheme is http(s) and every address of its host is allowed.

        Raises:
            BlockedURLError: The URL is refused (the message says why).
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise BlockedURLError(
                f"HTTPTask: refusing {url!r}: only http and https URLs are allowed, "
                f"not {scheme or 'a URL without a scheme'!r}"
            )
        host = parts.hostname
        if not host:
            raise BlockedURLError(f"HTTPTask: refusing {url!r}: the URL has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise BlockedURLError(f"HTTPTask: refusing {url!r}: {exc}") from exc
        self.addresses(host, port)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and check EVERY address; return them in resolver order.

        This is what the transport calls right before it connects, so the address it
        connects to is one that was checked (a DNS answer that changed since
        :meth:`check_url` cannot slip through).

        Raises:
            BlockedURLError: The host is a metadata name, does not resolve, or one of its
                addresses is refused.
        """
        name = host.strip("[]").rstrip(".").lower()
        if not self.allow_private and name in METADATA_HOSTS:
            raise BlockedURLError(
                f"HTTPTask: refusing host {host!r}: a cloud metadata service ({PRIVATE_HINT})"
            )
        try:
            literal: IPAddress | None = parse_address(name)
        except ValueError:
            literal = None
        if literal is not None:
            found = [literal]
        else:
            try:
                found = [parse_address(a) for a in self.resolver(name, port)]
            except (OSError, UnicodeError, ValueError) as exc:
                raise BlockedURLError(f"HTTPTask: cannot resolve host {host!r}: {exc}") from exc
            if not found:
                raise BlockedURLError(f"HTTPTask: host {host!r} resolves to no address")
        for address in found:
            self.check_address(address, port, host)
        return found

    def check_address(self, address: IPAddress, port: int, host: str | None = None) -> None:
        """Refuse a single address (also used on the peer of a connected socket)."""
        if self.allow_private:
            return
        reason = self.policy(address, port)
        if reason is not None:
            what = f"host {host!r} resolves to {address}" if host else f"address {address}"
            raise BlockedURLError(f"HTTPTask: refusing {what}: {reason} ({PRIVATE_HINT})")
