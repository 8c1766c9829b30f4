"""A worker process for test_agent_durability.py (not collected: no test_ prefix).

Usage: agent_worker.py DB_URL BASE_URL API LOG_PATH BLOCK_ON

Runs an agent whose tool appends to LOG_PATH. When the tool is asked to log BLOCK_ON, it
reports that to the model server's /hook and then blocks until the test kills the process.
"""

from __future__ import annotations

import os
import sys
import threading

import httpx

from stabilize import (
    QueueProcessor,
    QueueProcessorConfig,
    SqliteQueue,
    SqliteWorkflowStore,
    TaskRegistry,
)
from stabilize.llm import AgentLoopTask, LLMClient, ToolRegistry, tool


def main() -> int:
    db_url, base_url, api, log_path, block_on = sys.argv[1:6]
    hook_url = base_url.removesuffix("/v1") + "/hook"

    @tool
    def append_log(line: str, idempotency_key: str | None = None) -> str:
        """Append a line to the audit log.

        Args:
            line: The text to append.
        """
        with open(log_path, encoding="utf-8") as f:
            if f"done {idempotency_key} {line}\n" in f.readlines():
                return f"logged {line}"  # this key's effect already happened
        _append(log_path, f"start {idempotency_key} {line}\n")
        if line == block_on:
            httpx.post(hook_url, json={"line": line, "key": idempotency_key, "pid": os.getpid()})
            threading.Event().wait(120)  # until SIGKILL
        _append(log_path, f"done {idempotency_key} {line}\n")
        return f"logged {line}"

    client = LLMClient("durable-model", base_url=base_url, api=api)
    registry = TaskRegistry()
    registry.register("agent", AgentLoopTask(client=client, tools=ToolRegistry().add(append_log)))
    store = SqliteWorkflowStore(db_url)
    queue = SqliteQueue(db_url)
    config = QueueProcessorConfig(recover_on_start=True)
    processor = QueueProcessor(queue, config=config, store=store, task_registry=registry)
    processor.process_all(timeout=50)
    client.close()
    return 0


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


if __name__ == "__main__":
    sys.exit(main())
