"""HTTPTask against a real HTTP server on 127.0.0.1, directly and through the engine."""

from __future__ import annotations

import email.parser
import email.policy
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from stabilize import StageExecution, TaskExecution, TaskRegistry, Workflow, WorkflowStatus
from stabilize.cancellation import CancellationToken, TaskCancelledError
from stabilize.tasks._context import TaskConfigError
from stabilize.tasks.http import BlockedURLError, HTTPTask, blocked_reason
from stabilize.tasks.http._guard import IPAddress

HANG_GUARD = 30.0
S = WorkflowStatus


# -- the server ----------------------------------------------------------------------------


@dataclass
class Server:
    """A scripted HTTP server on 127.0.0.1 (port 0) running in a thread."""

    httpd: ThreadingHTTPServer
    hits: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    sequences: dict[str, list[int]] = field(default_factory=dict)
    gate: threading.Event = field(default_factory=threading.Event)
    slow_started: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _ in self.hits]


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str = "text/plain; charset=utf-8",
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def _route(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with server.lock:
                server.hits.append((self.command, parts.path, dict(self.headers.items())))
            path = parts.path
            if path == "/json":
                self._json(200, {"hello": "world", "n": 1})
            elif path == "/text":
                self._send(200, "plain text ✓".encode())
            elif path == "/echo":
                self._json(
                    200,
                    {
                        "method": self.command,
                        "query": parse_qs(parts.query),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body.decode("utf-8", "replace"),
                    },
                )
            elif path == "/redirect":
                self._send(int(query.get("code", "302")), b"", headers={"Location": query["to"]})
            elif path.startswith("/status/"):
                self._send(int(path.rsplit("/", 1)[1]), f"status body {path}".encode())
            elif path.startswith("/sequence/"):
                with server.lock:
                    status = server.sequences[path.rsplit("/", 1)[1]].pop(0)
                self._json(status, {"status": status})
            elif path == "/slow":
                server.slow_started.set()
                server.gate.wait(HANG_GUARD)
                self._send(200, b"finally")
            elif path == "/big":
                self._send(200, b"x" * int(query["size"]))
            elif path == "/unsized":
                # No Content-Length: the body ends when the connection closes.
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                chunk = b"y" * 65536
                for _ in range(int(query["chunks"])):
                    self.wfile.write(chunk)
                self.close_connection = True
            elif path == "/download":
                size = int(query["size"])
                self._send(200, bytes(i % 251 for i in range(size)), "application/octet-stream")
            elif path == "/upload":
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
                )
                fields: dict[str, Any] = {}
                for part in message.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    fields[str(name)] = {
                        "filename": part.get_filename(),
                        "content_type": part.get_content_type(),
                        "data": payload.decode("utf-8", "replace"),
                    }
                self._json(200, fields)
            else:
                self._send(404, b"not found")

        def do_GET(self) -> None:
            self._route()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on purpose (aborts, size caps)


MakeServer = Callable[[], Server]


@pytest.fixture
def make_server() -> Iterator[MakeServer]:
    """Start scripted servers; stop them (after releasing slow handlers) at teardown."""
    servers: list[tuple[Server, threading.Thread]] = []

    def make() -> Server:
        httpd = QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        server = Server(httpd)
        httpd.RequestHandlerClass = _handler(server)
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        servers.append((server, thread))
        return server

    yield make
    for server, thread in servers:
        server.gate.set()
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(HANG_GUARD)


@pytest.fixture
def server(make_server: MakeServer) -> Server:
    return make_server()


def stage_for(context: dict[str, Any]) -> StageExecution:
    return StageExecution(ref_id="call", type="http", name="call", context=context)


def run(context: dict[str, Any], task: HTTPTask | None = None) -> Any:
    """Run HTTPTask once (the test server is on loopback: the worker allows private URLs)."""
    return (task or HTTPTask(allow_private_urls=True)).execute(stage_for(context))


# -- requests and outputs ------------------------------------------------------------------


