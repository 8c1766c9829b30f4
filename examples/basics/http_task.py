"""HTTPTask against a local server the example starts (the SSRF guard refuses loopback
addresses unless the worker's operator allows them: HTTPTask(allow_private_urls=True)).

fetch ── report
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from stabilize import HTTPTask, StageExecution, Workflow, WorkflowEngine


class Inventory(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"items": [{"sku": "A-1", "count": 3}, {"sku": "B-2", "count": 5}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def local_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Inventory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main(db_url: str) -> Workflow:
    with local_server() as base, WorkflowEngine(db_url) as engine:
        engine.register("http", HTTPTask(allow_private_urls=True))
        engine.register(
            "report", lambda s: {"total": sum(i["count"] for i in s.context["body_json"]["items"])}
        )
        stages = [
            StageExecution.for_task(
                "fetch", "http", context={"url": f"{base}/inventory", "parse_json": True}
            ),
            StageExecution.for_task("report", "report", requisite_stage_ref_ids={"fetch"}),
        ]
        return engine.run(Workflow.create("examples", "http", stages), timeout=30)


if __name__ == "__main__":
    wf = main("sqlite:///examples_demo.db")
    print(wf.status, wf.stage_by_ref_id("report").outputs)
