"""LLMClient against a real local server (both APIs) and transport fakes for error paths."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stabilize import TransientError
from stabilize.llm import (
    ChatMessage,
    ChatResponse,
    LLMClient,
    LLMError,
    Reply,
    ScriptedModel,
    ToolCall,
)

APIS = ["openai", "ollama"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "account_balance",
            "description": "Return the balance.",
            "parameters": {
                "type": "object",
                "properties": {"user_id": {"type": "string"}},
                "required": ["user_id"],
            },
        },
    }
]


OPEN: list[LLMClient] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def client_for(server: Any, api: str, **kwargs: Any) -> LLMClient:
    base = server.openai_url if api == "openai" else server.url
    client = LLMClient("test-model", base_url=base, api=api, **kwargs)
    OPEN.append(client)
    return client


@pytest.mark.parametrize("api", APIS)
def test_chat_returns_text_and_usage(model_server: Any, api: str) -> None:
    model_server.script(
        [dict(content="A token bucket limits rates.", prompt_tokens=11, completion_tokens=6)]
    )
    with client_for(model_server, api) as client:
        response = client.chat(
            [ChatMessage("system", "Be brief."), {"role": "user", "content": "What?"}],
            temperature=0.2,
            max_tokens=50,
        )
    assert response.content == "A token bucket limits rates."
    assert response.tool_calls == []
    assert response.usage.to_dict() == {
        "prompt_tokens": 11,
        "completion_tokens": 6,
        "total_tokens": 17,
        "calls": 1,
    }
    (req,) = model_server.requests
    assert req.api == api
    assert req.body["model"] == "test-model"
    assert req.body["stream"] is False
    assert [m["role"] for m in req.body["messages"]] == ["system", "user"]
    if api == "openai":
        assert req.body["temperature"] == 0.2
        assert req.body["max_tokens"] == 50
    else:
        assert req.body["options"] == {"max_tokens": 50, "temperature": 0.2}


@pytest.mark.parametrize("api", APIS)
def test_tool_calls_round_trip(model_server: Any, api: str) -> None:
    model_server.script([dict(tool_calls=[("account_balance", {"user_id": "u_42"})]), "It is 42."])
    with client_for(model_server, api) as client:
        messages: list[ChatMessage] = [ChatMessage("user", "Balance of u_42?")]
        first = client.chat(messages, tools=TOOLS)
        assert [(c.name, c.arguments) for c in first.tool_calls] == [
            ("account_balance", {"user_id": "u_42"})
        ]
        call = first.tool_calls[0]
        messages += [
            first.message(),
            ChatMessage("tool", "42", tool_call_id=call.id, name=call.name),
        ]
        second = client.chat(messages, tools=TOOLS)
    assert second.content == "It is 42."
    sent = model_server.requests[1].body
    assert sent["tools"] == TOOLS
    assistant, tool_msg = sent["messages"][1], sent["messages"][2]
    if api == "openai":
        # OpenAI: arguments travel as a JSON string, tool results name the call id.
        (wire_call,) = assistant["tool_calls"]
        assert wire_call["type"] == "function"
        assert json.loads(wire_call["function"]["arguments"]) == {"user_id": "u_42"}
        assert tool_msg == {"role": "tool", "content": "42", "tool_call_id": call.id}
    else:
        # Ollama: arguments are an object; tool results carry the tool's name.
        assert assistant["tool_calls"] == [
            {"function": {"name": "account_balance", "arguments": {"user_id": "u_42"}}}
        ]
        assert tool_msg["role"] == "tool"
        assert tool_msg["content"] == "42"
        assert tool_msg["tool_name"] == "account_balance"


@pytest.mark.parametrize("api", APIS)
def test_stream_yields_deltas_then_response(model_server: Any, api: str) -> None:
    text = "Tokens refill at a fixed rate; requests spend them."
    model_server.script([dict(content=text, prompt_tokens=9, completion_tokens=12)])
    with client_for(model_server, api) as client:
        items = list(client.stream([{"role": "user", "content": "Explain."}]))
    *deltas, final = items
    assert all(isinstance(d, str) for d in deltas)
    assert len(deltas) > 1
    assert "".join(str(d) for d in deltas) == text
    assert isinstance(final, ChatResponse)
    assert final.content == text
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (9, 12)
    assert model_server.requests[0].body["stream"] is True


@pytest.mark.parametrize("api", APIS)
def test_stream_assembles_tool_calls(model_server: Any, api: str) -> None:
    args = {"user_id": "u_42", "currency": "EUR"}
    model_server.script([dict(tool_calls=[("account_balance", args), ("audit", {"n": 1})])])
    with client_for(model_server, api) as client:
        *deltas, final = list(client.stream([{"role": "user", "content": "go"}], tools=TOOLS))
    assert deltas == []
    assert isinstance(final, ChatResponse)
    assert [(c.name, c.arguments) for c in final.tool_calls] == [
        ("account_balance", args),
        ("audit", {"n": 1}),
    ]


@pytest.mark.parametrize("api", APIS)
def test_key_is_sent_as_bearer_from_environment(
    model_server: Any, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = "OPENAI_API_KEY" if api == "openai" else "OLLAMA_API_KEY"
    monkeypatch.setenv(env, "sk-secret-123")
    model_server.script(["ok"])
    client = client_for(model_server, api)
    client.chat([{"role": "user", "content": "hi"}])
    assert model_server.requests[0].headers["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in repr(client)
    assert "sk-secret" not in repr(vars(client).get("default_options"))


def test_no_key_no_authorization_header(model_server: Any) -> None:
    model_server.script(["ok"])
    client_for(model_server, "ollama").chat([{"role": "user", "content": "hi"}])
    assert "Authorization" not in model_server.requests[0].headers


def test_default_base_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LLMClient("m").url == "https://api.openai.com/v1/chat/completions"
    assert LLMClient("m", api="ollama").url == "http://localhost:11434/api/chat"
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11434")
    assert LLMClient("m", api="ollama").url == "http://gpu-box:11434/api/chat"
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example/v1/")
    assert LLMClient("m").url == "https://gateway.example/v1/chat/completions"
    with pytest.raises(ValueError, match="api must be one of"):
        LLMClient("m", api="bard")


def test_provider_error_message_is_permanent(model_server: Any) -> None:
    model_server.responder = lambda r: dict(status=404, error="model 'nope' not found")
    with pytest.raises(LLMError, match="model 'nope' not found") as info:
        client_for(model_server, "ollama").chat([{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404


# -- error paths through transport fakes ------------------------------------------------


def fake(handler: Any, api: str = "openai", **kwargs: Any) -> LLMClient:
    client = LLMClient(
        "m", base_url="http://fake", api=api, transport=httpx.MockTransport(handler), **kwargs
    )
    OPEN.append(client)
    return client


@pytest.mark.parametrize("api", APIS)
def test_429_is_transient_with_retry_after(api: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow down"})

    with pytest.raises(TransientError, match="HTTP 429: slow down") as info:
        fake(handler, api).chat([{"role": "user", "content": "hi"}])
    assert info.value.retry_after == 7.0


def test_retry_after_as_http_date_and_absent() -> None:
    def dated(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})

    with pytest.raises(TransientError) as info:
        fake(dated).chat([{"role": "user", "content": "hi"}])
    assert info.value.retry_after == 0.0  # a date in the past: retry now

    with pytest.raises(TransientError) as info:
        fake(lambda r: httpx.Response(503, text="busy")).chat([{"role": "user", "content": "x"}])
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(status: int) -> None:
    with pytest.raises(TransientError, match=f"HTTP {status}"):
        fake(lambda r: httpx.Response(status, text="upstream broke")).chat(
            [{"role": "user", "content": "hi"}]
        )


def test_400_carries_openai_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        err = {"message": "Unsupported parameter: 'max_tokens'", "type": "invalid_request_error"}
        return httpx.Response(400, json={"error": err})

    with pytest.raises(LLMError, match="Unsupported parameter: 'max_tokens'") as info:
        fake(handler).chat([{"role": "user", "content": "hi"}])
    assert info.value.status_code == 400
    assert not isinstance(info.value, TransientError)


def test_401_never_shows_the_key(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        return httpx.Response(
            401, json={"error": {"message": f"Incorrect API key provided: {key}"}}
        )

    caplog.set_level(logging.DEBUG)
    with pytest.raises(LLMError) as info:
        fake(handler, api_key="sk-very-secret").chat([{"role": "user", "content": "hi"}])
    assert "sk-very-secret" not in str(info.value)
    assert "Incorrect API key provided: ***" in str(info.value)
    assert "sk-very-secret" not in caplog.text


@pytest.mark.parametrize("stream", [False, True])
def test_timeout_is_transient(stream: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    client = fake(handler)

    def call() -> object:
        messages = [{"role": "user", "content": "hi"}]
        return list(client.stream(messages)) if stream else client.chat(messages)

    with pytest.raises(TransientError, match="timed out"):
        call()


def test_connection_error_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransientError, match="could not be reached: connection refused"):
        fake(handler, api="ollama").chat([{"role": "user", "content": "hi"}])


def test_stream_error_status_is_mapped() -> None:
    with pytest.raises(TransientError, match="HTTP 429"):
        list(
            fake(lambda r: httpx.Response(429, json={"error": "busy"})).stream(
                [{"role": "user", "content": "x"}]
            )
        )
    with pytest.raises(LLMError, match="bad model"):
        list(
            fake(lambda r: httpx.Response(400, json={"error": "bad model"}), api="ollama").stream(
                [{"role": "user", "content": "x"}]
            )
        )


def test_non_json_answer_is_permanent() -> None:
    with pytest.raises(LLMError, match="not JSON"):
        fake(lambda r: httpx.Response(200, text="<html>")).chat([{"role": "user", "content": "x"}])


# -- the scripted offline model ---------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_scripted_model_answers_by_turn(api: str) -> None:
    model = ScriptedModel(
        [
            ToolCall("lookup", {"q": "x"}),
            Reply("thinking", [ToolCall("lookup", {"q": "y"})]),
            "done",
        ]
    )
    client = model.client(api=api)
    first = client.chat([{"role": "user", "content": "go"}])
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("lookup", {"q": "x"})]
    history: list[ChatMessage] = [ChatMessage("user", "go"), first.message()]
    second = client.chat(history)
    assert second.content == "thinking"
    history.append(second.message())
    *deltas, final = list(client.stream(history))
    assert "".join(str(d) for d in deltas) == "done"
    assert isinstance(final, ChatResponse)
    assert final.usage.completion_tokens == 1
    # The same conversation always gets the same answer.
    assert client.chat([{"role": "user", "content": "go"}]).tool_calls == first.tool_calls
    assert len(model.requests) == 4


def test_scripted_model_out_of_script_is_an_error() -> None:
    client = ScriptedModel(["only"]).client()
    with pytest.raises(LLMError, match="the script has 1 answers"):
        client.chat([{"role": "user", "content": "a"}, {"role": "assistant", "content": "only"}])


def test_scripted_model_function_items() -> None:
    model = ScriptedModel([lambda messages: f"you said {messages[-1].content}"])
    assert (
        model.client(api="ollama").chat([{"role": "user", "content": "hi"}]).content
        == "you said hi"
    )
