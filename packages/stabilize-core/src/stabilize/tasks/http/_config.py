"""HTTPTask's configuration: every context key, validated up front (see docs/tasks/http.md)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabilize.tasks._context import ContextReader, secret_values

NAME = "HTTPTask"
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
DEFAULT_MAX_RESPONSE_SIZE = 10 * 1024 * 1024
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"}
)
"""Request headers whose values are always masked in outputs and errors."""


@dataclass
class HttpConfig:
    """The validated context of one HTTPTask run."""

    method: str
    url: str
    headers: dict[str, str]
    query: list[tuple[str, str]]
    json_body: Any = None
    has_json: bool = False
    content: str | None = None
    form: dict[str, str] | None = None
    timeout: float = 30.0
    retries: int = 0
    retry_delay: float = 1.0
    retry_on_status: frozenset[int] = frozenset({502, 503, 504})
    retry_non_idempotent: bool = False
    expected_status: frozenset[int] | None = None
    parse_json: bool = False
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    download_to: Path | None = None
    upload_file: Path | None = None
    upload_field: str = "file"
    upload_form: dict[str, str] = field(default_factory=dict)
    upload_filename: str | None = None
    verify_ssl: bool = True
    allow_private_urls: bool | None = None
    """The context's ``allow_private_urls`` (None when absent): it can only narrow the worker's."""
    continue_on_failure: bool = False
    secrets: list[str] = field(default_factory=list)

    @property
    def may_retry(self) -> bool:
        return self.method in IDEMPOTENT or self.retry_non_idempotent


def read_config(context: dict[str, Any]) -> HttpConfig:
    r = ContextReader(context, NAME)
    method = r.text("method", "GET").upper()
    if method not in METHODS:
        raise r.error("method", f"must be one of {list(METHODS)}, not {r.raw('method')!r}")
    url = r.text("url")
    if not url.strip():
        raise r.error("url", "must not be empty")
    headers: dict[str, str] = r.text_map("headers", {})
    cfg = HttpConfig(method=method, url=url.strip(), headers=headers, query=_query(r))

    bodies = [k for k in ("json", "body", "form", "upload_file") if r.has(k)]
    if len(bodies) > 1:
        raise r.error(bodies[1], f"cannot be combined with {bodies[0]!r}: give only one of them")
    if r.has("json"):
        cfg.json_body, cfg.has_json = r.raw("json"), True
    if r.has("body"):
        body = r.raw("body")
        if isinstance(body, dict | list):
            cfg.json_body, cfg.has_json = body, True
        elif isinstance(body, str):
            cfg.content = body
        else:
            raise r.error("body", f"must be a string (or JSON data), not {body!r}")
    if r.has("form"):
        cfg.form = r.text_map("form")

    auth = r.raw("auth", None)
    if auth is not None:
        if r.has("bearer_token"):
            raise r.error("auth", "cannot be combined with 'bearer_token': give only one of them")
        pair = isinstance(auth, list | tuple) and len(auth) == 2
        if not (pair and all(isinstance(a, str) for a in auth)):
            raise r.error("auth", "must be a list of two strings: [user, password]")
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        cfg.headers["Authorization"] = f"Basic {token}"
        cfg.secrets.append(auth[1])
    if r.has("bearer_token"):
        bearer = r.text("bearer_token")
        cfg.headers["Authorization"] = f"Bearer {bearer}"
        cfg.secrets.append(bearer)

    cfg.timeout = float(r.number("timeout", 30.0, minimum=0))
    if cfg.timeout <= 0:
        raise r.error("timeout", "must be greater than 0")
    cfg.retries = r.number("retries", 0, minimum=0, integer=True)
    cfg.retry_delay = float(r.number("retry_delay", 1.0, minimum=0))
    cfg.retry_on_status = frozenset(_status_list(r, "retry_on_status", [502, 503, 504]))
    cfg.retry_non_idempotent = r.flag("retry_non_idempotent", False)
    if r.has("expected_status"):
        cfg.expected_status = frozenset(_status_list(r, "expected_status", None))
    cfg.parse_json = r.flag("parse_json", False)
    cfg.max_response_size = r.number(
        "max_response_size", DEFAULT_MAX_RESPONSE_SIZE, minimum=1, integer=True
    )
    if r.has("download_to"):
        cfg.download_to = Path(r.text("download_to"))
        if cfg.parse_json:
            raise r.error("parse_json", "cannot be combined with 'download_to'")
    if r.has("upload_file"):
        path = Path(r.text("upload_file"))
        if not path.is_file():
            raise r.error("upload_file", f"must name an existing file; {str(path)!r} is not one")
        cfg.upload_file = path
        cfg.upload_field = r.text("upload_field", "file")
        cfg.upload_form = r.text_map("upload_form", {})
        cfg.upload_filename = r.text("upload_filename", None)
    cfg.verify_ssl = r.flag("verify_ssl", True)
    if r.has("allow_private_urls"):
        cfg.allow_private_urls = r.flag("allow_private_urls", False)
    cfg.continue_on_failure = r.flag("continue_on_failure", False)
    cfg.secrets.extend(secret_values(r))
    cfg.secrets.extend(v for k, v in cfg.headers.items() if k.lower() in SENSITIVE_HEADERS)
    return cfg


def _query(r: ContextReader) -> list[tuple[str, str]]:
    value = r.raw("query", {})
    if not isinstance(value, dict):
        raise r.error("query", f"must be a mapping, not {type(value).__name__}")
    pairs: list[tuple[str, str]] = []
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        for one in items:
            if not isinstance(key, str) or isinstance(one, dict | list) or one is None:
                raise r.error(
                    "query", f"must map names to strings, numbers or lists; {key!r} does not"
                )
            pairs.append((key, _scalar(one)))
    return pairs


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _status_list(r: ContextReader, key: str, default: list[int] | None) -> list[int]:
    value = r.raw(key, default)
    items = value if isinstance(value, list) else [value]
    if not items or not all(
        isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 for v in items
    ):
        raise r.error(key, f"must be an HTTP status code or a list of them, not {value!r}")
    return list(items)
