"""The SSRF guard of HTTPTask: address classes, URL checks, connect-time checks (no sockets)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from stabilize import StageExecution
from stabilize.tasks.http import BlockedURLError, HTTPTask, SSRFGuard, blocked_reason
from stabilize.tasks.http._guard import IPAddress


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("64:ff9b::a00:1", "private"),
        ("192.0.2.1", "private"),  # documentation range: not routable
    ],
)
def test_non_public_addresses_are_blocked(address: str, reason: str) -> None:
    found = blocked_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "100.128.0.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"]
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


def dns(table: dict[str, list[str]]) -> tuple[list[str], object]:
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return asked, resolve


def guard(table: dict[str, list[str]], **kwargs: object) -> tuple[list[str], SSRFGuard]:
    asked, resolve = dns(table)
    return asked, SSRFGuard(resolver=resolve, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x/", "example.com/path", ""]
)
def test_only_http_and_https(url: str) -> None:
    _, g = guard({})
    with pytest.raises(BlockedURLError, match="only http and https"):
        g.check_url(url)
    _, allowing = guard({}, allow_private=True)
    with pytest.raises(BlockedURLError, match="only http and https"):
        allowing.check_url(url)


def test_public_name_passes_and_is_resolved_with_the_port() -> None:
    seen: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]

    g = SSRFGuard(resolver=resolve)
    g.check_url("https://Example.COM./path?q=1")
    g.check_url("http://example.com:8080/")
    assert seen == [("example.com", 443), ("example.com", 8080)]


def test_every_resolved_address_is_checked() -> None:
    _, g = guard({"mixed.test": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(BlockedURLError, match=r"resolves to 10\.0\.0\.5: a private address"):
        g.check_url("http://mixed.test/")


def test_localhost_and_literals_are_refused() -> None:
    asked, g = guard({"localhost": ["127.0.0.1", "::1"]})
    for url in (
        "http://localhost/",
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0/",
    ):
        with pytest.raises(BlockedURLError, match="allow_private_urls"):
            g.check_url(url)
    assert asked == ["localhost"]  # literals are not looked up


@pytest.mark.parametrize(
    "host", ["metadata.google.internal", "METADATA.google.internal.", "metadata.goog"]
)
def test_metadata_host_names_are_refused_whatever_they_resolve_to(host: str) -> None:
    asked, g = guard({host.lower().rstrip("."): ["93.184.216.34"]})
    with pytest.raises(BlockedURLError, match="cloud metadata"):
        g.check_url(f"http://{host}/computeMetadata/v1/")
    assert asked == []


def test_unresolvable_and_empty_answers_are_errors() -> None:
    _, g = guard({"empty.test": []})
    with pytest.raises(BlockedURLError, match=r"cannot resolve host 'nowhere\.test'"):
        g.check_url("http://nowhere.test/")
    with pytest.raises(BlockedURLError, match="resolves to no address"):
        g.check_url("http://empty.test/")
    with pytest.raises(BlockedURLError, match="no host"):
        g.check_url("http:///path")


def test_allow_private_allows_every_address() -> None:
    _, g = guard({"localhost": ["127.0.0.1"]}, allow_private=True)
    g.check_url("http://localhost/")
    g.check_url("http://169.254.169.254/")


def test_policy_is_replaceable_and_sees_the_port() -> None:
    def policy(address: IPAddress, port: int) -> str | None:
        return "port not allowed" if port != 443 else None

    g = SSRFGuard(resolver=lambda host, port: ["10.0.0.1"], policy=policy)
    g.check_url("https://internal.test/")
    with pytest.raises(BlockedURLError, match="port not allowed"):
        g.check_url("http://internal.test/")


def guarded_backend(guard: SSRFGuard) -> Any:
    """The connect-time half of the guard (it needs httpcore: the ``http`` extra)."""
    pytest.importorskip("httpcore", reason="the connect-time guard needs stabilize-core[http]")
    from stabilize.tasks.http._transport import GuardedBackend

    return GuardedBackend(guard)


def test_connect_time_check_refuses_before_any_socket() -> None:
    answers = iter([["93.184.216.34"], ["10.0.0.7"]])
    g = SSRFGuard(resolver=lambda host, port: next(answers))
    g.check_url("http://rebind.test/")  # the check sees a public address ...
    backend = guarded_backend(g)
    with pytest.raises(BlockedURLError, match=r"10\.0\.0\.7"):
        backend.connect_tcp("rebind.test", 80)  # ... the connect sees a private one
    assert backend._streams == []


def test_backend_refuses_unix_sockets() -> None:
    with pytest.raises(BlockedURLError, match="unix sockets"):
        guarded_backend(SSRFGuard()).connect_unix_socket("/var/run/docker.sock")


def test_task_refuses_a_private_url_before_connecting() -> None:
    stage = StageExecution(ref_id="s", type="http", name="s", context={"url": "http://10.0.0.1/"})
    with pytest.raises(BlockedURLError, match="private address"):
        HTTPTask().execute(stage)
