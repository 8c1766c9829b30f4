"""The built-in HTTP task and its SSRF guard (httpx is imported only when a request runs)."""

from __future__ import annotations

from stabilize.tasks.http._guard import (
    AddressPolicy,
    BlockedURLError,
    Resolver,
    SSRFGuard,
    blocked_reason,
    default_policy,
    system_resolver,
)
from stabilize.tasks.http._task import HTTPTask

__all__ = [
    "AddressPolicy",
    "BlockedURLError",
    "HTTPTask",
    "Resolver",
    "SSRFGuard",
    "blocked_reason",
    "default_policy",
    "system_resolver",
]
