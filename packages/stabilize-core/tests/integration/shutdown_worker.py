"""A worker process for test_shutdown.py (not a test).

Usage::

    python shutdown_worker.py DB_URL --started FILE --release FILE --timeout SECONDS

It installs the graceful shutdown handlers, starts its processor and waits for the
shutdown. Task type ``hold`` appends its stage's ref to ``--started``, waits (polling
every 5 ms, at most 30 s) for the ``--release`` file, then succeeds with ``{"pid": pid}``.
The process exits 0 after a graceful shutdown when the engine logged no error (3 if it
did); a forced one exits with the lifecycle module's status.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stabilize import (
    QueueProcessorConfig,
    StageExecution,
    TaskResult,
    install_shutdown_handlers,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for worker_support
from worker_support import append, log_to_stderr, registry_of, sqlite_processor, wait_for_file


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("db_url")
    p.add_argument("--started", required=True)
    p.add_argument("--release", required=True)
    p.add_argument("--timeout", type=float, required=True)
    args = p.parse_args(argv)
    release = Path(args.release)

    def hold(stage: StageExecution) -> TaskResult:
        append(args.started, stage.ref_id)
        if not wait_for_file(release, poll_s=0.005, limit_s=30):
            return TaskResult.terminal(f"{release} did not appear")
        return TaskResult.success(outputs={"pid": os.getpid()})

    errors = log_to_stderr()
    # Ten-minute leases: a message another worker takes during a test was released.
    config = QueueProcessorConfig(poll_frequency_ms=10, lease_duration_seconds=600)
    processor = sqlite_processor(args.db_url, registry_of(hold), config)
    manager = install_shutdown_handlers(shutdown_timeout=args.timeout, processors=[processor])
    processor.start()
    manager.wait_for_shutdown()
    return errors.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
