"""A stabilize worker process for the crash and multi-process tests (a script, not a test).

Usage::

    python worker.py DB_URL {drain,serve} --log FILE --release FILE [options]

``drain`` runs ``QueueProcessor.process_all()`` once and exits; ``serve`` runs
``QueueProcessor.start()`` until the ``--stop`` file appears, then stops gracefully.

Every task execution appends one line ``<stage ref>\\t<idempotency key>\\t<pid>\\t<pass>`` to
the ``--log`` file at its start (one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``),
so the parent can count executions across processes, including ones killed mid-task.

Task types:
    step: log and succeed.
    block: log, then wait (polling every 10 ms, at most 60 s) for the ``--release`` file.
    loop_start: log with the pass number in its context (1 when absent) and publish it.
    loop_end: log; jump back to the stage named by ``loop_to`` until ``passes`` passes ran.

The process exits 0 when the processor logged no error, 3 otherwise (errors go to stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stabilize import QueueProcessorConfig, StageExecution, TaskRegistry, TaskResult

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for worker_support
from worker_support import (
    AppendLog,
    log_to_stderr,
    registry_of,
    serve_until,
    sqlite_processor,
    wait_for_file,
)

BLOCK_LIMIT_S = 60.0
POLL_S = 0.01


def build_registry(log: AppendLog, release: Path) -> TaskRegistry:
    def record(stage: StageExecution, pass_no: int) -> None:
        log.write(f"{stage.ref_id}\t{stage.idempotency_key}\t{os.getpid()}\t{pass_no}")

    def step(stage: StageExecution) -> TaskResult:
        record(stage, int(stage.context.get("pass", 1)))
        return TaskResult.success(outputs={f"{stage.ref_id}_pid": os.getpid()})

    def block(stage: StageExecution) -> TaskResult:
        record(stage, int(stage.context.get("pass", 1)))
        if not wait_for_file(release, poll_s=POLL_S, limit_s=BLOCK_LIMIT_S):
            return TaskResult.terminal(f"{release} did not appear within {BLOCK_LIMIT_S}s")
        return TaskResult.success(outputs={f"{stage.ref_id}_pid": os.getpid()})

    def loop_start(stage: StageExecution) -> TaskResult:
        pass_no = int(stage.context.get("pass", 1))
        record(stage, pass_no)
        return TaskResult.success(outputs={"pass": pass_no})

    def loop_end(stage: StageExecution) -> TaskResult:
        pass_no = int(stage.context.get("pass", 1))
        record(stage, pass_no)
        if pass_no < int(stage.context["passes"]):
            return TaskResult.jump_to(str(stage.context["loop_to"]), context={"pass": pass_no + 1})
        return TaskResult.success(outputs={"passes_done": pass_no})

    return registry_of(step, block, loop_start, loop_end)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("db_url")
    p.add_argument("mode", choices=["drain", "serve"])
    p.add_argument("--log", required=True, help="the execution log to append to")
    p.add_argument("--release", required=True, help="the file that unblocks 'block' tasks")
    p.add_argument("--ready", help="a file to create once the processor runs")
    p.add_argument("--stop", help="serve mode: stop when this file appears")
    p.add_argument("--lease", type=float, default=None, help="lease_duration_seconds")
    p.add_argument("--recover", action="store_true", help="recover_on_start=True")
    p.add_argument("--events", action="store_true", help="record events in the same file")
    p.add_argument("--max-workers", type=int, default=4)
    p.add_argument("--timeout", type=float, default=50.0, help="drain mode: process_all timeout")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    errors = log_to_stderr("%(asctime)s %(name)s %(message)s")
    processor = sqlite_processor(
        args.db_url,
        build_registry(AppendLog(args.log), Path(args.release)),
        QueueProcessorConfig(
            poll_frequency_ms=20,
            max_workers=args.max_workers,
            lease_duration_seconds=args.lease,
            recover_on_start=args.recover,
        ),
        events=args.events,
    )
    print(f"worker {os.getpid()} owner {processor.owner}", file=sys.stderr, flush=True)

    ready = Path(args.ready) if args.ready else None
    if args.mode == "drain":
        if ready is not None:
            ready.touch()
        processed = processor.process_all(timeout=args.timeout)
        print(f"processed {processed}", flush=True)
    else:
        if not args.stop:
            raise SystemExit("serve mode needs --stop")
        serve_until(processor, Path(args.stop), poll_s=POLL_S, ready=ready)
    return errors.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
