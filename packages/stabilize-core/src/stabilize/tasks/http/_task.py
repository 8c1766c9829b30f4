"""HTTPTask: one HTTP request (with retries, redirects, upload or download) per stage.

httpx is imported only when the task runs (it is the ``http`` extra of stabilize-core), so
``import stabilize`` works without it. See ``docs/tasks/http.md`` for every key and output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from stabilize.cancellation import CancellationToken, TaskCancelledError
from stabilize.models.stage import StageExecution
from stabilize.tasks._context import TaskConfigError, cap_output, mask_secrets
from stabilize.tasks.http._config import NAME, HttpConfig, read_config
from stabilize.tasks.http._guard import PRIVATE_HINT, AddressPolicy, Resolver, SSRFGuard
from stabilize.tasks.interface import Task
from stabilize.tasks.result import TaskResult

if TYPE_CHECKING:
    import httpx

    from stabilize.tasks.http._transport import GuardedBackend

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
EXCERPT_BYTES = 500
CHUNK_SIZE = 64 * 1024
WATCH_INTERVAL = 0.05

_INSTALL_HINT = 'HTTPTask needs httpx: pip install "stabilize-core[http]"'

# The secrets of the request this thread is sending: httpx logs each request's full URL
# at INFO on its own logger, where our masking never ran (issue 14).
_sending = threading.local()


class _MaskSecrets(logging.Filter):
    """Masks the current request's secrets in what httpx logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets: list[str] | None = getattr(_sending, "secrets", None)
        if secrets:
            record.msg = mask_secrets(record.getMessage(), secrets)
            record.args = None
        return True


logging.getLogger("httpx").addFilter(_MaskSecrets())


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - the dev environment has httpx
        raise ImportError(_INSTALL_HINT) from exc
    return httpx


