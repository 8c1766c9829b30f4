"""Benchmark of the WebSocket gateway: many clients following one busy workflow.

Usage (from the repository root)::

    uv run python benchmarks/gateway.py [--clients 100] [--events 10000]
                                        [--workload stages|burst|all] [--stage-delay S]
                                        [--backend sqlite|postgres] [--pg-url URL]
                                        [--client-procs 2] [--json [PATH]]

Four kinds of processes, as in a deployment:

- the gateway: ``python -m stabilize serve --db-url ... --port 0`` (the real command);
- client processes (``--client-procs``, default 2), each running its share of the
  ``--clients`` WebSocket clients in one event loop;
- one engine process running the workflow (started once every client has subscribed);
- this process, which sets up the database, starts the others and reports.

Workloads (each emits about ``--events`` events into the workflow's log):

- ``stages``: a chain of stages whose tasks each report 14 progress updates: about 20
  events per stage (lifecycle + progress), recorded in two commits per stage, so events
  arrive steadily as the engine runs.
- ``burst``: one stage whose task reports ``--events`` progress updates in a tight loop.
  The worker records them in a few large commits (each progress flush, and the task's
  result): the gateway fans out bursts of thousands of events.

Every client subscribes to the workflow with ``since=0`` and reads until
``workflow.completed``, checking that sequences arrive in order with no gap (a ``resync``
is followed by a resubscription from the last sequence received, and counted).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve()
PROGRESS_PER_STAGE = 14
EVENT_PREFIX = b'{"type":"event",'
ENVELOPE = re.compile(rb'"sequence":(\d+),"event_type":"([^"]*)".*?"timestamp":(\d+),"data":')
TIMEOUT = 600.0


# -- roles run in child processes --------------------------------------------------------


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_role(url: str, schema: str | None, stage_delay: float) -> int:
    """Run the database's queue until it is empty (the workflow is already started)."""
    from stabilize import (
        QueueProcessor,
        QueueProcessorConfig,
        StageExecution,
        TaskRegistry,
        TaskResult,
    )
    from stabilize.connect import open_database
    from stabilize.events import emit_progress

    store, queue = open_database(url, schema)
    registry = TaskRegistry()

    def emit(stage: StageExecution) -> TaskResult:
        count = int(stage.context.get("progress", PROGRESS_PER_STAGE))
        for i in range(count):
            emit_progress(stage, f"step {i + 1}", step=i + 1)
        if stage_delay:
            time.sleep(stage_delay)
        return TaskResult.success()

    registry.register("emit", emit)
    processor = QueueProcessor(
        queue, store=store, task_registry=registry, config=QueueProcessorConfig(poll_frequency_ms=1)
    )
    started = time.time()
    processor.process_all(timeout=TIMEOUT)
    print(json.dumps({"engine_seconds": time.time() - started, "cpu": cpu_seconds()}), flush=True)
    return 0


class Follower:
    """One benchmark client's view of the stream: checks order, records latencies."""

    def __init__(self, workflow_id: str, out: dict[str, Any], ready: asyncio.Event) -> None:
        self.workflow_id = workflow_id
        self.out = out
        self.ready = ready
        self.last = 0
        self.done = asyncio.get_running_loop().create_future()

    def subscribe_frame(self) -> str:
        frame: dict[str, str | int] = {
            "type": "subscribe",
            "id": "b",
            "workflow_id": self.workflow_id,
        }
        if self.last:
            frame["since"] = self.last
        return json.dumps(frame)

    def on_text(self, text: str | bytes) -> str | None:
        """Handle one frame; returns a frame to send back, if any."""
        raw = text.encode() if isinstance(text, str) else text
        if raw.startswith(EVENT_PREFIX):
            # Only the envelope is read (the gateway writes its fields before "data"):
            # decoding every event's data would make the clients the bottleneck.
            now = time.time() * 1000.0
            match = ENVELOPE.search(raw)
            assert match is not None, raw[:200]
            sequence = int(match[1])
            out = self.out
            if sequence != self.last + 1:
                out["gaps"] += 1
            self.last = sequence
            out["events"] += 1
            if sequence > 1:
                out["latencies"].append(now - int(match[3]))
                out["first_ms"] = min(out["first_ms"], now)
                out["last_ms"] = max(out["last_ms"], now)
            self.ready.set()
            if match[2] == b"workflow.completed" and not self.done.done():
                self.done.set_result(None)
            return None
        frame = json.loads(raw)
        kind = frame["type"]
        out = self.out
        if kind == "resync":
            out["resyncs"] += 1
            return self.subscribe_frame()
        elif kind == "error":
            self.done.set_exception(RuntimeError(f"error frame: {frame}"))
        return None


