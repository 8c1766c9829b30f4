"""SSHTask: run a command on a remote host (here localhost, if it accepts a key login).

Skipped with a message when there is no ssh client or no host to reach: set
STABILIZE_EXAMPLE_SSH_HOST (user@host) to try another one.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from stabilize import SSHTask, StageExecution, Workflow, WorkflowEngine


def unavailable(host: str) -> str | None:
    """Why the example cannot run here, or None."""
    if shutil.which("ssh") is None:
        return "no ssh client on PATH"
    probe = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=3",
        "-o",
        "StrictHostKeyChecking=no",
    ]
    probe += ["-o", "UserKnownHostsFile=/dev/null", host, "true"]
    if subprocess.run(probe, capture_output=True, timeout=15, check=False).returncode != 0:
        return f"cannot log in to {host} without a password"
    return None


def main(db_url: str, host: str | None = None) -> Workflow | str:
    """The finished workflow, or the reason it was skipped."""
    host = host or os.environ.get("STABILIZE_EXAMPLE_SSH_HOST", "localhost")
    reason = unavailable(host)
    if reason is not None:
        return f"skipped: {reason}"
    with WorkflowEngine(db_url) as engine:
        engine.register("ssh", SSHTask)
        stage = StageExecution.for_task(
            "uptime", "ssh", context={"host": host, "command": "uname -sn", "timeout": 30}
        )
        return engine.run(Workflow.create("examples", "ssh", [stage]), timeout=60)


if __name__ == "__main__":
    result = main("sqlite:///examples_demo.db")
    print(result if isinstance(result, str) else (result.status, result.stages[0].outputs))