def test_get_json_outputs(server: Server) -> None:
    result = run({"url": f"{server.base}/json", "parse_json": True})
    assert result.status is S.SUCCEEDED
    out = result.outputs
    assert out["status_code"] == 200
    assert out["body_json"] == {"hello": "world", "n": 1}
    assert json.loads(out["body"]) == {"hello": "world", "n": 1}
    assert out["url"] == f"{server.base}/json"
    assert out["content_type"] == "application/json"
    assert out["content_length"] == len(out["body"])
    assert out["headers"]["content-type"] == "application/json"
    assert out["elapsed_ms"] >= 0
    json.dumps(out)  # storable


def test_text_body_is_decoded(server: Server) -> None:
    out = run({"url": f"{server.base}/text"}).outputs
    assert out["body"] == "plain text ✓"
    assert "body_json" not in out


def test_method_headers_query_and_json_body(server: Server) -> None:
    result = run(
        {
            "url": f"{server.base}/echo",
            "method": "post",
            "headers": {"X-Trace": "abc", "X-Num": 7},
            "query": {"q": "a b", "tag": ["x", "y"], "flag": True},
            "json": {"name": "stabilize", "items": [1, 2]},
            "parse_json": True,
        }
    )
    echo = result.outputs["body_json"]
    assert echo["method"] == "POST"
    assert echo["query"] == {"q": ["a b"], "tag": ["x", "y"], "flag": ["true"]}
    assert echo["headers"]["x-trace"] == "abc"
    assert echo["headers"]["x-num"] == "7"
    assert echo["headers"]["content-type"] == "application/json"
    assert json.loads(echo["body"]) == {"name": "stabilize", "items": [1, 2]}


def test_text_body_and_form(server: Server) -> None:
    raw = run(
        {"url": f"{server.base}/echo", "method": "PUT", "body": "raw text", "parse_json": True}
    )
    assert raw.outputs["body_json"]["body"] == "raw text"
    form = run(
        {
            "url": f"{server.base}/echo",
            "method": "POST",
            "form": {"a": "1", "b": "two words"},
            "parse_json": True,
        }
    )
    echo = form.outputs["body_json"]
    assert echo["body"] == "a=1&b=two+words"
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"


def test_basic_and_bearer_auth_are_sent_and_the_echo_is_output_as_received(
    server: Server,
) -> None:
    # Issue 14: the response is data; an echoed Authorization header used to come back as
    # "***" in body_json, which no downstream stage could use.
    basic = run({"url": f"{server.base}/echo", "auth": ["user", "hunter2"], "parse_json": True})
    assert server.hits[-1][2]["Authorization"] == "Basic dXNlcjpodW50ZXIy"
    assert basic.outputs["body_json"]["headers"]["authorization"] == "Basic dXNlcjpodW50ZXIy"
    bearer = run({"url": f"{server.base}/echo", "bearer_token": "tok-123456", "parse_json": True})
    assert bearer.outputs["body_json"]["headers"]["authorization"] == "Bearer tok-123456"
    assert "tok-123456" in bearer.outputs["body"]
    assert server.hits[-1][2]["Authorization"] == "Bearer tok-123456"


