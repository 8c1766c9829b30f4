"""The researchers' tools and the model: scripted offline, or a real endpoint.

The scripted model answers from the conversation alone (see ``ScriptedModel``), so a worker
that restarts after a crash gets the same answers as the one that died.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from examples._chaos import hang_once
from examples.research_analyst.ledger import Ledger, LedgerTransport

from stabilize.llm import ChatMessage, LLMClient, ScriptedModel, ToolCall, ToolRegistry, tool

PLANNER = "You are a research planner."
RESEARCHER = "You are a researcher with tools."
SYNTHESIZER = "You are an analyst writing a short brief."
REVIEWER = "You are a critical reviewer."

# A tiny offline corpus: what web_search and lookup_statistic know.
CORPUS = {
    "adoption": "Heat pump sales in the EU grew from 1.6 million (2019) to 3 million (2022).",
    "cost": "Installed heat pumps cost 8,000-15,000 EUR; running costs depend on power prices.",
    "grid": "Each heat pump adds about 1 kW to peak winter demand on the local grid.",
    "policy": "REPowerEU targets 10 million additional heat pumps installed by 2027.",
}
STATISTICS = {
    "eu_heat_pumps_2022": "20 million units installed",
    "cop_typical": "coefficient of performance 3.0 (air to water, mild winter)",
    "household_heat_share": "space and water heating: 79% of household final energy use",
}


def make_tools(ledger: Ledger, hang_marker: Path | None = None) -> ToolRegistry:
    """The researchers' tools, recording each call in ``ledger``.

    With ``hang_marker``, the first ``web_search`` of any worker writes that file and then
    blocks: the chaos run kills the worker there, in the middle of a tool call.
    """

    @tool
    def web_search(query: str, idempotency_key: str | None = None) -> str:
        """Search the web and return the most relevant snippets.

        Args:
            query: What to search for.
        """
        key = idempotency_key or "-"
        ledger.record("tool", key, "start", tool="web_search")
        if hang_marker is not None:
            hang_once(hang_marker, key)  # only the first call of the run hangs
        words = set(re.findall(r"[a-z]+", query.lower()))
        hits = [text for topic, text in CORPUS.items() if topic in words] or list(CORPUS.values())
        ledger.record("tool", key, "end", tool="web_search")
        return " ".join(hits[:2])

    @tool
    def lookup_statistic(name: str, idempotency_key: str | None = None) -> str:
        """Look up one published statistic by its name.

        Args:
            name: One of eu_heat_pumps_2022, cop_typical, household_heat_share.
        """
        key = idempotency_key or "-"
        ledger.record("tool", key, "start", tool="lookup_statistic")
        result = STATISTICS.get(name, f"no statistic named {name!r}")
        ledger.record("tool", key, "end", tool="lookup_statistic")
        return result

    return ToolRegistry().add(web_search).add(lookup_statistic)


def _text(messages: list[ChatMessage], role: str, index: int = 0) -> str:
    found = [m.content for m in messages if m.role == role]
    return found[index] if len(found) > index else ""


def scripted_reply(messages: list[ChatMessage]) -> str | ToolCall:
    """The offline model: a plausible answer for each role, from the conversation alone."""
    system, prompt = _text(messages, "system"), _text(messages, "user")
    turn = sum(1 for m in messages if m.role == "assistant")
    refined = "Feedback:" in prompt
    if system == PLANNER:
        if refined:
            return (
                "How many heat pumps were sold in the EU, year by year?\n"
                "What does a household pay to install and run one?\n"
                "How much peak grid demand does each one add?"
            )
        return (
            "How fast is heat pump adoption growing?\n"
            "What do heat pumps cost?\n"
            "What do heat pumps do to the grid?"
        )
    if system == RESEARCHER:
        topic = next((t for t in CORPUS if t in prompt.lower()), "adoption")
        topic = {"sold": "adoption", "pay": "cost", "demand": "grid"}.get(topic, topic)
        for word, name in (("sold", "adoption"), ("pay", "cost"), ("demand", "grid")):
            if word in prompt:
                topic = name
        if turn == 0:
            return ToolCall("web_search", {"query": f"heat pump {topic}"})
        if turn == 1:
            stat = {"adoption": "eu_heat_pumps_2022", "cost": "cop_typical"}.get(
                topic, "household_heat_share"
            )
            return ToolCall("lookup_statistic", {"name": stat})
        results = [m.content for m in messages if m.role == "tool"]
        return f"{topic}: " + " ".join(results)
    if system == SYNTHESIZER:
        findings = prompt.split("Findings:\n", 1)[-1].strip().splitlines()
        return (
            "Brief: "
            + " / ".join(f.split(":", 1)[0] for f in findings)
            + ". "
            + ("Numbers: " + "; ".join(re.findall(r"\d[\d.,]* (?:million|kW|EUR)", prompt)[:4]))
        )
    if system == REVIEWER:
        if "(round 1)" not in prompt:  # the refined draft
            return "Well sourced and quantified.\nconfidence: 0.9"
        return "The draft is vague about sales per year and running costs.\nconfidence: 0.6"
    return "I can only play the roles of this example."


def scripted_client(ledger: Ledger) -> LLMClient:
    """An offline client: the scripted model behind the ledger's transport."""
    model = ScriptedModel([scripted_reply] * 8)
    return LLMClient(
        "scripted",
        api="openai",
        api_key="",
        base_url="http://scripted.invalid/v1",
        transport=LedgerTransport(model.transport(), ledger),
    )


def live_client(ledger: Ledger, model: str, base_url: str | None, api: str) -> LLMClient:
    """A client for a real OpenAI-compatible or Ollama endpoint (key from the environment)."""
    kwargs: dict[str, Any] = {"api": api}
    if base_url:
        kwargs["base_url"] = base_url
    transport = LedgerTransport(httpx.HTTPTransport(retries=1), ledger)
    return LLMClient(model, transport=transport, **kwargs)
