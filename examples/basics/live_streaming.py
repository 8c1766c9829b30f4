"""Live streaming over the WebSocket gateway: a client subscribes to a running workflow and
receives its events (progress included) as the worker commits them.

The gateway (``stabilize serve`` as a library object) reads only the event log; the worker
runs in the background; the task waits until the client's subscription is acknowledged so
that what the client sees is live, not replayed.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from stabilize import StageExecution, Workflow, WorkflowEngine, emit_progress
from stabilize.streaming.gateway import Gateway


async def watch(url: str, workflow_id: str, subscribed: threading.Event) -> list[dict[str, Any]]:
    from websockets.asyncio.client import connect

    frames: list[dict[str, Any]] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "id": "run", "workflow_id": workflow_id}))
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "subscribed":
                subscribed.set()
            elif frame["type"] == "event":
                frames.append(frame)
                if frame["event_type"] in ("workflow.completed", "workflow.failed"):
                    return frames
    return frames


def main(db_url: str) -> list[dict[str, Any]]:
    subscribed = threading.Event()
    with WorkflowEngine(db_url) as engine:

        @engine.task("crawl")
        def crawl(stage: StageExecution) -> dict[str, Any]:
            subscribed.wait(30)
            for page in range(1, 4):
                emit_progress(stage, f"page {page} of 3", page=page)
            return {"pages": 3}

        engine.register("index", lambda s: {"indexed": s.context["pages"]})
        stages = [
            StageExecution.for_task("crawl", "crawl"),
            StageExecution.for_task("index", "index", requisite_stage_ref_ids={"crawl"}),
        ]
        workflow = Workflow.create("examples", "streamed", stages)
        gateway = Gateway(engine.backend.own_event_store(), "127.0.0.1", 0)
        gateway.run_in_thread()
        try:
            engine.start(workflow)
            engine.processor.start()
            return asyncio.run(watch(gateway.url, workflow.id, subscribed))
        finally:
            gateway.stop_thread()


if __name__ == "__main__":
    for frame in main("sqlite:///examples_demo.db"):
        print(frame["sequence"], frame["event_type"], frame["data"].get("message", ""))
