"""LLMClient: the OpenAI and Ollama chat APIs over httpx, with errors the engine understands."""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import httpx

from stabilize.errors import TransientError
from stabilize.llm._types import ChatMessage, ChatResponse, LLMError, as_message
from stabilize.llm._wire import (
    APIS,
    StreamAssembler,
    error_message,
    parse_response,
    path_for,
    request_body,
)
from stabilize.tasks import mask_secrets

OPENAI_BASE_URL = "https://api.openai.com/v1"
OLLAMA_BASE_URL = "http://localhost:11434"

MessageLike = ChatMessage | Mapping[str, Any]


class LLMClient:
    """A chat model behind the OpenAI chat-completions API or the Ollama chat API.

    Errors are raised so that a task using the client is retried or failed correctly:
    429, 5xx, timeouts and connection errors raise :class:`~stabilize.TransientError`
    (with ``retry_after`` from a ``Retry-After`` header); other 4xx raise
    :class:`LLMError`, a permanent error carrying the provider's message. The API key is
    never logged, shown in ``repr`` or included in an error message.

    Args:
        model: The model name, e.g. ``"gpt-4o-mini"`` or ``"llama3.2"``.
        base_url: The API root. Default for ``openai``: ``OPENAI_BASE_URL`` or
            ``https://api.openai.com/v1``; for ``ollama``: ``OLLAMA_HOST`` or
            ``http://localhost:11434``.
        api: ``"openai"`` (any OpenAI-compatible gateway) or ``"ollama"``.
        api_key: Sent as a Bearer token. Default: ``OPENAI_API_KEY`` or ``OLLAMA_API_KEY``
            from the environment (a local Ollama needs none).
        timeout: Seconds to wait for the provider (connect, read and write each).
        default_options: Options sent with every call (``max_tokens``, ``top_p``, ...);
            per-call options override them.
        transport: An httpx transport to use instead of the network
            (``httpx.MockTransport`` in tests, :class:`ScriptedModel` offline).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api: Literal["openai", "ollama"] | str = "openai",
        api_key: str | None = None,
        timeout: float = 120.0,
        default_options: Mapping[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {list(APIS)}, not {api!r}")
        self.model = model
        self.api = api
        self.base_url = (base_url or default_base_url(api)).rstrip("/")
        self.timeout = timeout
        self.default_options = dict(default_options or {})
        self._api_key = api_key if api_key is not None else _env_key(api)
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout), headers=headers, transport=transport
        )

    def __repr__(self) -> str:
        return f"LLMClient(model={self.model!r}, base_url={self.base_url!r}, api={self.api!r})"

    @property
    def url(self) -> str:
        """The chat endpoint this client posts to."""
        return self.base_url + path_for(self.api)

    def chat(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[Mapping[str, Any]] | None = None,
        temperature: float | None = None,
        *,
        model: str | None = None,
        **options: Any,
    ) -> ChatResponse:
        """Send a conversation and return the model's answer.

        Args:
            messages: The conversation (:class:`ChatMessage` or ``{"role", "content"}``).
            tools: Tool schemas in the OpenAI format (:meth:`ToolRegistry.schemas`).
            temperature: Sampling temperature.
            model: Use another model than the client's for this call.
            **options: Provider options (``max_tokens``, ``seed``, ``format`` ...).

        Raises:
            TransientError: rate limited, server error, timeout or connection failure.
            LLMError: any other refusal, with the provider's message.
        """
        body = self._body(messages, tools, temperature, model, options, stream=False)
        response = self._send(body)
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LLMError(
                f"{self._where(model)} answered with something that is not JSON", status_code=200
            ) from exc
        if not isinstance(data, dict):
            raise LLMError(f"{self._where(model)} answered with unexpected JSON", status_code=200)
        return parse_response(self.api, data)

    def stream(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[Mapping[str, Any]] | None = None,
        temperature: float | None = None,
        *,
        model: str | None = None,
        **options: Any,
    ) -> Iterator[str | ChatResponse]:
        """Like :meth:`chat`, but yield the text as it arrives, then the whole response.

        Every item but the last is a text delta (``str``); the last is the
        :class:`ChatResponse` with the joined text, tool calls and usage. OpenAI streams
        server-sent events (``data: {...}`` lines ending with ``data: [DONE]``), Ollama
        newline-delimited JSON.

        Args:
            messages: The conversation (:class:`ChatMessage` or ``{"role", "content"}``).
            tools: Tool schemas in the OpenAI format (:meth:`ToolRegistry.schemas`).
            temperature: Sampling temperature.
            model: Use another model than the client's for this call.
            **options: Provider options (``max_tokens``, ``seed``, ``format`` ...).

        Yields:
            Text deltas (``str``), then one :class:`ChatResponse`.

        Raises:
            TransientError: rate limited, server error, timeout or connection failure.
            LLMError: any other refusal, or a stream that cannot be parsed.
        """
        body = self._body(messages, tools, temperature, model, options, stream=True)
        assembler = StreamAssembler(self.api)
        where = self._where(model)
        try:
            with self._http.stream("POST", self.url, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._status_error(response, where)
                for line in response.iter_lines():
                    chunk = _stream_chunk(self.api, line, where)
                    if chunk is None:
                        continue
                    if isinstance(chunk, str):  # the end marker
                        break
                    delta = assembler.feed(chunk)
                    if delta:
                        yield delta
        except httpx.TransportError as exc:
            raise self._transport_error(exc, where) from None
        yield assembler.finish()

    def close(self) -> None:
        """Close the underlying HTTP connections."""
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _body(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[Mapping[str, Any]] | None,
        temperature: float | None,
        model: str | None,
        options: Mapping[str, Any],
        stream: bool,
    ) -> dict[str, Any]:
        merged = {**self.default_options, **options}
        msgs = [as_message(m) for m in messages]
        return request_body(self.api, model or self.model, msgs, tools, temperature, merged, stream)

    def _where(self, model: str | None) -> str:
        return f"{self.api} model {model or self.model!r} at {self.base_url}"

    def _send(self, body: dict[str, Any]) -> httpx.Response:
        where = self._where(body.get("model"))
        try:
            response = self._http.post(self.url, json=body)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, where) from None
        if response.status_code >= 400:
            raise self._status_error(response, where)
        return response

    def _mask(self, text: str) -> str:
        return mask_secrets(text, [self._api_key] if self._api_key else [])

    def _transport_error(self, exc: httpx.TransportError, where: str) -> TransientError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
        detail = self._mask(str(exc) or type(exc).__name__)
        return TransientError(f"{where} {kind}: {detail}", error_code=type(exc).__name__)

    def _status_error(self, response: httpx.Response, where: str) -> TransientError | LLMError:
        status = response.status_code
        detail = self._mask(error_message(response.content)) or response.reason_phrase
        message = f"{where} answered HTTP {status}: {detail}"
        if status == 429 or status >= 500 or status == 408:
            return TransientError(
                message, code=status, retry_after=_retry_after(response.headers.get("Retry-After"))
            )
        return LLMError(message, status_code=status)


def _stream_chunk(api: str, line: str, where: str) -> dict[str, Any] | str | None:
    """Decode one line of a stream: a chunk, ``"done"``, or None to skip it."""
    line = line.strip()
    if not line:
        return None
    if api == "openai":
        if not line.startswith("data:"):
            return None  # SSE comments, event names and keep-alives
        line = line[5:].strip()
        if line == "[DONE]":
            return "done"
    try:
        chunk = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LLMError(f"{where} streamed a line that is not JSON: {line[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise LLMError(f"{where} streamed unexpected JSON: {line[:200]!r}")
    if chunk.get("error"):
        raise TransientError(f"{where} failed while streaming: {error_message(line.encode())}")
    return chunk


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def default_base_url(api: str) -> str:
    """The endpoint a client of ``api`` talks to unless given one (from the environment)."""
    if api == "openai":
        return os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
    host = os.environ.get("OLLAMA_HOST") or OLLAMA_BASE_URL
    return host if "://" in host else f"http://{host}"


def _env_key(api: str) -> str | None:
    name = "OPENAI_API_KEY" if api == "openai" else "OLLAMA_API_KEY"
    return os.environ.get(name) or None
