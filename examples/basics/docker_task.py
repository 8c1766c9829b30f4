"""DockerTask: run a command in a throwaway container.

Skipped with a message when there is no docker CLI or no daemon to talk to.
"""

from __future__ import annotations

import shutil
import subprocess

from stabilize import DockerTask, StageExecution, Workflow, WorkflowEngine


def unavailable() -> str | None:
    """Why the example cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    if info.returncode != 0:
        return "the docker daemon does not answer (docker info failed)"
    return None


def main(db_url: str) -> Workflow | str:
    """The finished workflow, or the reason it was skipped."""
    reason = unavailable()
    if reason is not None:
        return f"skipped: {reason}"
    with WorkflowEngine(db_url) as engine:
        engine.register("docker", DockerTask)
        stage = StageExecution.for_task(
            "hello",
            "docker",
            context={"image": "alpine:3", "command": ["echo", "hello from a container"]},
        )
        return engine.run(Workflow.create("examples", "docker", [stage]), timeout=300)


if __name__ == "__main__":
    result = main("sqlite:///examples_demo.db")
    print(result if isinstance(result, str) else (result.status, result.stages[0].outputs))
