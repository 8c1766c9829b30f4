"""@tool and ToolRegistry: schemas from signatures and docstrings, validation, dispatch."""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Literal

import pydantic
import pytest

from stabilize import TransientError
from stabilize.llm import Tool, ToolCall, ToolRegistry, tool


class Unit(Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Address(pydantic.BaseModel):
    street: str
    zip_code: int


@tool
def account_balance(user_id: str) -> str:
    """Return the current balance for a user id."""
    return f"balance of {user_id}: 42"


@tool(name="weather", description="Current weather for a city.")
def get_weather(
    city: str,
    unit: Unit = Unit.CELSIUS,
    detail: Literal["short", "long"] = "short",
    days: int | None = None,
) -> dict[str, object]:
    """Ignored: the decorator gives the description."""
    return {"city": city, "unit": unit.value, "detail": detail, "days": days}


def ship(
    items: list[str],
    quantities: dict[str, int],
    address: Address,
    express: bool = False,
    note: str = "",
    idempotency_key: str | None = None,
) -> str:
    """Ship items to an address.

    Sends the parcel with the courier.

    Args:
        items: SKUs to ship,
            one per line item.
        quantities: How many of each SKU.
        address: Where to deliver.
        express (bool): Next-day delivery.

    Returns:
        A tracking number.
    """
    total = sum(quantities.get(i, 1) for i in items)
    return f"{total} items to {address.street} {address.zip_code} key={idempotency_key}"


def test_schema_from_signature_and_docstring() -> None:
    assert account_balance.schema() == {
        "type": "function",
        "function": {
            "name": "account_balance",
            "description": "Return the current balance for a user id.",
            "parameters": {
                "type": "object",
                "properties": {"user_id": {"type": "string"}},
                "required": ["user_id"],
                "additionalProperties": False,
            },
        },
    }
    # Still a plain function to call.
    assert account_balance("u_1") == "balance of u_1: 42"


def test_schema_optional_default_literal_enum() -> None:
    fn = get_weather.schema()["function"]
    assert fn["name"] == "weather"
    assert fn["description"] == "Current weather for a city."
    params = fn["parameters"]
    assert params["required"] == ["city"]
    props = params["properties"]
    assert props["detail"] == {"enum": ["short", "long"], "type": "string", "default": "short"}
    assert props["unit"]["default"] == "celsius"
    assert params["$defs"]["Unit"] == {"enum": ["celsius", "fahrenheit"], "type": "string"}
    assert props["days"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]


def test_schema_collections_models_and_arg_docs() -> None:
    t = Tool(ship)
    assert t.description == "Ship items to an address. Sends the parcel with the courier."
    params = t.parameters
    props = params["properties"]
    assert set(props) == {"items", "quantities", "address", "express", "note"}  # no key
    assert props["items"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "SKUs to ship, one per line item.",
    }
    assert props["quantities"]["additionalProperties"] == {"type": "integer"}
    assert props["express"]["description"] == "Next-day delivery."
    assert "description" not in props["note"]
    assert params["required"] == ["items", "quantities", "address"]
    assert params["$defs"]["Address"]["required"] == ["street", "zip_code"]
    assert props["address"]["$ref"] == "#/$defs/Address"


def test_dispatch_validates_and_converts() -> None:
    tools = ToolRegistry().add(ship).add(get_weather).add(account_balance)
    assert tools.names == ["ship", "weather", "account_balance"]
    assert [s["function"]["name"] for s in tools.schemas()] == tools.names
    result = tools.dispatch(
        ToolCall(
            "ship",
            {
                "items": ["a", "b"],
                "quantities": {"a": 2},
                "address": {"street": "Main St", "zip_code": "1234"},
            },
        ),
        idempotency_key="wf:st:3",
    )
    assert result.is_error is False
    assert result.content == "3 items to Main St 1234 key=wf:st:3"
    weather = tools.dispatch(
        {"name": "weather", "arguments": '{"city": "Oslo", "unit": "fahrenheit"}'}
    )
    assert weather.content == (
        '{"city": "Oslo", "unit": "fahrenheit", "detail": "short", "days": null}'
    )


def test_invalid_arguments_become_error_results() -> None:
    calls: list[str] = []

    @tool
    def record(n: int, mode: Literal["a", "b"]) -> str:
        """Record."""
        calls.append("called")
        return "ok"

    tools = ToolRegistry().add(record)
    bad = tools.dispatch(ToolCall("record", {"n": "many", "mode": "c", "extra": 1}))
    assert bad.is_error
    assert bad.content.startswith("ERROR: invalid arguments for tool 'record': ")
    assert "n: Input should be a valid integer" in bad.content
    assert "mode: Input should be 'a' or 'b'" in bad.content
    assert "extra: Extra inputs are not permitted" in bad.content
    missing = tools.dispatch(ToolCall("record", {}))
    assert "n: Field required" in missing.content
    not_json = tools.dispatch({"name": "record", "arguments": "{oops"})
    assert "must be a JSON object" in not_json.content
    assert calls == []  # nothing ran
    unknown = tools.dispatch(ToolCall("nope", {}))
    assert unknown.content == "ERROR: unknown tool 'nope' (available: record)"


def test_tool_exception_is_fed_back_but_transient_propagates() -> None:
    @tool
    def broken() -> str:
        """Break."""
        raise KeyError("no such account")

    @tool
    def flaky() -> str:
        """Flake."""
        raise TransientError("try later")

    tools = ToolRegistry().add(broken).add(flaky)
    assert tools.dispatch(ToolCall("broken")).content == "ERROR: KeyError: 'no such account'"
    with pytest.raises(TransientError):
        tools.dispatch(ToolCall("flaky"))


def test_async_tools_sync_and_async_dispatch() -> None:
    @tool
    async def fetch(url: str, idempotency_key: str | None = None) -> dict[str, str | None]:
        """Fetch a URL."""
        await asyncio.sleep(0)
        return {"url": url, "key": idempotency_key}

    tools = ToolRegistry().add(fetch)
    assert fetch.accepts_idempotency_key
    assert "idempotency_key" not in fetch.parameters["properties"]
    assert tools.dispatch(ToolCall("fetch", {"url": "u"}), "k1").content == (
        '{"url": "u", "key": "k1"}'
    )

    async def run_in_loop() -> tuple[str, str]:
        inside = tools.dispatch(ToolCall("fetch", {"url": "v"}), "k2").content
        awaited = (await tools.adispatch(ToolCall("fetch", {"url": "w"}), "k3")).content
        return inside, awaited

    assert asyncio.run(run_in_loop()) == ('{"url": "v", "key": "k2"}', '{"url": "w", "key": "k3"}')


def test_registry_add_plain_function_with_name_and_duplicates() -> None:
    def lookup(q: str) -> str:
        """Look up."""
        return q.upper()

    tools = ToolRegistry().add(lookup, name="search", description="Search things.")
    assert "search" in tools
    assert len(tools) == 1
    assert tools.get("search") is not None
    assert tools.dispatch(ToolCall("search", {"q": "x"})).content == "X"
    with pytest.raises(ValueError, match="already registered"):
        tools.add(lookup, name="search")


def test_parameter_names_that_shadow_basemodel_attributes() -> None:
    @tool
    def dump(json: str, copy: int = 1, schema: str = "s") -> str:
        """Dump."""
        return f"{json}{copy}{schema}"

    assert set(dump.parameters["properties"]) == {"json", "copy", "schema"}
    assert ToolRegistry().add(dump).dispatch(ToolCall("dump", {"json": "j"})).content == "j1s"