class _Failed(Exception):
    """The request failed; with ``retryable`` it may be tried again."""

    def __init__(
        self, message: str, *, retryable: bool = False, outputs: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.outputs = outputs


class _Watch:
    """Aborts the attempt's sockets on cancellation or when the overall timeout passes."""

    def __init__(
        self, backend: GuardedBackend, token: CancellationToken | None, seconds: float
    ) -> None:
        self.reason: str | None = None
        self._backend = backend
        self._token = token
        self._deadline = time.monotonic() + seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-task-watch", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._token is not None and self._token.is_cancelled:
                self._trip("canceled")
                return
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self._trip("timeout")
                return
            self._stop.wait(min(WATCH_INTERVAL, remaining))

    def _trip(self, reason: str) -> None:
        self.reason = reason
        self._backend.abort()

    def check(self) -> None:
        """Raise if the attempt was aborted (between chunks)."""
        if self.reason is not None:
            raise _Aborted(self.reason)


class _Aborted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HTTPTask(Task):
    """Make an HTTP request described by the stage context (see ``docs/tasks/http.md``).

    Args:
        resolver: Name resolution used by the SSRF guard (default: the system resolver).
            Tests use it to play DNS.
        address_policy: Which addresses the guard refuses (default: every non-public one).
        allow_private_urls: Let requests reach private, loopback and metadata addresses
            (the scheme check stays). This is the worker operator's decision, made where the
            task is registered (``registry.register("http",
            HTTPTask(allow_private_urls=True))``); a stage context may only turn it back
            off for itself with ``allow_private_urls: false``.
    """

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        address_policy: AddressPolicy | None = None,
        allow_private_urls: bool = False,
    ) -> None:
        self._resolver = resolver
        self._policy = address_policy
        self.allow_private_urls = allow_private_urls

    @property
    def aliases(self) -> list[str]:
        """Also registered as ``http``, unless it allows private URLs.

        An instance that allows private URLs answers only the names its operator registers
        it under: registering it as ``internal_http`` must not open ``http`` as well.
        """
        return [] if self.allow_private_urls else ["http"]

    def execute(self, stage: StageExecution) -> TaskResult:
        """Send the request, follow redirects, retry, and report the response.

        Args:
            stage: The stage; its own context (not its ancestors' outputs) holds ``url``
                and the other keys.

        Returns:
            A success with the response's outputs, or a TERMINAL (``failed_continue``
            with ``continue_on_failure``) result naming what failed.

        Raises:
            TaskConfigError: A context key is missing or malformed, or tries to turn the
                private-address guard off.
            TaskCancelledError: The stage was canceled during the request or a retry's wait.
            ImportError: httpx is not installed (the message says what to install).
        """
        # Settings come from the stage's own context: an upstream stage's outputs (an HTTP
        # stage's `headers`, `body`, `url`) must not turn into this request's settings.
        cfg = read_config(stage.own_context())
        # Issue 13: whoever writes a workflow must not be able to switch the guard off, so
        # the context key can only narrow the worker's setting.
        if cfg.allow_private_urls and not self.allow_private_urls:
            raise TaskConfigError(
                f"{NAME}: context key 'allow_private_urls' cannot turn the SSRF guard off: "
                f"{PRIVATE_HINT}; remove the key from the stage context"
            )
        hx = _import_httpx()
        guard = SSRFGuard(
            allow_private=self.allow_private_urls and cfg.allow_private_urls is not False,
            resolver=self._resolver,
            policy=self._policy,
        )
        _sending.secrets = cfg.secrets
        try:
            return self._run(hx, cfg, guard, stage)
        finally:
            _sending.secrets = None

    def _run(self, hx: Any, cfg: HttpConfig, guard: SSRFGuard, stage: StageExecution) -> TaskResult:
        token = stage._cancel_token
        attempt = 0
        while True:
            attempt += 1
            try:
                can_retry = cfg.may_retry and attempt <= cfg.retries
                outputs = self._attempt(hx, cfg, guard, token, can_retry)
            except _Aborted as exc:
                if exc.reason == "canceled":
                    raise TaskCancelledError(f"stage {stage.ref_id!r} was canceled") from None
                failure = _Failed(
                    f"{NAME}: {cfg.method} {mask_secrets(cfg.url, cfg.secrets)} timed out after "
                    f"{cfg.timeout:g}s",
                    retryable=True,
                )
            except _Failed as exc:
                failure = exc
            else:
                return TaskResult.success(outputs=outputs)
            if failure.retryable and can_retry:
                delay = cfg.retry_delay * 2 ** (attempt - 1)
                log.info(
                    "%s: attempt %d of %d failed, retrying in %.3gs: %s",
                    NAME, attempt, cfg.retries + 1, delay, mask_secrets(str(failure), cfg.secrets),
                )  # fmt: skip
                if _wait(token, delay):
                    raise TaskCancelledError(f"stage {stage.ref_id!r} was canceled")
                continue
            message = mask_secrets(str(failure), cfg.secrets)
            if attempt > 1:
                message = f"{message} (after {attempt} attempts)"
            if cfg.continue_on_failure:
                return TaskResult.failed_continue(message, outputs=failure.outputs or {})
            return TaskResult.terminal(message)

    # -- one attempt: every redirect hop, then the body --------------------------------

    def _attempt(
        self,
        hx: Any,
        cfg: HttpConfig,
        guard: SSRFGuard,
        token: CancellationToken | None,
        can_retry: bool,
    ) -> dict[str, Any]:
        from stabilize.tasks.http._transport import GuardedBackend, GuardedTransport

        backend = GuardedBackend(guard)
        transport = GuardedTransport(backend, verify=cfg.verify_ssl)
        started = time.monotonic()
        with (
            contextlib.ExitStack() as stack,
            _Watch(backend, token, cfg.timeout) as watch,
            hx.Client(
                transport=transport,
                follow_redirects=False,
                trust_env=False,
                timeout=hx.Timeout(cfg.timeout),
            ) as client,
        ):
            try:
                request = self._build(hx, client, cfg, stack)
                response = self._send(hx, client, request, cfg, guard, watch)
                with contextlib.closing(response):
                    return self._finish(response, cfg, watch, started, can_retry)
            except (_Failed, _Aborted):
                raise
            except Exception as exc:
                watch.check()
                if isinstance(exc, hx.TimeoutException):
                    raise _Failed(
                        f"{NAME}: {cfg.method} {cfg.url} timed out: {exc}", retryable=True
                    ) from exc
                if isinstance(exc, hx.NetworkError | hx.RemoteProtocolError):
                    raise _Failed(
                        f"{NAME}: {cfg.method} {cfg.url} failed: {type(exc).__name__}: {exc}",
                        retryable=True,
                    ) from exc
                if isinstance(exc, hx.HTTPError | hx.InvalidURL):
                    raise _Failed(
                        f"{NAME}: {cfg.method} {cfg.url} failed: {type(exc).__name__}: {exc}"
                    ) from exc
                raise

    def _build(
        self, hx: Any, client: httpx.Client, cfg: HttpConfig, stack: contextlib.ExitStack
    ) -> httpx.Request:
        kwargs: dict[str, Any] = {"headers": cfg.headers}
        if cfg.query:
            kwargs["params"] = cfg.query
        if cfg.has_json:
            kwargs["json"] = cfg.json_body
        elif cfg.content is not None:
            kwargs["content"] = cfg.content.encode()
        elif cfg.form is not None:
            kwargs["data"] = cfg.form
        elif cfg.upload_file is not None:
            handle = stack.enter_context(cfg.upload_file.open("rb"))
            filename = cfg.upload_filename or cfg.upload_file.name
            kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            kwargs["files"] = {cfg.upload_field: (filename, handle, kind)}
            if cfg.upload_form:
                kwargs["data"] = cfg.upload_form
        try:
            request: httpx.Request = client.build_request(cfg.method, cfg.url, **kwargs)
        except hx.InvalidURL as exc:
            raise _Failed(f"{NAME}: invalid url {cfg.url!r}: {exc}") from exc
        return request

    def _send(
        self,
        hx: Any,
        client: httpx.Client,
        request: httpx.Request,
        cfg: HttpConfig,
        guard: SSRFGuard,
        watch: _Watch,
    ) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            guard.check_url(str(request.url))
            watch.check()
            response: httpx.Response = client.send(request, stream=True)
            next_request = response.next_request
            if next_request is None:
                return response
            response.close()
            log.debug("%s: %s redirected to %s", NAME, request.url, next_request.url)
            request = next_request
        raise _Failed(
            f"{NAME}: {cfg.method} {cfg.url}: too many redirects (more than {MAX_REDIRECTS})"
        )

    # -- the final response -------------------------------------------------------------

    def _finish(
        self,
        response: httpx.Response,
        cfg: HttpConfig,
        watch: _Watch,
        started: float,
        can_retry: bool,
    ) -> dict[str, Any]:
        status = response.status_code
        wanted = cfg.expected_status
        expected = status in wanted if wanted is not None else 200 <= status < 300
        if not expected and can_retry and status in cfg.retry_on_status:
            raise _Failed(self._status_error(cfg, response, b""), retryable=True)
        declared = _declared_length(response)
        if declared is not None and declared > cfg.max_response_size:
            raise _Failed(self._too_big(cfg, response))
        if expected and cfg.download_to is not None:
            size = self._download(response, cfg, watch)
            return self._outputs(response, cfg, None, size, started)
        if not expected and cfg.download_to is not None:
            excerpt = _read_capped(response, EXCERPT_BYTES, watch)
            raise _Failed(self._status_error(cfg, response, excerpt))
        data = self._read_body(response, cfg, watch)
        outputs = self._outputs(response, cfg, data, len(data), started)
        if not expected:
            raise _Failed(self._status_error(cfg, response, data), outputs=outputs)
        return outputs

    def _outputs(
        self,
        response: httpx.Response,
        cfg: HttpConfig,
        data: bytes | None,
        size: int,
        started: float,
    ) -> dict[str, Any]:
        # The response is data the next stage works with: it is output as received, with
        # no secret masked (issue 14: an echoed Authorization header came back as "***").
        # Only the request's own URL is masked, and every log line and error message.
        outputs: dict[str, Any] = {
            "status_code": response.status_code,
            "headers": dict(response.headers.items()),
            "url": mask_secrets(str(response.url), cfg.secrets),
            "content_type": response.headers.get("content-type"),
            "content_length": size,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            "body": None,
        }
        if data is not None:
            text = data.decode(_encoding(response), errors="replace")
            outputs["body"] = text
            if cfg.parse_json:
                try:
                    parsed = json.loads(text) if text.strip() else None
                except ValueError as exc:
                    excerpt, cut = cap_output(data, EXCERPT_BYTES)
                    raise _Failed(
                        f"{NAME}: the response body is not JSON (parse_json is set): {exc}; "
                        f"body: {excerpt!r}{' (truncated)' if cut else ''}",
                        outputs=outputs,
                    ) from exc
                outputs["body_json"] = parsed
        return outputs

    def _read_body(self, response: httpx.Response, cfg: HttpConfig, watch: _Watch) -> bytes:
        buffer = bytearray()
        for chunk in response.iter_bytes(CHUNK_SIZE):
            watch.check()
            buffer += chunk
            if len(buffer) > cfg.max_response_size:
                raise _Failed(self._too_big(cfg, response))
        watch.check()
        return bytes(buffer)

    def _download(self, response: httpx.Response, cfg: HttpConfig, watch: _Watch) -> int:
        target = cfg.download_to
        assert target is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        size = 0
        try:
            with temp.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    watch.check()
                    size += len(chunk)
                    if size > cfg.max_response_size:
                        raise _Failed(self._too_big(cfg, response))
                    out.write(chunk)
                watch.check()
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return size

    def _status_error(self, cfg: HttpConfig, response: httpx.Response, data: bytes) -> str:
        wanted = (
            "a 2xx status"
            if cfg.expected_status is None
            else f"status {', '.join(str(s) for s in sorted(cfg.expected_status))}"
        )
        excerpt, cut = cap_output(data, EXCERPT_BYTES)
        body = f"; body: {excerpt!r}{' (truncated)' if cut else ''}" if data else ""
        return (
            f"{NAME}: {cfg.method} {response.url} returned status {response.status_code}, "
            f"expected {wanted}{body}"
        )

    def _too_big(self, cfg: HttpConfig, response: httpx.Response) -> str:
        return (
            f"{NAME}: the response of {cfg.method} {response.url} is larger than "
            f"max_response_size ({cfg.max_response_size} bytes); aborted"
        )


def _declared_length(response: httpx.Response) -> int | None:
    if "content-encoding" in response.headers:
        return None  # the cap applies to the decoded body
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _read_capped(response: httpx.Response, limit: int, watch: _Watch) -> bytes:
    buffer = bytearray()
    for chunk in response.iter_bytes(CHUNK_SIZE):
        watch.check()
        buffer += chunk
        if len(buffer) > limit:
            break
    return bytes(buffer)


def _encoding(response: httpx.Response) -> str:
    name = response.charset_encoding or "utf-8"
    try:
        b"".decode(name)
    except LookupError:
        return "utf-8"
    return name


def _wait(token: CancellationToken | None, seconds: float) -> bool:
    """Wait between attempts; True when cancellation was requested meanwhile."""
    if seconds <= 0:
        return token is not None and token.is_cancelled
    if token is None:
        threading.Event().wait(seconds)
        return False
    return token.wait(seconds)