async def websockets_client(url: str, follower: Follower) -> None:
    """A client on ``websockets.asyncio.client``."""
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
        await ws.send(follower.subscribe_frame())
        while not follower.done.done():
            reply = follower.on_text(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if reply is not None:
                await ws.send(reply)
        await follower.done


class RawClient(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455: handshake, unmasked server frames, pong).

    The benchmark's clients share two CPU cores with the gateway; this one costs a few
    microseconds per frame where a full client library costs tens, so the figures measure
    the gateway rather than its clients.
    """

    def __init__(self, follower: Follower, host: str, path: str) -> None:
        self.follower = follower
        self.host = host
        self.path = path
        self.buffer = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = bytes([0x80 | opcode, 0x80 | size])
        elif size < 1 << 16:
            header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(header + mask + masked)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status:
                self.follower.done.set_exception(RuntimeError(f"handshake: {status!r}"))
                return
            del buffer[: end + 4]
            self.open = True
            self.send(0x1, self.follower.subscribe_frame().encode())
        start = 0
        size = len(buffer)
        while size - start >= 2:
            opcode = buffer[start] & 0x0F
            length = buffer[start + 1] & 0x7F
            offset = start + 2
            if length == 126:
                if size - offset < 2:
                    break
                length = int.from_bytes(buffer[offset : offset + 2], "big")
                offset += 2
            elif length == 127:
                if size - offset < 8:
                    break
                length = int.from_bytes(buffer[offset : offset + 8], "big")
                offset += 8
            if size - offset < length:
                break
            payload = bytes(buffer[offset : offset + length])
            start = offset + length
            if opcode == 0x1:
                reply = self.follower.on_text(payload)
                if reply is not None:
                    self.send(0x1, reply.encode())
            elif opcode == 0x9:  # ping: the server's keepalive
                self.send(0xA, payload)
            elif opcode == 0x8:
                break
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.follower.done.done():
            self.follower.done.set_exception(ConnectionError(f"connection lost: {exc}"))


async def raw_client(url: str, follower: Follower) -> None:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(
        lambda: RawClient(follower, parts.netloc, parts.path), parts.hostname, parts.port
    )
    try:
        await asyncio.wait_for(follower.done, TIMEOUT)
    finally:
        transport.close()


async def _clients(
    url: str, workflow_id: str, count: int, latency_file: str, kind: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "latencies": array.array("d"),
        "events": 0,
        "gaps": 0,
        "resyncs": 0,
        "first_ms": float("inf"),
        "last_ms": 0.0,
    }
    run = raw_client if kind == "raw" else websockets_client
    followers = [Follower(workflow_id, out, asyncio.Event()) for _ in range(count)]
    tasks = [asyncio.create_task(run(url, f)) for f in followers]
    for follower in followers:  # every client has its subscription and the first event
        await asyncio.wait_for(follower.ready.wait(), 60)
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    with open(latency_file, "wb") as f:
        out.pop("latencies").tofile(f)
    return out


def client_role(url: str, workflow_id: str, count: int, latency_file: str, kind: str) -> int:
    summary = asyncio.run(_clients(url, workflow_id, count, latency_file, kind))
    summary["cpu"] = cpu_seconds()
    print(json.dumps(summary), flush=True)
    return 0


# -- the parent --------------------------------------------------------------------------


def default_pg_url() -> str:
    return os.environ.get("STABILIZE_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")


def make_workflow(workload: str, events: int) -> tuple[Any, int]:
    """The workflow of a workload, and its number of stages."""
    from stabilize import StageExecution, TaskExecution, Workflow

    if workload == "burst":
        specs = [{"progress": max(1, events - 12)}]
    else:
        specs = [{"progress": PROGRESS_PER_STAGE}] * max(1, round(events / 20))
    stages = [
        StageExecution(
            ref_id=f"s{i}",
            type="emit",
            name=f"stage {i}",
            context=dict(spec),
            requisite_stage_ref_ids=set() if i == 0 else {f"s{i - 1}"},
            tasks=[TaskExecution.create(f"t{i}", "emit", stage_start=True, stage_end=True)],
        )
        for i, spec in enumerate(specs)
    ]
    return Workflow.create(application="bench", name=f"gateway-{workload}", stages=stages), len(
        stages
    )


def start(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def read_line(proc: subprocess.Popen[str], what: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=30)
        raise RuntimeError(f"{what} ended early: {err[-2000:]}")
    return line.strip()


def run_one(ns: argparse.Namespace, workload: str) -> dict[str, Any]:
    from stabilize import Orchestrator
    from stabilize.connect import open_database
    from stabilize.events import open_event_store

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    schema: str | None = None
    if ns.backend == "postgres":
        import psycopg

        url = ns.pg_url
        schema = f"bench_gw_{os.getpid()}_{int(time.time())}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        from stabilize import PostgresWorkflowStore

        PostgresWorkflowStore(url, schema=schema, create_tables=True)
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
        from stabilize import SqliteQueue, SqliteWorkflowStore

        SqliteWorkflowStore(url, create_tables=True)
        SqliteQueue(url)._create_table()
    store, queue = open_database(url, schema)
    wf, stages = make_workflow(workload, ns.events)
    Orchestrator(queue, store=store).start(wf)  # stored and queued; no engine runs yet
    procs: list[subprocess.Popen[str]] = []
    try:
        profile = ["-m", "cProfile", "-o", ns.profile_gateway] if ns.profile_gateway else []
        serve = [*profile, "-m", "stabilize", "serve", "--db-url", url, "--port", "0"]
        serve += ["--log-level"]
        serve += ["WARNING", "--max-queue", str(ns.max_queue)]
        if schema is not None:
            serve += ["--schema", schema]
        env = {k: v for k, v in os.environ.items() if k != "STABILIZE_GATEWAY_TOKEN"}
        gateway = start(serve, env=env)
        procs.append(gateway)
        ws_url = read_line(gateway, "the gateway").split("(WebSocket ")[1].rstrip(")")
        shares = [ns.clients // ns.client_procs] * ns.client_procs
        for i in range(ns.clients % ns.client_procs):
            shares[i] += 1
        clients = []
        for i, share in enumerate(s for s in shares if s):
            role = ["--role", "client", ws_url, wf.id, str(share), str(tmp / f"lat{i}.bin")]
            role.append(ns.client)
            clients.append(start([str(HERE), *role]))
        procs += clients
        for proc in clients:
            assert read_line(proc, "a client process") == "ready"
        engine_args = ["--role", "engine", url, schema or "", str(ns.stage_delay)]
        t0 = time.time() * 1000.0
        engine = start([str(HERE), *engine_args])
        procs.append(engine)
        summaries = [json.loads(read_line(p, "a client process")) for p in clients]
        t1 = time.time() * 1000.0
        engine_out = json.loads(read_line(engine, "the engine"))
        gateway_cpu = cpu_seconds(gateway.pid)
        latencies = array.array("d")
        for i in range(len(clients)):
            with open(tmp / f"lat{i}.bin", "rb") as f:
                latencies.frombytes(f.read())
        log = open_event_store(url, schema)
        events = log.get_events(wf.id)
        log.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        if schema is not None:
            import psycopg

            with psycopg.connect(ns.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        shutil.rmtree(tmp, ignore_errors=True)
    delivered = sum(s["events"] for s in summaries)
    first = min(s["first_ms"] for s in summaries)
    last = max(s["last_ms"] for s in summaries)
    ordered = sorted(latencies)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    produced_ms = events[-1].timestamp - events[1].timestamp if len(events) > 1 else 0
    return {
        "workload": workload,
        "backend": ns.backend,
        "clients": ns.clients,
        "client": ns.client,
        "stages": stages,
        "events_in_log": len(events),
        "delivered": delivered,
        "expected": len(events) * ns.clients,
        "gaps": sum(s["gaps"] for s in summaries),
        "resyncs": sum(s["resyncs"] for s in summaries),
        "engine_seconds": round(engine_out["engine_seconds"], 3),
        "cpu_seconds": {
            "gateway": round(gateway_cpu, 2),
            "clients": round(sum(s["cpu"] for s in summaries), 2),
            "engine": round(engine_out["cpu"], 2),
        },
        "gateway_cpu_us_per_frame": round(gateway_cpu / max(delivered, 1) * 1e6, 1),
        "produce_seconds": round(produced_ms / 1000, 3),
        "deliver_seconds": round((last - first) / 1000, 3),
        "end_to_end_seconds": round((t1 - t0) / 1000, 3),
        "events_per_s_total": round(delivered / max(last - first, 1) * 1000),
        "events_per_s_per_client": round(delivered / ns.clients / max(last - first, 1) * 1000),
        "latency_ms_p50": round(q[49], 1),
        "latency_ms_p99": round(q[98], 1),
        "latency_ms_max": round(ordered[-1], 1),
    }


def environment(ns: argparse.Namespace) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "websockets": importlib.metadata.version("websockets"),
        "sqlite": sqlite3.sqlite_version,
        "backend": ns.backend,
    }
    return env


def print_table(results: list[dict[str, Any]], env: dict[str, Any]) -> None:
    print(
        f"\nGateway benchmark: {env['cpus']} CPUs, {env['machine']}, Python {env['python']}, "
        f"websockets {env['websockets']}, backend {env['backend']}"
    )
    header = (
        "workload",
        "clients",
        "events",
        "delivered",
        "gaps",
        "resyncs",
        "produce s",
        "deliver s",
        "events/s total",
        "events/s/client",
        "p50 ms",
        "p99 ms",
        "max ms",
    )
    rows = [
        (
            r["workload"],
            r["clients"],
            r["events_in_log"],
            r["delivered"],
            r["gaps"],
            r["resyncs"],
            r["produce_seconds"],
            r["deliver_seconds"],
            f"{r['events_per_s_total']:,}",
            f"{r['events_per_s_per_client']:,}",
            r["latency_ms_p50"],
            r["latency_ms_p99"],
            r["latency_ms_max"],
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:2] == ["--role", "engine"]:
        return engine_role(raw[2], raw[3] or None, float(raw[4]))
    if raw[:2] == ["--role", "client"]:
        return client_role(raw[2], raw[3], int(raw[4]), raw[5], raw[6])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--workload", choices=["stages", "burst", "all"], default="all")
    parser.add_argument("--stage-delay", type=float, default=0.0, help="seconds each task sleeps")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--client",
        choices=["raw", "websockets"],
        default="raw",
        help="client implementation: a minimal one (default) or websockets' client",
    )
    parser.add_argument("--max-queue", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default=default_pg_url())
    parser.add_argument(
        "--profile-gateway", default=None, metavar="PATH", help="cProfile the gateway into PATH"
    )
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH")
    ns = parser.parse_args(raw)
    workloads = ["stages", "burst"] if ns.workload == "all" else [ns.workload]
    results = [run_one(ns, w) for w in workloads]
    env = environment(ns)
    if ns.json == "-":
        print(json.dumps({"environment": env, "results": results}, indent=2))
    else:
        print_table(results, env)
        if ns.json is not None:
            Path(ns.json).write_text(json.dumps({"environment": env, "results": results}, indent=2))
    return 0 if all(r["gaps"] == 0 and r["delivered"] == r["expected"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