def test_secrets_are_masked_in_errors_and_the_url_but_not_in_the_response(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    ok = run(
        {
            "url": f"{server.base}/echo?key=s3cr3t-value",
            "headers": {"X-Custom": "s3cr3t-value"},
            "api_key": "s3cr3t-value",
            "secrets": ["api_key"],
            "parse_json": True,
        }
    )
    assert ok.outputs["body_json"]["headers"]["x-custom"] == "s3cr3t-value"
    assert ok.outputs["url"].endswith("/echo?key=***")
    caplog.set_level("INFO")
    failed = run(
        {
            "url": f"{server.base}/status/500?key=s3cr3t-value",
            "api_key": "s3cr3t-value",
            "secrets": ["api_key"],
            "retries": 1,
            "retry_delay": 0,
            "retry_on_status": [500],
        }
    )
    assert failed.status is S.TERMINAL
    assert "s3cr3t-value" not in (failed.error or "")
    assert "key=***" in (failed.error or "")
    assert "retrying" in caplog.text
    assert "s3cr3t-value" not in caplog.text


def test_head_request(server: Server) -> None:
    out = run({"url": f"{server.base}/text", "method": "HEAD"}).outputs
    assert out["status_code"] == 200
    assert out["body"] == ""


# -- statuses --------------------------------------------------------------------------------


def test_unexpected_status_is_terminal_with_a_capped_excerpt(server: Server) -> None:
    result = run({"url": f"{server.base}/status/500"})
    assert result.status is S.TERMINAL
    assert "returned status 500, expected a 2xx status" in (result.error or "")
    assert "status body /status/500" in (result.error or "")
    big = run({"url": f"{server.base}/big?size=5000", "expected_status": 201})
    assert big.status is S.TERMINAL
    assert "expected status 201" in (big.error or "")
    assert "(truncated)" in (big.error or "")
    assert len(big.error or "") < 1000


def test_expected_status_and_continue_on_failure(server: Server) -> None:
    ok = run({"url": f"{server.base}/status/404", "expected_status": [404, 410]})
    assert ok.status is S.SUCCEEDED
    assert ok.outputs["status_code"] == 404
    soft = run({"url": f"{server.base}/status/500", "continue_on_failure": True})
    assert soft.status is S.FAILED_CONTINUE
    assert soft.outputs["status_code"] == 500
    assert soft.outputs["body"] == "status body /status/500"


def test_parse_json_on_a_non_json_body_is_a_clear_error(server: Server) -> None:
    result = run({"url": f"{server.base}/text", "parse_json": True})
    assert result.status is S.TERMINAL
    assert "not JSON (parse_json is set)" in (result.error or "")
    assert "plain text" in (result.error or "")


# -- retries --------------------------------------------------------------------------------


def test_retries_on_listed_status_then_succeeds(server: Server) -> None:
    server.sequences["a"] = [503, 502, 200]
    result = run({"url": f"{server.base}/sequence/a", "retries": 2, "retry_delay": 0})
    assert result.status is S.SUCCEEDED
    assert result.outputs["body"] == '{"status": 200}'
    assert server.paths() == ["/sequence/a"] * 3


def test_retries_exhausted_reports_the_last_response(server: Server) -> None:
    server.sequences["b"] = [503, 503, 200]
    result = run({"url": f"{server.base}/sequence/b", "retries": 1, "retry_delay": 0})
    assert result.status is S.TERMINAL
    assert "returned status 503" in (result.error or "")
    assert "(after 2 attempts)" in (result.error or "")
    assert len(server.hits) == 2


def test_status_outside_retry_on_status_is_not_retried(server: Server) -> None:
    server.sequences["c"] = [500, 200]
    result = run({"url": f"{server.base}/sequence/c", "retries": 3, "retry_delay": 0})
    assert result.status is S.TERMINAL
    assert len(server.hits) == 1
    server.sequences["d"] = [500, 200]
    result = run(
        {
            "url": f"{server.base}/sequence/d",
            "retries": 3,
            "retry_delay": 0,
            "retry_on_status": [500],
        }
    )
    assert result.status is S.SUCCEEDED


def test_non_idempotent_methods_retry_only_when_allowed(server: Server) -> None:
    server.sequences["p"] = [503, 200]
    result = run(
        {"url": f"{server.base}/sequence/p", "method": "POST", "retries": 3, "retry_delay": 0}
    )
    assert result.status is S.TERMINAL
    assert len(server.hits) == 1
    server.sequences["q"] = [503, 200]
    result = run(
        {
            "url": f"{server.base}/sequence/q",
            "method": "POST",
            "json": {},
            "retries": 3,
            "retry_delay": 0,
            "retry_non_idempotent": True,
        }
    )
    assert result.status is S.SUCCEEDED
    assert len(server.hits) == 3


def test_connection_errors_are_retried_then_fail(make_server: MakeServer) -> None:
    gone = make_server()
    url = f"{gone.base}/json"
    gone.httpd.shutdown()
    gone.httpd.server_close()  # nothing listens on the port any more
    result = run({"url": url, "retries": 2, "retry_delay": 0})
    assert result.status is S.TERMINAL
    assert "ConnectError" in (result.error or "")
    assert "(after 3 attempts)" in (result.error or "")


def test_timeout_aborts_a_slow_response(server: Server) -> None:
    result = run({"url": f"{server.base}/slow", "timeout": 0.2})
    assert result.status is S.TERMINAL
    assert "timed out" in (result.error or "")
    assert server.slow_started.is_set()


# -- size caps, downloads, uploads ---------------------------------------------------------------


def test_oversize_body_with_content_length_is_refused(server: Server) -> None:
    result = run({"url": f"{server.base}/big?size=2048", "max_response_size": 1024})
    assert result.status is S.TERMINAL
    assert "larger than max_response_size (1024 bytes)" in (result.error or "")
    fits = run({"url": f"{server.base}/big?size=1024", "max_response_size": 1024})
    assert fits.status is S.SUCCEEDED


def test_oversize_streamed_body_is_aborted(server: Server) -> None:
    result = run({"url": f"{server.base}/unsized?chunks=40", "max_response_size": 100_000})
    assert result.status is S.TERMINAL
    assert "larger than max_response_size" in (result.error or "")


def test_download_streams_to_the_file(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "out" / "data.bin"
    result = run({"url": f"{server.base}/download?size=300000", "download_to": str(target)})
    assert result.status is S.SUCCEEDED
    assert target.read_bytes() == bytes(i % 251 for i in range(300000))
    assert result.outputs["body"] is None
    assert result.outputs["content_length"] == 300000
    assert [p.name for p in target.parent.iterdir()] == ["data.bin"]


def test_download_over_the_cap_leaves_no_file(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    result = run(
        {
            "url": f"{server.base}/unsized?chunks=10",
            "download_to": str(target),
            "max_response_size": 100_000,
        }
    )
    assert result.status is S.TERMINAL
    assert "larger than max_response_size" in (result.error or "")
    assert list(tmp_path.iterdir()) == []


def test_download_of_an_error_status_writes_nothing(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    result = run({"url": f"{server.base}/status/404", "download_to": str(target)})
    assert result.status is S.TERMINAL
    assert "returned status 404" in (result.error or "")
    assert not target.exists()


def test_upload_file_as_multipart(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "report.csv"
    source.write_text("a,b\n1,2\n")
    result = run(
        {
            "url": f"{server.base}/upload",
            "method": "POST",
            "upload_file": str(source),
            "upload_form": {"kind": "report"},
            "parse_json": True,
        }
    )
    fields = result.outputs["body_json"]
    assert fields["file"] == {
        "filename": "report.csv",
        "content_type": "text/csv",
        "data": "a,b\n1,2\n",
    }
    assert fields["kind"]["data"] == "report"
    renamed = run(
        {
            "url": f"{server.base}/upload",
            "method": "POST",
            "upload_file": str(source),
            "upload_field": "attachment",
            "upload_filename": "renamed.txt",
            "parse_json": True,
        }
    )
    assert renamed.outputs["body_json"]["attachment"]["filename"] == "renamed.txt"


# -- redirects ----------------------------------------------------------------------------------


def test_redirect_is_followed(server: Server) -> None:
    result = run({"url": f"{server.base}/redirect?to=/json", "parse_json": True})
    assert result.outputs["body_json"] == {"hello": "world", "n": 1}
    assert result.outputs["url"] == f"{server.base}/json"
    assert server.paths() == ["/redirect", "/json"]


def test_303_turns_a_post_into_a_get(server: Server) -> None:
    result = run(
        {
            "url": f"{server.base}/redirect?code=303&to=/echo",
            "method": "POST",
            "json": {"a": 1},
            "parse_json": True,
        }
    )
    assert result.outputs["body_json"]["method"] == "GET"


def test_307_repeats_the_upload(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("payload")
    result = run(
        {
            "url": f"{server.base}/redirect?code=307&to=/upload",
            "method": "POST",
            "upload_file": str(source),
            "parse_json": True,
        }
    )
    assert result.outputs["body_json"]["file"]["data"] == "payload"
    assert server.paths() == ["/redirect", "/upload"]


def test_too_many_redirects(server: Server) -> None:
    target = "/redirect?to=" + "/json"
    for _ in range(11):
        target = "/redirect?to=" + target.replace("%", "%25").replace("?", "%3F").replace(
            "=", "%3D"
        ).replace("&", "%26")
    result = run({"url": f"{server.base}{target}"})
    assert result.status is S.TERMINAL
    assert "too many redirects (more than 10)" in (result.error or "")
    assert len(server.hits) == 11


# -- the SSRF guard against real sockets -----------------------------------------------------------


def test_loopback_is_refused_without_allow_private_urls(server: Server) -> None:
    with pytest.raises(BlockedURLError, match="loopback"):
        HTTPTask().execute(stage_for({"url": f"{server.base}/json"}))
    with pytest.raises(BlockedURLError, match="loopback"):
        HTTPTask().execute(stage_for({"url": f"http://localhost:{server.port}/json"}))
    assert server.hits == []


def test_a_stage_context_cannot_switch_the_guard_off(server: Server) -> None:
    # Issue 13: `allow_private_urls` was a context key, so a workflow could reach the
    # worker's loopback and private network. Only the operator's HTTPTask setting can now.
    with pytest.raises(TaskConfigError) as caught:
        HTTPTask().execute(stage_for({"url": f"{server.base}/json", "allow_private_urls": True}))
    message = str(caught.value)
    assert "context key 'allow_private_urls' cannot turn the SSRF guard off" in message
    assert 'registry.register("http", HTTPTask(allow_private_urls=True))' in message
    assert server.hits == []


def test_the_operator_setting_allows_private_urls_and_the_context_can_only_narrow_it(
    server: Server,
) -> None:
    allowing = HTTPTask(allow_private_urls=True)
    assert allowing.execute(stage_for({"url": f"{server.base}/json"})).status is S.SUCCEEDED
    granted = stage_for({"url": f"{server.base}/text", "allow_private_urls": True})
    assert allowing.execute(granted).status is S.SUCCEEDED
    with pytest.raises(BlockedURLError, match="loopback"):
        allowing.execute(stage_for({"url": f"{server.base}/echo", "allow_private_urls": False}))
    assert server.paths() == ["/json", "/text"]


def test_an_allowing_instance_registered_under_another_name_leaves_http_guarded(
    server: Server,
) -> None:
    registry = TaskRegistry()
    registry.register("internal_http", HTTPTask(allow_private_urls=True))
    internal, public = registry.get("internal_http"), registry.get("http")
    assert isinstance(internal, HTTPTask)
    assert isinstance(public, HTTPTask)
    assert internal.allow_private_urls
    assert not public.allow_private_urls
    assert internal.execute(stage_for({"url": f"{server.base}/json"})).status is S.SUCCEEDED
    with pytest.raises(BlockedURLError, match="loopback"):
        public.execute(stage_for({"url": f"{server.base}/json"}))
    assert server.paths() == ["/json"]


def _noop_stage(ref: str) -> StageExecution:
    return StageExecution(
        ref_id=ref, type="noop", name=ref, context={}, tasks=[TaskExecution.create(ref, "noop")]
    )


def test_engine_refuses_a_workflow_that_allows_private_urls_itself(
    make_engine: Any, server: Server
) -> None:
    engine = make_engine()  # the default registry: the built-in HTTPTask, guard on
    sneaky = StageExecution(
        ref_id="sneaky",
        type="http",
        name="sneaky",
        context={"url": f"{server.base}/json", "allow_private_urls": True},
        tasks=[TaskExecution.create("sneaky.http", "http")],
    )
    refused = engine.run(_workflow(sneaky))
    assert refused.status is S.TERMINAL
    details = json.dumps(refused.stage_by_ref_id("sneaky").tasks[0].task_exception_details)
    assert "HTTPTask(allow_private_urls=True)" in details
    assert server.hits == []
    # The worker goes on running other workflows.
    assert engine.run(_workflow(_noop_stage("next"))).status is S.SUCCEEDED

    registry = TaskRegistry()
    registry.register("http", HTTPTask(allow_private_urls=True))
    operator = make_engine(registry=registry)
    allowed = operator.run(_workflow(_stage("allowed", {"url": f"{server.base}/json"})))
    assert allowed.status is S.SUCCEEDED
    assert server.paths() == ["/json"]


def _public(server: Server) -> tuple[Callable[[str, int], list[str]], Any]:
    """DNS where ``public.test`` is the server, and a policy treating only it as public."""

    def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "public.test" else []

    def policy(address: IPAddress, port: int) -> str | None:
        if str(address) == "127.0.0.1" and port == server.port:
            return None
        return blocked_reason(address)

    return resolver, policy


def test_guarded_request_keeps_the_host_name(server: Server) -> None:
    resolver, policy = _public(server)
    task = HTTPTask(resolver=resolver, address_policy=policy)
    result = task.execute(
        stage_for({"url": f"http://public.test:{server.port}/echo", "parse_json": True})
    )
    assert result.status is S.SUCCEEDED
    assert result.outputs["body_json"]["headers"]["host"] == f"public.test:{server.port}"


def test_redirect_to_a_private_address_is_refused(make_server: MakeServer) -> None:
    public, internal = make_server(), make_server()
    resolver, policy = _public(public)
    task = HTTPTask(resolver=resolver, address_policy=policy)
    for target in (
        f"{internal.base}/json",
        "http://169.254.169.254/latest/meta-data/",
        f"http://[::1]:{internal.port}/json",
        "http://metadata.google.internal/computeMetadata/v1/",
        "file:///etc/passwd",
    ):
        url = f"http://public.test:{public.port}/redirect?to={target}"
        with pytest.raises(BlockedURLError, match="refusing"):
            task.execute(stage_for({"url": url}))
    assert public.paths() == ["/redirect"] * 5
    assert internal.hits == []


def test_dns_rebinding_is_caught_at_connect_time(server: Server) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)  # public when checked, loopback when connecting

    task = HTTPTask(resolver=rebinding)
    with pytest.raises(BlockedURLError, match=r"resolves to 127\.0\.0\.1: a loopback"):
        task.execute(stage_for({"url": f"http://rebind.test:{server.port}/json"}))
    assert calls == ["rebind.test", "rebind.test"]
    assert server.hits == []


# -- cancellation ---------------------------------------------------------------------------------


def test_cancellation_aborts_a_blocked_request(server: Server) -> None:
    stage = stage_for({"url": f"{server.base}/slow"})
    token = CancellationToken()
    stage._cancel_token = token
    raised: list[BaseException] = []

    def call() -> None:
        try:
            HTTPTask(allow_private_urls=True).execute(stage)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert server.slow_started.wait(HANG_GUARD)
    token.cancel()
    thread.join(HANG_GUARD)
    assert not thread.is_alive()  # returned while the server still holds the response
    assert not server.gate.is_set()
    assert len(raised) == 1
    assert isinstance(raised[0], TaskCancelledError)


def test_cancellation_during_retry_backoff(server: Server, poll: Callable[..., None]) -> None:
    server.sequences["r"] = [503, 200]
    stage = stage_for(
        {
            "url": f"{server.base}/sequence/r",
            "retries": 1,
            "retry_delay": HANG_GUARD * 10,
        }
    )
    token = CancellationToken()
    stage._cancel_token = token
    raised: list[BaseException] = []

    def call() -> None:
        try:
            HTTPTask(allow_private_urls=True).execute(stage)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    poll(lambda: bool(server.paths()), "the first attempt")
    token.cancel()
    thread.join(HANG_GUARD)
    assert not thread.is_alive()
    assert [type(e) for e in raised] == [TaskCancelledError]
    assert len(server.hits) == 1


# -- configuration errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({}, "'url' is required"),
        ({"url": "http://x", "json": {}, "body": "b"}, "'body' cannot be combined with 'json'"),
        ({"url": "http://x", "form": {}, "json": []}, "cannot be combined"),
        ({"url": "http://x", "method": "FETCH"}, "'method' must be one of"),
        ({"url": "http://x", "auth": ["only-user"]}, "'auth' must be a list of two strings"),
        ({"url": "http://x", "auth": ["u", "p"], "bearer_token": "t"}, "'auth' cannot be"),
        ({"url": "http://x", "timeout": 0}, "'timeout' must be greater than 0"),
        ({"url": "http://x", "retries": -1}, "'retries' must be at least 0"),
        ({"url": "http://x", "expected_status": "200"}, "'expected_status' must be an HTTP"),
        ({"url": "http://x", "retry_on_status": [99]}, "'retry_on_status' must be an HTTP"),
        ({"url": "http://x", "upload_file": "/no/such/file"}, "'upload_file' must name"),
        ({"url": "http://x", "headers": {"a": [1]}}, "'headers' must map strings"),
        ({"url": "http://x", "query": "a=1"}, "'query' must be a mapping"),
    ],
)
def test_bad_configuration_names_the_key(context: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskConfigError, match=message):
        HTTPTask().execute(stage_for(context))


def test_importing_the_task_does_not_import_httpx() -> None:
    code = (
        "import sys, stabilize, stabilize.tasks.http; "
        "assert 'httpx' not in sys.modules and 'httpcore' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unsupported_scheme_is_refused_even_when_private_is_allowed() -> None:
    with pytest.raises(BlockedURLError, match="only http and https"):
        run({"url": "ftp://127.0.0.1/file"})


# -- through the engine --------------------------------------------------------------------------


def _workflow(*stages: StageExecution) -> Workflow:
    return Workflow.create(application="tests", name="http", stages=list(stages))


def _stage(ref: str, context: dict[str, Any], requires: tuple[str, ...] = ()) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="http",
        name=ref,
        context=context,
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(f"{ref}.http", "http")],
    )


def test_engine_runs_http_stages_with_retries(make_engine: Any, server: Server) -> None:
    registry = TaskRegistry()
    registry.register("http", HTTPTask(allow_private_urls=True))
    engine = make_engine(registry=registry)
    server.sequences["e"] = [503, 200]
    wf = _workflow(
        _stage("fetch", {"url": f"{server.base}/json", "parse_json": True}),
        _stage(
            "flaky",
            {"url": f"{server.base}/sequence/e", "retries": 2, "retry_delay": 0},
            requires=("fetch",),
        ),
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED
    fetch, flaky = done.stage_by_ref_id("fetch"), done.stage_by_ref_id("flaky")
    assert fetch.outputs["body_json"] == {"hello": "world", "n": 1}
    assert flaky.outputs["status_code"] == 200
    assert server.paths() == ["/json", "/sequence/e", "/sequence/e"]


def test_engine_failures_terminal_and_continue(make_engine: Any, server: Server) -> None:
    registry = TaskRegistry()
    registry.register("http", HTTPTask(allow_private_urls=True))
    engine = make_engine(registry=registry)
    soft = engine.run(
        _workflow(
            _stage("soft", {"url": f"{server.base}/status/500", "continue_on_failure": True}),
            _stage("after", {"url": f"{server.base}/text"}, requires=("soft",)),
        )
    )
    assert soft.stage_by_ref_id("soft").status is S.FAILED_CONTINUE
    assert soft.stage_by_ref_id("after").status is S.SUCCEEDED
    hard = engine.run(_workflow(_stage("hard", {"url": f"{server.base}/status/500"})))
    assert hard.status is S.TERMINAL
    blocked = engine.run(
        _workflow(_stage("ssrf", {"url": f"{server.base}/json", "allow_private_urls": False}))
    )
    assert blocked.status is S.TERMINAL
    details = blocked.stage_by_ref_id("ssrf").tasks[0].task_exception_details
    assert "BlockedURLError" in json.dumps(details)


def test_engine_cancel_aborts_a_running_request(make_engine: Any, server: Server) -> None:
    registry = TaskRegistry()
    registry.register("http", HTTPTask(allow_private_urls=True))
    engine = make_engine(registry=registry)
    wf = _workflow(_stage("slow", {"url": f"{server.base}/slow"}))
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    assert server.slow_started.wait(HANG_GUARD)
    engine.orchestrator.cancel(wf.id, "tester", "enough")
    # The task's thread ends while the server still holds the response back.
    assert engine.processor.stop(wait=True, timeout=HANG_GUARD) == 0
    assert not server.gate.is_set()
    assert engine.store.retrieve(wf.id).status is S.CANCELED


def test_upstream_response_outputs_do_not_become_request_settings(
    make_engine: Any, server: Server
) -> None:
    # An HTTP stage outputs `headers`, `body` and `url`; they reach the next stage's
    # context, but the next request is built from that stage's own settings only.
    registry = TaskRegistry()
    registry.register("http", HTTPTask(allow_private_urls=True))
    engine = make_engine(registry=registry)
    wf = _workflow(
        _stage("first", {"url": f"{server.base}/text"}),
        _stage("second", {"url": f"{server.base}/echo", "json": {"n": 2}}, requires=("first",)),
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED
    echoed = json.loads(done.stage_by_ref_id("second").outputs["body"])
    assert json.loads(echoed["body"]) == {"n": 2}  # the upstream `body` was not sent
    assert server.paths() == ["/text", "/echo"]
